"""StopContainer and RemoveContainer: both succeed for containers already stopped or gone."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.containers.service import ContainerService
from pycri.errors import InvalidArgument


class ContainerStopService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    async def StopContainer(self, request: api.StopContainerRequest) -> api.StopContainerResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        if request.timeout < 0:
            raise InvalidArgument("timeout: must not be negative")
        await self.containers.stop(request.container_id, request.timeout)
        return api.StopContainerResponse()

    async def RemoveContainer(self, request: api.RemoveContainerRequest) -> api.RemoveContainerResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        await self.containers.remove(request.container_id)
        return api.RemoveContainerResponse()
