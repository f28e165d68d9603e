from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import h11
import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from pycri.streaming.protocol import HandshakeError, PortForwardOptionsError, Status, StreamingError, TerminalSize
from pycri.streaming.websocket import (
    ChannelClosed,
    ChannelData,
    ConnectionClosed,
    Resize,
    UpgradeRequest,
    WebSocketChannelServer,
    WebSocketClosedError,
)
from pycri.streaming.websocket import Event as ServerEvent

EXEC_TARGET = "/exec/4Bd0cDUF"


def client_request(
    subprotocols: Sequence[str] = (), target: str = EXEC_TARGET, extra_headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[WSConnection, h11.Request]:
    """A wsproto client's upgrade request, parsed by h11 as the server's driver would."""
    client = WSConnection(ConnectionType.CLIENT)
    raw = client.send(
        Request(host="node:10010", target=target, subprotocols=list(subprotocols), extra_headers=list(extra_headers))
    )
    http = h11.Connection(h11.SERVER)
    http.receive_data(raw)
    request = http.next_event()
    assert isinstance(request, h11.Request)
    return client, request


class Session:
    """A wsproto client and the server under test, wired together in memory."""

    def __init__(self, client: WSConnection, server: WebSocketChannelServer) -> None:
        self.client = client
        self.server = server
        self.accepted: AcceptConnection | None = None
        self.replies: list[Event] = []
        self._partial = bytearray()

    def start(self) -> list[Event]:
        """The handshake; returns the server's first messages."""
        return self.to_client(self.server.accept())

    def to_client(self, data: bytes) -> list[Event]:
        """Deliver server bytes; returns the client's events with messages reassembled."""
        self.client.receive_data(data)
        out: list[Event] = []
        for event in self.client.events():
            if isinstance(event, AcceptConnection):
                self.accepted = event
            elif isinstance(event, BytesMessage | TextMessage):
                chunk = event.data.encode() if isinstance(event.data, str) else bytes(event.data)
                self._partial += chunk
                if event.message_finished:
                    data_ = bytes(self._partial)
                    self._partial.clear()
                    out.append(TextMessage(data_.decode()) if isinstance(event, TextMessage) else BytesMessage(data_))
            else:
                out.append(event)
        return out

    def to_server(self, *events: Event) -> list[ServerEvent]:
        wire = b"".join(self.client.send(event) for event in events)
        return self.feed(wire)

    def feed(self, wire: bytes) -> list[ServerEvent]:
        """Raw bytes to the server (never the b"" that means EOF); its automatic replies go straight back to the client."""
        if not wire:
            return []
        events = self.server.receive_data(wire)
        self.replies = self.to_client(self.server.data_to_send())
        return events


def exec_session(
    subprotocols: Sequence[str] = ("v5.channel.k8s.io",), *, stdin: bool = True, stdout: bool = True, stderr: bool = True
) -> tuple[Session, list[Event]]:
    client, request = client_request(subprotocols)
    session = Session(client, WebSocketChannelServer.remote_command(request, stdin=stdin, stdout=stdout, stderr=stderr))
    return session, session.start()


def plain_request(method: str = "GET", target: str = EXEC_TARGET, **overrides: str | None) -> UpgradeRequest:
    headers = {
        "Host": "node",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    for name, value in overrides.items():
        header = name.replace("_", "-")
        if value is None:
            headers.pop(header, None)
        else:
            headers[header] = value
    return UpgradeRequest(method, target, list(headers.items()))


# --- handshake ---------------------------------------------------------------


def test_v5_handshake_and_the_ready_message() -> None:
    session, first = exec_session(["v5.channel.k8s.io"])
    assert session.accepted is not None
    assert session.accepted.subprotocol == "v5.channel.k8s.io"
    assert session.server.subprotocol == "v5.channel.k8s.io"
    assert session.server.status_as_json
    # wsstream: an empty message on the lowest written channel says the session is up.
    assert first == [BytesMessage(b"\x01")]


def test_the_accept_response_bytes() -> None:
    server = WebSocketChannelServer.remote_command(
        plain_request(Sec_WebSocket_Protocol="v4.channel.k8s.io"), stdin=False, stdout=True, stderr=False
    )
    # RFC 6455's example key and answer.
    assert server.accept() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n"
        b"\x82\x01\x01"
    )
    with pytest.raises(StreamingError, match="already"):
        server.accept()


@pytest.mark.parametrize(
    ("stdout", "stderr", "channel"),
    [(True, True, 1), (True, False, 1), (False, True, 2), (False, False, 3)],
)
def test_the_ready_message_goes_to_the_lowest_written_channel(stdout: bool, stderr: bool, channel: int) -> None:
    _, first = exec_session(stdin=True, stdout=stdout, stderr=stderr)
    assert first == [BytesMessage(bytes([channel]))]


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["v5.channel.k8s.io", "v4.channel.k8s.io"], "v5.channel.k8s.io"),
        (["v4.base64.channel.k8s.io", "v5.channel.k8s.io"], "v4.base64.channel.k8s.io"),
        (["v3.channel.k8s.io", "base64.channel.k8s.io", "channel.k8s.io"], "base64.channel.k8s.io"),
        (["foo", "channel.k8s.io"], "channel.k8s.io"),
    ],
)
def test_the_clients_first_acceptable_subprotocol_wins(offered: list[str], chosen: str) -> None:
    session, _ = exec_session(offered)
    assert session.accepted is not None
    assert session.accepted.subprotocol == chosen


