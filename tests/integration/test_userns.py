"""Pods with their own user namespace on the real daemon, with runc and crun.

The pod's root is an unprivileged host user; the image layers and kubelet's volumes are ID-mapped
so that what the host's root owns, the pod's root owns, and what the pod's root writes into a
volume the host's root owns. The pod's network namespace belongs to its user namespace.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, InvalidArgumentError
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness, Pod, bind, proc_status
from tests.support import busybox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]

HOST_ID = 3_000_000  # kubelet gives each pod 64Ki IDs from a high range
LENGTH = 65536


def mapping(host_id: int = HOST_ID, length: int = LENGTH) -> api.UserNamespace:
    ids = [api.IDMapping(container_id=0, host_id=host_id, length=length)]
    return api.UserNamespace(mode=api.POD, uids=ids, gids=ids)


def userns_container(h: Harness, pod: Pod, name: str, *args: str, **kw: Any) -> str:
    security = api.LinuxContainerSecurityContext()
    security.namespace_options.userns_options.CopyFrom(mapping())
    return h.container(pod, name, args or ("/bin/sleep", "1000"), security=security, **kw)


def test_every_handler_offers_user_namespaces(h: Harness) -> None:
    handlers = h.client.status(api.StatusRequest()).runtime_handlers
    assert {rh.name: rh.features.user_namespaces for rh in handlers} == {"": True, "runc": True, "crun": True}


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_pod_user_namespace(h: Harness, handler: str, tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "from-host").write_text("host\n")
    pod = h.pod(f"userns-{handler}", handler=handler, userns=mapping())
    infra = int(pod.info["pid"])
    assert proc_status(infra)["Uid"].split()[0] == str(HOST_ID + 65535)  # the infra process's 65535, mapped

    cid = userns_container(h, pod, "main", mounts=[bind(volume, "/data")])
    assert h.sh(cid, "cat /proc/self/uid_map").split() == ["0", str(HOST_ID), str(LENGTH)]
    assert h.sh(cid, "cat /proc/self/gid_map").split() == ["0", str(HOST_ID), str(LENGTH)]
    assert h.sh(cid, "id -u; id -g").split() == ["0", "0"]
    pid = h.pid(cid)
    assert proc_status(pid)["Uid"].split() == [str(HOST_ID)] * 4
    assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(f"/proc/{infra}/ns/user") != os.readlink("/proc/self/ns/user")
    assert os.readlink(f"/proc/{pid}/ns/net") == os.readlink(f"/proc/{infra}/ns/net")

    # The image's files are root's, as in any container, and the pod's root may change them.
    assert h.sh(cid, "stat -c '%u:%g' /bin/busybox /etc/passwd").split() == ["0:0", "0:0"]
    h.sh(cid, "echo changed >> /etc/passwd && touch /new-file && mkdir /root/dir")
    upper = Path(h.info(cid)["runtimeSpec"]["root"]["path"]).parent / "upper"
    assert (upper / "new-file").stat().st_uid == HOST_ID
    assert (upper / "etc" / "passwd").stat().st_uid == HOST_ID  # copied up, as the pod's root's
    # A volume: the host's root's files are the pod's root's, and what it writes is the host's root's.
    assert h.sh(cid, "stat -c '%u:%g' /data/from-host; cat /data/from-host").split() == ["0:0", "host"]
    h.sh(cid, "echo pod > /data/from-pod")
    assert (volume / "from-pod").stat().st_uid == 0
    assert (volume / "from-pod").read_text() == "pod\n"
    # sysfs mounts: the network namespace is the pod's user namespace's own
    assert "sysfs on /sys type sysfs" in h.sh(cid, "mount")
    assert "Operation not permitted" in h.fails(cid, "ip link add dummy0 type dummy")  # no CAP_NET_ADMIN

    # The container's process may be anyone of the pod's IDs.
    security = api.LinuxContainerSecurityContext()
    security.run_as_user.value = 1000
    security.run_as_group.value = 1000
    security.namespace_options.userns_options.CopyFrom(mapping())
    user = h.container(pod, "user", security=security)
    assert h.sh(user, "id -u").strip() == "1000"
    assert proc_status(h.pid(user))["Uid"].split()[0] == str(HOST_ID + 1000)

    h.stop(cid, timeout=5)
    assert h.status(cid).exit_code == 143


def test_user_namespace_errors(h: Harness) -> None:
    with pytest.raises(InvalidArgumentError, match=r"uids\[0\].container_id: container ID 0 is not mapped"):
        h.pod("bad-map", userns=api.UserNamespace(mode=api.POD, uids=[api.IDMapping(container_id=1, host_id=HOST_ID, length=10)]))
    with pytest.raises(InvalidArgumentError, match=r"userns_options\.mode: CONTAINER is not supported"):
        h.pod("bad-mode", userns=api.UserNamespace(mode=api.CONTAINER))
    assert h.client.list_pod_sandbox(api.ListPodSandboxRequest()).items == []

    pod = h.pod("short", userns=mapping(length=1000))
    security = api.LinuxContainerSecurityContext()
    security.run_as_user.value = 5000
    with pytest.raises(
        InvalidArgumentError, match=r"run_as_user \(uid 5000\): not mapped in the pod's user namespace \(0..999\)"
    ):
        h.container(pod, "unmapped", security=security)
    other = api.LinuxContainerSecurityContext()
    other.namespace_options.userns_options.mode = api.NODE
    with pytest.raises(InvalidArgumentError, match=r"userns_options\.mode: NODE, but the pod sandbox has its own"):
        h.container(pod, "host-userns", security=other)
    assert h.list() == set()


def test_user_namespace_pod_survives_a_daemon_kill(image_refs: dict[str, str], tmp_path: Path) -> None:
    with DaemonProcess.temporary() as daemon:
        with Client(daemon.socket, timeout=30) as client:
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_refs["plain"])))
            h = Harness(client, daemon, image_refs, tmp_path)
            pod = h.pod("userns-restart", userns=mapping())
            cid = userns_container(h, pod, "main")
            pid = h.pid(cid)
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        time.sleep(0.5)
        daemon.start()
        with Client(daemon.socket, timeout=30) as client:
            h.client = client
            assert h.pid(cid) == pid
            assert h.sh(cid, "id -u").strip() == "0"
            h.cleanup()
        assert daemon.leftovers() == []
        assert not any(Path(daemon.cfg.state_dir, "pods").iterdir())
