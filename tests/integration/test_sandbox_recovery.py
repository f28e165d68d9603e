"""Pod sandboxes across daemon restarts and crashes, with real daemons (root only).

Each test runs a temporary daemon (``pycri.testing.DaemonProcess``: its own
directories, bridge ``pycri-t<hex>`` and /24) and talks to it over gRPC. The
daemon is stopped with SIGTERM, killed with SIGKILL, or killed in the middle
of RunPodSandbox (a child process running the sandbox service on the daemon's
configuration exits at a chosen step); after each restart the pods are what
kubelet expects, and removing them leaves nothing behind. Pods map no host
ports and send no traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, NotFoundError
from pycri.network import cni, cni_exec
from pycri.sandboxes.model import STEP_INFRA, STEP_NETWORK, STEP_SHM
from pycri.testing import DaemonProcess

RUNC = "/usr/sbin/runc"
BINARIES = (RUNC, "/usr/bin/conmon", "/usr/bin/catatonit")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap", "bandwidth")
IPAM_DIR = Path("/var/lib/cni/networks") / cni.DEFAULT_NETWORK_NAME  # host-local's default dataDir
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
NETNS_DIR = Path("/run/netns")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not all(os.access(b, os.X_OK) for b in BINARIES), reason="runc, conmon or catatonit missing"),
    pytest.mark.skipif(
        any(shutil.which(p, path="/usr/lib/cni:/opt/cni/bin") is None for p in CNI_PLUGINS),
        reason="containernetworking-plugins missing",
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 missing"),
]


# ---------------------------------------------------------------- host inspection


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name).returncode == 0


def links_on(bridge: str) -> list[str]:
    if not link_exists(bridge):
        return []
    out = sh("ip", "-o", "link", "show", "master", bridge).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


def process_state(pid: int) -> str:
    """The one-letter state of ``pid`` ('' when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[0]


def running(pid: int) -> bool:
    return pid > 0 and process_state(pid) not in ("", "Z", "X")


def wait_exited(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while running(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line or cgroup names ``text``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cgroup = Path(entry.path, "cgroup").read_text()
            comm = Path(entry.path, "comm").read_text().strip()
        except OSError:
            continue
        if (text in cmdline or text in cgroup) and running(int(entry.name)):
            found.append((int(entry.name), f"process {entry.name} ({comm})"))
    return found


def iptables_mentions(text: str) -> list[str]:
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            found += [line for line in sh(tool).stdout.splitlines() if text in line]
    return found


def ipam_holders(text: str) -> list[Path]:
    if not IPAM_DIR.is_dir():
        return []
    return [p for p in IPAM_DIR.iterdir() if p.is_file() and text in p.read_text(errors="replace")]


def db_rows(daemon: DaemonProcess) -> dict[str, str]:
    """Sandbox id -> state, read straight from the state database (WAL: fine while the daemon runs)."""
    if not daemon.cfg.database.exists():
        return {}
    conn = sqlite3.connect(f"file:{daemon.cfg.database}?mode=ro", uri=True)
    try:
        return {str(i): str(s) for i, s in conn.execute("SELECT id, state FROM sandboxes")}
    finally:
        conn.close()


def runc_state(daemon: DaemonProcess, sandbox_id: str) -> str:
    out = sh(RUNC, "--root", daemon.cfg.runtimes["runc"].root, "state", sandbox_id)
    return str(json.loads(out.stdout)["status"]) if out.returncode == 0 else ""


def pod_leftovers(daemon: DaemonProcess, sandbox_id: str) -> list[str]:
    """What the pod ``sandbox_id`` left, beyond ``daemon.leftovers()`` (which only sees netns of existing pod dirs)."""
    found = list(daemon.leftovers())
    if sandbox_id in db_rows(daemon):
        found.append("database row")
    pods = Path(daemon.cfg.state_dir) / "pods"
    found += [f"pod dir {p}" for p in pods.iterdir()] if pods.is_dir() else []
    ns = NETNS_DIR / f"pycri-{sandbox_id[:16]}"
    if os.path.lexists(ns):
        found.append(f"netns {ns}")
    found += [desc for _, desc in processes_mentioning(sandbox_id)]
    found += [f"cgroup {c}" for c in glob.glob(f"/sys/fs/cgroup/*/pycri/pycri-{sandbox_id}")]
    found += [f"cgroup {c}" for c in glob.glob(f"/sys/fs/cgroup/pycri/pycri-{sandbox_id}")]
    found += [f"link {n} on the bridge" for n in links_on(daemon.cfg.cni.default_bridge)]
    found += [f"IP allocation {p}" for p in ipam_holders(sandbox_id)]
    found += iptables_mentions(sandbox_id)
    return found


# ---------------------------------------------------------------- fixtures and helpers


@dataclass
class Bed:
    daemon: DaemonProcess
    ids: list[str] = field(default_factory=list)

    def client(self) -> Client:
        """A fresh channel: after a restart the old one may sit in reconnect back-off."""
        return Client(self.daemon.socket, timeout=60)

    def run_pod(self, name: str = "web") -> str:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="pycri-recovery", uid=str(uuid.uuid4())),
            hostname=name,
        )
        with self.client() as c:
            sandbox_id = c.run_pod_sandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
        self.ids.append(sandbox_id)
        return sandbox_id

    def status(self, sandbox_id: str) -> tuple[int, str, int]:
        """(state, IP, infra pid) as PodSandboxStatus reports them."""
        with self.client() as c:
            response = c.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True))
        return response.status.state, response.status.network.ip, int(json.loads(response.info["info"])["pid"])

    def listed(self) -> dict[str, int]:
        with self.client() as c:
            return {p.id: p.state for p in c.list_pod_sandbox(api.ListPodSandboxRequest()).items}

    def stop_and_remove(self, sandbox_id: str) -> None:
        with self.client() as c:
            c.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
            c.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))

    def restart(self, sig: int = signal.SIGTERM) -> int:
        code = self.daemon.stop(sig)
        self.daemon.start()
        return code

    def assert_clean(self, sandbox_id: str) -> None:
        assert self.daemon.leftovers() == []
        left = pod_leftovers(self.daemon, sandbox_id)
        assert left == [], f"pod {sandbox_id} left: {left}\n{self.daemon.log()[-3000:]}"

    def force_clean(self) -> None:
        """After a failed test: remove what the pods of this test may have left outside the daemon's directories."""
        cfg = self.daemon.cfg
        networks, _ = cni.load_networks(Path(cfg.cni.conf_dir))
        for sandbox_id in self.ids:
            for pid, _ in processes_mentioning(sandbox_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            sh(RUNC, "--root", cfg.runtimes["runc"].root, "delete", "--force", sandbox_id)
            for network in networks:
                request = cni_exec.PodNetworkRequest(container_id=sandbox_id, netns="")
                with contextlib.suppress(Exception):
                    asyncio.run(cni_exec.delete(network, request, cfg.cni.bin_dirs))
            sh("ip", "netns", "delete", f"pycri-{sandbox_id[:16]}")
            for path in ipam_holders(sandbox_id):
                path.unlink()


@pytest.fixture(scope="module", autouse=True)
def _restore_ip_forward() -> Iterator[None]:
    forward = IP_FORWARD.read_text()  # the bridge plugin (isGateway) turns forwarding on
    yield
    IP_FORWARD.write_text(forward)


@pytest.fixture
def bed() -> Iterator[Bed]:
    daemon = DaemonProcess.temporary()
    bridge = daemon.cfg.cni.default_bridge
    assert bridge.startswith("pycri-t")
    assert not link_exists(bridge)
    test_bed = Bed(daemon)
    try:
        with daemon:
            try:
                yield test_bed
                assert daemon.proc is not None
                assert daemon.proc.poll() is None, f"daemon died:\n{daemon.log()}"
            finally:
                test_bed.force_clean()  # a no-op unless the test failed; needs the daemon's CNI config
    finally:
        shutil.rmtree(daemon.workdir, ignore_errors=True)  # DaemonProcess keeps it when the first start fails
        if link_exists(bridge):  # only when DaemonProcess did not get to delete it
            sh("ip", "link", "delete", bridge)
            pytest.fail(f"the test bridge {bridge} outlived the daemon")


# ---------------------------------------------------------------- restarts


def test_pod_survives_a_graceful_restart(bed: Bed) -> None:
    sandbox_id = bed.run_pod()
    state, ip, pid = bed.status(sandbox_id)
    assert state == api.SANDBOX_READY
    assert ip
    assert running(pid)

    assert bed.restart(signal.SIGTERM) == 0
    assert bed.status(sandbox_id) == (api.SANDBOX_READY, ip, pid)
    assert running(pid), "the infra process is the same, still alive"
    assert bed.listed() == {sandbox_id: api.SANDBOX_READY}

    bed.stop_and_remove(sandbox_id)
    assert not running(pid)
    assert bed.listed() == {}
    bed.assert_clean(sandbox_id)


def test_pod_survives_a_daemon_kill(bed: Bed) -> None:
    sandbox_id = bed.run_pod()
    state, ip, pid = bed.status(sandbox_id)
    assert state == api.SANDBOX_READY
    conmon_pid = int((Path(bed.daemon.cfg.state_dir) / "pods" / sandbox_id / "infra-conmon" / "conmon.pid").read_text())

    assert bed.daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    time.sleep(0.5)
    assert running(pid), "the infra container keeps running without the daemon"
    assert running(conmon_pid), "conmon outlives the daemon"
    assert runc_state(bed.daemon, sandbox_id) == "running"

    bed.daemon.start()  # over the stale socket the killed daemon left
    assert bed.status(sandbox_id) == (api.SANDBOX_READY, ip, pid)
    assert bed.listed() == {sandbox_id: api.SANDBOX_READY}

    bed.stop_and_remove(sandbox_id)
    assert wait_exited(conmon_pid), "conmon exits with its container"
    bed.assert_clean(sandbox_id)


def test_infra_killed_while_daemon_down_is_notready(bed: Bed) -> None:
    sandbox_id = bed.run_pod()
    other_id = bed.run_pod("other")  # a healthy neighbour stays READY
    _, _, pid = bed.status(sandbox_id)

    assert bed.daemon.stop() == 0
    os.kill(pid, signal.SIGKILL)
    assert wait_exited(pid)
    bed.daemon.start()

    state, _, _ = bed.status(sandbox_id)
    assert state == api.SANDBOX_NOTREADY
    assert bed.listed() == {sandbox_id: api.SANDBOX_NOTREADY, other_id: api.SANDBOX_READY}

    bed.stop_and_remove(sandbox_id)
    bed.stop_and_remove(other_id)
    assert bed.listed() == {}
    bed.assert_clean(sandbox_id)
    bed.assert_clean(other_id)


def test_stop_and_remove_are_idempotent(bed: Bed) -> None:
    sandbox_id = bed.run_pod()
    with bed.client() as c:
        for _ in range(2):
            c.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))
        state = c.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)).status.state
        assert state == api.SANDBOX_NOTREADY
        for _ in range(2):
            c.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id))
        with pytest.raises(NotFoundError):
            c.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
        c.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=sandbox_id))  # after removal too
        unknown = secrets.token_hex(32)
        c.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=unknown))
        c.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=unknown))
    assert bed.listed() == {}
    bed.assert_clean(sandbox_id)


