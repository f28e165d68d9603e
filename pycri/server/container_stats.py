"""ContainerStats, ListContainerStats and StreamContainerStats.

CPU, memory and swap come from the container's cgroup (``linux.cgroupsPath`` of its
bundle's config.json), the writable layer from the size of its overlay upper dir.
``usage_nano_cores`` is the rate since the previous sample of the same container,
so the family keeps the last (timestamp, CPU usage) of each; the first sample has none.
A container without a cgroup (created, exited) still gets an entry, with timestamps
and no usage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from pycri.api import api_pb2 as api
from pycri.containers.model import Container, State
from pycri.containers.service import ContainerService
from pycri.host.cgroups import CgroupMounts, detect
from pycri.images.service import disk_usage
from pycri.server.rpc import pages
from pycri.stats.cgroups import Usage, read_container


@dataclass(frozen=True)
class Sample:
    """What one container measured at ``timestamp`` (ns since the epoch)."""

    timestamp: int
    usage: Usage | None
    upper: str
    layer_bytes: int
    layer_inodes: int


def cgroups_path(container: Container) -> str:
    try:
        spec = json.loads((container.bundle / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    linux = spec.get("linux") if isinstance(spec, dict) else None
    return str(linux.get("cgroupsPath", "")) if isinstance(linux, dict) else ""


def measure(container: Container, mounts: CgroupMounts) -> Sample:
    usage = None
    if container.state is State.RUNNING:
        path = cgroups_path(container)
        usage = read_container(path, mounts) if path else None
    upper = container.dir / "upper"
    layer_bytes, layer_inodes = disk_usage(upper)
    return Sample(time.time_ns(), usage, str(upper), layer_bytes, layer_inodes)


def _u64(value: int | None) -> api.UInt64Value | None:
    return api.UInt64Value(value=value) if value is not None else None


class ContainerStatsService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._mounts: CgroupMounts | None = None
        self._last: dict[str, tuple[int, int]] = {}  # container id -> (timestamp ns, CPU usage ns)

    def _measure_all(self, containers: Sequence[Container]) -> list[Sample]:
        """Runs in a worker thread: every cgroup and upper dir of one call in one hop."""
        if self._mounts is None:
            self._mounts = detect()
        mounts = self._mounts
        return [measure(c, mounts) for c in containers]

    def _nano_cores(self, cid: str, timestamp: int, usage_ns: int) -> int | None:
        previous = self._last.get(cid)
        self._last[cid] = (timestamp, usage_ns)
        if previous is None:
            return None
        prev_ts, prev_usage = previous
        if timestamp <= prev_ts or usage_ns < prev_usage:
            return None
        return (usage_ns - prev_usage) * 1_000_000_000 // (timestamp - prev_ts)

    def _to_stats(self, container: Container, sample: Sample) -> api.ContainerStats:
        config = container.config
        ts = sample.timestamp
        stats = api.ContainerStats(
            attributes=api.ContainerAttributes(
                id=container.id, metadata=config.metadata, labels=config.labels, annotations=config.annotations
            ),
            writable_layer=api.FilesystemUsage(
                timestamp=ts,
                fs_id=api.FilesystemIdentifier(mountpoint=sample.upper),
                used_bytes=api.UInt64Value(value=sample.layer_bytes),
                inodes_used=api.UInt64Value(value=sample.layer_inodes),
            ),
        )
        stats.cpu.timestamp = ts
        stats.memory.timestamp = ts
        usage = sample.usage
        if usage is None:
            self._last.pop(container.id, None)
            return stats
        if usage.cpu_usage_ns is not None:
            stats.cpu.usage_core_nano_seconds.value = usage.cpu_usage_ns
            nano_cores = self._nano_cores(container.id, ts, usage.cpu_usage_ns)
            if nano_cores is not None:
                stats.cpu.usage_nano_cores.value = nano_cores
        memory = stats.memory
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
        if usage.swap_usage is not None:
            stats.swap.timestamp = ts
            stats.swap.swap_usage_bytes.value = usage.swap_usage
            if usage.swap_limit is not None:
                stats.swap.swap_available_bytes.value = max(usage.swap_limit - usage.swap_usage, 0)
        return stats

    async def _stats(self, containers: Sequence[Container]) -> list[api.ContainerStats]:
        samples = await asyncio.to_thread(self._measure_all, containers)
        out = [self._to_stats(c, s) for c, s in zip(containers, samples, strict=True)]
        if len(self._last) > len(self.containers.containers):
            self._last = {k: v for k, v in self._last.items() if k in self.containers.containers}
        return out

    def _query(self, filt: api.ContainerStatsFilter | None) -> list[Container]:
        if filt is None:
            return list(self.containers.query(None))
        container_filter = api.ContainerFilter(id=filt.id, pod_sandbox_id=filt.pod_sandbox_id, label_selector=filt.label_selector)
        return list(self.containers.query(container_filter))

    async def ContainerStats(self, request: api.ContainerStatsRequest) -> api.ContainerStatsResponse:
        container = self.containers.get(request.container_id)
        (stats,) = await self._stats([container])
        return api.ContainerStatsResponse(stats=stats)

    async def ListContainerStats(self, request: api.ListContainerStatsRequest) -> api.ListContainerStatsResponse:
        filt = request.filter if request.HasField("filter") else None
        return api.ListContainerStatsResponse(stats=await self._stats(self._query(filt)))

    async def StreamContainerStats(
        self, request: api.StreamContainerStatsRequest
    ) -> AsyncIterator[api.StreamContainerStatsResponse]:
        filt = request.filter if request.HasField("filter") else None
        for page in pages(await self._stats(self._query(filt))):
            yield api.StreamContainerStatsResponse(container_stats=page)