def test_no_subprotocol_header_means_binary_channels_and_text_errors() -> None:
    client, request = client_request([])
    server = WebSocketChannelServer.remote_command(request, stdin=True, stdout=True, stderr=False)
    response = server.accept()
    assert b"Sec-WebSocket-Protocol" not in response
    client.receive_data(response)
    events = list(client.events())
    assert events == [AcceptConnection(subprotocol=None), BytesMessage(b"\x01")]
    assert server.subprotocol == ""
    assert not server.status_as_json


def test_no_acceptable_subprotocol_is_refused_with_403() -> None:
    client, request = client_request(["v9.channel.k8s.io", "portforward.k8s.io"])
    with pytest.raises(HandshakeError) as info:
        WebSocketChannelServer.remote_command(request, stdin=True, stdout=True, stderr=True)
    assert info.value.status == 403
    assert "requested protocol(s) are not supported: [v9.channel.k8s.io portforward.k8s.io]" in info.value.message
    response = info.value.response()
    assert response.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    client.receive_data(response)
    events = list(client.events())
    assert isinstance(events[0], RejectConnection)
    assert events[0].status_code == 403
    body = b"".join(e.data for e in events[1:] if isinstance(e, RejectData))
    assert body == info.value.message.encode() + b"\n"


@pytest.mark.parametrize(
    ("request_", "status", "message", "extra"),
    [
        (plain_request("POST"), 405, "bad method", None),
        (plain_request(Upgrade="h2c"), 400, "not websocket protocol", None),
        (plain_request(Connection="keep-alive"), 400, "not websocket protocol", None),
        (plain_request(Sec_WebSocket_Key=None), 400, "mismatch challenge/response", None),
        (plain_request(Sec_WebSocket_Version="8"), 400, "missing or bad WebSocket Version", b"Sec-WebSocket-Version: 13\r\n"),
        (plain_request(Sec_WebSocket_Version=None), 400, "missing or bad WebSocket Version", b"Sec-WebSocket-Version: 13\r\n"),
    ],
)
def test_bad_upgrade_requests(request_: UpgradeRequest, status: int, message: str, extra: bytes | None) -> None:
    with pytest.raises(HandshakeError) as info:
        WebSocketChannelServer.remote_command(request_, stdin=False, stdout=True, stderr=False)
    assert (info.value.status, info.value.message) == (status, message)
    if extra is not None:
        assert extra in info.value.response()


