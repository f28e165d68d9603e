"""What the Exec, Attach and PortForward RPCs hand the streaming server, and what it asks back.

The RPCs validate a request, store one of these records under a token (tokens.py) and
answer its URL. When the client connects with the token, the server serves it through a
:class:`Backend`: the domain's side (the container service's exec and attach, the pod's
network namespace for port-forward), so that nothing in this package knows containers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol

StreamName = Literal["stdout", "stderr"]


@dataclass(frozen=True)
class ExecRequest:
    container_id: str
    cmd: tuple[str, ...]
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class AttachRequest:
    container_id: str
    tty: bool
    stdin: bool
    stdout: bool
    stderr: bool


@dataclass(frozen=True)
class PortForwardRequest:
    sandbox_id: str
    ports: tuple[int, ...]  # those the RPC named; a WebSocket client may also name them in the URL


StreamingRequest = ExecRequest | AttachRequest | PortForwardRequest


class Session(Protocol):
    """An exec'd command or an attached container, as the runtime runs it (pycri.oci.interface)."""

    async def read(self) -> tuple[StreamName, bytes] | None: ...

    async def write(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None: ...

    async def resize(self, width: int, height: int) -> None: ...

    async def close(self) -> None: ...


class ExecSession(Session, Protocol):
    async def wait(self) -> int: ...


class Backend(Protocol):
    """What the streaming server asks of the rest of the daemon."""

    async def exec(self, request: ExecRequest) -> ExecSession:
        """Start the command; raises a pycri.errors error when the container cannot run it."""

    async def attach(self, request: AttachRequest) -> Session:
        """Connect to the container's own stdio."""

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to ``localhost:port`` in the pod's network namespace."""
