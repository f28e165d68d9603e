"""The client side of exec, attach and port-forward: what kubectl and crictl do with the URL.

``Exec``, ``Attach`` and ``PortForward`` answer a URL on the runtime's streaming server; these
classes connect to it, over SPDY/3.1 (``v4.channel.k8s.io``, ``portforward.k8s.io``) as
client-go's SPDY executor does, or over WebSocket (``v5.channel.k8s.io``, and
``v4.channel.k8s.io`` for port-forward) as its WebSocket executor does. They speak to any CRI
runtime's streaming server (containerd's, CRI-O's, pycri's) and use pycri's own sans-IO
protocol code (pycri.streaming).

    async with await RemoteCommand.open(url, stdin=True, stdout=True, tty=False) as cmd:
        await cmd.write(b"hello")
        await cmd.close_stdin()
        stdout, stderr = await cmd.output()
        code = await cmd.wait()          # the command's exit code

    async with await PortForward.open(url) as pf:
        conn = await pf.connect(8080)
        await conn.write(b"GET / HTTP/1.0\\r\\n\\r\\n")
        await conn.close_write()
        body = await conn.read_all()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto import events as wse

from pycri.streaming import protocol, spdy
from pycri.tasks import cancel

Transport = Literal["spdy", "websocket"]
READ_CHUNK = 64 * 1024
MAX_DATA_FRAME = 32 * 1024


class StreamingError(Exception):
    """The streaming server refused the request, or the session failed; the message says how."""


async def _connect(url: str, tls: ssl.SSLContext | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
        raise StreamingError(f"not a streaming URL: {url!r}")
    context = tls if parts.scheme == "https" else None
    if parts.scheme == "https" and context is None:
        context = ssl.create_default_context()
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port, ssl=context)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return reader, writer, parts.netloc, target


async def _upgrade_spdy(url: str, protocols: list[str], tls: ssl.SSLContext | None) -> _SpdyClient:
    reader, writer, host, target = await _connect(url, tls)
    head = [f"POST {target} HTTP/1.1", f"Host: {host}", "Connection: Upgrade", "Upgrade: SPDY/3.1", "Content-Length: 0"]
    head += [f"{protocol.HEADER_PROTOCOL_VERSION}: {p}" for p in protocols]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
    try:
        response = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        writer.close()
        raise StreamingError(f"{url}: no upgrade response") from exc
    status_line, *lines = response.decode("latin-1").split("\r\n")
    if " 101 " not in status_line + " ":
        body = await reader.read(4096)
        writer.close()
        raise StreamingError(f"{url}: {status_line.partition(' ')[2]}: {body.decode(errors='replace').strip()}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}
    return _SpdyClient(reader, writer, headers.get(protocol.HEADER_PROTOCOL_VERSION.lower(), ""))


class _SpdyClient:
    """A client SPDY session: streams this side opens, with what arrives on each."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, negotiated: str) -> None:
        self.reader, self.writer, self.protocol = reader, writer, negotiated
        self.conn = spdy.Connection(client=True)
        self.inbox: dict[int, asyncio.Queue[bytes]] = {}  # b"" marks the end of a stream
        self.closed = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._read_loop())

    def open(self, headers: list[tuple[str, str]]) -> int:
        stream = self.conn.open_stream(headers)
        self.inbox[stream] = asyncio.Queue()
        return stream

    async def _read_loop(self) -> None:
        try:
            while chunk := await self.reader.read(READ_CHUNK):
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, spdy.DataReceived) and event.stream_id in self.inbox:
                        self.inbox[event.stream_id].put_nowait(event.data)
                    elif isinstance(event, (spdy.StreamEnded, spdy.StreamReset)) and event.stream_id in self.inbox:
                        self.inbox[event.stream_id].put_nowait(b"")
                await self.flush()
        except (ConnectionError, OSError, spdy.ProtocolError):
            pass
        finally:
            self.closed.set()
            for queue in self.inbox.values():
                queue.put_nowait(b"")

    async def flush(self) -> None:
        if data := self.conn.data_to_send():
            self.writer.write(data)
            await self.writer.drain()

    async def send(self, stream: int, data: bytes, *, fin: bool = False) -> None:
        view = memoryview(data)
        while len(view) > MAX_DATA_FRAME:
            self.conn.send_data(stream, bytes(view[:MAX_DATA_FRAME]))
            view = view[MAX_DATA_FRAME:]
            await self.flush()
        self.conn.send_data(stream, bytes(view), fin=fin)
        await self.flush()

    async def close(self) -> None:
        with contextlib.suppress(spdy.SpdyError, ConnectionError, OSError):
            self.conn.goaway()
            await self.flush()
        self.writer.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await self._task
            await self.writer.wait_closed()


