from __future__ import annotations

import json

import pytest

from pycri.streaming import protocol
from pycri.streaming.protocol import (
    HandshakeError,
    PortForwardOptionsError,
    PortForwardPairError,
    PortForwardPairs,
    PortForwardStream,
    ResizeDecoder,
    Status,
    StatusCause,
    StreamHeaderError,
    StreamType,
    TerminalSize,
)

# --- negotiation -------------------------------------------------------------


def test_negotiate_prefers_the_clients_order() -> None:
    server = protocol.SPDY_REMOTE_COMMAND_PROTOCOLS
    assert protocol.negotiate(["v2.channel.k8s.io", "v4.channel.k8s.io"], server) == "v2.channel.k8s.io"
    assert protocol.negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"], server) == "v4.channel.k8s.io"
    assert protocol.negotiate(["v9.channel.k8s.io"], server) is None
    assert protocol.negotiate([], server) is None
    assert protocol.negotiate([""], ["", "channel.k8s.io"]) == ""


def test_protocol_lists() -> None:
    assert protocol.REMOTE_COMMAND_PROTOCOLS == (
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "v3.channel.k8s.io",
        "v2.channel.k8s.io",
        "channel.k8s.io",
    )
    # The kubelet's SupportedStreamingProtocols: v5 is WebSocket-only.
    assert protocol.REMOTE_COMMAND_PROTOCOLS[1:] == protocol.SPDY_REMOTE_COMMAND_PROTOCOLS
    assert protocol.SPDY_PORT_FORWARD_PROTOCOLS == ("portforward.k8s.io",)


