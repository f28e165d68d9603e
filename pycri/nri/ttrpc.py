"""ttrpc, containerd's small RPC protocol, sans-IO: frames, and the state of a client and a server.

The caller owns the byte stream. It hands every received chunk to ``receive_data`` (any split
is fine, down to one byte at a time), acts on the returned events, and writes whatever
``data_to_send()`` returns. Nothing here blocks, reads a clock or does I/O; timeouts are the
driver's (``pycri.nri.channel``), which only tells the peer how long it will wait.

What the real peer does (github.com/containerd/ttrpc: channel.go, client.go, server.go,
services.go, PROTOCOL.md):

* A frame is a 10-byte header (data length and stream id, 32-bit big-endian; message type and
  flags, one byte each) and then the data. Types: request 1, response 2, data 3. At most
  :data:`MAX_MESSAGE_LENGTH` (4 MiB) of data: a sender refuses to send more
  (``RESOURCE_EXHAUSTED``, "message length N exceed maximum message size of 4194304"); a
  receiver reads the header of a longer frame, discards its data without keeping it, and
  answers that status on the frame's stream (a server) or fails the call on it (a client).
* A call is one stream: the client sends a ``Request`` (service, method, the serialized
  argument, ``timeout_nano`` and metadata) on a new odd stream id, each larger than the last,
  and the server answers one ``Response`` (a ``google.rpc.Status``-shaped status, absent on
  success, and the serialized result). Streaming calls (data frames, the remote-open and
  remote-closed flags) exist in ttrpc 1.2; NRI uses none, and neither side here offers them.
* The server answers an even stream id with ``INVALID_ARGUMENT`` "StreamID must be odd for
  client initiated streams", a stream id not above the last one with "StreamID cannot be
  re-used and must increment", a data frame on a stream with no call under way with "StreamID
  is no longer active", an unparsable Request with "unmarshal request error: ...", an unknown
  service with ``UNIMPLEMENTED`` "service NAME" and an unknown method with "method NAME". It
  ignores frames of other types (a response, or a type it does not know), for compatibility
  with later versions.
* The client ignores frames on streams with no call waiting. Anything but a response on a
  waiting call's stream fails that call with a protocol error ("unexpected "data" message
  received: protocol error"). A status with a non-zero code fails the call with that code.
  When the connection ends, every waiting call fails with "ttrpc: closed".

Deviation: when a handler's answer is too large to send, upstream's server drops the whole
connection; :meth:`ServerConnection.respond` answers ``RESOURCE_EXHAUSTED`` on that call instead.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from pycri.nri import ttrpc_pb2

HEADER = struct.Struct(">IIBB")
HEADER_LENGTH = HEADER.size  # 10
MAX_MESSAGE_LENGTH = 4 << 20

FLAG_REMOTE_CLOSED = 0x1
FLAG_REMOTE_OPEN = 0x2
FLAG_NO_DATA = 0x4


class MessageType(enum.IntEnum):
    REQUEST = 1
    RESPONSE = 2
    DATA = 3


def type_name(message_type: int) -> str:
    """ttrpc's name of a message type, as its errors print it."""
    try:
        return MessageType(message_type).name.lower()
    except ValueError:
        return "unknown"


class Code(enum.IntEnum):
    """gRPC status codes, which ttrpc's Status carries."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def code_name(code: int) -> str:
    try:
        return Code(code).name
    except ValueError:
        return f"Code({code})"


class RpcError(Exception):
    """A call failed with a status: the peer's, or one this side gave it (timeout, closed connection)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code_name(code)}: {message}")
        self.code = code
        self.message = message


class ConnectionClosed(RpcError):
    """The connection ended before the answer came (Go's ``ttrpc.ErrClosed``)."""

    def __init__(self, message: str = "ttrpc: closed") -> None:
        super().__init__(Code.UNAVAILABLE, message)


class DeadlineExceeded(RpcError):
    """The caller's time for a call ran out (Go's ``context.DeadlineExceeded``)."""

    def __init__(self, message: str = "context deadline exceeded") -> None:
        super().__init__(Code.DEADLINE_EXCEEDED, message)


class ProtocolViolation(RpcError):
    """The peer broke the protocol on this call (Go's ``ttrpc.ErrProtocol``)."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.INTERNAL, f"{message}: protocol error")


class OversizedMessage(RpcError):
    """A message longer than the maximum: refused before sending, or discarded on receipt."""

    def __init__(self, length: int, maximum: int = MAX_MESSAGE_LENGTH) -> None:
        super().__init__(Code.RESOURCE_EXHAUSTED, f"message length {length} exceed maximum message size of {maximum}")
        self.length = length
        self.maximum = maximum


# -- frames ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True)
class OversizedFrame:
    """A frame whose data exceeded the limit: only its header is kept, the data was skipped."""

    stream_id: int
    type: int
    flags: int
    length: int


def encode_frame(stream_id: int, message_type: int, flags: int, data: bytes, *, max_length: int = MAX_MESSAGE_LENGTH) -> bytes:
    """One frame's bytes; :class:`OversizedMessage` when ``data`` is longer than ``max_length``."""
    if len(data) > max_length:
        raise OversizedMessage(len(data), max_length)
    return HEADER.pack(len(data), stream_id, message_type, flags) + data