class _WebSocketClient:
    """A client WebSocket carrying Kubernetes channels (binary protocols only)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.subprotocol = ""
        self.messages: asyncio.Queue[bytes | None] = asyncio.Queue()  # None: the connection ended
        self._partial = bytearray()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, protocols: list[str], tls: ssl.SSLContext | None) -> _WebSocketClient:
        reader, writer, host, target = await _connect(url, tls)
        client = cls(reader, writer)
        writer.write(client.ws.send(wse.Request(host=host, target=target, subprotocols=protocols)))
        await writer.drain()
        while True:
            chunk = await reader.read(READ_CHUNK)
            client.ws.receive_data(chunk or None)
            for event in client.ws.events():
                if isinstance(event, wse.AcceptConnection):
                    client.subprotocol = event.subprotocol or ""
                    client._task = asyncio.get_running_loop().create_task(client._read_loop())
                    return client
                if isinstance(event, wse.RejectConnection):
                    writer.close()
                    raise StreamingError(f"{url}: refused with HTTP {event.status_code}")
                client._take(event)
            if not chunk:
                raise StreamingError(f"{url}: the connection closed during the handshake")

    def _take(self, event: wse.Event) -> None:
        if isinstance(event, wse.BytesMessage):
            self._partial += event.data
            if event.message_finished:
                self.messages.put_nowait(bytes(self._partial))
                self._partial.clear()
        elif isinstance(event, wse.Ping):
            self.writer.write(self.ws.send(event.response()))
        elif isinstance(event, wse.CloseConnection):
            with contextlib.suppress(Exception):
                self.writer.write(self.ws.send(event.response()))
            self.messages.put_nowait(None)

    async def _read_loop(self) -> None:
        try:
            while chunk := await self.reader.read(READ_CHUNK):
                self.ws.receive_data(chunk)
                for event in self.ws.events():
                    self._take(event)
        except (ConnectionError, OSError):
            pass
        finally:
            self.messages.put_nowait(None)

    async def send(self, data: bytes) -> None:
        self.writer.write(self.ws.send(wse.BytesMessage(data=data)))
        await self.writer.drain()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(self.ws.send(wse.CloseConnection(code=1000)))
            await self.writer.drain()
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await self._task


class RemoteCommand:
    """An exec or attach session, client side."""

    def __init__(self, *, tty: bool) -> None:
        self.tty = tty
        self.status: dict[str, Any] | None = None  # the server's metav1.Status, once it sent one
        self._output: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
        self._status_done = asyncio.Event()
        self._spdy: _SpdyClient | None = None
        self._ws: _WebSocketClient | None = None
        self._ids: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._ended = 0  # output streams that have ended

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
        transport: Transport = "spdy",
        tls: ssl.SSLContext | None = None,
    ) -> RemoteCommand:
        """Connect to an Exec or Attach URL; the streams must match the request's flags. With ``tty``
        there is no stderr (a terminal has one output), as client-go's executors do."""
        stderr = stderr and not tty
        session = cls(tty=tty)
        if transport == "spdy":
            client = session._spdy = await _upgrade_spdy(url, [protocol.STREAM_PROTOCOL_V4], tls)
            wanted = [("error", True), ("stdin", stdin), ("stdout", stdout), ("stderr", stderr), ("resize", tty)]
            for name, on in wanted:
                if on:
                    session._ids[name] = client.open([(protocol.HEADER_STREAM_TYPE.lower(), name)])
            await client.flush()
            outputs = [name for name in ("stdout", "stderr") if name in session._ids]
            session._tasks = [asyncio.create_task(session._pump_spdy(name)) for name in outputs]
            session._tasks.append(asyncio.create_task(session._read_spdy_status(len(outputs))))
        else:
            session._ws = await _WebSocketClient.open(url, [protocol.STREAM_PROTOCOL_V5, protocol.STREAM_PROTOCOL_V4], tls)
            session._tasks = [asyncio.create_task(session._pump_ws())]
        return session

    async def _pump_spdy(self, name: str) -> None:
        assert self._spdy is not None
        inbox = self._spdy.inbox[self._ids[name]]
        while data := await inbox.get():
            self._output.put_nowait((name, data))
        self._output.put_nowait(None)

    async def _read_spdy_status(self, outputs: int) -> None:
        assert self._spdy is not None
        inbox, text = self._spdy.inbox[self._ids["error"]], b""
        while data := await inbox.get():
            text += data
        self._set_status(text)
        if outputs == 0:
            self._output.put_nowait(None)

    async def _pump_ws(self) -> None:
        assert self._ws is not None
        status = b""
        while (message := await self._ws.messages.get()) is not None:
            if not message:
                continue
            channel, data = message[0], message[1:]
            if channel == protocol.ERROR_CHANNEL:
                status += data
            elif channel in (protocol.STDOUT_CHANNEL, protocol.STDERR_CHANNEL) and data:
                self._output.put_nowait(("stdout" if channel == protocol.STDOUT_CHANNEL else "stderr", data))
        self._set_status(status)
        self._output.put_nowait(None)

    def _set_status(self, text: bytes) -> None:
        if text:
            try:
                self.status = json.loads(text)
            except ValueError:
                self.status = {"status": protocol.STATUS_FAILURE, "message": text.decode(errors="replace")}
        self._status_done.set()

    async def write(self, data: bytes) -> None:
        if self._spdy is not None:
            await self._spdy.send(self._ids["stdin"], data)
        elif self._ws is not None:
            await self._ws.send(bytes([protocol.STDIN_CHANNEL]) + data)

    async def close_stdin(self) -> None:
        if self._spdy is not None:
            await self._spdy.send(self._ids["stdin"], b"", fin=True)
        elif self._ws is not None and self._ws.subprotocol == protocol.STREAM_PROTOCOL_V5:
            await self._ws.send(bytes([protocol.CLOSE_SIGNAL, protocol.STDIN_CHANNEL]))

    async def resize(self, width: int, height: int) -> None:
        message = json.dumps({"Width": width, "Height": height}).encode()
        if self._spdy is not None:
            await self._spdy.send(self._ids["resize"], message)
        elif self._ws is not None:
            await self._ws.send(bytes([protocol.RESIZE_CHANNEL]) + message)

    async def read(self) -> tuple[str, bytes] | None:
        """The next output as ``("stdout"|"stderr", data)``; None once the output has ended."""
        pending = 1 if self._ws is not None else sum(name in self._ids for name in ("stdout", "stderr")) or 1
        while True:
            item = await self._output.get()
            if item is not None:
                return item
            self._ended += 1
            if self._ended >= pending:
                self._output.put_nowait(None)  # stays ended for later reads
                return None

    async def output(self) -> tuple[bytes, bytes]:
        """Everything written to stdout and stderr until the session ends."""
        out, err = bytearray(), bytearray()
        while (item := await self.read()) is not None:
            (out if item[0] == "stdout" else err).extend(item[1])
        return bytes(out), bytes(err)

    async def wait(self) -> int:
        """The exit code the server reported (0 for success); StreamingError for any other failure."""
        await self._status_done.wait()
        status = self.status
        if status is None or status.get("status") == protocol.STATUS_SUCCESS:
            return 0
        if status.get("reason") == protocol.REASON_NON_ZERO_EXIT_CODE:
            for cause in status.get("details", {}).get("causes", []):
                if cause.get("reason") == protocol.CAUSE_EXIT_CODE:
                    return int(cause["message"])
        raise StreamingError(str(status.get("message") or status))

    async def close(self) -> None:
        await cancel(self._tasks)
        if self._spdy is not None:
            await self._spdy.close()
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> RemoteCommand:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


