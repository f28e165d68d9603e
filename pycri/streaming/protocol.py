"""The Kubernetes streaming protocols above the transport: names, negotiation, stream roles, Status JSON, resizes.

Pure functions and small sans-IO objects shared by the SPDY/3.1 and the
WebSocket paths of the server that answers the URLs returned by the CRI
``Exec``, ``Attach`` and ``PortForward`` calls.  The behaviour follows the
kubelet's ``k8s.io/kubelet/pkg/cri/streaming`` package (the copy containerd and
CRI-O serve; since 2026 it lives on as ``k8s.io/cri-streaming``) and the
``k8s.io/apimachinery`` helpers it uses.  File names below are relative to
``staging/src/k8s.io/`` in the kubernetes repository.

Remote command (exec, attach):

* Subprotocol negotiation for SPDY (``apimachinery/pkg/util/httpstream/httpstream.go``
  ``Handshake``): the client lists versions in one or more
  ``X-Stream-Protocol-Version`` headers (values may be comma separated); the
  first *client* value the server supports wins.  A missing header or one with
  no usable value is a 400, no common version a 403 that lists the server's
  versions in ``X-Accepted-Stream-Protocol-Versions``.
* Over SPDY the kubelet offers ``v4``, ``v3``, ``v2`` and ``channel.k8s.io``
  (``apimachinery/pkg/util/remotecommand/constants.go``
  ``SupportedStreamingProtocols``).  ``v5.channel.k8s.io`` only adds the
  WebSocket CLOSE signal; client-go's SPDY executor offers it first but the
  kubelet never picks it, so :data:`SPDY_REMOTE_COMMAND_PROTOCOLS` does not
  hold it either.
* Each SPDY stream names its role in a ``streamType`` header: ``error``,
  ``stdin``, ``stdout``, ``stderr`` and, from v3, ``resize``
  (``kubelet/pkg/cri/streaming/remotecommand/httpstream.go``).  Unknown types
  are accepted on the wire but ignored and not counted.
* The error stream carries the outcome once the command ends: from v4 the JSON
  of a ``metav1.Status`` (:class:`Status`), in v1 to v3 the bare message text
  and nothing at all on success (``v1WriteStatusFunc``/``v4WriteStatusFunc``).
* Resize messages are a stream of JSON objects ``{"Width":80,"Height":24}``
  (client-go writes them with ``json.Encoder``, one per line, but nothing
  frames them); the server reads them with one ``json.Decoder`` and stops for
  good at the first error (``handleResizeEvents``).  :class:`ResizeDecoder`
  does the same incrementally.

Port forward:

* SPDY (``kubelet/pkg/cri/streaming/portforward/httpstream.go``): protocol
  ``portforward.k8s.io``; every forwarded connection is a pair of streams, one
  ``streamType: data`` and one ``streamType: error``, each with a ``port``
  header and paired by their ``requestID`` header (derived from the stream id
  for clients too old to send one).
* WebSocket (``.../portforward/websocket.go``): the ports come from the CRI
  request (or, in the kubelet's own server, from ``?port=`` query parameters,
  :func:`parse_ports_query`); port *i* uses channel ``2*i`` for data and
  ``2*i+1`` for errors, and the server's first message on both is the port as
  two little-endian bytes.  See :mod:`pycri.streaming.websocket`.

The errors (:mod:`pycri.streaming.errors`), the Status JSON
(:mod:`pycri.streaming.status`) and the resize decoder
(:mod:`pycri.streaming.resize`) live in modules of their own; this one
re-exports their names.
"""

from __future__ import annotations

import enum
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from pycri.streaming.errors import (
    HandshakeError,
    PortForwardOptionsError,
    PortForwardPairError,
    StreamHeaderError,
    StreamingError,
)
from pycri.streaming.resize import ResizeDecoder, TerminalSize
from pycri.streaming.status import (
    CAUSE_EXIT_CODE,
    REASON_INTERNAL_ERROR,
    REASON_NON_ZERO_EXIT_CODE,
    STATUS_FAILURE,
    STATUS_SUCCESS,
    Status,
    StatusCause,
    _go_list,
    exec_exit_error,
    status_exit_code,
    status_failure,
    status_internal_error,
    status_success,
)

