"""SPDY tunnelled through a WebSocket: how client-go forwards ports over WebSocket.

client-go's ``portforward.NewSPDYOverWebsocketDialer`` (``crictl port-forward --transport
websocket``, critest's ``--websocket-portforward``) offers the subprotocol
``SPDY/3.1+portforward.k8s.io``; once the WebSocket is up, the SPDY session's bytes travel
in binary messages, in both directions, with no framing of their own
(``tunneling_connection.go``). :class:`WebSocketTunnel` is that byte stream with the
``read``/``write``/``drain``/``close`` shape of asyncio's streams, so the ordinary
:class:`~pycri.streaming.spdy_io.SpdySession` and port-forward code run over it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from wsproto import events as ws
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.utilities import generate_accept_token

from pycri.streaming.protocol import HandshakeError, Headers, header_value, parse_websocket_protocols

TUNNELING_PREFIX = "SPDY/3.1+"
PORT_FORWARD_TUNNEL = TUNNELING_PREFIX + "portforward.k8s.io"
READ_CHUNK = 64 * 1024


def wants_tunnel(headers: Headers) -> bool:
    """Whether a WebSocket request offers SPDY tunnelling for port-forward."""
    offered = parse_websocket_protocols(header_value(headers, "Sec-WebSocket-Protocol"))
    return PORT_FORWARD_TUNNEL in offered


def handshake(method: str, headers: Headers) -> bytes:
    """The 101 response accepting the tunnel; HandshakeError when the request is not a WebSocket upgrade."""
    if method != "GET":
        raise HandshakeError(405, "bad method")
    key = header_value(headers, "Sec-WebSocket-Key")
    if not key or header_value(headers, "Sec-WebSocket-Version") != "13":
        raise HandshakeError(400, "missing or bad WebSocket key or version", [("Sec-WebSocket-Version", "13")])
    token = generate_accept_token(key.encode("latin-1")).decode("ascii")
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {token}\r\nSec-WebSocket-Protocol: {PORT_FORWARD_TUNNEL}\r\n\r\n"
    ).encode("latin-1")


class WebSocketTunnel:
    """A byte stream carried in binary WebSocket messages (reader and writer in one)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, leftover: bytes = b"") -> None:
        self._reader = reader
        self._writer = writer
        self._leftover = leftover
        self._conn = Connection(ConnectionType.SERVER)
        self._chunks: deque[bytes] = deque()
        self._eof = False

    # -- the reader side ---------------------------------------------------------------------------

    async def read(self, n: int = READ_CHUNK) -> bytes:
        """Up to ``n`` bytes of the tunnelled stream; b"" when the WebSocket is closed."""
        while not self._chunks:
            if self._eof:
                return b""
            data, self._leftover = (self._leftover or await self._reader.read(READ_CHUNK)), b""
            self._conn.receive_data(data or None)
            for event in self._conn.events():
                if isinstance(event, ws.BytesMessage) and event.data:
                    self._chunks.append(bytes(event.data))
                elif isinstance(event, ws.Ping):
                    self._writer.write(self._conn.send(event.response()))
                elif isinstance(event, ws.CloseConnection):
                    if self._conn.state is ConnectionState.REMOTE_CLOSING:
                        self._writer.write(self._conn.send(event.response()))
                    self._eof = True
                elif isinstance(event, ws.TextMessage):  # not part of the protocol: end the tunnel
                    self._eof = True
            if not data:
                self._eof = True
        chunk = self._chunks.popleft()
        if len(chunk) > n:
            self._chunks.appendleft(chunk[n:])
            chunk = chunk[:n]
        return chunk

    # -- the writer side ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self._conn.state is ConnectionState.OPEN and data:
            self._writer.write(self._conn.send(ws.BytesMessage(data=data)))

    async def drain(self) -> None:
        await self._writer.drain()

    def is_closing(self) -> bool:
        return self._writer.is_closing() or self._conn.state is not ConnectionState.OPEN

    def close(self) -> None:
        if self._conn.state is ConnectionState.OPEN:
            with contextlib.suppress(Exception):
                self._writer.write(self._conn.send(ws.CloseConnection(code=1000)))
        self._writer.close()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()
