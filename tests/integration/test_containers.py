"""Containers on the real daemon with runc: lifecycle, exits, process config, security, namespaces,
mounts, logs, exec, resources, listing, restarts, crictl and crun.

The images are made of the host's static busybox (``tests.support.busybox``) and pushed to one
registry on 127.0.0.1 that the module shares, together with one daemon that pulls them all once.
Each test makes its own pods through the ``h`` fixture, which removes them afterwards and then
checks that the daemon knows no container any more and left no runtime state behind (runc
containers, mounts, network namespaces). Tests needing a daemon of their own (restart) start one.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pycri.api import api_pb2 as api
from pycri.client import (
    AlreadyExistsError,
    Client,
    ClientError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from pycri.oci.capabilities import KNOWN_CAPABILITIES, current_bounding
from pycri.oci.spec import DEFAULT_CAPABILITIES
from pycri.testing import DaemonProcess
from tests.integration.conftest import CRICTL
from tests.integration.harness import Harness, bind, mounted_below, parse_log, proc_status, wait_for
from tests.support import busybox
from tests.support.busybox import busybox_image
from tests.support.images import Image
from tests.support.registry import LocalRegistry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]

MiB = 1 << 20

# name -> image; pulled once for the module as 127.0.0.1:PORT/busybox:<name>
IMAGES: dict[str, Image] = {
    "plain": busybox_image(),
    "entry": busybox_image(
        entrypoint=["/bin/echo", "image-entrypoint"],
        cmd=["image-cmd"],
        env=["PATH=/bin", "FROM_IMAGE=image", "SHARED=image"],
        working_dir="/data",
    ),
    "alice": busybox_image(user="alice"),
    "usr2": busybox_image(stop_signal="SIGUSR2"),
}


def cap_mask(names: Sequence[str] | set[str]) -> int:
    return sum(1 << KNOWN_CAPABILITIES.index(name) for name in set(names))


# -- lifecycle -------------------------------------------------------------------------------------


def test_lifecycle(h: Harness, registry: LocalRegistry) -> None:
    pod = h.pod("life")
    before = time.time_ns()
    cid = h.container(pod, "main", ("/bin/sh", "-c", "echo started; exec sleep 1000"), start=False, labels={"k": "v"})
    assert len(cid) == 64
    st = h.status(cid)
    assert st.state == api.CONTAINER_CREATED
    assert before <= st.created_at <= time.time_ns()
    assert (st.started_at, st.finished_at, st.exit_code, st.reason) == (0, 0, 0, "")
    assert st.metadata.name == "main"
    assert st.image.image == h.refs["plain"]
    assert st.image_ref == f"{registry.host}/busybox@{IMAGES['plain'].digest}"
    assert st.image_id == IMAGES["plain"].config_digest
    assert dict(st.labels) == {"k": "v"}
    assert st.log_path == f"{pod.config.log_directory}/main.log"
    info = h.info(cid)
    assert info["sandboxID"] == pod.id
    assert info["runtimeHandler"] == "runc"
    assert info["runtimeSpec"]["process"]["args"] == ["/bin/sh", "-c", "echo started; exec sleep 1000"]
    assert int(info["pid"]) == 0  # as with containerd, the runtime creates it at StartContainer
    runc = h.daemon.cfg.runtimes["runc"]
    listed = subprocess.run([runc.path, "--root", runc.root, "list", "-q"], capture_output=True, text=True, check=True)
    assert cid not in listed.stdout.split()

    h.start(cid)
    st = h.status(cid)
    assert st.state == api.CONTAINER_RUNNING
    assert st.created_at <= st.started_at <= time.time_ns()
    assert st.finished_at == 0
    pid = h.pid(cid)
    assert pid > 0
    assert f"pycri-{cid}" in Path(f"/proc/{pid}/cgroup").read_text()
    h.wait_log(cid, "started")
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x001000\x00"

    result = h.exec(cid, "/bin/sh", "-c", "echo out; echo err >&2; exit 5")
    assert (result.stdout, result.stderr, result.exit_code) == (b"out\n", b"err\n", 5)
    assert h.exec(cid, "true").exit_code == 0
    with pytest.raises(FailedPreconditionError, match=f"container {cid} is running, not created"):
        h.start(cid)

    h.stop(cid, timeout=10)
    st = h.status(cid)
    assert st.state == api.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (128 + 15, "Error")
    assert st.started_at <= st.finished_at <= time.time_ns()
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(
        FailedPreconditionError, match=f"container {cid} is exited, not created: only a created container can start"
    ):
        h.start(cid)
    with pytest.raises(FailedPreconditionError, match="is not running"):
        h.exec(cid, "true")

    with pytest.raises(AlreadyExistsError, match="container name 'main' \\(attempt 0\\) is taken"):
        h.container(pod, "main", start=False)
    h.remove(cid)
    with pytest.raises(NotFoundError):
        h.status(cid)
    h.remove(cid)  # again: fine
    h.remove("0" * 64)  # unknown: fine
    h.stop("0" * 64, timeout=5)
    with pytest.raises(NotFoundError):
        h.start("0" * 64)

    h.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    with pytest.raises(FailedPreconditionError, match=f"pod sandbox {pod.id} is not ready"):
        h.container(pod, "late")


def test_stop_escalates_to_sigkill(h: Harness) -> None:
    pod = h.pod("stubborn")
    cid = h.container(pod, "stubborn", ("/bin/sh", "-c", 'trap "" TERM; echo ready; exec sleep 1000'))
    h.wait_log(cid, "ready")
    started = time.monotonic()
    h.stop(cid, timeout=2)
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 6, elapsed
    st = h.status(cid)
    assert st.state == api.CONTAINER_EXITED
    assert (st.exit_code, st.reason) == (137, "Error")


TRAPS = 'trap "exit 41" USR1; trap "exit 42" USR2; echo ready; while :; do sleep 0.1; done'


@pytest.mark.parametrize(
    ("image", "stop_signal", "reported", "code"),
    [
        ("plain", api.SIGNAL_SIGUSR1, api.SIGNAL_SIGUSR1, 41),  # from the config
        ("usr2", api.SIGNAL_RUNTIME_DEFAULT, api.SIGNAL_SIGUSR2, 42),  # from the image's StopSignal
        ("usr2", api.SIGNAL_SIGUSR1, api.SIGNAL_SIGUSR1, 41),  # the config wins over the image
        ("plain", api.SIGNAL_RUNTIME_DEFAULT, api.SIGNAL_SIGTERM, 143),  # neither: SIGTERM (not trapped)
    ],
)
def test_stop_signal(
    h: Harness, image: str, stop_signal: api.Signal.ValueType, reported: api.Signal.ValueType, code: int
) -> None:
    pod = h.pod("signals")
    cid = h.container(pod, "trap", ("/bin/sh", "-c", TRAPS), image=image, stop_signal=stop_signal)
    assert h.status(cid).stop_signal == reported
    h.wait_log(cid, "ready")
    started = time.monotonic()
    h.stop(cid, timeout=20)
    assert time.monotonic() - started < 5
    st = h.status(cid)
    assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, code, "Error")


def test_stop_and_remove_of_exited_running_and_unknown(h: Harness) -> None:
    pod = h.pod("idem")
    done = h.container(pod, "done", ("/bin/sh", "-c", "exit 0"))
    st = h.wait_exited(done)
    h.stop(done, timeout=10)  # already exited: fine, nothing changes
    again = h.status(done)
    assert (again.state, again.exit_code, again.finished_at, again.reason) == (
        api.CONTAINER_EXITED,
        0,
        st.finished_at,
        "Completed",
    )
    h.stop("f" * 64, timeout=10)
    h.remove("f" * 64)

    running = h.container(pod, "running")
    pid = h.pid(running)
    h.remove(running)  # stops it first
    assert not Path(f"/proc/{pid}").exists()
    with pytest.raises(NotFoundError):
        h.status(running)
    runc = h.daemon.cfg.runtimes["runc"]

    def runc_forgot() -> bool:
        listed = subprocess.run([runc.path, "--root", runc.root, "list", "-q"], capture_output=True, text=True, check=True)
        return running not in listed.stdout.split()

    wait_for("runc to forget the removed container (cleaned up after the answer)", runc_forgot, timeout=5)
    h.remove(running)
    h.remove(done)
    h.remove(done)
    assert h.list() == set()

    # A created container that never started can be stopped and removed too.
    created = h.container(pod, "never", start=False)
    h.stop(created, timeout=5)
    assert h.status(created).state == api.CONTAINER_EXITED
    h.remove(created)


# -- exits -------------------------------------------------------------------------------------------


def test_exit_codes_and_reasons(h: Harness) -> None:
    pod = h.pod("exits")
    ok = h.container(pod, "ok", ("/bin/sh", "-c", "exit 0"))
    bad = h.container(pod, "bad", ("/bin/sh", "-c", "exit 3"))
    for cid, code, reason in ((ok, 0, "Completed"), (bad, 3, "Error")):
        st = h.wait_exited(cid)
        assert (st.exit_code, st.reason) == (code, reason)
        assert 0 < st.created_at < st.finished_at <= time.time_ns()
        assert st.started_at > 0


def test_finished_at_is_not_before_started_at(h: Harness) -> None:
    pod = h.pod("fast")
    ids = [h.container(pod, f"fast-{i}", ("/bin/true",)) for i in range(8)]
    for cid in ids:
        st = h.wait_exited(cid)
        assert st.started_at <= st.finished_at, f"finished {(st.started_at - st.finished_at) / 1e6:.2f} ms before it started"


def test_oom_killed(h: Harness) -> None:
    pod = h.pod("oom")
    resources = api.LinuxContainerResources(memory_limit_in_bytes=32 * MiB)
    cid = h.container(
        pod, "hog", ("/bin/sh", "-c", 'x=$(head -c 200m /dev/zero | tr "\\0" a); echo survived'), resources=resources
    )
    st = h.wait_exited(cid, timeout=30)
    assert "survived" not in h.stdout(cid)
    assert st.exit_code == 137
    assert st.reason == "OOMKilled"


# -- process: args, env, working dir -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "expected"),
    [
        ((), (), ["/bin/echo", "image-entrypoint", "image-cmd"]),
        (("/bin/echo", "command"), (), ["/bin/echo", "command"]),
        ((), ("arg",), ["/bin/echo", "image-entrypoint", "arg"]),
        (("/bin/echo", "command"), ("arg",), ["/bin/echo", "command", "arg"]),
    ],
    ids=["image", "command", "args", "command+args"],
)
def test_entrypoint_and_cmd(h: Harness, command: tuple[str, ...], args: tuple[str, ...], expected: list[str]) -> None:
    pod = h.pod("args")
    cid = h.container(pod, "echo", command, args=args, image="entry")
    h.wait_exited(cid)
    assert h.info(cid)["runtimeSpec"]["process"]["args"] == expected
    assert h.stdout(cid) == [" ".join(expected[1:])]


def test_env_and_working_dir(h: Harness) -> None:
    pod = h.pod("env")
    envs = [api.KeyValue(key="SHARED", value=b"config"), api.KeyValue(key="FROM_CONFIG", value=b"a=b c")]
    from_image = h.container(pod, "image-dir", ("/bin/sh", "-c", "env; pwd"), image="entry", envs=envs)
    from_config = h.container(pod, "config-dir", ("/bin/sh", "-c", "pwd"), image="entry", working_dir="/tmp")
    h.wait_exited(from_image)
    lines = h.stdout(from_image)
    for expected in ("PATH=/bin", "FROM_IMAGE=image", "SHARED=config", "FROM_CONFIG=a=b c", "HOSTNAME=env-host"):
        assert expected in lines, (expected, lines)
    assert "SHARED=image" not in lines
    assert lines[-1] == "/data"
    h.wait_exited(from_config)
    assert h.stdout(from_config) == ["/tmp"]
    assert h.status(from_config).exit_code == 0
    # ExecSync runs with the container's environment and working directory.
    running = h.container(pod, "running", image="entry", envs=envs)
    exec_env = h.sh(running, "env; pwd").splitlines()
    assert {"FROM_IMAGE=image", "SHARED=config", "FROM_CONFIG=a=b c"} <= set(exec_env)
    assert exec_env[-1] == "/data"


def test_tty(h: Harness) -> None:
    pod = h.pod("tty")
    cid = h.container(pod, "tty", ("/bin/sh", "-c", "echo hello; tty; exec sleep 1000"), tty=True)
    lines = h.wait_log(cid, "/dev/pts/0")
    assert lines[:2] == ["hello", "/dev/pts/0"]
    assert "TERM=xterm" in h.sh(cid, "env").splitlines()


# -- users -------------------------------------------------------------------------------------------


def security(**kw: Any) -> api.LinuxContainerSecurityContext:
    context = api.LinuxContainerSecurityContext()
    for key, value in kw.items():
        if key in ("run_as_user", "run_as_group"):
            getattr(context, key).value = value
        elif key == "supplemental_groups":
            context.supplemental_groups.extend(value)
        elif key == "seccomp":
            context.seccomp.CopyFrom(value)
        elif key == "capabilities":
            context.capabilities.CopyFrom(value)
        elif key == "namespace_options":
            context.namespace_options.CopyFrom(value)
        else:
            setattr(context, key, value)
    return context


@pytest.mark.parametrize(
    ("image", "context", "uid", "gid", "groups"),
    [
        ("plain", {}, 0, 0, [0]),
        ("alice", {}, 1000, 1000, [1000, 5000]),
        ("plain", {"run_as_user": 1000}, 1000, 1000, [1000, 5000]),
        ("plain", {"run_as_username": "alice"}, 1000, 1000, [1000, 5000]),
        ("alice", {"run_as_user": 65534}, 65534, 65534, [65534]),
        (
            "plain",
            {"run_as_user": 1000, "run_as_group": 2000, "supplemental_groups": [3000]},
            1000,
            2000,
            [2000, 3000, 5000],
        ),
        (
            "plain",
            {"run_as_user": 1000, "run_as_group": 2000, "supplemental_groups": [3000], "supplemental_groups_policy": api.Strict},
            1000,
            2000,
            [2000, 3000],
        ),
    ],
    ids=["root", "image-user", "run-as-user", "run-as-username", "overrides-image", "merge", "strict"],
)
def test_users(h: Harness, image: str, context: dict[str, Any], uid: int, gid: int, groups: list[int]) -> None:
    pod = h.pod("users")
    cid = h.container(pod, "who", image=image, security=security(**context))
    out = h.sh(cid, "id -u; id -g; id -G")
    got_uid, got_gid, got_groups = out.splitlines()
    assert (int(got_uid), int(got_gid), sorted(int(g) for g in got_groups.split())) == (uid, gid, groups)
    # The container's main process, seen from the host.
    host = proc_status(h.pid(cid))
    assert host["Uid"].split() == [str(uid)] * 4
    assert host["Gid"].split() == [str(gid)] * 4
    host_groups = {int(g) for g in host["Groups"].split()}
    assert set(groups) - {gid} <= host_groups <= set(groups)  # the primary group: see the next test
    user = h.status(cid).user.linux
    assert (user.uid, user.gid, sorted(user.supplemental_groups)) == (uid, gid, groups)


def test_primary_group_is_a_supplementary_group(h: Harness) -> None:
    pod = h.pod("gids")
    cid = h.container(pod, "alice", image="alice")
    assert sorted(int(g) for g in proc_status(h.pid(cid))["Groups"].split()) == [1000, 5000]
    additional = h.info(cid)["runtimeSpec"]["process"]["user"].get("additionalGids", [])
    assert sorted(additional) == [1000, 5000]


# -- capabilities, privileged, seccomp, read-only rootfs ---------------------------------------------------


def test_capabilities(h: Harness) -> None:
    pod = h.pod("caps")
    default = h.container(pod, "default")
    net_admin = h.container(pod, "net-admin", security=security(capabilities=api.Capability(add_capabilities=["NET_ADMIN"])))
    nothing = h.container(pod, "nothing", security=security(capabilities=api.Capability(drop_capabilities=["ALL"])))
    expected = cap_mask(DEFAULT_CAPABILITIES)
    for cid, mask in ((default, expected), (net_admin, expected | cap_mask(["CAP_NET_ADMIN"])), (nothing, 0)):
        inside = dict(line.split(":\t") for line in h.sh(cid, "grep ^Cap /proc/self/status").splitlines())
        assert int(inside["CapEff"], 16) == mask, cid
        assert int(inside["CapBnd"], 16) == mask, cid
        assert int(proc_status(h.pid(cid))["CapEff"], 16) == mask
    h.sh(net_admin, "ip addr add 10.123.0.1/32 dev lo")  # the pod's own network namespace
    assert "Operation not permitted" in h.fails(default, "ip addr add 10.123.0.2/32 dev lo")
    assert "Permission denied" in h.fails(nothing, "touch /home/alice/x")  # no CAP_DAC_OVERRIDE


def test_privileged(h: Harness) -> None:
    pod = h.pod("priv", privileged=True)
    privileged = h.container(pod, "privileged", security=security(privileged=True))
    plain = h.container(pod, "plain")
    mask = int(proc_status(h.pid(privileged))["CapEff"], 16)
    assert mask == cap_mask(current_bounding())
    host_devices = sorted(n for n in os.listdir("/dev") if n.startswith("loop") and n[4:].isdigit())
    assert host_devices, "the host has no /dev/loopN to compare with"
    seen = h.sh(privileged, "ls /dev").split()
    assert set(host_devices) <= set(seen)
    assert host_devices[0] not in h.sh(plain, "ls /dev").split()
    h.sh(privileged, "mount -t tmpfs none /mnt && touch /mnt/x && umount /mnt")
    assert "permission denied" in h.fails(plain, "mount -t tmpfs none /mnt")  # busybox's words for EPERM
    other = h.pod("unpriv")
    with pytest.raises(InvalidArgumentError, match="privileged: the pod sandbox is not privileged"):
        h.container(other, "escalate", security=security(privileged=True))


def test_seccomp(h: Harness, tmp_path: Path) -> None:
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(
        json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]})
    )
    pod = h.pod("seccomp")
    default = h.container(
        pod, "default", security=security(seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.RuntimeDefault))
    )
    unconfined = h.container(
        pod, "unconfined", security=security(seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Unconfined))
    )
    localhost = h.container(
        pod,
        "localhost",
        security=security(seccomp=api.SecurityProfile(profile_type=api.SecurityProfile.Localhost, localhost_ref=str(profile))),
    )
    assert h.sh(default, "grep ^Seccomp: /proc/self/status").split() == ["Seccomp:", "2"]
    assert h.sh(unconfined, "grep ^Seccomp: /proc/self/status").split() == ["Seccomp:", "0"]
    assert [proc_status(h.pid(c))["Seccomp"] for c in (default, unconfined, localhost)] == ["2", "0", "2"]
    # A user namespace needs no capability: only the filter stops it.
    assert "Operation not permitted" in h.fails(default, "unshare -U true")
    h.sh(unconfined, "unshare -U true")
    assert "Operation not permitted" in h.fails(localhost, "mkdir /tmp/x")
    h.sh(localhost, "touch /tmp/y && unshare -U true")
    h.sh(default, "mkdir /tmp/x")


def test_readonly_rootfs(h: Harness) -> None:
    pod = h.pod("ro")
    cid = h.container(pod, "ro", security=security(readonly_rootfs=True))
    assert "Read-only file system" in h.fails(cid, "touch /newfile")
    assert "Read-only file system" in h.fails(cid, "touch /tmp/newfile")
    assert "Read-only file system" in h.fails(cid, "echo x >> /etc/hosts")
    h.sh(cid, "touch /dev/shm/ok")  # the pod's /dev/shm stays writable
    writable = h.container(pod, "rw")
    h.sh(writable, "touch /newfile /tmp/newfile")


# -- namespaces --------------------------------------------------------------------------------------


def ns_link(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_pod_namespaces(h: Harness) -> None:
    pod = h.pod("nspod")
    infra = int(pod.info["pid"])
    a = h.container(pod, "a")
    b = h.container(pod, "b")
    for kind in ("net", "ipc", "uts", "pid"):
        inside = h.sh(a, f"readlink /proc/self/ns/{kind}").strip()
        assert inside == ns_link(infra, kind), kind
        assert ns_link(h.pid(b), kind) == ns_link(infra, kind), kind
    assert ns_link(h.pid(a), "mnt") != ns_link(h.pid(b), "mnt")
    assert h.sh(a, "cat /proc/1/cmdline") == "/catatonit\x00-P\x00"
    ps = h.sh(a, "ps -o pid,args")
    assert ps.count("sleep 1000") == 2, ps  # a's and b's
    assert pod.ip
    assert f"inet {pod.ip}/" in h.sh(a, "ip -4 addr show eth0")
    assert h.sh(a, "hostname").strip() == "nspod-host"
    pod_dir = Path(pod.info["podDir"])
    for name in ("hosts", "resolv.conf", "hostname"):
        assert h.sh(a, f"cat /etc/{name}") == (pod_dir / name).read_text(), name
    # Loopback is the pod's: a server in one container answers a client in the other.
    h.sh(a, "echo hello > /tmp/msg")
    h.exec(a, "/bin/sh", "-c", "(while :; do nc -l -p 7777 < /tmp/msg; done) >/dev/null 2>&1 &")
    reply = wait_for("the listener in a", lambda: h.exec(b, "/bin/sh", "-c", "nc 127.0.0.1 7777 </dev/null").stdout)
    assert reply == b"hello\n"


def test_pid_namespace_modes(h: Harness) -> None:
    pod = h.pod("pidmodes")
    own = h.container(pod, "own", security=security(namespace_options=api.NamespaceOption(pid=api.CONTAINER)))
    assert h.sh(own, "cat /proc/1/cmdline") == "/bin/sleep\x001000\x00"
    assert ns_link(h.pid(own), "pid") != ns_link(int(pod.info["pid"]), "pid")
    target = h.container(
        pod,
        "target",
        ("/bin/sleep", "2000"),
        security=security(namespace_options=api.NamespaceOption(pid=api.TARGET, target_id=own)),
    )
    assert ns_link(h.pid(target), "pid") == ns_link(h.pid(own), "pid")
    assert h.sh(target, "cat /proc/1/cmdline") == "/bin/sleep\x001000\x00"
    ps = h.sh(target, "ps -o pid,args")
    assert "sleep 1000" in ps
    assert "sleep 2000" in ps
    with pytest.raises(NotFoundError, match="target_id: container 'nope' is not running"):
        h.container(pod, "lost", security=security(namespace_options=api.NamespaceOption(pid=api.TARGET, target_id="nope")))


def test_host_pid(h: Harness) -> None:
    pod = h.pod("hostpid", pid=api.NODE)
    cid = h.container(pod, "host", security=security(namespace_options=api.NamespaceOption(pid=api.NODE)))
    assert ns_link(h.pid(cid), "pid") == ns_link("self", "pid")
    assert h.sh(cid, "cat /proc/1/cmdline") == Path("/proc/1/cmdline").read_text()
    assert h.sh(cid, f"cat /proc/{os.getpid()}/cmdline") == Path("/proc/self/cmdline").read_text()


# -- mounts --------------------------------------------------------------------------------------------


def test_bind_mounts(h: Harness, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "hello").write_text("from the host\n")
    missing = tmp_path / "created" / "by-pycri"
    pod = h.pod("binds")
    cid = h.container(pod, "binds", mounts=[bind(rw, "/mnt/rw"), bind(ro, "/mnt/ro", readonly=True), bind(missing, "/mnt/new")])
    h.sh(cid, "echo from the container > /mnt/rw/file")
    assert (rw / "file").read_text() == "from the container\n"
    assert h.sh(cid, "cat /mnt/ro/hello") == "from the host\n"
    assert "Read-only file system" in h.fails(cid, "touch /mnt/ro/nope")
    assert not (ro / "nope").exists()
    assert missing.is_dir()  # a missing source becomes a directory
    h.sh(cid, "touch /mnt/new/x")
    assert (missing / "x").exists()


@pytest.fixture
def dir_with_submount(tmp_path: Path) -> Iterator[Path]:
    """A host directory with a tmpfs mounted on its ``sub`` directory, unmounted afterwards."""
    source = tmp_path / "rro"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(source / "sub")], check=True)
    try:
        yield source
    finally:
        subprocess.run(["umount", "-l", str(source / "sub")], check=False)
    assert mounted_below(source) == []


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_recursive_read_only_mounts(h: Harness, dir_with_submount: Path, handler: str) -> None:
    features = {rh.name: rh.features.recursive_read_only_mounts for rh in h.client.status(api.StatusRequest()).runtime_handlers}
    assert features[handler], f"{handler} should support rro on this kernel: {features}"
    pod = h.pod(f"rro-{handler}", handler=handler)
    rro = bind(dir_with_submount, "/mnt/rro", readonly=True)
    rro.recursive_read_only = True
    ro = bind(dir_with_submount, "/mnt/ro", readonly=True)
    cid = h.container(pod, "rro", mounts=[rro, ro])
    assert "Read-only file system" in h.fails(cid, "touch /mnt/rro/sub/x")
    assert "Read-only file system" in h.fails(cid, "touch /mnt/ro/x")
    h.sh(cid, "touch /mnt/ro/sub/x")  # plain ro leaves submounts writable
    assert (dir_with_submount / "sub" / "x").exists()

    rw = bind(dir_with_submount, "/mnt/bad")
    rw.recursive_read_only = True
    with pytest.raises(InvalidArgumentError, match=r"config.mounts\[0\].recursive_read_only: needs readonly"):
        h.container(pod, "rro-rw", mounts=[rw])
    slave = bind(dir_with_submount, "/mnt/bad", readonly=True, propagation=api.PROPAGATION_HOST_TO_CONTAINER)
    slave.recursive_read_only = True
    with pytest.raises(InvalidArgumentError, match="needs private propagation, not PROPAGATION_HOST_TO_CONTAINER"):
        h.container(pod, "rro-slave", mounts=[slave])


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A host directory that is a shared mount (a bind of itself), unmounted with all below it afterwards."""
    source = tmp_path / "shared"
    source.mkdir()
    subprocess.run(["mount", "--bind", str(source), str(source)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(source)], check=True)
        yield source
    finally:
        for target in sorted(mounted_below(source), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)
    assert mounted_below(source) == []


