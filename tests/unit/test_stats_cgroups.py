"""Reading container usage from fake cgroup v1/v2/hybrid trees, and finding cgroups as runc and crun do."""

from __future__ import annotations

import os
from pathlib import Path

from pycri.host.cgroups import CgroupMounts, Layout
from pycri.stats.cgroups import (
    CgroupDirs,
    Detail,
    Hierarchy,
    HostCgroups,
    IoDevice,
    Pressure,
    PressureLine,
    Style,
    Usage,
    clean_path,
    parse_host,
    processes,
    read_container,
    read_detail,
    read_usage,
    weight_to_shares,
)

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


# -- where a cgroup is: runc's and crun's rules for a relative cgroupsPath -------------------------

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
HYBRID_CGROUP = """\
9:name=systemd:/system.slice/pycri.service
8:pids:/system.slice/pycri.service
4:memory:/agents/a1
2:cpuacct:/
1:cpu:/
0::/system.slice/pycri.service
"""
V1_COMBINED_MOUNTINFO = """\
25 24 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
26 24 0:23 /docker/abc /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
"""
V1_COMBINED_CGROUP = "3:cpu,cpuacct:/user.slice\n2:memory:/docker/abc/inner\n"
V2_MOUNTINFO = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
V2_CGROUP = "0::/system.slice/pycri.service\n"


