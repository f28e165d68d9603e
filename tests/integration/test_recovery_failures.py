"""Restarts that must not brick the node, with real daemons, runc and CNI plugins (root only).

Failures are injected through wrappers the daemon is configured with: a runc whose ``delete``
fails for the containers named in a file (as with a busy cgroup) and that can kill the daemon
right after ``start`` (a crash between the runtime's start and pycri's record of it), and a CNI
``bridge`` whose DEL fails while a file exists and that can kill the daemon in the middle of
ADD. A reboot is faked by recording another boot ID in the state database.

Each test checks that the daemon starts and serves whatever failed, that the objects concerned
are listed in a state kubelet can remove, and that removing them (or the background retry)
leaves nothing behind once the failure is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError
from pycri.containers.model import Container
from pycri.containers.model import State as ContainerState
from pycri.daemon import Daemon
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness, wait_for
from tests.support import busybox

RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
CNI_DIRS = "/usr/lib/cni:/opt/cni/bin"
BOOT_ID_KEY = "boot_id"  # in the database's meta table


def boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
    pytest.mark.skipif(shutil.which("bridge", path=CNI_DIRS) is None, reason="containernetworking-plugins missing"),
]


@dataclass
class Faults:
    """The files that switch the wrappers' injected failures on."""

    dir: Path

    @property
    def failing_deletes(self) -> Path:
        return self.dir / "fail-delete"  # runc delete fails for the container IDs listed

    @property
    def crash_after_start(self) -> Path:
        return self.dir / "crash-after-start"  # runc start succeeds, then the daemon is killed

    @property
    def failing_cni_del(self) -> Path:
        return self.dir / "fail-cni-del"

    @property
    def crash_in_cni_add(self) -> Path:
        return self.dir / "crash-in-cni-add"  # the daemon is killed while the bridge plugin adds the pod

    def fail_delete(self, *ids: str) -> None:
        self.failing_deletes.write_text("".join(f"{i}\n" for i in ids))


def write_wrappers(faults: Faults) -> tuple[Path, Path]:
    """A runc and a CNI bin dir (its ``bridge``) that inject ``faults``."""
    runc = faults.dir / "runc"
    runc.write_text(
        "#!/bin/sh\n"
        f'if [ "$3" = delete ] && [ -f {faults.failing_deletes} ] && grep -qxF "$5" {faults.failing_deletes}; then\n'
        '  echo "injected: unable to remove cgroup: device or resource busy" >&2; exit 1\n'
        "fi\n"
        f'if [ "$3" = start ] && [ -f {faults.crash_after_start} ]; then\n'
        f'  {RUNC} "$@"; rc=$?; kill -9 $PPID; exit $rc\n'
        "fi\n"
        f'exec {RUNC} "$@"\n'
    )
    bin_dir = faults.dir / "cni"
    bin_dir.mkdir()
    bridge = bin_dir / "bridge"
    real_bridge = shutil.which("bridge", path=CNI_DIRS)
    error = json.dumps({"cniVersion": "1.0.0", "code": 11, "msg": "injected DEL failure"})
    bridge.write_text(
        "#!/bin/sh\n"
        f"if [ \"$CNI_COMMAND\" = DEL ] && [ -f {faults.failing_cni_del} ]; then cat >/dev/null; echo '{error}'; exit 1; fi\n"
        f'if [ "$CNI_COMMAND" = ADD ] && [ -f {faults.crash_in_cni_add} ]; then\n'
        f'  conf=$(cat); kill -9 $PPID; printf %s "$conf" | {real_bridge} "$@"; exit $?\n'
        "fi\n"
        f'exec {real_bridge} "$@"\n'
    )
    for path in (runc, bridge):
        path.chmod(0o755)
    return runc, bin_dir


