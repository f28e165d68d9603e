"""RunPodSandbox."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.sandboxes.service import SandboxService


class SandboxRunService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def RunPodSandbox(self, request: api.RunPodSandboxRequest) -> api.RunPodSandboxResponse:
        if not request.HasField("config"):
            raise InvalidArgument("config: required")
        sandbox = await self.sandboxes.run(request.config, request.runtime_handler)
        return api.RunPodSandboxResponse(pod_sandbox_id=sandbox.id)
