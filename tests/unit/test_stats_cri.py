"""CPU rates, /proc readers, and samples as CRI stats and metrics messages."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pycri.api import api_pb2 as api
from pycri.containers.model import Container, State
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.stats import cri, procfs
from pycri.stats.cgroups import Detail, IoDevice, Pressure, PressureLine, Usage
from pycri.stats.sampler import (
    NS,
    ContainerMetrics,
    ContainerSample,
    FsInfo,
    FsUsage,
    PodMetrics,
    PodSample,
    RateKeeper,
    add_usages,
)

S = NS  # one second in ns


def test_rate_from_two_samples() -> None:
    rates = RateKeeper()
    assert rates.rate("c", 10 * S, 5 * S) is None  # the first sample has none
    assert rates.rate("c", 20 * S, 15 * S) == NS  # one core over 10 s
    assert rates.rate("c", 30 * S, 20 * S) == NS // 2


def test_rate_over_at_least_a_second_when_asked_in_quick_succession() -> None:
    rates = RateKeeper()
    rates.rate("c", 0, 0)
    assert rates.rate("c", 10 * S, 10 * S) == NS  # kubelet
    # crictl 10 ms later: still measured from the sample 10 s old, not over 10 ms
    assert rates.rate("c", 10 * S + S // 100, 10 * S + S // 200) == (10 * S + S // 200) * NS // (10 * S + S // 100)
    # kubelet again: from the newest sample at least a second old (crictl's)
    assert rates.rate("c", 20 * S, 20 * S) == (20 * S - (10 * S + S // 200)) * NS // (20 * S - (10 * S + S // 100))


def test_rate_of_a_second_sample_sooner_than_a_second() -> None:
    rates = RateKeeper()
    rates.rate("c", 0, 0)
    assert rates.rate("c", S // 2, S // 4) == NS // 2


def test_a_counter_that_goes_back_starts_over_and_keys_are_forgotten() -> None:
    rates = RateKeeper(keep=3)
    rates.rate("c", 0, 100)
    assert rates.rate("c", S, 50) is None
    assert rates.rate("c", 2 * S, 50 + S) == NS
    for i in range(3, 20):
        rates.rate("c", i * S // 10 + 2 * S, 0 + 2 * S)
    assert len(rates._samples["c"]) <= 3
    rates.rate("pod:p", 0, 0)
    rates.forget({"c"})
    assert set(rates._samples) == {"c"}


def test_add_usages_sums_what_is_known() -> None:
    total = add_usages([Usage(cpu_usage_ns=1, memory_usage=10, rss=None), Usage(cpu_usage_ns=2, working_set=3, memory_limit=9)])
    assert total == Usage(cpu_usage_ns=3, memory_usage=10, working_set=3)
    assert add_usages([]) is None


NET_DEV = """\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       2    0    0    0     0          0         0      100       2    0    0    0     0       0          0
  eth0: 10485760   7000    1    2    0     0          0         0   123456     900    3    4    0     0       0          0
