"""The asyncio side of SPDY: one task reads the socket and feeds :mod:`pycri.streaming.spdy`.

:class:`SpdySession` owns the socket after the HTTP/1.1 upgrade. Its reader task hands
every chunk to the sans-IO :class:`~pycri.streaming.spdy.Connection`, answers each stream
the client opens with a SYN_REPLY (as apimachinery's spdy server accepts every stream)
and queues it for :meth:`SpdySession.accept`; data goes to that stream's buffer.

Back-pressure: spdystream, the client library of kubectl and crictl, does no flow control
(see pycri.streaming.spdy), so the only brake on a fast sender is TCP. When the data buffered for
readers passes ``MAX_BUFFERED`` the reader task stops reading the socket until readers
catch up. Writes go through ``StreamWriter.drain``; where the peer does speak flow control,
a write waits for its window.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Protocol

from pycri.streaming import spdy

log = logging.getLogger("pycri.streaming")

READ_CHUNK = 256 * 1024
MAX_BUFFERED = 4 * 1024 * 1024  # bytes received but not yet read, over all streams
MAX_DATA_FRAME = 256 * 1024  # what one write sends per DATA frame


class ByteReader(Protocol):
    async def read(self, n: int = ...) -> bytes: ...


class ByteWriter(Protocol):
    """What the session needs of its connection's sending side: an asyncio StreamWriter, or a tunnel."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def is_closing(self) -> bool: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class SpdyStream:
    """One stream the client opened: its headers, what it sent, and a way to answer."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._readable = asyncio.Event()
        self.eof = False  # the client sent FIN (or reset the stream, or the session ended)
        self.reset = False
        self._closed = False  # this side sent FIN

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._readable.set()

    def _end(self, reset: bool = False) -> None:
        self.eof = True
        self.reset = self.reset or reset
        self._readable.set()

    async def read(self) -> bytes:
        """The next bytes the client sent; b"" once it has sent FIN."""
        while not self._chunks:
            if self.eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks.popleft()
        self.session._consumed(len(data))
        return data

    async def write(self, data: bytes) -> None:
        """Send ``data``; raises ConnectionError when the stream or the session is gone."""
        view = memoryview(data)
        while view:
            size = min(len(view), MAX_DATA_FRAME)
            size = await self.session._window(self.id, size)
            self.session._send(partial(self.session.conn.send_data, self.id, bytes(view[:size])))
            view = view[size:]
            await self.session._drain()

    async def close(self) -> None:
        """Half-close: FIN from this side (idempotent)."""
        if self._closed or self.reset or self.session.closed:
            return
        self._closed = True
        with contextlib.suppress(spdy.LocalProtocolError):
            self.session._send(partial(self.session.conn.end_stream, self.id))
        with contextlib.suppress(ConnectionError):
            await self.session._drain()

    def abort(self) -> None:
        """RST_STREAM: the stream is over for both sides."""
        if self.reset or self.session.closed:
            return
        self.reset = True
        with contextlib.suppress(spdy.LocalProtocolError):
            self.session._send(partial(self.session.conn.reset_stream, self.id, spdy.RstStatus.CANCEL))
        self._end(reset=True)


class SpdySession:
    def __init__(self, reader: ByteReader, writer: ByteWriter, *, leftover: bytes = b"") -> None:
        self.reader = reader
        self.writer = writer
        self.conn = spdy.Connection()
        self.streams: dict[int, SpdyStream] = {}
        self._incoming: asyncio.Queue[SpdyStream | None] = asyncio.Queue()
        self._buffered = 0
        self._room = asyncio.Event()
        self._room.set()
        self._window_changed = asyncio.Event()
        self.closed = False
        self.last_activity = asyncio.get_running_loop().time()
        self._task = asyncio.get_running_loop().create_task(self._read_loop(leftover))

    # -- reading -----------------------------------------------------------------------------

    async def _read_loop(self, leftover: bytes) -> None:
        try:
            if leftover:
                self._dispatch(leftover)
            while not self.closed:
                await self._room.wait()
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                self.last_activity = asyncio.get_running_loop().time()
                self._dispatch(data)
                self._flush()
        except spdy.ProtocolError as exc:
            log.info("streaming: SPDY protocol error from the client: %s", exc)
            self._flush()
        except (ConnectionError, OSError) as exc:
            log.debug("streaming: connection lost: %s", exc)
        finally:
            self._finish()

    def _dispatch(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, spdy.StreamOpened):
                stream = SpdyStream(self, event.stream_id, event.headers)
                self.streams[event.stream_id] = stream
                self.conn.reply(event.stream_id, spdy.NO_HEADERS)
                self._incoming.put_nowait(stream)
            elif isinstance(event, spdy.DataReceived):
                found = self.streams.get(event.stream_id)
                if found is not None and event.data:
                    found._feed(event.data)
                    self._buffered += len(event.data)
                    if self._buffered > MAX_BUFFERED:
                        self._room.clear()
            elif isinstance(event, spdy.StreamEnded):
                if (found := self.streams.get(event.stream_id)) is not None:
                    found._end()
            elif isinstance(event, spdy.StreamReset):
                if (found := self.streams.get(event.stream_id)) is not None:
                    found._end(reset=True)
            elif isinstance(event, spdy.WindowUpdated):
                self._window_changed.set()
            elif isinstance(event, spdy.GoAwayReceived):
                self.closed = True

    def _consumed(self, size: int) -> None:
        self._buffered -= size
        if self._buffered <= MAX_BUFFERED // 2:
            self._room.set()

    def _finish(self) -> None:
        self.closed = True
        self._room.set()
        self._window_changed.set()
        for stream in self.streams.values():
            stream._end()
        self._incoming.put_nowait(None)
        with contextlib.suppress(Exception):
            self.writer.close()

    async def accept(self, timeout: float | None = None) -> SpdyStream | None:
        """The next stream the client opens; None when the session ends (or ``timeout`` passes)."""
        try:
            return await asyncio.wait_for(self._incoming.get(), timeout)
        except TimeoutError:
            return None

    # -- writing -----------------------------------------------------------------------------

    def _send(self, action: Callable[[], object]) -> None:
        if self.closed:
            raise ConnectionError("the streaming connection is closed")
        action()
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _drain(self) -> None:
        if self.writer.is_closing():
            raise ConnectionError("the streaming connection is closed")
        await self.writer.drain()

    async def _window(self, stream_id: int, wanted: int) -> int:
        """How much of ``wanted`` may be sent now; waits while the peer's window is shut."""
        while True:
            if self.closed:
                raise ConnectionError("the streaming connection is closed")
            if not self.conn.flow_control_active:
                return wanted
            window = self.conn.send_window(stream_id)
            if window > 0:
                return min(window, wanted)
            self._window_changed.clear()
            await self._window_changed.wait()

    async def close(self) -> None:
        """GOAWAY and close the socket; the reader task ends."""
        if not self.closed:
            with contextlib.suppress(spdy.LocalProtocolError):
                self.conn.goaway()
            self._flush()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.drain()
        self.closed = True
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