def test_parse_protocol_header_splits_trims_spaces_and_drops_empties() -> None:
    values = ["v4.channel.k8s.io, v3.channel.k8s.io", " ,, v2.channel.k8s.io ", "\tv1"]
    # strings.Trim(p, " ") trims spaces only.
    assert protocol.parse_protocol_header(values) == ["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "\tv1"]


def test_negotiate_spdy_success_with_several_header_lines() -> None:
    headers = [
        ("Host", "node"),
        ("x-stream-protocol-version", "v5.channel.k8s.io"),
        ("X-Stream-Protocol-Version", "v4.channel.k8s.io,v3.channel.k8s.io"),
    ]
    result = protocol.negotiate_spdy(headers, protocol.SPDY_REMOTE_COMMAND_PROTOCOLS)
    assert result.protocol == "v4.channel.k8s.io"
    assert result.response_headers == (("X-Stream-Protocol-Version", "v4.channel.k8s.io"),)


def test_negotiate_spdy_port_forward() -> None:
    headers = {"X-Stream-Protocol-Version": ["portforward.k8s.io"]}
    assert protocol.negotiate_spdy(headers, protocol.SPDY_PORT_FORWARD_PROTOCOLS).protocol == "portforward.k8s.io"


def test_negotiate_spdy_missing_header_is_400() -> None:
    headers = [(b"host", b"node"), (b"connection", b"Upgrade"), (b"upgrade", b"SPDY/3.1"), (b"Upgrade", b"x")]
    with pytest.raises(HandshakeError) as info:
        protocol.negotiate_spdy(headers, protocol.SPDY_REMOTE_COMMAND_PROTOCOLS)
    assert info.value.status == 400
    # Host is not among Go's req.Header; Upgrade counts once.
    assert info.value.message == "unable to upgrade: header X-Stream-Protocol-Version does not exist in request with 2 headers"


def test_negotiate_spdy_header_without_protocols_is_400() -> None:
    with pytest.raises(HandshakeError) as info:
        protocol.negotiate_spdy([("X-Stream-Protocol-Version", " , ")], protocol.SPDY_REMOTE_COMMAND_PROTOCOLS)
    assert info.value.status == 400
    assert info.value.message == "unable to upgrade: header X-Stream-Protocol-Version contains [ , ], but no valid protocols"


def test_negotiate_spdy_no_common_protocol_is_403_with_accepted_versions() -> None:
    with pytest.raises(HandshakeError) as info:
        protocol.negotiate_spdy([("X-Stream-Protocol-Version", "v9.channel.k8s.io, foo")], protocol.SPDY_REMOTE_COMMAND_PROTOCOLS)
    error = info.value
    assert error.status == 403
    assert error.message == (
        "unable to upgrade: unable to negotiate protocol: client supports [v9.channel.k8s.io foo], "
        "server accepts [v4.channel.k8s.io v3.channel.k8s.io v2.channel.k8s.io channel.k8s.io]"
    )
    assert error.headers == tuple(("X-Accepted-Stream-Protocol-Versions", p) for p in protocol.SPDY_REMOTE_COMMAND_PROTOCOLS)
    head, _, body = error.response().partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 403 Forbidden"
    assert lines.count(b"X-Accepted-Stream-Protocol-Versions: v3.channel.k8s.io") == 1
    assert b"Content-Type: text/plain; charset=utf-8" in lines
    assert b"Connection: close" in lines
    assert body == error.message.encode() + b"\n"
    assert f"Content-Length: {len(body)}".encode() in lines


def test_parse_websocket_protocols_keeps_empty_entries() -> None:
    assert protocol.parse_websocket_protocols("") == [""]
    assert protocol.parse_websocket_protocols("   ") == [""]
    offered = protocol.parse_websocket_protocols(" v5.channel.k8s.io , v4.channel.k8s.io")
    assert offered == ["v5.channel.k8s.io", "v4.channel.k8s.io"]
    assert protocol.parse_websocket_protocols("a,,b") == ["a", "", "b"]


def test_is_websocket_request() -> None:
    assert protocol.is_websocket_request([("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade")])
    assert protocol.is_websocket_request([("Upgrade", "websocket"), ("Connection", "keep-alive"), ("Connection", "upgrade")])
    assert not protocol.is_websocket_request([("Upgrade", "SPDY/3.1"), ("Connection", "Upgrade")])
    assert not protocol.is_websocket_request([("Upgrade", "websocket")])
    # Only the first Upgrade value counts (http.Header.Get).
    assert not protocol.is_websocket_request([("Upgrade", "SPDY/3.1"), ("Upgrade", "websocket"), ("Connection", "Upgrade")])
    assert protocol.is_upgrade_request({"Connection": "Upgrade"})


def test_header_lookup_is_case_insensitive_for_all_shapes() -> None:
    assert protocol.header_value({"StreamType": "stdin"}, "streamType") == "stdin"
    assert protocol.header_value({"streamtype": ["stdout", "x"]}, "streamType") == "stdout"
    assert protocol.header_value([(b"streamtype", b"error")], "streamType") == "error"
    assert protocol.header_value([], "streamType") == ""
    assert protocol.header_values([("a", "1"), ("A", "2"), ("b", "3")], "a") == ["1", "2"]


# --- remote command streams --------------------------------------------------


def test_remote_command_versions() -> None:
    v1 = protocol.remote_command_version("")
    assert v1 == protocol.remote_command_version("channel.k8s.io")
    assert (v1.name, v1.supports_resize, v1.status_as_json, v1.close_signal, v1.v1_quirks) == (
        "channel.k8s.io",
        False,
        False,
        False,
        True,
    )
    v2 = protocol.remote_command_version("v2.channel.k8s.io")
    assert (v2.supports_resize, v2.status_as_json, v2.v1_quirks) == (False, False, False)
    v3 = protocol.remote_command_version("v3.channel.k8s.io")
    assert (v3.supports_resize, v3.status_as_json) == (True, False)
    v4 = protocol.remote_command_version("v4.channel.k8s.io")
    assert (v4.supports_resize, v4.status_as_json, v4.close_signal) == (True, True, False)
    v5 = protocol.remote_command_version("v5.channel.k8s.io")
    assert (v5.supports_resize, v5.status_as_json, v5.close_signal) == (True, True, True)
    with pytest.raises(ValueError, match="unknown"):
        protocol.remote_command_version("portforward.k8s.io")


@pytest.mark.parametrize(
    ("version", "stream_type", "expected"),
    [
        ("v4.channel.k8s.io", "stdin", StreamType.STDIN),
        ("v4.channel.k8s.io", "stdout", StreamType.STDOUT),
        ("v4.channel.k8s.io", "stderr", StreamType.STDERR),
        ("v4.channel.k8s.io", "error", StreamType.ERROR),
        ("v4.channel.k8s.io", "resize", StreamType.RESIZE),
        ("v3.channel.k8s.io", "resize", StreamType.RESIZE),
        ("v2.channel.k8s.io", "resize", None),
        ("channel.k8s.io", "resize", None),
        ("v4.channel.k8s.io", "data", None),
        ("v4.channel.k8s.io", "Stdin", None),
        ("v4.channel.k8s.io", "", None),
    ],
)
def test_classify_remote_command_stream(version: str, stream_type: str, expected: StreamType | None) -> None:
    assert protocol.classify_remote_command_stream(version, {"streamType": stream_type}) is expected


def test_expected_remote_command_streams() -> None:
    count = protocol.expected_remote_command_streams
    assert count("v4.channel.k8s.io", stdin=True, stdout=True, stderr=False, tty=True) == 4
    assert count("v4.channel.k8s.io", stdin=False, stdout=True, stderr=True, tty=False) == 3
    assert count("v2.channel.k8s.io", stdin=True, stdout=True, stderr=False, tty=True) == 3
    assert count("", stdin=False, stdout=True, stderr=False, tty=False) == 2


# --- port-forward streams ----------------------------------------------------


def test_parse_port_forward_stream() -> None:
    headers = {"streamType": "data", "port": "8080", "requestID": "7"}
    assert protocol.parse_port_forward_stream(headers, 5) == PortForwardStream(StreamType.DATA, 8080, "7")
    # Old clients: no requestID; error streams use their own id, data streams id - 2.
    assert protocol.parse_port_forward_stream({"streamType": "error", "port": "80"}, 1).request_id == "1"
    assert protocol.parse_port_forward_stream({"streamType": "data", "port": "80"}, 3).request_id == "1"
    assert protocol.parse_port_forward_stream({"streamType": "data", "port": "0080"}, 3).port == 80


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"streamType": "data"}, '"port" header is required'),
        ({"streamType": "data", "port": "ab"}, 'unable to parse "ab" as a port: strconv.ParseUint: parsing "ab": invalid syntax'),
        ({"streamType": "data", "port": "-1"}, 'unable to parse "-1" as a port: strconv.ParseUint: parsing "-1": invalid syntax'),
        (
            {"streamType": "data", "port": "65536"},
            'unable to parse "65536" as a port: strconv.ParseUint: parsing "65536": value out of range',
        ),
        ({"streamType": "data", "port": "0"}, 'port "0" must be > 0'),
        ({"port": "80"}, '"streamType" header is required'),
        ({"port": "80", "streamType": "stdin"}, 'invalid stream type "stdin"'),
        ({"port": "80", "streamType": 'a"b\\'}, 'invalid stream type "a\\"b\\\\"'),  # Go's %q
        (
            {"streamType": "data", "port": "8\t0"},
            'unable to parse "8\\t0" as a port: strconv.ParseUint: parsing "8\\t0": invalid syntax',
        ),
    ],
)
def test_parse_port_forward_stream_errors(headers: dict[str, str], message: str) -> None:
    with pytest.raises(StreamHeaderError) as info:
        protocol.parse_port_forward_stream(headers, 1)
    assert str(info.value) == message