class ForwardedConnection:
    """One connection to a pod's port through a port-forward session."""

    def __init__(
        self,
        read: asyncio.Queue[bytes],
        send: Callable[[bytes], Awaitable[None]],
        close_write: Callable[[], Awaitable[None]],
        errors: asyncio.Queue[bytes] | None,
        *,
        errors_end: bool = True,
    ) -> None:
        self._read, self._send, self._close_write, self._errors = read, send, close_write, errors
        self._errors_end = errors_end  # SPDY: the error stream ends; WebSocket: a channel never does
        self._eof = False

    async def read(self) -> bytes:
        """The next bytes from the pod; b"" at the end."""
        if self._eof:
            return b""
        data = await self._read.get()
        if not data:
            self._eof = True
        return data

    async def read_all(self) -> bytes:
        chunks = []
        while data := await self.read():
            chunks.append(data)
        return b"".join(chunks)

    async def write(self, data: bytes) -> None:
        await self._send(data)

    async def close_write(self) -> None:
        await self._close_write()

    async def error(self) -> str:
        """What the server reported on this connection's error stream ("" when nothing)."""
        if self._errors is None:
            return ""
        if not self._errors_end:  # one message per error on a WebSocket channel
            return (await self._errors.get()).decode(errors="replace")
        chunks = []
        while data := await self._errors.get():
            chunks.append(data)
        return b"".join(chunks).decode(errors="replace")