def test_only_the_first_protocol_header_counts() -> None:
    request = plain_request(Sec_WebSocket_Protocol="v9.channel.k8s.io")
    request = UpgradeRequest(request.method, request.target, [*request.headers, ("Sec-WebSocket-Protocol", "v5.channel.k8s.io")])
    with pytest.raises(HandshakeError):
        WebSocketChannelServer.remote_command(request, stdin=False, stdout=True, stderr=False)


def test_an_empty_entry_in_the_offer_selects_the_no_protocol_entry() -> None:
    # x/net keeps empty entries; "" is registered, so "foo, ,bar" is accepted without a subprotocol.
    server = WebSocketChannelServer.remote_command(
        plain_request(Sec_WebSocket_Protocol="foo, ,bar"), stdin=False, stdout=True, stderr=False
    )
    assert server.subprotocol == ""
    assert b"Sec-WebSocket-Protocol" not in server.accept()


def test_receive_before_accept_is_an_error() -> None:
    _, request = client_request(["v5.channel.k8s.io"])
    server = WebSocketChannelServer.remote_command(request, stdin=True, stdout=True, stderr=True)
    with pytest.raises(StreamingError, match="accept"):
        server.receive_data(b"\x82\x80\x00\x00\x00\x00")
    assert not server.can_send


# --- remote command data -----------------------------------------------------


def test_stdin_data_and_dropped_messages() -> None:
    session, _ = exec_session(["v4.channel.k8s.io"], stdin=True, stdout=True, stderr=False)
    events = session.to_server(
        BytesMessage(b"\x00hello\n"),
        BytesMessage(b""),  # empty: skipped
        BytesMessage(b"\x00"),  # no payload: nothing to deliver
        BytesMessage(b"\x01not read"),  # stdout is written, not read
        BytesMessage(b"\x03not read"),  # error channel
        BytesMessage(b"\x09no such channel"),
        BytesMessage(b"\xff\x00"),  # v4 has no CLOSE signal: a message for channel 255
        TextMessage("\x00typed"),  # text frames carry data too, as x/net reads either
        BytesMessage(b"\x00\x00\xff binary"),
    )
    assert events == [ChannelData(0, b"hello\n"), ChannelData(0, b"typed"), ChannelData(0, b"\x00\xff binary")]


def test_stdin_not_requested_is_ignored() -> None:
    session, _ = exec_session(stdin=False)
    assert session.to_server(BytesMessage(b"\x00ignored"), BytesMessage(b"\xff\x00")) == []


def test_server_writes() -> None:
    session, _ = exec_session(["v5.channel.k8s.io"], stdin=True, stdout=True, stderr=True)
    server = session.server
    wire = server.send_stdout(b"out") + server.send_stderr(b"err") + server.send(1, b"")
    assert session.to_client(wire) == [BytesMessage(b"\x01out"), BytesMessage(b"\x02err"), BytesMessage(b"\x01")]
    assert server.send(0, b"stdin is not written") == b""
    with pytest.raises(ValueError, match="channel 5 does not exist"):
        server.send(5, b"x")


def test_unrequested_stderr_is_discarded_as_upstream_does() -> None:
    session, _ = exec_session(stdin=False, stdout=True, stderr=False)
    assert session.server.send_stderr(b"lost") == b""


def test_large_messages_both_ways() -> None:
    session, _ = exec_session()
    big = bytes(range(256)) * 1024
    assert session.to_client(session.server.send_stdout(big)) == [BytesMessage(b"\x01" + big)]
    assert session.to_server(BytesMessage(b"\x00" + big)) == [ChannelData(0, big)]


# --- base64 ------------------------------------------------------------------


def test_base64_channels() -> None:
    session, first = exec_session(["base64.channel.k8s.io"], stdin=True, stdout=True, stderr=True)
    assert first == [TextMessage("1")]
    assert not session.server.status_as_json
    events = session.to_server(
        TextMessage("0" + base64.b64encode(b"foo\n").decode()),
        TextMessage("0Zm9v\r\nCg=="),  # Go's decoder skips CR and LF
        TextMessage("0Zm9vCg"),  # missing padding: dropped
        TextMessage("0Zm9v!!=="),  # not base64: dropped
        TextMessage("0"),  # empty payload
        TextMessage("9Zm9v"),  # no channel 9
        BytesMessage(b"0YmluYXJ5IGZyYW1l"),  # a binary frame with base64 content is read the same
    )
    assert events == [ChannelData(0, b"foo\n"), ChannelData(0, b"foo\n"), ChannelData(0, b"binary frame")]
    wire = session.server.send_stdout(b"\x00\xffout") + session.server.send_stderr(b"")
    assert session.to_client(wire) == [TextMessage("1AP9vdXQ="), TextMessage("2")]


