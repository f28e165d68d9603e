"""NRI end to end over real unix sockets: pycri's runtime side against plugins on pycri's stub."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycri.nri import api_pb2 as nri
from pycri.nri import events, ttrpc
from pycri.nri.adaptation import Adaptation, Options, SyncCallback
from pycri.nri.channel import Channel, Method
from pycri.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN
from pycri.nri.plugin import NRIError
from pycri.nri.stub import PluginBase, Stub, handled_events

POD = nri.PodSandbox(id="pod1", name="web", namespace="default", uid="u1")
CTR = nri.Container(id="ctr1", pod_sandbox_id="pod1", name="app", args=["/app"], env=["PATH=/bin", "MODE=prod"])


@dataclass
class Runtime:
    adaptation: Adaptation
    socket: str
    pods: list[nri.PodSandbox] = field(default_factory=list)
    containers: list[nri.Container] = field(default_factory=list)
    applied: list[nri.ContainerUpdate] = field(default_factory=list)  # from synchronization
    unsolicited: list[nri.ContainerUpdate] = field(default_factory=list)  # from UpdateContainers

    async def plugin(self, plugin: PluginBase, name: str, index: str) -> Stub:
        """Connect a plugin and wait until the runtime has it in its call order."""
        stub = Stub(plugin, name=name, index=index)
        await stub.connect(self.socket)
        await self.wait_for(lambda: any(p.name == name and p.index == index for p in self.adaptation.plugins))
        return stub

    @staticmethod
    async def wait_for(condition: object, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():  # type: ignore[operator]
            assert time.monotonic() < deadline, "timed out waiting"
            await asyncio.sleep(0.01)


async def _runtime(
    directory: Path, *, request_timeout: float = 2.0, registration_timeout: float = 2.0, config_dir: str | None = None
) -> Runtime:
    holder: list[Runtime] = []

    async def sync(callback: SyncCallback) -> None:
        rt = holder[0]
        rt.applied += await callback(rt.pods, rt.containers)

    async def update(updates: list[nri.ContainerUpdate]) -> list[nri.ContainerUpdate]:
        holder[0].unsolicited += updates
        return [u for u in updates if u.container_id == "missing"]

    socket = str(directory / "nri.sock")
    options = Options(
        socket_path=socket,
        runtime_version="9.9",
        plugin_registration_timeout=registration_timeout,
        plugin_request_timeout=request_timeout,
        plugin_config_dir=config_dir,
    )
    rt = Runtime(Adaptation(options, sync=sync, update=update), socket)
    holder.append(rt)
    await rt.adaptation.start()
    return rt


@pytest.fixture
def directory() -> object:
    path = Path(tempfile.mkdtemp(prefix="nri-", dir="/tmp"))  # short: unix socket paths are limited
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def runtime(directory: Path) -> AsyncIterator[Runtime]:
    rt = await _runtime(directory)
    yield rt
    await rt.adaptation.stop()


class Recorder(PluginBase):
    """Records every hook it gets in a shared journal."""

    def __init__(self, journal: list[tuple[str, str]], label: str) -> None:
        self.journal = journal
        self.label = label
        self.config: tuple[str, str, str] | None = None
        self.synced: tuple[list[str], list[str]] | None = None

    async def configure(self, config: str, runtime_name: str, runtime_version: str) -> int:
        self.config = (config, runtime_name, runtime_version)
        return 0

    async def synchronize(self, pods: Sequence[nri.PodSandbox], containers: Sequence[nri.Container]) -> list[nri.ContainerUpdate]:
        self.synced = ([p.id for p in pods], [c.id for c in containers])
        return []

    async def run_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        self.journal.append((self.label, f"RunPodSandbox {pod.id}"))

    async def start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        self.journal.append((self.label, f"StartContainer {container.id}"))


# -- registration, configuration, synchronization --------------------------------------------------


async def test_registration_configure_and_synchronize(directory: Path) -> None:
    (directory / "conf.d").mkdir()
    (directory / "conf.d" / "10-rec.conf").write_text("level: 3\n")
    rt = await _runtime(directory, config_dir=str(directory / "conf.d"))
    try:
        rt.pods += [POD, nri.PodSandbox(id="pod2")]
        rt.containers += [CTR]
        rec = Recorder([], "rec")
        stub = await rt.plugin(rec, "rec", "10")
        assert rec.config == ("level: 3\n", "pycri", "9.9")
        assert stub.request_timeout == 2.0
        assert rec.synced == (["pod1", "pod2"], ["ctr1"])
        [info] = rt.adaptation.plugins
        assert (info.index, info.name) == ("10", "rec")
        assert info.events == events.event_mask([nri.RUN_POD_SANDBOX, nri.START_CONTAINER]) == handled_events(rec)
    finally:
        await rt.adaptation.stop()


async def test_synchronize_returns_the_plugins_updates_to_the_runtime(runtime: Runtime) -> None:
    runtime.containers.append(CTR)

    class Syncer(PluginBase):
        async def synchronize(
            self, pods: Sequence[nri.PodSandbox], containers: Sequence[nri.Container]
        ) -> list[nri.ContainerUpdate]:
            update = nri.ContainerUpdate(container_id=containers[0].id)
            update.linux.resources.cpu.shares.value = 512
            return [update]

    await runtime.plugin(Syncer(), "syncer", "05")
    [update] = runtime.applied
    assert (update.container_id, update.linux.resources.cpu.shares.value) == ("ctr1", 512)


async def test_a_large_state_is_synchronized_in_chunks(runtime: Runtime) -> None:
    # 3000 pods of 2 KiB each are more than one 4 MiB ttrpc message: the runtime splits them and the
    # stub puts them back together before the plugin sees them.
    runtime.pods += [nri.PodSandbox(id=f"pod{i}", annotations={"big": "x" * 2048}) for i in range(3000)]
    rec = Recorder([], "rec")
    await runtime.plugin(rec, "rec", "10")
    assert rec.synced is not None
    synced_pods = rec.synced[0]
    assert len(synced_pods) == 3000
    assert synced_pods == [f"pod{i}" for i in range(3000)]


async def test_plugins_are_called_in_index_then_name_order(runtime: Runtime) -> None:
    journal: list[tuple[str, str]] = []
    for index, name in (("30", "c"), ("10", "b"), ("20", "x"), ("10", "a")):
        await runtime.plugin(Recorder(journal, f"{index}-{name}"), name, index)
    assert [(p.index, p.name) for p in runtime.adaptation.plugins] == [("10", "a"), ("10", "b"), ("20", "x"), ("30", "c")]
    await runtime.adaptation.run_pod_sandbox(POD)
    await runtime.adaptation.start_container(POD, CTR)
    await runtime.adaptation.stop_pod_sandbox(POD)  # nobody subscribed
    assert journal == [(label, "RunPodSandbox pod1") for label in ("10-a", "10-b", "20-x", "30-c")] + [
        (label, "StartContainer ctr1") for label in ("10-a", "10-b", "20-x", "30-c")
    ]


async def test_registration_timeout_and_bad_names(directory: Path) -> None:
    rt = await _runtime(directory, registration_timeout=0.2)
    try:
        # A connection that never registers is closed after the registration timeout.
        reader, writer = await asyncio.open_unix_connection(rt.socket)
        started = time.monotonic()
        assert await asyncio.wait_for(reader.read(), 2.0) == b""
        assert time.monotonic() - started < 1.5
        writer.close()
        # A plugin registering with an invalid name is refused and disconnected.
        stub = Stub(PluginBase(), name="ok", index="01")
        stub.name = "bad name"
        with pytest.raises(ttrpc.RpcError, match="invalid character"):
            await stub.connect(rt.socket)
        assert rt.adaptation.plugins == []
    finally:
        await rt.adaptation.stop()


# -- adjustments ----------------------------------------------------------------------------------


class Adjuster(PluginBase):
    def __init__(self, env: dict[str, str], *, memory: int | None = None, annotations: dict[str, str] | None = None) -> None:
        self.env = env
        self.memory = memory
        self.annotations = annotations or {}
        self.seen_env: list[str] = []

    async def create_container(
        self, pod: nri.PodSandbox, container: nri.Container
    ) -> tuple[nri.ContainerAdjustment | None, list[nri.ContainerUpdate]]:
        self.seen_env = list(container.env)
        adjust = nri.ContainerAdjustment(annotations=self.annotations)
        for key, value in self.env.items():
            adjust.env.add(key=key, value=value)
        if self.memory is not None:
            adjust.linux.resources.memory.limit.value = self.memory
        return adjust, []


async def test_adjustments_of_several_plugins_are_merged_in_order(runtime: Runtime) -> None:
    first = Adjuster({"A": "1", "-MODE": ""}, annotations={"team": "blue"})
    first_mount = nri.Mount(destination="/data", source="/srv/data", type="bind", options=["rbind"])

    async def with_mount(
        pod: nri.PodSandbox, container: nri.Container
    ) -> tuple[nri.ContainerAdjustment | None, list[nri.ContainerUpdate]]:
        adjust, updates = await Adjuster.create_container(first, pod, container)
        assert adjust is not None
        adjust.mounts.append(first_mount)
        return adjust, updates

    first.create_container = with_mount  # type: ignore[method-assign]
    second = Adjuster({"B": "2"}, memory=256 << 20)
    await runtime.plugin(first, "first", "10")
    await runtime.plugin(second, "second", "20")
    reply = await runtime.adaptation.create_container(POD, CTR)
    assert first.seen_env == ["PATH=/bin", "MODE=prod"]
    assert second.seen_env == ["PATH=/bin", "A=1"]  # the second plugin sees the first one's changes
    # As upstream's result.go: the removal reaches later plugins, not the merged adjustment.
    assert [(kv.key, kv.value) for kv in reply.adjust.env] == [("A", "1"), ("B", "2")]
    assert dict(reply.adjust.annotations) == {"team": "blue"}
    assert list(reply.adjust.mounts) == [first_mount]
    assert reply.adjust.linux.resources.memory.limit.value == 256 << 20
    assert list(CTR.env) == ["PATH=/bin", "MODE=prod"]  # the caller's message is left alone


async def test_two_plugins_setting_the_same_thing_conflict(runtime: Runtime) -> None:
    a = await runtime.plugin(Adjuster({"X": "1"}), "a", "10")
    b = await runtime.plugin(Adjuster({"X": "2"}), "b", "20")
    with pytest.raises(NRIError, match='plugins "20-b" and "10-a" both tried to set Env X'):
        await runtime.adaptation.create_container(POD, CTR)
    a.close()
    b.close()
    await runtime.wait_for(lambda: runtime.adaptation.plugins == [])
    await runtime.plugin(Adjuster({}, memory=1), "c", "30")
    await runtime.plugin(Adjuster({}, memory=2), "d", "40")
    with pytest.raises(NRIError, match='plugins "40-d" and "30-c" both tried to set MemLimit'):
        await runtime.adaptation.create_container(POD, nri.Container(id="other"))


async def test_update_and_stop_container_merge_updates(runtime: Runtime) -> None:
    class Updater(PluginBase):
        async def update_container(
            self, pod: nri.PodSandbox, container: nri.Container, resources: nri.LinuxResources
        ) -> list[nri.ContainerUpdate]:
            mine = nri.ContainerUpdate(container_id=container.id)
            mine.linux.resources.cpu.quota.value = 50000
            other = nri.ContainerUpdate(container_id="neighbour", ignore_failure=True)
            other.linux.resources.cpu.cpus = "0-1"
            return [mine, other]

        async def stop_container(self, pod: nri.PodSandbox, container: nri.Container) -> list[nri.ContainerUpdate]:
            freed = nri.ContainerUpdate(container_id="neighbour")
            freed.linux.resources.cpu.cpus = "0-3"
            return [freed]

    await runtime.plugin(Updater(), "updater", "10")
    resources = nri.LinuxResources()
    resources.memory.limit.value = 1 << 30
    [other, mine] = await runtime.adaptation.update_container(POD, CTR, resources)
    assert (other.container_id, other.linux.resources.cpu.cpus, other.ignore_failure) == ("neighbour", "0-1", True)
    assert mine.container_id == "ctr1"
    assert mine.linux.resources.cpu.quota.value == 50000
    assert mine.linux.resources.memory.limit.value == 1 << 30  # the full resulting resources
    [freed] = await runtime.adaptation.stop_container(POD, CTR)
    assert (freed.container_id, freed.linux.resources.cpu.cpus) == ("neighbour", "0-3")


async def test_a_validator_sees_the_merged_result_and_may_reject_it(runtime: Runtime) -> None:
    class Validator(PluginBase):
        seen: nri.ValidateContainerAdjustmentRequest | None = None

        async def validate_container_adjustment(self, request: nri.ValidateContainerAdjustmentRequest) -> None:
            self.seen = request
            if any(kv.key == "FORBIDDEN" for kv in request.adjust.env):
                raise ValueError("FORBIDDEN may not be set")

    validator = Validator()
    await runtime.plugin(Adjuster({"OK": "1"}), "adj", "10")
    await runtime.plugin(validator, "val", "90")
    await runtime.adaptation.create_container(POD, CTR)
    assert validator.seen is not None
    assert [(p.index, p.name) for p in validator.seen.plugins] == [("10", "adj"), ("90", "val")]
    assert validator.seen.owners.owners["ctr1"].compound[nri.Env].owners["OK"] == "10-adj"
    assert list(validator.seen.container.env) == ["PATH=/bin", "MODE=prod"]  # pristine
    await runtime.plugin(Adjuster({"FORBIDDEN": "1"}), "bad", "20")
    with pytest.raises(NRIError, match='validator "90-val" rejected container adjustment, reason: FORBIDDEN may not be set'):
        await runtime.adaptation.create_container(POD, CTR)


# -- failures -------------------------------------------------------------------------------------


async def test_a_hanging_plugin_is_cut_off_by_the_request_timeout(directory: Path) -> None:
    rt = await _runtime(directory, request_timeout=0.3)
    try:

        class Hanging(PluginBase):
            async def create_container(
                self, pod: nri.PodSandbox, container: nri.Container
            ) -> tuple[nri.ContainerAdjustment | None, list[nri.ContainerUpdate]]:
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

        hanging = await rt.plugin(Hanging(), "hang", "10")
        await rt.plugin(Adjuster({"B": "2"}), "fine", "20")
        started = time.monotonic()
        reply = await rt.adaptation.create_container(POD, CTR)
        assert time.monotonic() - started < 1.0
        assert [(kv.key, kv.value) for kv in reply.adjust.env] == [("B", "2")]
        assert [p.name for p in rt.adaptation.plugins] == ["fine"]
        await asyncio.wait_for(hanging.wait_closed(), 2.0)  # the runtime hung up on it
    finally:
        await rt.adaptation.stop()


async def test_a_plugin_closing_mid_call_is_dropped_and_the_others_go_on(runtime: Runtime) -> None:
    journal: list[tuple[str, str]] = []
    holder: list[Stub] = []

    class Quitter(PluginBase):
        async def start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
            holder[0].close()  # the plugin goes away while the runtime waits for its answer
            await asyncio.sleep(3600)

    holder.append(await runtime.plugin(Quitter(), "quitter", "10"))
    await runtime.plugin(Recorder(journal, "rec"), "rec", "20")
    started = time.monotonic()
    await runtime.adaptation.start_container(POD, CTR)
    assert time.monotonic() - started < 1.0  # not the request timeout: the close failed the call at once
    assert journal == [("rec", "StartContainer ctr1")]
    assert [p.name for p in runtime.adaptation.plugins] == ["rec"]


async def test_a_plugin_answering_an_error_fails_the_operation_and_stays(runtime: Runtime) -> None:
    class Refuser(PluginBase):
        async def run_pod_sandbox(self, pod: nri.PodSandbox) -> None:
            raise ttrpc.RpcError(ttrpc.Code.PERMISSION_DENIED, f"pod {pod.name} is not welcome")

    await runtime.plugin(Refuser(), "refuser", "10")
    with pytest.raises(NRIError, match="NRI plugin 10-refuser failed to handle RunPodSandbox: pod web is not welcome"):
        await runtime.adaptation.run_pod_sandbox(POD)
    assert [p.name for p in runtime.adaptation.plugins] == ["refuser"]


async def test_an_old_plugin_gets_events_through_state_change(runtime: Runtime) -> None:
    # A plugin from before the dedicated event methods serves only Configure, Synchronize and StateChange.
    changes: list[tuple[int, str, str]] = []

    async def configure(request: nri.ConfigureRequest) -> nri.ConfigureResponse:
        return nri.ConfigureResponse(events=events.event_mask([nri.RUN_POD_SANDBOX, nri.REMOVE_CONTAINER]))

    async def synchronize(request: nri.SynchronizeRequest) -> nri.SynchronizeResponse:
        return nri.SynchronizeResponse()

    async def state_change(change: nri.StateChangeEvent) -> nri.Empty:
        changes.append((change.event, change.pod.id, change.container.id))
        return nri.Empty()

    reader, writer = await asyncio.open_unix_connection(runtime.socket)
    old = Channel(
        reader,
        writer,
        client_conn=RUNTIME_SERVICE_CONN,
        server_conn=PLUGIN_SERVICE_CONN,
        services={
            events.PLUGIN_SERVICE: {
                "Configure": Method(nri.ConfigureRequest, configure),
                "Synchronize": Method(nri.SynchronizeRequest, synchronize),
                "StateChange": Method(nri.StateChangeEvent, state_change),
            }
        },
    )
    old.start()
    try:
        register = nri.RegisterPluginRequest(plugin_name="old", plugin_idx="50")
        await old.call(events.RUNTIME_SERVICE, "RegisterPlugin", register, nri.Empty, timeout=2.0)
        await runtime.wait_for(lambda: [p.name for p in runtime.adaptation.plugins] == ["old"])
        await runtime.adaptation.run_pod_sandbox(POD)
        await runtime.adaptation.remove_container(POD, CTR)
        assert changes == [(nri.RUN_POD_SANDBOX, "pod1", ""), (nri.REMOVE_CONTAINER, "pod1", "ctr1")]
    finally:
        old.close()


async def test_unsolicited_container_updates_reach_the_runtime(runtime: Runtime) -> None:
    stub = await runtime.plugin(PluginBase(), "nudger", "10")
    wanted = [nri.ContainerUpdate(container_id="ctr1"), nri.ContainerUpdate(container_id="missing")]
    failed = await stub.update_containers(wanted)
    assert [u.container_id for u in runtime.unsolicited] == ["ctr1", "missing"]
    assert [u.container_id for u in failed] == ["missing"]


async def test_blocked_sync_holds_new_plugins_back(runtime: Runtime) -> None:
    async with runtime.adaptation.block_plugin_sync():
        stub = Stub(PluginBase(), name="late", index="10")
        await stub.connect(runtime.socket)  # registered and configured, but not yet synchronized
        await asyncio.sleep(0.1)
        assert runtime.adaptation.plugins == []
    await runtime.wait_for(lambda: [p.name for p in runtime.adaptation.plugins] == ["late"])


async def test_stop_disconnects_plugins_and_removes_the_socket(directory: Path) -> None:
    rt = await _runtime(directory)
    stub = await rt.plugin(PluginBase(), "p", "10")
    await rt.adaptation.stop()
    await asyncio.wait_for(stub.wait_closed(), 2.0)
    assert not _exists(rt.socket)


def _exists(path: str) -> bool:
    return os.path.exists(path)
