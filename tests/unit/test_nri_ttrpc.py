"""ttrpc and NRI's multiplexer at the byte level: frames, splits, interleaving, faults."""

from __future__ import annotations

import struct

import pytest

from pycri.nri import ttrpc, ttrpc_pb2
from pycri.nri.mux import MAX_PAYLOAD, PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN, Mux, MuxData, MuxError
from pycri.nri.ttrpc import (
    MAX_MESSAGE_LENGTH,
    CallCompleted,
    CallFailed,
    ClientConnection,
    Code,
    ConnectionClosed,
    Frame,
    FrameDecoder,
    MessageType,
    OversizedFrame,
    OversizedMessage,
    ProtocolViolation,
    RequestReceived,
    RpcError,
    ServerConnection,
    encode_frame,
)

SERVICE = "nri.pkg.api.v1alpha1.Plugin"


def request_frame(stream_id: int, service: str = SERVICE, method: str = "Configure", payload: bytes = b"x") -> bytes:
    body = ttrpc_pb2.Request(service=service, method=method, payload=payload).SerializeToString()
    return encode_frame(stream_id, MessageType.REQUEST, 0, body)


def responses(data: bytes) -> list[tuple[int, ttrpc_pb2.Response]]:
    out = []
    for frame in FrameDecoder().feed(data):
        assert isinstance(frame, Frame)
        assert frame.type == MessageType.RESPONSE
        out.append((frame.stream_id, ttrpc_pb2.Response.FromString(frame.data)))
    return out


def server() -> ServerConnection:
    return ServerConnection({SERVICE: {"Configure", "Synchronize"}})


# -- frames --------------------------------------------------------------------------------------


def test_frame_header_layout() -> None:
    # 4-byte length, 4-byte stream id, type, flags: the bytes Go's channel.send writes.
    assert encode_frame(3, MessageType.RESPONSE, 0, b"ab") == b"\x00\x00\x00\x02\x00\x00\x00\x03\x02\x00ab"
    assert encode_frame(1, MessageType.DATA, ttrpc.FLAG_REMOTE_CLOSED | ttrpc.FLAG_NO_DATA, b"") == bytes(
        [0, 0, 0, 0, 0, 0, 0, 1, 3, 5]
    )


def test_decoder_reassembles_frames_split_at_every_byte() -> None:
    stream = (
        encode_frame(1, MessageType.REQUEST, 0, b"hello")
        + encode_frame(3, MessageType.REQUEST, 2, b"")
        + encode_frame(5, MessageType.DATA, 1, bytes(range(200)))
    )
    decoder = FrameDecoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i : i + 1])
    assert frames == [
        Frame(1, MessageType.REQUEST, 0, b"hello"),
        Frame(3, MessageType.REQUEST, 2, b""),
        Frame(5, MessageType.DATA, 1, bytes(range(200))),
    ]
    assert decoder.buffered == 0
    assert FrameDecoder().feed(stream) == frames


def test_oversized_frame_is_skipped_without_buffering_and_reported() -> None:
    decoder = FrameDecoder(max_length=16)
    header = struct.pack(">IIBB", 1000, 7, MessageType.REQUEST, 0)
    assert decoder.feed(header + b"\0" * 500) == []
    assert decoder.buffered < 100  # the discarded data is not kept
    after = encode_frame(9, MessageType.REQUEST, 0, b"ok")
    assert decoder.feed(b"\0" * 500 + after) == [OversizedFrame(7, MessageType.REQUEST, 0, 1000), Frame(9, 1, 0, b"ok")]


def test_sender_refuses_an_oversized_message() -> None:
    with pytest.raises(OversizedMessage) as caught:
        encode_frame(1, MessageType.REQUEST, 0, b"\0" * (MAX_MESSAGE_LENGTH + 1))
    assert caught.value.code == Code.RESOURCE_EXHAUSTED
    assert caught.value.message == f"message length {MAX_MESSAGE_LENGTH + 1} exceed maximum message size of {MAX_MESSAGE_LENGTH}"
    encode_frame(1, MessageType.REQUEST, 0, b"\0" * MAX_MESSAGE_LENGTH)  # exactly the maximum is fine
    client = ClientConnection()
    with pytest.raises(OversizedMessage):
        client.send_request(SERVICE, "Synchronize", b"\0" * MAX_MESSAGE_LENGTH)
    assert client.data_to_send() == b""
    assert client.waiting == frozenset()


# -- client --------------------------------------------------------------------------------------