def test_mount_propagation(h: Harness, shared_dir: Path) -> None:
    pod = h.pod("prop", privileged=True)
    private = h.container(pod, "private", mounts=[bind(shared_dir, "/mnt/p")])
    slave = h.container(pod, "slave", mounts=[bind(shared_dir, "/mnt/p", propagation=api.PROPAGATION_HOST_TO_CONTAINER)])
    shared = h.container(
        pod,
        "shared",
        mounts=[bind(shared_dir, "/mnt/p", propagation=api.PROPAGATION_BIDIRECTIONAL)],
        security=security(privileged=True),
    )
    assert h.info(slave)["runtimeSpec"]["linux"]["rootfsPropagation"] == "rslave"
    assert h.info(shared)["runtimeSpec"]["linux"]["rootfsPropagation"] == "rshared"

    # A mount made on the host after the start reaches rslave and rshared, not rprivate.
    sub = shared_dir / "sub"
    sub.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(sub)], check=True)
    (sub / "marker").write_text("host mount\n")
    assert h.sh(slave, "cat /mnt/p/sub/marker") == "host mount\n"
    assert h.sh(shared, "cat /mnt/p/sub/marker") == "host mount\n"
    assert "No such file" in h.fails(private, "cat /mnt/p/sub/marker")

    # A mount made inside the rshared container reaches the host (and the rslave container).
    h.sh(shared, "mkdir /mnt/p/inner && mount -t tmpfs none /mnt/p/inner && echo inside > /mnt/p/inner/f")
    assert (shared_dir / "inner" / "f").read_text() == "inside\n"
    assert h.sh(slave, "cat /mnt/p/inner/f") == "inside\n"
    assert "No such file" in h.fails(private, "cat /mnt/p/inner/f")


