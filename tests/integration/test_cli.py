"""The ``pycri`` command and crictl against a running daemon."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest

from pycri import config
from pycri.testing import DaemonProcess
from tests.integration.conftest import CRICTL

pytestmark = pytest.mark.integration


def pycri(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pycri", *args], capture_output=True, text=True, timeout=timeout)


def test_version_for_people_and_scripts(daemon: DaemonProcess) -> None:
    text = pycri("version", "--socket", daemon.endpoint)
    assert text.returncode == 0, text.stderr
    assert "Runtime name:         pycri" in text.stdout
    doc = json.loads(pycri("version", "--socket", daemon.socket, "--json").stdout)
    assert doc["server"]["runtime_api_version"] == "v1"


def test_socket_comes_from_the_config(daemon: DaemonProcess) -> None:
    result = pycri("--config", str(daemon.config_path), "info", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {c["type"] for c in doc["status"]["conditions"]} == {"RuntimeReady", "NetworkReady"}
    assert doc["info"]["config"]["socket"] == daemon.socket
    assert doc["runtime_config"]["linux"]["cgroup_driver"] == "CGROUPFS"


def test_info_for_people(daemon: DaemonProcess) -> None:
    result = pycri("info", "--socket", daemon.socket)
    assert result.returncode == 0, result.stderr
    for text in ("RuntimeReady", "NetworkReady", "(default)", "runc", "crun", "cgroupfs"):
        assert text in result.stdout


def test_no_daemon_is_a_clear_error(tmp_path: os.PathLike[str]) -> None:
    result = pycri("version", "--socket", f"{tmp_path}/absent.sock", "--timeout", "2")
    assert result.returncode == 3
    assert "cannot reach the daemon" in result.stderr


def test_config_default_and_show(tmp_path: os.PathLike[str]) -> None:
    default = pycri("config", "default")
    assert default.returncode == 0
    assert config.from_dict(tomllib.loads(default.stdout)) == config.Config()
    path = f"{tmp_path}/c.toml"
    with open(path, "w") as f:
        f.write('log_level = "debug"\n')
    shown = tomllib.loads(pycri("--config", path, "config", "show").stdout)
    assert shown["log_level"] == "debug"
    bad = pycri("--config", f"{tmp_path}/absent.toml", "config", "show")
    assert bad.returncode == 2
    assert "configuration file not found" in bad.stderr


def test_doctor(daemon: DaemonProcess) -> None:
    result = pycri("--config", str(daemon.config_path), "doctor", "--json")
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["runtime runc"]["severity"] == "ok"
    assert checks["cgroups"]["severity"] == "ok"
    bad = DaemonProcess.temporary(conmon="/nonexistent/conmon")
    bad.workdir.mkdir(exist_ok=True)
    bad.config_path.write_text(config.render(bad.cfg))
    try:
        text = pycri("--config", str(bad.config_path), "doctor")
    finally:
        shutil.rmtree(bad.workdir)
    assert text.returncode == 1
    assert "/nonexistent/conmon not found" in text.stdout
    assert "fix: apt-get install conmon" in text.stdout


needs_crictl = pytest.mark.skipif(CRICTL is None, reason="crictl is not installed on this machine")


def crictl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    assert CRICTL is not None
    env = os.environ | {"CRI_CONFIG_FILE": "/dev/null"}
    return subprocess.run(
        [CRICTL, "--runtime-endpoint", daemon.endpoint, "--image-endpoint", daemon.endpoint, "--timeout", "5s", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )


@needs_crictl
def test_crictl_version_and_info(daemon: DaemonProcess) -> None:
    version = crictl(daemon, "version")
    assert version.returncode == 0, version.stderr
    assert "RuntimeName:  pycri" in version.stdout
    assert "RuntimeApiVersion:  v1" in version.stdout
    info = crictl(daemon, "info")
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert doc["config"]["socket"] == daemon.socket
    assert {c["type"] for c in doc["status"]["conditions"]} == {"RuntimeReady", "NetworkReady"}


@needs_crictl
def test_crictl_checkpoint_gets_a_clean_unimplemented(daemon: DaemonProcess) -> None:
    checkpoint = crictl(daemon, "checkpoint", "--export=/nonexistent/c.tar", "abc")
    assert checkpoint.returncode == 1
    expected = "code = Unimplemented desc = pycri does not implement runtime.v1.RuntimeService/CheckpointContainer yet"
    assert expected in checkpoint.stderr


@needs_crictl
def test_crictl_stats_and_statsp_on_an_empty_node(daemon: DaemonProcess) -> None:
    for command, header in (("stats", "CONTAINER"), ("statsp", "POD")):
        shown = crictl(daemon, command)
        assert shown.returncode == 0, shown.stderr
        assert header in shown.stdout