def test_client_uses_increasing_odd_stream_ids_and_matches_interleaved_answers() -> None:
    client = ClientConnection()
    ids = [client.send_request(SERVICE, "Configure", b"%d" % i, timeout_nano=2_000_000_000) for i in range(3)]
    assert ids == [1, 3, 5]
    frames = FrameDecoder().feed(client.data_to_send())
    sent = [ttrpc_pb2.Request.FromString(f.data) for f in frames if isinstance(f, Frame)]
    assert [r.payload for r in sent] == [b"0", b"1", b"2"]
    assert {r.timeout_nano for r in sent} == {2_000_000_000}
    assert all(isinstance(f, Frame) and f.flags == 0 for f in frames)  # unary requests carry no flags
    answers = (
        encode_frame(5, MessageType.RESPONSE, 0, ttrpc_pb2.Response(payload=b"five").SerializeToString())
        + encode_frame(1, MessageType.RESPONSE, 0, ttrpc_pb2.Response(payload=b"one").SerializeToString())
        + encode_frame(
            3, MessageType.RESPONSE, 0, ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=5, message="gone")).SerializeToString()
        )
    )
    events = client.receive_data(answers[:7]) + client.receive_data(answers[7:30]) + client.receive_data(answers[30:])
    assert events[:2] == [CallCompleted(5, b"five"), CallCompleted(1, b"one")]
    assert isinstance(events[2], CallFailed)
    assert (events[2].stream_id, events[2].error.code, events[2].error.message) == (3, Code.NOT_FOUND, "gone")
    assert client.waiting == frozenset()


def test_client_ignores_answers_on_streams_it_does_not_wait_for() -> None:
    client = ClientConnection()
    sid = client.send_request(SERVICE, "Configure", b"")
    client.forget(sid)  # timed out
    late = encode_frame(sid, MessageType.RESPONSE, 0, b"")
    stray = encode_frame(41, MessageType.RESPONSE, 0, b"")
    assert client.receive_data(late + stray) == []


def test_client_fails_a_call_answered_with_something_else_than_a_response() -> None:
    client = ClientConnection()
    a, b = client.send_request(SERVICE, "Configure", b""), client.send_request(SERVICE, "Configure", b"")
    events = client.receive_data(encode_frame(a, MessageType.DATA, 0, b"") + encode_frame(b, 0x7F, 0, b""))
    assert [type(e.error) for e in events if isinstance(e, CallFailed)] == [ProtocolViolation, ProtocolViolation]
    assert isinstance(events[0], CallFailed)
    assert events[0].error.message == 'unexpected "data" message received: protocol error'
    assert isinstance(events[1], CallFailed)
    assert events[1].error.message == 'unexpected "unknown" message received: protocol error'


def test_client_fails_a_call_whose_answer_is_oversized() -> None:
    client = ClientConnection(max_length=60)
    sid = client.send_request(SERVICE, "Configure", b"")
    [event] = client.receive_data(struct.pack(">IIBB", 61, sid, MessageType.RESPONSE, 0) + b"\0" * 61)
    assert isinstance(event, CallFailed)
    assert event.error.code == Code.RESOURCE_EXHAUSTED


def test_peer_closing_mid_call_fails_every_waiting_call() -> None:
    client = ClientConnection()
    ids = [client.send_request(SERVICE, "Configure", b"") for _ in range(2)]
    # half a response arrives, then the socket ends
    partial = encode_frame(ids[0], MessageType.RESPONSE, 0, ttrpc_pb2.Response(payload=b"abc").SerializeToString())[:-2]
    assert client.receive_data(partial) == []
    events = client.connection_lost()
    assert [e.stream_id for e in events] == ids
    assert all(isinstance(e, CallFailed) and isinstance(e.error, ConnectionClosed) for e in events)
    assert isinstance(events[0], CallFailed)
    assert events[0].error.message == "ttrpc: closed"
    with pytest.raises(ConnectionClosed):
        client.send_request(SERVICE, "Configure", b"")


# -- server --------------------------------------------------------------------------------------


def test_server_delivers_requests_split_anywhere_and_answers_them() -> None:
    conn = server()
    data = request_frame(1, payload=b"one") + request_frame(3, method="Synchronize", payload=b"two")
    received: list[RequestReceived] = []
    for i in range(0, len(data), 3):
        received += conn.receive_data(data[i : i + 3])
    assert [(r.stream_id, r.method, r.payload) for r in received] == [(1, "Configure", b"one"), (3, "Synchronize", b"two")]
    assert conn.active == {1, 3}
    conn.respond(3, b"answer")
    conn.respond_error(1, Code.INVALID_ARGUMENT, "bad config")
    [(sid3, ok), (sid1, failed)] = responses(conn.data_to_send())
    assert (sid3, ok.payload, ok.HasField("status")) == (3, b"answer", False)  # success: no status at all, as Go sends
    assert (sid1, failed.status.code, failed.status.message) == (1, Code.INVALID_ARGUMENT, "bad config")
    with pytest.raises(ValueError, match="no call to answer"):
        conn.respond(1, b"again")


