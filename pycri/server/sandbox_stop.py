"""StopPodSandbox and RemovePodSandbox: both succeed for sandboxes that are already gone."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.sandboxes.service import SandboxService


class SandboxStopService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def StopPodSandbox(self, request: api.StopPodSandboxRequest) -> api.StopPodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id: required")
        await self.sandboxes.stop(request.pod_sandbox_id)
        return api.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: api.RemovePodSandboxRequest) -> api.RemovePodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id: required")
        await self.sandboxes.remove(request.pod_sandbox_id)
        return api.RemovePodSandboxResponse()
