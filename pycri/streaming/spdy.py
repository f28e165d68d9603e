"""SPDY/3.1 framing and connection state, sans-IO, as spoken by kubectl and crictl through spdystream.

The caller owns the socket.  It hands every received chunk to
:meth:`Connection.receive_data` (any split of the byte stream is fine, down to
one byte at a time), acts on the returned events, calls the sending methods,
and writes whatever :meth:`Connection.data_to_send` returns.  Nothing here
blocks, reads a clock or does I/O; the HTTP/1.1 ``Upgrade: SPDY/3.1`` exchange
happens before this module is involved (:data:`UPGRADE_PROTOCOL` is the token).

Layers, each usable on its own:

* :class:`Headers` and :func:`encode_header_block` / :func:`decode_header_block`:
  the uncompressed header block, a 32-bit count then 32-bit-length-prefixed
  name/value strings.  Names are lower-case; several values of one name travel
  as one value joined by NUL and come back as separate pairs.  Text is latin-1
  so every byte round-trips.
* :class:`FrameEncoder` / :class:`FrameDecoder`: frames <-> bytes.  Control
  frames carry version 3.  Header blocks are zlib-compressed with the SPDY/3
  dictionary (:data:`HEADER_DICTIONARY`); each direction has one compression
  context for the life of the connection, and the encoder ends every block with
  ``Z_SYNC_FLUSH``, as Go's ``zlib.Writer.Flush`` does in spdystream.  The
  decoder caps control frames (:data:`DEFAULT_MAX_CONTROL_FRAME_SIZE`) before
  buffering them and decompresses with ``max_length`` so a zlib bomb cannot
  allocate more than :data:`DEFAULT_MAX_HEADER_BLOCK_SIZE`.  DATA frames are
  delivered whole; their 24-bit length bounds them at 16 MiB.
* :class:`Connection`: stream ids and states, flow-control windows, PING
  replies, GOAWAY, and the events below.  ``Connection()`` is the server side
  (opens even stream ids, even ping ids); ``Connection(client=True)`` the
  client side (odd ids).

Connection API (h2-like)::

    receive_data(data) -> list[Event]          data_to_send() -> bytes
    open_stream(headers, *, fin, unidirectional, associated_stream_id, priority) -> stream id   (SYN_STREAM)
    reply(stream_id, headers, *, fin)          (SYN_REPLY; required before data on a peer's stream)
    send_headers(stream_id, headers, *, fin)   (HEADERS)
    send_data(stream_id, data, *, fin)         end_stream(stream_id)   (DATA, FIN on an empty one)
    reset_stream(stream_id, status=CANCEL)     (RST_STREAM)
    ping(ping_id=None) -> ping id              goaway(status=OK)
    send_settings({SettingsId.INITIAL_WINDOW_SIZE: n})
    update_window(stream_id, delta)            acknowledge_received_data(stream_id, n)   (WINDOW_UPDATE; 0 = session)
    send_window(stream_id) -> int              stream_state(stream_id) -> StreamState

Events (frozen dataclasses, subclasses of :class:`Event`): :class:`StreamOpened`,
:class:`StreamReplied`, :class:`HeadersReceived`, :class:`DataReceived`,
:class:`StreamEnded`, :class:`StreamReset`, :class:`PingReceived` (already
answered), :class:`PingAcknowledged`, :class:`GoAwayReceived`,
:class:`SettingsReceived`, :class:`WindowUpdated`.  A FIN from the peer is
reported only as a :class:`StreamEnded` right after the event of the frame
that carried it (an empty DATA frame with FIN gives just the StreamEnded); no
other event has a ``fin`` field.  Only the peer's own actions produce events,
plus :class:`StreamReset` with ``remote=False`` when this side resets a stream
because the peer misbehaved on it.

Errors: :class:`ProtocolError` (the peer broke the session: corrupt or
oversized header block, bad zlib stream, unsupported version, malformed
frame, DATA on stream 0).  ``receive_data`` then queues a GOAWAY with
PROTOCOL_ERROR, marks the connection terminated, forgets every stream and
raises; the driver writes ``data_to_send()`` and closes the socket.  Later
``receive_data`` calls return no events and sending methods raise
:class:`LocalProtocolError`, which also covers every misuse of the API (data
on a closed stream is its subclass :class:`StreamClosedError`).
:class:`FlowControlError` means ``send_data`` would exceed an enforced window:
nothing was sent; wait for :class:`WindowUpdated` and retry with at most
``send_window()`` bytes.  Stream-level faults of the peer never raise: DATA or
HEADERS after the peer's FIN gets RST_STREAM STREAM_ALREADY_CLOSED, on a
stream never opened INVALID_STREAM, and frames on streams this side reset are
ignored (they may have been in flight), all as the SPDY/3 draft says; a
SYN_STREAM with a stale or wrong-parity id gets RST_STREAM PROTOCOL_ERROR, as
spdystream answers it (the draft would end the session).  Unknown or late
SYN_REPLY, RST_STREAM and WINDOW_UPDATE frames and PINGs with id 0 are ignored.

What the real peer does (github.com/moby/spdystream, which k8s.io/apimachinery
``pkg/util/httpstream/spdy`` wraps; files as of its master branch):

* It implements SPDY/3 framing only, although the upgrade token says 3.1: no
  flow control at all.  No code path builds a WINDOW_UPDATE or SETTINGS frame
  (``spdy/write.go`` can serialise them, nothing calls it), and received ones
  fall into the ``default:`` case of ``Connection.Serve`` and then
  ``frameHandler``, where "unhandled frame type" is only a debug message
  (``connection.go``).  ``Stream.WriteData`` writes each ``Write`` as a single
  DATA frame whatever any window says (``stream.go``).
* PING (``connection.go`` ``handlePingFrame``): a ping whose id parity differs
  from its own (server even from 2, client odd from 1, ``NewConnection``) is
  echoed; one of its own parity completes the waiting ``Ping()``.  client-go
  pings every 5 s (``transport/spdy/spdy.go`` ``PingPeriod``, sent by
  apimachinery's ``connection.sendPings``).
* GOAWAY: receiving one makes ``Serve`` leave its read loop at once and shut
  down when its streams are gone, so it reads nothing sent after our GOAWAY.
  Its ``Close`` sends GOAWAY(OK) with the last stream id it accepted.  After it
  has gone away, new SYN_STREAMs are silently ignored (``checkStreamFrame``).
* It is lenient about streams: a SYN_STREAM with a stale id gets RST_STREAM
  PROTOCOL_ERROR rather than a session error (``checkStreamFrame``); DATA,
  SYN_REPLY, HEADERS and RST_STREAM for unknown streams are dropped; and DATA
  or HEADERS on a stream it has not yet replied to / had no reply for is
  dropped too (``handleDataFrame``), so :meth:`Connection.send_data` refuses to
  send on a peer's stream before :meth:`Connection.reply`.
* It is strict about framing, and any framer error ends its whole connection
  (``Serve`` breaks on a ``ReadFrame`` error; checks in ``spdy/read.go``): a
  non-lower-case or repeated header name, the headers Connection, Host,
  Keep-Alive, Proxy-Connection or Transfer-Encoding, stream id 0 in DATA,
  SYN_STREAM, SYN_REPLY, HEADERS or RST_STREAM, RST_STREAM status 0, PING id 0
  or PING flags, GOAWAY or WINDOW_UPDATE of a length other than 8, and any
  control frame type it does not know.  The encoder here never produces these
  (names are lower-cased and merged, those headers are refused).

Flow-control policy, following that peer:

* Windows are always tracked (64 KiB initial per stream and, per SPDY/3.1,
  for the session as stream 0; SETTINGS_INITIAL_WINDOW_SIZE moves every open
  stream's window by the difference, never the session's).
* Sending: with ``flow_control=FlowControl.AUTO`` (the default) windows are
  enforced only once the peer shows it does flow control, by sending a
  WINDOW_UPDATE or a SETTINGS_INITIAL_WINDOW_SIZE; spdystream never does, so
  against it this side never stalls after 64 KiB.  A strict SPDY/3.1 peer is
  respected from its first such frame on (windows count everything sent
  before, so an overrun is paid back); one that stays silent while this side
  sends more than 64 KiB needs ``FlowControl.ON``, which enforces from the
  start (``FlowControl.OFF`` never does).  Enforcement is h2-style:
  ``send_data`` raises :class:`FlowControlError` rather than buffering.
* Receiving: spdystream ignores our windows, so received DATA beyond them is
  accepted (the driver's backpressure is to stop reading the socket) unless
  ``FlowControl.ON``, where it resets the stream with FLOW_CONTROL_ERROR or, for
  the session window, is a :class:`ProtocolError`.
  :meth:`Connection.acknowledge_received_data` sends WINDOW_UPDATEs for the
  stream and the session once half a window is consumed; spdystream ignores
  them, a strict peer needs them.  DATA that is dropped (unknown or closed
  stream) is acknowledged for the session automatically.

Not implemented: CREDENTIAL frames (ignored on receipt, like any unknown
control frame), server push semantics beyond reporting ``associated_stream_id``,
SETTINGS persistence, priorities beyond passing them through, and a cap on
concurrent streams (the driver can refuse streams with ``reset_stream``).
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeAlias

UPGRADE_PROTOCOL = "SPDY/3.1"
"""The HTTP/1.1 ``Upgrade`` token Kubernetes negotiates (apimachinery ``httpstream/spdy.HeaderSpdy31``)."""

SPDY_VERSION = 3
DEFAULT_INITIAL_WINDOW_SIZE = 65536
MAX_WINDOW_SIZE = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
MAX_FRAME_LENGTH = 2**24 - 1
"""The 24-bit length field: the largest DATA payload or control frame body."""
DEFAULT_MAX_CONTROL_FRAME_SIZE = 1 << 20
DEFAULT_MAX_HEADER_BLOCK_SIZE = 1 << 20
MAX_OUTBOUND_HEADER_BLOCK_SIZE = 1 << 22
"""Largest uncompressed header block this side sends: its compressed form then surely fits in one frame."""

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01
SETTINGS_FLAG_PERSIST_VALUE = 0x01
SETTINGS_FLAG_PERSISTED = 0x02

_CLOSED_STREAM_MEMORY = 4096

# The SPDY/3 header compression dictionary, byte for byte as in spdystream's spdy/dictionary.go
# (and the SPDY/3 draft, section 2.6.10.1): 1423 bytes, Adler-32 0xe3c6a7c2.
HEADER_DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06de"
    b"lete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-"
    b"encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00"
    b"\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00"
    b"\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00"
    b"\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent"
    b"-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00"
    b"\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11i"
    b"f-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-s"
    b"ince\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00"
    b"\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range"
    b"\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00"
    b"\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent"
    b"\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00"
    b"\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07ver"
    b"sion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00"
    b"\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840"
    b"9410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanent"
    b"ly400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemen"
    b"ted503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, T"
    b"hu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xh"
    b"tml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-88"
    b"59-1,utf-,*,enq=0."
)

# Connection-specific headers are invalid in SPDY; spdystream drops the whole connection on them (spdy/read.go).
FORBIDDEN_HEADERS = frozenset({"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding"})


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(enum.IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class SettingsId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


class FlowControl(enum.Enum):
    """When send windows (and, for ON, receive windows) are enforced; see the module docstring."""

    OFF = "off"
    AUTO = "auto"
    ON = "on"


class StreamState(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


# --- errors ---------------------------------------------------------------------------------------


class SpdyError(Exception):
    """Base class of this module's errors."""