def test_v4_base64_status_is_json_in_base64() -> None:
    session, _ = exec_session(["v4.base64.channel.k8s.io"])
    assert session.server.status_as_json
    [message] = session.to_client(session.server.send_status(Status.success()))
    assert isinstance(message, TextMessage)
    assert message.data[0] == "3"
    assert base64.b64decode(message.data[1:]) == b'{"metadata":{},"status":"Success"}'


# --- fragmentation and arbitrary splits ---------------------------------------


def test_a_message_fragmented_over_frames_is_one_message() -> None:
    session, _ = exec_session()
    events = session.to_server(
        BytesMessage(b"\x00hel", message_finished=False),
        Ping(b"mid-message"),  # control frames may come between fragments
        BytesMessage(b"lo ", message_finished=False),
        BytesMessage(b"world"),
    )
    assert events == [ChannelData(0, b"hello world")]
    assert session.replies == [Pong(b"mid-message")]


def test_a_base64_text_message_fragmented_over_frames() -> None:
    session, _ = exec_session(["base64.channel.k8s.io"])
    encoded = "0" + base64.b64encode(b"fragmented stdin").decode()
    events = session.to_server(TextMessage(encoded[:1], message_finished=False), TextMessage(encoded[1:]))
    assert events == [ChannelData(0, b"fragmented stdin")]


def test_wire_bytes_split_anywhere() -> None:
    reference, _ = exec_session()
    client = reference.client
    wire = b"".join(
        [
            client.send(BytesMessage(b"\x00one")),
            client.send(BytesMessage(b"\x00tw", message_finished=False)),
            client.send(BytesMessage(b"o")),
            client.send(BytesMessage(b'\x04{"Width":80,')),
            client.send(BytesMessage(b'\x04"Height":24}\n')),
            client.send(BytesMessage(b"\x00" + b"x" * 300)),
            client.send(BytesMessage(b"\xff\x00")),
        ]
    )
    expected: list[ServerEvent] = [
        ChannelData(0, b"one"),
        ChannelData(0, b"two"),
        Resize(TerminalSize(80, 24)),
        ChannelData(0, b"x" * 300),
        ChannelClosed(0),
    ]
    for split in range(len(wire) + 1):
        session, _ = exec_session()
        # A split inside a frame or a message never splits the delivered data.
        assert session.feed(wire[:split]) + session.feed(wire[split:]) == expected, split
    one_by_one, _ = exec_session()
    events: list[ServerEvent] = []
    for i in range(len(wire)):
        events += one_by_one.feed(wire[i : i + 1])
    assert events == expected


# --- v5 CLOSE signal -----------------------------------------------------------


def test_v5_close_signal_half_closes_stdin() -> None:
    session, _ = exec_session(["v5.channel.k8s.io"])
    events = session.to_server(
        BytesMessage(b"\x00last words"),
        BytesMessage(b"\xff\x00"),
        BytesMessage(b"\x00after close"),  # dropped: the pipe is closed
        BytesMessage(b"\xff\x00"),  # a second close is a no-op
        BytesMessage(b"\xff\x01"),  # stdout is not read: nothing to close
    )
    assert events == [ChannelData(0, b"last words"), ChannelClosed(0)]
    # The session goes on: the server still writes.
    assert session.to_client(session.server.send_stdout(b"bye")) == [BytesMessage(b"\x01bye")]


