"""PodSandboxStatus, ListPodSandbox, StreamPodSandboxes and UpdatePodSandboxResources."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from google.protobuf import json_format

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.service import SandboxService, cri_state
from pycri.server.rpc import Encoded, ListedCache, encoded, pages


def to_status(sandbox: Sandbox) -> api.PodSandboxStatus:
    config = sandbox.config
    status = api.PodSandboxStatus(
        id=sandbox.id,
        metadata=config.metadata,
        state=cri_state(sandbox),
        created_at=sandbox.created_at,
        linux=api.LinuxPodSandboxStatus(namespaces=api.Namespace(options=config.linux.security_context.namespace_options)),
        labels=config.labels,
        annotations=config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )
    if sandbox.ips and not sandbox.network_torn_down:
        status.network.ip = sandbox.ips[0]
        status.network.additional_ips.extend(api.PodIP(ip=ip) for ip in sandbox.ips[1:])
    return status


def to_listed(sandbox: Sandbox) -> api.PodSandbox:
    config = sandbox.config
    return api.PodSandbox(
        id=sandbox.id,
        metadata=config.metadata,
        state=cri_state(sandbox),
        created_at=sandbox.created_at,
        labels=config.labels,
        annotations=config.annotations,
        runtime_handler=sandbox.runtime_handler,
    )


def verbose_info(sandbox: Sandbox) -> str:
    spec_path = sandbox.infra_bundle / "config.json"
    try:
        runtime_spec = json.loads(spec_path.read_text())
    except (OSError, ValueError):
        runtime_spec = None
    return json.dumps(
        {
            "pid": sandbox.infra_pid,
            "netns": sandbox.netns,
            "cgroupsPath": sandbox.cgroups_path,
            "network": sandbox.network_name,
            "cniResult": sandbox.network_result,
            "podDir": str(sandbox.pod_dir),
            "runtimeSpec": runtime_spec,
            "config": json_format.MessageToDict(sandbox.config, preserving_proto_field_name=True),
        }
    )


class SandboxStatusService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self._listed: ListedCache[int] = ListedCache(to_listed)

    def _list(self, filt: api.PodSandboxFilter | None) -> list[bytes]:
        out = [self._listed.get(s.id, cri_state(s), s) for s in self.sandboxes.list(filt)]
        everything = self.sandboxes.sandboxes
        self._listed.prune(len(everything), lambda: {(s.id, cri_state(s)) for s in everything.values()})
        return out

    async def PodSandboxStatus(self, request: api.PodSandboxStatusRequest) -> api.PodSandboxStatusResponse:
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        await self.sandboxes.refresh(sandbox)
        response = api.PodSandboxStatusResponse(status=to_status(sandbox), timestamp=time.time_ns())
        if request.verbose:
            response.info["info"] = verbose_info(sandbox)
        return response

    async def ListPodSandbox(self, request: api.ListPodSandboxRequest) -> Encoded:
        """A ListPodSandboxResponse, joined from the sandboxes' cached encodings (field 1)."""
        filt = request.filter if request.HasField("filter") else None
        return encoded(self._list(filt))

    async def StreamPodSandboxes(self, request: api.StreamPodSandboxesRequest) -> AsyncIterator[Encoded]:
        """StreamPodSandboxesResponse pages (their pod_sandboxes are field 1 as well)."""
        filt = request.filter if request.HasField("filter") else None
        for page in pages(self._list(filt)):
            yield encoded(page)

    async def UpdatePodSandboxResources(
        self, request: api.UpdatePodSandboxResourcesRequest
    ) -> api.UpdatePodSandboxResourcesResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("pod_sandbox_id: required")
        await self.sandboxes.update_resources(
            request.pod_sandbox_id,
            request.resources if request.HasField("resources") else None,
            request.overhead if request.HasField("overhead") else None,
        )
        return api.UpdatePodSandboxResourcesResponse()
