"""A container's CPU, memory and swap usage from its cgroup (v1, v2 or hybrid).

Synchronous readers, meant to run in a worker thread. A value the kernel does not
offer (a file or key missing) is ``None``; a cgroup that does not exist (the
container is not running) gives no :class:`Usage` at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pycri.host.cgroups import CgroupMounts, Layout

# A v1 limit at or above this is "no limit" (the kernel reports PAGE_COUNTER_MAX pages as bytes).
UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Usage:
    cpu_usage_ns: int | None = None  # cumulative CPU time of the cgroup
    memory_usage: int | None = None
    working_set: int | None = None  # usage minus inactive file pages, never below 0
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None  # None when unlimited
    swap_usage: int | None = None
    swap_limit: int | None = None  # None when unlimited


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_limit(path: Path) -> int | None:
    """A limit file: ``max`` (v2) or a huge number (v1) mean no limit."""
    value = _read_int(path)
    return value if value is not None and value < UNLIMITED else None


def _read_keyed(path: Path) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) such as memory.stat or cpu.stat."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _join(mountpoint: str, cgroups_path: str) -> Path:
    return Path(mountpoint) / cgroups_path.lstrip("/")


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(usage - (inactive_file or 0), 0)


def read_v1(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    cpu_mount = mounts.v1.get("cpuacct")
    mem_mount = mounts.v1.get("memory")
    cpu_dir = _join(cpu_mount, cgroups_path) if cpu_mount else None
    mem_dir = _join(mem_mount, cgroups_path) if mem_mount else None
    cpu_present = cpu_dir is not None and cpu_dir.is_dir()
    mem_present = mem_dir is not None and mem_dir.is_dir()
    if not cpu_present and not mem_present:
        return None
    cpu = _read_int(cpu_dir / "cpuacct.usage") if cpu_present and cpu_dir else None
    if not mem_present or mem_dir is None:
        return Usage(cpu_usage_ns=cpu)
    usage = _read_int(mem_dir / "memory.usage_in_bytes")
    stat = _read_keyed(mem_dir / "memory.stat")

    def total(key: str) -> int | None:
        return stat.get("total_" + key, stat.get(key))

    limit = _read_limit(mem_dir / "memory.limit_in_bytes")
    memsw_usage = _read_int(mem_dir / "memory.memsw.usage_in_bytes")
    swap_usage = max(memsw_usage - usage, 0) if memsw_usage is not None and usage is not None else None
    memsw_limit = _read_limit(mem_dir / "memory.memsw.limit_in_bytes")
    swap_limit = max(memsw_limit - limit, 0) if memsw_limit is not None and limit is not None else None
    return Usage(
        cpu_usage_ns=cpu,
        memory_usage=usage,
        working_set=_working_set(usage, total("inactive_file")),
        rss=total("rss"),
        page_faults=total("pgfault"),
        major_page_faults=total("pgmajfault"),
        memory_limit=limit,
        swap_usage=swap_usage,
        swap_limit=swap_limit,
    )


def read_v2(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    if mounts.unified is None:
        return None
    path = _join(mounts.unified, cgroups_path)
    if not path.is_dir():
        return None
    cpu_stat = _read_keyed(path / "cpu.stat")
    usage_usec = cpu_stat.get("usage_usec")
    usage = _read_int(path / "memory.current")
    stat = _read_keyed(path / "memory.stat")
    return Usage(
        cpu_usage_ns=usage_usec * 1000 if usage_usec is not None else None,
        memory_usage=usage,
        working_set=_working_set(usage, stat.get("inactive_file")),
        rss=stat.get("anon"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        memory_limit=_read_limit(path / "memory.max"),
        swap_usage=_read_int(path / "memory.swap.current"),
        swap_limit=_read_limit(path / "memory.swap.max"),
    )


def read_container(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    """The usage of the cgroup ``cgroups_path`` (as in the OCI spec), or None if it does not exist."""
    if not cgroups_path:
        return None
    if mounts.layout in (Layout.V1, Layout.HYBRID):
        return read_v1(cgroups_path, mounts)
    if mounts.layout is Layout.V2:
        return read_v2(cgroups_path, mounts)
    return None