def test_unknown_service_and_method_are_unimplemented() -> None:
    conn = server()
    assert conn.receive_data(request_frame(1, service="nri.pkg.api.v1alpha1.Other") + request_frame(3, method="Frobnicate")) == []
    [(s1, r1), (s3, r3)] = responses(conn.data_to_send())
    assert (s1, r1.status.code, r1.status.message) == (1, Code.UNIMPLEMENTED, "service nri.pkg.api.v1alpha1.Other")
    assert (s3, r3.status.code, r3.status.message) == (3, Code.UNIMPLEMENTED, "method Frobnicate")
    assert conn.active == frozenset()


def test_server_stream_id_rules() -> None:
    conn = server()
    assert len(conn.receive_data(request_frame(5))) == 1
    assert conn.receive_data(request_frame(4) + request_frame(5) + request_frame(3)) == []
    answers = [(sid, r.status.code, r.status.message) for sid, r in responses(conn.data_to_send())]
    assert answers == [
        (4, Code.INVALID_ARGUMENT, "StreamID must be odd for client initiated streams"),
        (5, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"),
        (3, Code.INVALID_ARGUMENT, "StreamID cannot be re-used and must increment"),
    ]
    assert len(conn.receive_data(request_frame(7))) == 1


def test_server_data_frames_and_unknown_types() -> None:
    conn = server()
    conn.receive_data(request_frame(1))
    events = conn.receive_data(
        encode_frame(1, MessageType.DATA, 0, b"")  # on the call under way: dropped
        + encode_frame(9, MessageType.DATA, 0, b"")  # on no call
        + encode_frame(11, 0x42, 0, b"future")  # a type of a later version: ignored
        + encode_frame(13, MessageType.RESPONSE, 0, b"")  # a response sent to a server: ignored
    )
    assert events == []
    assert [(sid, r.status.message) for sid, r in responses(conn.data_to_send())] == [(9, "StreamID is no longer active")]
    assert len(conn.receive_data(request_frame(15))) == 1  # the connection goes on


def test_server_answers_an_unparsable_request_and_an_oversized_one() -> None:
    conn = ServerConnection({SERVICE: {"Configure"}}, max_length=200)
    bad = encode_frame(1, MessageType.REQUEST, 0, b"\x0a\x05ab")  # a string field cut short
    big = struct.pack(">IIBB", 300, 3, MessageType.REQUEST, 0) + b"\0" * 300
    assert conn.receive_data(bad + big + request_frame(5)) != []
    answers = {sid: r.status for sid, r in responses(conn.data_to_send())}
    assert answers[1].code == Code.INVALID_ARGUMENT
    assert answers[1].message.startswith("unmarshal request error: ")
    assert answers[3].code == Code.RESOURCE_EXHAUSTED
    assert answers[3].message == "message length 300 exceed maximum message size of 200"


def test_server_answers_resource_exhausted_when_its_own_answer_is_too_large() -> None:
    conn = ServerConnection({SERVICE: {"Configure"}}, max_length=200)
    conn.receive_data(request_frame(1))
    conn.respond(1, b"\0" * 300)
    [(sid, answer)] = responses(conn.data_to_send())
    assert (sid, answer.status.code) == (1, Code.RESOURCE_EXHAUSTED)


def test_server_after_connection_lost_sends_nothing() -> None:
    conn = server()
    conn.receive_data(request_frame(1))
    conn.connection_lost()
    conn.respond(1, b"late")
    assert conn.data_to_send() == b""
    assert conn.receive_data(request_frame(3)) == []


def test_client_and_server_talk() -> None:
    client, srv = ClientConnection(), server()
    sid = client.send_request(SERVICE, "Synchronize", b"state")
    [request] = srv.receive_data(client.data_to_send())
    srv.respond(request.stream_id, request.payload.upper())
    assert client.receive_data(srv.data_to_send()) == [CallCompleted(sid, b"STATE")]
    sid = client.send_request("nope", "Configure", b"")
    srv.receive_data(client.data_to_send())
    [failed] = client.receive_data(srv.data_to_send())
    assert isinstance(failed, CallFailed)
    assert isinstance(failed.error, RpcError)
    assert (failed.error.code, str(failed.error)) == (Code.UNIMPLEMENTED, "UNIMPLEMENTED: service nope")


# -- multiplexer ---------------------------------------------------------------------------------


def test_mux_frame_layout_and_reserved_id() -> None:
    mux = Mux()
    mux.send(PLUGIN_SERVICE_CONN, b"abc")
    mux.send(RUNTIME_SERVICE_CONN, b"")
    assert mux.data_to_send() == b"\0\0\0\x01\0\0\0\x03abc" + b"\0\0\0\x02\0\0\0\0"
    with pytest.raises(ValueError, match="reserved"):
        mux.open(0)
    with pytest.raises(ValueError, match="reserved"):
        mux.send(0, b"x")


def test_mux_splits_large_writes_and_reassembles_them() -> None:
    sender, receiver = Mux(send_frame=MAX_PAYLOAD), Mux()
    receiver.open(PLUGIN_SERVICE_CONN)
    payload = bytes(range(256)) * ((MAX_PAYLOAD * 2) // 256 + 3)
    sender.send(PLUGIN_SERVICE_CONN, payload)
    wire = sender.data_to_send()
    assert struct.unpack(">II", wire[:8]) == (PLUGIN_SERVICE_CONN, MAX_PAYLOAD)
    assert len(wire) == len(payload) + 8 * 3
    got = b"".join(item.data for i in range(0, len(wire), 65536) for item in receiver.receive_data(wire[i : i + 65536]))
    assert got == payload


def test_mux_sends_frames_no_longer_than_the_go_peer_reads_at_once() -> None:
    """Upstream's ttrpc reads through a 4096-byte bufio.Reader: a longer frame fails its read with ENOMEM."""
    sender, receiver = Mux(), Mux()
    receiver.open(PLUGIN_SERVICE_CONN)
    payload = bytes(range(256)) * 40  # 10240 bytes
    sender.send(PLUGIN_SERVICE_CONN, payload)
    wire = sender.data_to_send()
    lengths, offset = [], 0
    while offset < len(wire):
        _, length = struct.unpack(">II", wire[offset : offset + 8])
        lengths.append(length)
        offset += 8 + length
    assert lengths == [4096, 4096, 2048]
    assert b"".join(item.data for item in receiver.receive_data(wire)) == payload


def test_mux_interleaves_connections_and_drops_unopened_ones() -> None:
    sender, receiver = Mux(), Mux()
    receiver.open(PLUGIN_SERVICE_CONN)
    receiver.open(RUNTIME_SERVICE_CONN)
    sender.send(PLUGIN_SERVICE_CONN, b"p1")
    sender.send(7, b"nobody listens")
    sender.send(RUNTIME_SERVICE_CONN, b"r1")
    sender.send(RUNTIME_SERVICE_CONN, b"r2")
    sender.send(PLUGIN_SERVICE_CONN, b"p2")
    wire = sender.data_to_send()
    items = []
    for byte in range(len(wire)):
        items += receiver.receive_data(wire[byte : byte + 1])
    assert items == [MuxData(1, b"p1"), MuxData(2, b"r1"), MuxData(2, b"r2"), MuxData(1, b"p2")]
    assert receiver.receive_data(wire) == [MuxData(1, b"p1"), MuxData(2, b"r1r2"), MuxData(1, b"p2")]


def test_mux_refuses_a_frame_longer_than_any_sender_writes() -> None:
    receiver = Mux()
    receiver.open(PLUGIN_SERVICE_CONN)
    with pytest.raises(MuxError, match="more than"):
        receiver.receive_data(struct.pack(">II", PLUGIN_SERVICE_CONN, MAX_PAYLOAD + 1))


def test_ttrpc_over_the_mux_both_ways() -> None:
    # The runtime calls the plugin on connection 1 while the plugin calls the runtime on connection 2.
    runtime_mux, plugin_mux = Mux(), Mux()
    for mux in (runtime_mux, plugin_mux):
        mux.open(PLUGIN_SERVICE_CONN)
        mux.open(RUNTIME_SERVICE_CONN)
    runtime_client, runtime_server = ClientConnection(), ServerConnection({"nri.pkg.api.v1alpha1.Runtime": {"RegisterPlugin"}})
    plugin_client, plugin_server = ClientConnection(), server()
    plugin_client.send_request("nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", b"reg")
    runtime_client.send_request(SERVICE, "Configure", b"cfg")
    plugin_mux.send(RUNTIME_SERVICE_CONN, plugin_client.data_to_send())
    runtime_mux.send(PLUGIN_SERVICE_CONN, runtime_client.data_to_send())
    to_runtime, to_plugin = plugin_mux.data_to_send(), runtime_mux.data_to_send()
    [at_runtime] = runtime_mux.receive_data(to_runtime)
    [at_plugin] = plugin_mux.receive_data(to_plugin)
    assert at_runtime.conn_id == RUNTIME_SERVICE_CONN
    assert at_plugin.conn_id == PLUGIN_SERVICE_CONN
    [register] = runtime_server.receive_data(at_runtime.data)
    [configure] = plugin_server.receive_data(at_plugin.data)
    assert (register.stream_id, register.payload, configure.stream_id, configure.payload) == (1, b"reg", 1, b"cfg")