def test_pod_shm_is_shared(h: Harness) -> None:
    pod = h.pod("shm")
    a = h.container(pod, "a")
    b = h.container(pod, "b")
    h.sh(a, "echo shared > /dev/shm/note")
    assert h.sh(b, "cat /dev/shm/note") == "shared\n"
    other = h.container(h.pod("shm-other"), "c")
    assert "No such file" in h.fails(other, "cat /dev/shm/note")


# -- logs ------------------------------------------------------------------------------------------------


def test_log_format(h: Harness) -> None:
    pod = h.pod("logs")
    script = 'echo out-line; echo err-line >&2; printf partial; sleep 0.3; echo " rest"; echo done'
    cid = h.container(pod, "logger", ("/bin/sh", "-c", script))
    h.wait_exited(cid)
    entries = parse_log(h.log_path(cid))
    stdout = [(tag, text) for _, stream, tag, text in entries if stream == "stdout"]
    stderr = [(tag, text) for _, stream, tag, text in entries if stream == "stderr"]
    assert stdout == [("F", "out-line"), ("P", "partial"), ("F", " rest"), ("F", "done")]
    assert stderr == [("F", "err-line")]
    stamps = [stamp for stamp, *_ in entries if _[0] == "stdout"]
    assert stamps == sorted(stamps)


