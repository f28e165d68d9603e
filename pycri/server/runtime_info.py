"""Version, Status, RuntimeConfig and UpdateRuntimeConfig."""

from __future__ import annotations

import pycri
from pycri.api import api_pb2 as api
from pycri.node import Node

# The CRI's own version string, as containerd and CRI-O answer it.
KUBELET_API_VERSION = "0.1.0"


class RuntimeInfoService:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._version = api.VersionResponse(
            version=KUBELET_API_VERSION,
            runtime_name=pycri.RUNTIME_NAME,
            runtime_version=pycri.__version__,
            runtime_api_version="v1",
        )

    async def Version(self, request: api.VersionRequest) -> api.VersionResponse:
        return self._version

    async def Status(self, request: api.StatusRequest) -> api.StatusResponse:
        conditions = [
            api.RuntimeCondition(type=c.type, status=c.status, reason=c.reason, message=c.message)
            for c in await self.node.conditions()
        ]
        handlers = [
            api.RuntimeHandler(
                name=h.name,
                features=api.RuntimeHandlerFeatures(
                    recursive_read_only_mounts=h.recursive_read_only_mounts, user_namespaces=h.user_namespaces
                ),
            )
            for h in await self.node.handler_features()
        ]
        response = api.StatusResponse(
            status=api.RuntimeStatus(conditions=conditions),
            runtime_handlers=handlers,
            features=api.RuntimeFeatures(supplemental_groups_policy=True),
        )
        if request.verbose:
            response.info.update(await self.node.verbose_info())
        return response

    async def RuntimeConfig(self, request: api.RuntimeConfigRequest) -> api.RuntimeConfigResponse:
        driver = api.CGROUPFS if self.node.cfg.cgroup_driver == "cgroupfs" else api.SYSTEMD
        return api.RuntimeConfigResponse(linux=api.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(self, request: api.UpdateRuntimeConfigRequest) -> api.UpdateRuntimeConfigResponse:
        await self.node.set_pod_cidr(request.runtime_config.network_config.pod_cidr)
        return api.UpdateRuntimeConfigResponse()
