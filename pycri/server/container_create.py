"""CreateContainer and StartContainer."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.containers.service import ContainerService
from pycri.errors import InvalidArgument


class ContainerCreateService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    async def CreateContainer(self, request: api.CreateContainerRequest) -> api.CreateContainerResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id: required")
        if not request.HasField("config"):
            raise InvalidArgument("config: required")
        container = await self.containers.create(request.pod_sandbox_id, request.config, request.sandbox_config)
        return api.CreateContainerResponse(container_id=container.id)

    async def StartContainer(self, request: api.StartContainerRequest) -> api.StartContainerResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        await self.containers.start(request.container_id)
        return api.StartContainerResponse()
