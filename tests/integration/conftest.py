from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness
from tests.support.busybox import busybox_image, push_busybox
from tests.support.images import Image
from tests.support.registry import LocalRegistry

CRICTL = shutil.which("crictl")


@pytest.fixture
def daemon() -> Iterator[DaemonProcess]:
    proc = DaemonProcess.temporary()
    with proc:
        yield proc
        assert proc.proc is not None
        assert proc.proc.poll() is None, f"daemon died during the test:\n{proc.log()}"
    # After a clean stop the daemon leaves no socket behind.
    assert not os.path.exists(proc.socket)


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with Client(daemon.socket, timeout=10) as c:
        yield c


# -- container tests: one registry and one daemon per module, a Harness per test --------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def image_refs(request: pytest.FixtureRequest, registry: LocalRegistry) -> dict[str, str]:
    """The module's ``IMAGES`` (name -> image; default: a plain busybox) pushed as ``<registry>/busybox:<name>``."""
    images: dict[str, Image] = getattr(request.module, "IMAGES", None) or {"plain": busybox_image()}
    return {name: push_busybox(registry, name, image) for name, image in images.items()}


@pytest.fixture(scope="module")
def shared_daemon(image_refs: dict[str, str]) -> Iterator[DaemonProcess]:
    with DaemonProcess.temporary() as daemon, Client(daemon.socket, timeout=60) as client:
        for ref in image_refs.values():
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=ref)))
        yield daemon


@pytest.fixture
def h(shared_daemon: DaemonProcess, image_refs: dict[str, str], tmp_path: Path) -> Iterator[Harness]:
    with Client(shared_daemon.socket, timeout=30) as client:
        harness = Harness(client, shared_daemon, image_refs, tmp_path)
        try:
            yield harness
        finally:
            harness.cleanup()
        assert harness.list() == set(), "containers outlived their pods"
        assert shared_daemon.proc is not None
        assert shared_daemon.proc.poll() is None, f"daemon died:\n{shared_daemon.log()}"
    assert shared_daemon.leftovers() == []