# ---------------------------------------------------------------- a crash in the middle of RunPodSandbox

# Runs the sandbox service on the daemon's configuration, as the daemon would, and dies (os._exit(9): no
# cleanup at all) at a point of RunPodSandbox: before a step (the before_step hook), right after the CNI ADD
# of the pod network (inside the network step), or right after the infra container started (before READY).
CRASH_SCRIPT = """
import asyncio, os, sys
from pathlib import Path

from pycri import config, daemon
from pycri.api import api_pb2 as api
from pycri.network import cni_exec
from pycri.network.pod import CNIPodNetwork
from pycri.oci import OCIRuntime, handlers_from_config
from pycri.sandboxes.model import State
from pycri.sandboxes.service import SandboxService
from pycri.store import Store

cfg = config.load(Path(sys.argv[1]))
point = sys.argv[2]


def crash(svc):
    (creating,) = [s for s in svc.sandboxes.values() if s.state is State.CREATING]
    os.write(1, (creating.id + "\\n").encode())
    os._exit(9)


async def main():
    store = await Store.open(cfg.database)
    network = CNIPodNetwork(cfg, lambda: "")
    await network.prepare()
    svc = SandboxService(cfg, store, handlers_from_config(cfg), network)
    await svc.recover()
    svc.before_step = lambda step: crash(svc) if step == point else None
    real_add, real_start = cni_exec.add, OCIRuntime.start

    async def add_then_crash(network, *args, **kwargs):
        result = await real_add(network, *args, **kwargs)
        if point == "cni-add" and network.name != cni_exec.LOOPBACK_CONFIG["name"]:
            crash(svc)
        return result

    async def start_then_crash(*args, **kwargs):
        await real_start(*args, **kwargs)
        if point == "infra-started":
            crash(svc)

    cni_exec.add, OCIRuntime.start = add_then_crash, start_then_crash
    metadata = api.PodSandboxMetadata(name="crash", namespace="pycri-recovery", uid="crash-" + point)
    await svc.run(api.PodSandboxConfig(metadata=metadata, hostname="crash"), "")
    os.write(1, b"run completed without crashing\\n")
    os._exit(3)


with daemon.daemon_lock(Path(cfg.state_dir)):
    asyncio.run(main())
"""

