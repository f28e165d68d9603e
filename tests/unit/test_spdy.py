from __future__ import annotations

import hashlib
import random
import struct
import tracemalloc
import zlib

import pytest

from pycri.streaming import spdy
from pycri.streaming.spdy import (
    HEADER_DICTIONARY,
    MAX_FRAME_LENGTH,
    MAX_WINDOW_SIZE,
    Connection,
    DataFrame,
    DataReceived,
    Event,
    FlowControl,
    FlowControlError,
    Frame,
    FrameDecoder,
    FrameEncoder,
    GoAwayFrame,
    GoAwayReceived,
    GoAwayStatus,
    Headers,
    HeadersFrame,
    HeadersReceived,
    LocalProtocolError,
    PingAcknowledged,
    PingFrame,
    PingReceived,
    ProtocolError,
    RstStatus,
    RstStreamFrame,
    Setting,
    SettingsFrame,
    SettingsId,
    SettingsReceived,
    StreamClosedError,
    StreamEnded,
    StreamOpened,
    StreamReplied,
    StreamReset,
    StreamState,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdated,
    WindowUpdateFrame,
)

H = Headers.of

# Frames written by spdystream's own spdy.Framer.WriteFrame (github.com/moby/spdystream, Go 1.19), in this
# order, through one Framer, so the four header blocks share one zlib context:
#   SynStreamFrame{StreamId: 1, Headers: {"Streamtype": {"error"}}}
#   SynReplyFrame{StreamId: 1, Headers: {}}
#   SynStreamFrame{StreamId: 3, Priority: 2, Flags: FIN, Headers: {"Streamtype": {"stdout"}}}
#   HeadersFrame{StreamId: 3, Headers: {"X-Multi": {"a", "b"}}}
#   DataFrame{StreamId: 1, Data: "hello"}, DataFrame{StreamId: 1, Flags: FIN}
#   RstStreamFrame{StreamId: 3, Status: Cancel}
#   SettingsFrame{{Id: InitialWindowSize, Value: 131072}, {Flag: PersistValue, Id: MaxConcurrentStreams, Value: 100}}
#   PingFrame{Id: 1}, WindowUpdateFrame{StreamId: 1, DeltaWindowSize: 4096}, GoAwayFrame{LastGoodStreamId: 3, Status: OK}
SPDYSTREAM_GOLDEN = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff"
    "800300020000000e000000016260606000000000ffff"
    "800300010100001900000003000000004000c22acd565c92925f5a02000000ffff"
    "80030008000000190000000382cab157e8e696e69464820b54862400000000ffff"
    "000000010000000568656c6c6f"
    "0000000101000000"
    "80030003000000080000000300000005"
    "80030004000000140000000200000007000200000100000400000064"
    "800300060000000400000001"
    "80030009000000080000000100001000"
    "80030007000000080000000300000000"
)


class RawPeer:
    """A hand-driven peer speaking frames, with its own compression context per direction."""

    def __init__(self) -> None:
        self.encoder = FrameEncoder()
        self.decoder = FrameDecoder()

    def encode(self, *frames: Frame) -> bytes:
        return b"".join(self.encoder.encode(frame) for frame in frames)

    def decode(self, data: bytes) -> list[Frame]:
        self.decoder.receive_data(data)
        frames = []
        while (frame := self.decoder.next_frame()) is not None:
            frames.append(frame)
        assert self.decoder.buffered == 0
        return frames


def pair(flow_control: FlowControl = FlowControl.AUTO) -> tuple[Connection, Connection]:
    return Connection(client=True, flow_control=flow_control), Connection(flow_control=flow_control)


def transfer(source: Connection, dest: Connection) -> list[Event]:
    return dest.receive_data(source.data_to_send())


def server_with_raw_client(flow_control: FlowControl = FlowControl.AUTO) -> tuple[Connection, RawPeer]:
    return Connection(flow_control=flow_control), RawPeer()


def raw_header_block(*pairs: tuple[bytes, bytes]) -> bytes:
    """A header block built by hand from the SPDY/3 draft, independent of the module's encoder."""
    out = struct.pack(">I", len(pairs))
    for name, value in pairs:
        out += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return out


# --- dictionary and golden bytes -------------------------------------------------------------------


def test_dictionary_is_spdystreams() -> None:
    # Length, SHA-256 and Adler-32 of the byte slice in spdystream's spdy/dictionary.go.
    assert len(HEADER_DICTIONARY) == 1423
    assert hashlib.sha256(HEADER_DICTIONARY).hexdigest() == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    assert zlib.adler32(HEADER_DICTIONARY) == 0xE3C6A7C2
    assert HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert HEADER_DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_decodes_frames_written_by_spdystream() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(SPDYSTREAM_GOLDEN)
    frames = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    assert frames == [
        SynStreamFrame(1, H([("streamtype", "error")])),
        SynReplyFrame(1, H([])),
        SynStreamFrame(3, H([("streamtype", "stdout")]), priority=2, fin=True),
        HeadersFrame(3, H([("x-multi", "a"), ("x-multi", "b")])),
        DataFrame(1, b"hello"),
        DataFrame(1, b"", fin=True),
        RstStreamFrame(3, RstStatus.CANCEL),
        SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 131072), Setting(SettingsId.MAX_CONCURRENT_STREAMS, 100, 1))),
        PingFrame(1),
        WindowUpdateFrame(1, 4096),
        GoAwayFrame(3, GoAwayStatus.OK),
    ]
    assert decoder.buffered == 0


