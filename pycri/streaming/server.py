"""The streaming server: the HTTP(S) endpoint behind the URLs that Exec, Attach and PortForward answer.

As kubelet's streaming server (``pkg/kubelet/cri/streaming/server.go``), which containerd and
CRI-O embed: the RPCs validate a request and store it under a single-use token
(:mod:`pycri.streaming.tokens`); the client connects to ``/exec/TOKEN``, ``/attach/TOKEN`` or
``/portforward/TOKEN`` with GET or POST and upgrades the connection to SPDY/3.1 or WebSocket.
An unknown, used or expired token gets 404 and nothing runs.

The request head is read with ``h11`` (at most ``MAX_HEAD`` bytes within
``HEAD_TIMEOUT`` seconds); after the upgrade the connection belongs to the session
(:mod:`~pycri.streaming.remotecommand`, :mod:`~pycri.streaming.portforward`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable
from functools import partial
from http import HTTPStatus

import h11

from pycri.streaming import portforward, protocol, remotecommand, tunnel
from pycri.streaming.requests import AttachRequest, Backend, ExecRequest, PortForwardRequest, StreamingRequest
from pycri.streaming.spdy import UPGRADE_PROTOCOL
from pycri.streaming.spdy_io import SpdySession
from pycri.streaming.tokens import RequestCache
from pycri.streaming.websocket import WebSocketChannelServer
from pycri.tasks import cancel

log = logging.getLogger("pycri.streaming")

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT = 30.0
KINDS = {"exec": ExecRequest, "attach": AttachRequest, "portforward": PortForwardRequest}


def _plain_response(status: int, body: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    conn = h11.Connection(h11.SERVER)
    # h11 answers only a request it has seen: give it a minimal one.
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.next_event()
    data = body.encode()
    head = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))), ("Connection", "close")]
    reason = HTTPStatus(status).phrase.encode()
    out = conn.send(h11.Response(status_code=status, headers=[*head, *headers], reason=reason)) or b""
    return out + (conn.send(h11.Data(data=data)) or b"") + (conn.send(h11.EndOfMessage()) or b"")


class StreamingServer:
    def __init__(self, backend: Backend, address: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.backend = backend
        self.address = address
        self.port = port
        self.tls = tls
        self.requests: RequestCache[StreamingRequest] = RequestCache()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.address, self.port, ssl=self.tls)
        host, port = self._server.sockets[0].getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        self.base_url = f"{'https' if self.tls else 'http'}://{host}:{port}"
        log.info("streaming server on %s", self.base_url)

    async def stop(self) -> None:
        """Stop listening and end every session (their commands are killed, as kubelet's Stop does)."""
        if self._server is not None:
            self._server.close()
        await cancel(list(self._connections))
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def url(self, request: StreamingRequest) -> str:
        """Store ``request``; the URL its client connects to (RESOURCE_EXHAUSTED when too many wait)."""
        kind = next(name for name, cls in KINDS.items() if isinstance(request, cls))
        return f"{self.base_url}/{kind}/{self.requests.insert(request)}"

    # -- connections -----------------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(self._read_head(reader), HEAD_TIMEOUT)
            if head is None:
                writer.write(_plain_response(400, "bad request\n"))
                return
            request, leftover = head
            await self._route(request, leftover, reader, writer)
        except TimeoutError:
            writer.write(_plain_response(408, "request timeout\n"))
        except protocol.HandshakeError as exc:
            writer.write(exc.response())
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            log.debug("streaming: connection ended: %s", exc)
        except Exception:
            log.exception("streaming: session failed")
        finally:
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[h11.Request, bytes] | None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                log.info("streaming: bad request: %s", exc)
                return None
            if isinstance(event, h11.Request):
                leftover, _ = conn.trailing_data
                if event.method not in (b"GET", b"POST"):
                    raise protocol.HandshakeError(405, f"method {event.method.decode(errors='replace')} not allowed")
                return event, leftover
            if event is h11.NEED_DATA:
                data = await reader.read(16 * 1024)
                if not data:
                    return None
                conn.receive_data(data)
            else:
                return None

    async def _route(
        self, request: h11.Request, leftover: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path = request.target.decode("latin-1").partition("?")[0]
        _, kind, token = [*path.split("/", 2), "", ""][:3]
        wanted = KINDS.get(kind)
        stored = self.requests.consume(token) if wanted is not None and token and "/" not in token else None
        if stored is None or not isinstance(stored, wanted or ()):
            writer.write(_plain_response(404, "404 page not found\n"))
            return
        headers = request.headers
        if protocol.is_websocket_request(headers):
            await self._websocket(request, stored, leftover, reader, writer)
        elif protocol.is_upgrade_request(headers):
            await self._spdy(request, stored, leftover, reader, writer)
        else:
            writer.write(_plain_response(400, "Upgrade request required\n"))

    async def _spdy(
        self,
        request: h11.Request,
        stored: StreamingRequest,
        leftover: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        upgrade = protocol.header_value(request.headers, "Upgrade")
        if upgrade.lower() != UPGRADE_PROTOCOL.lower():
            raise protocol.HandshakeError(400, f"unable to upgrade: unsupported protocol {upgrade!r}")
        port_forward = isinstance(stored, PortForwardRequest)
        offered = protocol.SPDY_PORT_FORWARD_PROTOCOLS if port_forward else protocol.SPDY_REMOTE_COMMAND_PROTOCOLS
        negotiated = protocol.negotiate_spdy(request.headers, offered)
        head = [("Connection", "Upgrade"), ("Upgrade", UPGRADE_PROTOCOL), *negotiated.response_headers]
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in head) + b"\r\n")
        await writer.drain()
        session = SpdySession(reader, writer, leftover=leftover)
        if isinstance(stored, PortForwardRequest):
            await portforward.serve_spdy(session, stored.sandbox_id, partial(self.backend.dial, stored.sandbox_id))
            return
        streams = await remotecommand.spdy_streams(
            session, negotiated.protocol, stdin=stored.stdin, stdout=stored.stdout, stderr=stored.stderr, tty=stored.tty
        )
        if streams is None:
            await session.close()
            return
        await self._remote_command(streams, stored)

    async def _websocket(
        self,
        request: h11.Request,
        stored: StreamingRequest,
        leftover: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        if isinstance(stored, PortForwardRequest) and tunnel.wants_tunnel(request.headers):
            writer.write(tunnel.handshake(request.method.decode("latin-1"), request.headers))
            await writer.drain()
            carrier = tunnel.WebSocketTunnel(reader, writer, leftover=leftover)
            session = SpdySession(carrier, carrier)
            await portforward.serve_spdy(session, stored.sandbox_id, partial(self.backend.dial, stored.sandbox_id))
            return
        if isinstance(stored, PortForwardRequest):
            ws = WebSocketChannelServer.port_forward(request, ports=list(stored.ports) or None)
            dial = partial(self.backend.dial, stored.sandbox_id)
            await portforward.serve_websocket(ws, reader, writer, stored.sandbox_id, dial, leftover=leftover)
            return
        ws = WebSocketChannelServer.remote_command(request, stdin=stored.stdin, stdout=stored.stdout, stderr=stored.stderr)
        streams = remotecommand.WebSocketStreams(ws, reader, writer, leftover=leftover)
        await streams.start()
        await self._remote_command(streams, stored)

    async def _remote_command(self, streams: remotecommand.ClientStreams, stored: ExecRequest | AttachRequest) -> None:
        if isinstance(stored, ExecRequest):
            exec_request = stored

            async def finish(session: remotecommand.ExecSession) -> protocol.Status:
                return await remotecommand.exec_status(session, exec_request.cmd)

            start: Callable[[], Awaitable[remotecommand.ExecSession]] = partial(self.backend.exec, exec_request)
            await remotecommand.serve(streams, start, finish, stdin=stored.stdin)
        else:
            await remotecommand.serve(
                streams, partial(self.backend.attach, stored), remotecommand.attach_status, stdin=stored.stdin
            )
