"""The status codes of RST_STREAM and GOAWAY, and the exceptions of :mod:`pycri.streaming.spdy`."""

from __future__ import annotations

import enum


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


class SpdyError(Exception):
    """Base class of this package's errors."""


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