@dataclass
class Node:
    daemon: DaemonProcess
    faults: Faults
    refs: dict[str, str]
    tmp: Path

    def client(self) -> Client:
        return Client(self.daemon.socket, timeout=60)  # a fresh channel after each restart

    def harness(self, client: Client) -> Harness:
        return Harness(client, self.daemon, self.refs, self.tmp)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """Stop (a crash by default) and start again: start() fails if the daemon does not come up."""
        self.daemon.stop(sig)
        self.daemon.start()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.daemon.cfg.database)


@pytest.fixture
def node(image_refs: dict[str, str], tmp_path: Path) -> Iterator[Node]:
    faults = Faults(tmp_path / "faults")
    faults.dir.mkdir()
    runc, cni_bin = write_wrappers(faults)
    daemon = DaemonProcess.temporary(cni={"bin_dirs": [str(cni_bin), *CNI_DIRS.split(":")]})
    daemon.cfg.runtimes["runc"].path = str(runc)
    with daemon:
        with Client(daemon.socket, timeout=60) as client:
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_refs["plain"])))
        yield Node(daemon, faults, image_refs, tmp_path)
        for path in faults.dir.iterdir():
            if path.is_file() and not os.access(path, os.X_OK):
                path.unlink()  # every fault off: the daemon must then leave nothing behind
        if daemon.proc is None or daemon.proc.poll() is not None:
            daemon.start()
        with Client(daemon.socket, timeout=60) as client:
            for pod in client.list_pod_sandbox(api.ListPodSandboxRequest()).items:
                client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
                client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))


def listed_pods(client: Client) -> dict[str, int]:
    return {p.id: p.state for p in client.list_pod_sandbox(api.ListPodSandboxRequest()).items}


def runc_containers(node: Node) -> list[str]:
    root = node.daemon.cfg.runtimes["runc"].root
    return subprocess.run([RUNC, "--root", root, "list", "-q"], capture_output=True, text=True, check=True).stdout.split()


def netns_of(pod_id: str) -> Path:
    return Path("/run/netns") / f"pycri-{pod_id[:16]}"


# ---------------------------------------------------------------- 1. recovery never aborts start-up


def test_a_failing_runc_delete_does_not_stop_the_restart(node: Node) -> None:
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("busy")
        cid = h.container(pod, "main")
        container_dir = Path(h.info(cid)["runtimeSpec"]["root"]["path"]).parent
        node.faults.fail_delete(cid)
        h.remove(cid)  # answered at once; its clean-up fails (and is retried)
        assert h.list() == set()
        assert container_dir.exists()

    node.restart()  # recovery meets the same failure
    assert "finishing its clean-up failed: runc delete failed: injected" in node.daemon.log()
    with node.client() as client:
        h = node.harness(client)
        assert h.list() == set()
        assert listed_pods(client) == {pod.id: api.SANDBOX_READY}, "the pod is not disturbed"
        node.faults.failing_deletes.unlink()
        wait_for("the retried clean-up", lambda: not container_dir.exists(), timeout=30)
        h.pods.append(pod.id)
        h.cleanup()
    assert node.daemon.leftovers() == []


def test_a_failing_cni_del_does_not_stop_the_restart(node: Node) -> None:
    node.faults.crash_in_cni_add.touch()
    node.faults.failing_cni_del.touch()
    config = api.PodSandboxConfig(metadata=api.PodSandboxMetadata(name="half", namespace="recovery", uid="uid-half"))
    with node.client() as client, pytest.raises(ClientError):
        client.run_pod_sandbox(api.RunPodSandboxRequest(config=config))  # the daemon dies in the middle
    node.faults.crash_in_cni_add.unlink()

    node.restart()  # recovery undoes the half-made pod: its CNI DEL fails
    assert "cleaning it up failed" in node.daemon.log()
    with node.client() as client:
        pods = listed_pods(client)
        (half,) = pods
        assert pods[half] == api.SANDBOX_NOTREADY, "listed, for kubelet to remove"
        assert netns_of(half).exists()
        node.faults.failing_cni_del.unlink()
        wait_for("the retried clean-up", lambda: listed_pods(client) == {}, timeout=30)
        assert not netns_of(half).exists()
        again = client.run_pod_sandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id  # its name is free
        client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=again))
        client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=again))
    assert node.daemon.leftovers() == []