# --- names -------------------------------------------------------------------

STREAM_PROTOCOL_V1 = "channel.k8s.io"
STREAM_PROTOCOL_V2 = "v2.channel.k8s.io"
STREAM_PROTOCOL_V3 = "v3.channel.k8s.io"
STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_PROTOCOL_V5 = "v5.channel.k8s.io"
#: WebSocket only: channel numbers as ASCII digits and base64 payloads in text frames.
BASE64_CHANNEL_PROTOCOL = "base64.channel.k8s.io"
BASE64_CHANNEL_PROTOCOL_V4 = "v4.base64.channel.k8s.io"
PORT_FORWARD_PROTOCOL_V1 = "portforward.k8s.io"

#: Every remote-command protocol version, newest first.
REMOTE_COMMAND_PROTOCOLS = (STREAM_PROTOCOL_V5, STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V2, STREAM_PROTOCOL_V1)
#: What the kubelet negotiates over SPDY (``remotecommand.SupportedStreamingProtocols``).
SPDY_REMOTE_COMMAND_PROTOCOLS = (STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V2, STREAM_PROTOCOL_V1)
#: What the kubelet negotiates for port forwarding over SPDY (``portforward.SupportedProtocols``).
SPDY_PORT_FORWARD_PROTOCOLS = (PORT_FORWARD_PROTOCOL_V1,)

HEADER_PROTOCOL_VERSION = "X-Stream-Protocol-Version"
HEADER_ACCEPTED_PROTOCOL_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
HEADER_STREAM_TYPE = "streamType"
HEADER_PORT = "port"
HEADER_REQUEST_ID = "requestID"

#: Channel numbers of remote command over WebSocket (the first three are the file descriptors).
STDIN_CHANNEL = 0
STDOUT_CHANNEL = 1
STDERR_CHANNEL = 2
ERROR_CHANNEL = 3
RESIZE_CHANNEL = 4
#: First byte of a v5 CLOSE signal; the second is the channel being half-closed.
CLOSE_SIGNAL = 255


class StreamType(enum.StrEnum):
    """Values of the ``streamType`` header of a SPDY stream."""

    STDIN = "stdin"
    STDOUT = "stdout"
    STDERR = "stderr"
    ERROR = "error"
    RESIZE = "resize"
    DATA = "data"


# --- headers -----------------------------------------------------------------

#: Header input: a mapping (values a string or a list of strings, as SPDY
#: headers may carry several) or (name, value) pairs, as ``str`` or ``bytes``
#: (an ``h11.Request.headers`` works).  Names are matched case-insensitively.
Headers = Mapping[str, str | Sequence[str]] | Iterable[tuple[str | bytes, str | bytes]]


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def header_values(headers: Headers, name: str) -> list[str]:
    """All values of header ``name``, in order (Go's ``http.Header[name]`` after canonicalisation)."""
    wanted = name.lower()
    out: list[str] = []
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if key.lower() == wanted:
                out.extend([value] if isinstance(value, str) else value)
        return out
    for key, value in headers:
        if _text(key).lower() == wanted:
            out.append(_text(value))
    return out


def header_value(headers: Headers, name: str) -> str:
    """The first value of header ``name``, ``""`` when absent (Go's ``http.Header.Get``)."""
    values = header_values(headers, name)
    return values[0] if values else ""


def is_upgrade_request(headers: Headers) -> bool:
    """``httpstream.IsUpgradeRequest``: some ``Connection`` header contains ``upgrade``."""
    return any("upgrade" in value.lower() for value in header_values(headers, "Connection"))


