"""Pod sandboxes on the real daemon: namespaces, CNI, pod files, filters, errors."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import AlreadyExistsError, Client, InvalidArgumentError, NotFoundError
from pycri.testing import DaemonProcess

pytestmark = pytest.mark.integration


def pod_config(name: str, **kw: object) -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace="test", uid=f"uid-{name}", attempt=0),
        hostname=f"{name}-host",
        labels={"app": name, "tier": "test"},
        annotations={"note": name},
    )
    for key, value in kw.items():
        if isinstance(value, dict):
            getattr(config, key).update(value)
        else:
            getattr(config, key).CopyFrom(value)
    return config


@pytest.fixture
def pods(client: Client, daemon: DaemonProcess) -> Iterator[list[str]]:
    """IDs created by a test; removed afterwards, then nothing may be left."""
    created: list[str] = []
    yield created
    for pod_id in created:
        client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert daemon.leftovers() == []


def run(client: Client, pods: list[str], config: api.PodSandboxConfig, handler: str = "") -> str:
    pod_id = client.run_pod_sandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
    pods.append(pod_id)
    return pod_id


def status(client: Client, pod_id: str) -> tuple[api.PodSandboxStatus, dict[str, object]]:
    response = client.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return response.status, json.loads(response.info["info"])


def ns(pid: int | str, kind: str) -> str:
    return os.readlink(f"/proc/{pid}/ns/{kind}")


def test_pod_lifecycle(client: Client, daemon: DaemonProcess, pods: list[str]) -> None:
    dns = api.DNSConfig(servers=["10.96.0.10"], searches=["test.svc.cluster.local"], options=["ndots:5"])
    pod_id = run(client, pods, pod_config("web", dns_config=dns))
    assert len(pod_id) == 64
    st, info = status(client, pod_id)
    assert st.state == api.SANDBOX_READY
    assert st.metadata.name == "web"
    assert dict(st.labels) == {"app": "web", "tier": "test"}
    assert dict(st.annotations) == {"note": "web"}
    assert st.runtime_handler == "runc"
    assert st.created_at > 0
    ip = st.network.ip
    assert ip.startswith(daemon.cfg.cni.default_subnet.rsplit(".", 2)[0])
    ping = subprocess.run(["ping", "-c1", "-W2", ip], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    pid = int(info["pid"])  # type: ignore[call-overload]
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/catatonit", b"-P"]
    for kind in ("net", "ipc", "uts", "pid"):
        assert ns(pid, kind) != ns("self", kind), kind
    netns = os.stat(str(info["netns"]))
    assert (netns.st_dev, netns.st_ino) == (os.stat(f"/proc/{pid}/ns/net").st_dev, os.stat(f"/proc/{pid}/ns/net").st_ino)
    pod_dir = Path(str(info["podDir"]))
    assert (pod_dir / "hostname").read_text() == "web-host\n"
    assert (pod_dir / "resolv.conf").read_text() == "nameserver 10.96.0.10\nsearch test.svc.cluster.local\noptions ndots:5\n"
    assert f"{ip}\tweb-host" in (pod_dir / "hosts").read_text()
    assert any(line.split()[4] == str(pod_dir / "shm") for line in Path("/proc/self/mountinfo").read_text().splitlines())
    uts = subprocess.run(["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True)
    assert uts.stdout.strip() == "web-host"

    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    st, _ = status(client, pod_id)
    assert st.state == api.SANDBOX_NOTREADY
    assert st.network.ip == ""
    assert not Path(f"/proc/{pid}").exists()
    assert not Path(str(info["netns"])).exists()
    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))  # again: fine

    client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))  # again: fine
    pods.remove(pod_id)
    assert not pod_dir.exists()
    with pytest.raises(NotFoundError):
        client.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id))


def test_unknown_ids_are_fine_to_stop_and_remove(client: Client) -> None:
    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id="f" * 64))
    client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id="f" * 64))


def test_list_filters_and_prefixes(client: Client, pods: list[str]) -> None:
    a = run(client, pods, pod_config("alpha"))
    b = run(client, pods, pod_config("beta"))
    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=b))

    def listed(f: api.PodSandboxFilter | None = None) -> set[str]:
        request = api.ListPodSandboxRequest(filter=f) if f is not None else api.ListPodSandboxRequest()
        return {p.id for p in client.list_pod_sandbox(request).items}

    assert listed() == {a, b}
    assert listed(api.PodSandboxFilter(id=a[:12])) == {a}
    assert listed(api.PodSandboxFilter(state=api.PodSandboxStateValue(state=api.SANDBOX_READY))) == {a}
    assert listed(api.PodSandboxFilter(state=api.PodSandboxStateValue(state=api.SANDBOX_NOTREADY))) == {b}
    assert listed(api.PodSandboxFilter(label_selector={"app": "beta"})) == {b}
    assert listed(api.PodSandboxFilter(label_selector={"tier": "test"})) == {a, b}
    assert listed(api.PodSandboxFilter(label_selector={"app": "gamma"})) == set()
    streamed = {p.id for page in client.stream_pod_sandboxes() for p in page.pod_sandboxes}
    assert streamed == {a, b}
    assert client.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=a[:10])).status.id == a


def test_host_network_pod(client: Client, pods: list[str]) -> None:
    options = api.NamespaceOption(network=api.NODE, pid=api.CONTAINER, ipc=api.POD)
    config = pod_config("hostnet")
    config.linux.security_context.namespace_options.CopyFrom(options)
    pod_id = run(client, pods, config)
    st, info = status(client, pod_id)
    assert st.network.ip == ""
    assert info["netns"] == ""
    assert st.linux.namespaces.options.network == api.NODE
    pid = int(info["pid"])  # type: ignore[call-overload]
    assert ns(pid, "net") == ns("self", "net")
    assert ns(pid, "uts") == ns("self", "uts")
    assert (Path(str(info["podDir"])) / "resolv.conf").read_text() == Path("/etc/resolv.conf").read_text()


def test_namespaced_sysctls(client: Client, pods: list[str]) -> None:
    config = pod_config("sysctl")
    config.linux.sysctls.update({"net.ipv4.ip_unprivileged_port_start": "1024", "kernel.shm_rmid_forced": "1"})
    pod_id = run(client, pods, config)
    _, info = status(client, pod_id)
    pid = info["pid"]
    ipc = subprocess.run(
        ["nsenter", "-t", str(pid), "-i", "cat", "/proc/sys/kernel/shm_rmid_forced"], capture_output=True, text=True
    )
    assert ipc.stdout.strip() == "1"
    got = subprocess.run(
        ["nsenter", "-t", str(pid), "-n", "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"], capture_output=True, text=True
    )
    assert got.stdout.strip() == "1024"


@pytest.mark.parametrize(
    ("sysctls", "message"),
    [
        ({"kernel.hostname": "x"}, "kernel.hostname: not a namespaced sysctl"),
        ({"vm.swappiness": "1"}, "vm.swappiness: not a namespaced sysctl"),
    ],
)
def test_bad_sysctls_are_refused(client: Client, daemon: DaemonProcess, sysctls: dict[str, str], message: str) -> None:
    config = pod_config("badsysctl")
    config.linux.sysctls.update(sysctls)
    with pytest.raises(InvalidArgumentError, match=message):
        client.run_pod_sandbox(api.RunPodSandboxRequest(config=config))
    assert list(client.list_pod_sandbox().items) == []
    assert daemon.leftovers() == []


def test_network_sysctl_needs_own_netns(client: Client) -> None:
    config = pod_config("hostsysctl")
    config.linux.security_context.namespace_options.network = api.NODE
    config.linux.sysctls["net.core.somaxconn"] = "1024"
    with pytest.raises(
        InvalidArgumentError, match=r"net\.core\.somaxconn: a network sysctl needs the pod's own network namespace"
    ):
        client.run_pod_sandbox(api.RunPodSandboxRequest(config=config))


def test_invalid_requests(client: Client, pods: list[str]) -> None:
    for field in ("name", "namespace", "uid"):
        config = pod_config("x")
        setattr(config.metadata, field, "")
        with pytest.raises(InvalidArgumentError, match=f"config.metadata.{field}: required"):
            client.run_pod_sandbox(api.RunPodSandboxRequest(config=config))
    with pytest.raises(InvalidArgumentError, match="runtime_handler: unknown handler 'kata'"):
        client.run_pod_sandbox(api.RunPodSandboxRequest(config=pod_config("x"), runtime_handler="kata"))
    run(client, pods, pod_config("dup"))
    with pytest.raises(AlreadyExistsError, match="pod sandbox name 'dup'"):
        client.run_pod_sandbox(api.RunPodSandboxRequest(config=pod_config("dup")))
    with pytest.raises(NotFoundError):
        client.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id="0" * 64))


def test_update_pod_sandbox_resources_is_recorded(client: Client, pods: list[str]) -> None:
    pod_id = run(client, pods, pod_config("resize"))
    resources = api.LinuxContainerResources(cpu_shares=512, memory_limit_in_bytes=256 << 20)
    client.update_pod_sandbox_resources(api.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod_id, resources=resources))
    _, info = status(client, pod_id)
    recorded = info["config"]["linux"]["resources"]  # type: ignore[index]
    assert recorded == {"cpu_shares": "512", "memory_limit_in_bytes": str(256 << 20)}
    with pytest.raises(NotFoundError):
        client.update_pod_sandbox_resources(api.UpdatePodSandboxResourcesRequest(pod_sandbox_id="0" * 64, resources=resources))


def test_crun_handler_runs_pods(client: Client, daemon: DaemonProcess, pods: list[str]) -> None:
    """crun is the second handler; on cgroup v1 hybrid hosts pycri runs it through its launcher."""
    pod_id = run(client, pods, pod_config("crunpod"), handler="crun")
    st, info = status(client, pod_id)
    assert st.state == api.SANDBOX_READY
    assert st.runtime_handler == "crun"
    pid = int(info["pid"])  # type: ignore[call-overload]
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/catatonit", b"-P"]
    ping = subprocess.run(["ping", "-c1", "-W2", st.network.ip], capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    assert not Path(f"/proc/{pid}").exists()
