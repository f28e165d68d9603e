"""Reading container usage from fake cgroup v1/v2 trees."""

from __future__ import annotations

from pathlib import Path

from pycri.host.cgroups import CgroupMounts, Layout
from pycri.stats.cgroups import Usage, read_container

CG = "/pycri/pod1/pycri-abc"
V1_UNLIMITED = "9223372036854771712"

V1_MEMORY_STAT = """\
cache 100
rss 5
inactive_file 7
pgfault 1
pgmajfault 1
total_cache 4096
total_rss 8192
total_pgfault 321
total_pgmajfault 4
total_inactive_file 1024
total_active_file 2048
"""

V2_MEMORY_STAT = """\
anon 12288
file 8192
inactive_file 4096
active_file 4096
pgfault 77
pgmajfault 3
"""


def write(root: Path, files: dict[str, str]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)


def v1_mounts(tmp: Path, *, combined: bool = False, layout: Layout = Layout.V1) -> CgroupMounts:
    cpu = tmp / ("cpu,cpuacct" if combined else "cpuacct")
    v1 = {"cpuacct": str(cpu), "memory": str(tmp / "memory"), "pids": str(tmp / "pids")}
    if combined:
        v1["cpu"] = str(cpu)
    unified = str(tmp / "unified") if layout is Layout.HYBRID else None
    return CgroupMounts(layout=layout, unified=unified, v1=v1)


def v2_mounts(tmp: Path) -> CgroupMounts:
    return CgroupMounts(layout=Layout.V2, unified=str(tmp), v1={})


def full_v1(tmp: Path, mounts: CgroupMounts, *, limit: str = "1048576", memsw_limit: str = "2097152") -> None:
    write(Path(mounts.v1["cpuacct"]) / CG.lstrip("/"), {"cpuacct.usage": "123456789\n"})
    write(
        Path(mounts.v1["memory"]) / CG.lstrip("/"),
        {
            "memory.usage_in_bytes": "10240\n",
            "memory.stat": V1_MEMORY_STAT,
            "memory.limit_in_bytes": limit + "\n",
            "memory.memsw.usage_in_bytes": "12288\n",
            "memory.memsw.limit_in_bytes": memsw_limit + "\n",
        },
    )


def test_v1_exact_values(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    full_v1(tmp_path, mounts)
    assert read_container(CG, mounts) == Usage(
        cpu_usage_ns=123456789,
        memory_usage=10240,
        working_set=10240 - 1024,
        rss=8192,
        page_faults=321,
        major_page_faults=4,
        memory_limit=1048576,
        swap_usage=2048,
        swap_limit=1048576,
    )


def test_v1_combined_cpu_cpuacct_and_hybrid_use_v1(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path, combined=True, layout=Layout.HYBRID)
    full_v1(tmp_path, mounts)
    # A cgroup2 tree in the hybrid's unified mount must not be what is read.
    write(tmp_path / "unified" / CG.lstrip("/"), {"cpu.stat": "usage_usec 1\n", "memory.current": "1\n"})
    usage = read_container(CG, mounts)
    assert usage is not None
    assert (usage.cpu_usage_ns, usage.memory_usage) == (123456789, 10240)


def test_v1_unlimited_and_no_swap_accounting(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    full_v1(tmp_path, mounts, limit=V1_UNLIMITED, memsw_limit=V1_UNLIMITED)
    (Path(mounts.v1["memory"]) / CG.lstrip("/") / "memory.memsw.usage_in_bytes").unlink()
    usage = read_container(CG, mounts)
    assert usage is not None
    assert (usage.memory_limit, usage.swap_usage, usage.swap_limit) == (None, None, None)
    assert usage.working_set == 9216


def test_v1_working_set_never_negative(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    full_v1(tmp_path, mounts)
    (Path(mounts.v1["memory"]) / CG.lstrip("/") / "memory.usage_in_bytes").write_text("512\n")
    usage = read_container(CG, mounts)
    assert usage is not None
    assert usage.working_set == 0


def test_v1_missing_files_leave_fields_unset(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    write(Path(mounts.v1["memory"]) / CG.lstrip("/"), {"memory.usage_in_bytes": "4096\n"})
    # no cpuacct directory, no memory.stat, no limit, no memsw files
    assert read_container(CG, mounts) == Usage(memory_usage=4096, working_set=4096)


def test_v1_stat_without_totals_falls_back(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    write(
        Path(mounts.v1["memory"]) / CG.lstrip("/"),
        {"memory.usage_in_bytes": "100\n", "memory.stat": "rss 30\ninactive_file 10\npgfault 2\n"},
    )
    usage = read_container(CG, mounts)
    assert usage is not None
    assert (usage.rss, usage.working_set, usage.page_faults, usage.major_page_faults) == (30, 90, 2, None)


def test_v1_missing_cgroup_is_none(tmp_path: Path) -> None:
    mounts = v1_mounts(tmp_path)
    (tmp_path / "cpuacct").mkdir()
    (tmp_path / "memory").mkdir()
    assert read_container(CG, mounts) is None


def test_v2_exact_values(tmp_path: Path) -> None:
    write(
        tmp_path / CG.lstrip("/"),
        {
            "cpu.stat": "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n",
            "memory.current": "20480\n",
            "memory.stat": V2_MEMORY_STAT,
            "memory.max": "65536\n",
            "memory.swap.current": "1024\n",
            "memory.swap.max": "max\n",
        },
    )
    assert read_container(CG, v2_mounts(tmp_path)) == Usage(
        cpu_usage_ns=2_500_000,
        memory_usage=20480,
        working_set=16384,
        rss=12288,
        page_faults=77,
        major_page_faults=3,
        memory_limit=65536,
        swap_usage=1024,
        swap_limit=None,
    )


def test_v2_missing_files_leave_fields_unset(tmp_path: Path) -> None:
    write(tmp_path / CG.lstrip("/"), {"cpu.stat": "usage_usec 7\n", "memory.max": "max\n"})
    assert read_container(CG, v2_mounts(tmp_path)) == Usage(cpu_usage_ns=7000)


def test_v2_missing_cgroup_is_none(tmp_path: Path) -> None:
    assert read_container(CG, v2_mounts(tmp_path)) is None


def test_no_path_or_no_cgroups_is_none(tmp_path: Path) -> None:
    assert read_container("", v2_mounts(tmp_path)) is None
    assert read_container(CG, CgroupMounts(layout=Layout.NONE, unified=None, v1={})) is None
