"""ExecSync, UpdateContainerResources and ReopenContainerLog."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.containers.service import ContainerService
from pycri.errors import InvalidArgument


class ContainerExecService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers

    async def ExecSync(self, request: api.ExecSyncRequest) -> api.ExecSyncResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        if request.timeout < 0:
            raise InvalidArgument("timeout: must not be negative")
        stdout, stderr, code = await self.containers.exec_sync(request.container_id, list(request.cmd), int(request.timeout))
        return api.ExecSyncResponse(stdout=stdout, stderr=stderr, exit_code=code)

    async def UpdateContainerResources(
        self, request: api.UpdateContainerResourcesRequest
    ) -> api.UpdateContainerResourcesResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        await self.containers.update_resources(request.container_id, request.linux)
        return api.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(self, request: api.ReopenContainerLogRequest) -> api.ReopenContainerLogResponse:
        if not request.container_id:
            raise InvalidArgument("container_id: required")
        await self.containers.reopen_log(request.container_id)
        return api.ReopenContainerLogResponse()