class ProtocolError(SpdyError):
    """The peer broke the session; a GOAWAY with ``status`` is queued and the connection is terminated."""

    def __init__(self, message: str, status: GoAwayStatus = GoAwayStatus.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.status = status


class LocalProtocolError(SpdyError):
    """This side asked for something the protocol or the connection's state does not allow."""


class StreamClosedError(LocalProtocolError):
    """The stream is unknown, closed, or closed in the direction the call needs."""

    def __init__(self, stream_id: int, message: str | None = None) -> None:
        super().__init__(message or f"stream {stream_id} is not open for that")
        self.stream_id = stream_id


class FlowControlError(SpdyError):
    """``send_data`` would exceed the enforced send window; nothing was sent."""

    def __init__(self, stream_id: int, length: int, window: int) -> None:
        super().__init__(f"{length} bytes exceed the send window of {window} on stream {stream_id}")
        self.stream_id = stream_id
        self.length = length
        self.window = window


# --- header blocks --------------------------------------------------------------------------------


class Headers(tuple[tuple[str, str], ...]):
    """An immutable list of ``(name, value)`` pairs with lower-case names; equal to the plain tuple."""

    __slots__ = ()

    @classmethod
    def of(cls, headers: HeadersLike) -> Headers:
        """Headers from a mapping or pairs, names lower-cased, order kept."""
        if isinstance(headers, Headers):
            return headers
        items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
        return cls((name.lower(), value) for name, value in items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case), or ``default``."""
        name = name.lower()
        for key, value in self:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self if key == name]


HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
NO_HEADERS = Headers()

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")


def encode_header_block(headers: HeadersLike) -> bytes:
    """The uncompressed SPDY/3 header block: names lower-cased, repeated names merged with NUL in first-seen order."""
    merged: dict[str, list[str]] = {}
    for name, value in Headers.of(headers):
        if not name:
            raise LocalProtocolError("empty header name")
        if "\0" in name or "\0" in value:
            raise LocalProtocolError(f"NUL in header {name!r}")
        merged.setdefault(name, []).append(value)
    parts = [_U32.pack(len(merged))]
    try:
        for name, values in merged.items():
            raw_name = name.encode("latin-1")
            raw_value = "\0".join(values).encode("latin-1")
            parts += (_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value)
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"header text must be latin-1: {exc}") from None
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed header block; NUL-joined values become separate pairs.  Raises ProtocolError."""
    size = len(block)
    if size < 4:
        raise ProtocolError("truncated header block")
    (count,) = _U32.unpack_from(block, 0)
    if count > (size - 4) // 8:
        raise ProtocolError(f"header block claims {count} headers in {size} bytes")
    pos = 4
    items: list[tuple[str, str]] = []
    for _ in range(count):
        strings: list[bytes] = []
        for _part in (0, 1):
            if pos + 4 > size:
                raise ProtocolError("truncated header block")
            (length,) = _U32.unpack_from(block, pos)
            pos += 4
            if pos + length > size:
                raise ProtocolError("truncated header block")
            strings.append(block[pos : pos + length])
            pos += length
        name = strings[0].decode("latin-1").lower()
        items.extend((name, value.decode("latin-1")) for value in strings[1].split(b"\0"))
    if pos != size:
        raise ProtocolError(f"{size - pos} stray bytes after the header block")
    return Headers(items)


# --- frames ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """Base class of the frames."""


@dataclass(frozen=True)
class DataFrame(Frame):
    stream_id: int
    data: bytes = b""
    fin: bool = False


@dataclass(frozen=True)
class SynStreamFrame(Frame):
    stream_id: int
    headers: Headers = NO_HEADERS
    associated_stream_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReplyFrame(Frame):
    stream_id: int
    headers: Headers = NO_HEADERS
    fin: bool = False


@dataclass(frozen=True)
class RstStreamFrame(Frame):
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class SettingsFrame(Frame):
    settings: tuple[Setting, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class PingFrame(Frame):
    ping_id: int


@dataclass(frozen=True)
class GoAwayFrame(Frame):
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame(Frame):
    stream_id: int
    headers: Headers = NO_HEADERS
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdateFrame(Frame):
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControlFrame(Frame):
    """A version-3 control frame of a type this module does not know (e.g. CREDENTIAL); decoded, never encoded."""

    frame_type: int
    flags: int
    payload: bytes


def _check_range(what: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise LocalProtocolError(f"{what} {value} is outside {low}..{high}")


def _control_header(frame_type: int, flags: int, length: int) -> bytes:
    return _U32x2.pack(0x80000000 | SPDY_VERSION << 16 | frame_type, flags << 24 | length)


def encode_data_frame(stream_id: int, data: bytes, *, fin: bool = False) -> bytes:
    """One DATA frame (no compression involved, so this needs no encoder)."""
    _check_range("stream id", stream_id, 1, MAX_STREAM_ID)
    _check_range("DATA length", len(data), 0, MAX_FRAME_LENGTH)
    return _U32x2.pack(stream_id, (FLAG_FIN if fin else 0) << 24 | len(data)) + data


class FrameEncoder:
    """Serialises frames; owns the outbound header compression context, so frames must be sent in encoding order."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        if len(block) > MAX_OUTBOUND_HEADER_BLOCK_SIZE:
            raise LocalProtocolError(f"header block of {len(block)} bytes is too large")
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        """The frame's bytes.  Every field is checked before the compression context advances."""
        if isinstance(frame, DataFrame):
            return encode_data_frame(frame.stream_id, frame.data, fin=frame.fin)
        if isinstance(frame, SynStreamFrame):
            _check_range("stream id", frame.stream_id, 1, MAX_STREAM_ID)
            _check_range("associated stream id", frame.associated_stream_id, 0, MAX_STREAM_ID)
            _check_range("priority", frame.priority, 0, 7)
            _check_range("slot", frame.slot, 0, 255)
            block = self._compress(frame.headers)
            flags = (FLAG_FIN if frame.fin else 0) | (FLAG_UNIDIRECTIONAL if frame.unidirectional else 0)
            return (
                _control_header(FrameType.SYN_STREAM, flags, 10 + len(block))
                + _U32x2.pack(frame.stream_id, frame.associated_stream_id)
                + bytes((frame.priority << 5, frame.slot))
                + block
            )
        if isinstance(frame, SynReplyFrame | HeadersFrame):
            _check_range("stream id", frame.stream_id, 1, MAX_STREAM_ID)
            block = self._compress(frame.headers)
            frame_type = FrameType.SYN_REPLY if isinstance(frame, SynReplyFrame) else FrameType.HEADERS
            return _control_header(frame_type, FLAG_FIN if frame.fin else 0, 4 + len(block)) + _U32.pack(frame.stream_id) + block
        if isinstance(frame, RstStreamFrame):
            _check_range("stream id", frame.stream_id, 1, MAX_STREAM_ID)
            _check_range("RST_STREAM status", frame.status, 1, 2**32 - 1)
            return _control_header(FrameType.RST_STREAM, 0, 8) + _U32x2.pack(frame.stream_id, frame.status)
        if isinstance(frame, SettingsFrame):
            body = [_U32.pack(len(frame.settings))]
            for setting in frame.settings:
                _check_range("setting id", setting.id, 0, 0xFFFFFF)
                _check_range("setting flags", setting.flags, 0, 0xFF)
                _check_range("setting value", setting.value, 0, 2**32 - 1)
                body.append(_U32x2.pack(setting.flags << 24 | setting.id, setting.value))
            payload = b"".join(body)
            flags = FLAG_SETTINGS_CLEAR_SETTINGS if frame.clear else 0
            return _control_header(FrameType.SETTINGS, flags, len(payload)) + payload
        if isinstance(frame, PingFrame):
            _check_range("ping id", frame.ping_id, 1, 2**32 - 1)
            return _control_header(FrameType.PING, 0, 4) + _U32.pack(frame.ping_id)
        if isinstance(frame, GoAwayFrame):
            _check_range("last good stream id", frame.last_good_stream_id, 0, MAX_STREAM_ID)
            _check_range("GOAWAY status", frame.status, 0, 2**32 - 1)
            return _control_header(FrameType.GOAWAY, 0, 8) + _U32x2.pack(frame.last_good_stream_id, frame.status)
        if isinstance(frame, WindowUpdateFrame):
            _check_range("stream id", frame.stream_id, 0, MAX_STREAM_ID)
            _check_range("window delta", frame.delta, 1, MAX_WINDOW_SIZE)
            return _control_header(FrameType.WINDOW_UPDATE, 0, 8) + _U32x2.pack(frame.stream_id, frame.delta)
        raise LocalProtocolError(f"cannot encode {type(frame).__name__}")


class FrameDecoder:
    """Parses frames out of a byte stream; owns the inbound header decompression context."""

    def __init__(
        self,
        *,
        max_control_frame_size: int = DEFAULT_MAX_CONTROL_FRAME_SIZE,
        max_header_block_size: int = DEFAULT_MAX_HEADER_BLOCK_SIZE,
    ) -> None:
        self.max_control_frame_size = max_control_frame_size
        self.max_header_block_size = max_header_block_size
        self._buffer = bytearray()
        self._decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a whole frame."""
        return len(self._buffer)

    def next_frame(self) -> Frame | None:
        """The next whole frame, or None until more bytes arrive.  Raises ProtocolError."""
        buffer = self._buffer
        if len(buffer) < 8:
            return None
        word, flags_length = _U32x2.unpack_from(buffer, 0)
        flags, length = flags_length >> 24, flags_length & 0xFFFFFF
        control = bool(word & 0x80000000)
        if control:
            version = word >> 16 & 0x7FFF
            if version != SPDY_VERSION:
                raise ProtocolError(f"unsupported SPDY version {version}")
            if length > self.max_control_frame_size:
                raise ProtocolError(f"control frame of {length} bytes exceeds {self.max_control_frame_size}")
        if len(buffer) < 8 + length:
            return None
        payload = bytes(buffer[8 : 8 + length])
        del buffer[: 8 + length]
        if control:
            return self._control_frame(word & 0xFFFF, flags, payload)
        stream_id = word & 0x7FFFFFFF
        if stream_id == 0:
            raise ProtocolError("DATA frame on stream 0")
        return DataFrame(stream_id, payload, fin=bool(flags & FLAG_FIN))

    def _headers(self, compressed: bytes) -> Headers:
        limit = self.max_header_block_size
        try:
            block = self._decompressor.decompress(compressed, limit + 1)
        except zlib.error as exc:
            raise ProtocolError(f"corrupt header block: {exc}") from None
        if len(block) > limit or self._decompressor.unconsumed_tail:
            raise ProtocolError(f"header block decompresses to more than {limit} bytes")
        if self._decompressor.eof:
            raise ProtocolError("the peer ended its header compression stream")
        return decode_header_block(block)

    def _control_frame(self, frame_type: int, flags: int, payload: bytes) -> Frame:
        length = len(payload)

        def need(size: int, exact: bool = True) -> None:
            if length < size or (exact and length != size):
                raise ProtocolError(f"{FrameType(frame_type).name} frame of bad length {length}")

        def stream_id_at(offset: int, *, allow_zero: bool = False) -> int:
            stream_id: int = _U32.unpack_from(payload, offset)[0] & 0x7FFFFFFF
            if stream_id == 0 and not allow_zero:
                raise ProtocolError(f"{FrameType(frame_type).name} frame on stream 0")
            return stream_id

        fin = bool(flags & FLAG_FIN)
        if frame_type == FrameType.SYN_STREAM:
            need(10, exact=False)
            headers = self._headers(payload[10:])
            return SynStreamFrame(
                stream_id=stream_id_at(0),
                headers=headers,
                associated_stream_id=stream_id_at(4, allow_zero=True),
                priority=payload[8] >> 5,
                slot=payload[9],
                fin=fin,
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if frame_type in (FrameType.SYN_REPLY, FrameType.HEADERS):
            need(4, exact=False)
            headers = self._headers(payload[4:])
            cls = SynReplyFrame if frame_type == FrameType.SYN_REPLY else HeadersFrame
            return cls(stream_id_at(0), headers, fin=fin)
        if frame_type == FrameType.RST_STREAM:
            need(8)
            return RstStreamFrame(stream_id_at(0), _U32.unpack_from(payload, 4)[0])
        if frame_type == FrameType.SETTINGS:
            need(4, exact=False)
            (count,) = _U32.unpack_from(payload, 0)
            if length != 4 + 8 * count:
                raise ProtocolError(f"SETTINGS frame of {length} bytes cannot hold {count} settings")
            settings = []
            for offset in range(4, length, 8):
                flags_id, value = _U32x2.unpack_from(payload, offset)
                settings.append(Setting(flags_id & 0xFFFFFF, value, flags_id >> 24))
            return SettingsFrame(tuple(settings), clear=bool(flags & FLAG_SETTINGS_CLEAR_SETTINGS))
        if frame_type == FrameType.PING:
            need(4)
            return PingFrame(_U32.unpack_from(payload, 0)[0])
        if frame_type == FrameType.GOAWAY:
            need(8)
            return GoAwayFrame(stream_id_at(0, allow_zero=True), _U32.unpack_from(payload, 4)[0])
        if frame_type == FrameType.WINDOW_UPDATE:
            need(8)
            return WindowUpdateFrame(stream_id_at(0, allow_zero=True), _U32.unpack_from(payload, 4)[0] & 0x7FFFFFFF)
        return UnknownControlFrame(frame_type, flags, payload)


# --- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base class of the events ``Connection.receive_data`` returns."""


@dataclass(frozen=True)
class StreamOpened(Event):
    """The peer opened a stream (SYN_STREAM).  Unless ``unidirectional``, answer with ``reply`` or ``reset_stream``."""

    stream_id: int
    headers: Headers
    unidirectional: bool = False
    associated_stream_id: int = 0
    priority: int = 0


@dataclass(frozen=True)
class StreamReplied(Event):
    """The peer accepted a stream this side opened (SYN_REPLY)."""

    stream_id: int
    headers: Headers


@dataclass(frozen=True)
class HeadersReceived(Event):
    stream_id: int
    headers: Headers


@dataclass(frozen=True)
class DataReceived(Event):
    """One DATA frame's payload; call ``acknowledge_received_data`` once it is consumed."""

    stream_id: int
    data: bytes


@dataclass(frozen=True)
class StreamEnded(Event):
    """The peer sent FIN: it will send nothing more on the stream (half-closed remote, or closed)."""

    stream_id: int


@dataclass(frozen=True)
class StreamReset(Event):
    """The stream is closed by RST_STREAM: the peer's (``remote``) or this side's answer to a peer fault."""

    stream_id: int
    status: int
    remote: bool = True


@dataclass(frozen=True)
class PingReceived(Event):
    """The peer pinged; the echo is already queued in ``data_to_send``."""

    ping_id: int


@dataclass(frozen=True)
class PingAcknowledged(Event):
    """The peer echoed a ping this side sent."""

    ping_id: int


@dataclass(frozen=True)
class GoAwayReceived(Event):
    """The peer will accept no new streams; ``open_stream`` now raises."""

    last_good_stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsReceived(Event):
    """The peer's SETTINGS, id -> value (SettingsId for the known ids); INITIAL_WINDOW_SIZE is already applied."""

    settings: dict[int, int]


@dataclass(frozen=True)
class WindowUpdated(Event):
    """The peer opened a send window by ``delta`` (stream 0: the session window)."""

    stream_id: int
    delta: int


# --- connection -----------------------------------------------------------------------------------


class _CloseReason(enum.Enum):
    FINISHED = "finished"
    RESET_LOCAL = "reset here"
    RESET_REMOTE = "reset by the peer"


class _Stream:
    __slots__ = ("local", "local_closed", "recv_window", "remote_closed", "replied", "send_window", "stream_id", "unacked")

    def __init__(self, stream_id: int, *, local: bool, send_window: int, recv_window: int) -> None:
        self.stream_id = stream_id
        self.local = local
        self.replied = False
        self.local_closed = False
        self.remote_closed = False
        self.send_window = send_window
        self.recv_window = recv_window
        self.unacked = 0


def _known(enum_type: type[enum.IntEnum], value: int) -> int:
    try:
        return enum_type(value)
    except ValueError:
        return value


class Connection:
    """One SPDY session; see the module docstring for the API, events and policies."""

    def __init__(
        self,
        *,
        client: bool = False,
        flow_control: FlowControl = FlowControl.AUTO,
        max_control_frame_size: int = DEFAULT_MAX_CONTROL_FRAME_SIZE,
        max_header_block_size: int = DEFAULT_MAX_HEADER_BLOCK_SIZE,
    ) -> None:
        self.client = client
        self.flow_control = flow_control
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder(max_control_frame_size=max_control_frame_size, max_header_block_size=max_header_block_size)
        self._outbound = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._closed: dict[int, _CloseReason] = {}
        self._parity = 1 if client else 0
        self._next_stream_id = 1 if client else 2
        self._last_peer_stream_id = 0
        self._next_ping_id = 1 if client else 2
        self._pings: set[int] = set()
        self._peer_initial_window = DEFAULT_INITIAL_WINDOW_SIZE
        self._local_initial_window = DEFAULT_INITIAL_WINDOW_SIZE
        self._session_send_window = DEFAULT_INITIAL_WINDOW_SIZE
        self._session_recv_window = DEFAULT_INITIAL_WINDOW_SIZE
        self._session_unacked = 0
        self._peer_does_flow_control = False
        self._goaway_sent = False
        self._goaway_received = False
        self._terminated = False

    # -- state --

    @property
    def flow_control_active(self) -> bool:
        """Whether send windows are enforced now."""
        if self.flow_control is FlowControl.AUTO:
            return self._peer_does_flow_control
        return self.flow_control is FlowControl.ON

    @property
    def goaway_sent(self) -> bool:
        return self._goaway_sent

    @property
    def goaway_received(self) -> bool:
        return self._goaway_received

    @property
    def terminated(self) -> bool:
        """True after a ProtocolError: the connection is unusable."""
        return self._terminated

    @property
    def last_peer_stream_id(self) -> int:
        """The highest stream id the peer opened that this side accepted (GOAWAY's last-good id)."""
        return self._last_peer_stream_id

    @property
    def open_stream_ids(self) -> list[int]:
        return sorted(self._streams)

    def stream_state(self, stream_id: int) -> StreamState:
        stream = self._streams.get(stream_id)
        if stream is not None:
            if stream.local_closed:
                return StreamState.HALF_CLOSED_LOCAL
            return StreamState.HALF_CLOSED_REMOTE if stream.remote_closed else StreamState.OPEN
        if stream_id in self._closed or self._was_used(stream_id):
            return StreamState.CLOSED
        return StreamState.IDLE

    def send_window(self, stream_id: int) -> int:
        """How many bytes ``send_data`` accepts now on the stream (0: the session); MAX_WINDOW_SIZE if not enforced."""
        if stream_id == 0:
            window = self._session_send_window
        else:
            stream = self._streams.get(stream_id)
            if stream is None or stream.local_closed:
                raise StreamClosedError(stream_id)
            window = min(stream.send_window, self._session_send_window)
        return max(0, window) if self.flow_control_active else MAX_WINDOW_SIZE

    def data_to_send(self) -> bytes:
        data = bytes(self._outbound)
        self._outbound.clear()
        return data

    # -- receiving --

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed received bytes; returns the events of every frame they complete.  Raises ProtocolError."""
        if self._terminated:
            return []
        self._decoder.receive_data(data)
        events: list[Event] = []
        try:
            while (frame := self._decoder.next_frame()) is not None:
                self._handle(frame, events)
        except ProtocolError as exc:
            self._terminate(exc.status)
            raise
        return events

    def _handle(self, frame: Frame, events: list[Event]) -> None:
        if isinstance(frame, DataFrame):
            self._on_data(frame, events)
        elif isinstance(frame, SynStreamFrame):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, SynReplyFrame):
            self._on_syn_reply(frame, events)
        elif isinstance(frame, HeadersFrame):
            stream = self._receiving_stream(frame.stream_id, events)
            if stream is not None:
                events.append(HeadersReceived(frame.stream_id, frame.headers))
                if frame.fin:
                    self._remote_fin(stream, events)
        elif isinstance(frame, RstStreamFrame):
            if frame.stream_id in self._streams:
                self._forget(frame.stream_id, _CloseReason.RESET_REMOTE)
                events.append(StreamReset(frame.stream_id, _known(RstStatus, frame.status), remote=True))
        elif isinstance(frame, SettingsFrame):
            self._on_settings(frame, events)
        elif isinstance(frame, PingFrame):
            if frame.ping_id == 0:
                pass  # invalid, and unanswerable: spdystream would drop the connection on our echo
            elif frame.ping_id % 2 != self._parity:
                self._send(PingFrame(frame.ping_id))
                events.append(PingReceived(frame.ping_id))
            elif frame.ping_id in self._pings:
                self._pings.discard(frame.ping_id)
                events.append(PingAcknowledged(frame.ping_id))
        elif isinstance(frame, GoAwayFrame):
            self._goaway_received = True
            events.append(GoAwayReceived(frame.last_good_stream_id, _known(GoAwayStatus, frame.status)))
        elif isinstance(frame, WindowUpdateFrame):
            self._on_window_update(frame, events)
        # UnknownControlFrame (e.g. CREDENTIAL): ignored, as the SPDY/3 draft requires.

    def _on_syn_stream(self, frame: SynStreamFrame, events: list[Event]) -> None:
        stream_id = frame.stream_id
        if self._goaway_sent:
            return  # SPDY/3 2.6.6: after GOAWAY, new streams are ignored (spdystream does the same).
        if stream_id % 2 == self._parity or stream_id <= self._last_peer_stream_id:
            # spdystream answers a stale id with RST_STREAM PROTOCOL_ERROR, not a session error; so does this side.
            if stream_id in self._streams:
                self._reset(stream_id, RstStatus.PROTOCOL_ERROR, events)
            else:
                self._send(RstStreamFrame(stream_id, RstStatus.PROTOCOL_ERROR))
            return
        self._last_peer_stream_id = stream_id
        stream = _Stream(stream_id, local=False, send_window=self._peer_initial_window, recv_window=self._local_initial_window)
        stream.local_closed = frame.unidirectional
        self._streams[stream_id] = stream
        events.append(
            StreamOpened(
                stream_id,
                frame.headers,
                unidirectional=frame.unidirectional,
                associated_stream_id=frame.associated_stream_id,
                priority=frame.priority,
            )
        )
        if frame.fin:
            self._remote_fin(stream, events)

    def _on_syn_reply(self, frame: SynReplyFrame, events: list[Event]) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # a reply for a stream already gone; spdystream ignores these too
        if not stream.local:
            self._reset(frame.stream_id, RstStatus.PROTOCOL_ERROR, events)
        elif stream.replied:
            self._reset(frame.stream_id, RstStatus.STREAM_IN_USE, events)
        else:
            stream.replied = True
            events.append(StreamReplied(frame.stream_id, frame.headers))
            if frame.fin and not stream.remote_closed:
                self._remote_fin(stream, events)

    def _on_data(self, frame: DataFrame, events: list[Event]) -> None:
        length = len(frame.data)
        self._session_recv_window -= length
        if self.flow_control is FlowControl.ON and self._session_recv_window < 0:
            raise ProtocolError("the peer overran the session receive window")
        stream = self._receiving_stream(frame.stream_id, events)
        if stream is None:
            self._acknowledge_session(length)
            return
        stream.recv_window -= length
        if self.flow_control is FlowControl.ON and stream.recv_window < 0:
            self._reset(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
            self._acknowledge_session(length)
            return
        if frame.data:
            events.append(DataReceived(frame.stream_id, frame.data))
        if frame.fin:
            self._remote_fin(stream, events)

    def _on_settings(self, frame: SettingsFrame, events: list[Event]) -> None:
        settings = {_known(SettingsId, setting.id): setting.value for setting in frame.settings}
        new_window = settings.get(SettingsId.INITIAL_WINDOW_SIZE)
        if new_window is not None and new_window <= MAX_WINDOW_SIZE:
            self._peer_does_flow_control = True
            delta = new_window - self._peer_initial_window
            self._peer_initial_window = new_window
            for stream in list(self._streams.values()):
                stream.send_window += delta
                if stream.send_window > MAX_WINDOW_SIZE:
                    self._reset(stream.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
        events.append(SettingsReceived(settings))

    def _on_window_update(self, frame: WindowUpdateFrame, events: list[Event]) -> None:
        self._peer_does_flow_control = True
        if frame.delta == 0:
            return
        if frame.stream_id == 0:
            self._session_send_window += frame.delta
            if self._session_send_window > MAX_WINDOW_SIZE:
                raise ProtocolError("WINDOW_UPDATE overflows the session window")
            events.append(WindowUpdated(0, frame.delta))
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.local_closed:
            return  # may cross our FIN or RST on the wire
        stream.send_window += frame.delta
        if stream.send_window > MAX_WINDOW_SIZE:
            self._reset(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR, events)
            return
        events.append(WindowUpdated(frame.stream_id, frame.delta))

    def _receiving_stream(self, stream_id: int, events: list[Event]) -> _Stream | None:
        """The stream a DATA or HEADERS frame may arrive on, or None after answering as SPDY/3 2.2.2 says."""
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            return stream
        if stream is not None:
            self._reset(stream_id, RstStatus.STREAM_ALREADY_CLOSED, events)
            return None
        reason = self._closed.get(stream_id)
        if reason is _CloseReason.RESET_LOCAL or reason is _CloseReason.RESET_REMOTE:
            return None  # in flight when the stream was reset: ignore
        if reason is _CloseReason.FINISHED or self._was_used(stream_id):
            self._send(RstStreamFrame(stream_id, RstStatus.STREAM_ALREADY_CLOSED))
        elif not (self._goaway_sent and stream_id % 2 != self._parity):
            self._send(RstStreamFrame(stream_id, RstStatus.INVALID_STREAM))
        return None

    # -- sending --

    def open_stream(
        self,
        headers: HeadersLike,
        *,
        fin: bool = False,
        unidirectional: bool = False,
        associated_stream_id: int = 0,
        priority: int = 0,
    ) -> int:
        """Send SYN_STREAM on the next free stream id and return that id."""
        self._check_alive()
        if self._goaway_received:
            raise LocalProtocolError("the peer sent GOAWAY: no new streams")
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise LocalProtocolError("stream ids are exhausted")
        self._send(
            SynStreamFrame(
                stream_id,
                _outbound_headers(headers),
                associated_stream_id=associated_stream_id,
                priority=priority,
                fin=fin,
                unidirectional=unidirectional,
            )
        )
        self._next_stream_id += 2
        stream = _Stream(stream_id, local=True, send_window=self._peer_initial_window, recv_window=self._local_initial_window)
        stream.local_closed = fin
        stream.remote_closed = unidirectional
        self._streams[stream_id] = stream
        if fin and unidirectional:
            self._forget(stream_id, _CloseReason.FINISHED)
        return stream_id

    def reply(self, stream_id: int, headers: HeadersLike, *, fin: bool = False) -> None:
        """Accept a stream the peer opened (SYN_REPLY)."""
        stream = self._sending_stream(stream_id)
        if stream.local:
            raise LocalProtocolError(f"stream {stream_id} was opened here: the peer replies, not us")
        if stream.replied:
            raise LocalProtocolError(f"stream {stream_id} is already replied to")
        self._send(SynReplyFrame(stream_id, _outbound_headers(headers), fin=fin))
        stream.replied = True
        if fin:
            self._local_fin(stream)

    def send_headers(self, stream_id: int, headers: HeadersLike, *, fin: bool = False) -> None:
        stream = self._sending_stream(stream_id, need_reply=True)
        self._send(HeadersFrame(stream_id, _outbound_headers(headers), fin=fin))
        if fin:
            self._local_fin(stream)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Queue DATA (split into frames of at most MAX_FRAME_LENGTH).  Raises FlowControlError past an enforced window."""
        stream = self._sending_stream(stream_id, need_reply=True)
        length = len(data)
        if self.flow_control_active:
            window = self.send_window(stream_id)
            if length > window:
                raise FlowControlError(stream_id, length, window)
        if length == 0:
            self._outbound += encode_data_frame(stream_id, b"", fin=fin)
        for offset in range(0, length, MAX_FRAME_LENGTH):
            chunk = bytes(data[offset : offset + MAX_FRAME_LENGTH])
            self._outbound += encode_data_frame(stream_id, chunk, fin=fin and offset + len(chunk) == length)
        stream.send_window -= length
        self._session_send_window -= length
        if fin:
            self._local_fin(stream)

    def end_stream(self, stream_id: int) -> None:
        """Half-close this side: an empty DATA frame with FIN."""
        self.send_data(stream_id, b"", fin=True)

    def reset_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Close the stream both ways with RST_STREAM."""
        self._check_alive()
        if stream_id not in self._streams:
            raise StreamClosedError(stream_id)
        self._send(RstStreamFrame(stream_id, status))
        self._forget(stream_id, _CloseReason.RESET_LOCAL)

    def ping(self, ping_id: int | None = None) -> int:
        """Send PING (an id of this side's parity, allocated as spdystream does if not given) and return its id."""
        self._check_alive()
        if ping_id is None:
            ping_id = self._next_ping_id
            self._next_ping_id = ping_id - 0x7FFFFFFE if ping_id > 0x7FFFFFFE else ping_id + 2
        elif ping_id % 2 != self._parity:
            raise LocalProtocolError(f"ping id {ping_id} has the peer's parity")
        self._send(PingFrame(ping_id))
        self._pings.add(ping_id)
        return ping_id

    def goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Send GOAWAY naming the last stream the peer opened; later SYN_STREAMs are ignored."""
        self._check_alive()
        self._send(GoAwayFrame(self._last_peer_stream_id, status))
        self._goaway_sent = True

    def send_settings(self, settings: Mapping[int, int]) -> None:
        """Send SETTINGS; INITIAL_WINDOW_SIZE also moves this side's receive windows by the difference."""
        self._check_alive()
        new_window = settings.get(SettingsId.INITIAL_WINDOW_SIZE)
        if new_window is not None:
            _check_range("initial window size", new_window, 0, MAX_WINDOW_SIZE)
        self._send(SettingsFrame(tuple(Setting(key, value) for key, value in settings.items())))
        if new_window is not None:
            delta = new_window - self._local_initial_window
            self._local_initial_window = new_window
            for stream in self._streams.values():
                stream.recv_window += delta

    def update_window(self, stream_id: int, delta: int) -> None:
        """Send WINDOW_UPDATE now, growing this side's receive window (stream 0: the session)."""
        self._check_alive()
        _check_range("window delta", delta, 1, MAX_WINDOW_SIZE)
        if stream_id == 0:
            if self._session_recv_window + delta > MAX_WINDOW_SIZE:
                raise LocalProtocolError("the session window would exceed 2**31-1")
            self._send(WindowUpdateFrame(0, delta))
            self._session_recv_window += delta
            return
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            raise StreamClosedError(stream_id)
        if stream.recv_window + delta > MAX_WINDOW_SIZE:
            raise LocalProtocolError(f"the window of stream {stream_id} would exceed 2**31-1")
        self._send(WindowUpdateFrame(stream_id, delta))
        stream.recv_window += delta

    def acknowledge_received_data(self, stream_id: int, length: int) -> None:
        """The driver consumed ``length`` received bytes; WINDOW_UPDATEs go out once half a window is consumed."""
        self._check_alive()
        if length < 0:
            raise LocalProtocolError("negative length")
        self._acknowledge_session(length)
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed or length == 0:
            return
        stream.unacked += length
        if stream.unacked >= max(1, self._local_initial_window // 2):
            delta = min(stream.unacked, MAX_WINDOW_SIZE - stream.recv_window)
            stream.unacked = 0
            if delta > 0:
                self._send(WindowUpdateFrame(stream_id, delta))
                stream.recv_window += delta

    # -- internals --

    def _acknowledge_session(self, length: int) -> None:
        self._session_unacked += length
        if self._session_unacked >= DEFAULT_INITIAL_WINDOW_SIZE // 2:
            delta = min(self._session_unacked, MAX_WINDOW_SIZE - self._session_recv_window)
            self._session_unacked = 0
            if delta > 0:
                self._send(WindowUpdateFrame(0, delta))
                self._session_recv_window += delta

    def _send(self, frame: Frame) -> None:
        self._outbound += self._encoder.encode(frame)

    def _check_alive(self) -> None:
        if self._terminated:
            raise LocalProtocolError("the connection is terminated")

    def _sending_stream(self, stream_id: int, *, need_reply: bool = False) -> _Stream:
        self._check_alive()
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosedError(stream_id)
        if need_reply and not stream.local and not stream.replied:
            # spdystream drops DATA and HEADERS on a stream of its own until it has the SYN_REPLY.
            raise LocalProtocolError(f"reply() to stream {stream_id} first")
        return stream

    def _was_used(self, stream_id: int) -> bool:
        if stream_id <= 0:
            return False
        if stream_id % 2 == self._parity:
            return stream_id < self._next_stream_id
        return stream_id <= self._last_peer_stream_id

    def _local_fin(self, stream: _Stream) -> None:
        stream.local_closed = True
        if stream.remote_closed:
            self._forget(stream.stream_id, _CloseReason.FINISHED)

    def _remote_fin(self, stream: _Stream, events: list[Event]) -> None:
        stream.remote_closed = True
        events.append(StreamEnded(stream.stream_id))
        if stream.local_closed:
            self._forget(stream.stream_id, _CloseReason.FINISHED)

    def _reset(self, stream_id: int, status: RstStatus, events: list[Event]) -> None:
        self._send(RstStreamFrame(stream_id, status))
        self._forget(stream_id, _CloseReason.RESET_LOCAL)
        events.append(StreamReset(stream_id, status, remote=False))

    def _forget(self, stream_id: int, reason: _CloseReason) -> None:
        self._streams.pop(stream_id, None)
        self._closed[stream_id] = reason
        if len(self._closed) > _CLOSED_STREAM_MEMORY:
            del self._closed[next(iter(self._closed))]

    def _terminate(self, status: GoAwayStatus) -> None:
        self._outbound += self._encoder.encode(GoAwayFrame(self._last_peer_stream_id, status))
        self._goaway_sent = True
        self._terminated = True
        for stream_id in list(self._streams):
            self._forget(stream_id, _CloseReason.RESET_LOCAL)


def _outbound_headers(headers: HeadersLike) -> Headers:
    result = Headers.of(headers)
    for name, _value in result:
        if name in FORBIDDEN_HEADERS:
            raise LocalProtocolError(f"the {name!r} header is not allowed in SPDY")
    return result