"""


def test_net_dev() -> None:
    lo, eth0 = procfs.parse_net_dev(NET_DEV)
    assert lo.name == "lo"
    assert eth0 == procfs.Interface("eth0", 10485760, 7000, 1, 2, 123456, 900, 3, 4)
    mine = procfs.pod_interfaces(os.getpid())
    assert mine is not None
    assert all(i.name != "lo" for i in mine)
    assert procfs.pod_interfaces(0) is None


def test_open_files_and_limits() -> None:
    with socket.socket() as _:
        found = procfs.open_files([os.getpid(), 999_999_999])
        assert found.count == 2
        assert found.sockets >= 1
        assert found.file_descriptors > found.sockets
    assert procfs.soft_nofile(os.getpid()) is not None
    assert procfs.soft_nofile(999_999_999) is None
    assert procfs.device_name(999, 999) == "999:999"


def container(cid: str = "c" * 64, state: State = State.RUNNING) -> Container:
    return Container(
        id=cid,
        sandbox_id="p" * 64,
        config=api.ContainerConfig(
            metadata=api.ContainerMetadata(name="app", attempt=1),
            image=api.ImageSpec(image="busybox:1"),
            labels={"l": "1"},
            annotations={"a": "2"},
        ),
        state=state,
        created_at=1,
        runtime_handler="runc",
        dir=Path("/var/lib/pycri/containers") / cid,
        image_id="sha256:i",
        image_ref="docker.io/library/busybox@sha256:r",
        chain_ids=[],
        pid=os.getpid(),
        started_at=1_700_000_000 * S + 5,
    )


def sandbox(state: SandboxState = SandboxState.READY) -> Sandbox:
    return Sandbox(
        id="p" * 64,
        config=api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name="pod", namespace="ns", uid="u"), labels={"app": "x"}, annotations={"b": "3"}
        ),
        state=state,
        created_at=1,
        runtime_handler="runc",
        pod_dir=Path("/run/pycri/pods/p"),
    )


LAYER = FsUsage(7, "/var/lib/pycri/containers/c/upper", 8192, 3)
FULL = Usage(
    cpu_usage_ns=3 * S + 1,
    memory_usage=1000,
    working_set=800,
    rss=500,
    page_faults=9,
    major_page_faults=1,
    memory_limit=1500,
    swap_usage=10,
    swap_limit=100,
    pressure={"io": Pressure(PressureLine(5, 0.1, 0.2, 0.3), None), "cpu": Pressure(None, PressureLine(6, 1, 2, 3))},
)


def test_container_stats() -> None:
    stats = cri.container_stats(ContainerSample(container(), 7, FULL, LAYER, nano_cores=123))
    assert stats.attributes.id == "c" * 64
    assert stats.attributes.metadata.name == "app"
    assert dict(stats.attributes.labels) == {"l": "1"}
    assert dict(stats.attributes.annotations) == {"a": "2"}
    assert (stats.cpu.timestamp, stats.cpu.usage_core_nano_seconds.value, stats.cpu.usage_nano_cores.value) == (7, 3 * S + 1, 123)
    assert stats.cpu.psi.Full.Total == 6
    assert not stats.cpu.psi.HasField("Some")
    memory = stats.memory
    assert (memory.working_set_bytes.value, memory.usage_bytes.value, memory.rss_bytes.value) == (800, 1000, 500)
    assert (memory.page_faults.value, memory.major_page_faults.value, memory.available_bytes.value) == (9, 1, 700)
    assert (stats.swap.swap_usage_bytes.value, stats.swap.swap_available_bytes.value) == (10, 90)
    assert stats.io.psi.Some.Avg300 == 0.3
    assert stats.writable_layer.fs_id.mountpoint == LAYER.mountpoint
    assert (stats.writable_layer.used_bytes.value, stats.writable_layer.inodes_used.value) == (8192, 3)


def test_container_stats_without_cgroup_or_limit() -> None:
    stats = cri.container_stats(ContainerSample(container(state=State.CREATED), 7, None, LAYER))
    assert stats.cpu.timestamp == stats.memory.timestamp == 7
    assert not stats.cpu.HasField("usage_core_nano_seconds")
    assert not stats.cpu.HasField("usage_nano_cores")
    assert not stats.memory.HasField("working_set_bytes")
    assert not stats.HasField("swap")
    unlimited = cri.container_stats(ContainerSample(container(), 7, Usage(cpu_usage_ns=1, working_set=5), LAYER))
    assert not unlimited.memory.HasField("available_bytes")
    assert not unlimited.cpu.HasField("usage_nano_cores")  # first sample


def test_pod_stats() -> None:
    eth0 = procfs.Interface("eth0", 100, 1, 2, 0, 200, 2, 3, 0)
    net1 = procfs.Interface("net1", 5, 1, 0, 0, 6, 1, 0, 0)
    inner = ContainerSample(container(), 7, FULL, LAYER, 2, 50)
    sample = PodSample(sandbox(), 7, FULL, [net1, eth0], 3, [inner], nano_cores=77)
    stats = cri.pod_stats(sample)
    assert stats.attributes.id == "p" * 64
    assert stats.attributes.metadata.namespace == "ns"
    assert dict(stats.attributes.labels) == {"app": "x"}
    linux = stats.linux
    assert (linux.cpu.usage_core_nano_seconds.value, linux.cpu.usage_nano_cores.value) == (3 * S + 1, 77)
    assert (linux.memory.working_set_bytes.value, linux.memory.available_bytes.value) == (800, 700)
    assert linux.network.timestamp == 7
    assert linux.network.default_interface.name == "eth0"
    assert (linux.network.default_interface.rx_bytes.value, linux.network.default_interface.tx_errors.value) == (100, 3)
    assert [i.name for i in linux.network.interfaces] == ["net1", "eth0"]
    assert linux.process.process_count.value == 3
    assert [c.attributes.id for c in linux.containers] == ["c" * 64]
    assert linux.containers[0].cpu.usage_nano_cores.value == 50
    assert linux.io.psi.Some.Total == 5


def test_pod_stats_of_a_stopped_or_host_network_pod() -> None:
    stats = cri.pod_stats(PodSample(sandbox(SandboxState.NOTREADY), 7, None, None, None, []))
    assert stats.attributes.id == "p" * 64
    for field in ("cpu", "memory", "network", "process"):
        assert not stats.linux.HasField(field), field


def metrics_sample(io: bool = True) -> PodMetrics:
    detail = Detail(
        cpu_user_ns=2 * S,
        cpu_system_ns=S,
        cfs_periods=5,
        cfs_throttled_periods=1,
        cfs_throttled_ns=S,
        cache=1,
        mapped_file=2,
        kernel=3,
        max_usage=4,
        failcnt=0,
        oom_kills=0,
        cpu_shares=1024,
        cpu_period_us=100000,
        threads=2,
        io=(IoDevice(8, 0, 10, 20, 1, 2),) if io else (),
    )
    m = ContainerMetrics(
        container(),
        7,
        FULL,
        detail,
        procfs.Processes(1, 4, 1),
        1024,
        LAYER,
        FsInfo("/dev/vda", 10**12, 1000, 900),
        {(8, 0): "/dev/vda"},
    )
    return PodMetrics(sandbox(), 7, [procfs.Interface("eth0", 100, 1, 2, 3, 200, 4, 5, 6)], [m])


def test_descriptors_have_help_label_keys_and_unique_names() -> None:
    descriptors = cri.descriptors()
    names = [d.name for d in descriptors]
    assert len(names) == len(set(names))
    for d in descriptors:
        assert d.help, d.name
        assert d.label_keys[:3] == ["id", "name", "image"], d.name
    assert cri.BY_NAME["container_cpu_usage_seconds_total"].type == api.COUNTER
    assert cri.BY_NAME["container_memory_working_set_bytes"].type == api.GAUGE
    assert list(cri.BY_NAME["container_network_receive_bytes_total"].to_cri().label_keys) == ["id", "name", "image", "interface"]


# critest's "runtime should support listing pod sandbox metrics": every descriptor has values,
# but these (blkio accounting, cgroup v2 pressure) may lack them.
OPTIONAL = {
    "container_blkio_device_usage_total",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    *(n for n in cri.BY_NAME if n.startswith("container_pressure_")),
}


def test_pod_metrics_cover_every_descriptor_with_matching_labels() -> None:
    metrics = cri.pod_metrics(metrics_sample())
    assert metrics.pod_sandbox_id == "p" * 64
    first: dict[str, api.Metric] = {}
    for m in [*metrics.metrics, *(m for c in metrics.container_metrics for m in c.metrics)]:
        first.setdefault(m.name, m)
        descriptor = cri.BY_NAME[m.name]
        assert len(m.label_values) == len(descriptor.labels) + 3, m.name
        assert m.metric_type == descriptor.type, m.name
        assert m.timestamp == 7
    assert set(cri.BY_NAME) - set(first) <= OPTIONAL
    emitted = {"container_pressure_io_waiting_seconds_total", "container_pressure_cpu_stalled_seconds_total"}
    assert set(cri.BY_NAME) - set(first) == {n for n in OPTIONAL if n.startswith("container_pressure_")} - emitted


def test_metric_values() -> None:
    metrics = cri.pod_metrics(metrics_sample(io=False))
    pod = {(m.name, tuple(m.label_values)): m.value.value for m in metrics.metrics}
    assert pod[("container_network_receive_bytes_total", ("p" * 64, "POD", "", "eth0"))] == 100
    assert pod[("container_network_transmit_packets_dropped_total", ("p" * 64, "POD", "", "eth0"))] == 6
    (ctr,) = metrics.container_metrics
    base = ("c" * 64, "app", "busybox:1")
    values = {(m.name, tuple(m.label_values)): m.value.value for m in ctr.metrics}
    assert values[("container_cpu_usage_seconds_total", base)] == 3  # whole seconds
    assert values[("container_cpu_user_seconds_total", base)] == 2
    assert values[("container_memory_working_set_bytes", base)] == 800
    assert values[("container_memory_failures_total", (*base, "pgmajfault", "hierarchy"))] == 1
    assert values[("container_start_time_seconds", base)] == 1_700_000_000
    assert values[("container_spec_memory_limit_bytes", base)] == 1500
    assert values[("container_spec_cpu_quota", base)] == 0  # unlimited
    assert values[("container_fs_usage_bytes", (*base, "/dev/vda"))] == 8192
    assert values[("container_fs_inodes_free", (*base, "/dev/vda"))] == 900
    assert values[("container_ulimits_soft", (*base, "max_open_files"))] == 1024
    assert values[("container_processes", base)] == 1
    assert values[("container_sockets", base)] == 1
    assert values[("container_pressure_cpu_stalled_seconds_total", base)] == 0
    assert not any(name.startswith("container_fs_reads") for name, _ in values)
