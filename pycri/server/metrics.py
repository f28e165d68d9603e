"""ListMetricDescriptors, ListPodSandboxMetrics and StreamPodSandboxMetrics: cAdvisor's container
metrics through the CRI, for kubelet's ``/metrics/cadvisor`` (pycri.stats.cri has the list).

Every ready pod, with its network metrics (``POD``) and its running containers' metrics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from pycri.api import api_pb2 as api
from pycri.sandboxes.model import State
from pycri.sandboxes.service import SandboxService
from pycri.server.rpc import pages
from pycri.stats import cri
from pycri.stats.service import StatsService


class MetricsService:
    def __init__(self, sandboxes: SandboxService, stats: StatsService) -> None:
        self.sandboxes = sandboxes
        self.stats = stats
        self._descriptors = api.ListMetricDescriptorsResponse(descriptors=cri.descriptors())

    async def ListMetricDescriptors(self, request: api.ListMetricDescriptorsRequest) -> api.ListMetricDescriptorsResponse:
        return self._descriptors

    async def _metrics(self) -> list[api.PodSandboxMetrics]:
        ready = [s for s in self.sandboxes.list(None) if s.state is State.READY]
        return [cri.pod_metrics(m) for m in await self.stats.pod_metrics(ready)]

    async def ListPodSandboxMetrics(self, request: api.ListPodSandboxMetricsRequest) -> api.ListPodSandboxMetricsResponse:
        return api.ListPodSandboxMetricsResponse(pod_metrics=await self._metrics())

    async def StreamPodSandboxMetrics(
        self, request: api.StreamPodSandboxMetricsRequest
    ) -> AsyncIterator[api.StreamPodSandboxMetricsResponse]:
        for page in pages(await self._metrics()):
            yield api.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=page)