def test_decodes_blocks_compressed_independently_with_the_dictionary() -> None:
    compressor = zlib.compressobj(level=6, zdict=HEADER_DICTIONARY)
    frames = b""
    for stream_id, block in (
        (1, raw_header_block((b"streamtype", b"error"), (b"requestid", b"0"))),
        (3, raw_header_block((b"streamtype", b"stdout"), (b"requestid", b"0"), (b"x-multi", b"a\x00b"))),
    ):
        compressed = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
        frames += struct.pack(">HHI", 0x8003, 1, len(compressed) + 10) + struct.pack(">IIBB", stream_id, 0, 0, 0)
        frames += compressed
    events = Connection().receive_data(frames)
    assert events == [
        StreamOpened(1, H([("streamtype", "error"), ("requestid", "0")])),
        StreamOpened(3, H([("streamtype", "stdout"), ("requestid", "0"), ("x-multi", "a"), ("x-multi", "b")])),
    ]


def test_encoder_output_decompresses_independently_and_keeps_one_context() -> None:
    encoder = FrameEncoder()
    decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)
    for stream_id in (1, 3, 5):
        headers = H({"streamType": "data", "port": str(8000 + stream_id)})
        frame = encoder.encode(SynStreamFrame(stream_id, headers, priority=7))
        control, frame_type, flags_length = struct.unpack_from(">HHI", frame)
        assert (control, frame_type, flags_length >> 24, flags_length & 0xFFFFFF) == (0x8003, 1, 0, len(frame) - 8)
        assert struct.unpack_from(">IIBB", frame, 8) == (stream_id, 0, 7 << 5, 0)
        compressed = frame[18:]
        assert compressed.endswith(b"\x00\x00\xff\xff")  # Z_SYNC_FLUSH ends every block
        if stream_id == 1:
            assert compressed[:2] == b"\x78\xf9"  # zlib header: level 9, FDICT, like Go's
            assert compressed[2:6] == struct.pack(">I", zlib.adler32(HEADER_DICTIONARY))
        assert decompressor.decompress(compressed) == raw_header_block(
            (b"streamtype", b"data"), (b"port", str(8000 + stream_id).encode())
        )


# --- header blocks ---------------------------------------------------------------------------------


def test_header_block_encoding() -> None:
    assert spdy.encode_header_block({"A": "1"}) == b"\0\0\0\x01\0\0\0\x01a\0\0\0\x011"
    assert spdy.encode_header_block([("X", "1"), ("y", "2"), ("x", "3")]) == raw_header_block((b"x", b"1\x003"), (b"y", b"2"))
    assert spdy.encode_header_block([]) == b"\0\0\0\0"
    assert spdy.decode_header_block(raw_header_block((b"x", b"1\x003"), (b"Y", b""))) == (("x", "1"), ("x", "3"), ("y", ""))
    assert spdy.decode_header_block(raw_header_block((b"h", "caf\xe9".encode("latin-1")))) == (("h", "caf\xe9"),)


@pytest.mark.parametrize(
    "headers",
    [[("", "x")], [("a\0b", "x")], [("a", "x\0y")], [("a", "\u20ac")]],
)
def test_header_block_encoding_rejects(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(LocalProtocolError):
        spdy.encode_header_block(headers)


@pytest.mark.parametrize(
    "block",
    [
        b"",
        b"\0\0\0",
        b"\0\0\0\x01\0\0\0\x01a",  # value missing
        b"\0\0\0\x01\0\0\0\x05ab\0\0\0\0",  # name runs past the end
        b"\xff\xff\xff\xff" + b"\0" * 16,  # count larger than the block can hold
        raw_header_block((b"a", b"b")) + b"x",  # stray bytes
    ],
)
def test_header_block_decoding_rejects(block: bytes) -> None:
    with pytest.raises(ProtocolError):
        spdy.decode_header_block(block)


def test_headers_helper() -> None:
    headers = H({"StreamType": "error", "Port": "80"})
    assert tuple(headers) == (("streamtype", "error"), ("port", "80"))
    assert headers.get("STREAMTYPE") == "error"
    assert headers.get("missing") is None
    assert headers.get("missing", "d") == "d"
    assert H([("a", "1"), ("A", "2")]).get_all("a") == ["1", "2"]
    assert Headers.of(headers) is headers


# --- frame round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(1, b"payload"),
        DataFrame(2**31 - 1, b"", fin=True),
        SynStreamFrame(1, H({"a": "1"})),
        SynStreamFrame(7, H([("a", "1"), ("a", "2"), ("b", "")]), associated_stream_id=5, priority=7, slot=3, fin=True),
        SynStreamFrame(9, H({}), unidirectional=True),
        SynReplyFrame(1, H({"status": "200"}), fin=True),
        SynReplyFrame(2, H({})),
        RstStreamFrame(3, RstStatus.STREAM_ALREADY_CLOSED),
        RstStreamFrame(3, 77),
        SettingsFrame(()),
        SettingsFrame((Setting(7, 2**31 - 1), Setting(4, 0, 2), Setting(0xFFFFFF, 2**32 - 1)), clear=True),
        PingFrame(1),
        PingFrame(2**32 - 1),
        GoAwayFrame(0),
        GoAwayFrame(2**31 - 1, GoAwayStatus.INTERNAL_ERROR),
        HeadersFrame(5, H({"x": "y"}), fin=True),
        WindowUpdateFrame(0, 1),
        WindowUpdateFrame(3, MAX_WINDOW_SIZE),
    ],
)
def test_frame_round_trip(frame: Frame) -> None:
    peer = RawPeer()
    data = peer.encode(frame)
    assert peer.decode(data) == [frame]


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(0, b"x"),
        SynStreamFrame(0, H({})),
        SynStreamFrame(1, H({}), priority=8),
        SynReplyFrame(2**31, H({})),
        RstStreamFrame(1, 0),  # spdystream drops the connection on status 0
        PingFrame(0),  # and on ping id 0
        WindowUpdateFrame(1, 0),
        SettingsFrame((Setting(1 << 24, 1),)),
    ],
)
def test_encoder_refuses_frames_spdystream_would_choke_on(frame: Frame) -> None:
    with pytest.raises(LocalProtocolError):
        FrameEncoder().encode(frame)


