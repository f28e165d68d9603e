"""The WebSocket path of exec, attach and port-forward, sans-IO, on ``wsproto``.

:class:`WebSocketChannelServer` is the server end of one upgraded connection.
The driver parses the HTTP request (h11), builds the server with
:meth:`~WebSocketChannelServer.remote_command` or
:meth:`~WebSocketChannelServer.port_forward` (a refused request raises
:class:`~pycri.streaming.protocol.HandshakeError` carrying the response to
write), writes :meth:`~WebSocketChannelServer.accept`, then feeds received
bytes to :meth:`~WebSocketChannelServer.receive_data` and writes what
:meth:`~WebSocketChannelServer.data_to_send`, :meth:`~WebSocketChannelServer.send`
and :meth:`~WebSocketChannelServer.close` return.  Every method that returns
bytes includes, first, any automatic reply still queued (pongs, the answer to
the peer's close), so writing each method's result in call order keeps the
frames in order.

The channel framing is ``wsstream/conn.go`` (apimachinery; since 2026
``k8s.io/streaming``): every message starts with its channel number -- a raw
byte with the binary protocols (``channel.k8s.io``, ``v4.channel.k8s.io``,
``v5.channel.k8s.io``), an ASCII digit (``'0' + n``) followed by the payload
in base64 in text frames with ``base64.channel.k8s.io`` and
``v4.base64.channel.k8s.io``.  As upstream: empty messages are skipped;
messages for unknown channels, for channels the server does not read, or that
do not decode are dropped; the server sends one message per write and never
fragments; data written to a channel the session does not use is discarded.

Protocols (client's order of preference wins, ``""`` = no
``Sec-WebSocket-Protocol`` header):

* exec/attach -- the kubelet's set (``kubelet/pkg/cri/streaming/remotecommand/websocket.go``):
  ``""``, ``channel.k8s.io``, ``base64.channel.k8s.io`` (plain-text errors),
  ``v4.channel.k8s.io``, ``v4.base64.channel.k8s.io`` (Status JSON); plus
  ``v5.channel.k8s.io`` as the API server's WebSocket server has it
  (``apiserver/pkg/util/proxy/websocket.go``), the only protocol client-go's
  WebSocket executor offers: Status JSON, and the client half-closes a channel
  with the message ``[255, channel]`` (:class:`ChannelClosed`; a malformed
  one ends the connection).  Channels: 0 stdin (read if requested), 1 stdout,
  2 stderr (written if requested), 3 error (always written), 4 resize (always
  read; decoded here into :class:`Resize` events).  Right after the handshake
  the server sends an empty message on the lowest written channel of stdout,
  stderr, error, to tell the client the session is up.
* port-forward -- ``""``, ``v4.channel.k8s.io``, ``v4.base64.channel.k8s.io``
  (``.../portforward/websocket.go``).  Port *i* has channel ``2*i`` for data
  (read and written) and ``2*i+1`` for errors (written); the first message on
  each is the port as two little-endian bytes.

Where this deliberately differs from upstream (``golang.org/x/net/websocket``
under ``wsstream``):

* A message fragmented over several frames is reassembled (RFC 6455); x/net's
  ``Message.Receive`` reads one *frame* and would take each continuation
  frame for a new message.  Clients send one frame per message, so this only
  matters for ones that do not.
* No ``Sec-WebSocket-Protocol`` header when the client offered none (x/net
  sends an empty one, which browsers and wsproto reject).
* Refusals carry a body and ``Content-Length`` (see ``HandshakeError``).
* Protocol errors close with 1002 (1009 for a message over
  ``max_message_size``, 32 MiB like x/net's frame limit; 1007 for invalid
  UTF-8 in a text frame, which x/net does not check) where x/net closes with
  1000 after ending its read loop.
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from wsproto import events as ws
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import generate_accept_token

from pycri.streaming.protocol import (
    BASE64_CHANNEL_PROTOCOL,
    BASE64_CHANNEL_PROTOCOL_V4,
    CLOSE_SIGNAL,
    ERROR_CHANNEL,
    RESIZE_CHANNEL,
    STDERR_CHANNEL,
    STDIN_CHANNEL,
    STDOUT_CHANNEL,
    STREAM_PROTOCOL_V1,
    STREAM_PROTOCOL_V4,
    STREAM_PROTOCOL_V5,
    HandshakeError,
    PortForwardOptionsError,
    ResizeDecoder,
    Status,
    StreamingError,
    TerminalSize,
    header_value,
    negotiate,
    parse_ports_query,
    parse_websocket_protocols,
)

log = logging.getLogger("pycri.streaming")

#: x/net/websocket's ``DefaultMaxPayloadBytes``.
DEFAULT_MAX_MESSAGE_SIZE = 32 << 20
#: Channel numbers are one byte: at most 128 ports, two channels each.
MAX_PORTS = 128


class ChannelType(enum.IntEnum):
    """``wsstream.ChannelType``: which directions of a channel the server uses."""

    IGNORE = 0
    READ = 1
    WRITE = 2
    READ_WRITE = 3

    @property
    def readable(self) -> bool:
        return self in (ChannelType.READ, ChannelType.READ_WRITE)

    @property
    def writable(self) -> bool:
        return self in (ChannelType.WRITE, ChannelType.READ_WRITE)


@dataclass(frozen=True)
class ChannelProtocol:
    """One WebSocket subprotocol a server accepts (``wsstream.ChannelProtocolConfig`` plus its remote-command meaning)."""

    name: str
    #: Raw channel byte and binary frames; else ASCII digit and base64 in text frames.
    binary: bool = True
    #: The error channel carries Status JSON (v4, v5); else the message text, nothing on success.
    status_as_json: bool = False
    #: ``[255, channel]`` from the client half-closes a channel (v5).
    close_signal: bool = False


def _protocols(*items: ChannelProtocol) -> Mapping[str, ChannelProtocol]:
    return {p.name: p for p in items}


REMOTE_COMMAND_WEBSOCKET_PROTOCOLS = _protocols(
    ChannelProtocol(""),
    ChannelProtocol(STREAM_PROTOCOL_V1),
    ChannelProtocol(BASE64_CHANNEL_PROTOCOL, binary=False),
    ChannelProtocol(STREAM_PROTOCOL_V4, status_as_json=True),
    ChannelProtocol(BASE64_CHANNEL_PROTOCOL_V4, binary=False, status_as_json=True),
    ChannelProtocol(STREAM_PROTOCOL_V5, status_as_json=True, close_signal=True),
)
PORT_FORWARD_WEBSOCKET_PROTOCOLS = _protocols(
    ChannelProtocol(""),
    ChannelProtocol(STREAM_PROTOCOL_V4),
    ChannelProtocol(BASE64_CHANNEL_PROTOCOL_V4, binary=False),
)


# --- events ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelData:
    """Bytes the client sent on a channel the server reads (base64 already decoded; never empty)."""

    channel: int
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """v5: the client will send nothing more on this channel (stdin's EOF)."""

    channel: int


@dataclass(frozen=True, slots=True)
class Resize:
    """A terminal size from the resize channel (sent whether or not the session has a TTY, as upstream)."""

    size: TerminalSize


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The WebSocket is finished: every read channel is at EOF; write out :meth:`data_to_send`, then close the socket.

    ``code`` is the peer's close code, or the one this side closed with for a
    protocol error, or 1006 when the transport ended without a close frame.
    """

    code: int
    reason: str = ""


Event = ChannelData | ChannelClosed | Resize | ConnectionClosed


class WebSocketClosedError(StreamingError):
    """A write after the WebSocket stopped accepting data (closing or closed)."""


# --- the request -------------------------------------------------------------


class RequestLike(Protocol):
    """What the server reads of the upgrade request; an ``h11.Request`` fits."""

    @property
    def method(self) -> bytes | str: ...

    @property
    def target(self) -> bytes | str: ...

    @property
    def headers(self) -> Iterable[tuple[bytes | str, bytes | str]]: ...


@dataclass(frozen=True)
class UpgradeRequest:
    """A plain request head, for drivers that do not hold an ``h11.Request``."""

    method: str
    target: str
    headers: Sequence[tuple[str, str]]


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# --- the server --------------------------------------------------------------


class WebSocketChannelServer:
    """The server end of a Kubernetes channel WebSocket (``wsstream.Conn``), sans-IO.

    Construct with :meth:`remote_command` or :meth:`port_forward` (or directly
    with a protocol table and channel layout).  The constructor performs the
    handshake checks of ``golang.org/x/net/websocket`` (``hybiServerHandshaker``)
    and the subprotocol choice of ``wsstream``, raising
    :class:`~pycri.streaming.protocol.HandshakeError`: 405 for a method other
    than GET, 400 for a request that is not a WebSocket upgrade, lacks
    ``Sec-WebSocket-Key`` or has a ``Sec-WebSocket-Version`` other than 13
    (that one with ``Sec-WebSocket-Version: 13``), 403 when no offered
    subprotocol is acceptable.  No Origin check, as the kubelet.
    """

    def __init__(
        self,
        request: RequestLike,
        *,
        protocols: Mapping[str, ChannelProtocol],
        channels: Sequence[ChannelType],
        initial_messages: Sequence[tuple[int, bytes]] = (),
        resize_channel: int | None = None,
        ports: Sequence[int] = (),
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> None:
        if len(channels) > 256:
            raise ValueError("at most 256 channels")
        self.method = _text(request.method)
        self.target = _text(request.target)
        self.headers: tuple[tuple[str, str], ...] = tuple((_text(k), _text(v)) for k, v in request.headers)
        self._accept_token = self._check_request()
        offered = parse_websocket_protocols(header_value(self.headers, "Sec-WebSocket-Protocol"))
        chosen = negotiate(offered, protocols)
        if chosen is None:
            raise HandshakeError(
                403, f"requested protocol(s) are not supported: [{' '.join(offered)}]; supports [{' '.join(sorted(protocols))}]"
            )
        self.protocol: ChannelProtocol = protocols[chosen]
        self.channels: tuple[ChannelType, ...] = tuple(channels)
        self.ports: tuple[int, ...] = tuple(ports)
        self._initial = tuple(initial_messages)
        self._resize_channel = resize_channel
        self._resize = ResizeDecoder() if resize_channel is not None else None
        self.max_message_size = max_message_size
        self._conn = Connection(ConnectionType.SERVER)
        self._accepted = False
        self._finished = False
        self._outbox = bytearray()
        self._message = bytearray()
        self._closed_channels: set[int] = set()

    # construction -----------------------------------------------------------

    @classmethod
    def remote_command(
        cls,
        request: RequestLike,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        protocols: Mapping[str, ChannelProtocol] = REMOTE_COMMAND_WEBSOCKET_PROTOCOLS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> WebSocketChannelServer:
        """Exec or attach (``createChannels``/``createWebSocketStreams``); the flags come from the CRI request."""
        channels = [ChannelType.IGNORE] * 5
        channels[STDIN_CHANNEL] = ChannelType.READ if stdin else ChannelType.IGNORE
        channels[STDOUT_CHANNEL] = ChannelType.WRITE if stdout else ChannelType.IGNORE
        channels[STDERR_CHANNEL] = ChannelType.WRITE if stderr else ChannelType.IGNORE
        channels[ERROR_CHANNEL] = ChannelType.WRITE
        channels[RESIZE_CHANNEL] = ChannelType.READ
        first = STDOUT_CHANNEL if stdout else STDERR_CHANNEL if stderr else ERROR_CHANNEL
        return cls(
            request,
            protocols=protocols,
            channels=channels,
            initial_messages=[(first, b"")],
            resize_channel=RESIZE_CHANNEL,
            max_message_size=max_message_size,
        )

    @classmethod
    def port_forward(
        cls,
        request: RequestLike,
        ports: Sequence[int] | None = None,
        *,
        protocols: Mapping[str, ChannelProtocol] = PORT_FORWARD_WEBSOCKET_PROTOCOLS,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    ) -> WebSocketChannelServer:
        """Port forwarding (``handleWebSocketStreams``).

        ``ports`` from the CRI ``PortForwardRequest``; None reads them from the
        request's ``port`` query parameters (:func:`~pycri.streaming.protocol.parse_ports_query`),
        whose errors -- raised before the WebSocket checks, as the kubelet
        parses options first -- are :class:`~pycri.streaming.protocol.PortForwardOptionsError` (400).
        An empty list is allowed: the session then has no channels, and the
        kubelet closes it at once.
        """
        ports = parse_ports_query(_text(request.target)) if ports is None else list(ports)
        for port in ports:
            if not 0 < port <= 0xFFFF:
                raise PortForwardOptionsError(f"port {port} is out of range")
        if len(ports) > MAX_PORTS:
            raise PortForwardOptionsError(f"at most {MAX_PORTS} ports can be forwarded over one WebSocket")
        channels: list[ChannelType] = []
        initial: list[tuple[int, bytes]] = []
        for i, port in enumerate(ports):
            channels += [ChannelType.READ_WRITE, ChannelType.WRITE]
            prefix = port.to_bytes(2, "little")
            initial += [(2 * i, prefix), (2 * i + 1, prefix)]
        return cls(
            request,
            protocols=protocols,
            channels=channels,
            initial_messages=initial,
            ports=ports,
            max_message_size=max_message_size,
        )

    def _check_request(self) -> bytes:
        if self.method != "GET":
            raise HandshakeError(405, "bad method")
        upgrade = header_value(self.headers, "Upgrade").lower()
        if upgrade != "websocket" or "upgrade" not in header_value(self.headers, "Connection").lower():
            raise HandshakeError(400, "not websocket protocol")
        key = header_value(self.headers, "Sec-WebSocket-Key")
        if not key:
            raise HandshakeError(400, "mismatch challenge/response")
        if header_value(self.headers, "Sec-WebSocket-Version") != "13":
            raise HandshakeError(400, "missing or bad WebSocket Version", [("Sec-WebSocket-Version", "13")])
        return generate_accept_token(key.encode("latin-1"))

    # state --------------------------------------------------------------------

    @property
    def subprotocol(self) -> str:
        """The negotiated subprotocol; ``""`` when the client offered none."""
        return self.protocol.name

    @property
    def status_as_json(self) -> bool:
        return self.protocol.status_as_json

    @property
    def can_send(self) -> bool:
        """Whether :meth:`send` may still be called."""
        return self._accepted and not self._finished and self._conn.state is ConnectionState.OPEN

    @property
    def finished(self) -> bool:
        """Whether :class:`ConnectionClosed` has been emitted."""
        return self._finished

    @property
    def resize_error(self) -> str | None:
        """Why resize decoding stopped early, if it did (upstream stops reading resizes at the first bad one)."""
        return self._resize.error if self._resize is not None else None

    def port_channels(self, index: int) -> tuple[int, int]:
        """The (data, error) channels of the ``index``-th port."""
        if not 0 <= index < len(self.ports):
            raise IndexError(f"no port number {index}")
        return 2 * index, 2 * index + 1

    def port_of(self, channel: int) -> int:
        """The port a port-forward channel belongs to."""
        return self.ports[channel // 2]

    # output -------------------------------------------------------------------

    def accept(self) -> bytes:
        """The 101 response and the session's first messages (the empty "ready" message, or the port prefixes)."""
        if self._accepted:
            raise StreamingError("accept() was already called")
        self._accepted = True
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Accept: " + self._accept_token.decode("ascii"),
        ]
        if self.protocol.name:
            lines.append("Sec-WebSocket-Protocol: " + self.protocol.name)
        out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        for channel, data in self._initial:
            out += self.send(channel, data)
        return out

    def data_to_send(self) -> bytes:
        """Automatic replies queued by :meth:`receive_data` (pong, close); write them after each call."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def send(self, channel: int, data: bytes) -> bytes:
        """One message on ``channel``; ``b""`` (plus any queued reply) if the session does not write that channel.

        Raises :class:`WebSocketClosedError` once the connection is closing.
        """
        if not 0 <= channel < len(self.channels):
            raise ValueError(f"channel {channel} does not exist (the session has {len(self.channels)})")
        if not self.can_send:
            raise WebSocketClosedError("the WebSocket is not open")
        out = self.data_to_send()
        if not self.channels[channel].writable:
            return out
        if self.protocol.binary:
            return out + self._conn.send(ws.BytesMessage(data=bytes([channel]) + data))
        # Go's string('0'+num): a byte, then that code point's UTF-8.
        text = chr((ord("0") + channel) & 0xFF) + base64.b64encode(data).decode("ascii")
        return out + self._conn.send(ws.TextMessage(data=text))

    def send_stdout(self, data: bytes) -> bytes:
        return self.send(STDOUT_CHANNEL, data)

    def send_stderr(self, data: bytes) -> bytes:
        return self.send(STDERR_CHANNEL, data)

    def send_status(self, status: Status) -> bytes:
        """The command's outcome on the error channel: JSON for v4/v5, else the message (nothing on success)."""
        payload = status.to_json() if self.protocol.status_as_json else status.to_text()
        if not payload:
            return self.data_to_send()
        return self.send(ERROR_CHANNEL, payload)

    def send_port_error(self, index: int, message: str) -> bytes:
        """A forwarding failure on the ``index``-th port's error channel (see ``port_forward_error_message``)."""
        return self.send(self.port_channels(index)[1], message.encode("utf-8", "replace"))

    def close(self, code: int = CloseReason.NORMAL_CLOSURE, reason: str = "") -> bytes:
        """A close frame (none if already closing).  The driver may then close the socket, as the kubelet does."""
        out = self.data_to_send()
        if self.can_send:
            out += self._conn.send(ws.CloseConnection(code=code, reason=reason or None))
        return out

    # input --------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the socket; ``b""`` means it reached EOF.  Afterwards write :meth:`data_to_send`."""
        if not self._accepted:
            raise StreamingError("receive_data() before accept()")
        events: list[Event] = []
        if self._finished:
            return events
        if not data:
            self._finish(events, CloseReason.ABNORMAL_CLOSURE, "transport closed")
            return events
        if self._conn.state is ConnectionState.CLOSED:
            return events
        self._conn.receive_data(data)
        for event in self._conn.events():
            if self._finished:
                break
            if isinstance(event, (ws.TextMessage, ws.BytesMessage)):
                self._on_frame(event, events)
            elif isinstance(event, ws.Ping):
                if self._conn.state is ConnectionState.OPEN:
                    self._outbox += self._conn.send(event.response())
            elif isinstance(event, ws.CloseConnection):
                self._on_close(event, events)
        return events

    def _on_frame(self, event: ws.TextMessage | ws.BytesMessage, events: list[Event]) -> None:
        chunk = event.data.encode("utf-8") if isinstance(event.data, str) else event.data
        if len(self._message) + len(chunk) > self.max_message_size:
            self._fail(events, CloseReason.MESSAGE_TOO_BIG, f"message larger than {self.max_message_size} bytes")
            return
        self._message += chunk
        if not event.message_finished:
            return
        message = bytes(self._message)
        self._message.clear()
        if self._conn.state is ConnectionState.OPEN:  # after our close frame, input is no longer read
            self._on_message(message, events)

    def _on_close(self, event: ws.CloseConnection, events: list[Event]) -> None:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer closes: answer in kind
            self._outbox += self._conn.send(event.response())
        elif state is ConnectionState.OPEN:  # wsproto could not parse the input; the event carries the code to send
            self._outbox += self._conn.send(ws.CloseConnection(code=event.code, reason=event.reason))
        # CLOSED: the answer to our own close frame.
        self._finish(events, event.code, event.reason or "")

    def _on_message(self, message: bytes, events: list[Event]) -> None:
        if not message:
            return
        if self.protocol.close_signal and message[0] == CLOSE_SIGNAL:
            if len(message) != 2:
                self._fail(events, CloseReason.PROTOCOL_ERROR, "single channel byte should follow stream close signal")
                return
            channel = message[1]
            if channel >= len(self.channels):
                self._fail(events, CloseReason.PROTOCOL_ERROR, f"close signal for channel {channel}, which does not exist")
                return
            self._close_channel(channel, events)
            return
        channel = message[0] if self.protocol.binary else (message[0] - ord("0")) & 0xFF
        payload = message[1:]
        if channel >= len(self.channels):
            log.debug("dropping a message for channel %d, which does not exist", channel)
            return
        if not self.channels[channel].readable or channel in self._closed_channels:
            return
        if not self.protocol.binary:
            try:
                # Go's base64.StdEncoding skips CR and LF; padding is required.
                payload = base64.b64decode(payload.replace(b"\r", b"").replace(b"\n", b""), validate=True)
            except (binascii.Error, ValueError):
                log.debug("dropping a message for channel %d that is not valid base64", channel)
                return
        if channel == self._resize_channel and self._resize is not None:
            events.extend(Resize(size) for size in self._resize.feed(payload))
        elif payload:
            events.append(ChannelData(channel, payload))

    def _close_channel(self, channel: int, events: list[Event]) -> None:
        if not self.channels[channel].readable or channel in self._closed_channels:
            return  # upstream closes the channel's pipe; later closes are no-ops
        self._closed_channels.add(channel)
        if channel == self._resize_channel and self._resize is not None:
            events.extend(Resize(size) for size in self._resize.feed_eof())
        events.append(ChannelClosed(channel))

    def _fail(self, events: list[Event], code: int, reason: str) -> None:
        log.debug("closing the WebSocket: %s", reason)
        if self._conn.state is ConnectionState.OPEN:
            self._outbox += self._conn.send(ws.CloseConnection(code=code, reason=reason))
        self._finish(events, code, reason)

    def _finish(self, events: list[Event], code: int, reason: str) -> None:
        if self._resize is not None and self._resize_channel not in self._closed_channels:
            events.extend(Resize(size) for size in self._resize.feed_eof())
        self._finished = True
        events.append(ConnectionClosed(int(code), reason))


__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "MAX_PORTS",
    "PORT_FORWARD_WEBSOCKET_PROTOCOLS",
    "REMOTE_COMMAND_WEBSOCKET_PROTOCOLS",
    "ChannelClosed",
    "ChannelData",
    "ChannelProtocol",
    "ChannelType",
    "ConnectionClosed",
    "Event",
    "RequestLike",
    "Resize",
    "UpgradeRequest",
    "WebSocketChannelServer",
    "WebSocketClosedError",
]
