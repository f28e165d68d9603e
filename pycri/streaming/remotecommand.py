"""Exec and attach sessions: the client's streams joined to a command or a container.

The client side is a :class:`ClientStreams` (stdin to read; stdout, stderr and the error
stream to write; resize events), made from SPDY streams (:func:`spdy_streams`, kubelet's
``remotecommand/httpstream.go``) or WebSocket channels (:class:`WebSocketStreams`,
``remotecommand/websocket.go``). :func:`serve` pumps both ways until the command or the
container ends, then writes the status (``exec.go``/``attach.go``): success, the exit code of
a command that failed, or the error. A client that goes away ends the session and kills
what it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from pycri import errors
from pycri.streaming import protocol
from pycri.streaming.protocol import Status, TerminalSize
from pycri.streaming.requests import ExecSession, Session
from pycri.streaming.spdy_io import SpdySession, SpdyStream
from pycri.streaming.websocket import ChannelClosed, ChannelData, ConnectionClosed, Resize, WebSocketChannelServer
from pycri.tasks import cancel

log = logging.getLogger("pycri.streaming")

STREAM_CREATION_TIMEOUT = 30.0  # kubelet's DefaultStreamCreationTimeout


class ClientStreams(Protocol):
    async def read_stdin(self) -> bytes:
        """The client's next input; b"" at its end (or when it sends none)."""

    async def write(self, name: str, data: bytes) -> None:
        """Output to the client's ``stdout`` or ``stderr`` (dropped when it did not ask for it)."""

    async def next_resize(self) -> TerminalSize | None:
        """The next terminal size the client sends; None when it will send no more."""

    async def write_status(self, status: Status) -> None: ...

    async def closed(self) -> None:
        """Returns when the client has gone away."""

    async def close(self) -> None: ...


# -- SPDY ---------------------------------------------------------------------------------------


class SpdyStreams:
    def __init__(self, session: SpdySession, version: protocol.RemoteCommandVersion) -> None:
        self.session = session
        self.version = version
        self.by_type: dict[protocol.StreamType, SpdyStream] = {}
        self._resize = protocol.ResizeDecoder()
        self._sizes: list[TerminalSize] = []

    async def read_stdin(self) -> bytes:
        stream = self.by_type.get(protocol.StreamType.STDIN)
        return await stream.read() if stream is not None else b""

    async def write(self, name: str, data: bytes) -> None:
        stream = self.by_type.get(protocol.StreamType(name))
        if stream is not None:
            await stream.write(data)

    async def next_resize(self) -> TerminalSize | None:
        stream = self.by_type.get(protocol.StreamType.RESIZE)
        while not self._sizes:
            if stream is None or self._resize.stopped:
                return None
            data = await stream.read()
            self._sizes += self._resize.feed(data) if data else self._resize.feed_eof()
            if not data and not self._sizes:
                return None
        return self._sizes.pop(0)

    async def write_status(self, status: Status) -> None:
        stream = self.by_type.get(protocol.StreamType.ERROR)
        if stream is None or self.version.v1_quirks:
            return
        if status.status == protocol.STATUS_SUCCESS and not self.version.status_as_json:
            return  # v1-v3 write only failures
        await stream.write(status.encode(self.version.name))

    async def closed(self) -> None:
        await asyncio.shield(self.session._task)

    async def close(self) -> None:
        for stream in self.by_type.values():
            await stream.close()
        await self.session.close()