def is_websocket_request(headers: Headers) -> bool:
    """``wsstream.IsWebSocketRequest``: WebSocket, not SPDY (the server's choice between the two paths)."""
    return header_value(headers, "Upgrade").lower() == "websocket" and is_upgrade_request(headers)


# --- negotiation -------------------------------------------------------------


def negotiate(client_protocols: Sequence[str], server_protocols: Iterable[str]) -> str | None:
    """The first of the client's protocols the server supports, or None (client preference wins).

    The rule of both ``httpstream.negotiateProtocol`` (SPDY) and the WebSocket
    handshake in ``wsstream/conn.go``.  ``""`` is an ordinary value: the
    WebSocket servers list it to accept clients that offer no subprotocol.
    """
    server = set(server_protocols)
    for protocol in client_protocols:
        if protocol in server:
            return protocol
    return None


def parse_protocol_header(values: Iterable[str]) -> list[str]:
    """``commaSeparatedHeaderValues``: split each value on commas, trim spaces, drop empties."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            protocol = part.strip(" ")
            if protocol:
                out.append(protocol)
    return out


@dataclass(frozen=True)
class SpdyNegotiation:
    """A successful SPDY subprotocol negotiation: add ``response_headers`` to the 101 response."""

    protocol: str
    response_headers: tuple[tuple[str, str], ...]


def negotiate_spdy(headers: Headers, server_protocols: Sequence[str]) -> SpdyNegotiation:
    """``httpstream.Handshake`` for a SPDY upgrade request; raises :class:`HandshakeError` (400 or 403).

    ``server_protocols`` is :data:`SPDY_REMOTE_COMMAND_PROTOCOLS` or
    :data:`SPDY_PORT_FORWARD_PROTOCOLS`.
    """
    if not server_protocols:
        raise ValueError("server_protocols is required")
    values = header_values(headers, HEADER_PROTOCOL_VERSION)
    if not values:
        names = {_text(name).lower() for name in _header_names(headers)} - {"host"}  # net/http keeps Host apart
        raise HandshakeError(
            400, f"unable to upgrade: header {HEADER_PROTOCOL_VERSION} does not exist in request with {len(names)} headers"
        )
    client_protocols = parse_protocol_header(values)
    if not client_protocols:
        raise HandshakeError(
            400, f"unable to upgrade: header {HEADER_PROTOCOL_VERSION} contains {_go_list(values)}, but no valid protocols"
        )
    protocol = negotiate(client_protocols, server_protocols)
    if protocol is None:
        raise HandshakeError(
            403,
            "unable to upgrade: unable to negotiate protocol: "
            f"client supports {_go_list(client_protocols)}, server accepts {_go_list(server_protocols)}",
            [(HEADER_ACCEPTED_PROTOCOL_VERSIONS, p) for p in server_protocols],
        )
    return SpdyNegotiation(protocol, ((HEADER_PROTOCOL_VERSION, protocol),))


def _header_names(headers: Headers) -> list[str | bytes]:
    if isinstance(headers, Mapping):
        return list(headers.keys())
    return [name for name, _ in headers]


def parse_websocket_protocols(value: str) -> list[str]:
    """The subprotocols a WebSocket client offers, as ``golang.org/x/net/websocket`` reads them.

    ``value`` is the first ``Sec-WebSocket-Protocol`` header (``""`` if none).
    Entries are split on commas and trimmed, empty ones kept; no header at all
    yields ``[""]``, the entry the servers register for "no subprotocol"
    (``wsstream.handshake``).
    """
    value = value.strip()
    if not value:
        return [""]
    return [part.strip() for part in value.split(",")]


# --- remote command streams --------------------------------------------------


@dataclass(frozen=True)
class RemoteCommandVersion:
    """What a negotiated remote-command protocol changes (``remotecommand/httpstream.go``)."""

    name: str
    #: v3+: a ``resize`` stream exists when the session has a TTY.
    supports_resize: bool
    #: v4+: the error stream carries :meth:`Status.to_json`; before, :meth:`Status.to_text`.
    status_as_json: bool
    #: v5: the client half-closes WebSocket channels with ``[255, channel]``.
    close_signal: bool
    #: v1 quirk (``v1ProtocolHandler``): once all streams arrived the server closes
    #: its side of stdin and resets the error stream, so v1 clients never get a status.
    v1_quirks: bool


def remote_command_version(protocol: str) -> RemoteCommandVersion:
    """Features of a negotiated protocol; ``""`` (no negotiation) means ``channel.k8s.io``, as upstream falls back."""
    if protocol in ("", STREAM_PROTOCOL_V1):
        return RemoteCommandVersion(STREAM_PROTOCOL_V1, False, False, False, True)
    if protocol == STREAM_PROTOCOL_V2:
        return RemoteCommandVersion(protocol, False, False, False, False)
    if protocol == STREAM_PROTOCOL_V3:
        return RemoteCommandVersion(protocol, True, False, False, False)
    if protocol == STREAM_PROTOCOL_V4:
        return RemoteCommandVersion(protocol, True, True, False, False)
    if protocol == STREAM_PROTOCOL_V5:
        return RemoteCommandVersion(protocol, True, True, True, False)
    raise ValueError(f"unknown remote command protocol {protocol!r}")


def classify_remote_command_stream(protocol: str, headers: Headers) -> StreamType | None:
    """The role of a new SPDY stream of an exec/attach session, or None for a type to ignore.

    The kubelet accepts (replies to) every stream but uses, and counts towards
    :func:`expected_remote_command_streams`, only the known types; ``resize``
    is known from v3.  A second stream of a type replaces the first and is
    counted again.
    """
    version = remote_command_version(protocol)
    try:
        kind = StreamType(header_value(headers, HEADER_STREAM_TYPE))
    except ValueError:
        return None
    if kind is StreamType.DATA or (kind is StreamType.RESIZE and not version.supports_resize):
        return None
    return kind


def expected_remote_command_streams(protocol: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool) -> int:
    """How many streams the server waits for before it starts the command (error stream included)."""
    count = 1 + stdin + stdout + stderr
    if tty and remote_command_version(protocol).supports_resize:
        count += 1
    return count


# --- port-forward streams ----------------------------------------------------


def _parse_port(text: str) -> int | None:
    """Go's ``strconv.ParseUint(text, 10, 16)``: ASCII digits only, at most 65535; None if it fails."""
    if not text or not all("0" <= c <= "9" for c in text):
        return None
    value = int(text)
    return value if value <= 0xFFFF else None


