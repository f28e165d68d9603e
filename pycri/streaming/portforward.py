"""Port-forward sessions: each forwarded connection joined to a TCP connection in the pod.

Over SPDY (``portforward/httpstream.go``) the client opens an error stream and a data
stream per connection, paired by ``requestID``; over WebSocket
(``portforward/websocket.go``) each port of the request has a data and an error channel.
Either way the server dials ``localhost:PORT`` in the pod's network namespace through the
:class:`~pycri.streaming.requests.Backend` and copies bytes both ways until both sides are
done. A port nobody listens on is reported on that connection's error stream, and the
session stays usable for other connections and ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from pycri import errors
from pycri.streaming import protocol
from pycri.streaming.spdy_io import SpdySession, SpdyStream
from pycri.streaming.websocket import ChannelData, ConnectionClosed, WebSocketChannelServer
from pycri.tasks import cancel

log = logging.getLogger("pycri.streaming")

PAIR_TIMEOUT = 30.0  # kubelet's stream creation timeout for the second stream of a pair
COPY_CHUNK = 256 * 1024

Dial = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def _dial_error(exc: BaseException) -> str:
    if isinstance(exc, errors.CRIError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


# -- SPDY ---------------------------------------------------------------------------------------


async def serve_spdy(session: SpdySession, sandbox_id: str, dial: Dial) -> None:
    """Serve every pair of streams the client opens until it closes the connection."""
    pairs: protocol.PortForwardPairs[SpdyStream] = protocol.PortForwardPairs()
    tasks: set[asyncio.Task[None]] = set()

    def spawn(coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def expire(request_id: str) -> None:
        await asyncio.sleep(PAIR_TIMEOUT)
        pair = pairs.remove(request_id)
        if pair is not None:
            for stream in (pair.error, pair.data):
                if stream is not None:
                    with contextlib.suppress(ConnectionError):
                        if stream is pair.error:
                            await stream.write(protocol.port_forward_timeout_message(request_id).encode())
                    stream.abort()

    timers: dict[str, asyncio.Task[None]] = {}
    try:
        while (stream := await session.accept()) is not None:
            try:
                info = protocol.parse_port_forward_stream(stream.headers, stream.id)
                pair, created = pairs.add(stream, info)
            except (protocol.StreamHeaderError, protocol.PortForwardPairError) as exc:
                log.info("streaming: port-forward stream %d refused: %s", stream.id, exc)
                stream.abort()
                continue
            if created and not pair.complete:
                timers[pair.request_id] = asyncio.ensure_future(expire(pair.request_id))
            if pair.complete:
                if (timer := timers.pop(pair.request_id, None)) is not None:
                    timer.cancel()
                assert pair.data is not None
                assert pair.error is not None
                spawn(_forward_spdy(pair.data, pair.error, pair.port, sandbox_id, dial))
    finally:
        await cancel([*timers.values(), *tasks])
        await session.close()


async def _forward_spdy(data: SpdyStream, error: SpdyStream, port: int, sandbox_id: str, dial: Dial) -> None:
    try:
        reader, writer = await dial(port)
    except (OSError, errors.CRIError) as exc:
        message = protocol.port_forward_error_message(port, sandbox_id, _dial_error(exc))
        log.info("streaming: %s", message)
        with contextlib.suppress(ConnectionError):
            await error.write(message.encode())
            await error.close()
            await data.close()
        return
    try:
        await _join(data.read, data.write, data.close, reader, writer)
    finally:
        await error.close()
        await data.close()


async def _join(
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Copy the client's bytes to the pod's socket and back until both directions have ended.

    Each copy waits for its writer (TCP or the client connection), so a slow side slows the
    other down instead of filling memory."""

    async def to_pod() -> None:
        try:
            while data := await read():
                writer.write(data)
                await writer.drain()
        finally:
            if not writer.is_closing() and writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()

    async def to_client() -> None:
        try:
            while data := await reader.read(COPY_CHUNK):
                await write(data)
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await close()

    tasks = [asyncio.ensure_future(to_pod()), asyncio.ensure_future(to_client())]
    try:
        await asyncio.gather(*tasks)
    except (ConnectionError, OSError) as exc:
        log.debug("streaming: port-forward connection ended: %s", exc)
    finally:
        await cancel(tasks)
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


# -- WebSocket ----------------------------------------------------------------------------------


async def serve_websocket(
    ws: WebSocketChannelServer,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    sandbox_id: str,
    dial: Dial,
    *,
    leftover: bytes = b"",
) -> None:
    """One connection per requested port, all opened at once; the session ends with the client."""
    writer.write(ws.accept())
    await writer.drain()
    inboxes: dict[int, asyncio.Queue[bytes]] = {}  # bounded: a slow pod slows the client down (TCP)
    lock = asyncio.Lock()

    async def send(data: bytes) -> None:
        async with lock:
            writer.write(data)
            await writer.drain()

    async def forward(index: int, port: int) -> None:
        inbox = inboxes[index]
        try:
            pod_reader, pod_writer = await dial(port)
        except (OSError, errors.CRIError) as exc:
            message = protocol.port_forward_error_message(port, sandbox_id, _dial_error(exc))
            log.info("streaming: %s", message)
            with contextlib.suppress(ConnectionError, OSError):
                await send(ws.send_port_error(index, message))
            return
        data_channel, _ = ws.port_channels(index)

        async def write(data: bytes) -> None:
            if not ws.can_send:
                raise ConnectionError("the WebSocket connection is closed")
            await send(ws.send(data_channel, data))

        async def nothing() -> None:
            return None

        await _join(inbox.get, write, nothing, pod_reader, pod_writer)

    for index in range(len(ws.ports)):
        inboxes[index] = asyncio.Queue(maxsize=64)
    forwards = [asyncio.ensure_future(forward(i, port)) for i, port in enumerate(ws.ports)]
    try:
        while True:
            data, leftover = (leftover or await reader.read(COPY_CHUNK)), b""
            events = ws.receive_data(data)
            if reply := ws.data_to_send():
                await send(reply)
            for event in events:
                if isinstance(event, ChannelData) and event.channel % 2 == 0 and event.channel // 2 in inboxes:
                    await inboxes[event.channel // 2].put(event.data)
            if not data or ws.finished or any(isinstance(e, ConnectionClosed) for e in events):
                break
    except (ConnectionError, OSError) as exc:
        log.debug("streaming: WebSocket port-forward connection lost: %s", exc)
    finally:
        await cancel(forwards)
        with contextlib.suppress(ConnectionError, OSError):
            if ws.can_send and not writer.is_closing():
                writer.write(ws.close())
                await writer.drain()
        writer.close()