def test_encoder_checks_before_advancing_the_compression_context() -> None:
    peer = RawPeer()
    with pytest.raises(LocalProtocolError):
        peer.encode(SynStreamFrame(1, H({"a": "1"}), priority=9))
    # Had the refused frame's headers gone into the compressor, this would not decode.
    assert peer.decode(peer.encode(SynStreamFrame(1, H({"b": "2"})))) == [SynStreamFrame(1, H({"b": "2"}))]


def test_unknown_control_frame_is_skipped() -> None:
    peer = RawPeer()
    credential = struct.pack(">HHI", 0x8003, 10, 3) + b"abc"
    data = peer.encode(SynStreamFrame(1, H({"a": "1"}))) + credential + peer.encode(SynStreamFrame(3, H({"a": "2"})))
    assert RawPeer().decode(data)[1] == UnknownControlFrame(10, 0, b"abc")
    assert Connection().receive_data(data) == [StreamOpened(1, H({"a": "1"})), StreamOpened(3, H({"a": "2"}))]


# --- a client and a server -------------------------------------------------------------------------


def test_conversation_between_client_and_server() -> None:
    client, server = pair()
    stream_id = client.open_stream({"streamType": "stdin", "requestID": "1"}, priority=2)
    assert stream_id == 1
    assert transfer(client, server) == [StreamOpened(1, H({"streamtype": "stdin", "requestid": "1"}), priority=2)]
    server.reply(1, {"status": "ok"})
    assert transfer(server, client) == [StreamReplied(1, H({"status": "ok"}))]

    client.send_data(1, b"hello")
    client.send_headers(1, {"x": "y"})
    client.end_stream(1)
    assert transfer(client, server) == [DataReceived(1, b"hello"), HeadersReceived(1, H({"x": "y"})), StreamEnded(1)]
    assert server.stream_state(1) is StreamState.HALF_CLOSED_REMOTE
    assert client.stream_state(1) is StreamState.HALF_CLOSED_LOCAL

    server.send_data(1, b"world")
    server.send_headers(1, {"exit-code": "0"}, fin=True)
    assert transfer(server, client) == [DataReceived(1, b"world"), HeadersReceived(1, H({"exit-code": "0"})), StreamEnded(1)]
    assert client.stream_state(1) is StreamState.CLOSED
    assert server.stream_state(1) is StreamState.CLOSED
    assert client.open_stream_ids == server.open_stream_ids == []
    assert client.stream_state(3) is StreamState.IDLE


def test_server_opened_streams_use_even_ids() -> None:
    client, server = pair()
    assert [server.open_stream({"n": str(i)}) for i in range(3)] == [2, 4, 6]
    events = transfer(server, client)
    assert [event.stream_id for event in events if isinstance(event, StreamOpened)] == [2, 4, 6]
    client.reply(2, {}, fin=True)
    assert transfer(client, server) == [StreamReplied(2, H({})), StreamEnded(2)]
    assert server.stream_state(2) is StreamState.HALF_CLOSED_REMOTE


def test_fin_and_unidirectional_on_open() -> None:
    client, server = pair()
    client.open_stream({"a": "1"}, fin=True)
    assert transfer(client, server) == [StreamOpened(1, H({"a": "1"})), StreamEnded(1)]
    assert client.stream_state(1) is StreamState.HALF_CLOSED_LOCAL

    client.open_stream({"a": "2"}, unidirectional=True)
    assert transfer(client, server) == [StreamOpened(3, H({"a": "2"}), unidirectional=True)]
    assert server.stream_state(3) is StreamState.HALF_CLOSED_LOCAL
    assert client.stream_state(3) is StreamState.HALF_CLOSED_REMOTE
    with pytest.raises(StreamClosedError):
        server.reply(3, {})
    client.send_data(3, b"one way", fin=True)
    assert transfer(client, server) == [DataReceived(3, b"one way"), StreamEnded(3)]
    assert client.stream_state(3) is server.stream_state(3) is StreamState.CLOSED

    client.open_stream({}, fin=True, unidirectional=True)
    assert client.stream_state(5) is StreamState.CLOSED


def test_many_concurrent_streams() -> None:
    client, server = pair()
    ids = [client.open_stream({"requestid": str(i)}) for i in range(300)]
    assert ids == list(range(1, 600, 2))
    opened = transfer(client, server)
    assert [(event.stream_id, event.headers.get("requestid")) for event in opened if isinstance(event, StreamOpened)] == [
        (stream_id, str(i)) for i, stream_id in enumerate(ids)
    ]
    for stream_id in ids:
        server.reply(stream_id, {})
    transfer(server, client)
    for round_ in range(3):
        for stream_id in reversed(ids):
            client.send_data(stream_id, f"{stream_id}:{round_};".encode())
    for stream_id in ids:
        client.end_stream(stream_id)
    received: dict[int, bytes] = {}
    for event in transfer(client, server):
        if isinstance(event, DataReceived):
            received[event.stream_id] = received.get(event.stream_id, b"") + event.data
        elif isinstance(event, StreamEnded):
            server.send_data(event.stream_id, received[event.stream_id], fin=True)
    echoed: dict[int, bytes] = {}
    for event in transfer(server, client):
        if isinstance(event, DataReceived):
            echoed[event.stream_id] = event.data
    assert echoed == {stream_id: b"".join(f"{stream_id}:{r};".encode() for r in range(3)) for stream_id in ids}
    assert client.open_stream_ids == server.open_stream_ids == []


