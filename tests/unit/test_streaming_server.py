"""The streaming server over loopback, with a fake backend: tokens, SPDY and WebSocket exec,
attach and port-forward, the status written at the end, and what a client that leaves causes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto import events as wse

from pycri import errors
from pycri.streaming import protocol, spdy
from pycri.streaming.requests import AttachRequest, ExecRequest, PortForwardRequest, StreamName
from pycri.streaming.server import StreamingServer

# -- a fake backend --------------------------------------------------------------------------------


@dataclass
class FakeExec:
    """``upper [CODE]``: stdout gets stdin upper-cased, stderr gets "err", exit code CODE."""

    cmd: tuple[str, ...]
    tty: bool
    out: asyncio.Queue[tuple[StreamName, bytes] | None] = field(default_factory=asyncio.Queue)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    closed: bool = False
    stdin_closed: asyncio.Event = field(default_factory=asyncio.Event)

    async def read(self) -> tuple[StreamName, bytes] | None:
        return await self.out.get()

    async def write(self, data: bytes) -> None:
        self.out.put_nowait(("stdout", data.upper()))

    async def close_stdin(self) -> None:
        if not self.tty:
            self.out.put_nowait(("stderr", b"err"))
        self.out.put_nowait(None)
        self.stdin_closed.set()

    async def resize(self, width: int, height: int) -> None:
        self.sizes.append((width, height))
        self.out.put_nowait(("stdout", f"size {width}x{height}\n".encode()))

    async def wait(self) -> int:
        return int(self.cmd[1]) if len(self.cmd) > 1 else 0

    async def close(self) -> None:
        self.closed = True


class FakeBackend:
    def __init__(self, ports: dict[int, int]) -> None:
        self.ports = ports  # pod port -> loopback port of a test server
        self.sessions: list[FakeExec] = []

    async def exec(self, request: ExecRequest) -> FakeExec:
        if request.container_id == "stopped":
            raise errors.FailedPrecondition("container stopped is not running")
        session = FakeExec(request.cmd, request.tty)
        self.sessions.append(session)
        return session

    async def attach(self, request: AttachRequest) -> FakeExec:
        session = FakeExec(("attach",), request.tty)
        self.sessions.append(session)
        return session

    async def dial(self, sandbox_id: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if port not in self.ports:
            raise ConnectionRefusedError(111, "Connection refused")
        return await asyncio.open_connection("127.0.0.1", self.ports[port])


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


@pytest.fixture
async def server(echo_port: int) -> AsyncIterator[StreamingServer]:
    srv = StreamingServer(FakeBackend({80: echo_port}))
    await srv.start()
    yield srv
    await srv.stop()


def backend(server: StreamingServer) -> FakeBackend:
    assert isinstance(server.backend, FakeBackend)
    return server.backend


# -- clients ---------------------------------------------------------------------------------------


async def http_upgrade(url: str, headers: list[tuple[str, str]]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    """Send a POST upgrade request to ``url``; the connection and the response head."""
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    writer.write(head.encode())
    response = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, response


class SpdyClient:
    """kubectl's side of a SPDY session, on the project's own framing."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = spdy.Connection(client=True)
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()

    def open(self, **headers: str) -> int:
        stream = self.conn.open_stream(list(headers.items()))
        self.data[stream] = bytearray()
        return stream

    async def send(self, stream: int, data: bytes, fin: bool = False) -> None:
        self.conn.send_data(stream, data, fin=fin)
        await self.flush()

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def pump(self, until: object, timeout: float = 10.0) -> None:
        """Read until ``until()`` is true."""
        assert callable(until)
        async with asyncio.timeout(timeout):
            while not until():
                chunk = await self.reader.read(65536)
                if not chunk:
                    return
                for event in self.conn.receive_data(chunk):
                    if isinstance(event, spdy.DataReceived):
                        self.data[event.stream_id] += event.data
                    elif isinstance(event, spdy.StreamEnded):
                        self.ended.add(event.stream_id)
                    elif isinstance(event, spdy.StreamReset):
                        self.reset.add(event.stream_id)
                await self.flush()