def test_a_handler_removed_from_the_configuration(node: Node) -> None:
    with node.client() as client:
        h = node.harness(client)
        try:
            pod = h.pod("crun", handler="crun")
        except ClientError as exc:
            if "hybrid mode not supported" in str(exc):
                pytest.skip(f"crun cannot run containers on this host: {exc}")
            raise
        cid = h.container(pod, "main")
    crun = node.daemon.cfg.runtimes.pop("crun")
    try:
        node.restart(signal.SIGTERM)
        with node.client() as client:
            h = node.harness(client)
            assert listed_pods(client) == {pod.id: api.SANDBOX_READY}
            assert h.status(cid).state == api.CONTAINER_RUNNING
            with pytest.raises(ClientError, match="unknown handler 'crun'"):
                h.pod("new", handler="crun")
            h.pods.append(pod.id)
            h.cleanup()  # stopped and removed through the handler the pod's record remembers
    finally:
        node.daemon.cfg.runtimes["crun"] = crun  # so that the daemon's own checks see its containers too
    listed = subprocess.run([CRUN, "--root", crun.root, "list", "-q"], capture_output=True, text=True, check=False)
    assert listed.stdout.split() == []
    assert node.daemon.leftovers() == []


# ---------------------------------------------------------------- 2. RemovePodSandbox: containers first, retryable


def test_remove_pod_sandbox_succeeds_when_retried(node: Node) -> None:
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("retried")
        cid = h.container(pod, "main")
        node.faults.fail_delete(cid)
        client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
        with pytest.raises(ClientError, match=f"container {cid} of pod sandbox {pod.id} is not cleaned up yet"):
            client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
        # The pod's own steps wait for its containers: none of those removal undoes was undone.
        assert listed_pods(client) == {pod.id: api.SANDBOX_NOTREADY}
        assert pod.id in runc_containers(node), "the infra container is not deleted"
        assert (Path(node.daemon.cfg.state_dir) / "pods" / pod.id / "shm").is_mount()

        node.faults.failing_deletes.unlink()
        client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))  # kubelet retries
        assert listed_pods(client) == {}
        assert h.list() == set()
    assert not netns_of(pod.id).exists()
    assert node.daemon.leftovers() == []


# ---------------------------------------------------------------- 4. reboots and reused pids


def fake_reboot(node: Node) -> None:
    """Record another boot ID, as a database that outlived a reboot has."""
    with node.db() as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", ("0" * 8 + "-previous-boot", BOOT_ID_KEY))
    db.close()


def test_after_a_reboot_every_container_has_exited(node: Node) -> None:
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("reboot")
        running = h.container(pod, "running")
        exited = h.container(pod, "exited", ("/bin/sh", "-c", "exit 3"))
        h.wait_exited(exited)
        created = h.container(pod, "created", start=False)
    node.daemon.stop(signal.SIGKILL)
    with node.db() as db:
        assert db.execute("SELECT value FROM meta WHERE key = ?", (BOOT_ID_KEY,)).fetchone() == (boot_id(),)
    fake_reboot(node)

    node.daemon.start()  # its containers still run: only the boot ID says they cannot
    assert "the node rebooted since pycri last ran" in node.daemon.log()
    with node.client() as client:
        h = node.harness(client)
        assert listed_pods(client) == {pod.id: api.SANDBOX_NOTREADY}
        st = h.status(running)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 255, "Unknown")
        assert st.started_at <= st.finished_at
        st = h.status(exited)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 3, "Error")
        st = h.status(created)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 255, "Unknown"), "its rootfs did not survive"
        h.pods.append(pod.id)
        h.cleanup()
    with node.db() as db:
        assert db.execute("SELECT value FROM meta WHERE key = ?", (BOOT_ID_KEY,)).fetchone() == (boot_id(),)
    assert node.daemon.leftovers() == []