def _go_quote(text: str) -> str:
    """Go's ``%q`` of a string (``strconv.Quote``), for the printable and control characters error text meets."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif not char.isprintable():
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _parse_uint_error(text: str) -> str:
    kind = "value out of range" if text and all("0" <= c <= "9" for c in text) else "invalid syntax"
    return f"strconv.ParseUint: parsing {_go_quote(text)}: {kind}"


@dataclass(frozen=True)
class PortForwardStream:
    """A validated port-forward SPDY stream."""

    kind: StreamType  # DATA or ERROR
    port: int
    request_id: str


def parse_port_forward_stream(headers: Headers, stream_id: int) -> PortForwardStream:
    """Validate a port-forward stream's headers (``httpStreamReceived``, ``requestID``).

    Raises :class:`StreamHeaderError` with upstream's message; the stream must
    then be reset.  Without a ``requestID`` header the ID is derived from the
    SPDY stream id as upstream does for old clients: the error stream's own id,
    the data stream's id minus 2.
    """
    port_text = header_value(headers, HEADER_PORT)
    if not port_text:
        raise StreamHeaderError(f'"{HEADER_PORT}" header is required')
    port = _parse_port(port_text)
    if port is None:
        raise StreamHeaderError(f"unable to parse {_go_quote(port_text)} as a port: {_parse_uint_error(port_text)}")
    if port < 1:
        raise StreamHeaderError(f"port {_go_quote(port_text)} must be > 0")
    stream_type = header_value(headers, HEADER_STREAM_TYPE)
    if not stream_type:
        raise StreamHeaderError(f'"{HEADER_STREAM_TYPE}" header is required')
    if stream_type not in (StreamType.ERROR, StreamType.DATA):
        raise StreamHeaderError(f"invalid stream type {_go_quote(stream_type)}")
    kind = StreamType(stream_type)
    request_id = header_value(headers, HEADER_REQUEST_ID)
    if not request_id:
        request_id = str(stream_id if kind is StreamType.ERROR else stream_id - 2)
    return PortForwardStream(kind, port, request_id)


T = TypeVar("T")


@dataclass
class PortForwardPair(Generic[T]):
    """The data and error streams of one forwarded connection (``httpStreamPair``); ``T`` is the driver's stream."""

    request_id: str
    data: T | None = None
    error: T | None = None
    #: The port of the data stream (the one upstream forwards to).
    port: int = 0

    @property
    def complete(self) -> bool:
        return self.data is not None and self.error is not None


