"""Samples of pods and containers: their cgroups read now, CPU rates from earlier samples.

The readers here are synchronous and run in a worker thread, one hop per call for all
the pods and containers it asks about; the rates are computed back on the event loop
by :class:`RateKeeper`, which alone keeps state between calls.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pycri.containers.model import Container, State
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.stats import procfs
from pycri.stats.cgroups import CgroupDirs, Detail, HostCgroups, Style, Usage, processes, read_detail, read_usage
from pycri.stats.procfs import Interface, Processes

NS = 1_000_000_000


@dataclass(frozen=True)
class FsUsage:
    timestamp_ns: int
    mountpoint: str
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True)
class FsInfo:
    """The file system holding the writable layers, for the ``container_fs_*`` metrics."""

    device: str
    capacity_bytes: int
    inodes_total: int
    inodes_free: int


@dataclass(frozen=True)
class ContainerSample:
    container: Container
    timestamp_ns: int
    usage: Usage | None  # None: no cgroup (created, exited)
    writable_layer: FsUsage
    process_count: int | None = None
    nano_cores: int | None = None  # set by the RateKeeper


@dataclass(frozen=True)
class PodSample:
    sandbox: Sandbox
    timestamp_ns: int
    usage: Usage | None
    interfaces: list[Interface] | None  # None: host network, or no infra process
    process_count: int | None
    containers: list[ContainerSample]
    nano_cores: int | None = None


@dataclass(frozen=True)
class ContainerMetrics:
    container: Container
    timestamp_ns: int
    usage: Usage
    detail: Detail
    processes: Processes
    nofile: int | None
    writable_layer: FsUsage
    fs: FsInfo | None
    devices: Mapping[tuple[int, int], str] = field(default_factory=dict)


@dataclass(frozen=True)
class PodMetrics:
    sandbox: Sandbox
    timestamp_ns: int
    interfaces: list[Interface] | None
    containers: list[ContainerMetrics]


def spec_cgroups_path(bundle: Path) -> str:
    """``linux.cgroupsPath`` of the OCI spec in ``bundle``; "" when there is none."""
    try:
        spec = json.loads((bundle / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    linux = spec.get("linux") if isinstance(spec, dict) else None
    return str(linux.get("cgroupsPath", "")) if isinstance(linux, dict) else ""


def add_usages(usages: Iterable[Usage]) -> Usage | None:
    """The sum of several cgroups' usage (a pod without a cgroup of its own); no limits."""
    items = list(usages)
    if not items:
        return None

    def total(name: str) -> int | None:
        values = [v for u in items if (v := getattr(u, name)) is not None]
        return sum(values) if values else None

    return Usage(
        cpu_usage_ns=total("cpu_usage_ns"),
        memory_usage=total("memory_usage"),
        working_set=total("working_set"),
        rss=total("rss"),
        page_faults=total("page_faults"),
        major_page_faults=total("major_page_faults"),
        swap_usage=total("swap_usage"),
    )


