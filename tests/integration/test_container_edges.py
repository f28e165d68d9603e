"""Edges of the container RPCs: a cancelled ExecSync, ReopenContainerLog without a log path, a
shorter StopContainer after a longer one, and the image a container's status names."""

from __future__ import annotations

import os
import stat
import subprocess
import threading
import time

import grpc
import pytest

from pycri.api import api_pb2 as api
from pycri.api import api_pb2_grpc
from pycri.client import Client
from tests.integration.harness import Harness, wait_for

DEV_NULL = "/dev/null"


# -- ExecSync -------------------------------------------------------------------------------------


def test_a_cancelled_exec_sync_kills_what_it_started(h: Harness) -> None:
    pod = h.pod("execcancel")
    cid = h.container(pod, "main", ("/bin/sleep", "2000"))
    with grpc.insecure_channel(f"unix://{h.daemon.socket}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        call = stub.ExecSync.future(api.ExecSyncRequest(container_id=cid, cmd=["/bin/sleep", "1000"], timeout=0))
        wait_for("sleep 1000 to run in the container", lambda: "sleep 1000" in h.sh(cid, "ps -o args"))
        assert call.cancel()  # type: ignore[no-untyped-call]
    wait_for("sleep 1000 to be killed", lambda: "sleep 1000" not in h.sh(cid, "ps -o args"))
    wait_for(
        "the runtime's exec process to exit",
        lambda: subprocess.run(["pgrep", "-f", f"exec --process .* {cid}"], capture_output=True).returncode == 1,
    )
    assert h.exec(cid, "true").exit_code == 0


def test_exec_sync_timeout_zero_waits_for_the_command(h: Harness) -> None:
    pod = h.pod("execnotimeout")
    cid = h.container(pod, "main")
    result = h.exec(cid, "/bin/sh", "-c", "sleep 1.5; echo done", timeout=0)
    assert (result.exit_code, result.stdout) == (0, b"done\n")


# -- ReopenContainerLog ---------------------------------------------------------------------------------


def _is_char_device(path: str) -> bool:
    return stat.S_ISCHR(os.stat(path).st_mode)


def test_reopen_log_without_a_log_path_leaves_dev_null_alone(h: Harness) -> None:
    assert _is_char_device(DEV_NULL)
    pod = h.pod("nolog")
    try:
        config = h.config("quiet", ("/bin/sh", "-c", "while :; do echo out; sleep 0.1; done"))
        config.log_path = ""
        cid = h.create(pod, config)
        h.start(cid)
        assert h.status(cid).log_path == ""
        h.client.reopen_container_log(api.ReopenContainerLogRequest(container_id=cid))
        time.sleep(1)  # conmon would handle a reopen on its own loop, after the answer
        assert _is_char_device(DEV_NULL), "ReopenContainerLog replaced /dev/null"
        assert not os.path.lexists(DEV_NULL + ".tmp")
    finally:
        if not _is_char_device(DEV_NULL):  # never leave the machine without its /dev/null
            os.unlink(DEV_NULL)
            subprocess.run(["mknod", "-m", "666", DEV_NULL, "c", "1", "3"], check=True)
        if os.path.lexists(DEV_NULL + ".tmp"):
            os.unlink(DEV_NULL + ".tmp")


# -- StopContainer ----------------------------------------------------------------------------------------


def test_a_shorter_stop_escalates_at_its_own_deadline(h: Harness) -> None:
    pod = h.pod("stopshorter")
    cid = h.container(pod, "stubborn", ("/bin/sh", "-c", 'trap "" TERM; echo ready; exec sleep 1000'))
    h.wait_log(cid, "ready")
    first_error: list[BaseException] = []

    def long_stop() -> None:
        try:
            with Client(h.daemon.socket, timeout=90) as client:
                client.stop_container(api.StopContainerRequest(container_id=cid, timeout=60))
        except BaseException as exc:  # reported below
            first_error.append(exc)

    first = threading.Thread(target=long_stop)
    first.start()
    try:
        time.sleep(1)  # the first stop has sent SIGTERM and waits
        started = time.monotonic()
        h.stop(cid, timeout=1)
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"the second stop took {elapsed:.1f}s: it waited out the first one's timeout"
        st = h.status(cid)
        assert st.state == api.CONTAINER_EXITED
        assert st.exit_code == 137
    finally:
        first.join(90)
    assert not first.is_alive()
    assert first_error == []


# -- ContainerStatus ------------------------------------------------------------------------------------------


def test_status_names_the_image_by_its_tag(h: Harness) -> None:
    pod = h.pod("imagetag")
    image = h.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=h.refs["plain"]))).image
    # kubelet sends the image's ID, as containerd and CRI-O expect.
    cid = h.create(pod, h.config("bytag"))
    config = h.config("byid2")
    config.image.image = image.id
    by_id = h.create(pod, config)
    for container in (cid, by_id):
        st = h.status(container)
        assert st.image.image == h.refs["plain"]
        assert st.image_ref == image.repo_digests[0]
        assert st.image_id == image.id
    info = h.info(by_id)
    assert info["privileged"] is False
    assert info["config"]["image"]["image"] == image.id  # the config as kubelet sent it
    listed = {c.id: c for c in h.client.list_containers(api.ListContainersRequest()).containers}
    assert listed[by_id].image.image == image.id  # ListContainers echoes the config, as containerd's does


@pytest.fixture(autouse=True)
def _dev_null_intact() -> None:
    assert _is_char_device(DEV_NULL)