def test_log_rotation(h: Harness) -> None:
    pod = h.pod("rotate")
    cid = h.container(pod, "ticker", ("/bin/sh", "-c", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"))
    path = Path(h.log_path(cid))
    h.wait_log(cid, "tick 3")
    rotated = path.with_name(path.name + ".1")
    path.rename(rotated)
    h.client.reopen_container_log(api.ReopenContainerLogRequest(container_id=cid))
    assert path.exists()
    wait_for("new lines in the reopened log", lambda: len(h.stdout(cid)) >= 3)
    old = [int(text.split()[1]) for _, _, _, text in parse_log(rotated)]
    new = [int(text.split()[1]) for _, _, _, text in parse_log(path)]
    assert old == list(range(1, len(old) + 1))
    assert new[0] == old[-1] + 1, "lines were lost or duplicated across the reopen"
    assert new == list(range(new[0], new[0] + len(new)))
    h.stop(cid)
    with pytest.raises(FailedPreconditionError, match="is not running"):
        h.client.reopen_container_log(api.ReopenContainerLogRequest(container_id=cid))
    with pytest.raises(NotFoundError):
        h.client.reopen_container_log(api.ReopenContainerLogRequest(container_id="0" * 64))


# -- exec --------------------------------------------------------------------------------------------------


def test_exec_sync_timeout(h: Harness) -> None:
    pod = h.pod("exectimeout")
    cid = h.container(pod, "main")
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="timed out after 1s"):
        h.exec(cid, "/bin/sleep", "77", timeout=1)
    assert time.monotonic() - started < 6
    assert "sleep 77" not in h.sh(cid, "ps -o args")
    assert h.exec(cid, "true").exit_code == 0  # the container is fine


def test_exec_sync_output_is_capped(h: Harness) -> None:
    pod = h.pod("execbig")
    cid = h.container(pod, "main")
    result = h.exec(cid, "/bin/sh", "-c", "head -c 20971520 /dev/zero; echo done >&2", timeout=30)
    assert result.exit_code == 0
    assert 15 * MiB < len(result.stdout) + len(result.stderr) <= 16 * MiB


# -- resources -----------------------------------------------------------------------------------------------


def cgroup_file(h: Harness, cid: str, controller: str, name: str) -> str:
    path = str(h.info(cid)["runtimeSpec"]["linux"]["cgroupsPath"]).lstrip("/")
    return (Path("/sys/fs/cgroup") / controller / path / name).read_text().strip()


CGROUP_V1 = os.path.isdir("/sys/fs/cgroup/memory") and os.path.isfile("/sys/fs/cgroup/memory/memory.limit_in_bytes")
needs_cgroup_v1 = pytest.mark.skipif(not CGROUP_V1, reason="reads cgroup v1 files")


@needs_cgroup_v1
def test_update_container_resources(h: Harness) -> None:
    pod = h.pod("update")
    cid = h.container(pod, "main")
    update = api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB, cpu_shares=512)
    h.client.update_container_resources(api.UpdateContainerResourcesRequest(container_id=cid, linux=update))
    assert int(cgroup_file(h, cid, "memory", "memory.limit_in_bytes")) == 64 * MiB
    assert int(cgroup_file(h, cid, "cpu", "cpu.shares")) == 512
    resources = h.status(cid).resources.linux
    assert (resources.memory_limit_in_bytes, resources.cpu_shares) == (64 * MiB, 512)
    h.stop(cid)
    with pytest.raises(FailedPreconditionError, match="cannot update resources"):
        h.client.update_container_resources(api.UpdateContainerResourcesRequest(container_id=cid, linux=update))

    # Before its start the container is only a bundle: the new limits go into it.
    created = h.container(pod, "created", start=False)
    later = api.LinuxContainerResources(memory_limit_in_bytes=48 * MiB, cpu_shares=256)
    h.client.update_container_resources(api.UpdateContainerResourcesRequest(container_id=created, linux=later))
    assert h.status(created).resources.linux.memory_limit_in_bytes == 48 * MiB
    h.start(created)
    assert int(cgroup_file(h, created, "memory", "memory.limit_in_bytes")) == 48 * MiB
    assert int(cgroup_file(h, created, "cpu", "cpu.shares")) == 256