def test_port_forward_pairs() -> None:
    pairs: PortForwardPairs[str] = PortForwardPairs()
    error = PortForwardStream(StreamType.ERROR, 80, "1")
    data = PortForwardStream(StreamType.DATA, 80, "1")
    pair, created = pairs.add("err-stream", error)
    assert created
    assert not pair.complete
    assert len(pairs) == 1
    assert pairs.get("1") is pair
    with pytest.raises(PortForwardPairError) as info:
        pairs.add("other", error)
    assert str(info.value) == "error processing stream for request 1: error stream already assigned"
    assert pairs.get("1") is pair
    assert pair.error == "err-stream"
    again, created = pairs.add("data-stream", data)
    assert again is pair
    assert not created
    assert pair.complete
    assert (pair.data, pair.error, pair.port) == ("data-stream", "err-stream", 80)
    assert len(pairs) == 0  # a complete pair leaves the table
    # The same request ID later starts a new pair.
    fresh, created = pairs.add("d2", data)
    assert created
    assert fresh is not pair
    with pytest.raises(PortForwardPairError, match="data stream already assigned"):
        pairs.add("d3", data)
    assert pairs.remove("1") is fresh
    assert pairs.remove("1") is None


def test_port_forward_messages() -> None:
    assert (
        protocol.port_forward_error_message(8080, "sandbox-id", "dial tcp 127.0.0.1:8080: connect: connection refused")
        == "error forwarding port 8080 to pod sandbox-id, uid : dial tcp 127.0.0.1:8080: connect: connection refused"
    )
    assert protocol.port_forward_timeout_message("3") == "(request=3) timed out waiting for streams"


