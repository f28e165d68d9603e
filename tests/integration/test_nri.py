"""NRI on the real daemon: plugins written with ``pycri.nri.stub`` connect to a daemon started with
``[nri] enable = true``, are synchronized with the pods and containers it has, and are listed
by ``Status``.

Each plugin runs in a thread of its own with its own event loop, as a separate plugin process
would, and records what it sees.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client
from pycri.nri import api_pb2 as nri
from pycri.nri.stub import PluginBase, Stub, Updates
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness, wait_for
from tests.support import busybox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]


class Recorder(PluginBase):
    """Records the synchronization it gets."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.synced_pods: list[nri.PodSandbox] = []
        self.synced_containers: list[nri.Container] = []
        self.synced = threading.Event()

    async def synchronize(self, pods: Sequence[nri.PodSandbox], containers: Sequence[nri.Container]) -> Updates:
        self.synced_pods = list(pods)
        self.synced_containers = list(containers)
        self.synced.set()
        return []


class PluginThread:
    """A plugin connected to ``socket`` from a thread with its own event loop."""

    def __init__(self, plugin: PluginBase, socket: str, *, name: str, index: str = "10") -> None:
        self.plugin = plugin
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stub = Stub(plugin, name=name, index=index)
        self._run(self.stub.connect(socket))

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout=30)

    def close(self) -> None:
        async def closing() -> None:
            self.stub.close()
            await self.stub.wait_closed()

        self._run(closing())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def shared_daemon(image_refs: dict[str, str]) -> Iterator[DaemonProcess]:
    workdir_socket = {"enable": True, "plugin_request_timeout": "1s"}
    daemon = DaemonProcess.temporary(nri=workdir_socket)
    daemon.cfg.nri.socket = str(daemon.workdir / "run" / "nri.sock")
    with daemon, Client(daemon.socket, timeout=60) as client:
        for ref in image_refs.values():
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=ref)))
        yield daemon


@pytest.fixture
def plugins(shared_daemon: DaemonProcess) -> Iterator[list[PluginThread]]:
    started: list[PluginThread] = []
    yield started
    for p in started:
        p.close()


def connect(shared_daemon: DaemonProcess, plugins: list[PluginThread], plugin: PluginBase, name: str, index: str = "10") -> None:
    plugins.append(PluginThread(plugin, shared_daemon.cfg.nri.socket, name=name, index=index))


def nri_info(client: Client) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(client.status(api.StatusRequest(verbose=True)).info["nri"])
    return info


def test_synchronize_gets_existing_pods_and_containers_and_status_lists_the_plugin(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    pod = h.pod("synced")
    cid = h.container(pod, "app", envs=[api.KeyValue(key="SYNCED", value=b"yes")])
    recorder = Recorder()
    connect(shared_daemon, plugins, recorder, "recorder", "20")
    assert recorder.synced.wait(10)
    pods = {p.id: p for p in recorder.synced_pods}
    assert pod.id in pods
    synced = pods[pod.id]
    assert (synced.name, synced.namespace, synced.uid) == ("synced", "containers", "uid-synced")
    assert synced.labels["pod"] == "synced"
    assert synced.pid > 0
    assert synced.linux.cgroups_path.endswith(f"pycri-{pod.id}")
    assert any(ns.type == "network" and ns.path for ns in synced.linux.namespaces)
    containers = {c.id: c for c in recorder.synced_containers}
    ctr = containers[cid]
    assert ctr.pod_sandbox_id == pod.id
    assert ctr.name == "app"
    assert ctr.state == nri.CONTAINER_RUNNING
    assert ctr.pid == h.pid(cid)
    assert "SYNCED=yes" in ctr.env
    assert any(m.destination == "/etc/hosts" for m in ctr.mounts)
    assert {ns.type for ns in ctr.linux.namespaces} >= {"pid", "mount"}
    assert ctr.linux.cgroups_path
    info = wait_for("plugin listed", lambda: nri_info(h.client)["plugins"] or None)
    assert nri_info(h.client)["enabled"] is True
    assert [(p["index"], p["name"]) for p in info] == [("20", "recorder")]


def test_status_says_nri_is_disabled_by_default(client: Client) -> None:
    assert nri_info(client) == {"enabled": False}


def test_nri_socket_is_removed_on_stop(tmp_path: Path) -> None:
    daemon = DaemonProcess.temporary(nri={"enable": True})
    daemon.cfg.nri.socket = str(daemon.workdir / "run" / "nri.sock")
    with daemon:
        assert os.path.exists(daemon.cfg.nri.socket)
    assert not os.path.exists(daemon.cfg.nri.socket)