def runtime_containers(h: Harness, handler: str = "runc") -> list[str]:
    """What the runtime lists; ``runc list`` fails now and then when a container's state leaves as it reads it."""
    runtime = h.daemon.cfg.runtimes[handler]
    for _ in range(5):
        listed = subprocess.run([runtime.path, "--root", runtime.root, "list", "-q"], capture_output=True, text=True)
        if listed.returncode == 0:
            return listed.stdout.split()
        time.sleep(0.1)
    raise AssertionError(f"{runtime.path} list failed: {listed.stderr}")


def test_an_exited_container_leaves_the_runtime_before_its_removal(h: Harness) -> None:
    pod = h.pod("released")
    cid = h.container(pod, "short", ("/bin/sh", "-c", "exit 3"))
    h.wait_exited(cid)
    wait_for("runc to forget the exited container", lambda: cid not in runtime_containers(h))
    st = h.status(cid)
    assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 3, "Error")
    assert h.client.list_containers(api.ListContainersRequest()).containers[0].id == cid
    h.remove(cid)


def test_a_failed_start_is_a_start_error(h: Harness) -> None:
    pod = h.pod("starterror")
    cid = h.container(pod, "missing-binary", ("/no/such/program",), start=False)
    assert h.status(cid).state == api.CONTAINER_CREATED  # the runtime only meets it at StartContainer
    with pytest.raises(ClientError, match="starting container"):
        h.start(cid)
    st = h.status(cid)
    assert (st.state, st.reason, st.exit_code) == (api.CONTAINER_EXITED, "StartError", 128)
    assert "/no/such/program" in st.message
    with pytest.raises(FailedPreconditionError, match="not created: only a created container can start"):
        h.start(cid)
    h.remove(cid)