@pytest.mark.parametrize(
    ("target", "ports"),
    [
        ("/portforward/tok?port=80", [80]),
        ("/portforward/tok?port=80&port=8080", [80, 8080]),
        ("/portforward/tok?port=80,443&x=1&port=5432", [80, 443, 5432]),
        ("/portforward/tok?port=%38%30", [80]),
        ("/portforward/tok?port=65535", [65535]),
        ("/portforward/tok?port=80;x=1&port=81", [81]),  # Go's ParseQuery skips pairs with ';'
        ("/portforward/tok?port=%zz&port=82", [82]),  # and pairs with a bad escape
    ],
)
def test_parse_ports_query(target: str, ports: list[int]) -> None:
    assert protocol.parse_ports_query(target) == ports


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("/portforward/tok", 'query parameter "port" is required'),
        ("/portforward/tok?ports=80", 'query parameter "port" is required'),
        ("/portforward/tok?port=", 'query parameter "port" cannot be empty'),
        ("/portforward/tok?port=80&port", 'query parameter "port" cannot be empty'),
        ("/portforward/tok?port=http", 'unable to parse "http" as a port: strconv.ParseUint: parsing "http": invalid syntax'),
        ("/portforward/tok?port=80,", 'unable to parse "80," as a port: strconv.ParseUint: parsing "": invalid syntax'),
        (
            "/portforward/tok?port=80,70000",
            'unable to parse "80,70000" as a port: strconv.ParseUint: parsing "70000": value out of range',
        ),
        ("/portforward/tok?port=+80", 'unable to parse " 80" as a port: strconv.ParseUint: parsing " 80": invalid syntax'),
        ("/portforward/tok?port=80,0", 'port "80,0" must be > 0'),
    ],
)
def test_parse_ports_query_errors(target: str, message: str) -> None:
    with pytest.raises(PortForwardOptionsError) as info:
        protocol.parse_ports_query(target)
    assert info.value.status == 400
    assert info.value.message == message
    assert info.value.response().startswith(b"HTTP/1.1 400 Bad Request\r\n")


# --- Status ------------------------------------------------------------------


def test_status_success_literal() -> None:
    assert protocol.status_success() == b'{"metadata":{},"status":"Success"}'


def test_status_exit_code_literal() -> None:
    assert protocol.status_exit_code(3, ["sh", "-c", "exit 3"]) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )


def test_status_exit_code_with_other_error_text() -> None:
    status = Status.non_zero_exit(137, "exit status 137")
    assert status.to_json() == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: exit status 137",'
        b'"reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"137"}]}}'
    )
    with pytest.raises(ValueError, match="zero exit code"):
        Status.non_zero_exit(0, "")


def test_status_internal_error_literal() -> None:
    assert protocol.status_internal_error("error attaching to container: container is not running") == (
        b'{"metadata":{},"status":"Failure","message":"Internal error occurred: error attaching to container: '
        b'container is not running","reason":"InternalError","details":{"causes":[{"message":"error attaching to '
        b'container: container is not running"}]},"code":500}'
    )