def conversation_bytes() -> bytes:
    """Everything a client sends in a session that touches every frame type, replies coming from a real server."""
    client, server = pair()
    sent = b""

    def flush() -> None:
        nonlocal sent
        data = client.data_to_send()
        sent += data
        server.receive_data(data)
        client.receive_data(server.data_to_send())

    client.open_stream({"streamtype": "error", "requestid": "1"})
    client.open_stream({"streamtype": "stdin", "requestid": "1"}, priority=3)
    client.open_stream({"streamtype": "stdout", "requestid": "1"}, fin=True)
    flush()
    server.reply(1, {})
    server.reply(3, {})
    client.receive_data(server.data_to_send())
    client.send_data(3, b"x" * 300)
    client.send_headers(3, {"trailer": "a"})
    client.ping()
    client.send_settings({SettingsId.INITIAL_WINDOW_SIZE: 1 << 20, SettingsId.MAX_CONCURRENT_STREAMS: 10})
    client.update_window(0, 1000)
    client.send_data(3, b"tail", fin=True)
    client.reset_stream(1, RstStatus.CANCEL)
    client.goaway()
    flush()
    return sent


def feed(chunks: list[bytes]) -> tuple[list[Event], bytes]:
    server = Connection()
    events: list[Event] = []
    for chunk in chunks:
        events += server.receive_data(chunk)
    return events, server.data_to_send()


def test_any_split_of_the_byte_stream_gives_the_same_events() -> None:
    data = conversation_bytes()
    whole_events, whole_output = feed([data])
    assert [type(event) for event in whole_events] == [
        StreamOpened,
        StreamOpened,
        StreamOpened,
        StreamEnded,
        DataReceived,
        HeadersReceived,
        PingReceived,
        SettingsReceived,
        WindowUpdated,
        DataReceived,
        StreamEnded,
        StreamReset,
        GoAwayReceived,
    ]
    assert whole_output  # the ping echo at least
    assert feed([data[i : i + 1] for i in range(len(data))]) == (whole_events, whole_output)
    for cut in range(len(data) + 1):
        assert feed([data[:cut], data[cut:]]) == (whole_events, whole_output), cut
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(data)), 12))
        chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
        assert feed(chunks) == (whole_events, whole_output)


# --- connection errors -----------------------------------------------------------------------------


def assert_terminated_with_goaway(server: Connection, peer: RawPeer, last_good: int = 0) -> None:
    assert server.terminated
    assert peer.decode(server.data_to_send()) == [GoAwayFrame(last_good, GoAwayStatus.PROTOCOL_ERROR)]
    assert server.receive_data(peer.encode(PingFrame(1))) == []
    assert server.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        server.ping()
    with pytest.raises(LocalProtocolError):
        server.open_stream({})


def test_corrupt_header_block_is_a_protocol_error_with_goaway() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({"a": "1"}))))
    server.data_to_send()
    garbage = b"\xff" * 20  # deflate block type 3 does not exist
    frame = struct.pack(">HHI", 0x8003, 1, 10 + len(garbage)) + struct.pack(">IIBB", 3, 0, 0, 0) + garbage
    with pytest.raises(ProtocolError, match="corrupt header block") as info:
        server.receive_data(frame)
    assert info.value.status is GoAwayStatus.PROTOCOL_ERROR
    assert server.stream_state(1) is StreamState.CLOSED
    assert_terminated_with_goaway(server, RawPeer(), last_good=1)


def test_header_block_compressed_with_another_dictionary_is_rejected() -> None:
    compressor = zlib.compressobj(zdict=b"not the spdy dictionary")
    block = compressor.compress(raw_header_block((b"a", b"b"))) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack(">HHI", 0x8003, 2, 4 + len(block)) + struct.pack(">I", 1) + block
    server, peer = server_with_raw_client()
    with pytest.raises(ProtocolError, match="corrupt header block"):
        server.receive_data(frame)
    assert_terminated_with_goaway(server, peer)


def test_header_block_compressed_without_a_dictionary_is_accepted_as_go_does() -> None:
    # Go's zlib.NewReaderDict only checks the dictionary when the stream asks for one (FDICT); so does zlib here.
    compressor = zlib.compressobj()
    block = compressor.compress(raw_header_block((b"a", b"b"))) + compressor.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack(">HHI", 0x8003, 1, 10 + len(block)) + struct.pack(">IIBB", 1, 0, 0, 0) + block
    assert Connection().receive_data(frame) == [StreamOpened(1, H({"a": "b"}))]


def test_header_block_bomb_is_rejected_without_a_big_allocation() -> None:
    value = b"a" * (32 << 20)
    compressor = zlib.compressobj(level=9, zdict=HEADER_DICTIONARY)
    compressed = compressor.compress(raw_header_block((b"bomb", value))) + compressor.flush(zlib.Z_SYNC_FLUSH)
    del value
    assert len(compressed) < 64 << 10
    frame = struct.pack(">HHI", 0x8003, 1, 10 + len(compressed)) + struct.pack(">IIBB", 1, 0, 0, 0) + compressed
    server, peer = server_with_raw_client()
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="more than 1048576 bytes"):
            server.receive_data(frame)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20  # the cap is 1 MiB; the block would be 32 MiB
    assert_terminated_with_goaway(server, peer)