SWAP_ACCOUNTING = os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")


@needs_cgroup_v1
@pytest.mark.skipif(not SWAP_ACCOUNTING, reason="no memory.memsw (swap accounting) on this host")
def test_raising_a_memory_limit_set_at_creation(h: Harness) -> None:
    pod = h.pod("raise")
    cid = h.container(pod, "main", resources=api.LinuxContainerResources(memory_limit_in_bytes=32 * MiB))
    assert int(cgroup_file(h, cid, "memory", "memory.limit_in_bytes")) == 32 * MiB
    assert int(cgroup_file(h, cid, "memory", "memory.memsw.limit_in_bytes")) == 32 * MiB
    update = api.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
    h.client.update_container_resources(api.UpdateContainerResourcesRequest(container_id=cid, linux=update))
    assert int(cgroup_file(h, cid, "memory", "memory.limit_in_bytes")) == 64 * MiB
    assert int(cgroup_file(h, cid, "memory", "memory.memsw.limit_in_bytes")) == 64 * MiB


# -- listing -------------------------------------------------------------------------------------------------


def test_list_and_stream_filters(h: Harness) -> None:
    pod_a = h.pod("list-a")
    pod_b = h.pod("list-b")
    running = h.container(pod_a, "running", labels={"app": "web", "tier": "front"})
    created = h.container(pod_a, "created", start=False, labels={"app": "db", "tier": "back"})
    exited = h.container(pod_b, "exited", ("/bin/true",), labels={"app": "web", "tier": "back"})
    h.wait_exited(exited)

    def state(value: api.ContainerState.ValueType) -> api.ContainerFilter:
        return api.ContainerFilter(state=api.ContainerStateValue(state=value))

    assert h.list() == {running, created, exited}
    assert h.list(api.ContainerFilter(id=running)) == {running}
    assert h.list(api.ContainerFilter(id=created[:10])) == {created}
    assert h.list(api.ContainerFilter(pod_sandbox_id=pod_a.id)) == {running, created}
    assert h.list(api.ContainerFilter(pod_sandbox_id=pod_b.id[:12])) == {exited}
    assert h.list(state(api.CONTAINER_RUNNING)) == {running}
    assert h.list(state(api.CONTAINER_CREATED)) == {created}
    assert h.list(state(api.CONTAINER_EXITED)) == {exited}
    assert h.list(state(api.CONTAINER_UNKNOWN)) == set()
    assert h.list(api.ContainerFilter(label_selector={"app": "web"})) == {running, exited}
    assert h.list(api.ContainerFilter(label_selector={"app": "web", "tier": "back"})) == {exited}
    assert h.list(api.ContainerFilter(label_selector={"app": "none"})) == set()
    assert h.list(api.ContainerFilter(pod_sandbox_id=pod_a.id, label_selector={"app": "web"})) == {running}
    assert h.list(api.ContainerFilter(id="f" * 64)) == set()

    listed = {c.id: c for c in h.client.list_containers(api.ListContainersRequest()).containers}
    item = listed[running]
    assert (item.pod_sandbox_id, item.metadata.name, item.state) == (pod_a.id, "running", api.CONTAINER_RUNNING)
    assert item.image.image == h.refs["plain"]
    assert item.image_ref.endswith(IMAGES["plain"].digest)
    assert dict(item.labels) == {"app": "web", "tier": "front"}
    assert item.created_at == h.status(running).created_at

    streamed = [c.id for page in h.client.stream_containers(api.StreamContainersRequest()) for c in page.containers]
    assert sorted(streamed) == sorted([running, created, exited])
    request = api.StreamContainersRequest(filter=api.ContainerFilter(label_selector={"tier": "back"}))
    assert {c.id for page in h.client.stream_containers(request) for c in page.containers} == {created, exited}


