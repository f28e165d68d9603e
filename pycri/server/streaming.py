"""Exec, Attach and PortForward: validate the request, then answer the streaming server's URL for it.

As kubelet's streaming library (``GetExec``/``GetAttach``/``GetPortForward``) and containerd's
``container_exec.go``/``container_attach.go``/``sandbox_portforward.go``: nothing runs until the
client connects to the URL (pycri.streaming.server), and a request that could never run is refused
here, naming the field.
"""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.containers.model import State as ContainerState
from pycri.containers.service import ContainerService
from pycri.errors import FailedPrecondition, InvalidArgument
from pycri.sandboxes.model import State as SandboxState
from pycri.sandboxes.service import SandboxService
from pycri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest
from pycri.streaming.server import StreamingServer


def _check_streams(tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:  # a terminal has one output: multiplexing stderr is impossible
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


class StreamingService:
    def __init__(self, server: StreamingServer, containers: ContainerService, sandboxes: SandboxService) -> None:
        self.server = server
        self.containers = containers
        self.sandboxes = sandboxes

    def _running_container(self, container_id: str) -> str:
        container = self.containers.get(container_id)
        if container.state is not ContainerState.RUNNING:
            raise FailedPrecondition(f"container {container.id} is not running (it is {container.state.value})")
        return container.id

    async def Exec(self, request: api.ExecRequest) -> api.ExecResponse:
        # The command's size, NUL bytes and the ports' range were checked with the request (pycri.server.validate).
        if not request.cmd:
            raise InvalidArgument("cmd: required")
        _check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        cid = self._running_container(request.container_id)
        stored = ExecRequest(cid, tuple(request.cmd), request.tty, request.stdin, request.stdout, request.stderr)
        return api.ExecResponse(url=self.server.url(stored))

    async def Attach(self, request: api.AttachRequest) -> api.AttachResponse:
        _check_streams(request.tty, request.stdin, request.stdout, request.stderr)
        cid = self._running_container(request.container_id)
        stored = AttachRequest(cid, request.tty, request.stdin, request.stdout, request.stderr)
        return api.AttachResponse(url=self.server.url(stored))

    async def PortForward(self, request: api.PortForwardRequest) -> api.PortForwardResponse:
        sandbox = self.sandboxes.get(request.pod_sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        stored = PortForwardRequest(sandbox.id, tuple(request.port))
        return api.PortForwardResponse(url=self.server.url(stored))