def test_ended_compression_stream_is_a_protocol_error() -> None:
    compressor = zlib.compressobj(zdict=HEADER_DICTIONARY)
    block = compressor.compress(raw_header_block((b"a", b"b"))) + compressor.flush(zlib.Z_FINISH)
    frame = struct.pack(">HHI", 0x8003, 1, 10 + len(block)) + struct.pack(">IIBB", 1, 0, 0, 0) + block
    server, peer = server_with_raw_client()
    with pytest.raises(ProtocolError, match="ended its header compression stream"):
        server.receive_data(frame)
    assert_terminated_with_goaway(server, peer)


def test_header_block_limit_is_configurable() -> None:
    peer = RawPeer()
    data = peer.encode(SynStreamFrame(1, H({"a": "x" * 200})))
    assert Connection(max_header_block_size=300).receive_data(data)[0] == StreamOpened(1, H({"a": "x" * 200}))
    with pytest.raises(ProtocolError):
        Connection(max_header_block_size=100).receive_data(RawPeer().encode(SynStreamFrame(1, H({"a": "x" * 200}))))


def test_oversized_control_frame_is_refused_from_its_header() -> None:
    server, peer = server_with_raw_client()
    with pytest.raises(ProtocolError, match="exceeds"):
        server.receive_data(struct.pack(">HHI", 0x8003, 1, (1 << 20) + 1))  # the 1 MiB body never has to arrive
    assert_terminated_with_goaway(server, peer)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">HHI", 0x8002, 6, 4) + b"\0\0\0\x01", "unsupported SPDY version 2"),
        (struct.pack(">II", 0, 1) + b"x", "DATA frame on stream 0"),
        (struct.pack(">HHI", 0x8003, 6, 8) + b"\0" * 8, "PING frame of bad length"),
        (struct.pack(">HHI", 0x8003, 7, 4) + b"\0" * 4, "GOAWAY frame of bad length"),
        (struct.pack(">HHI", 0x8003, 3, 8) + b"\0" * 8, "RST_STREAM frame on stream 0"),
        (struct.pack(">HHI", 0x8003, 4, 12) + b"\0\0\0\x02" + b"\0" * 8, "cannot hold 2 settings"),
        (struct.pack(">HHI", 0x8003, 9, 4) + b"\0" * 4, "WINDOW_UPDATE frame of bad length"),
        (struct.pack(">HHI", 0x8003, 1, 4) + b"\0\0\0\x01", "SYN_STREAM frame of bad length"),
    ],
)
def test_malformed_frames_are_protocol_errors(data: bytes, message: str) -> None:
    server, peer = server_with_raw_client()
    with pytest.raises(ProtocolError, match=message):
        server.receive_data(data)
    assert_terminated_with_goaway(server, peer)


# --- stream faults: RST_STREAM, not connection errors ---------------------------------------------


def test_data_on_a_stream_never_opened_gets_invalid_stream() -> None:
    server, peer = server_with_raw_client()
    assert server.receive_data(peer.encode(DataFrame(99, b"x"), HeadersFrame(101, H({})))) == []
    assert peer.decode(server.data_to_send()) == [
        RstStreamFrame(99, RstStatus.INVALID_STREAM),
        RstStreamFrame(101, RstStatus.INVALID_STREAM),
    ]
    assert not server.terminated


def test_rst_stream_for_an_unknown_stream_is_ignored() -> None:
    server, peer = server_with_raw_client()
    assert server.receive_data(peer.encode(RstStreamFrame(5, RstStatus.CANCEL))) == []
    assert server.data_to_send() == b""


def test_data_after_fin_gets_stream_already_closed() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({})), DataFrame(1, b"", fin=True)))
    server.reply(1, {})
    assert peer.decode(server.data_to_send()) == [SynReplyFrame(1, H({}))]
    # Half-closed (remote): the stream is reset and this side is told.
    assert server.receive_data(peer.encode(DataFrame(1, b"late"))) == [
        StreamReset(1, RstStatus.STREAM_ALREADY_CLOSED, remote=False)
    ]
    assert peer.decode(server.data_to_send()) == [RstStreamFrame(1, RstStatus.STREAM_ALREADY_CLOSED)]
    assert server.stream_state(1) is StreamState.CLOSED
    with pytest.raises(StreamClosedError):
        server.send_data(1, b"x")

    # Fully closed by FIN both ways: answered, no event.
    server.receive_data(peer.encode(SynStreamFrame(3, H({}), fin=True)))
    server.reply(3, {}, fin=True)
    peer.decode(server.data_to_send())
    assert server.receive_data(peer.encode(DataFrame(3, b"late"))) == []
    assert peer.decode(server.data_to_send()) == [RstStreamFrame(3, RstStatus.STREAM_ALREADY_CLOSED)]


def test_frames_on_reset_streams_are_ignored() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({})), SynStreamFrame(3, H({}))))
    server.reset_stream(1, RstStatus.REFUSED_STREAM)
    assert peer.decode(server.data_to_send()) == [RstStreamFrame(1, RstStatus.REFUSED_STREAM)]
    assert server.receive_data(peer.encode(RstStreamFrame(3, RstStatus.CANCEL))) == [StreamReset(3, RstStatus.CANCEL)]
    # Data that was in flight on either stream: no answer, so no RST ping-pong.
    assert server.receive_data(peer.encode(DataFrame(1, b"x"), DataFrame(3, b"y"), HeadersFrame(1, H({})))) == []
    assert server.data_to_send() == b""
    with pytest.raises(StreamClosedError):
        server.reset_stream(3)


