"""The events :meth:`Connection.receive_data <pycri.streaming.spdy.Connection.receive_data>` returns."""

from __future__ import annotations

from dataclasses import dataclass

from pycri.streaming.spdy.headers import Headers


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
