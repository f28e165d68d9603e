"""Samples as CRI messages (pure): container and pod stats, file system usage, metrics.

Field semantics follow containerd (``internal/cri/server``): timestamps in nanoseconds
since the epoch, one per sample; ``usage_nano_cores`` only from a second sample;
``available_bytes`` only under a memory limit (limit minus working set); a pod's
``network`` only with a network namespace of its own (eth0 as the default interface,
every interface but loopback in ``interfaces``); a container with no cgroup (created,
exited) only its attributes, timestamps and writable layer.

Metrics are cAdvisor's, named, described and typed as kubelet's ``/metrics/cadvisor``
serves them (and as CRI-O's and containerd's ListMetricDescriptors list them): label
keys ``id``, ``name``, ``image`` (kubelet adds ``namespace``, ``pod`` and ``container``
itself) plus each metric's own. A CRI metric's value is an unsigned integer, so the
``*_seconds_total`` counters are whole seconds, as with containerd and CRI-O.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pycri.api import api_pb2 as api
from pycri.stats.cgroups import Pressure, PressureLine, Usage
from pycri.stats.procfs import DEFAULT_INTERFACE, Interface
from pycri.stats.sampler import NS, ContainerMetrics, ContainerSample, FsUsage, PodMetrics, PodSample

COUNTER, GAUGE = api.COUNTER, api.GAUGE


def u64(value: int) -> api.UInt64Value:
    return api.UInt64Value(value=max(value, 0))


def filesystem_usage(usage: FsUsage) -> api.FilesystemUsage:
    return api.FilesystemUsage(
        timestamp=usage.timestamp_ns,
        fs_id=api.FilesystemIdentifier(mountpoint=usage.mountpoint),
        used_bytes=u64(usage.used_bytes),
        inodes_used=u64(usage.inodes_used),
    )


def _psi_data(line: PressureLine | None) -> api.PsiData | None:
    if line is None:
        return None
    return api.PsiData(Total=line.total_us, Avg10=line.avg10, Avg60=line.avg60, Avg300=line.avg300)


def _psi(pressure: Pressure) -> api.PsiStats:
    return api.PsiStats(Full=_psi_data(pressure.full), Some=_psi_data(pressure.some))


def _fill_cpu(cpu: api.CpuUsage, usage: Usage | None, nano_cores: int | None, ts: int) -> None:
    cpu.timestamp = ts
    if usage is None:
        return
    if usage.cpu_usage_ns is not None:
        cpu.usage_core_nano_seconds.value = usage.cpu_usage_ns
    if nano_cores is not None:
        cpu.usage_nano_cores.value = nano_cores
    if usage.pressure and "cpu" in usage.pressure:
        cpu.psi.CopyFrom(_psi(usage.pressure["cpu"]))


def _fill_memory(memory: api.MemoryUsage, usage: Usage | None, ts: int) -> None:
    memory.timestamp = ts
    if usage is None:
        return
    for name, value in (
        ("working_set_bytes", usage.working_set),
        ("usage_bytes", usage.memory_usage),
        ("rss_bytes", usage.rss),
        ("page_faults", usage.page_faults),
        ("major_page_faults", usage.major_page_faults),
    ):
        if value is not None:
            getattr(memory, name).value = value
    if usage.memory_limit is not None and usage.working_set is not None:
        memory.available_bytes.value = max(usage.memory_limit - usage.working_set, 0)
    if usage.pressure and "memory" in usage.pressure:
        memory.psi.CopyFrom(_psi(usage.pressure["memory"]))


def container_stats(sample: ContainerSample) -> api.ContainerStats:
    container, ts, usage = sample.container, sample.timestamp_ns, sample.usage
    config = container.config
    stats = api.ContainerStats(
        attributes=api.ContainerAttributes(
            id=container.id, metadata=config.metadata, labels=config.labels, annotations=config.annotations
        ),
        writable_layer=filesystem_usage(sample.writable_layer),
    )
    _fill_cpu(stats.cpu, usage, sample.nano_cores, ts)
    _fill_memory(stats.memory, usage, ts)
    if usage is None:
        return stats
    if usage.swap_usage is not None:
        stats.swap.timestamp = ts
        stats.swap.swap_usage_bytes.value = usage.swap_usage
        if usage.swap_limit is not None:
            stats.swap.swap_available_bytes.value = max(usage.swap_limit - usage.swap_usage, 0)
    if usage.pressure and "io" in usage.pressure:
        stats.io.timestamp = ts
        stats.io.psi.CopyFrom(_psi(usage.pressure["io"]))
    return stats


def _interface(i: Interface) -> api.NetworkInterfaceUsage:
    return api.NetworkInterfaceUsage(
        name=i.name, rx_bytes=u64(i.rx_bytes), rx_errors=u64(i.rx_errors), tx_bytes=u64(i.tx_bytes), tx_errors=u64(i.tx_errors)
    )


def default_interface(interfaces: list[Interface]) -> Interface | None:
    return next((i for i in interfaces if i.name == DEFAULT_INTERFACE), interfaces[0] if interfaces else None)


def pod_stats(sample: PodSample) -> api.PodSandboxStats:
    sandbox, ts = sample.sandbox, sample.timestamp_ns
    stats = api.PodSandboxStats(
        attributes=api.PodSandboxAttributes(
            id=sandbox.id,
            metadata=sandbox.config.metadata,
            labels=sandbox.config.labels,
            annotations=sandbox.config.annotations,
        ),
    )
    linux = stats.linux
    linux.containers.extend(container_stats(c) for c in sample.containers)
    if sample.usage is not None:
        _fill_cpu(linux.cpu, sample.usage, sample.nano_cores, ts)
        _fill_memory(linux.memory, sample.usage, ts)
        if sample.usage.pressure and "io" in sample.usage.pressure:
            linux.io.timestamp = ts
            linux.io.psi.CopyFrom(_psi(sample.usage.pressure["io"]))
    if sample.interfaces is not None:
        linux.network.timestamp = ts
        default = default_interface(sample.interfaces)
        if default is not None:
            linux.network.default_interface.CopyFrom(_interface(default))
        linux.network.interfaces.extend(_interface(i) for i in sample.interfaces)
    if sample.process_count is not None:
        linux.process.timestamp = ts
        linux.process.process_count.value = sample.process_count
    return stats


# -- metrics ----------------------------------------------------------------------------------------------

BASE_LABELS = ("id", "name", "image")


@dataclass(frozen=True)
class Descriptor:
    name: str
    help: str
    type: api.MetricType.ValueType
    labels: tuple[str, ...] = ()  # beyond BASE_LABELS

    def to_cri(self) -> api.MetricDescriptor:
        return api.MetricDescriptor(name=self.name, help=self.help, label_keys=[*BASE_LABELS, *self.labels])


_NETWORK = [
    ("receive_bytes_total", "Cumulative count of bytes received"),
    ("receive_packets_total", "Cumulative count of packets received"),
    ("receive_packets_dropped_total", "Cumulative count of packets dropped while receiving"),
    ("receive_errors_total", "Cumulative count of errors encountered while receiving"),
    ("transmit_bytes_total", "Cumulative count of bytes transmitted"),
    ("transmit_packets_total", "Cumulative count of packets transmitted"),
    ("transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting"),
    ("transmit_errors_total", "Cumulative count of errors encountered while transmitting"),
]
_PRESSURE = {  # cgroup v2 only
    "cpu": "CPU congestion",
    "memory": "memory congestion",
    "io": "IO congestion",
}

DESCRIPTORS: tuple[Descriptor, ...] = (
    Descriptor("container_last_seen", "Last time a container was seen by the exporter", GAUGE),
    Descriptor("container_start_time_seconds", "Start time of the container since unix epoch in seconds.", GAUGE),
    Descriptor("container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", COUNTER),
    Descriptor("container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", COUNTER),
    Descriptor("container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", COUNTER),
    Descriptor("container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", COUNTER),
    Descriptor("container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", COUNTER),
    Descriptor("container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", COUNTER),
    Descriptor("container_memory_cache", "Number of bytes of page cache memory.", GAUGE),
    Descriptor("container_memory_rss", "Size of RSS in bytes.", GAUGE),
    Descriptor("container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", GAUGE),
    Descriptor("container_memory_mapped_file", "Size of memory mapped files in bytes.", GAUGE),
    Descriptor("container_memory_swap", "Container swap usage in bytes.", GAUGE),
    Descriptor("container_memory_failcnt", "Number of memory usage hits limits", COUNTER),
    Descriptor(
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed",
        GAUGE,
    ),
    Descriptor("container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes", GAUGE),
    Descriptor("container_memory_working_set_bytes", "Current working set in bytes.", GAUGE),
    Descriptor(
        "container_memory_failures_total", "Cumulative count of memory allocation failures.", COUNTER, ("failure_type", "scope")
    ),
    Descriptor("container_oom_events_total", "Count of out of memory events observed for the container", COUNTER),
    Descriptor("container_processes", "Number of processes running inside the container.", GAUGE),
    Descriptor("container_threads", "Number of threads running inside the container", GAUGE),
    Descriptor(
        "container_threads_max", "Maximum number of threads allowed inside the container, infinity if value is zero", GAUGE
    ),
    Descriptor("container_file_descriptors", "Number of open file descriptors for the container.", GAUGE),
    Descriptor("container_sockets", "Number of open sockets for the container.", GAUGE),
    Descriptor(
        "container_ulimits_soft",
        "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice",
        GAUGE,
        ("ulimit",),
    ),
    Descriptor("container_spec_cpu_period", "CPU period of the container.", GAUGE),
    Descriptor("container_spec_cpu_quota", "CPU quota of the container.", GAUGE),
    Descriptor("container_spec_cpu_shares", "CPU share of the container.", GAUGE),
    Descriptor("container_spec_memory_limit_bytes", "Memory limit for the container.", GAUGE),
    Descriptor("container_spec_memory_reservation_limit_bytes", "Memory reservation limit for the container.", GAUGE),
    Descriptor("container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", GAUGE),
    Descriptor(
        "container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", GAUGE, ("device",)
    ),
    Descriptor(
        "container_fs_limit_bytes",
        "Number of bytes that can be consumed by the container on this filesystem.",
        GAUGE,
        ("device",),
    ),
    Descriptor("container_fs_inodes_total", "Number of Inodes", GAUGE, ("device",)),
    Descriptor("container_fs_inodes_free", "Number of available Inodes", GAUGE, ("device",)),
    Descriptor("container_fs_reads_bytes_total", "Cumulative count of bytes read", COUNTER, ("device",)),
    Descriptor("container_fs_reads_total", "Cumulative count of reads completed", COUNTER, ("device",)),
    Descriptor("container_fs_writes_bytes_total", "Cumulative count of bytes written", COUNTER, ("device",)),
    Descriptor("container_fs_writes_total", "Cumulative count of writes completed", COUNTER, ("device",)),
    Descriptor(
        "container_blkio_device_usage_total",
        "Blkio Device bytes usage",
        COUNTER,
        ("device", "major", "minor", "operation"),
    ),
    *(Descriptor(f"container_network_{name}", text, COUNTER, ("interface",)) for name, text in _NETWORK),
    *(
        Descriptor(
            f"container_pressure_{resource}_{kind}_seconds_total",
            f"Total time duration {who} due to {cause}.",
            COUNTER,
        )
        for resource, cause in _PRESSURE.items()
        for kind, who in (
            ("waiting", "tasks in the container have waited"),
            ("stalled", "no tasks in the container could make progress"),
        )
    ),
)
BY_NAME = {d.name: d for d in DESCRIPTORS}


def descriptors() -> list[api.MetricDescriptor]:
    return [d.to_cri() for d in DESCRIPTORS]


Emit = Callable[[str, int, tuple[str, ...]], None]


def _container_values(m: ContainerMetrics, emit: Emit) -> None:
    """Every metric of one container: name, value, its own label values (after the base ones)."""
    usage, detail = m.usage, m.detail

    def whole(name: str, value: int | None) -> None:
        emit(name, value or 0, ())

    emit("container_last_seen", time.time_ns() // NS, ())
    emit("container_start_time_seconds", m.container.started_at // NS, ())
    whole("container_cpu_usage_seconds_total", (usage.cpu_usage_ns or 0) // NS)
    whole("container_cpu_user_seconds_total", (detail.cpu_user_ns or 0) // NS)
    whole("container_cpu_system_seconds_total", (detail.cpu_system_ns or 0) // NS)
    whole("container_cpu_cfs_periods_total", detail.cfs_periods)
    whole("container_cpu_cfs_throttled_periods_total", detail.cfs_throttled_periods)
    whole("container_cpu_cfs_throttled_seconds_total", (detail.cfs_throttled_ns or 0) // NS)
    whole("container_memory_cache", detail.cache)
    whole("container_memory_rss", usage.rss)
    whole("container_memory_kernel_usage", detail.kernel)
    whole("container_memory_mapped_file", detail.mapped_file)
    whole("container_memory_swap", usage.swap_usage)
    whole("container_memory_failcnt", detail.failcnt)
    whole("container_memory_usage_bytes", usage.memory_usage)
    whole("container_memory_max_usage_bytes", detail.max_usage)
    whole("container_memory_working_set_bytes", usage.working_set)
    for kind, value in (("pgfault", usage.page_faults), ("pgmajfault", usage.major_page_faults)):
        for scope in ("container", "hierarchy"):
            emit("container_memory_failures_total", value or 0, (kind, scope))
    whole("container_oom_events_total", detail.oom_kills)
    whole("container_processes", m.processes.count)
    whole("container_threads", detail.threads)
    whole("container_threads_max", detail.threads_max)
    whole("container_file_descriptors", m.processes.file_descriptors)
    whole("container_sockets", m.processes.sockets)
    if m.nofile is not None and m.nofile >= 0:
        emit("container_ulimits_soft", m.nofile, ("max_open_files",))
    whole("container_spec_cpu_period", detail.cpu_period_us)
    whole("container_spec_cpu_quota", detail.cpu_quota_us)
    whole("container_spec_cpu_shares", detail.cpu_shares)
    whole("container_spec_memory_limit_bytes", usage.memory_limit)
    whole("container_spec_memory_reservation_limit_bytes", detail.memory_reservation)
    whole("container_spec_memory_swap_limit_bytes", usage.swap_limit)
    device = m.fs.device if m.fs is not None else ""
    emit("container_fs_usage_bytes", m.writable_layer.used_bytes, (device,))
    if m.fs is not None:
        emit("container_fs_limit_bytes", m.fs.capacity_bytes, (device,))
        emit("container_fs_inodes_total", m.fs.inodes_total, (device,))
        emit("container_fs_inodes_free", m.fs.inodes_free, (device,))
    for io in detail.io:
        name = m.devices.get((io.major, io.minor), f"{io.major}:{io.minor}")
        emit("container_fs_reads_bytes_total", io.read_bytes, (name,))
        emit("container_fs_reads_total", io.reads, (name,))
        emit("container_fs_writes_bytes_total", io.write_bytes, (name,))
        emit("container_fs_writes_total", io.writes, (name,))
        for operation, value in (("Read", io.read_bytes), ("Write", io.write_bytes)):
            emit("container_blkio_device_usage_total", value, (name, str(io.major), str(io.minor), operation))
    for resource, pressure in (usage.pressure or {}).items():
        if pressure.some is not None:
            emit(f"container_pressure_{resource}_waiting_seconds_total", pressure.some.total_us // 1_000_000, ())
        if pressure.full is not None:
            emit(f"container_pressure_{resource}_stalled_seconds_total", pressure.full.total_us // 1_000_000, ())


def _interface_values(interfaces: list[Interface], emit: Emit) -> None:
    for i in interfaces:
        values = (
            i.rx_bytes,
            i.rx_packets,
            i.rx_dropped,
            i.rx_errors,
            i.tx_bytes,
            i.tx_packets,
            i.tx_dropped,
            i.tx_errors,
        )
        for (name, _), value in zip(_NETWORK, values, strict=True):
            emit(f"container_network_{name}", value, (i.name,))


def _collect(base: tuple[str, ...], ts: int, fill: Callable[[Emit], None]) -> list[api.Metric]:
    out: list[api.Metric] = []

    def emit(name: str, value: int, labels: tuple[str, ...]) -> None:
        descriptor = BY_NAME[name]
        out.append(
            api.Metric(name=name, timestamp=ts, metric_type=descriptor.type, label_values=[*base, *labels], value=u64(value))
        )

    fill(emit)
    return out


def image_label(m: ContainerMetrics) -> str:
    return m.container.config.image.image or m.container.image_ref


def pod_metrics(sample: PodMetrics) -> api.PodSandboxMetrics:
    sandbox = sample.sandbox
    out = api.PodSandboxMetrics(pod_sandbox_id=sandbox.id)
    if sample.interfaces is not None:
        interfaces = sample.interfaces
        out.metrics.extend(_collect((sandbox.id, "POD", ""), sample.timestamp_ns, lambda e: _interface_values(interfaces, e)))
    for m in sample.containers:
        base = (m.container.id, m.container.metadata.name, image_label(m))
        metrics = _collect(base, m.timestamp_ns, functools.partial(_container_values, m))
        out.container_metrics.append(api.ContainerMetrics(container_id=m.container.id, metrics=metrics))
    return out


def metric_names(metrics: api.PodSandboxMetrics) -> Iterator[str]:
    yield from (m.name for m in metrics.metrics)
    for c in metrics.container_metrics:
        yield from (m.name for m in c.metrics)