def test_status_failure_and_details_shapes() -> None:
    assert protocol.status_failure("boom") == b'{"metadata":{},"status":"Failure","message":"boom","reason":"InternalError"}'
    assert protocol.status_failure("gone", reason="NotFound", code=404) == (
        b'{"metadata":{},"status":"Failure","message":"gone","reason":"NotFound","code":404}'
    )
    assert Status("Failure", details=()).to_json() == b'{"metadata":{},"status":"Failure","details":{}}'
    cause = StatusCause(reason="FieldValueInvalid", message="bad", field="spec")
    assert Status("", details=(cause,)).to_json() == (
        b'{"metadata":{},"details":{"causes":[{"reason":"FieldValueInvalid","message":"bad","field":"spec"}]}}'
    )


def test_status_json_escapes_as_go_does() -> None:
    text = 'a<b>&"c"\\\n\r\t\b\f\x01\x7f\u2028\u2029é☃\U0001f600'
    encoded = Status("Failure", message=text).to_json()
    assert encoded == (
        b'{"metadata":{},"status":"Failure","message":"a\\u003cb\\u003e\\u0026\\"c\\"\\\\\\n\\r\\t\\b\\f\\u0001\x7f'
        b"\\u2028\\u2029" + "é☃\U0001f600".encode() + b'"}'
    )
    assert json.loads(encoded)["message"] == text
    # Bytes that were not UTF-8 (decoded with surrogateescape) come out as U+FFFD, as Go writes invalid UTF-8.
    bad = b"x\xffy".decode("utf-8", "surrogateescape")
    assert Status("Failure", message=bad).to_json() == b'{"metadata":{},"status":"Failure","message":"x\\ufffdy"}'


def test_v1_to_v3_error_stream_is_plain_text() -> None:
    exited = Status.non_zero_exit(2, protocol.exec_exit_error(["false"], 2))
    assert Status.success().to_text() == b""
    assert exited.to_text() == b"command terminated with non-zero exit code: error executing command [false], exit code 2"
    assert Status.internal_error("boom").to_text() == b"Internal error occurred: boom"
    for version in ("", "channel.k8s.io", "v2.channel.k8s.io", "v3.channel.k8s.io"):
        assert exited.encode(version) == exited.to_text()
        assert Status.success().encode(version) == b""
    for version in ("v4.channel.k8s.io", "v5.channel.k8s.io"):
        assert exited.encode(version) == exited.to_json()
        assert Status.success().encode(version) == b'{"metadata":{},"status":"Success"}'
    raw = b"caf\xe9".decode("utf-8", "surrogateescape")
    assert Status("Failure", message=raw).to_text() == b"caf\xe9"


# --- resize ------------------------------------------------------------------

STREAM = b'{"Width":80,"Height":24}\n{"width":100,"height":30}\r\n \t{"Height":7}null\n{"x":"}{\\"","Width":1,"y":{"a":[1,{}]}}'
STREAM_SIZES = [TerminalSize(80, 24), TerminalSize(100, 30), TerminalSize(0, 7), TerminalSize(0, 0), TerminalSize(1, 0)]


def test_resize_decoder_whole_stream() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(STREAM) == STREAM_SIZES
    assert decoder.error is None
    assert decoder.feed_eof() == []
    assert decoder.stopped


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_resize_decoder_split_at_every_boundary(split: int) -> None:
    decoder = ResizeDecoder()
    sizes = decoder.feed(STREAM[:split]) + decoder.feed(STREAM[split:])
    assert sizes == STREAM_SIZES
    assert decoder.error is None


def test_resize_decoder_byte_by_byte() -> None:
    decoder = ResizeDecoder()
    sizes: list[TerminalSize] = []
    for i in range(len(STREAM)):
        before = len(sizes)
        sizes += decoder.feed(STREAM[i : i + 1])
        # A size is produced exactly when its closing brace (or the byte after "null") arrives.
        if len(sizes) > before:
            assert STREAM[i : i + 1] in (b"}", b"\n")
    assert sizes == STREAM_SIZES


