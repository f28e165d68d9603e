"""The SPDY session state machine: :class:`Connection`, its stream states and its flow-control modes."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from pycri.streaming.spdy.errors import (
    FlowControlError,
    GoAwayStatus,
    LocalProtocolError,
    ProtocolError,
    RstStatus,
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
    MAX_FRAME_LENGTH,
    MAX_STREAM_ID,
    MAX_WINDOW_SIZE,
    DataFrame,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    Setting,
    SettingsFrame,
    SettingsId,
    SynReplyFrame,
    SynStreamFrame,
    WindowUpdateFrame,
    _check_range,
    encode_data_frame,
)
from pycri.streaming.spdy.headers import FORBIDDEN_HEADERS, Headers, HeadersLike

UPGRADE_PROTOCOL = "SPDY/3.1"
"""The HTTP/1.1 ``Upgrade`` token Kubernetes negotiates (apimachinery ``httpstream/spdy.HeaderSpdy31``)."""

DEFAULT_INITIAL_WINDOW_SIZE = 65536

_CLOSED_STREAM_MEMORY = 4096


class FlowControl(enum.Enum):
    """When send windows (and, for ON, receive windows) are enforced; see the package docstring."""

    OFF = "off"
    AUTO = "auto"
    ON = "on"


class StreamState(enum.Enum):
    IDLE = "idle"
    OPEN = "open"
    HALF_CLOSED_LOCAL = "half-closed (local)"
    HALF_CLOSED_REMOTE = "half-closed (remote)"
    CLOSED = "closed"


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
    """One SPDY session; see the package docstring for the API, events and policies."""

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