class PortForward:
    """A port-forward session: :meth:`connect` opens one connection to a pod port (SPDY), or,
    over WebSocket, returns the connection of one of the ports named when opening."""

    def __init__(self) -> None:
        self._spdy: _SpdyClient | None = None
        self._ws: _WebSocketClient | None = None
        self._request_id = 0
        self._ws_ports: list[int] = []
        self._ws_inboxes: dict[int, asyncio.Queue[bytes]] = {}
        self._ws_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        transport: Transport = "spdy",
        ports: list[int] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> PortForward:
        session = cls()
        if transport == "spdy":
            session._spdy = await _upgrade_spdy(url, [protocol.PORT_FORWARD_PROTOCOL_V1], tls)
        else:
            if ports:
                url += ("&" if "?" in url else "?") + "&".join(f"port={p}" for p in ports)
            session._ws = await _WebSocketClient.open(url, [protocol.STREAM_PROTOCOL_V4], tls)
            session._ws_ports = list(ports or [])
            for i in range(len(session._ws_ports)):
                session._ws_inboxes[2 * i] = asyncio.Queue()
                session._ws_inboxes[2 * i + 1] = asyncio.Queue()
            session._ws_task = asyncio.create_task(session._pump_ws())
        return session

    async def _pump_ws(self) -> None:
        assert self._ws is not None
        seen: set[int] = set()
        while (message := await self._ws.messages.get()) is not None:
            if not message or message[0] not in self._ws_inboxes:
                continue
            channel, data = message[0], message[1:]
            if channel not in seen:  # each channel starts with its port, two bytes little-endian
                seen.add(channel)
                data = data[2:]
            if data:
                self._ws_inboxes[channel].put_nowait(data)
        for queue in self._ws_inboxes.values():
            queue.put_nowait(b"")

    async def connect(self, port: int) -> ForwardedConnection:
        if self._ws is not None:
            index = self._ws_ports.index(port)
            ws = self._ws

            async def send_ws(data: bytes) -> None:
                await ws.send(bytes([2 * index]) + data)

            async def no_half_close() -> None:  # the channel protocol cannot half-close a port
                return None

            errors = self._ws_inboxes[2 * index + 1]
            return ForwardedConnection(self._ws_inboxes[2 * index], send_ws, no_half_close, errors, errors_end=False)
        assert self._spdy is not None
        client = self._spdy
        request_id = str(self._request_id)
        self._request_id += 1
        common = [(protocol.HEADER_PORT.lower(), str(port)), (protocol.HEADER_REQUEST_ID.lower(), request_id)]
        error = client.open([(protocol.HEADER_STREAM_TYPE.lower(), "error"), *common])
        data = client.open([(protocol.HEADER_STREAM_TYPE.lower(), "data"), *common])
        await client.flush()

        async def send(payload: bytes) -> None:
            await client.send(data, payload)

        async def close_write() -> None:
            await client.send(data, b"", fin=True)

        return ForwardedConnection(client.inbox[data], send, close_write, client.inbox[error])

    async def close(self) -> None:
        if self._ws_task is not None:
            self._ws_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ws_task
        if self._spdy is not None:
            await self._spdy.close()
        if self._ws is not None:
            await self._ws.close()

    async def __aenter__(self) -> PortForward:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