class PortForwardPairs(Generic[T]):
    """Pairs port-forward streams by request ID (``httpStreamHandler``), without clocks.

    :meth:`add` returns the pair and whether this stream created it: the
    driver then starts the stream-creation timer (30 s upstream) and, if it
    fires before the pair completes, writes :func:`port_forward_timeout_message`
    to the pair's error stream and calls :meth:`remove`.  A complete pair is
    removed at once and handed to the forwarder; a later stream with the same
    ID starts a new pair, as upstream.
    """

    def __init__(self) -> None:
        self._pairs: dict[str, PortForwardPair[T]] = {}

    def add(self, stream: T, info: PortForwardStream) -> tuple[PortForwardPair[T], bool]:
        """Add a validated stream; raises :class:`PortForwardPairError` for a duplicate type."""
        pair = self._pairs.get(info.request_id)
        created = pair is None
        if pair is None:
            pair = self._pairs[info.request_id] = PortForwardPair(info.request_id)
        if info.kind is StreamType.ERROR:
            if pair.error is not None:
                raise PortForwardPairError(info.request_id, "error stream already assigned")
            pair.error = stream
        else:
            if pair.data is not None:
                raise PortForwardPairError(info.request_id, "data stream already assigned")
            pair.data = stream
            pair.port = info.port
        if pair.complete:
            del self._pairs[info.request_id]
        return pair, created

    def get(self, request_id: str) -> PortForwardPair[T] | None:
        return self._pairs.get(request_id)

    def remove(self, request_id: str) -> PortForwardPair[T] | None:
        return self._pairs.pop(request_id, None)

    def __len__(self) -> int:
        return len(self._pairs)


def port_forward_error_message(port: int, pod: str, error: str, uid: str = "") -> str:
    """What the kubelet writes on a pair's error stream when forwarding fails (``portForward``).

    For CRI, ``pod`` is the sandbox ID and ``uid`` is empty.
    """
    return f"error forwarding port {port} to pod {pod}, uid {uid}: {error}"


def port_forward_timeout_message(request_id: str) -> str:
    """Upstream's message when a pair does not complete in time, minus its ``conn=%p`` pointer."""
    return f"(request={request_id}) timed out waiting for streams"


