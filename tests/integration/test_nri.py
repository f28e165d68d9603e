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
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

import pycri
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError
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


class Tracer(PluginBase):
    """Records every lifecycle event as (event, pod or container ID); ``fail`` and ``hang`` name events
    to refuse (once each) or to hang in."""

    def __init__(self, *, fail: Sequence[str] = (), hang: Sequence[str] = ()) -> None:
        self.events: list[tuple[str, str]] = []
        self.names: dict[str, str] = {}
        self.fail = set(fail)
        self.hang = set(hang)

    async def _event(self, event: str, target: str) -> None:
        self.events.append((event, target))
        if event in self.hang:
            await asyncio.sleep(3600)
        if event in self.fail:
            self.fail.discard(event)
            raise RuntimeError(f"{event} refused by the test plugin")

    async def run_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        self.names[pod.id] = f"{pod.namespace}/{pod.name}/{pod.uid}"
        await self._event("RunPodSandbox", pod.id)

    async def stop_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._event("StopPodSandbox", pod.id)

    async def remove_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._event("RemovePodSandbox", pod.id)

    async def create_container(
        self, pod: nri.PodSandbox, container: nri.Container
    ) -> tuple[nri.ContainerAdjustment | None, Updates]:
        self.names[container.id] = container.name
        await self._event("CreateContainer", container.id)
        return None, []

    async def post_create_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._event("PostCreateContainer", container.id)

    async def start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._event("StartContainer", container.id)

    async def post_start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._event("PostStartContainer", container.id)

    async def update_container(self, pod: nri.PodSandbox, container: nri.Container, resources: nri.LinuxResources) -> Updates:
        await self._event("UpdateContainer", container.id)
        return []

    async def post_update_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._event("PostUpdateContainer", container.id)

    async def stop_container(self, pod: nri.PodSandbox, container: nri.Container) -> Updates:
        await self._event("StopContainer", container.id)
        return []

    async def remove_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._event("RemoveContainer", container.id)

    def of(self, *ids: str) -> list[str]:
        return [event for event, target in list(self.events) if target in ids]


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


def test_hooks_come_in_lifecycle_order_with_nri_metadata(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    tracer = Tracer()
    connect(shared_daemon, plugins, tracer, "tracer")
    pod = h.pod("ordered")
    cid = h.container(pod, "app")
    h.client.update_container_resources(
        api.UpdateContainerResourcesRequest(container_id=cid, linux=api.LinuxContainerResources(cpu_shares=512))
    )
    h.stop(cid, timeout=1)
    h.remove(cid)
    h.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    h.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))  # again: no second event
    h.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    h.pods.remove(pod.id)
    assert tracer.of(pod.id, cid) == [
        "RunPodSandbox",
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "UpdateContainer",
        "PostUpdateContainer",
        "StopContainer",
        "RemoveContainer",
        "StopPodSandbox",
        "RemovePodSandbox",
    ]
    assert tracer.names[pod.id] == "containers/ordered/uid-ordered"
    assert tracer.names[cid] == "app"


