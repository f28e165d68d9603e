"""Recovery and clean-up failures of the pod and container services, with a fake runtime and network.

The services run in-process on a real state database under ``tmp_path``. The runtime handler's
"containers" are child processes (``sleep``) of the test; the pod network only records what is
attached. Pods share the host's IPC namespace, so nothing is mounted: no root needed. Failures
are injected into the fakes (or by monkeypatching), as the integration tests do with the real
runtime and CNI plugins.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.config import Config, from_dict
from pycri.containers import rootfs as rootfs_mod
from pycri.containers.model import STEP_CREATED, STEP_DIR, STEP_ROOTFS, Container
from pycri.containers.model import State as CState
from pycri.containers.registry import ContainerRegistry
from pycri.containers.service import ContainerService
from pycri.images.service import ImageService
from pycri.oci.interface import ContainerState, ExitStatus, RuntimeContainer, RuntimeImpl
from pycri.procs import start_time
from pycri.sandboxes.model import STEP_INFRA, Sandbox, State
from pycri.sandboxes.registry import SandboxRegistry
from pycri.sandboxes.service import SandboxService
from pycri.store import ContainerRow, SandboxRow, Store

WAIT = 10.0


class Injected(RuntimeError):
    """A failure the test injects."""


class FakeRuntime:
    """A runtime handler whose containers are ``sleep`` child processes; ``fail[op]`` fails the next ``op`` calls."""

    def __init__(self, name: str = "fake") -> None:
        self.name = name
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.started: set[str] = set()
        self.fail: dict[str, int] = {}
        self.finished_at: Callable[[], int] = time.time_ns

    def _call(self, op: str) -> None:
        if self.fail.get(op, 0) > 0:
            self.fail[op] -= 1
            raise Injected(f"injected {op} failure")

    async def probe(self) -> Any:
        raise NotImplementedError

    async def features(self) -> dict[str, Any]:
        return {}

    def spawn(self, cid: str, command: tuple[str, ...] = ("sleep", "1000")) -> int:
        self.procs[cid] = subprocess.Popen(command, start_new_session=True)
        return self.procs[cid].pid

    async def create(self, c: RuntimeContainer) -> int:
        self._call("create")
        return self.spawn(c.id)

    async def start(self, c: RuntimeContainer) -> None:
        self._call("start")
        self.started.add(c.id)

    async def state(self, c: RuntimeContainer) -> ContainerState | None:
        self._call("state")
        proc = self.procs.get(c.id)
        if proc is None:
            return None
        if proc.poll() is not None:
            return ContainerState(c.id, "stopped", 0, str(c.bundle))
        return ContainerState(c.id, "running" if c.id in self.started else "created", proc.pid, str(c.bundle))

    async def kill(self, c: RuntimeContainer, signal: str, *, all_processes: bool = False) -> None:
        self._call("kill")
        proc = self.procs.get(c.id)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    async def delete(self, c: RuntimeContainer, *, force: bool = False) -> None:
        self._call("delete")
        proc = self.procs.pop(c.id, None)
        self.started.discard(c.id)
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    async def exit_status(self, c: RuntimeContainer, *, wait: float) -> ExitStatus:
        proc = self.procs.get(c.id)
        code = proc.poll() if proc is not None else None
        if code is not None and code < 0:
            code = 128 - code
        return ExitStatus(code=code, finished_at=self.finished_at(), oom_killed=False)

    async def remove_leftovers(self, c: RuntimeContainer) -> None:
        self._call("remove_leftovers")

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


class FakeNetwork:
    """A pod network that only records what is attached; ``fail_teardown`` fails that many teardowns."""

    def __init__(self) -> None:
        self.attached: set[str] = set()
        self.fail_teardown = 0

    async def plan(self, sandbox: Sandbox) -> None:
        sandbox.netns = f"/nonexistent/netns/pycri-{sandbox.id[:16]}"
        sandbox.network_name = "fake"
        sandbox.network_result = {"conflist": {}, "result": None}

    async def setup(self, sandbox: Sandbox) -> None:
        self.attached.add(sandbox.id)
        sandbox.ips = ["10.99.0.2"]

    async def teardown(self, sandbox: Sandbox) -> None:
        if self.fail_teardown > 0:
            self.fail_teardown -= 1
            raise Injected("injected CNI DEL failure")
        self.attached.discard(sandbox.id)


@dataclass
class Node:
    """One daemon's domain: the services on a state database, a fake runtime and network."""

    cfg: Config
    store: Store
    runtime: FakeRuntime
    network: FakeNetwork
    pods: SandboxService
    containers: ContainerService

    async def close(self) -> None:
        await self.containers.close()
        await self.pods.close()
        await self.store.close()