def parse_ports_query(target: str) -> list[int]:
    """Ports from the ``port`` query parameters of a request target (``portforward.NewV4Options``).

    Each value may hold several comma-separated ports.  Raises
    :class:`PortForwardOptionsError` (400) with upstream's messages.  The CRI
    path takes the ports from ``PortForwardRequest.port`` instead
    (``BuildV4Options``).  Query pairs are read as Go's ``url.ParseQuery``
    does: ``&``-separated, pairs with a ``;`` or a bad ``%`` escape skipped.
    """
    values = _query_values(urllib.parse.urlsplit(target).query, HEADER_PORT)
    if not values:
        raise PortForwardOptionsError(f'query parameter "{HEADER_PORT}" is required')
    ports: list[int] = []
    for value in values:
        if not value:
            raise PortForwardOptionsError(f'query parameter "{HEADER_PORT}" cannot be empty')
        for part in value.split(","):
            port = _parse_port(part)
            if port is None:
                raise PortForwardOptionsError(f"unable to parse {_go_quote(value)} as a port: {_parse_uint_error(part)}")
            if port < 1:
                raise PortForwardOptionsError(f"port {_go_quote(value)} must be > 0")
            ports.append(port)
    return ports


def _go_unescape(text: str) -> str | None:
    """``url.QueryUnescape``: ``+`` is a space; None for a malformed ``%`` escape."""
    hexdigits = "0123456789abcdefABCDEF"
    i = 0
    while (i := text.find("%", i)) >= 0:
        if i + 2 >= len(text) or text[i + 1] not in hexdigits or text[i + 2] not in hexdigits:
            return None
        i += 3
    return urllib.parse.unquote(text.replace("+", " "), errors="surrogateescape")


def _query_values(query: str, name: str) -> list[str]:
    out: list[str] = []
    for pair in query.split("&"):
        if not pair or ";" in pair:
            continue
        raw_key, _, raw_value = pair.partition("=")
        key, value = _go_unescape(raw_key), _go_unescape(raw_value)
        if key is None or value is None:
            continue
        if key == name:
            out.append(value)
    return out


__all__ = [
    "BASE64_CHANNEL_PROTOCOL",
    "BASE64_CHANNEL_PROTOCOL_V4",
    "CAUSE_EXIT_CODE",
    "CLOSE_SIGNAL",
    "ERROR_CHANNEL",
    "HEADER_ACCEPTED_PROTOCOL_VERSIONS",
    "HEADER_PORT",
    "HEADER_PROTOCOL_VERSION",
    "HEADER_REQUEST_ID",
    "HEADER_STREAM_TYPE",
    "PORT_FORWARD_PROTOCOL_V1",
    "REASON_INTERNAL_ERROR",
    "REASON_NON_ZERO_EXIT_CODE",
    "REMOTE_COMMAND_PROTOCOLS",
    "RESIZE_CHANNEL",
    "SPDY_PORT_FORWARD_PROTOCOLS",
    "SPDY_REMOTE_COMMAND_PROTOCOLS",
    "STATUS_FAILURE",
    "STATUS_SUCCESS",
    "STDERR_CHANNEL",
    "STDIN_CHANNEL",
    "STDOUT_CHANNEL",
    "STREAM_PROTOCOL_V1",
    "STREAM_PROTOCOL_V2",
    "STREAM_PROTOCOL_V3",
    "STREAM_PROTOCOL_V4",
    "STREAM_PROTOCOL_V5",
    "HandshakeError",
    "Headers",
    "PortForwardOptionsError",
    "PortForwardPair",
    "PortForwardPairError",
    "PortForwardPairs",
    "PortForwardStream",
    "RemoteCommandVersion",
    "ResizeDecoder",
    "SpdyNegotiation",
    "Status",
    "StatusCause",
    "StreamHeaderError",
    "StreamType",
    "StreamingError",
    "TerminalSize",
    "classify_remote_command_stream",
    "exec_exit_error",
    "expected_remote_command_streams",
    "header_value",
    "header_values",
    "is_upgrade_request",
    "is_websocket_request",
    "negotiate",
    "negotiate_spdy",
    "parse_port_forward_stream",
    "parse_ports_query",
    "parse_protocol_header",
    "parse_websocket_protocols",
    "port_forward_error_message",
    "port_forward_timeout_message",
    "remote_command_version",
    "status_exit_code",
    "status_failure",
    "status_internal_error",
    "status_success",
]
