"""The daemon's side of the streaming server (pycri.streaming.requests.Backend).

Exec and attach go to the container service, which runs them through the container's OCI
runtime; port-forward dials into the pod's network namespace.
"""

from __future__ import annotations

import asyncio

from pycri import errors
from pycri.containers.service import ContainerService
from pycri.network import portforward
from pycri.sandboxes.model import State as SandboxState
from pycri.sandboxes.service import SandboxService
from pycri.streaming.requests import AttachRequest, ExecRequest, ExecSession, Session


class StreamingBackend:
    def __init__(self, containers: ContainerService, sandboxes: SandboxService) -> None:
        self.containers = containers
        self.sandboxes = sandboxes

    async def exec(self, request: ExecRequest) -> ExecSession:
        return await self.containers.exec(request.container_id, list(request.cmd), tty=request.tty, stdin=request.stdin)

    async def attach(self, request: AttachRequest) -> Session:
        return await self.containers.attach(request.container_id)

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        return await portforward.dial(None if sandbox.host_network else sandbox.netns, port)
