"""Hostile requests on a real daemon: NUL bytes, 1 MiB strings, '..' paths, numbers out of range.

Each is INVALID_ARGUMENT naming the field, before anything is recorded, created or run; the
daemon then stops and starts again cleanly (a bad value once recorded would break its recovery
at every start), still serving the pod and container it had.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, InvalidArgumentError
from pycri.testing import DaemonProcess
from tests.integration.harness import SLEEP, wait_for

MiB = 1 << 20
BIG = "x" * MiB
INT64_MAX = 2**63 - 1


@dataclass
class Target:
    """A pod and a running container that the hostile requests aim at."""

    client: Client
    daemon: DaemonProcess
    tmp: Path
    pod_id: str
    pod_config: api.PodSandboxConfig
    cid: str
    image: str

    def pod_config_copy(self, name: str) -> api.PodSandboxConfig:
        config = api.PodSandboxConfig()
        config.CopyFrom(self.pod_config)
        config.metadata.name = name
        config.metadata.uid = f"uid-{name}"
        config.log_directory = str(self.tmp / "logs" / name)
        return config

    def container_config(self, name: str) -> api.ContainerConfig:
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name), image=api.ImageSpec(image=self.image), command=list(SLEEP)
        )


@pytest.fixture(scope="module")
def target(
    shared_daemon: DaemonProcess, image_refs: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    with Client(shared_daemon.socket, timeout=30) as client:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name="target", namespace="hostile", uid="uid-target"),
            hostname="target",
            log_directory=str(tmp / "logs" / "target"),
        )
        pod_id = client.run_pod_sandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
        t = Target(client, shared_daemon, tmp, pod_id, config, "", image_refs["plain"])
        t.cid = client.create_container(
            api.CreateContainerRequest(pod_sandbox_id=pod_id, config=t.container_config("main"), sandbox_config=config)
        ).container_id
        client.start_container(api.StartContainerRequest(container_id=t.cid))
        try:
            yield t
        finally:
            with Client(shared_daemon.socket, timeout=30) as again:  # the daemon may have restarted
                again.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
                again.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    assert shared_daemon.leftovers() == []


Build = Callable[[Target], tuple[str, object]]  # -> (client method, request)


def run_pod(mutate: Callable[[api.PodSandboxConfig, Target], None]) -> Build:
    def build(t: Target) -> tuple[str, object]:
        config = t.pod_config_copy("hostile-pod")
        mutate(config, t)
        return "run_pod_sandbox", api.RunPodSandboxRequest(config=config)

    return build


def create(mutate: Callable[[api.ContainerConfig, Target], None]) -> Build:
    def build(t: Target) -> tuple[str, object]:
        config = t.container_config("hostile")
        config.log_path = "hostile.log"
        mutate(config, t)
        return "create_container", api.CreateContainerRequest(pod_sandbox_id=t.pod_id, config=config, sandbox_config=t.pod_config)

    return build


def update(mutate: Callable[[api.LinuxContainerResources], None]) -> Build:
    def build(t: Target) -> tuple[str, object]:
        resources = api.LinuxContainerResources()
        mutate(resources)
        return "update_container_resources", api.UpdateContainerResourcesRequest(container_id=t.cid, linux=resources)

    return build


def plain(method: str, make: Callable[[Target], object]) -> Build:
    return lambda t: (method, make(t))


def _set(obj: object, name: str, value: object) -> None:
    setattr(obj, name, value)


CASES: list[tuple[str, Build, str]] = [
    # RunPodSandbox
    ("pod name NUL", run_pod(lambda c, t: _set(c.metadata, "name", "a\0b")), "config.metadata.name"),
    ("pod name 1 MiB", run_pod(lambda c, t: _set(c.metadata, "name", BIG)), "config.metadata.name"),
    ("pod namespace 1 MiB", run_pod(lambda c, t: _set(c.metadata, "namespace", BIG)), "config.metadata.namespace"),
    ("pod uid 1 MiB", run_pod(lambda c, t: _set(c.metadata, "uid", BIG)), "config.metadata.uid"),
    ("pod uid CNI_ARGS", run_pod(lambda c, t: _set(c.metadata, "uid", "u;IP=10.0.0.9")), "config.metadata.uid"),
    ("cgroup_parent NUL", run_pod(lambda c, t: _set(c.linux, "cgroup_parent", "/pycri\0x")), "config.linux.cgroup_parent"),
    ("cgroup_parent 1 MiB", run_pod(lambda c, t: _set(c.linux, "cgroup_parent", "/" + BIG)), "config.linux.cgroup_parent"),
    ("cgroup_parent ..", run_pod(lambda c, t: _set(c.linux, "cgroup_parent", "/pycri/../..")), "config.linux.cgroup_parent"),
    (
        "log_directory ..",
        run_pod(lambda c, t: _set(c, "log_directory", str(t.tmp / "logs" / ".." / ".." / "escaped-dir"))),
        "config.log_directory",
    ),
    ("log_directory relative", run_pod(lambda c, t: _set(c, "log_directory", "logs/relative")), "config.log_directory"),
    ("hostname newline", run_pod(lambda c, t: _set(c, "hostname", "a\n6.6.6.6 evil")), "config.hostname"),
    ("hostname 1 MiB", run_pod(lambda c, t: _set(c, "hostname", BIG)), "config.hostname"),
    (
        "pod run_as_user INT64_MAX",
        run_pod(lambda c, t: _set(c.linux.security_context.run_as_user, "value", INT64_MAX)),
        "config.linux.security_context.run_as_user.value",
    ),
    (
        "pod run_as_group negative",
        run_pod(lambda c, t: _set(c.linux.security_context.run_as_group, "value", -1)),
        "config.linux.security_context.run_as_group.value",
    ),
    ("pod label NUL", run_pod(lambda c, t: c.labels.__setitem__("k", "v\0")), "config.labels"),
    ("pod annotations 1 MiB", run_pod(lambda c, t: c.annotations.__setitem__("k", BIG)), "config.annotations"),
    (
        "dns server injection",
        run_pod(lambda c, t: c.dns_config.servers.append("1.1.1.1\nnameserver 6.6.6.6")),
        "config.dns_config.servers[0]",
    ),
    (
        "port out of range",
        run_pod(lambda c, t: c.port_mappings.append(api.PortMapping(container_port=70000))),
        "config.port_mappings[0].container_port",
    ),
    (
        "sysctl value NUL",
        run_pod(lambda c, t: c.linux.sysctls.__setitem__("kernel.shm_rmid_forced", "1\0")),
        "config.linux.sysctls",
    ),
    (
        "runtime_handler 1 MiB",
        lambda t: ("run_pod_sandbox", api.RunPodSandboxRequest(config=t.pod_config_copy("h"), runtime_handler=BIG)),
        "runtime_handler",
    ),
    # CreateContainer
    ("container name NUL", create(lambda c, t: _set(c.metadata, "name", "a\0b")), "config.metadata.name"),
    ("container name 1 MiB", create(lambda c, t: _set(c.metadata, "name", BIG)), "config.metadata.name"),
    ("stop_signal 99", create(lambda c, t: _set(c, "stop_signal", 99)), "config.stop_signal"),
    (
        "run_as_user INT64_MAX",
        create(lambda c, t: _set(c.linux.security_context.run_as_user, "value", INT64_MAX)),
        "config.linux.security_context.run_as_user.value",
    ),
    (
        "supplemental group 2^32",
        create(lambda c, t: c.linux.security_context.supplemental_groups.append(2**32)),
        "config.linux.security_context.supplemental_groups[0]",
    ),
    ("log_path ..", create(lambda c, t: _set(c, "log_path", "../../escaped.log")), "config.log_path"),
    ("log_path absolute", create(lambda c, t: _set(c, "log_path", str(t.tmp / "absolute.log"))), "config.log_path"),
    ("log_path NUL", create(lambda c, t: _set(c, "log_path", "a\0.log")), "config.log_path"),
    (
        "mount host_path ..",
        create(lambda c, t: c.mounts.append(api.Mount(container_path="/m", host_path=str(t.tmp / "a" / ".." / "made")))),
        "config.mounts[0].host_path",
    ),
    (
        "mount host_path relative",
        create(lambda c, t: c.mounts.append(api.Mount(container_path="/m", host_path="relative/made"))),
        "config.mounts[0].host_path",
    ),
    (
        "device host_path ..",
        create(lambda c, t: c.devices.append(api.Device(container_path="/dev/x", host_path="/dev/../etc/passwd"))),
        "config.devices[0].host_path",
    ),
    ("env NUL", create(lambda c, t: c.envs.append(api.KeyValue(key="A", value=b"a\0b"))), "config.envs[0].value"),
    ("env invalid UTF-8", create(lambda c, t: c.envs.append(api.KeyValue(key="A", value=b"\xff\xfe"))), "config.envs[0].value"),
    ("args 1 MiB", create(lambda c, t: c.args.append(BIG)), "config.args[0]"),
    ("command NUL", create(lambda c, t: c.command.__setitem__(0, "/bin/sl\0eep")), "config.command[0]"),
    ("image 1 MiB", create(lambda c, t: _set(c.image, "image", BIG)), "config.image.image"),
    ("annotation NUL", create(lambda c, t: c.annotations.__setitem__("a", "\0")), "config.annotations"),
    (
        "oom_score_adj 5000",
        create(lambda c, t: _set(c.linux.resources, "oom_score_adj", 5000)),
        "config.linux.resources.oom_score_adj",
    ),
    (
        "cpu_shares huge",
        create(lambda c, t: _set(c.linux.resources, "cpu_shares", INT64_MAX)),
        "config.linux.resources.cpu_shares",
    ),
    (
        "memory negative",
        create(lambda c, t: _set(c.linux.resources, "memory_limit_in_bytes", -2)),
        "config.linux.resources.memory_limit_in_bytes",
    ),
    ("unified ..", create(lambda c, t: c.linux.resources.unified.__setitem__("../x", "1")), "config.linux.resources.unified"),
    ("working_dir NUL", create(lambda c, t: _set(c, "working_dir", "/a\0")), "config.working_dir"),
    (
        "container uid 1 MiB in sandbox_config",
        lambda t: (
            "create_container",
            api.CreateContainerRequest(
                pod_sandbox_id=t.pod_id,
                config=t.container_config("x"),
                sandbox_config=api.PodSandboxConfig(metadata=api.PodSandboxMetadata(uid=BIG)),
            ),
        ),
        "sandbox_config.metadata.uid",
    ),
    # UpdateContainerResources, UpdatePodSandboxResources
    ("update oom_score_adj", update(lambda r: _set(r, "oom_score_adj", -5000)), "linux.oom_score_adj"),
    ("update cpu_quota", update(lambda r: _set(r, "cpu_quota", -7)), "linux.cpu_quota"),
    ("update cpu_period", update(lambda r: _set(r, "cpu_period", INT64_MAX)), "linux.cpu_period"),
    ("update unified NUL", update(lambda r: r.unified.__setitem__("memory.high", "1\0")), "linux.unified"),
    (
        "update pod resources",
        plain(
            "update_pod_sandbox_resources",
            lambda t: api.UpdatePodSandboxResourcesRequest(
                pod_sandbox_id=t.pod_id, resources=api.LinuxContainerResources(memory_limit_in_bytes=-1)
            ),
        ),
        "resources.memory_limit_in_bytes",
    ),
    # ExecSync, StopContainer, Exec, Attach, PortForward
    ("exec_sync cmd NUL", plain("exec_sync", lambda t: api.ExecSyncRequest(container_id=t.cid, cmd=["ec\0ho"])), "cmd[0]"),
    ("exec_sync cmd 1 MiB", plain("exec_sync", lambda t: api.ExecSyncRequest(container_id=t.cid, cmd=["echo", BIG])), "cmd[1]"),
    (
        "exec_sync timeout",
        plain("exec_sync", lambda t: api.ExecSyncRequest(container_id=t.cid, cmd=["true"], timeout=-1)),
        "timeout",
    ),
    ("exec_sync id NUL", plain("exec_sync", lambda t: api.ExecSyncRequest(container_id="\0", cmd=["true"])), "container_id"),
    (
        "stop timeout huge",
        plain("stop_container", lambda t: api.StopContainerRequest(container_id=t.cid, timeout=INT64_MAX)),
        "timeout",
    ),
    (
        "stop timeout negative",
        plain("stop_container", lambda t: api.StopContainerRequest(container_id=t.cid, timeout=-1)),
        "timeout",
    ),
    ("exec cmd NUL", plain("exec", lambda t: api.ExecRequest(container_id=t.cid, cmd=["a\0"], stdout=True)), "cmd[0]"),
    ("attach id 1 MiB", plain("attach", lambda t: api.AttachRequest(container_id=BIG, stdout=True)), "container_id"),
    (
        "port_forward port",
        plain("port_forward", lambda t: api.PortForwardRequest(pod_sandbox_id=t.pod_id, port=[70000])),
        "port[0]",
    ),
    # list filters
    (
        "list containers id NUL",
        plain("list_containers", lambda t: api.ListContainersRequest(filter=api.ContainerFilter(id="\0"))),
        "filter.id",
    ),
    (
        "list containers label 1 MiB",
        plain("list_containers", lambda t: api.ListContainersRequest(filter=api.ContainerFilter(label_selector={"k": BIG}))),
        "filter.label_selector",
    ),
    (
        "list pods label NUL",
        plain("list_pod_sandbox", lambda t: api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={"\0": "v"}))),
        "filter.label_selector",
    ),
    (
        "list pods state 99",
        plain(
            "list_pod_sandbox",
            lambda t: api.ListPodSandboxRequest(filter=api.PodSandboxFilter(state=api.PodSandboxStateValue(state=99))),  # type: ignore[arg-type]
        ),
        "filter.state.state",
    ),
]


@pytest.mark.parametrize(("build", "field"), [(b, f) for _, b, f in CASES], ids=[name for name, _, _ in CASES])
def test_hostile_request_is_invalid_argument(target: Target, build: Build, field: str) -> None:
    method, request = build(target)
    with pytest.raises(InvalidArgumentError) as caught:
        getattr(target.client, method)(request)
    assert caught.value.details.startswith(field), caught.value.details
    assert len(caught.value.details) < 1000  # the value is not echoed back whole


def test_nothing_was_recorded_and_the_daemon_restarts(target: Target) -> None:
    client = target.client
    assert [p.id for p in client.list_pod_sandbox(api.ListPodSandboxRequest()).items] == [target.pod_id]
    assert [c.id for c in client.list_containers(api.ListContainersRequest()).containers] == [target.cid]
    # Nothing was created outside where it belongs.
    for escaped in ("escaped.log", "absolute.log", "made", "escaped-dir"):
        assert not (target.tmp / escaped).exists(), escaped
    assert not (target.tmp / "logs" / "escaped.log").exists()
    assert not Path("relative").exists()
    assert "embedded null byte" not in target.daemon.log()

    target.daemon.stop()
    target.daemon.start()
    with Client(target.daemon.socket, timeout=30) as again:
        assert again.version().runtime_name == "pycri"
        assert [p.id for p in again.list_pod_sandbox(api.ListPodSandboxRequest()).items] == [target.pod_id]
        status = again.container_status(api.ContainerStatusRequest(container_id=target.cid)).status
        assert status.state == api.CONTAINER_RUNNING
        wait_for(
            "an exec after the restart",
            lambda: again.exec_sync(api.ExecSyncRequest(container_id=target.cid, cmd=["true"], timeout=10)).exit_code == 0,
        )