def test_parse_host_hybrid() -> None:
    host = parse_host(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    assert host.layout is Layout.HYBRID
    assert host.unified == Hierarchy("/sys/fs/cgroup/unified", "/")
    assert host.v1["memory"] == Hierarchy("/sys/fs/cgroup/memory", "/")
    assert host.v1["systemd"].mountpoint == "/sys/fs/cgroup/systemd"
    assert "xattr" in host.v1  # an option like any other; never a controller anyone reads
    assert host.own["memory"] == "/agents/a1"
    assert host.own[""] == "/system.slice/pycri.service"


def test_parse_host_v2_and_v1() -> None:
    v2 = parse_host(V2_MOUNTINFO, V2_CGROUP)
    assert (v2.layout, v2.unified, dict(v2.v1)) == (Layout.V2, Hierarchy("/sys/fs/cgroup", "/"), {})
    v1 = parse_host(V1_COMBINED_MOUNTINFO, V1_COMBINED_CGROUP)
    assert v1.layout is Layout.V1
    assert v1.v1["cpu"] == v1.v1["cpuacct"] == Hierarchy("/sys/fs/cgroup/cpu,cpuacct", "/")
    assert v1.v1["memory"] == Hierarchy("/sys/fs/cgroup/memory", "/docker/abc")
    assert parse_host("", "").layout is Layout.NONE


def test_absolute_path_is_from_the_root_for_every_runtime() -> None:
    host = parse_host(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    for style in Style:
        dirs = host.dirs("/kubepods/pod1/pycri-c1", style)
        assert dirs is not None
        assert dirs.unified is None  # hybrid: the v1 controllers
        assert dirs.v1["memory"] == Path("/sys/fs/cgroup/memory/kubepods/pod1/pycri-c1")
        assert dirs.v1["cpuacct"] == Path("/sys/fs/cgroup/cpuacct/kubepods/pod1/pycri-c1")


def test_relative_path_v1_runc_is_below_its_own_cgroup_per_controller() -> None:
    host = parse_host(HYBRID_MOUNTINFO, HYBRID_CGROUP)
    dirs = host.dirs("pods/pycri-c1", Style.RUNC)
    assert dirs is not None
    assert dirs.v1["memory"] == Path("/sys/fs/cgroup/memory/agents/a1/pods/pycri-c1")  # the bug: read at memory/pods/...
    assert dirs.v1["cpuacct"] == Path("/sys/fs/cgroup/cpuacct/pods/pycri-c1")
    assert dirs.v1["pids"] == Path("/sys/fs/cgroup/pids/system.slice/pycri.service/pods/pycri-c1")


def test_relative_path_v1_runc_against_a_mount_of_a_subtree() -> None:
    # Inside a container without a cgroup namespace: the memory mount shows /docker/abc at its mount point.
    host = parse_host(V1_COMBINED_MOUNTINFO, V1_COMBINED_CGROUP)
    dirs = host.dirs("pods/x", Style.RUNC)
    assert dirs is not None
    assert dirs.v1["memory"] == Path("/sys/fs/cgroup/memory/inner/pods/x")
    assert dirs.v1["cpu"] == Path("/sys/fs/cgroup/cpu,cpuacct/user.slice/pods/x")


def test_relative_path_v2_runc_is_below_the_parent_of_its_own_cgroup() -> None:
    host = parse_host(V2_MOUNTINFO, V2_CGROUP)
    dirs = host.dirs("pods/pycri-c1", Style.RUNC)
    assert dirs == CgroupDirs(unified=Path("/sys/fs/cgroup/system.slice/pods/pycri-c1"))
    assert host.dirs("/pods/pycri-c1", Style.RUNC) == CgroupDirs(unified=Path("/sys/fs/cgroup/pods/pycri-c1"))


def test_relative_path_crun_is_from_the_root() -> None:
    hybrid = parse_host(HYBRID_MOUNTINFO, HYBRID_CGROUP).dirs("pods/pycri-c1", Style.CRUN)
    assert hybrid is not None
    assert hybrid.v1["memory"] == Path("/sys/fs/cgroup/memory/pods/pycri-c1")
    v2 = parse_host(V2_MOUNTINFO, V2_CGROUP).dirs("pods/pycri-c1", Style.CRUN)
    assert v2 == CgroupDirs(unified=Path("/sys/fs/cgroup/pods/pycri-c1"))


def test_clean_path_keeps_a_relative_path_inside() -> None:
    assert clean_path("../../etc/x") == "etc/x"
    assert clean_path("./a//b/") == "a/b"
    assert clean_path("/a/../b") == "/b"
    assert clean_path("") == ""
    host = parse_host(V2_MOUNTINFO, V2_CGROUP)
    assert host.dirs("../../escape", Style.RUNC) == CgroupDirs(unified=Path("/sys/fs/cgroup/system.slice/escape"))


def test_style_of_the_runtime_binary() -> None:
    assert Style.of("/usr/bin/crun") is Style.CRUN
    assert Style.of("/state/bin/crun/crun") is Style.CRUN
    assert Style.of("/usr/sbin/runc") is Style.RUNC
    assert Style.of("/usr/local/bin/youki") is Style.RUNC


def fake_host(tmp: Path, layout: Layout, own: dict[str, str] | None = None) -> HostCgroups:
    if layout is Layout.V2:
        return HostCgroups(layout, Hierarchy(str(tmp / "unified")), {}, own or {"": "/daemon/leaf"})
    v1 = {c: Hierarchy(str(tmp / c)) for c in ("cpu", "cpuacct", "memory", "pids", "blkio")}
    unified = Hierarchy(str(tmp / "unified")) if layout is Layout.HYBRID else None
    return HostCgroups(layout, unified, v1, own or {"memory": "/agent", "cpu": "/", "cpuacct": "/"})


def test_relative_parent_memory_is_read_where_runc_put_it(tmp_path: Path) -> None:
    """The bug: with a relative cgroup_parent, memory came back empty (read against the hierarchy's root)."""
    host = fake_host(tmp_path, Layout.HYBRID)
    write(tmp_path / "cpuacct" / "rel" / "pycri-c", {"cpuacct.usage": "5\n"})
    memory = {"memory.usage_in_bytes": "8192\n", "memory.stat": "total_rss 4096\n"}
    write(tmp_path / "memory" / "agent" / "rel" / "pycri-c", memory)
    # A cgroup2 tree in the hybrid's unified mount must not be what is read.
    write(tmp_path / "unified" / "rel" / "pycri-c", {"memory.current": "1\n"})
    dirs = host.dirs("rel/pycri-c", Style.RUNC)
    assert dirs is not None
    usage = read_usage(dirs)
    assert usage is not None
    assert (usage.cpu_usage_ns, usage.memory_usage, usage.rss) == (5, 8192, 4096)
    # crun put it under the root instead: nothing there in this tree.
    crun = host.dirs("rel/pycri-c", Style.CRUN)
    assert crun is not None
    assert read_usage(crun) == Usage(cpu_usage_ns=5)


def test_v2_relative_parent_and_pressure(tmp_path: Path) -> None:
    host = fake_host(tmp_path, Layout.V2)
    write(
        tmp_path / "unified" / "daemon" / "rel" / "pycri-c",
        {
            "cpu.stat": "usage_usec 10\n",
            "memory.current": "4096\n",
            "cpu.pressure": (
                "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234567\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=42\n"
            ),
            "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
        },
    )
    dirs = host.dirs("rel/pycri-c", Style.RUNC)
    assert dirs is not None
    usage = read_usage(dirs)
    assert usage is not None
    assert (usage.cpu_usage_ns, usage.memory_usage) == (10_000, 4096)
    assert usage.pressure is not None
    assert usage.pressure["cpu"] == Pressure(PressureLine(1234567, 1.5, 0.25, 0.0), PressureLine(42, 0.0, 0.0, 0.0))
    assert usage.pressure["memory"].full is None
    assert "io" not in usage.pressure


def test_detail_v1(tmp_path: Path) -> None:
    host = fake_host(tmp_path, Layout.V1)
    cg = "/pods/c"
    cpuacct = {"cpuacct.usage": "3\n", "cpuacct.usage_user": "2000000000\n", "cpuacct.usage_sys": "7\n"}
    write(tmp_path / "cpuacct" / "pods" / "c", cpuacct)
    write(
        tmp_path / "cpu" / "pods" / "c",
        {
            "cpu.stat": "nr_periods 10\nnr_throttled 3\nthrottled_time 5000000000\n",
            "cpu.shares": "512\n",
            "cpu.cfs_quota_us": "-1\n",
            "cpu.cfs_period_us": "100000\n",
        },
    )
    write(
        tmp_path / "memory" / "pods" / "c",
        {
            "memory.stat": "total_cache 11\ntotal_mapped_file 12\n",
            "memory.kmem.usage_in_bytes": "13\n",
            "memory.max_usage_in_bytes": "14\n",
            "memory.failcnt": "15\n",
            "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
            "memory.soft_limit_in_bytes": V1_UNLIMITED + "\n",
        },
    )
    write(tmp_path / "pids" / "pods" / "c", {"pids.current": "4\n", "pids.max": "max\n", "cgroup.procs": "10\n11\n"})
    write(tmp_path / "pids" / "pods" / "c" / "child", {"cgroup.procs": "12\n"})
    write(
        tmp_path / "blkio" / "pods" / "c",
        {
            "blkio.throttle.io_service_bytes_recursive": (
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 1\n8:0 Total 12288\nTotal 12288\n"
            ),
            "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
        },
    )
    dirs = host.dirs(cg)
    assert dirs is not None
    assert read_detail(dirs) == Detail(
        cpu_user_ns=2_000_000_000,
        cpu_system_ns=7,
        cfs_periods=10,
        cfs_throttled_periods=3,
        cfs_throttled_ns=5_000_000_000,
        cache=11,
        mapped_file=12,
        kernel=13,
        max_usage=14,
        failcnt=15,
        oom_kills=2,
        memory_reservation=None,
        cpu_shares=512,
        cpu_quota_us=None,
        cpu_period_us=100000,
        threads=4,
        threads_max=None,
        io=(IoDevice(8, 0, read_bytes=4096, write_bytes=8192, reads=1, writes=2),),
    )
    assert processes(dirs) == [10, 11, 12]


def test_detail_v1_cpuacct_stat_in_ticks(tmp_path: Path) -> None:
    host = fake_host(tmp_path, Layout.V1)
    write(tmp_path / "cpuacct" / "c", {"cpuacct.stat": "user 100\nsystem 50\n"})
    dirs = host.dirs("/c")
    assert dirs is not None
    hz = os.sysconf("SC_CLK_TCK")
    detail = read_detail(dirs)
    assert (detail.cpu_user_ns, detail.cpu_system_ns) == (100 * 10**9 // hz, 50 * 10**9 // hz)


def test_detail_v2(tmp_path: Path) -> None:
    host = fake_host(tmp_path, Layout.V2)
    write(
        tmp_path / "unified" / "pods" / "c",
        {
            "cpu.stat": "usage_usec 9\nuser_usec 5\nsystem_usec 4\nnr_periods 6\nnr_throttled 1\nthrottled_usec 2000\n",
            "cpu.max": "20000 100000\n",
            "cpu.weight": "100\n",
            "memory.stat": "file 21\nfile_mapped 22\nkernel_stack 1\nslab 2\npagetables 3\n",
            "memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
            "memory.peak": "99\n",
            "memory.low": "0\n",
            "pids.current": "3\n",
            "pids.max": "100\n",
            "io.stat": "253:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
            "cgroup.procs": "7\n",
        },
    )
    dirs = host.dirs("/pods/c")
    assert dirs is not None
    assert read_detail(dirs) == Detail(
        cpu_user_ns=5000,
        cpu_system_ns=4000,
        cfs_periods=6,
        cfs_throttled_periods=1,
        cfs_throttled_ns=2_000_000,
        cache=21,
        mapped_file=22,
        kernel=6,
        max_usage=99,
        failcnt=5,
        oom_kills=1,
        memory_reservation=None,
        cpu_shares=weight_to_shares(100),
        cpu_quota_us=20000,
        cpu_period_us=100000,
        threads=3,
        threads_max=100,
        io=(IoDevice(253, 0, read_bytes=10, write_bytes=20, reads=1, writes=2),),
    )
    assert weight_to_shares(100) == 2 + 99 * 262142 // 9999
    assert processes(dirs) == [7]


def test_a_missing_cgroup_has_no_processes(tmp_path: Path) -> None:
    dirs = fake_host(tmp_path, Layout.V2).dirs("/absent")
    assert dirs is not None
    assert processes(dirs) is None
    assert not dirs.exists()
