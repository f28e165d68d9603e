"""The ``pycri`` command line: argument order, failure messages, exit codes and --json."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from pycri.api import api_pb2
from pycri.cli.main import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, build_parser, main
from pycri.client.common import listening


def test_config_is_accepted_before_and_after_the_command(tmp_path: Path) -> None:
    parser = build_parser()
    before = parser.parse_args(["--config", "a.toml", "daemon"])
    after = parser.parse_args(["daemon", "--config", "b.toml", "--log-level", "debug"])
    both = parser.parse_args(["--config", "a.toml", "doctor", "--config", "b.toml"])
    neither = parser.parse_args(["version"])
    assert before.config == Path("a.toml")
    assert after.config == Path("b.toml")
    assert after.log_level == "debug"
    assert both.config == Path("b.toml")  # the one nearer the command's own options wins
    assert neither.config is None


def test_config_after_the_command_is_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pycri.toml"
    path.write_text('log_level = "debug"\nsocket = "/tmp/elsewhere.sock"\n')
    assert main(["config", "show", "--config", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["log_level"] == "debug"
    assert doc["socket"] == "/tmp/elsewhere.sock"


def test_config_default_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "default", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["socket"] == "/run/pycri/pycri.sock"
    assert doc["runtimes"]["runc"]["path"]


def test_a_bad_configuration_names_the_file_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("no_such_key = 1\n")
    assert main(["config", "show", "--config", str(path), "--json"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert "configuration error" in err
    assert "no_such_key" in err
    assert f"fix {path}, or pass --config FILE" in err
    doc = json.loads(out)["error"]
    assert doc["kind"] == "config"
    assert doc["exit_code"] == 2
    assert doc["command"] == "config"


def test_no_daemon_is_exit_3_and_says_how_to_start_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sock = tmp_path / "absent.sock"
    assert main(["version", "--socket", str(sock), "--timeout", "1"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"cannot reach the daemon at {sock}" in err
    assert "is it running?" in err
    assert "scripts/start.sh" in err


def _version_unavailable(request: api_pb2.VersionRequest, context: grpc.ServicerContext) -> api_pb2.VersionResponse:
    """A daemon that answers, but with UNAVAILABLE: what pycri sends when a registry cannot be reached."""
    context.abort(grpc.StatusCode.UNAVAILABLE, "registry 127.0.0.1:1: cannot connect: connection refused")


@pytest.fixture
def unavailable_daemon(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "d.sock")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    version = grpc.unary_unary_rpc_method_handler(
        _version_unavailable,
        request_deserializer=api_pb2.VersionRequest.FromString,
        response_serializer=api_pb2.VersionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {"Version": version}),))
    server.add_insecure_port(f"unix:{path}")
    server.start()
    yield path
    server.stop(None)


def test_an_unavailable_answer_is_not_a_missing_daemon(unavailable_daemon: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["version", "--socket", unavailable_daemon, "--json"]) == EXIT_FAILED
    out, err = capsys.readouterr()
    assert "cannot reach the daemon" not in err
    assert "Version: UNAVAILABLE: registry 127.0.0.1:1: cannot connect" in err
    assert "the daemon is running" in err
    assert json.loads(out)["error"]["kind"] == "UNAVAILABLE"


def test_listening(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    assert not listening(str(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen()
        assert listening(str(path))
        assert listening(f"unix://{path}")
    assert not listening(str(path))  # a stale socket file: nobody accepts