async def spdy_client(url: str, *protocols: str) -> tuple[SpdyClient, bytes]:
    headers = [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")]
    headers += [("X-Stream-Protocol-Version", p) for p in protocols]
    reader, writer, response = await http_upgrade(url, headers)
    return SpdyClient(reader, writer), response


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 (polling state the server changes)
            await asyncio.sleep(0.01)


def exec_request(**kw: object) -> ExecRequest:
    values: dict[str, object] = {"container_id": "c1", "cmd": ("upper", "0"), "tty": False, "stdin": True, "stdout": True}
    values["stderr"] = True
    values.update(kw)
    return ExecRequest(**values)  # type: ignore[arg-type]


# -- tokens and routing --------------------------------------------------------------------------------


async def test_an_unknown_or_used_token_is_404_and_runs_nothing(server: StreamingServer) -> None:
    url = server.url(exec_request())
    wrong_kind = server.url(exec_request()).replace("/exec/", "/attach/")  # burns that token, as kubelet's does
    for target in (url.rsplit("/", 1)[0] + "/nope", wrong_kind, wrong_kind.replace("/attach/", "/exec/")):
        _, writer, response = await http_upgrade(target, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")])
        assert response.startswith(b"HTTP/1.1 404 Not Found\r\n"), response
        writer.close()
    assert backend(server).sessions == []
    client, response = await spdy_client(url, protocol.STREAM_PROTOCOL_V4)
    assert response.startswith(b"HTTP/1.1 101 "), response
    client.writer.close()
    _, writer, response = await http_upgrade(url, [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1")])
    assert response.startswith(b"HTTP/1.1 404 "), response  # good once
    writer.close()


async def test_no_common_protocol_is_403_and_no_upgrade_is_400(server: StreamingServer) -> None:
    _, writer, response = await http_upgrade(
        server.url(exec_request()), [("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v9")]
    )
    assert response.startswith(b"HTTP/1.1 403 "), response
    assert b"X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in response
    writer.close()
    _, writer, response = await http_upgrade(server.url(exec_request()), [])
    assert response.startswith(b"HTTP/1.1 400 "), response
    writer.close()


# -- SPDY exec ----------------------------------------------------------------------------------------


async def spdy_exec(server: StreamingServer, request: ExecRequest, stdin: bytes) -> tuple[SpdyClient, dict[str, int]]:
    client, response = await spdy_client(server.url(request), protocol.STREAM_PROTOCOL_V4, protocol.STREAM_PROTOCOL_V3)
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in response
    ids = {"error": client.open(streamtype="error")}
    for name in ("stdin", "stdout", "stderr"):
        if getattr(request, name):
            ids[name] = client.open(streamtype=name)
    if request.tty:
        ids["resize"] = client.open(streamtype="resize")
    await client.flush()
    if stdin:
        await client.send(ids["stdin"], stdin, fin=True)
    return client, ids


async def test_spdy_exec_pipes_stdin_stdout_stderr_and_reports_success(server: StreamingServer) -> None:
    client, ids = await spdy_exec(server, exec_request(cmd=("upper", "0")), b"hello")
    await client.pump(lambda: ids["error"] in client.ended)
    assert bytes(client.data[ids["stdout"]]) == b"HELLO"
    assert bytes(client.data[ids["stderr"]]) == b"err"
    assert json.loads(client.data[ids["error"]]) == {"metadata": {}, "status": "Success"}
    assert backend(server).sessions[0].closed


async def test_spdy_exec_non_zero_exit_carries_the_code(server: StreamingServer) -> None:
    client, ids = await spdy_exec(server, exec_request(cmd=("upper", "3")), b"x")
    await client.pump(lambda: ids["error"] in client.ended)
    status = json.loads(client.data[ids["error"]])
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_spdy_exec_tty_applies_resizes(server: StreamingServer) -> None:
    request = exec_request(tty=True, stderr=False)
    client, ids = await spdy_exec(server, request, b"")
    await client.send(ids["resize"], b'{"Width":100,"Height":40}{"Width":', fin=False)
    await client.send(ids["resize"], b'90,"Height":30}')
    await client.pump(lambda: b"size 90x30" in client.data[ids["stdout"]])
    assert backend(server).sessions[0].sizes == [(100, 40), (90, 30)]
    await client.send(ids["stdin"], b"bye", fin=True)
    await client.pump(lambda: ids["error"] in client.ended)
    assert client.data[ids["stdout"]].endswith(b"BYE")


async def test_exec_in_a_stopped_container_reports_the_error(server: StreamingServer) -> None:
    client, ids = await spdy_exec(server, exec_request(container_id="stopped"), b"")
    await client.pump(lambda: ids["error"] in client.ended)
    status = json.loads(client.data[ids["error"]])
    assert status["status"] == "Failure"
    assert "container stopped is not running" in status["message"]


async def test_a_client_that_leaves_ends_its_session(server: StreamingServer) -> None:
    client, _ = await spdy_exec(server, exec_request(), b"")
    await eventually(lambda: bool(backend(server).sessions))
    client.writer.close()
    await eventually(lambda: backend(server).sessions[0].closed)


# -- SPDY port-forward ----------------------------------------------------------------------------


async def test_spdy_port_forward_moves_bytes_and_reports_a_refused_port(server: StreamingServer) -> None:
    client, response = await spdy_client(server.url(PortForwardRequest("pod", (80,))), "portforward.k8s.io")
    assert response.startswith(b"HTTP/1.1 101 ")
    refused_error = client.open(streamtype="error", port="81", requestid="0")
    refused_data = client.open(streamtype="data", port="81", requestid="0")
    error = client.open(streamtype="error", port="80", requestid="1")
    data = client.open(streamtype="data", port="80", requestid="1")
    await client.flush()
    payload = bytes(range(256)) * 2048  # 512 KiB
    for i in range(0, len(payload), 32768):
        await client.send(data, payload[i : i + 32768])
    await client.pump(lambda: len(client.data[data]) >= len(payload) and refused_error in client.ended)
    assert bytes(client.data[data]) == payload
    assert bytes(client.data[refused_error]) == b"error forwarding port 81 to pod pod, uid : connection refused"
    assert refused_data in client.ended
    await client.send(data, b"", fin=True)
    await client.pump(lambda: data in client.ended and error in client.ended)
    assert bytes(client.data[error]) == b""


# -- WebSocket --------------------------------------------------------------------------------------


class WsClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ws: WSConnection) -> None:
        self.reader, self.writer, self.ws = reader, writer, ws
        self.channels: dict[int, bytearray] = {}
        self.accepted = False
        self.closed = False

    async def send(self, data: bytes) -> None:
        self.writer.write(self.ws.send(wse.BytesMessage(data=data)))
        await self.writer.drain()

    def take(self, chunk: bytes) -> None:
        self.ws.receive_data(chunk or None)
        for event in self.ws.events():
            if isinstance(event, wse.AcceptConnection):
                self.accepted = True
            elif isinstance(event, wse.BytesMessage) and event.data:
                self.channels.setdefault(event.data[0], bytearray()).extend(event.data[1:])
            elif isinstance(event, wse.CloseConnection):
                self.closed = True
        if not chunk:
            self.closed = True

    async def pump(self, until: object, timeout: float = 10.0) -> None:
        assert callable(until)
        async with asyncio.timeout(timeout):
            while not until() and not self.closed:
                self.take(await self.reader.read(65536))


async def ws_client(url: str, subprotocol: str) -> WsClient:
    host_port, _, path = url.removeprefix("http://").partition("/")
    host, _, port = host_port.rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    ws = WSConnection(ConnectionType.CLIENT)
    writer.write(ws.send(wse.Request(host=host_port, target=f"/{path}", subprotocols=[subprotocol])))
    await writer.drain()
    client = WsClient(reader, writer, ws)
    async with asyncio.timeout(5):
        while not client.accepted:
            client.take(await reader.read(65536))
    return client


async def test_websocket_v5_exec_with_stdin_close_signal(server: StreamingServer) -> None:
    client = await ws_client(server.url(exec_request(cmd=("upper", "2"))), "v5.channel.k8s.io")
    await client.send(b"\x00abc")
    await client.send(bytes([255, 0]))  # v5: stdin closed
    await client.pump(lambda: 3 in client.channels and client.channels[3])
    await client.pump(lambda: False, timeout=5)  # until the server closes
    assert bytes(client.channels[1]) == b"ABC"
    assert bytes(client.channels[2]) == b"err"
    status = json.loads(client.channels[3])
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    assert client.closed


async def test_websocket_port_forward(server: StreamingServer) -> None:
    client = await ws_client(server.url(PortForwardRequest("pod", (80, 81))), "v4.channel.k8s.io")
    await client.send(b"\x00ping")
    await client.pump(lambda: len(client.channels.get(0, b"")) >= 6 and len(client.channels.get(3, b"")) > 2)
    assert bytes(client.channels[0]) == (80).to_bytes(2, "little") + b"ping"
    assert bytes(client.channels[3]).startswith((81).to_bytes(2, "little") + b"error forwarding port 81 to pod pod")
    client.writer.close()


async def test_too_many_waiting_tokens_is_resource_exhausted(server: StreamingServer) -> None:
    server.requests.max_in_flight = 2
    server.url(exec_request())
    server.url(exec_request())
    with pytest.raises(errors.ResourceExhausted):
        server.url(exec_request())


async def test_spdy_tunnelled_in_a_websocket_forwards_ports(server: StreamingServer) -> None:
    """client-go's port-forward over WebSocket: SPDY's bytes in binary messages (SPDY/3.1+portforward.k8s.io)."""
    client = await ws_client(server.url(PortForwardRequest("pod", (80,))), "SPDY/3.1+portforward.k8s.io")
    assert client.ws  # the handshake named the tunnelling subprotocol, or wsproto would have refused it
    conn = spdy.Connection(client=True)
    error = conn.open_stream([("streamtype", "error"), ("port", "80"), ("requestid", "0")])
    data = conn.open_stream([("streamtype", "data"), ("port", "80"), ("requestid", "0")])
    conn.send_data(data, b"through the tunnel", fin=True)
    client.writer.write(client.ws.send(wse.BytesMessage(data=conn.data_to_send())))
    received, ended = bytearray(), set[int]()
    async with asyncio.timeout(10):
        while not {data, error} <= ended:
            client.ws.receive_data(await client.reader.read(65536))
            for event in client.ws.events():
                assert isinstance(event, wse.BytesMessage), event
                for frame in conn.receive_data(bytes(event.data)):
                    if isinstance(frame, spdy.DataReceived) and frame.stream_id == data:
                        received += frame.data
                    elif isinstance(frame, spdy.StreamEnded):
                        ended.add(frame.stream_id)
    assert bytes(received) == b"through the tunnel"
    client.writer.close()