# -- daemon restart ----------------------------------------------------------------------------------------------


def test_daemon_restart_keeps_containers(image_refs: dict[str, str], tmp_path: Path) -> None:
    with DaemonProcess.temporary() as daemon:
        with Client(daemon.socket, timeout=30) as client:
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_refs["plain"])))
            h = Harness(client, daemon, image_refs, tmp_path)
            pod = h.pod("restart")
            running = h.container(pod, "running")
            exits_while_down = h.container(pod, "early", ("/bin/sh", "-c", "sleep 2; exit 7"))
            # Still running once the restarted daemon answers: 3 s down, then its start (slow on a loaded machine).
            exits_after = h.container(pod, "late", ("/bin/sh", "-c", "sleep 10; exit 9"))
            created = h.container(pod, "created", start=False)
            pid = h.pid(running)
        daemon.kill()
        time.sleep(3)
        assert Path(f"/proc/{pid}").exists(), "the container died with the daemon"
        daemon.start()
        with Client(daemon.socket, timeout=30) as client:
            h.client = client
            st = h.status(running)
            assert st.state == api.CONTAINER_RUNNING
            assert h.pid(running) == pid
            assert h.exec(running, "true").exit_code == 0
            st = h.status(exits_while_down)
            assert (st.state, st.exit_code, st.reason) == (api.CONTAINER_EXITED, 7, "Error")
            assert st.started_at < st.finished_at
            assert h.status(exits_after).state == api.CONTAINER_RUNNING
            st = h.wait_exited(exits_after, timeout=20)  # the restarted daemon still watches it
            assert (st.exit_code, st.reason) == (9, "Error")
            assert h.status(created).state == api.CONTAINER_CREATED
            h.start(created)  # a container created before the restart starts after it
            assert h.status(created).state == api.CONTAINER_RUNNING
            assert h.exec(created, "true").exit_code == 0
            h.stop(running, timeout=10)
            st = h.status(running)
            assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 143)
            for cid in (running, exits_while_down, exits_after, created):
                h.remove(cid)
            assert h.list() == set()
            h.cleanup()
        assert daemon.leftovers() == []


def test_removal_finishes_after_a_crash(image_refs: dict[str, str], tmp_path: Path) -> None:
    """RemoveContainer answers before the runtime state, mounts and files are gone; a crash then
    leaves the container recorded as being removed, and the restarted daemon finishes the job."""
    wrapper = tmp_path / "slow-delete-runc"
    wrapper.write_text('#!/bin/sh\n[ "$3" = delete ] && sleep 30\nexec /usr/sbin/runc "$@"\n')
    wrapper.chmod(0o755)
    daemon = DaemonProcess.temporary()
    daemon.cfg.runtimes["runc"].path = str(wrapper)
    with daemon:
        with Client(daemon.socket, timeout=30) as client:
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_refs["plain"])))
            h = Harness(client, daemon, image_refs, tmp_path)
            pod = h.pod("crash-remove")
            cid = h.container(pod, "main")
            container_dir = Path(h.info(cid)["runtimeSpec"]["root"]["path"]).parent
            started = time.monotonic()
            h.remove(cid)
            assert time.monotonic() - started < 10, "RemoveContainer waited for the clean-up"
            assert h.list() == set()
            assert container_dir.exists()  # the clean-up is still under way (runc delete sleeps)
        daemon.kill()
        subprocess.run(["pkill", "-f", str(wrapper)], check=False)
        wrapper.write_text('#!/bin/sh\nexec /usr/sbin/runc "$@"\n')
        daemon.start()
        with Client(daemon.socket, timeout=30) as client:
            h.client = client
            assert h.list() == set()
            assert not container_dir.exists(), "recovery finished the removal"
            assert "was being cleaned up after its removal; finishing" in daemon.log()
            h.cleanup()
        assert daemon.leftovers() == []