class Sampler:
    """Reads cgroups (and /proc) for pods and containers; remembers where each container's cgroup is."""

    def __init__(self, host: HostCgroups, styles: Mapping[str, Style], default_style: Style = Style.RUNC) -> None:
        self.host = host
        self.styles = styles
        self.default_style = default_style
        self._dirs: dict[str, CgroupDirs | None] = {}  # container id or "pod:<id>" -> its cgroup

    def style(self, handler: str) -> Style:
        return self.styles.get(handler, self.default_style)

    def container_dirs(self, container: Container) -> CgroupDirs | None:
        if container.id not in self._dirs:
            path = spec_cgroups_path(container.bundle)
            self._dirs[container.id] = self.host.dirs(path, self.style(container.runtime_handler)) if path else None
        return self._dirs[container.id]

    def pod_dirs(self, sandbox: Sandbox) -> CgroupDirs | None:
        """The pod's own cgroup (its ``cgroup_parent``, where kubelet sets limits); None when it has none."""
        key = f"pod:{sandbox.id}"
        if key not in self._dirs:
            parent = sandbox.config.linux.cgroup_parent.rstrip("/")
            self._dirs[key] = self.host.dirs(parent, self.style(sandbox.runtime_handler)) if parent else None
        return self._dirs[key]

    def infra_dirs(self, sandbox: Sandbox) -> CgroupDirs | None:
        return self.host.dirs(sandbox.cgroups_path, self.style(sandbox.runtime_handler)) if sandbox.cgroups_path else None

    def forget(self, live: set[str]) -> None:
        if len(self._dirs) > len(live):
            self._dirs = {k: v for k, v in self._dirs.items() if k in live}

    # -- CRI stats --------------------------------------------------------------------------------

    def container(self, container: Container, timestamp_ns: int, layer: FsUsage, *, count: bool = False) -> ContainerSample:
        usage = procs = None
        if container.state is State.RUNNING:
            dirs = self.container_dirs(container)
            if dirs is not None:
                usage = read_usage(dirs)
                if count and usage is not None:
                    found = processes(dirs)
                    procs = len(found) if found is not None else None
        return ContainerSample(container, timestamp_ns, usage, layer, procs)

    def pod(self, sandbox: Sandbox, timestamp_ns: int, containers: Sequence[tuple[Container, FsUsage]]) -> PodSample:
        if sandbox.state is not SandboxState.READY:
            samples = [self.container(c, timestamp_ns, layer) for c, layer in containers]
            return PodSample(sandbox, timestamp_ns, None, None, None, samples)
        pod = self.pod_dirs(sandbox)
        usage = read_usage(pod) if pod is not None else None
        # Without a cgroup of its own, the pod is its infra container's and its containers' together.
        aggregate = usage is None
        samples = [self.container(c, timestamp_ns, layer, count=aggregate) for c, layer in containers]
        count: int | None = None
        if pod is not None and usage is not None:
            found = processes(pod)
            count = len(found) if found is not None else None
        else:
            infra = self.infra_dirs(sandbox)
            infra_usage = read_usage(infra) if infra is not None else None
            usage = add_usages([u for u in (infra_usage, *(s.usage for s in samples)) if u is not None])
            infra_procs = processes(infra) if infra is not None and infra_usage is not None else None
            counts = [len(infra_procs)] if infra_procs is not None else []
            counts += [s.process_count for s in samples if s.process_count is not None]
            count = sum(counts) if counts else None
        interfaces = None if sandbox.host_network else procfs.pod_interfaces(sandbox.infra_pid)
        return PodSample(sandbox, timestamp_ns, usage, interfaces, count, samples)

    # -- CRI metrics ------------------------------------------------------------------------------

    def container_metrics(
        self, container: Container, timestamp_ns: int, layer: FsUsage, fs: FsInfo | None
    ) -> ContainerMetrics | None:
        if container.state is not State.RUNNING:
            return None
        dirs = self.container_dirs(container)
        usage = read_usage(dirs) if dirs is not None else None
        if dirs is None or usage is None:
            return None
        detail = read_detail(dirs)
        pids = processes(dirs) or []
        devices = {(d.major, d.minor): procfs.device_name(d.major, d.minor) for d in detail.io}
        return ContainerMetrics(
            container,
            timestamp_ns,
            usage,
            detail,
            procfs.open_files(pids),
            procfs.soft_nofile(container.pid),
            layer,
            fs,
            devices,
        )

    def pod_metrics(
        self, sandbox: Sandbox, timestamp_ns: int, containers: Sequence[tuple[Container, FsUsage]], fs: FsInfo | None
    ) -> PodMetrics:
        interfaces = None if sandbox.host_network else procfs.pod_interfaces(sandbox.infra_pid)
        found = [self.container_metrics(c, timestamp_ns, layer, fs) for c, layer in containers]
        return PodMetrics(sandbox, timestamp_ns, interfaces, [m for m in found if m is not None])


class RateKeeper:
    """CPU usage rates (nanocores) from two samples of a cumulative counter, as containerd and cAdvisor
    compute them: (usage now - usage then) / (time now - time then).

    "Then" is the newest earlier sample at least ``min_window_ns`` old, so that two clients
    asking in quick succession (kubelet and ``crictl stats``) still get a rate over a
    useful interval; with no sample that old, the oldest one kept. The first sample of a
    key has no rate; a counter that goes back (a new cgroup) starts over.
    """

    def __init__(self, min_window_ns: int = NS, keep: int = 8) -> None:
        self.min_window_ns = min_window_ns
        self.keep = keep
        self._samples: dict[str, list[tuple[int, int]]] = {}

    def rate(self, key: str, timestamp_ns: int, value: int) -> int | None:
        samples = self._samples.setdefault(key, [])
        base = next((s for s in reversed(samples) if timestamp_ns - s[0] >= self.min_window_ns), None)
        if base is None and samples:
            base = samples[0]
        result = None
        if base is not None:
            if value < base[1]:
                samples.clear()
            elif timestamp_ns > base[0]:
                result = (value - base[1]) * NS // (timestamp_ns - base[0])
        samples.append((timestamp_ns, value))
        # Keep the newest sample old enough to be the next base, and those after it.
        oldest_needed = 0
        for i, s in enumerate(samples):
            if timestamp_ns - s[0] >= self.min_window_ns:
                oldest_needed = i
        del samples[:oldest_needed]
        if len(samples) > self.keep:
            del samples[1 : len(samples) - self.keep + 1]
        return result

    def forget(self, live: set[str]) -> None:
        if len(self._samples) > len(live):
            self._samples = {k: v for k, v in self._samples.items() if k in live}