def test_resize_decoder_field_rules() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"WIDTH":1,"hEiGhT":2}') == [TerminalSize(1, 2)]
    assert decoder.feed(b'{"Width":1,"width":9}') == [TerminalSize(9, 0)]  # last key wins
    assert decoder.feed(b'{"Width":null,"Height":65535}') == [TerminalSize(0, 65535)]
    assert decoder.feed(b'{"Width":0,"Height":0,"Other":"x","Depth":[1,2]}') == [TerminalSize(0, 0)]
    assert decoder.feed(b"{}") == [TerminalSize(0, 0)]
    assert decoder.feed(b'{"x":"\xff\xfe","Width":3}') == [TerminalSize(3, 0)]  # invalid UTF-8 in a string is fine
    assert decoder.feed(b'{"W\\u0069dth":4}') == [TerminalSize(4, 0)]  # keys are compared after unescaping
    assert decoder.feed(b'{"Wi\xc4\xb1dth":5}') == [TerminalSize(0, 0)]  # a dotless i is not an i
    assert decoder.error is None


def test_resize_decoder_null_needs_the_next_byte_or_eof() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b"nu") == []
    assert decoder.feed(b"ll") == []
    assert decoder.feed(b"{") == [TerminalSize(0, 0)]
    assert decoder.feed(b'"Width":2}null') == [TerminalSize(2, 0)]
    assert decoder.feed_eof() == [TerminalSize(0, 0)]
    assert decoder.feed(b'{"Width":3}') == []  # nothing after EOF


@pytest.mark.parametrize(
    ("junk", "error"),
    [
        (b"[1,2]", "cannot unmarshal array"),
        (b'"80x24"', "cannot unmarshal string"),
        (b"5", "cannot unmarshal number"),
        (b"true", "cannot unmarshal bool"),
        (b"\xef\xbb\xbf{}", "looking for beginning of value"),
        (b"x", "looking for beginning of value"),
        (b"nul!", "in literal null"),
        (b'{"Width":-1}', "cannot unmarshal number -1 into Go struct field TerminalSize.Width of type uint16"),
        (b'{"Width":-0}', "cannot unmarshal number -0 into"),
        (b'{"Height":65536}', "cannot unmarshal number 65536 into Go struct field TerminalSize.Height"),
        (b'{"Width":80.0}', "cannot unmarshal number 80.0 into"),
        (b'{"Width":8e1}', "cannot unmarshal number 8e1 into"),
        (b'{"Width":"80"}', "cannot unmarshal string into Go struct field TerminalSize.Width"),
        (b'{"Width":true}', "cannot unmarshal bool into"),
        (b'{"Width":[80]}', "cannot unmarshal array into"),
        (b'{"Width":{"v":80}}', "cannot unmarshal object into"),
        (b'{"Width":NaN}', "invalid resize message"),
        (b'{"Width":80,}', "invalid resize message"),
        (b'{"Width":080}', "invalid resize message"),
        (b"{]", "invalid character ']'"),
    ],
)
def test_resize_decoder_stops_for_good_at_the_first_error(junk: bytes, error: str) -> None:
    decoder = ResizeDecoder()
    sizes = decoder.feed(b'{"Width":10,"Height":20}' + junk + b'{"Width":11,"Height":21}')
    assert sizes == [TerminalSize(10, 20)]
    assert decoder.error is not None
    assert error in decoder.error
    assert decoder.stopped
    assert decoder.feed(b'{"Width":12,"Height":22}') == []
    assert decoder.feed_eof() == []


def test_resize_decoder_eof_inside_a_value_is_an_error() -> None:
    decoder = ResizeDecoder()
    assert decoder.feed(b'{"Width":1}{"Wid') == [TerminalSize(1, 0)]
    assert decoder.feed_eof() == []
    assert decoder.error == "unexpected EOF"
    short_null = ResizeDecoder()
    assert short_null.feed(b"nul") == []
    assert short_null.feed_eof() == []
    assert short_null.error == "unexpected EOF"


def test_resize_decoder_bounds_one_value() -> None:
    decoder = ResizeDecoder(max_value_bytes=32)
    assert decoder.feed(b'{"Width":1,"x":"' + b"a" * 10) == []
    assert decoder.feed(b"a" * 30) == []
    assert decoder.error is not None
    assert "longer than 32 bytes" in decoder.error
    # Nesting past Python's recursion limit is an error (Go allows depth 10000).
    deep = ResizeDecoder()
    assert deep.feed(b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}") == []
    assert deep.error is not None
