"""ContainerStats, ListContainerStats and StreamContainerStats on the real daemon, with runc and crun."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, InvalidArgumentError, NotFoundError
from pycri.testing import DaemonProcess
from tests.support import busybox
from tests.support.busybox import push_busybox
from tests.support.registry import LocalRegistry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]

MiB = 1 << 20
# Holds ~4 MB in a shell variable, then burns CPU until killed.
BURN = ("/bin/sh", "-c", "x=$(head -c 4000000 /dev/zero | tr '\\0' a); echo ready; while :; do :; done")
SLEEP = ("/bin/sleep", "1000")


@pytest.fixture(scope="module")
def image_ref() -> Iterator[str]:
    with LocalRegistry() as registry:
        yield push_busybox(registry, "stats")


@pytest.fixture(scope="module")
def daemon(image_ref: str) -> Iterator[DaemonProcess]:
    with DaemonProcess.temporary() as proc, Client(proc.socket, timeout=60) as client:
        client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=image_ref)))
        yield proc


@pytest.fixture
def client(daemon: DaemonProcess) -> Iterator[Client]:
    with Client(daemon.socket, timeout=30) as c:
        yield c
    assert daemon.proc is not None
    assert daemon.proc.poll() is None, f"daemon died:\n{daemon.log()}"


class Pods:
    def __init__(self, client: Client, image_ref: str, tmp: str) -> None:
        self.client = client
        self.image_ref = image_ref
        self.tmp = tmp
        self.ids: list[str] = []

    def pod(self, name: str, handler: str) -> tuple[str, api.PodSandboxConfig]:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="stats", uid=f"uid-{name}-{handler}"),
            log_directory=f"{self.tmp}/logs/{name}",
        )
        pod_id = self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
        self.ids.append(pod_id)
        return pod_id, config

    def container(
        self,
        pod: tuple[str, api.PodSandboxConfig],
        name: str,
        command: tuple[str, ...] = SLEEP,
        *,
        labels: dict[str, str] | None = None,
        start: bool = True,
    ) -> str:
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=self.image_ref),
            command=list(command),
            labels=labels or {},
            annotations={"note": name},
            log_path=f"{name}.log",
        )
        request = api.CreateContainerRequest(pod_sandbox_id=pod[0], config=config, sandbox_config=pod[1])
        cid = self.client.create_container(request).container_id
        if start:
            self.client.start_container(api.StartContainerRequest(container_id=cid))
        return cid

    def cleanup(self) -> None:
        for pod_id in self.ids:
            self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


@pytest.fixture
def pods(client: Client, image_ref: str, tmp_path: object) -> Iterator[Pods]:
    p = Pods(client, image_ref, str(tmp_path))
    try:
        yield p
    finally:
        p.cleanup()


def stats(client: Client, cid: str) -> api.ContainerStats:
    return client.container_stats(api.ContainerStatsRequest(container_id=cid)).stats


def listed(client: Client, **filt: object) -> set[str]:
    request = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(**filt))  # type: ignore[arg-type]
    return {s.attributes.id for s in client.list_container_stats(request).stats}


def wait_cpu(client: Client, cid: str, above: int, timeout: float = 10.0) -> api.ContainerStats:
    deadline = time.monotonic() + timeout
    while True:
        s = stats(client, cid)
        if s.cpu.usage_core_nano_seconds.value > above:
            return s
        if time.monotonic() > deadline:
            pytest.fail(f"CPU usage of {cid[:12]} stayed at {s.cpu.usage_core_nano_seconds.value} (wanted > {above})")
        time.sleep(0.1)


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_running_container_stats(client: Client, pods: Pods, handler: str) -> None:
    pod = pods.pod(f"burn-{handler}", handler)
    cid = pods.container(pod, "burn", BURN, labels={"app": "burn"})

    first = wait_cpu(client, cid, 0)
    assert first.attributes.id == cid
    assert first.attributes.metadata.name == "burn"
    assert dict(first.attributes.labels) == {"app": "burn"}
    assert dict(first.attributes.annotations) == {"note": "burn"}
    assert first.cpu.timestamp > 0
    assert first.memory.timestamp > 0
    assert first.memory.HasField("usage_bytes")
    assert first.memory.working_set_bytes.value > 0
    assert first.memory.HasField("page_faults")
    assert not first.memory.HasField("available_bytes")  # no memory limit
    assert first.writable_layer.fs_id.mountpoint.endswith(f"/{cid}/upper")

    time.sleep(0.3)
    second = wait_cpu(client, cid, first.cpu.usage_core_nano_seconds.value)
    assert second.cpu.timestamp > first.cpu.timestamp
    assert second.cpu.usage_nano_cores.value > 0  # from the previous sample

    before = second.writable_layer.used_bytes.value
    result = client.exec_sync(
        api.ExecSyncRequest(container_id=cid, cmd=["/bin/sh", "-c", "head -c 1048576 /dev/urandom > /big"], timeout=10)
    )
    assert result.exit_code == 0, result.stderr
    after = stats(client, cid).writable_layer
    assert after.used_bytes.value >= before + MiB
    assert after.inodes_used.value >= 1


def test_list_filters_created_and_errors(client: Client, pods: Pods) -> None:
    pod_a = pods.pod("list-a", "runc")
    pod_b = pods.pod("list-b", "crun")
    a1 = pods.container(pod_a, "a1", labels={"tier": "front"})
    a2 = pods.container(pod_a, "a2", labels={"tier": "back"}, start=False)
    b1 = pods.container(pod_b, "b1", labels={"tier": "front"}, start=False)
    created = [pods.container(pod_b, f"c{i}", start=False) for i in range(3)]

    everything = {s.attributes.id for s in client.list_container_stats(api.ListContainerStatsRequest()).stats}
    assert {a1, a2, b1, *created} <= everything
    assert listed(client, id=a1) == {a1}
    assert listed(client, id=a2[:12]) == {a2}
    assert listed(client, pod_sandbox_id=pod_a[0]) == {a1, a2}
    assert listed(client, pod_sandbox_id=pod_b[0][:10]) == {b1, *created}
    assert listed(client, label_selector={"tier": "front"}) >= {a1, b1}
    assert a2 not in listed(client, label_selector={"tier": "front"})
    assert listed(client, pod_sandbox_id=pod_a[0], label_selector={"tier": "front"}) == {a1}
    assert listed(client, id="0000000000") == set()

    # A created container: an entry with timestamps, no CPU/memory usage.
    s = stats(client, created[0])
    assert s.attributes.metadata.name == "c0"
    assert s.cpu.timestamp > 0
    assert s.memory.timestamp > 0
    assert not s.cpu.HasField("usage_nano_cores")
    assert s.writable_layer.fs_id.mountpoint.endswith(f"/{created[0]}/upper")

    streamed = [
        s.attributes.id for r in client.stream_container_stats(api.StreamContainerStatsRequest()) for s in r.container_stats
    ]
    assert {a1, a2, b1, *created} <= set(streamed)

    with pytest.raises(NotFoundError):
        stats(client, "f" * 64)
    with pytest.raises(InvalidArgumentError) as failed:
        stats(client, "")
    assert failed.value.details == "container_id: required"