def test_bad_stream_ids_in_syn_stream_get_protocol_error_resets() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(5, H({}))))
    # stale id, this side's parity, and a repeat of an open stream
    events = server.receive_data(peer.encode(SynStreamFrame(3, H({})), SynStreamFrame(4, H({})), SynStreamFrame(5, H({}))))
    assert events == [StreamReset(5, RstStatus.PROTOCOL_ERROR, remote=False)]
    assert peer.decode(server.data_to_send()) == [
        RstStreamFrame(3, RstStatus.PROTOCOL_ERROR),
        RstStreamFrame(4, RstStatus.PROTOCOL_ERROR),
        RstStreamFrame(5, RstStatus.PROTOCOL_ERROR),
    ]
    assert server.receive_data(peer.encode(SynStreamFrame(7, H({"ok": "1"})))) == [StreamOpened(7, H({"ok": "1"}))]


def test_syn_reply_faults() -> None:
    client, peer = Connection(client=True), RawPeer()
    client.open_stream({})
    peer.decode(client.data_to_send())
    assert client.receive_data(peer.encode(SynReplyFrame(1, H({})))) == [StreamReplied(1, H({}))]
    assert client.receive_data(peer.encode(SynReplyFrame(1, H({})))) == [StreamReset(1, RstStatus.STREAM_IN_USE, remote=False)]
    assert peer.decode(client.data_to_send()) == [RstStreamFrame(1, RstStatus.STREAM_IN_USE)]
    # A reply for a stream that is gone is ignored, as spdystream does.
    assert client.receive_data(peer.encode(SynReplyFrame(9, H({})))) == []
    # The peer replying to its own stream is a stream error.
    client.receive_data(peer.encode(SynStreamFrame(2, H({}))))
    assert client.receive_data(peer.encode(SynReplyFrame(2, H({})))) == [StreamReset(2, RstStatus.PROTOCOL_ERROR, remote=False)]


# --- PING, GOAWAY, SETTINGS ------------------------------------------------------------------------


def test_ping_echo_and_acknowledgement() -> None:
    client, server = pair()
    assert [client.ping(), client.ping(), server.ping()] == [1, 3, 2]
    assert transfer(client, server) == [PingReceived(1), PingReceived(3)]
    events = transfer(server, client)
    assert events == [PingReceived(2), PingAcknowledged(1), PingAcknowledged(3)]
    assert transfer(client, server) == [PingAcknowledged(2)]
    # An echo nobody asked for (this side's parity) is ignored, not echoed back.
    assert client.receive_data(RawPeer().encode(PingFrame(5))) == []
    assert client.data_to_send() == b""
    with pytest.raises(LocalProtocolError):
        client.ping(4)


def test_ping_id_zero_is_ignored() -> None:
    zero = struct.pack(">HHI", 0x8003, 6, 4) + b"\0\0\0\0"
    for connection in (Connection(), Connection(client=True)):
        assert connection.receive_data(zero) == []
        assert connection.data_to_send() == b""
        assert not connection.terminated


def test_ping_echo_is_byte_exact() -> None:
    server = Connection()
    ping = bytes.fromhex("800300060000000400000001")  # spdystream's PingFrame{Id: 1}
    assert server.receive_data(ping) == [PingReceived(1)]
    assert server.data_to_send() == ping


def test_goaway_both_ways() -> None:
    client, server = pair()
    client.open_stream({})
    client.open_stream({})
    transfer(client, server)
    server.goaway()
    assert server.goaway_sent
    assert transfer(server, client) == [GoAwayReceived(3, GoAwayStatus.OK)]
    assert client.goaway_received
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        client.open_stream({})
    # Existing streams carry on.
    server.reply(3, {})
    transfer(server, client)
    client.send_data(3, b"still here", fin=True)
    assert transfer(client, server) == [DataReceived(3, b"still here"), StreamEnded(3)]

    # After our GOAWAY, new streams from the peer are ignored without an answer (SPDY/3 2.6.6).
    peer = RawPeer()
    server2 = Connection()
    server2.goaway(GoAwayStatus.INTERNAL_ERROR)
    assert peer.decode(server2.data_to_send()) == [GoAwayFrame(0, GoAwayStatus.INTERNAL_ERROR)]
    assert server2.receive_data(peer.encode(SynStreamFrame(1, H({})), DataFrame(1, b"x"))) == []
    assert server2.data_to_send() == b""


def test_settings_received() -> None:
    server = Connection()
    frame = SettingsFrame((Setting(SettingsId.MAX_CONCURRENT_STREAMS, 100, 1), Setting(200, 5)))
    [event] = server.receive_data(RawPeer().encode(frame))
    assert event == SettingsReceived({SettingsId.MAX_CONCURRENT_STREAMS: 100, 200: 5})
    assert isinstance(event, SettingsReceived)
    assert list(event.settings) == [SettingsId.MAX_CONCURRENT_STREAMS, 200]
    assert not server.flow_control_active  # only INITIAL_WINDOW_SIZE or WINDOW_UPDATE count as flow control


# --- flow control ----------------------------------------------------------------------------------


def opened(flow_control: FlowControl) -> tuple[Connection, Connection, int]:
    client, server = pair(flow_control)
    stream_id = server.open_stream({})
    transfer(server, client)
    return client, server, stream_id


def test_strict_window_raises_and_window_update_releases() -> None:
    client, server, sid = opened(FlowControl.ON)
    assert server.flow_control_active
    assert server.send_window(sid) == 65536
    server.send_data(sid, b"a" * 65000)
    with pytest.raises(FlowControlError) as info:
        server.send_data(sid, b"b" * 537)
    assert (info.value.stream_id, info.value.length, info.value.window) == (sid, 537, 536)
    server.send_data(sid, b"b" * 536)
    assert server.send_window(sid) == 0
    assert [type(e) for e in transfer(server, client)] == [DataReceived, DataReceived]
    with pytest.raises(FlowControlError):
        server.send_data(sid, b"c")
    assert server.data_to_send() == b""  # nothing was sent for the refused call

    # The stream window alone does not help: the session window is empty too.
    client.update_window(sid, 1000)
    assert transfer(client, server) == [WindowUpdated(sid, 1000)]
    assert server.send_window(sid) == 0
    assert server.send_window(0) == 0
    client.update_window(0, 500)
    assert transfer(client, server) == [WindowUpdated(0, 500)]
    assert server.send_window(sid) == 500
    server.send_data(sid, b"c" * 500)
    assert transfer(server, client) == [DataReceived(sid, b"c" * 500)]