# -- crictl ---------------------------------------------------------------------------------------------------------


def crictl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    assert CRICTL is not None
    env = os.environ | {"CRI_CONFIG_FILE": "/dev/null"}
    return subprocess.run(
        [CRICTL, "--runtime-endpoint", daemon.endpoint, "--image-endpoint", daemon.endpoint, "--timeout", "20s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.skipif(CRICTL is None, reason="crictl is not installed on this machine")
def test_crictl(h: Harness, tmp_path: Path) -> None:
    daemon = h.daemon

    def ok(*args: str) -> str:
        result = crictl(daemon, *args)
        assert result.returncode == 0, f"crictl {' '.join(args)}: {result.stderr}"
        return result.stdout

    pod_json = tmp_path / "pod.json"
    pod_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "cli", "namespace": "containers", "uid": "uid-cli"},
                "hostname": "cli-host",
                "log_directory": str(tmp_path / "logs"),
            }
        )
    )
    ctr_json = tmp_path / "container.json"
    ctr_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "cli"},
                "image": {"image": h.refs["plain"]},
                "command": ["/bin/sh", "-c", "echo from-crictl; exec sleep 1000"],
                "log_path": "cli.log",
                "labels": {"via": "crictl"},
            }
        )
    )
    pod_id = ok("runp", str(pod_json)).strip()
    h.pods.append(pod_id)
    cid = ok("create", "--no-pull", pod_id, str(ctr_json), str(pod_json)).strip()
    assert len(cid) == 64
    assert cid in ok("ps", "-a", "-q").split()
    ok("start", cid)
    assert ok("ps", "-q", "--state", "Running", "--label", "via=crictl").split() == [cid]
    inspect = json.loads(ok("inspect", cid))
    assert inspect["status"]["state"] == "CONTAINER_RUNNING"
    assert inspect["info"]["pid"] == h.pid(cid)
    wait_for("crictl logs", lambda: "from-crictl" in crictl(daemon, "logs", cid).stdout)
    assert ok("exec", "-s", cid, "echo", "hi").strip() == "hi"
    ok("update", "--memory", str(64 * MiB), "--cpu-share", "512", cid)
    assert h.status(cid).resources.linux.memory_limit_in_bytes == 64 * MiB
    if CGROUP_V1:
        assert int(cgroup_file(h, cid, "memory", "memory.limit_in_bytes")) == 64 * MiB
    ok("stop", "--timeout", "5", cid)
    assert json.loads(ok("inspect", cid))["status"]["state"] == "CONTAINER_EXITED"
    ok("rm", cid)
    assert cid not in ok("ps", "-a", "-q").split()
    ok("stopp", pod_id)
    ok("rmp", pod_id)
    h.pods.remove(pod_id)


# -- crun -------------------------------------------------------------------------------------------------------------


def hybrid_cgroups() -> str:
    """What makes this host a cgroup v1 hybrid that crun 1.8 refuses ("" when it is not one)."""
    controllers = ""
    with contextlib.suppress(OSError):
        controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers").read_text().strip()
    fstype = ""
    with contextlib.suppress(OSError), open("/proc/self/mounts") as f:
        fstype = next((line.split()[2] for line in f if line.split()[1] == "/sys/fs/cgroup"), "")
    if controllers and fstype == "tmpfs":
        return f"cgroup v1 with controllers on the unified hierarchy: {controllers}"
    return ""


def test_crun_lifecycle(h: Harness) -> None:
    """The basic lifecycle under crun; on a hybrid host where crun refuses containers (and pycri has no
    work-around), a skip naming crun's own reason."""
    if not os.access(h.daemon.cfg.runtimes["crun"].path, os.X_OK):
        pytest.skip("crun is not installed")
    hybrid = hybrid_cgroups()
    try:
        pod = h.pod("crun", handler="crun")
        cid = h.container(pod, "main", ("/bin/sh", "-c", "echo started; exec sleep 1000"))
    except ClientError as exc:
        if hybrid and "cgroups in hybrid mode not supported" in exc.details:
            pytest.skip(f"cgroups in hybrid mode not supported: crun refuses every container on this host ({hybrid})")
        raise
    assert h.info(cid)["runtimeHandler"] == "crun"
    assert h.status(cid).state == api.CONTAINER_RUNNING
    h.wait_log(cid, "started")
    result = h.exec(cid, "/bin/sh", "-c", "echo out; exit 4")
    assert (result.stdout, result.exit_code) == (b"out\n", 4)
    h.stop(cid, timeout=10)
    st = h.status(cid)
    assert (st.state, st.exit_code) == (api.CONTAINER_EXITED, 143)
    h.remove(cid)


def test_a_container_with_a_very_deep_tree_in_its_writable_layer_is_removed(h: Harness) -> None:
    pod = h.pod("deep")
    # Nested from the top (a path this deep is too long for cd): a/a/.../a, 3000 levels.
    script = "mkdir a; i=0; while [ $i -lt 3000 ]; do mkdir b && mv a b/a && mv b a || exit 1; i=$((i+1)); done"
    cid = h.container(pod, "deep", ("/bin/sh", "-c", script))
    status = h.wait_exited(cid, timeout=300)
    assert status.exit_code == 0, Path(status.log_path).read_text()[-2000:]
    directory = Path(h.daemon.cfg.root_dir) / "containers" / cid
    assert directory.is_dir()
    h.remove(cid)
    wait_for("the container's directory to go", lambda: not directory.exists(), timeout=30)
    assert cid not in h.list()
