from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from pycri.client import Client
from pycri.testing import DaemonProcess

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