@pytest.mark.parametrize("message", [b"\xff", b"\xff\x00\x00", b"\xff\x05", b"\xff\xff"])
def test_a_malformed_close_signal_ends_the_connection(message: bytes) -> None:
    session, _ = exec_session(["v5.channel.k8s.io"])
    events = session.to_server(BytesMessage(message), BytesMessage(b"\x00too late"))
    assert len(events) == 1
    assert isinstance(events[0], ConnectionClosed)
    assert events[0].code == 1002
    assert session.replies == [CloseConnection(1002, events[0].reason)]
    assert session.server.finished
    assert not session.server.can_send
    with pytest.raises(WebSocketClosedError):
        session.server.send_stdout(b"x")


def test_close_signal_on_the_resize_channel_flushes_a_trailing_null() -> None:
    session, _ = exec_session(["v5.channel.k8s.io"])
    events = session.to_server(BytesMessage(b'\x04{"Width":1,"Height":2}null'), BytesMessage(b"\xff\x04"))
    assert events == [Resize(TerminalSize(1, 2)), Resize(TerminalSize(0, 0)), ChannelClosed(4)]


# --- resize --------------------------------------------------------------------


def test_resize_messages_are_decoded_across_messages() -> None:
    session, _ = exec_session(["v4.channel.k8s.io"])
    events = session.to_server(
        BytesMessage(b'\x04{"Width":80,"Hei'),
        BytesMessage(b'\x04ght":24}\n{"Width":100,"Height":40}\n'),
        BytesMessage(b"\x00ls\n"),
    )
    assert events == [Resize(TerminalSize(80, 24)), Resize(TerminalSize(100, 40)), ChannelData(0, b"ls\n")]


def test_bad_resize_json_stops_resizes_but_not_the_session() -> None:
    session, _ = exec_session(["v4.channel.k8s.io"])
    events = session.to_server(
        BytesMessage(b'\x04{"Width":"wide"}'),
        BytesMessage(b'\x04{"Width":80,"Height":24}'),
        BytesMessage(b"\x00still here"),
    )
    assert events == [ChannelData(0, b"still here")]
    assert session.server.resize_error is not None
    assert "cannot unmarshal string" in session.server.resize_error


def test_resize_channel_in_base64() -> None:
    session, _ = exec_session(["base64.channel.k8s.io"])
    payload = base64.b64encode(b'{"Width":132,"Height":43}\n').decode()
    assert session.to_server(TextMessage("4" + payload)) == [Resize(TerminalSize(132, 43))]


# --- status ----------------------------------------------------------------------