def make_config(tmp: Path) -> Config:
    return from_dict(
        {
            "root_dir": str(tmp / "root"),
            "state_dir": str(tmp / "run"),
            "socket": str(tmp / "run" / "pycri.sock"),
            "default_runtime": "fake",
            "runtimes": {"fake": {"path": "/bin/true", "root": str(tmp / "run" / "fake")}},
        }
    )


def as_handler(fake: FakeRuntime) -> RuntimeImpl:
    return cast(RuntimeImpl, fake)  # it has what the services use of a handler


async def no_spec(*args: Any) -> Any:
    raise AssertionError("no container is created through the spec builder here")


NodeFactory = Callable[..., Any]


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    """Build a node (as the daemon does at start-up) on ``tmp_path``'s state; each call is a restart."""
    made: list[Node] = []
    runtime = FakeRuntime()
    network = FakeNetwork()

    async def build(
        *, rebooted: bool = False, handlers: dict[str, RuntimeImpl] | None = None, retired: Any = None, recover: bool = True
    ) -> Node:
        if made:
            await made[-1].close()
        cfg = make_config(tmp_path)
        store = await Store.open(cfg.database)
        runtimes = handlers if handlers is not None else {"fake": as_handler(runtime)}
        pods_registry = SandboxRegistry()
        containers = ContainerService(
            cfg,
            store,
            runtimes,
            pods_registry,
            cast(ImageService, None),
            registry=ContainerRegistry(),
            build_spec=no_spec,
            retired_handler=retired,
        )
        pods = SandboxService(
            cfg, store, runtimes, network, registry=pods_registry, containers=containers, retired_handler=retired
        )
        for service in (pods, containers):
            service.retrier.first = service.retrier.cap = 0.05
        node = Node(cfg, store, runtime, network, pods, containers)
        made.append(node)
        if recover:
            await pods.recover(rebooted=rebooted)
            await containers.recover(rebooted=rebooted)
        return node

    try:
        yield build
    finally:
        if made:
            with contextlib.suppress(Exception):
                await made[-1].close()
        runtime.stop_all()


def pod_config(name: str = "web", uid: str = "") -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="recovery", uid=uid or str(uuid.uuid4())), hostname=name
    )
    config.linux.security_context.namespace_options.ipc = api.NODE  # no /dev/shm mount: no root needed
    return config


async def add_container(
    node: Node, sandbox: Sandbox, name: str = "app", state: CState = CState.CREATED, **fields: Any
) -> Container:
    """A container record as CreateContainer leaves it (its directory, no rootfs mounted), saved and registered."""
    cid = uuid.uuid4().hex * 2
    container = Container(
        id=cid,
        sandbox_id=sandbox.id,
        config=api.ContainerConfig(metadata=api.ContainerMetadata(name=name)),
        state=state,
        created_at=time.time_ns(),
        runtime_handler=sandbox.runtime_handler,
        dir=Path(node.cfg.root_dir) / "containers" / cid,
        image_id="sha256:" + "0" * 64,
        image_ref="sha256:" + "0" * 64,
        chain_ids=[],
        steps=[STEP_DIR, STEP_ROOTFS],
        **fields,
    )
    (container.bundle).mkdir(parents=True)
    (container.bundle / "config.json").write_text("{}")
    await node.store.containers.insert(container.to_row())
    node.containers.containers[cid] = container
    return container


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def db_states(node: Node) -> dict[str, str]:
    rows: list[SandboxRow | ContainerRow] = [*await node.store.sandboxes.all(), *await node.store.containers.all()]
    return {r.id: r.state for r in rows}


# ---------------------------------------------------------------- 1. recovery never aborts start-up