CRASH_POINTS = [
    pytest.param(STEP_SHM, id="before-shm"),
    pytest.param(STEP_NETWORK, id="after-network"),
    pytest.param(STEP_INFRA, id="before-infra"),
    pytest.param("infra-started", id="infra-started"),
    pytest.param("cni-add", id="during-network-after-cni-add"),
]


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_recovery_cleans_up_after_a_crash_in_run(bed: Bed, point: str) -> None:
    daemon = bed.daemon
    assert daemon.stop() == 0  # the daemon holds the state_dir lock; the crashing process takes it instead
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(daemon.config_path), point],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == 9, f"exit {crashed.returncode}\n{crashed.stdout}\n{crashed.stderr}"
    sandbox_id = crashed.stdout.strip()
    bed.ids.append(sandbox_id)
    assert len(sandbox_id) == 64

    # What the crash left: a record in "creating" and what the steps so far made.
    assert db_rows(daemon) == {sandbox_id: "creating"}
    pod_dir = Path(daemon.cfg.state_dir) / "pods" / sandbox_id
    assert pod_dir.is_dir()
    assert any(line.split()[4] == str(pod_dir / "shm") for line in Path("/proc/self/mountinfo").read_text().splitlines()) == (
        point != STEP_SHM
    )
    networked = point in (STEP_NETWORK, STEP_INFRA, "infra-started", "cni-add")
    assert os.path.lexists(NETNS_DIR / f"pycri-{sandbox_id[:16]}") == networked
    assert bool(ipam_holders(sandbox_id)) == networked
    assert bool(processes_mentioning(sandbox_id)) == (point == "infra-started")

    daemon.start()
    assert bed.listed() == {}
    with bed.client() as c, pytest.raises(NotFoundError):
        c.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id))
    assert db_rows(daemon) == {}
    bed.assert_clean(sandbox_id)

    # The node still runs pods.
    again = bed.run_pod("crash")
    assert bed.status(again)[0] == api.SANDBOX_READY
    bed.stop_and_remove(again)
    bed.assert_clean(again)