def test_a_reboot_seen_through_an_injected_boot_id(node: Node) -> None:
    """The daemon's boot ID source is injectable: one that names another boot is a reboot to recovery."""
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("injected")
        cid = h.container(pod, "main")
    node.daemon.stop(signal.SIGKILL)

    async def in_process() -> tuple[Sandbox, Container]:
        daemon = Daemon(node.daemon.cfg, boot_id=lambda: "another-boot")
        try:
            await daemon.start()
            assert daemon.sandboxes is not None
            assert daemon.containers is not None
            return daemon.sandboxes.get(pod.id), daemon.containers.get(cid)
        finally:
            await daemon.stop()

    sandbox, container = asyncio.run(in_process())
    assert sandbox.state is SandboxState.NOTREADY
    assert (container.state, container.exit_code, container.reason) == (ContainerState.EXITED, 255, "Unknown")
    node.daemon.start()
    with node.client() as client:
        h = node.harness(client)
        h.pods.append(pod.id)
        h.cleanup()
    assert node.daemon.leftovers() == []


def test_a_pid_that_started_at_another_time_is_not_the_container(node: Node) -> None:
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("reused")
        cid = h.container(pod, "main")
        pid = h.pid(cid)
    node.daemon.stop(signal.SIGKILL)
    # The recorded pid now names a process that started at another time (as after its number was reused).
    with node.db() as db:
        (data,) = db.execute("SELECT data FROM containers WHERE id = ?", (cid,)).fetchone()
        record = json.loads(data)
        record["pid_start"] = record.get("pid_start", 0) + 1
        db.execute("UPDATE containers SET data = ? WHERE id = ?", (json.dumps(record), cid))
    db.close()

    node.daemon.start()
    with node.client() as client:
        h = node.harness(client)
        st = h.status(cid)
        assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 255, "Unknown")
        h.pods.append(pod.id)
        h.cleanup()
    assert not Path(f"/proc/{pid}").exists()
    assert node.daemon.leftovers() == []


# ---------------------------------------------------------------- 5. a crash in StartContainer


@pytest.mark.parametrize("outcome", ["running", "exited"])
def test_a_crash_right_after_the_runtime_started_the_container(node: Node, outcome: str) -> None:
    command = ("/bin/sleep", "1000") if outcome == "running" else ("/bin/sh", "-c", "exit 7")
    with node.client() as client:
        h = node.harness(client)
        pod = h.pod("crash-start")
        cid = h.container(pod, "main", command, start=False)
        node.faults.crash_after_start.touch()
        with pytest.raises(ClientError):
            h.start(cid)  # runc started it; the daemon died before recording it
        node.faults.crash_after_start.unlink()
    assert node.daemon.proc is not None
    assert node.daemon.proc.wait(30) == -signal.SIGKILL

    node.daemon.start()
    with node.client() as client:
        h = node.harness(client)
        st = h.status(cid)
        if outcome == "running":
            assert st.state == api.CONTAINER_RUNNING, "not CREATED: kubelet would start a second copy"
            pid = h.pid(cid)
            assert Path(f"/proc/{pid}").exists()
            os.kill(pid, signal.SIGKILL)
            st = h.wait_exited(cid)  # watched after the restart
            assert st.exit_code == 137
        else:
            st = wait_for("the recorded exit", lambda: (s := h.status(cid)).state == api.CONTAINER_EXITED and s)
            assert (st.exit_code, st.reason) == (7, "Error")
        assert 0 < st.started_at <= st.finished_at
        with pytest.raises(ClientError, match="not created"):
            h.start(cid)
        h.pods.append(pod.id)
        h.cleanup()
    assert node.daemon.leftovers() == []