async def test_recovery_goes_on_when_undoing_a_half_made_pod_fails(make_node: NodeFactory) -> None:
    node = await make_node()
    healthy = await node.pods.run(pod_config("healthy"), "")
    crashed = await node.pods.run(pod_config("crashed"), "")
    row = crashed.to_row()
    row.state = State.CREATING.value  # as a crash before RunPodSandbox recorded READY leaves it
    await node.store.sandboxes.put(row)

    node.network.fail_teardown = 1  # the CNI DEL of the undo fails
    node = await make_node()  # the restart must not fail
    listed = {s.id: s.state for s in node.pods.list(None)}
    assert listed == {healthy.id: State.READY, crashed.id: State.NOTREADY}, "kept, in a state kubelet removes"
    # ... and retried in the background, until it is gone.
    await wait_until(lambda: crashed.id not in node.pods.sandboxes, "the retried clean-up")
    assert crashed.id not in node.network.attached
    assert crashed.id not in await db_states(node)
    assert not (Path(node.cfg.state_dir) / "pods" / crashed.id).exists()


async def test_recovery_goes_on_when_finishing_a_removal_fails(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod, state=CState.REMOVING)
    node.runtime.fail["remove_leftovers"] = 1

    node = await make_node()
    assert [c.id for c in node.containers.query(None)] == [], "removed for kubelet: not listed"
    await wait_until(lambda: container.id not in node.containers.registry.removing, "the retried clean-up")
    assert container.id not in await db_states(node)
    assert not container.dir.exists()


async def test_recovery_goes_on_when_a_half_made_container_cannot_be_undone(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod, state=CState.CREATING)
    node.runtime.fail["remove_leftovers"] = 1

    node = await make_node()
    listed = {c.id: c.state for c in node.containers.query(None)}
    assert listed == {container.id: CState.UNKNOWN}, "listed, for kubelet to remove"
    await wait_until(lambda: container.id not in node.containers.containers, "the retried clean-up")
    assert container.id not in await db_states(node)