async def spdy_streams(
    session: SpdySession, protocol_name: str, *, stdin: bool, stdout: bool, stderr: bool, tty: bool
) -> SpdyStreams | None:
    """Wait for the streams the client opens (``waitForStreams``); None when it does not open them in time."""
    version = protocol.remote_command_version(protocol_name)
    expected = protocol.expected_remote_command_streams(protocol_name, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
    streams = SpdyStreams(session, version)
    received = 0
    deadline = asyncio.get_running_loop().time() + STREAM_CREATION_TIMEOUT
    while received < expected:
        stream = await session.accept(timeout=max(0.0, deadline - asyncio.get_running_loop().time()))
        if stream is None:
            log.info("streaming: the client opened %d of %d streams in time", received, expected)
            return None
        kind = protocol.classify_remote_command_stream(protocol_name, stream.headers)
        if kind is None:
            log.debug("streaming: ignoring a stream of type %r", stream.headers.get(protocol.HEADER_STREAM_TYPE.lower()))
            continue
        streams.by_type[kind] = stream
        received += 1
    error = streams.by_type.get(protocol.StreamType.ERROR)
    if version.v1_quirks and error is not None:  # v1ProtocolHandler: the error stream reset once all arrived
        error.abort()
    return streams


# -- WebSocket ----------------------------------------------------------------------------------


class WebSocketStreams:
    """A remote-command WebSocket connection driven by a reader task."""

    def __init__(
        self, ws: WebSocketChannelServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, leftover: bytes = b""
    ) -> None:
        self.ws = ws
        self.reader = reader
        self.writer = writer
        self._leftover = leftover  # bytes that came with the request head
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue()
        self._sizes: asyncio.Queue[TerminalSize | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Answer the handshake, then start reading the client."""
        self.writer.write(self.ws.accept())
        self._task = asyncio.get_running_loop().create_task(self._read_loop())
        await self.writer.drain()

    async def _read_loop(self) -> None:
        try:
            while True:
                data, self._leftover = (self._leftover or await self.reader.read(64 * 1024)), b""
                events = self.ws.receive_data(data)
                if reply := self.ws.data_to_send():
                    self.writer.write(reply)
                for event in events:
                    if isinstance(event, ChannelData) and event.channel == protocol.STDIN_CHANNEL:
                        self._stdin.put_nowait(event.data)
                    elif isinstance(event, ChannelClosed) and event.channel == protocol.STDIN_CHANNEL:
                        self._stdin.put_nowait(b"")
                    elif isinstance(event, Resize):
                        self._sizes.put_nowait(event.size)
                    elif isinstance(event, ConnectionClosed):
                        return
                if not data or self.ws.finished:
                    return
        except (ConnectionError, OSError) as exc:
            log.debug("streaming: WebSocket connection lost: %s", exc)
        finally:
            self._stdin.put_nowait(b"")
            self._sizes.put_nowait(None)

    async def read_stdin(self) -> bytes:
        return await self._stdin.get()

    async def _send(self, data: bytes) -> None:
        if not self.ws.can_send or self.writer.is_closing():
            raise ConnectionError("the WebSocket connection is closed")
        self.writer.write(data)
        await self.writer.drain()

    async def write(self, name: str, data: bytes) -> None:
        await self._send(self.ws.send_stdout(data) if name == "stdout" else self.ws.send_stderr(data))

    async def next_resize(self) -> TerminalSize | None:
        return await self._sizes.get()

    async def write_status(self, status: Status) -> None:
        await self._send(self.ws.send_status(status))

    async def closed(self) -> None:
        assert self._task is not None, "start() first"
        await asyncio.shield(self._task)

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            if self.ws.can_send and not self.writer.is_closing():
                self.writer.write(self.ws.close())
                await self.writer.drain()
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            if self._task is not None:
                await self._task
            await self.writer.wait_closed()


# -- the session --------------------------------------------------------------------------------


S = TypeVar("S", bound=Session)


async def exec_status(session: ExecSession, cmd: tuple[str, ...]) -> Status:
    """What an exec session ends with: success, or the exit code of a command that failed (``exec.go``)."""
    code = await session.wait()
    return Status.success() if code == 0 else Status.non_zero_exit(code, protocol.exec_exit_error(cmd, code))


async def attach_status(session: Session) -> Status:
    return Status.success()


async def serve(
    client: ClientStreams,
    start: Callable[[], Awaitable[S]],
    finish: Callable[[S], Awaitable[Status]],
    *,
    stdin: bool,
) -> None:
    """Run one session to its end: ``start`` it, pump both ways until its output ends, then write
    the status ``finish`` gives and close the client. A client that leaves first ends the session."""
    try:
        session = await start()
    except errors.CRIError as exc:
        await _status(client, Status.internal_error(exc.message))
        await client.close()
        return
    pumps = [asyncio.create_task(_output(session, client)), asyncio.create_task(_resizes(client, session))]
    if stdin:
        pumps.append(asyncio.create_task(_input(client, session)))
    gone = asyncio.create_task(client.closed())
    try:
        await asyncio.wait([pumps[0], gone], return_when=asyncio.FIRST_COMPLETED)
        if pumps[0].done():
            pumps[0].result()
            await _status(client, await finish(session))
        else:  # the client went away: nothing more to tell it; stop what it started
            log.debug("streaming: the client left; ending its session")
    finally:
        await cancel([*pumps, gone])
        await session.close()
        await client.close()


async def _status(client: ClientStreams, status: Status) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await client.write_status(status)


async def _output(session: Session, client: ClientStreams) -> None:
    """Session output to the client, until the session has no more; a client that stops reading is dropped."""
    client_gone = False
    while (out := await session.read()) is not None:
        if client_gone:
            continue
        name, data = out
        try:
            await client.write(name, data)
        except (ConnectionError, OSError):
            client_gone = True


async def _input(client: ClientStreams, session: Session) -> None:
    while data := await client.read_stdin():
        await session.write(data)
    await session.close_stdin()


async def _resizes(client: ClientStreams, session: Session) -> None:
    while (size := await client.next_resize()) is not None:
        await session.resize(size.width, size.height)


__all__ = [
    "ClientStreams",
    "ExecSession",
    "SpdyStreams",
    "WebSocketStreams",
    "attach_status",
    "exec_status",
    "serve",
    "spdy_streams",
]