def test_acknowledged_data_sends_window_updates_at_half_a_window() -> None:
    client, server, sid = opened(FlowControl.ON)
    server.send_data(sid, b"x" * 65536)
    [event] = transfer(server, client)
    assert isinstance(event, DataReceived)
    peer = RawPeer()
    client.acknowledge_received_data(sid, 30000)
    assert client.data_to_send() == b""
    client.acknowledge_received_data(sid, 5000)
    assert peer.decode(client.data_to_send()) == [WindowUpdateFrame(0, 35000), WindowUpdateFrame(sid, 35000)]
    client.acknowledge_received_data(sid, 30536)
    assert client.data_to_send() == b""
    client.acknowledge_received_data(sid, 2232)
    assert peer.decode(client.data_to_send()) == [WindowUpdateFrame(0, 32768), WindowUpdateFrame(sid, 32768)]
    # Acknowledging data of a closed or unknown stream still returns session credit.
    client.acknowledge_received_data(77, 40000)
    assert peer.decode(client.data_to_send()) == [WindowUpdateFrame(0, 40000)]


def test_auto_mode_does_not_stall_against_a_peer_without_flow_control() -> None:
    # spdystream never sends WINDOW_UPDATE or SETTINGS, and writes past our windows.
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    server.reply(1, {})
    assert not server.flow_control_active
    assert server.send_window(1) == MAX_WINDOW_SIZE
    for _ in range(40):
        server.send_data(1, b"z" * 32768)  # 1.25 MiB, twenty windows' worth
    frames = peer.decode(server.data_to_send())
    assert sum(len(frame.data) for frame in frames if isinstance(frame, DataFrame)) == 40 * 32768
    big = peer.encode(*[DataFrame(1, b"q" * 32768) for _ in range(10)])
    events = server.receive_data(big)
    assert events == [DataReceived(1, b"q" * 32768)] * 10
    assert server.data_to_send() == b""  # no FLOW_CONTROL_ERROR reset


def test_auto_mode_enforces_once_the_peer_does_flow_control() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    server.reply(1, {})
    server.send_data(1, b"z" * 100000)  # past the window: fine, the peer has shown no flow control yet
    assert server.receive_data(peer.encode(WindowUpdateFrame(1, 20000))) == [WindowUpdated(1, 20000)]
    assert server.flow_control_active
    assert server.send_window(1) == 0  # 65536 - 100000 + 20000 < 0
    with pytest.raises(FlowControlError):
        server.send_data(1, b"z")
    server.receive_data(peer.encode(WindowUpdateFrame(1, 20000), WindowUpdateFrame(0, 70000)))
    assert server.send_window(1) == 5536
    server.send_data(1, b"z" * 5536)


def test_off_mode_never_enforces() -> None:
    server, peer = server_with_raw_client(FlowControl.OFF)
    server.receive_data(peer.encode(SynStreamFrame(1, H({})), WindowUpdateFrame(1, 1)))
    server.reply(1, {})
    assert not server.flow_control_active
    server.send_data(1, b"z" * 200000)


def test_settings_initial_window_size_moves_open_stream_windows() -> None:
    client, server, sid = opened(FlowControl.ON)
    server.send_data(sid, b"a" * 10000)
    transfer(server, client)
    client.send_settings({SettingsId.INITIAL_WINDOW_SIZE: 20000})
    assert transfer(client, server) == [SettingsReceived({SettingsId.INITIAL_WINDOW_SIZE: 20000})]
    assert server.send_window(sid) == 10000  # 20000 - 10000 sent
    assert server.send_window(0) == 55536  # the session window is not a stream window
    client.send_settings({SettingsId.INITIAL_WINDOW_SIZE: 5000})
    transfer(client, server)
    assert server.send_window(sid) == 0  # 5000 - 10000: negative, so nothing may be sent
    with pytest.raises(FlowControlError):
        server.send_data(sid, b"x")
    new_sid = server.open_stream({})
    assert server.send_window(new_sid) == 5000
    client.update_window(sid, 6000)
    transfer(client, server)
    assert server.send_window(sid) == 1000


def test_receive_windows_enforced_only_in_on_mode() -> None:
    server, peer = server_with_raw_client(FlowControl.ON)
    server.send_settings({SettingsId.INITIAL_WINDOW_SIZE: 1000})
    assert peer.decode(server.data_to_send()) == [SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 1000),))]
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    assert server.receive_data(peer.encode(DataFrame(1, b"x" * 1000))) == [DataReceived(1, b"x" * 1000)]
    assert server.receive_data(peer.encode(DataFrame(1, b"y"))) == [StreamReset(1, RstStatus.FLOW_CONTROL_ERROR, remote=False)]
    assert peer.decode(server.data_to_send()) == [RstStreamFrame(1, RstStatus.FLOW_CONTROL_ERROR)]

    server, peer = server_with_raw_client(FlowControl.ON)
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    with pytest.raises(ProtocolError, match="session receive window"):
        server.receive_data(peer.encode(DataFrame(1, b"x" * 65537)))


