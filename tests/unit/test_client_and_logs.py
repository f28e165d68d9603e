from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import grpc
import pytest

from pycri import logs
from pycri.client import AsyncClient, Client, errors
from pycri.client.common import target


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/run/pycri/pycri.sock", "unix:/run/pycri/pycri.sock"),
        ("unix:///run/pycri/pycri.sock", "unix:/run/pycri/pycri.sock"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
    ],
)
def test_target(given: str, expected: str) -> None:
    assert target(given) == expected


def test_clients_have_a_method_per_rpc() -> None:
    import re

    from pycri.api import api_pb2

    names = [m.name for s in api_pb2.DESCRIPTOR.services_by_name.values() for m in s.methods]
    assert len(names) == 43
    for name in names:
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
        assert callable(getattr(Client, snake)), snake
        assert callable(getattr(AsyncClient, snake)), snake


class _FakeError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.NOT_FOUND, errors.NotFoundError),
        (grpc.StatusCode.INVALID_ARGUMENT, errors.InvalidArgumentError),
        (grpc.StatusCode.UNIMPLEMENTED, errors.UnimplementedError),
        (grpc.StatusCode.UNAVAILABLE, errors.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.DeadlineExceededError),
        (grpc.StatusCode.INTERNAL, errors.ClientError),
    ],
)
def test_error_mapping(code: grpc.StatusCode, cls: type[errors.ClientError]) -> None:
    err = errors.from_rpc_error("Version", _FakeError(code, "why"))
    assert type(err) is cls
    assert str(err) == f"Version: {code.name}: why"


def _record(msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("pycri.test", level, __file__, 1, msg, None, None)


def test_text_log_for_people_and_journald() -> None:
    line = logs.TextFormatter(journald=False).format(_record("hello"))
    assert line.endswith("info    pycri.test: hello")
    journal = logs.TextFormatter(journald=True).format(_record("a\nb", logging.WARNING))
    assert journal.splitlines() == ["<4>warning pycri.test: a", "<4>b"]


def test_json_log() -> None:
    doc = json.loads(logs.JSONFormatter().format(_record("hello")))
    assert doc["msg"] == "hello"
    assert doc["level"] == "info"
    assert doc["logger"] == "pycri.test"
    assert doc["time"].endswith("Z")


def test_sd_notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pycri.daemon import sd_notify

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    sd_notify("READY=1")  # no systemd: nothing happens
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        sd_notify("READY=1")
        assert listener.recv(64) == b"READY=1"
