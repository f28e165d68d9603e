"""The real daemon on a temporary socket: every RPC, errors, skew, robustness."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

import pycri
from pycri import config
from pycri.api import api_pb2 as api
from pycri.client import Client, InvalidArgumentError, UnavailableError, UnimplementedError
from pycri.stats.fsusage import mount_of
from pycri.testing import DaemonProcess

pytestmark = pytest.mark.integration

# RPCs built so far, and what an empty request gets from each: None (an answer) or (error, message).
IMPLEMENTED: dict[str, tuple[type[Exception], str] | None] = {
    "Version": None,
    "Status": None,
    "RuntimeConfig": None,
    "UpdateRuntimeConfig": None,
    "ListImages": None,
    "StreamImages": None,
    "ImageStatus": None,
    "ImageFsInfo": None,
    "PullImage": (InvalidArgumentError, "image.image: an image reference is required"),
    "RemoveImage": (InvalidArgumentError, "image.image: an image reference or ID is required"),
    "ListPodSandbox": None,
    "StreamPodSandboxes": None,
    "RunPodSandbox": (InvalidArgumentError, "config: required"),
    "StopPodSandbox": (InvalidArgumentError, "pod_sandbox_id: required"),
    "RemovePodSandbox": (InvalidArgumentError, "pod_sandbox_id: required"),
    "PodSandboxStatus": (InvalidArgumentError, "pod_sandbox_id: required"),
    "UpdatePodSandboxResources": (InvalidArgumentError, "pod_sandbox_id: required"),
    "ListContainers": None,
    "StreamContainers": None,
    "CreateContainer": (InvalidArgumentError, "pod_sandbox_id: required"),
    "StartContainer": (InvalidArgumentError, "container_id: required"),
    "StopContainer": (InvalidArgumentError, "container_id: required"),
    "RemoveContainer": (InvalidArgumentError, "container_id: required"),
    "ContainerStatus": (InvalidArgumentError, "container_id: required"),
    "ExecSync": (InvalidArgumentError, "container_id: required"),
    "UpdateContainerResources": (InvalidArgumentError, "container_id: required"),
    "ReopenContainerLog": (InvalidArgumentError, "container_id: required"),
    "ContainerStats": (InvalidArgumentError, "container_id: required"),
    "ListContainerStats": None,
    "StreamContainerStats": None,
    "PodSandboxStats": (InvalidArgumentError, "pod_sandbox_id: required"),
    "ListPodSandboxStats": None,
    "StreamPodSandboxStats": None,
    "ListMetricDescriptors": None,
    "ListPodSandboxMetrics": None,
    "StreamPodSandboxMetrics": None,
    "Exec": (InvalidArgumentError, "cmd: required"),
    "Attach": (InvalidArgumentError, "one of stdin, stdout, or stderr must be set"),
    "PortForward": (InvalidArgumentError, "pod_sandbox_id: required"),
}
ALL_METHODS = [(s.name, m) for s in api.DESCRIPTOR.services_by_name.values() for m in s.methods]


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_version(client: Client) -> None:
    v = client.version(api.VersionRequest(version="0.1.0"))
    assert (v.version, v.runtime_name, v.runtime_version, v.runtime_api_version) == ("0.1.0", "pycri", pycri.__version__, "v1")


@pytest.mark.parametrize(("service", "method"), ALL_METHODS, ids=[m.name for _, m in ALL_METHODS])
def test_every_rpc_answers(client: Client, service: str, method: MethodDescriptor) -> None:
    name = method.name
    request = getattr(api, method.input_type.name)()
    call = getattr(client, snake(name))
    streaming = method.server_streaming

    def invoke() -> object:
        result = call(request)
        return list(result) if streaming else result

    if name in IMPLEMENTED:
        expected = IMPLEMENTED[name]
        if expected is None:
            assert invoke() is not None
        else:
            error, message = expected
            with pytest.raises(error) as failed:
                invoke()
            assert failed.value.details == message  # type: ignore[attr-defined]
        return

    with pytest.raises(UnimplementedError) as info:
        invoke()
    assert info.value.code is grpc.StatusCode.UNIMPLEMENTED
    assert info.value.details == f"pycri does not implement runtime.v1.{service}/{name} yet"


def test_status_conditions_and_handlers(client: Client, daemon: DaemonProcess) -> None:
    status = client.status(api.StatusRequest())
    conditions = {c.type: c for c in status.status.conditions}
    assert conditions["RuntimeReady"].status is True
    # With no CNI network configured the daemon wrote its default one at start.
    assert conditions["NetworkReady"].status is True, conditions["NetworkReady"].message
    assert (Path(daemon.cfg.cni.conf_dir) / "10-pycri.conflist").is_file()
    assert [h.name for h in status.runtime_handlers] == ["", "runc", "crun"]
    assert status.features.supplemental_groups_policy is True
    assert not status.info  # only with verbose


def network_condition(client: Client, until: Callable[[api.RuntimeCondition], bool]) -> api.RuntimeCondition:
    """NetworkReady once ``until`` holds; Status may serve conditions up to a second old."""
    deadline = time.monotonic() + 5
    while True:
        cond = {c.type: c for c in client.status().status.conditions}["NetworkReady"]
        if until(cond) or time.monotonic() > deadline:
            return cond
        time.sleep(0.1)


def test_network_ready_follows_cni_config(client: Client, daemon: DaemonProcess) -> None:
    conf_dir = Path(daemon.cfg.cni.conf_dir)
    # Sorted first, so it becomes the default network.
    (conf_dir / "00-test.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "test", "plugins": [{"type": "bridge"}, {"type": "no-such-plugin"}]})
    )
    network = network_condition(client, lambda c: "no-such-plugin" in c.message)
    assert not network.status
    (conf_dir / "00-test.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "test", "plugins": [{"type": "bridge"}, {"type": "loopback"}]})
    )
    network = network_condition(client, lambda c: c.status)
    assert network.status, network.message


def test_status_verbose_info(client: Client, daemon: DaemonProcess) -> None:
    info = client.status(api.StatusRequest(verbose=True)).info
    cfg = json.loads(info["config"])
    assert cfg["socket"] == daemon.socket
    assert cfg["runtimes"]["runc"]["path"] == "/usr/sbin/runc"
    handlers = json.loads(info["runtimeHandlers"])
    assert handlers["runc"]["ok"] is True
    assert "runc" in handlers["runc"]["version"]
    assert json.loads(info["cni"])["confDir"] == daemon.cfg.cni.conf_dir


def test_runtime_not_ready_when_runtime_is_missing(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-runc")
    with (
        DaemonProcess.temporary(runtimes={"runc": {"path": missing, "root": str(tmp_path / "r")}}) as d,
        Client(d.socket) as c,
    ):
        cond = {x.type: x for x in c.status().status.conditions}["RuntimeReady"]
        assert cond.status is False
        assert cond.reason == "OCIRuntimeNotReady"
        assert missing in cond.message


def test_runtime_config(client: Client) -> None:
    assert client.runtime_config().linux.cgroup_driver == api.CGROUPFS


def test_pod_cidr_is_kept_across_restarts(daemon: DaemonProcess) -> None:
    request = api.UpdateRuntimeConfigRequest(
        runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="10.244.1.0/24"))
    )
    with Client(daemon.socket) as c:
        c.update_runtime_config(request)
        # An empty CIDR (kubelet before the node has one) keeps the stored one.
        c.update_runtime_config(api.UpdateRuntimeConfigRequest())
    assert daemon.stop() == 0
    daemon.start()
    with Client(daemon.socket) as c:
        info = c.status(api.StatusRequest(verbose=True)).info
    assert json.loads(info["cni"])["podCIDR"] == "10.244.1.0/24"


def test_bad_pod_cidr_is_invalid_argument(client: Client) -> None:
    request = api.UpdateRuntimeConfigRequest(
        runtime_config=api.RuntimeConfig(network_config=api.NetworkConfig(pod_cidr="10.0.0/99"))
    )
    with pytest.raises(InvalidArgumentError, match=r"runtime_config.network_config.pod_cidr: '10.0.0/99' is not a CIDR"):
        client.update_runtime_config(request)


def test_v1alpha2_answers_unimplemented(daemon: DaemonProcess) -> None:
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        for method in ("/runtime.v1alpha2.RuntimeService/Version", "/runtime.v1alpha2.ImageService/ListImages"):
            call = channel.unary_unary(method, None, None)
            with pytest.raises(grpc.RpcError) as info:
                call(b"", timeout=5)
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert "runtime.v1alpha2 was removed" in str(info.value.details())


def test_malformed_and_oversized_requests_do_not_hurt(daemon: DaemonProcess, client: Client) -> None:
    with grpc.insecure_channel(f"unix:{daemon.socket}", options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        raw = channel.unary_unary("/runtime.v1.RuntimeService/Version", None, None)
        with pytest.raises(grpc.RpcError) as bad:
            raw(b"\xff\xff\xff\xff\x0f garbage", timeout=5)
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "malformed runtime.v1.VersionRequest" in str(bad.value.details())
        pull = channel.unary_unary("/runtime.v1.ImageService/PullImage", None, None)
        big = api.PullImageRequest(image=api.ImageSpec(image="x" * (17 << 20))).SerializeToString()
        with pytest.raises(grpc.RpcError) as huge:
            pull(big, timeout=10)
        assert huge.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # Raw garbage on the socket, not even HTTP/2.
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(daemon.socket)
        s.sendall(b"GET / HTTP/1.1\r\n\r\n" + os.urandom(4096))
    assert client.version().runtime_name == "pycri"


def test_socket_mode_and_single_daemon(daemon: DaemonProcess) -> None:
    st = os.stat(daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == 0
    second = subprocess.run(
        [sys.executable, "-m", "pycri", "--config", str(daemon.config_path), "daemon"], capture_output=True, text=True, timeout=30
    )
    assert second.returncode == 1
    assert "another pycri daemon is running" in second.stdout + second.stderr


def test_live_socket_of_another_process_is_refused() -> None:
    d = DaemonProcess.temporary()
    Path(d.socket).parent.mkdir(parents=True)
    d.config_path.write_text(config.render(d.cfg))
    try:
        with socket.socket(socket.AF_UNIX) as holder:
            holder.bind(d.socket)
            holder.listen()
            result = subprocess.run(
                [sys.executable, "-m", "pycri", "--config", str(d.config_path), "daemon"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert result.returncode == 1
            assert f"{d.socket}: another daemon is serving on this socket" in result.stderr
            assert os.path.exists(d.socket), "the other process's socket must be left alone"
    finally:
        shutil.rmtree(d.workdir)


def test_stale_socket_is_replaced() -> None:
    d = DaemonProcess.temporary()
    Path(d.socket).parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(d.socket)  # bound, never listening, then closed: a stale file
    with d, Client(d.socket) as c:
        assert c.version().runtime_name == "pycri"
        assert "removing stale socket" in d.log()


def test_image_socket_serves_images_only() -> None:
    d = DaemonProcess.temporary()
    d.cfg.image_socket = str(Path(d.cfg.state_dir) / "images.sock")
    with d:
        with grpc.insecure_channel(f"unix:{d.cfg.image_socket}") as channel:
            version = channel.unary_unary("/runtime.v1.RuntimeService/Version", None, None)
            with pytest.raises(grpc.RpcError) as info:
                version(b"", timeout=5)
            assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with Client(d.socket, image_socket=d.cfg.image_socket) as c:
            fs_info = c.image_fs_info()
            root_mount = mount_of(d.cfg.root_dir)
            assert root_mount is not None
            assert fs_info.image_filesystems[0].fs_id.mountpoint == root_mount.mountpoint
        assert stat.S_IMODE(os.stat(d.cfg.image_socket).st_mode) == 0o660
    assert not os.path.exists(d.cfg.image_socket)


def test_sigint_stops_cleanly(daemon: DaemonProcess) -> None:
    import signal

    assert daemon.stop(signal.SIGINT) == 0
    assert "stopped" in daemon.log()
    daemon.start()  # the fixture stops it again


def test_unreachable_daemon_is_unavailable(tmp_path: Path) -> None:
    with Client(str(tmp_path / "absent.sock"), timeout=2) as c, pytest.raises(UnavailableError):
        c.version()


def test_bad_config_fails_start_naming_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('log_level = "chatty"\n')
    result = subprocess.run(
        [sys.executable, "-m", "pycri", "--config", str(path), "daemon"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "log_level: must be one of" in result.stderr
