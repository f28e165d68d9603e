"""Where a container's cgroup is, and what it has used (cgroup v1, v2 or hybrid).

Synchronous readers, meant to run in a worker thread. A value the kernel does not
offer (a file or key missing) is ``None``; a cgroup that does not exist (the
container is not running) gives no :class:`Usage` at all.

**Where.** ``linux.cgroupsPath`` of an OCI spec (with the cgroupfs driver) is a path in
the cgroup hierarchy. An absolute one is taken from the hierarchy's root by every
runtime. A relative one (a pod whose ``cgroup_parent`` is relative) is resolved as the
runtime that created the cgroup resolves it:

- runc (libcontainer/cgroups/fs, fs2): on v1, against the cgroup runc itself is in,
  per controller (``/proc/self/cgroup``, relative to the hierarchy's mount root, as
  ``GetOwnCgroupPath`` does); on v2, against the *parent* of runc's own cgroup
  (``filepath.Dir`` of it: its own cgroup has processes, so it cannot have children
  with controllers). runc runs under conmon, a child of the daemon, in the daemon's
  cgroups: the daemon's own ``/proc/self/cgroup`` is runc's.
- crun (libcrun/cgroup-cgroupfs.c): ``"/" + path``, the root of the hierarchy.

On a hybrid host both runtimes account CPU and memory in the v1 controllers, so
hybrid is read as v1 (pycri runs crun there without the unified mount at all).
"""

from __future__ import annotations

import enum
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pycri.host.cgroups import CgroupMounts, Layout

# A v1 limit at or above this is "no limit" (the kernel reports PAGE_COUNTER_MAX pages as bytes).
UNLIMITED = 1 << 62

# The v1 controllers the readers use.
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio")
V1_CONTROLLERS_DETAIL = ("cpuacct", "cpu", "memory", "pids", "blkio")


class Style(enum.Enum):
    """How the OCI runtime that made a cgroup resolved a relative ``cgroupsPath``."""

    RUNC = "runc"  # against its own cgroup (v1) or that cgroup's parent (v2)
    CRUN = "crun"  # against the root of the hierarchy

    @classmethod
    def of(cls, binary: str) -> Style:
        """The style of a runtime binary: crun's, or runc's for anything else (runc, youki...)."""
        return cls.CRUN if "crun" in os.path.basename(binary) else cls.RUNC


@dataclass(frozen=True)
class Hierarchy:
    mountpoint: str
    root: str = "/"  # the cgroup the mount shows at its mount point (mountinfo's root field)


@dataclass(frozen=True)
class HostCgroups:
    """The host's cgroup hierarchies and the daemon's own place in them."""

    layout: Layout
    unified: Hierarchy | None = None
    v1: Mapping[str, Hierarchy] = field(default_factory=dict)  # controller -> hierarchy
    own: Mapping[str, str] = field(default_factory=dict)  # controller -> own cgroup; "" is the unified one

    @classmethod
    def from_mounts(cls, mounts: CgroupMounts, own: Mapping[str, str] | None = None) -> HostCgroups:
        unified = Hierarchy(mounts.unified) if mounts.unified else None
        return cls(mounts.layout, unified, {c: Hierarchy(m) for c, m in mounts.v1.items()}, dict(own or {}))

    def dirs(self, cgroups_path: str, style: Style = Style.RUNC) -> CgroupDirs | None:
        """The directories of the cgroup ``cgroups_path`` (as in an OCI spec); None without cgroups."""
        if not cgroups_path:
            return None
        inner = clean_path(cgroups_path)
        if self.layout in (Layout.V1, Layout.HYBRID):
            found: dict[str, Path] = {}
            for controller in V1_CONTROLLERS:
                hierarchy = self.v1.get(controller)
                if hierarchy is None:
                    continue
                found[controller] = Path(self._v1_dir(hierarchy, controller, inner, style))
            return CgroupDirs(v1=found)
        if self.layout is Layout.V2 and self.unified is not None:
            return CgroupDirs(unified=Path(self._v2_dir(self.unified, inner, style)))
        return None

    def _v1_dir(self, hierarchy: Hierarchy, controller: str, inner: str, style: Style) -> str:
        if posixpath.isabs(inner) or style is Style.CRUN:
            return _join(hierarchy.mountpoint, inner)
        # runc's GetOwnCgroupPath: its own cgroup, relative to the cgroup the mount shows.
        own = posixpath.relpath(self.own.get(controller, "/"), hierarchy.root)
        return _join(_join(hierarchy.mountpoint, own), inner)

    def _v2_dir(self, hierarchy: Hierarchy, inner: str, style: Style) -> str:
        if posixpath.isabs(inner) or style is Style.CRUN:
            return _join(hierarchy.mountpoint, inner)
        parent = posixpath.dirname(self.own.get("", "/")) or "/"
        return _join(_join(hierarchy.mountpoint, parent), inner)


