"""SIGHUP: the daemon rereads its configuration and registries.conf without a restart."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri import config as config_mod
from pycri.api import api_pb2 as api
from pycri.client import Client, UnavailableError
from pycri.testing import DaemonProcess
from tests.support.images import push, simple_image
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.integration

PRIMARY = "reload.invalid"  # never resolves: only a mirror can serve it

MIRRORED = f"""
[[registry]]
location = "{PRIMARY}"

[[registry.mirror]]
location = "{{mirror}}"
insecure = true
"""


@pytest.fixture
def setup(registry: LocalRegistry, tmp_path: Path) -> Iterator[tuple[DaemonProcess, Path]]:
    conf = tmp_path / "registries.conf"
    conf.write_text("")
    push(registry, "test/app", "1", simple_image({"etc/app": b"app\n"}))
    with DaemonProcess.temporary(images={"registries_conf": str(conf)}) as daemon:
        yield daemon, conf


def hup_and_wait(daemon: DaemonProcess, text: str, timeout: float = 10.0) -> None:
    """Send SIGHUP, then wait until the log, from here on, has ``text``."""
    assert daemon.proc is not None
    seen = len(daemon.log())
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in daemon.log()[seen:]:
            return
        time.sleep(0.05)
    raise AssertionError(f"no {text!r} in the log after SIGHUP:\n{daemon.log()[seen:]}")


def pull(client: Client, ref: str) -> str:
    return client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=ref))).image_ref


def test_sighup_rereads_registries_conf(setup: tuple[DaemonProcess, Path], registry: LocalRegistry) -> None:
    daemon, conf = setup
    ref = f"{PRIMARY}/test/app:1"
    with Client(daemon.socket, timeout=30) as client:
        with pytest.raises(UnavailableError):
            pull(client, ref)

        conf.write_text(MIRRORED.format(mirror=registry.host))
        hup_and_wait(daemon, "reload: registries from")
        assert pull(client, ref).startswith("sha256:")

        # An invalid file changes nothing: the error is logged, the mirror stays in use.
        conf.write_text("[[registry]\nthis is not TOML")
        hup_and_wait(daemon, "reload failed, the running configuration stays in force")
        client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=ref)))
        assert pull(client, ref).startswith("sha256:")
        assert client.version().runtime_name == "pycri"


def test_sighup_applies_the_log_level_and_names_what_needs_a_restart(setup: tuple[DaemonProcess, Path]) -> None:
    daemon, _ = setup
    changed = config_mod.from_dict(daemon.cfg.to_dict() | {"log_level": "warning", "image_socket": "/tmp/elsewhere.sock"})
    daemon.config_path.write_text(config_mod.render(changed))
    # The daemon was started with --log-level debug, which the command line keeps.
    hup_and_wait(daemon, "reload: image_socket changed; it takes effect when the daemon restarts")
    assert "reload: log_level" not in daemon.log()

    daemon.config_path.write_text("log_level = 3\n")
    hup_and_wait(daemon, f"stays in force: {daemon.config_path}: log_level: expected a string, got int")
    with Client(daemon.socket, timeout=10) as client:
        assert client.version().runtime_name == "pycri"
