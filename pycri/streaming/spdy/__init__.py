"""SPDY/3.1 framing and connection state, sans-IO, as spoken by kubectl and crictl through spdystream.

The caller owns the socket.  It hands every received chunk to
:meth:`Connection.receive_data` (any split of the byte stream is fine, down to
one byte at a time), acts on the returned events, calls the sending methods,
and writes whatever :meth:`Connection.data_to_send` returns.  Nothing here
blocks, reads a clock or does I/O; the HTTP/1.1 ``Upgrade: SPDY/3.1`` exchange
happens before this package is involved (:data:`UPGRADE_PROTOCOL` is the token).

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

Layout: every name is imported from this package; the code lives in
``errors`` (RST_STREAM and GOAWAY status codes, exceptions), ``headers``
(header blocks and the dictionary), ``frames`` (frames, encoder, decoder,
wire constants), ``events`` and ``connection`` (:class:`Connection`, stream
states, flow-control modes), each importing only modules listed before it.
"""

from pycri.streaming.spdy.connection import (
    DEFAULT_INITIAL_WINDOW_SIZE,
    UPGRADE_PROTOCOL,
    Connection,
    FlowControl,
    StreamState,
)
from pycri.streaming.spdy.errors import (
    FlowControlError,
    GoAwayStatus,
    LocalProtocolError,
    ProtocolError,
    RstStatus,
    SpdyError,
    StreamClosedError,
)
from pycri.streaming.spdy.events import (
    DataReceived,
    Event,
    GoAwayReceived,
    HeadersReceived,
    PingAcknowledged,
    PingReceived,
    SettingsReceived,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    WindowUpdated,
)
from pycri.streaming.spdy.frames import (
    DEFAULT_MAX_CONTROL_FRAME_SIZE,
    DEFAULT_MAX_HEADER_BLOCK_SIZE,
    FLAG_FIN,
    FLAG_SETTINGS_CLEAR_SETTINGS,
    FLAG_UNIDIRECTIONAL,
    MAX_FRAME_LENGTH,
    MAX_OUTBOUND_HEADER_BLOCK_SIZE,
    MAX_STREAM_ID,
    MAX_WINDOW_SIZE,
    SETTINGS_FLAG_PERSIST_VALUE,
    SETTINGS_FLAG_PERSISTED,
    SPDY_VERSION,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    FrameType,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    Setting,
    SettingsFrame,
    SettingsId,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    encode_data_frame,
)
from pycri.streaming.spdy.headers import (
    FORBIDDEN_HEADERS,
    HEADER_DICTIONARY,
    NO_HEADERS,
    Headers,
    HeadersLike,
    decode_header_block,
    encode_header_block,
)

__all__ = [
    "DEFAULT_INITIAL_WINDOW_SIZE",
    "DEFAULT_MAX_CONTROL_FRAME_SIZE",
    "DEFAULT_MAX_HEADER_BLOCK_SIZE",
    "FLAG_FIN",
    "FLAG_SETTINGS_CLEAR_SETTINGS",
    "FLAG_UNIDIRECTIONAL",
    "FORBIDDEN_HEADERS",
    "HEADER_DICTIONARY",
    "MAX_FRAME_LENGTH",
    "MAX_OUTBOUND_HEADER_BLOCK_SIZE",
    "MAX_STREAM_ID",
    "MAX_WINDOW_SIZE",
    "NO_HEADERS",
    "SETTINGS_FLAG_PERSISTED",
    "SETTINGS_FLAG_PERSIST_VALUE",
    "SPDY_VERSION",
    "UPGRADE_PROTOCOL",
    "Connection",
    "DataFrame",
    "DataReceived",
    "Event",
    "FlowControl",
    "FlowControlError",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameType",
    "GoAwayFrame",
    "GoAwayReceived",
    "GoAwayStatus",
    "Headers",
    "HeadersFrame",
    "HeadersLike",
    "HeadersReceived",
    "LocalProtocolError",
    "PingAcknowledged",
    "PingFrame",
    "PingReceived",
    "ProtocolError",
    "RstStatus",
    "RstStreamFrame",
    "Setting",
    "SettingsFrame",
    "SettingsId",
    "SettingsReceived",
    "SpdyError",
    "StreamClosedError",
    "StreamEnded",
    "StreamOpened",
    "StreamReplied",
    "StreamReset",
    "StreamState",
    "SynReplyFrame",
    "SynStreamFrame",
    "UnknownControlFrame",
    "WindowUpdateFrame",
    "WindowUpdated",
    "decode_header_block",
    "encode_data_frame",
    "encode_header_block",
]