class FrameDecoder:
    """Bytes in, whole frames out; the data of an oversized frame is skipped as it arrives."""

    def __init__(self, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._skipping: OversizedFrame | None = None
        self._to_skip = 0

    def feed(self, data: bytes) -> list[Frame | OversizedFrame]:
        self._buffer += data
        frames: list[Frame | OversizedFrame] = []
        while True:
            if self._skipping is not None:
                dropped = min(self._to_skip, len(self._buffer))
                del self._buffer[:dropped]
                self._to_skip -= dropped
                if self._to_skip:
                    return frames
                frames.append(self._skipping)
                self._skipping = None
            if len(self._buffer) < HEADER_LENGTH:
                return frames
            length, stream_id, message_type, flags = HEADER.unpack_from(self._buffer)
            if length > self.max_length:
                del self._buffer[:HEADER_LENGTH]
                self._skipping = OversizedFrame(stream_id, message_type, flags, length)
                self._to_skip = length
                continue
            if len(self._buffer) < HEADER_LENGTH + length:
                return frames
            frames.append(Frame(stream_id, message_type, flags, bytes(self._buffer[HEADER_LENGTH : HEADER_LENGTH + length])))
            del self._buffer[: HEADER_LENGTH + length]

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back (a peer closing now broke a frame off)."""
        return len(self._buffer) + (HEADER_LENGTH if self._skipping is not None else 0)


# -- client ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallCompleted:
    stream_id: int
    payload: bytes


@dataclass(frozen=True)
class CallFailed:
    stream_id: int
    error: RpcError


ClientEvent = CallCompleted | CallFailed


class ClientConnection:
    """The calling side of one ttrpc connection: odd stream ids, one Response awaited per call."""

    def __init__(self, *, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.max_length = max_length
        self._decoder = FrameDecoder(max_length)
        self._out = bytearray()
        self._next_stream_id = 1
        self._waiting: set[int] = set()
        self.closed = False

    def send_request(
        self,
        service: str,
        method: str,
        payload: bytes,
        *,
        timeout_nano: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> int:
        """Queue a call and return its stream id. Raises :class:`OversizedMessage` (nothing sent)."""
        if self.closed:
            raise ConnectionClosed()
        request = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=max(timeout_nano, 0))
        for key, value in metadata:
            request.metadata.add(key=key, value=value)
        stream_id = self._next_stream_id
        self._out += encode_frame(stream_id, MessageType.REQUEST, 0, request.SerializeToString(), max_length=self.max_length)
        self._next_stream_id += 2
        self._waiting.add(stream_id)
        return stream_id

    def forget(self, stream_id: int) -> None:
        """Stop waiting for a call (it timed out or was cancelled); a late answer is then ignored."""
        self._waiting.discard(stream_id)

    @property
    def waiting(self) -> frozenset[int]:
        return frozenset(self._waiting)

    def receive_data(self, data: bytes) -> list[ClientEvent]:
        events: list[ClientEvent] = []
        if self.closed:
            return events
        for frame in self._decoder.feed(data):
            if frame.stream_id not in self._waiting:
                continue  # a call given up on, or a stream this side never opened: ttrpc logs and drops it
            self._waiting.discard(frame.stream_id)
            events.append(self._answer(frame))
        return events

    def _answer(self, frame: Frame | OversizedFrame) -> ClientEvent:
        if isinstance(frame, OversizedFrame):
            return CallFailed(frame.stream_id, OversizedMessage(frame.length, self.max_length))
        if frame.type != MessageType.RESPONSE:
            return CallFailed(frame.stream_id, ProtocolViolation(f'unexpected "{type_name(frame.type)}" message received'))
        response = ttrpc_pb2.Response()
        try:
            response.ParseFromString(frame.data)
        except DecodeError as exc:
            return CallFailed(frame.stream_id, ProtocolViolation(f"unparsable response: {exc}"))
        if response.HasField("status") and response.status.code != Code.OK:
            return CallFailed(frame.stream_id, RpcError(response.status.code, response.status.message))
        return CallCompleted(frame.stream_id, response.payload)

    def connection_lost(self) -> list[ClientEvent]:
        """The byte stream ended: every waiting call fails with :class:`ConnectionClosed`."""
        self.closed = True
        failed: list[ClientEvent] = [CallFailed(stream_id, ConnectionClosed()) for stream_id in sorted(self._waiting)]
        self._waiting.clear()
        return failed

    def data_to_send(self) -> bytes:
        data, self._out = bytes(self._out), bytearray()
        return data


# -- server ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestReceived:
    stream_id: int
    service: str
    method: str
    payload: bytes
    timeout_nano: int
    metadata: tuple[tuple[str, str], ...]


class ServerConnection:
    """The answering side of one ttrpc connection, for the unary methods in ``methods``.

    ``receive_data`` answers protocol faults, unknown services and unknown methods itself and
    returns a :class:`RequestReceived` for each call to serve; every one of those must get
    exactly one :meth:`respond` or :meth:`respond_error`.
    """

    def __init__(self, methods: Mapping[str, Collection[str]], *, max_length: int = MAX_MESSAGE_LENGTH) -> None:
        self.methods = {service: frozenset(names) for service, names in methods.items()}
        self.max_length = max_length
        self._decoder = FrameDecoder(max_length)
        self._out = bytearray()
        self._last_stream_id = 0
        self._active: set[int] = set()
        self.closed = False

    @property
    def active(self) -> frozenset[int]:
        """Calls received and not yet answered."""
        return frozenset(self._active)

    def receive_data(self, data: bytes) -> list[RequestReceived]:
        requests: list[RequestReceived] = []
        if self.closed:
            return requests
        for frame in self._decoder.feed(data):
            if isinstance(frame, OversizedFrame):
                self._status(frame.stream_id, Code.RESOURCE_EXHAUSTED, OversizedMessage(frame.length, self.max_length).message)
                continue
            if frame.stream_id % 2 != 1:
                self._status(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams")
            elif frame.type == MessageType.DATA:
                if frame.stream_id not in self._active:
                    self._status(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID is no longer active")
                # data on a unary call under way carries nothing a unary method reads: dropped
            elif frame.type == MessageType.REQUEST and (request := self._request(frame)) is not None:
                requests.append(request)
            # a response, or a type of a later protocol version: ignored, as ttrpc's server does
        return requests

    def _request(self, frame: Frame) -> RequestReceived | None:
        if frame.stream_id <= self._last_stream_id:
            self._status(frame.stream_id, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment")
            return None
        self._last_stream_id = frame.stream_id
        request = ttrpc_pb2.Request()
        try:
            request.ParseFromString(frame.data)
        except DecodeError as exc:
            self._status(frame.stream_id, Code.INVALID_ARGUMENT, f"unmarshal request error: {exc}")
            return None
        service = self.methods.get(request.service)
        if service is None:
            self._status(frame.stream_id, Code.UNIMPLEMENTED, f"service {request.service}")
            return None
        if request.method not in service:
            self._status(frame.stream_id, Code.UNIMPLEMENTED, f"method {request.method}")
            return None
        self._active.add(frame.stream_id)
        return RequestReceived(
            frame.stream_id,
            request.service,
            request.method,
            request.payload,
            request.timeout_nano,
            tuple((kv.key, kv.value) for kv in request.metadata),
        )

    def respond(self, stream_id: int, payload: bytes) -> None:
        """Answer a call with its serialized result (nothing once the connection is lost)."""
        if self.closed:
            return
        self._finish(stream_id)
        response = ttrpc_pb2.Response(payload=payload).SerializeToString()
        if len(response) > self.max_length:
            self._status(stream_id, Code.RESOURCE_EXHAUSTED, OversizedMessage(len(response), self.max_length).message)
            return
        self._out += encode_frame(stream_id, MessageType.RESPONSE, 0, response, max_length=self.max_length)

    def respond_error(self, stream_id: int, code: int, message: str) -> None:
        """Answer a call with a failure status (nothing once the connection is lost)."""
        if self.closed:
            return
        self._finish(stream_id)
        self._status(stream_id, code, message)

    def _finish(self, stream_id: int) -> None:
        if stream_id not in self._active:
            raise ValueError(f"stream {stream_id} has no call to answer")
        self._active.discard(stream_id)

    def _status(self, stream_id: int, code: int, message: str) -> None:
        if self.closed:
            return
        response = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=code, message=message[: self.max_length // 2]))
        self._out += encode_frame(stream_id, MessageType.RESPONSE, 0, response.SerializeToString(), max_length=self.max_length)

    def connection_lost(self) -> None:
        """The byte stream ended: nothing more is sent; calls under way need no answer."""
        self.closed = True
        self._active.clear()
        self._out.clear()

    def data_to_send(self) -> bytes:
        data, self._out = bytes(self._out), bytearray()
        return data
