"""PodSandboxStats, ListPodSandboxStats and StreamPodSandboxStats.

A pod's CPU, memory and process count come from its cgroup (``cgroup_parent``, where
kubelet puts it), or, for a pod without one, from its infra container's and its
containers' cgroups added up; its network from its infra process's namespace; each
of its containers' stats as ListContainerStats gives them (pycri.stats.cri). The
lists hold ready pods only, as containerd's do (a stopped pod has no cgroup left);
PodSandboxStats of a stopped pod gives its attributes and its containers' entries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pycri.api import api_pb2 as api
from pycri.sandboxes.model import Sandbox, State
from pycri.sandboxes.service import SandboxService, match_labels
from pycri.server.rpc import pages
from pycri.stats import cri
from pycri.stats.service import StatsService


class SandboxStatsService:
    def __init__(self, sandboxes: SandboxService, stats: StatsService) -> None:
        self.sandboxes = sandboxes
        self.stats = stats

    async def _stats(self, sandboxes: list[Sandbox]) -> list[api.PodSandboxStats]:
        return [cri.pod_stats(s) for s in await self.stats.pod_samples(sandboxes)]

    def _query(self, filt: api.PodSandboxStatsFilter | None) -> list[Sandbox]:
        ready = [s for s in self.sandboxes.list(None) if s.state is State.READY]
        if filt is None:
            return ready
        prefix, selector = filt.id, dict(filt.label_selector)
        return [
            s for s in ready if (not prefix or s.id.startswith(prefix)) and (not selector or match_labels(s.labels, selector))
        ]

    async def PodSandboxStats(self, request: api.PodSandboxStatsRequest) -> api.PodSandboxStatsResponse:
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        (stats,) = await self._stats([sandbox])
        return api.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(self, request: api.ListPodSandboxStatsRequest) -> api.ListPodSandboxStatsResponse:
        filt = request.filter if request.HasField("filter") else None
        return api.ListPodSandboxStatsResponse(stats=await self._stats(self._query(filt)))

    async def StreamPodSandboxStats(
        self, request: api.StreamPodSandboxStatsRequest
    ) -> AsyncIterator[api.StreamPodSandboxStatsResponse]:
        filt = request.filter if request.HasField("filter") else None
        for page in pages(await self._stats(self._query(filt))):
            yield api.StreamPodSandboxStatsResponse(pod_sandbox_stats=page)