async def test_recovery_goes_on_when_the_runtime_fails(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    running = await add_container(node, pod, "running", CState.RUNNING)
    running.pid = node.runtime.spawn(running.id)
    running.pid_start = start_time(running.pid)
    node.runtime.started.add(running.id)
    await node.store.containers.put(running.to_row())
    node.runtime.fail["state"] = 100  # `runc state` fails for everything

    node = await make_node()
    assert node.pods.get(pod.id).state is State.READY, "its infra process is alive and ours"
    assert node.containers.get(running.id).state is CState.RUNNING
    node.runtime.fail.clear()


async def test_a_handler_removed_from_the_configuration(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod, state=CState.REMOVING)
    assert (pod.runtime_path, pod.runtime_root) == (node.cfg.runtimes["fake"].path, node.cfg.runtimes["fake"].root)
    other = as_handler(FakeRuntime("other"))

    # Without a way to rebuild it, the handler's pods are NOTREADY, and start-up goes on.
    node = await make_node(handlers={"other": other})
    assert node.pods.get(pod.id).state is State.NOTREADY
    assert container.id in node.containers.registry.removing

    # With one (the daemon's), they are managed as before: the handler is rebuilt from what the record remembers.
    rebuilt: list[tuple[str, str, str]] = []

    def retired(name: str, path: str, root: str) -> RuntimeImpl:
        rebuilt.append((name, path, root))
        return as_handler(node.runtime)

    node = await make_node(handlers={"other": other}, retired=retired)
    assert rebuilt[0] == ("fake", pod.runtime_path, pod.runtime_root)
    await wait_until(lambda: container.id not in node.containers.registry.removing, "the removal")
    await node.pods.stop(pod.id)
    await node.pods.remove(pod.id)
    assert await db_states(node) == {}
    with pytest.raises(errors.InvalidArgument, match="unknown handler 'fake'"):
        await node.pods.run(pod_config(), "fake")  # no new pods on it


# ---------------------------------------------------------------- 2. RemovePodSandbox: containers first, retryable


async def test_remove_pod_waits_for_its_containers_and_can_be_retried(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod, state=CState.EXITED)
    real_unmount = rootfs_mod.unmount_rootfs
    failures = [rootfs_mod.MountsRemain("injected: still mounted")] * 2  # the clean-up, and its retry at once

    def unmount(container_dir: Path) -> None:
        if failures:
            raise failures.pop()
        real_unmount(container_dir)

    monkeypatch.setattr(rootfs_mod, "unmount_rootfs", unmount)
    await node.pods.stop(pod.id)
    with pytest.raises(errors.CRIError, match=f"container {container.id}.*injected: still mounted"):
        await node.pods.remove(pod.id)
    # Nothing of the pod itself was undone: its record and directory are intact for the retry.
    assert node.pods.find(pod.id) is not None
    assert pod.pod_dir.is_dir()
    assert set(await db_states(node)) == {pod.id, container.id}

    await node.pods.remove(pod.id)  # kubelet retries
    assert await db_states(node) == {}
    assert node.pods.find(pod.id) is None
    assert not pod.pod_dir.exists()
    assert not container.dir.exists()


async def test_remove_pod_retried_after_its_own_undo_failed(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    node.runtime.fail["delete"] = 1  # the infra container's `runc delete` fails (a busy cgroup)
    with pytest.raises(Injected):
        await node.pods.remove(pod.id)
    assert node.pods.find(pod.id) is not None
    await node.pods.remove(pod.id)
    assert await db_states(node) == {}
    assert not node.network.attached


# ---------------------------------------------------------------- 3. a failed run whose undo fails


async def test_a_failed_run_whose_undo_fails_releases_the_name(make_node: NodeFactory) -> None:
    node = await make_node()
    config = pod_config()

    def fail_at_infra(step: str) -> None:
        if step == STEP_INFRA:
            raise Injected("injected failure at infra")

    node.pods.before_step = fail_at_infra
    node.network.fail_teardown = 1  # and the undo's CNI DEL fails
    with pytest.raises(Injected, match="at infra"):
        await node.pods.run(config, "")
    node.pods.before_step = None
    (leftover,) = node.pods.list(None)
    assert leftover.state is State.NOTREADY, "listed, so that kubelet removes it"

    again = await node.pods.run(config, "")  # the same name is free
    assert again.state is State.READY
    assert {s.id: s.state for s in node.pods.list(None)} == {leftover.id: State.NOTREADY, again.id: State.READY}

    node.pods.retrier.first = 3600  # kubelet removes it before the background retry does
    await node.pods.stop(leftover.id)
    await node.pods.remove(leftover.id)
    assert leftover.id not in node.network.attached
    assert set(await db_states(node)) == {again.id}

    node = await make_node()  # both names survive a restart
    assert {s.id for s in node.pods.list(None)} == {again.id}


async def test_a_failed_run_left_over_is_undone_after_a_restart(make_node: NodeFactory) -> None:
    node = await make_node()
    node.pods.before_step = lambda step: (_ for _ in ()).throw(Injected("injected")) if step == STEP_INFRA else None
    node.network.fail_teardown = 1
    node.pods.retrier.first = 3600
    with pytest.raises(Injected):
        await node.pods.run(pod_config(), "")
    (leftover,) = node.pods.list(None)

    node = await make_node()
    assert node.pods.get(leftover.id).name_released
    await wait_until(lambda: not node.pods.sandboxes, "the undo, retried after the restart")
    assert leftover.id not in node.network.attached


async def test_a_failed_run_left_over_is_cleaned_up_in_the_background(make_node: NodeFactory) -> None:
    node = await make_node()
    node.pods.before_step = lambda step: (_ for _ in ()).throw(Injected("injected")) if step == STEP_INFRA else None
    node.network.fail_teardown = 1
    with pytest.raises(Injected):
        await node.pods.run(pod_config(), "")
    await wait_until(lambda: not node.pods.sandboxes, "the retried undo")
    assert await db_states(node) == {}
    assert not node.network.attached


# ---------------------------------------------------------------- 4. reboots and reused pids


async def test_after_a_reboot_everything_has_exited(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    running = await add_container(node, pod, "running", CState.RUNNING)
    running.pid = node.runtime.spawn(running.id)
    running.pid_start = start_time(running.pid)
    running.started_at = time.time_ns()
    node.runtime.started.add(running.id)
    await node.store.containers.put(running.to_row())
    created = await add_container(node, pod, "created")

    node = await make_node(rebooted=True)  # the processes still run: only the boot ID says they cannot
    assert node.pods.get(pod.id).state is State.NOTREADY
    assert node.pods.get(pod.id).infra_pid == 0
    st = node.containers.get(running.id)
    assert (st.state, st.exit_code, st.reason, st.pid) == (CState.EXITED, 255, "Unknown", 0)
    assert st.finished_at >= st.started_at
    st = node.containers.get(created.id)
    assert (st.state, st.exit_code, st.reason) == (CState.EXITED, 255, "Unknown"), "its rootfs mount did not survive"
    rows = {r.id: r for r in await node.store.containers.all()}
    assert rows[running.id].state == "exited"


async def test_a_reused_pid_is_not_the_container(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    running = await add_container(node, pod, "running", CState.RUNNING)
    running.pid = node.runtime.spawn(running.id)
    running.pid_start = start_time(running.pid) - 1  # the pid now names a process that started at another time
    running.started_at = time.time_ns()
    await node.store.containers.put(running.to_row())
    infra_row = node.pods.get(pod.id).to_row()
    infra_row.data["infra_pid_start"] -= 1
    await node.store.sandboxes.put(infra_row)
    node.runtime.fail["state"] = 100  # the runtime cannot tell either

    node = await make_node()
    assert node.pods.get(pod.id).state is State.NOTREADY
    st = node.containers.get(running.id)
    assert (st.state, st.exit_code, st.reason) == (CState.EXITED, 255, "Unknown")
    node.runtime.fail.clear()


# ---------------------------------------------------------------- 5. a crash in StartContainer


async def test_start_records_its_intent_before_the_runtime_starts(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod)
    seen: list[dict[str, Any]] = []
    real_start = node.runtime.start

    async def start(c: RuntimeContainer) -> None:
        row = await node.store.containers.get(c.id)
        assert row is not None
        seen.append(row.data)
        await real_start(c)

    node.runtime.start = start
    await node.containers.start(container.id)
    assert seen[0]["start_requested_at"] > 0
    assert STEP_CREATED in seen[0]["steps"]
    row = await node.store.containers.get(container.id)
    assert row is not None
    assert row.data["start_requested_at"] == 0
    assert row.state == "running"


@pytest.mark.parametrize("runtime_state", ["running", "stopped", "created", "unknown"])
async def test_recovery_of_an_interrupted_start(make_node: NodeFactory, runtime_state: str) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    requested = time.time_ns()
    container = await add_container(node, pod, start_requested_at=requested)
    if runtime_state != "unknown":
        container.steps.append(STEP_CREATED)
        command = ("sh", "-c", "exit 7") if runtime_state == "stopped" else ("sleep", "1000")
        node.runtime.spawn(container.id, command)
        if runtime_state != "created":
            node.runtime.started.add(container.id)
        if runtime_state == "stopped":
            node.runtime.procs[container.id].wait()
    await node.store.containers.put(container.to_row())

    node = await make_node()
    st = node.containers.get(container.id)
    assert st.start_requested_at == 0
    if runtime_state == "running":
        assert (st.state, st.pid, st.started_at) == (CState.RUNNING, node.runtime.procs[container.id].pid, requested)
        os_proc = node.runtime.procs[container.id]
        os_proc.send_signal(signal.SIGTERM)
        await wait_until(lambda: st.state is CState.EXITED, "the recovered container to be watched")
        assert st.exit_code == 128 + signal.SIGTERM
    elif runtime_state == "stopped":
        assert (st.state, st.exit_code, st.reason, st.started_at) == (CState.EXITED, 7, "Error", requested)
    else:
        assert st.state is CState.CREATED
        assert STEP_CREATED not in st.steps
        assert container.id not in node.runtime.procs, "the half-started container left the runtime"
    row = await node.store.containers.get(container.id)
    assert row is not None
    assert row.state == st.state.value


async def test_an_interrupted_start_the_runtime_cannot_tell_about_is_unknown(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod, start_requested_at=time.time_ns())
    container.steps.append(STEP_CREATED)
    node.runtime.spawn(container.id)
    node.runtime.started.add(container.id)
    await node.store.containers.put(container.to_row())
    node.runtime.fail["state"] = 100

    node = await make_node()  # not CREATED: it may run, and kubelet would start it again
    assert node.containers.get(container.id).state is CState.UNKNOWN
    node.runtime.fail.clear()


# ---------------------------------------------------------------- 6. finished_at is never before started_at


async def test_finished_at_is_never_before_started_at(make_node: NodeFactory) -> None:
    node = await make_node()
    pod = await node.pods.run(pod_config(), "")
    container = await add_container(node, pod)
    # conmon's exit file's mtime comes from the coarse clock: up to a tick behind the one started_at is read from.
    node.runtime.finished_at = lambda: container.started_at - 500_000
    await node.containers.start(container.id)
    node.runtime.procs[container.id].kill()
    await wait_until(lambda: container.state is CState.EXITED, "the exit")
    assert container.finished_at >= container.started_at > 0