def test_v5_exit_code_status_bytes() -> None:
    session, _ = exec_session(["v5.channel.k8s.io"])
    status = Status.non_zero_exit(3, "error executing command [sh -c exit 3], exit code 3")
    [message] = session.to_client(session.server.send_status(status))
    assert message == BytesMessage(
        b'\x03{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert isinstance(message, BytesMessage)
    decoded = json.loads(message.data[1:])
    assert decoded["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


@pytest.mark.parametrize("subprotocol", ["channel.k8s.io", ""])
def test_pre_v4_status_is_text_and_nothing_on_success(subprotocol: str) -> None:
    session, _ = exec_session([subprotocol] if subprotocol else [])
    assert session.server.send_status(Status.success()) == b""
    [message] = session.to_client(session.server.send_status(Status.internal_error("error executing command in container: boom")))
    assert message == BytesMessage(b"\x03Internal error occurred: error executing command in container: boom")


# --- control frames and closing ------------------------------------------------------


def test_ping_is_answered_and_queued_replies_come_first() -> None:
    session, _ = exec_session()
    wire = session.client.send(Ping(b"are you there"))
    assert session.server.receive_data(wire) == []
    # Not drained with data_to_send(): the next send carries the pong first.
    out = session.server.send_stdout(b"yes")
    assert session.to_client(out) == [Pong(b"are you there"), BytesMessage(b"\x01yes")]
    assert session.server.data_to_send() == b""


def test_client_close() -> None:
    session, _ = exec_session()
    events = session.to_server(BytesMessage(b"\x00bye"), CloseConnection(1000, "done"))
    assert events == [ChannelData(0, b"bye"), ConnectionClosed(1000, "done")]
    assert session.replies == [CloseConnection(1000, "done")]
    assert not session.server.can_send
    with pytest.raises(WebSocketClosedError):
        session.server.send_status(Status.success())
    assert session.server.close() == b""
    assert session.server.receive_data(b"more") == []


def test_server_close() -> None:
    session, _ = exec_session()
    late = session.client.send(BytesMessage(b"\x00late"))  # in flight when the server closes
    wire = session.server.send_status(Status.success()) + session.server.close()
    assert not session.server.can_send
    assert session.server.close() == b""
    # After our close frame, input is no longer delivered.
    assert session.server.receive_data(late) == []
    assert session.to_client(wire) == [BytesMessage(b'\x03{"metadata":{},"status":"Success"}'), CloseConnection(1000, "")]
    reply = session.client.send(CloseConnection(1000))
    assert session.server.receive_data(reply) == [ConnectionClosed(1000, "")]
    assert session.server.finished


def test_eof_without_close_frame() -> None:
    session, _ = exec_session()
    events = session.feed(session.client.send(BytesMessage(b'\x04{"Width":5}null')))
    assert events == [Resize(TerminalSize(5, 0))]
    assert session.server.receive_data(b"") == [Resize(TerminalSize(0, 0)), ConnectionClosed(1006, "transport closed")]
    assert not session.server.can_send


def test_message_too_big() -> None:
    client, request = client_request(["v5.channel.k8s.io"])
    server = WebSocketChannelServer.remote_command(request, stdin=True, stdout=True, stderr=True, max_message_size=10)
    session = Session(client, server)
    session.start()
    assert session.to_server(BytesMessage(b"\x00" + b"x" * 9)) == [ChannelData(0, b"x" * 9)]
    events = session.to_server(BytesMessage(b"\x00" + b"x" * 5, message_finished=False), BytesMessage(b"y" * 5))
    assert events == [ConnectionClosed(1009, "message larger than 10 bytes")]
    assert session.replies == [CloseConnection(1009, "message larger than 10 bytes")]


def test_unmasked_client_frame_is_a_protocol_error() -> None:
    session, _ = exec_session()
    events = session.feed(b"\x82\x03\x00abc")  # a binary frame without a mask
    assert len(events) == 1
    assert isinstance(events[0], ConnectionClosed)
    assert events[0].code == 1002
    [reply] = session.replies
    assert isinstance(reply, CloseConnection)
    assert reply.code == 1002


def test_invalid_utf8_in_a_text_frame_closes_with_1007() -> None:
    session, _ = exec_session(["base64.channel.k8s.io"])
    # A masked text frame (mask 0) holding 0xff.
    events = session.feed(b"\x81\x82\x00\x00\x00\x000\xff")
    assert len(events) == 1
    assert isinstance(events[0], ConnectionClosed)
    assert events[0].code == 1007


# --- port forward ----------------------------------------------------------------------


def port_forward_session(
    subprotocols: Sequence[str] = ("v4.channel.k8s.io",),
    target: str = "/portforward/tok?port=80&port=8080",
    ports: list[int] | None = None,
) -> tuple[Session, list[Event]]:
    client, request = client_request(subprotocols, target=target)
    session = Session(client, WebSocketChannelServer.port_forward(request, ports))
    return session, session.start()


def test_port_forward_port_prefixes() -> None:
    session, first = port_forward_session()
    assert session.server.ports == (80, 8080)
    assert first == [
        BytesMessage(b"\x00\x50\x00"),
        BytesMessage(b"\x01\x50\x00"),
        BytesMessage(b"\x02\x90\x1f"),
        BytesMessage(b"\x03\x90\x1f"),
    ]
    assert session.server.port_channels(1) == (2, 3)
    assert session.server.port_of(3) == 8080
    with pytest.raises(IndexError):
        session.server.port_channels(2)


def test_port_forward_data_both_ways() -> None:
    session, _ = port_forward_session()
    events = session.to_server(
        BytesMessage(b"\x00GET / HTTP/1.0\r\n\r\n"),
        BytesMessage(b"\x01errors are not read"),
        BytesMessage(b"\x02\x16\x03\x01"),
        BytesMessage(b"\x04no such channel"),
    )
    assert events == [ChannelData(0, b"GET / HTTP/1.0\r\n\r\n"), ChannelData(2, b"\x16\x03\x01")]
    wire = session.server.send(0, b"HTTP/1.0 200 OK\r\n") + session.server.send_port_error(1, "error forwarding port 8080")
    assert session.to_client(wire) == [BytesMessage(b"\x00HTTP/1.0 200 OK\r\n"), BytesMessage(b"\x03error forwarding port 8080")]


def test_port_forward_base64() -> None:
    session, first = port_forward_session(["v4.base64.channel.k8s.io"], target="/portforward/tok?port=5432")
    assert first == [TextMessage("0OBU="), TextMessage("1OBU=")]
    assert session.to_server(TextMessage("0" + base64.b64encode(b"\x00\x00\x00\x08").decode())) == [
        ChannelData(0, b"\x00\x00\x00\x08")
    ]


def test_port_forward_without_subprotocol_and_with_explicit_ports() -> None:
    session, first = port_forward_session([], target="/portforward/tok?port=1", ports=[443])
    assert session.server.subprotocol == ""
    assert session.server.ports == (443,)
    assert first == [BytesMessage(b"\x00\xbb\x01"), BytesMessage(b"\x01\xbb\x01")]


def test_port_forward_with_many_ports_uses_high_channel_numbers() -> None:
    ports = list(range(1000, 1064))
    session, first = port_forward_session(ports=ports)
    assert len(first) == 128
    assert first[-1] == BytesMessage(bytes([127]) + (1063).to_bytes(2, "little"))
    assert session.to_server(BytesMessage(bytes([126]) + b"x")) == [ChannelData(126, b"x")]
    assert session.server.port_of(126) == 1063


def test_port_forward_base64_channels_past_nine() -> None:
    session, first = port_forward_session(["v4.base64.channel.k8s.io"], ports=[1, 2, 3, 4, 5, 6])
    assert first[10] == TextMessage(":BgA=")  # '0' + 10
    assert session.to_server(TextMessage(":" + base64.b64encode(b"ten").decode())) == [ChannelData(10, b"ten")]


@pytest.mark.parametrize("subprotocol", ["channel.k8s.io", "base64.channel.k8s.io", "v5.channel.k8s.io", "portforward.k8s.io"])
def test_port_forward_refuses_remote_command_protocols(subprotocol: str) -> None:
    _, request = client_request([subprotocol], target="/portforward/tok?port=80")
    with pytest.raises(HandshakeError) as info:
        WebSocketChannelServer.port_forward(request)
    assert info.value.status == 403


@pytest.mark.parametrize(
    ("target", "ports", "message"),
    [
        ("/portforward/tok", None, 'query parameter "port" is required'),
        ("/portforward/tok?port=http", None, 'unable to parse "http" as a port'),
        ("/portforward/tok?port=0", None, 'port "0" must be > 0'),
        ("/portforward/tok", [0], "port 0 is out of range"),
        ("/portforward/tok", [65536], "port 65536 is out of range"),
        ("/portforward/tok", list(range(1, 130)), "at most 128 ports"),
    ],
)
def test_port_forward_bad_ports(target: str, ports: list[int] | None, message: str) -> None:
    _, request = client_request(["v4.channel.k8s.io"], target=target)
    with pytest.raises(PortForwardOptionsError) as info:
        WebSocketChannelServer.port_forward(request, ports)
    assert info.value.status == 400
    assert message in info.value.message


def test_port_forward_query_errors_come_before_websocket_checks() -> None:
    with pytest.raises(PortForwardOptionsError):
        WebSocketChannelServer.port_forward(plain_request("POST", target="/portforward/tok"))


def test_port_forward_with_no_ports() -> None:
    session, first = port_forward_session(ports=[])
    assert first == []
    assert session.server.channels == ()
    assert session.to_server(BytesMessage(b"\x00x")) == []