def test_window_update_overflow() -> None:
    client, server, sid = opened(FlowControl.ON)
    peer = RawPeer()
    events = server.receive_data(peer.encode(WindowUpdateFrame(sid, MAX_WINDOW_SIZE)))
    assert events == [StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR, remote=False)]
    with pytest.raises(ProtocolError, match="session window"):
        server.receive_data(peer.encode(WindowUpdateFrame(0, MAX_WINDOW_SIZE)))
    with pytest.raises(LocalProtocolError):
        client.update_window(0, MAX_WINDOW_SIZE)


def test_settings_overflowing_a_stream_window_resets_it() -> None:
    _client, server, sid = opened(FlowControl.ON)
    peer = RawPeer()
    server.receive_data(peer.encode(WindowUpdateFrame(sid, MAX_WINDOW_SIZE - 65536)))
    assert server.send_window(sid) == 65536  # the session window still limits
    events = server.receive_data(peer.encode(SettingsFrame((Setting(SettingsId.INITIAL_WINDOW_SIZE, 65537),))))
    assert events == [
        StreamReset(sid, RstStatus.FLOW_CONTROL_ERROR, remote=False),
        SettingsReceived({SettingsId.INITIAL_WINDOW_SIZE: 65537}),
    ]


def test_zero_window_update_is_ignored() -> None:
    server, peer = server_with_raw_client(FlowControl.ON)
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    zero = struct.pack(">HHI", 0x8003, 9, 8) + struct.pack(">II", 1, 0)
    assert server.receive_data(zero) == []
    assert server.send_window(1) == 65536


def test_window_update_for_closed_stream_is_ignored() -> None:
    server, peer = server_with_raw_client(FlowControl.ON)
    assert server.receive_data(peer.encode(WindowUpdateFrame(11, 100))) == []
    assert server.data_to_send() == b""


def test_send_data_splits_at_the_frame_length_limit() -> None:
    server, peer = server_with_raw_client()
    server.receive_data(peer.encode(SynStreamFrame(1, H({}))))
    server.reply(1, {})
    peer.decode(server.data_to_send())
    server.send_data(1, bytes(MAX_FRAME_LENGTH + 10), fin=True)
    frames = peer.decode(server.data_to_send())
    assert [(len(f.data), f.fin) for f in frames if isinstance(f, DataFrame)] == [(MAX_FRAME_LENGTH, False), (10, True)]


# --- local misuse ----------------------------------------------------------------------------------


def test_local_misuse_raises() -> None:
    client, server = pair()
    client.open_stream({})
    transfer(client, server)
    with pytest.raises(LocalProtocolError, match="reply"):
        server.send_data(1, b"x")  # spdystream would drop it before our SYN_REPLY
    with pytest.raises(LocalProtocolError, match="reply"):
        server.send_headers(1, {})
    with pytest.raises(LocalProtocolError):
        client.reply(1, {})  # own stream
    server.reply(1, {})
    with pytest.raises(LocalProtocolError, match="already"):
        server.reply(1, {})
    server.end_stream(1)
    with pytest.raises(StreamClosedError) as info:
        server.send_data(1, b"x")
    assert info.value.stream_id == 1
    with pytest.raises(StreamClosedError):
        server.send_data(9, b"x")
    with pytest.raises(StreamClosedError):
        server.update_window(9, 1)
    with pytest.raises(StreamClosedError):
        server.send_window(1)
    with pytest.raises(LocalProtocolError):
        server.acknowledge_received_data(1, -1)
    with pytest.raises(LocalProtocolError):
        server.reset_stream(1, 0)


def test_closed_stream_memory_is_bounded() -> None:
    server, peer = server_with_raw_client()
    count = 5000
    server.receive_data(peer.encode(*[SynStreamFrame(2 * i + 1, H({})) for i in range(count)]))
    for i in range(count):
        server.reset_stream(2 * i + 1)
    peer.decode(server.data_to_send())
    # The newest resets are remembered, so late data on them is silently dropped ...
    assert server.receive_data(peer.encode(DataFrame(2 * count - 1, b"late"))) == []
    assert server.data_to_send() == b""
    # ... the oldest are forgotten and only known to be closed.
    assert server.receive_data(peer.encode(DataFrame(1, b"late"))) == []
    assert peer.decode(server.data_to_send()) == [RstStreamFrame(1, RstStatus.STREAM_ALREADY_CLOSED)]
    assert server.stream_state(1) is StreamState.CLOSED


def test_oversized_outbound_header_block_is_refused() -> None:
    client = Connection(client=True)
    with pytest.raises(LocalProtocolError, match="too large"):
        client.open_stream({"big": "x" * (spdy.MAX_OUTBOUND_HEADER_BLOCK_SIZE + 1)})
    assert client.data_to_send() == b""


@pytest.mark.parametrize("name", ["Connection", "host", "Keep-Alive", "proxy-connection", "transfer-encoding"])
def test_connection_specific_headers_are_refused(name: str) -> None:
    client = Connection(client=True)
    with pytest.raises(LocalProtocolError, match="not allowed"):
        client.open_stream({name: "x"})
    assert client.data_to_send() == b""
    assert client.open_stream({"ok": "1"}) == 1  # the refused call used no id


def test_bad_open_stream_arguments_change_nothing() -> None:
    client = Connection(client=True)
    with pytest.raises(LocalProtocolError):
        client.open_stream({}, priority=8)
    with pytest.raises(LocalProtocolError):
        client.open_stream({}, associated_stream_id=-1)
    assert client.data_to_send() == b""
    assert client.stream_state(1) is StreamState.IDLE
    sid = client.open_stream({"a": "b"})
    assert sid == 1
    assert Connection().receive_data(client.data_to_send()) == [StreamOpened(1, H({"a": "b"}))]