def test_a_container_that_exits_on_its_own_is_reported_stopped(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    tracer = Tracer()
    connect(shared_daemon, plugins, tracer, "tracer")
    pod = h.pod("exits")
    cid = h.container(pod, "quick", ["/bin/sh", "-c", "exit 3"])
    h.wait_exited(cid)
    wait_for("StopContainer", lambda: "StopContainer" in tracer.of(cid))
    h.remove(cid)
    assert tracer.of(cid) == [
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "StopContainer",
        "RemoveContainer",
    ]


def test_a_refused_run_pod_sandbox_fails_the_call_leaves_nothing_and_a_retry_succeeds(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    tracer = Tracer(fail=["RunPodSandbox"])
    connect(shared_daemon, plugins, tracer, "refuser")
    with pytest.raises(ClientError, match="RunPodSandbox refused by the test plugin"):
        h.pod("refused")
    refused = [target for event, target in tracer.events if event == "RunPodSandbox"]
    assert len(refused) == 1
    assert all(p.id != refused[0] for p in h.client.list_pod_sandbox(api.ListPodSandboxRequest()).items)
    assert not (Path(shared_daemon.cfg.state_dir) / "pods" / refused[0]).exists()
    assert not os.path.exists(f"/run/netns/pycri-{refused[0]}")
    pod = h.pod("refused")  # the same name again
    assert pod.id != refused[0]


def test_a_refused_create_container_fails_the_call_leaves_nothing_and_a_retry_succeeds(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    pod = h.pod("refused-create")
    tracer = Tracer(fail=["CreateContainer"])
    connect(shared_daemon, plugins, tracer, "refuser")
    with pytest.raises(ClientError, match="CreateContainer refused by the test plugin"):
        h.create(pod, h.config("app"))
    (refused,) = [target for event, target in tracer.events if event == "CreateContainer"]
    assert h.list() == set()
    assert not (Path(shared_daemon.cfg.root_dir) / "containers" / refused).exists()
    cid = h.container(pod, "app")
    assert h.status(cid).state == api.CONTAINER_RUNNING


def test_a_refused_start_fails_the_start_and_a_retry_succeeds(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    pod = h.pod("refused-start")
    connect(shared_daemon, plugins, Tracer(fail=["StartContainer"]), "refuser")
    cid = h.container(pod, "app", start=False)
    with pytest.raises(ClientError, match="StartContainer refused"):
        h.start(cid)
    assert h.status(cid).state == api.CONTAINER_CREATED
    h.start(cid)
    assert h.status(cid).state == api.CONTAINER_RUNNING


def test_a_hanging_plugin_is_cut_off_after_the_request_timeout(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    tracer = Tracer()
    connect(shared_daemon, plugins, Tracer(hang=["RunPodSandbox"]), "hanger", "05")
    connect(shared_daemon, plugins, tracer, "tracer", "50")
    started = time.monotonic()
    pod = h.pod("hung")
    assert time.monotonic() - started < 10
    assert tracer.of(pod.id) == ["RunPodSandbox"]  # the event went on without the hanging plugin
    info = wait_for("hanger dropped", lambda: [p["name"] for p in nri_info(h.client)["plugins"]] == ["tracer"] or None)
    assert info


class Adjuster(PluginBase):
    """Adds an environment variable and a read-only bind mount to every container it is told of."""

    def __init__(self, source: str) -> None:
        self.source = source

    async def create_container(
        self, pod: nri.PodSandbox, container: nri.Container
    ) -> tuple[nri.ContainerAdjustment | None, Updates]:
        adjust = nri.ContainerAdjustment(
            env=[nri.KeyValue(key="FROM_NRI", value="adjusted")],
            mounts=[nri.Mount(destination="/nri", type="bind", source=self.source, options=["rbind", "ro"])],
            annotations={"nri.example/adjusted": "yes"},
        )
        return adjust, []


def test_an_adjustment_reaches_the_container(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread], tmp_path: Path
) -> None:
    source = tmp_path / "nri-volume"
    source.mkdir()
    (source / "file").write_text("from the plugin\n")
    connect(shared_daemon, plugins, Adjuster(str(source)), "adjuster")
    pod = h.pod("adjusted")
    cid = h.container(pod, "app")
    assert h.sh(cid, "echo $FROM_NRI").strip() == "adjusted"
    assert h.sh(cid, "cat /nri/file").strip() == "from the plugin"
    assert "Read-only" in h.fails(cid, "echo x > /nri/file")
    assert h.info(cid)["runtimeSpec"]["annotations"]["nri.example/adjusted"] == "yes"


CGROUP_V1 = os.path.isfile("/sys/fs/cgroup/memory/memory.limit_in_bytes")


@pytest.mark.skipif(not CGROUP_V1, reason="reads cgroup v1 files")
def test_a_plugin_s_update_goes_through_the_same_code_as_update_container_resources(
    h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]
) -> None:
    pod = h.pod("updated")
    cid = h.container(pod, "app")
    connect(shared_daemon, plugins, Recorder(), "updater")
    update = nri.ContainerUpdate(container_id=cid)
    update.linux.resources.cpu.shares.value = 384
    update.linux.resources.memory.limit.value = 96 << 20
    failed = plugins[-1]._run(plugins[-1].stub.update_containers([update]))
    assert failed == []
    cgroup = str(h.info(cid)["runtimeSpec"]["linux"]["cgroupsPath"]).lstrip("/")
    assert (Path("/sys/fs/cgroup/cpu") / cgroup / "cpu.shares").read_text().strip() == "384"
    assert (Path("/sys/fs/cgroup/memory") / cgroup / "memory.limit_in_bytes").read_text().strip() == str(96 << 20)
    gone = nri.ContainerUpdate(container_id="0" * 64)
    gone.linux.resources.cpu.shares.value = 384
    assert [u.container_id for u in plugins[-1]._run(plugins[-1].stub.update_containers([gone]))] == ["0" * 64]


LAUNCHED_PLUGIN = """#!{python}
import asyncio, os, sys
sys.path.insert(0, {tree!r})
from pycri.nri import api_pb2 as nri
from pycri.nri.stub import PluginBase, Stub

class Launched(PluginBase):
    async def create_container(self, pod, container):
        return nri.ContainerAdjustment(env=[nri.KeyValue(key="LAUNCHED", value=os.environ["NRI_PLUGIN_NAME"])]), []

async def main():
    with open({pidfile!r}, "w") as f:
        f.write(str(os.getpid()))
    stub = Stub(Launched(), name=os.environ["NRI_PLUGIN_NAME"], index=os.environ["NRI_PLUGIN_IDX"])
    await stub.connect_inherited(int(os.environ["NRI_PLUGIN_SOCKET"]))
    await stub.wait_closed()

asyncio.run(main())
"""


def test_pre_installed_plugins_are_launched_and_stopped_with_the_daemon(image_refs: dict[str, str], tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    tree = str(Path(pycri.__file__).resolve().parent.parent)
    pidfile = tmp_path / "plugin.pid"
    script = plugin_dir / "30-launched"
    script.write_text(LAUNCHED_PLUGIN.format(python=sys.executable, tree=tree, pidfile=str(pidfile)))
    script.chmod(0o755)
    (plugin_dir / "not-a-plugin").write_text("#!/bin/sh\nexit 1\n")  # no index: skipped
    (plugin_dir / "40-not-executable").write_text("")
    daemon = DaemonProcess.temporary(nri={"enable": True, "plugin_path": str(plugin_dir)})
    daemon.cfg.nri.socket = str(daemon.workdir / "run" / "nri.sock")
    with daemon, Client(daemon.socket, timeout=60) as client:
        client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_refs["plain"])))
        wait_for("the launched plugin", lambda: nri_info(client)["plugins"] or None, timeout=20)
        assert [(p["index"], p["name"]) for p in nri_info(client)["plugins"]] == [("30", "launched")]
        h = Harness(client, daemon, image_refs, tmp_path)
        try:
            pod = h.pod("launched")
            cid = h.container(pod, "app")
            assert h.sh(cid, "echo $LAUNCHED").strip() == "launched"
        finally:
            h.cleanup()
        pid = int(pidfile.read_text())
        assert os.path.exists(f"/proc/{pid}")
    wait_for("the plugin to be gone", lambda: not os.path.exists(f"/proc/{pid}") or None)


def test_a_plugin_s_eviction_stops_the_container(h: Harness, shared_daemon: DaemonProcess, plugins: list[PluginThread]) -> None:
    pod = h.pod("evicted")
    cid = h.container(pod, "app")
    tracer = Tracer()
    connect(shared_daemon, plugins, tracer, "evicter")
    eviction = nri.ContainerEviction(container_id=cid, reason="test eviction")
    assert plugins[-1]._run(plugins[-1].stub.update_containers([], evict=[eviction], timeout=30)) == []
    assert h.status(cid).state == api.CONTAINER_EXITED
    assert tracer.of(cid) == ["StopContainer"]
