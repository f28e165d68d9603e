"""ContainerStats, ListContainerStats and StreamContainerStats: the stats service's samples as CRI messages.

CPU, memory and swap come from each container's cgroup, the writable layer from the
accounting of its overlay upper dir (pycri.stats); a container without a cgroup
(created, exited) still gets an entry, with timestamps and no usage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pycri.api import api_pb2 as api
from pycri.containers.model import Container
from pycri.containers.service import ContainerService
from pycri.server.rpc import pages
from pycri.stats import cri
from pycri.stats.service import StatsService


class ContainerStatsService:
    def __init__(self, containers: ContainerService, stats: StatsService) -> None:
        self.containers = containers
        self.stats = stats

    async def _stats(self, containers: list[Container]) -> list[api.ContainerStats]:
        return [cri.container_stats(s) for s in await self.stats.container_samples(containers)]

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