@dataclass(frozen=True)
class CgroupDirs:
    """One cgroup's directories: per v1 controller, or the unified one."""

    v1: Mapping[str, Path] = field(default_factory=dict)
    unified: Path | None = None

    def exists(self) -> bool:
        if self.unified is not None:
            return self.unified.is_dir()
        return any(self.v1[c].is_dir() for c in ("cpuacct", "memory") if c in self.v1)

    def procs_dir(self) -> Path | None:
        """A directory whose ``cgroup.procs`` lists the cgroup's processes."""
        if self.unified is not None:
            return self.unified
        for controller in ("pids", "memory", "cpuacct", "cpu"):
            if controller in self.v1:
                return self.v1[controller]
        return None


def clean_path(path: str) -> str:
    """libcontainer's ``utils.CleanPath``: lexically clean; a relative path cannot climb out (``../a`` is ``a``)."""
    if not path:
        return ""
    cleaned = posixpath.normpath(path)
    if not posixpath.isabs(cleaned):
        cleaned = posixpath.relpath(posixpath.normpath("/" + cleaned), "/")
    return cleaned


def _join(base: str, path: str) -> str:
    path = path.lstrip("/")
    return posixpath.normpath(posixpath.join(base, path)) if path and path != "." else base


def _unescape(text: str) -> str:
    """A mountinfo field: spaces, tabs, newlines and backslashes are octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text) if "\\" in text else text


def parse_host(mountinfo: str, proc_cgroup: str, system_root: str = "/sys/fs/cgroup") -> HostCgroups:
    """The hierarchies from /proc/self/mountinfo text and the own cgroups from /proc/self/cgroup text."""
    unified: Hierarchy | None = None
    v1: dict[str, Hierarchy] = {}
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, mountpoint = _unescape(fields[3]), _unescape(fields[4])
        fstype, options = tail[0], tail[2]
        if fstype == "cgroup2":
            unified = Hierarchy(mountpoint, root)
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in ("rw", "ro") or ("=" in opt and not opt.startswith("name=")):
                    continue
                v1.setdefault(opt.removeprefix("name="), Hierarchy(mountpoint, root))
    own: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            own[""] = path
        for controller in controllers.split(","):
            if controller:
                own[controller.removeprefix("name=")] = path
    if unified is not None and unified.mountpoint == system_root:
        layout = Layout.V2
    elif v1 and unified is not None:
        layout = Layout.HYBRID
    elif v1:
        layout = Layout.V1
    elif unified is not None:
        layout = Layout.V2
    else:
        layout = Layout.NONE
    return HostCgroups(layout, unified, v1, own)


def detect_host() -> HostCgroups:
    return parse_host(Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text())


# -- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PressureLine:
    """One line of a pressure (PSI) file: ``total`` in microseconds, the averages in percent."""

    total_us: int
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class Pressure:
    some: PressureLine | None = None
    full: PressureLine | None = None


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
    # Pressure stall information by resource ("cpu", "memory", "io"): cgroup v2 only.
    pressure: Mapping[str, Pressure] | None = None


@dataclass(frozen=True)
class IoDevice:
    major: int
    minor: int
    read_bytes: int = 0
    write_bytes: int = 0
    reads: int = 0
    writes: int = 0


@dataclass(frozen=True)
class Detail:
    """What the CRI metrics need beyond :class:`Usage` (cAdvisor's container metrics)."""

    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    cache: int | None = None
    mapped_file: int | None = None
    kernel: int | None = None
    max_usage: int | None = None
    failcnt: int | None = None
    oom_kills: int | None = None
    memory_reservation: int | None = None  # None when unlimited
    cpu_shares: int | None = None
    cpu_quota_us: int | None = None  # None when unlimited
    cpu_period_us: int | None = None
    threads: int | None = None  # tasks in the cgroup (pids.current)
    threads_max: int | None = None  # None when unlimited
    io: tuple[IoDevice, ...] = ()


def _read_text(path: str | Path) -> str | None:
    """A small kernel file, whole (os-level: pathlib's overhead is most of a cgroup read's cost)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _read_int(path: str) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _read_limit(path: str) -> int | None:
    """A limit file: ``max`` (v2) or a huge number (v1) mean no limit."""
    value = _read_int(path)
    return value if value is not None and 0 <= value < UNLIMITED else None


def _read_keyed(path: str) -> dict[str, int]:
    """A flat keyed file (``key value`` per line) such as memory.stat or cpu.stat."""
    text = _read_text(path)
    if text is None:
        return {}
    words = text.split()
    if len(words) == 2 * text.count("\n"):  # the usual shape: pairs only, read at C speed
        try:
            return dict(zip(words[::2], map(int, words[1::2]), strict=True))
        except ValueError:
            pass
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return out


def _join_path(mountpoint: str, cgroups_path: str) -> str:
    return posixpath.join(mountpoint, cgroups_path.lstrip("/"))


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(usage - (inactive_file or 0), 0)


def _total(stat: Mapping[str, int], key: str) -> int | None:
    """A v1 memory.stat value, hierarchical (``total_``) when the kernel gives it."""
    return stat.get("total_" + key, stat.get(key))


def _usage_v1(cpu_dir: str | None, mem_dir: str | None) -> Usage | None:
    cpu = _read_int(f"{cpu_dir}/cpuacct.usage") if cpu_dir is not None else None
    usage = _read_int(f"{mem_dir}/memory.usage_in_bytes") if mem_dir is not None else None
    if usage is None:
        # No memory figures: a cgroup with none of its files, or one that does not exist at all.
        mem_present = mem_dir is not None and os.path.isdir(mem_dir)
        if cpu is None and not mem_present and not (cpu_dir is not None and os.path.isdir(cpu_dir)):
            return None
        if not mem_present:
            return Usage(cpu_usage_ns=cpu)
    assert mem_dir is not None
    stat = _read_keyed(f"{mem_dir}/memory.stat")
    limit = _read_limit(f"{mem_dir}/memory.limit_in_bytes")
    memsw_usage = _read_int(f"{mem_dir}/memory.memsw.usage_in_bytes")
    swap_usage = max(memsw_usage - usage, 0) if memsw_usage is not None and usage is not None else None
    memsw_limit = _read_limit(f"{mem_dir}/memory.memsw.limit_in_bytes")
    swap_limit = max(memsw_limit - limit, 0) if memsw_limit is not None and limit is not None else None
    return Usage(
        cpu_usage_ns=cpu,
        memory_usage=usage,
        working_set=_working_set(usage, _total(stat, "inactive_file")),
        rss=_total(stat, "rss"),
        page_faults=_total(stat, "pgfault"),
        major_page_faults=_total(stat, "pgmajfault"),
        memory_limit=limit,
        swap_usage=swap_usage,
        swap_limit=swap_limit,
    )


def read_pressure(path: str | Path) -> Pressure | None:
    """A PSI file (``some avg10=0.00 avg60=0.00 avg300=0.00 total=0`` and a ``full`` line)."""
    text = _read_text(path)
    if text is None:
        return None
    lines: dict[str, PressureLine] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        values = dict(item.split("=", 1) for item in rest.split() if "=" in item)
        try:
            lines[kind] = PressureLine(
                int(values["total"]), float(values["avg10"]), float(values["avg60"]), float(values["avg300"])
            )
        except (KeyError, ValueError):
            continue
    return Pressure(lines.get("some"), lines.get("full")) if lines else None


def _usage_v2(path: str) -> Usage | None:
    cpu_stat = _read_keyed(f"{path}/cpu.stat")
    if not cpu_stat and not os.path.isdir(path):
        return None
    usage_usec = cpu_stat.get("usage_usec")
    usage = _read_int(f"{path}/memory.current")
    stat = _read_keyed(f"{path}/memory.stat")
    pressure = {name: p for name in ("cpu", "memory", "io") if (p := read_pressure(f"{path}/{name}.pressure")) is not None}
    return Usage(
        cpu_usage_ns=usage_usec * 1000 if usage_usec is not None else None,
        memory_usage=usage,
        working_set=_working_set(usage, stat.get("inactive_file")),
        rss=stat.get("anon"),
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        memory_limit=_read_limit(f"{path}/memory.max"),
        swap_usage=_read_int(f"{path}/memory.swap.current"),
        swap_limit=_read_limit(f"{path}/memory.swap.max"),
        pressure=pressure or None,
    )


def read_usage(dirs: CgroupDirs) -> Usage | None:
    """The usage of the cgroup at ``dirs``, or None if it does not exist."""
    if dirs.unified is not None:
        return _usage_v2(str(dirs.unified))
    cpu, memory = dirs.v1.get("cpuacct"), dirs.v1.get("memory")
    return _usage_v1(str(cpu) if cpu is not None else None, str(memory) if memory is not None else None)


def read_v1(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    cpu_mount, mem_mount = mounts.v1.get("cpuacct"), mounts.v1.get("memory")
    cpu_dir = _join_path(cpu_mount, cgroups_path) if cpu_mount else None
    mem_dir = _join_path(mem_mount, cgroups_path) if mem_mount else None
    return _usage_v1(cpu_dir, mem_dir)


def read_v2(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    if mounts.unified is None:
        return None
    return _usage_v2(_join_path(mounts.unified, cgroups_path))


def read_container(cgroups_path: str, mounts: CgroupMounts) -> Usage | None:
    """The usage of the cgroup ``cgroups_path`` taken from the hierarchy's root, or None if it does not exist."""
    if not cgroups_path:
        return None
    if mounts.layout in (Layout.V1, Layout.HYBRID):
        return read_v1(cgroups_path, mounts)
    if mounts.layout is Layout.V2:
        return read_v2(cgroups_path, mounts)
    return None


# -- details (metrics) --------------------------------------------------------------------------


def _cfs_v1(quota: int | None) -> int | None:
    return quota if quota is not None and quota > 0 else None


def _io_v1(blkio: str) -> tuple[IoDevice, ...]:
    devices: dict[tuple[int, int], dict[str, int]] = {}
    for name, key in (("blkio.throttle.io_service_bytes_recursive", "bytes"), ("blkio.throttle.io_serviced_recursive", "ops")):
        text = _read_text(f"{blkio}/{name}") or ""
        for line in text.splitlines():
            parts = line.split()
            if len(parts) != 3 or ":" not in parts[0]:
                continue
            major, _, minor = parts[0].partition(":")
            try:
                dev, value = (int(major), int(minor)), int(parts[2])
            except ValueError:
                continue
            op = parts[1].lower()
            if op in ("read", "write"):
                devices.setdefault(dev, {})[f"{op}_{key}"] = value
    return tuple(_device(dev, values) for dev, values in sorted(devices.items()))


def _io_v2(path: str) -> tuple[IoDevice, ...]:
    found = []
    for line in (_read_text(f"{path}/io.stat") or "").splitlines():
        parts = line.split()
        if not parts or ":" not in parts[0]:
            continue
        major, _, minor = parts[0].partition(":")
        values: dict[str, int] = {}
        for item in parts[1:]:
            key, _, value = item.partition("=")
            if value.isdigit():
                values[key] = int(value)
        try:
            dev = (int(major), int(minor))
        except ValueError:
            continue
        mapped = {
            "read_bytes": values.get("rbytes", 0),
            "write_bytes": values.get("wbytes", 0),
            "read_ops": values.get("rios", 0),
            "write_ops": values.get("wios", 0),
        }
        found.append(_device(dev, mapped))
    return tuple(found)


def _device(dev: tuple[int, int], values: Mapping[str, int]) -> IoDevice:
    return IoDevice(
        dev[0],
        dev[1],
        read_bytes=values.get("read_bytes", 0),
        write_bytes=values.get("write_bytes", 0),
        reads=values.get("read_ops", 0),
        writes=values.get("write_ops", 0),
    )


def _detail_v1(dirs: Mapping[str, Path]) -> Detail:
    cpuacct, cpu, memory, pids, blkio = (str(d) if (d := dirs.get(c)) is not None else None for c in V1_CONTROLLERS_DETAIL)
    user = system = None
    if cpuacct is not None:
        user, system = _read_int(f"{cpuacct}/cpuacct.usage_user"), _read_int(f"{cpuacct}/cpuacct.usage_sys")
        if user is None or system is None:  # older kernels: cpuacct.stat in clock ticks
            ticks = _read_keyed(f"{cpuacct}/cpuacct.stat")
            hz = os.sysconf("SC_CLK_TCK") or 100
            user = ticks["user"] * 1_000_000_000 // hz if "user" in ticks else None
            system = ticks["system"] * 1_000_000_000 // hz if "system" in ticks else None
    throttling = _read_keyed(f"{cpu}/cpu.stat") if cpu is not None else {}
    stat = _read_keyed(f"{memory}/memory.stat") if memory is not None else {}
    oom = _read_keyed(f"{memory}/memory.oom_control") if memory is not None else {}
    threads_max = _read_int(f"{pids}/pids.max") if pids is not None else None
    return Detail(
        cpu_user_ns=user,
        cpu_system_ns=system,
        cfs_periods=throttling.get("nr_periods"),
        cfs_throttled_periods=throttling.get("nr_throttled"),
        cfs_throttled_ns=throttling.get("throttled_time"),
        cache=_total(stat, "cache"),
        mapped_file=_total(stat, "mapped_file"),
        kernel=_read_int(f"{memory}/memory.kmem.usage_in_bytes") if memory is not None else None,
        max_usage=_read_int(f"{memory}/memory.max_usage_in_bytes") if memory is not None else None,
        failcnt=_read_int(f"{memory}/memory.failcnt") if memory is not None else None,
        oom_kills=oom.get("oom_kill"),
        memory_reservation=_read_limit(f"{memory}/memory.soft_limit_in_bytes") if memory is not None else None,
        cpu_shares=_read_int(f"{cpu}/cpu.shares") if cpu is not None else None,
        cpu_quota_us=_cfs_v1(_read_int(f"{cpu}/cpu.cfs_quota_us")) if cpu is not None else None,
        cpu_period_us=_read_int(f"{cpu}/cpu.cfs_period_us") if cpu is not None else None,
        threads=_read_int(f"{pids}/pids.current") if pids is not None else None,
        threads_max=threads_max if threads_max is not None and threads_max > 0 else None,
        io=_io_v1(blkio) if blkio is not None else (),
    )


def weight_to_shares(weight: int) -> int:
    """cgroup v2 ``cpu.weight`` back to v1 shares (the inverse of runc's shares-to-weight conversion)."""
    return 2 + ((weight - 1) * 262142) // 9999


def _detail_v2(path: str) -> Detail:
    cpu_stat = _read_keyed(f"{path}/cpu.stat")
    stat = _read_keyed(f"{path}/memory.stat")
    events = _read_keyed(f"{path}/memory.events")
    quota = period = None
    parts = (_read_text(f"{path}/cpu.max") or "").split()
    if len(parts) == 2:
        quota = int(parts[0]) if parts[0].isdigit() else None
        period = int(parts[1]) if parts[1].isdigit() else None
    weight = _read_int(f"{path}/cpu.weight")
    kernel = stat.get("kernel")
    if kernel is None and "kernel_stack" in stat:
        kernel = sum(stat.get(k, 0) for k in ("kernel_stack", "pagetables", "percpu", "sock", "slab", "vmalloc"))

    def usec(key: str) -> int | None:
        value = cpu_stat.get(key)
        return value * 1000 if value is not None else None

    return Detail(
        cpu_user_ns=usec("user_usec"),
        cpu_system_ns=usec("system_usec"),
        cfs_periods=cpu_stat.get("nr_periods"),
        cfs_throttled_periods=cpu_stat.get("nr_throttled"),
        cfs_throttled_ns=usec("throttled_usec"),
        cache=stat.get("file"),
        mapped_file=stat.get("file_mapped"),
        kernel=kernel,
        max_usage=_read_int(f"{path}/memory.peak"),
        failcnt=events.get("max"),
        oom_kills=events.get("oom_kill"),
        memory_reservation=_read_limit(f"{path}/memory.low") or None,
        cpu_shares=weight_to_shares(weight) if weight is not None else None,
        cpu_quota_us=quota,
        cpu_period_us=period,
        threads=_read_int(f"{path}/pids.current"),
        threads_max=_read_limit(f"{path}/pids.max"),
        io=_io_v2(path),
    )


def read_detail(dirs: CgroupDirs) -> Detail:
    if dirs.unified is not None:
        return _detail_v2(str(dirs.unified))
    return _detail_v1(dirs.v1)


def processes(dirs: CgroupDirs) -> list[int] | None:
    """The processes in the cgroup and its descendants (None when it does not exist)."""
    top = dirs.procs_dir()
    if top is None:
        return None
    found: set[int] = set()
    stack = [str(top)]
    first = True
    while stack:
        current = stack.pop()
        text = _read_text(f"{current}/cgroup.procs")
        if text is None:
            if first:
                return None
            continue
        first = False
        found.update(int(line) for line in text.split())
        try:
            with os.scandir(current) as entries:
                stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    return sorted(found)
