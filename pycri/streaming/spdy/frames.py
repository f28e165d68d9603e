"""SPDY/3 frames: the frame dataclasses, :class:`FrameEncoder` and :class:`FrameDecoder`."""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass

from pycri.streaming.spdy.errors import GoAwayStatus, LocalProtocolError, ProtocolError
from pycri.streaming.spdy.headers import _U32, HEADER_DICTIONARY, NO_HEADERS, Headers, decode_header_block, encode_header_block

SPDY_VERSION = 3
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


class FrameType(enum.IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class SettingsId(enum.IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


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
    """A version-3 control frame of a type this package does not know (e.g. CREDENTIAL); decoded, never encoded."""

    frame_type: int
    flags: int
    payload: bytes


_U32x2 = struct.Struct(">II")


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
