"""pycri.server.validate: what Kubernetes sends passes; what could overflow, escape or crash is refused, naming the field."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.server import validate

MiB = 1 << 20


def kubelet_pod() -> api.PodSandboxConfig:
    """A pod at Kubernetes' own limits."""
    name = "p" * 253
    namespace = "n" * 63
    uid = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=3),
        hostname="h" * 63,
        log_directory=f"/var/log/pods/{namespace}_{name[:150]}_{uid}",
        labels={
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
            ("k" * 253) + "/" + ("l" * 63): "v" * 63,
        },
        annotations={"kubernetes.io/config.seen": "2024-01-01T00:00:00Z", "big": "a" * (256 * 1024 - 100)},
        dns_config=api.DNSConfig(
            servers=["10.96.0.10", "fd00::10"],
            searches=[f"{namespace}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
            options=["ndots:5", "edns0"],
        ),
        port_mappings=[api.PortMapping(protocol=api.UDP, container_port=53, host_port=5353, host_ip="0.0.0.0")],
    )
    config.linux.cgroup_parent = f"/kubepods/burstable/pod{uid}"
    config.linux.sysctls["net.ipv4.ip_unprivileged_port_start"] = "0"
    sc = config.linux.security_context
    sc.run_as_user.value = 4294967294
    sc.run_as_group.value = 0
    sc.supplemental_groups.extend([0, 1000, 4294967294])
    sc.seccomp.profile_type = api.SecurityProfile.RuntimeDefault
    config.linux.resources.cpu_period = 100000
    config.linux.resources.cpu_quota = -1
    config.linux.overhead.memory_limit_in_bytes = 128 * MiB
    return config


def kubelet_container() -> api.ContainerConfig:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="c" * 63, attempt=2),
        image=api.ImageSpec(image="sha256:" + "a" * 64, user_specified_image="registry.example:5000/team/app:v1.2.3"),
        command=["/bin/sh", "-c"],
        args=["x" * 100_000, "echo hi"],
        working_dir="/srv/app",
        envs=[
            api.KeyValue(key="KUBERNETES_SERVICE_HOST", value=b"10.96.0.1"),
            api.KeyValue(key="UTF8", value="h\u00e9".encode()),
        ],
        mounts=[
            api.Mount(
                container_path="/var/run/secrets/kubernetes.io/serviceaccount", host_path="/var/lib/kubelet/pods/x/volumes/"
            ),
            api.Mount(container_path="/data/../data", host_path="/mnt/data", propagation=api.PROPAGATION_HOST_TO_CONTAINER),
        ],
        devices=[api.Device(container_path="/dev/fuse", host_path="/dev/fuse", permissions="rwm")],
        labels={"io.kubernetes.container.name": "c" * 63},
        annotations={"io.kubernetes.container.hash": "1234abcd", "io.kubernetes.container.terminationMessagePath": "/dev/x"},
        log_path=f"{'c' * 63}/2.log",
        stop_signal=api.SIGNAL_SIGRTMAX,
    )
    r = config.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period = 2, 1000, 100000
    r.memory_limit_in_bytes, r.memory_swap_limit_in_bytes, r.oom_score_adj = 2**62, -1, -997
    r.cpuset_cpus, r.cpuset_mems = "0-3,7", "0"
    r.hugepage_limits.append(api.HugepageLimit(page_size="2MB", limit=2**40))
    r.unified["memory.high"] = "max"
    config.linux.security_context.capabilities.add_capabilities.append("NET_ADMIN")
    config.linux.security_context.masked_paths.append("/proc/kcore")
    return config


def test_kubernetes_limits_pass() -> None:
    validate.check(api.RunPodSandboxRequest(config=kubelet_pod(), runtime_handler="runc"))
    validate.check(api.CreateContainerRequest(pod_sandbox_id="a" * 64, config=kubelet_container(), sandbox_config=kubelet_pod()))
    validate.check(api.ExecSyncRequest(container_id="a" * 64, cmd=["sh", "-c", "x" * 100_000], timeout=0))
    validate.check(api.StopContainerRequest(container_id="abc", timeout=30))
    validate.check(api.ListContainersRequest(filter=api.ContainerFilter(label_selector={"io.kubernetes.pod.name": "p" * 253})))
    validate.check(api.PullImageRequest(image=api.ImageSpec(image="x"), auth=api.AuthConfig(registry_token="t" * 20000)))


Mutation = Callable[[api.CreateContainerRequest], None]


def _set(obj: object, name: str, value: object) -> None:
    setattr(obj, name, value)


REFUSED: list[tuple[Mutation, str]] = [
    (lambda r: _set(r.config.metadata, "name", "a\0"), "config.metadata.name: contains a NUL byte"),
    (lambda r: _set(r.config.metadata, "name", "a" * 254), "config.metadata.name: 254 bytes, at most 253"),
    (lambda r: _set(r.sandbox_config.metadata, "namespace", "a;IP=1.2.3.4"), "sandbox_config.metadata.namespace: 'a;IP"),
    (lambda r: _set(r.sandbox_config.linux, "cgroup_parent", "/a/../../b"), "sandbox_config.linux.cgroup_parent: '/a/../../b'"),
    (lambda r: _set(r.sandbox_config.linux, "cgroup_parent", "/" + "a" * 256), "sandbox_config.linux.cgroup_parent: a component"),
    (lambda r: _set(r.sandbox_config.linux, "cgroup_parent", "/a" * 600), "sandbox_config.linux.cgroup_parent: 1200 bytes"),
    (lambda r: _set(r.sandbox_config, "log_directory", "/var/log/pods/./x"), "sandbox_config.log_directory: '/var/log/pods/./x'"),
    (lambda r: _set(r.sandbox_config, "hostname", "a." * 127), "sandbox_config.hostname: 254 bytes, at most 253"),
    (lambda r: _set(r.sandbox_config, "hostname", "a" * 64), "sandbox_config.hostname: 'aaaa"),
    (lambda r: _set(r.sandbox_config, "hostname", "a b"), "sandbox_config.hostname: 'a b' is not a host name"),
    (lambda r: r.sandbox_config.dns_config.searches.append("a\nnameserver 1.1.1.1"), "sandbox_config.dns_config.searches[3]:"),
    (lambda r: r.sandbox_config.dns_config.options.extend(["ndots:1"] * 31), "sandbox_config.dns_config.options: 33 elements"),
    (lambda r: _set(r.config, "stop_signal", 99), "config.stop_signal: 99 is not a Signal value"),
    (lambda r: _set(r.config.mounts[0], "propagation", 7), "config.mounts[0].propagation: 7 is not a MountPropagation value"),
    (lambda r: _set(r.config, "log_path", "a/../../b.log"), "config.log_path: 'a/../../b.log' must not contain"),
    (lambda r: _set(r.config, "log_path", "/var/log/x.log"), "config.log_path: '/var/log/x.log' must be a relative path"),
    (lambda r: _set(r.config.mounts[0], "host_path", "/var/lib/../../etc"), "config.mounts[0].host_path:"),
    (lambda r: _set(r.config.mounts[0], "host_path", "etc"), "config.mounts[0].host_path: 'etc' must be an absolute path"),
    (lambda r: _set(r.config.devices[0], "host_path", "/dev/../etc/shadow"), "config.devices[0].host_path:"),
    (lambda r: _set(r.config.envs[1], "value", b"\xc3"), "config.envs[1].value: not valid UTF-8"),
    (lambda r: _set(r.config.envs[1], "key", "A=B"), "config.envs[1].key: 'A=B'"),
    (lambda r: r.config.args.append("x" * (128 * 1024)), "config.args[2]: 131072 bytes, at most 131071"),
    (lambda r: r.config.args.extend(["x" * 100_000] * 10), "config.args: 1100"),
    (lambda r: r.config.envs.extend([api.KeyValue(key="E", value=b"x" * 100_000)] * 10), "config: command, args and envs"),
    (lambda r: r.config.annotations.__setitem__("big", "a" * (512 * 1024)), "config.annotations: "),
    (lambda r: r.config.labels.__setitem__("k", "v" * 1025), "config.labels['k']: 1025 bytes, at most 1024"),
    (lambda r: _set(r.config.linux.resources, "oom_score_adj", -1001), "config.linux.resources.oom_score_adj: -1001 is outside"),
    (lambda r: _set(r.config.linux.resources, "cpu_shares", 1), "config.linux.resources.cpu_shares: 1 is outside 2..262144"),
    (lambda r: _set(r.config.linux.resources, "cpu_quota", 999), "config.linux.resources.cpu_quota: 999 is outside"),
    (lambda r: _set(r.config.linux.resources, "cpu_quota", 2**44), "config.linux.resources.cpu_quota:"),
    (lambda r: _set(r.config.linux.resources, "cpu_period", 999), "config.linux.resources.cpu_period: 999 is outside"),
    (lambda r: _set(r.config.linux.resources, "memory_limit_in_bytes", -1), "config.linux.resources.memory_limit_in_bytes"),
    (lambda r: _set(r.config.linux.resources, "memory_swap_limit_in_bytes", -2), "config.linux.resources.memory_swap_limit"),
    (lambda r: _set(r.config.linux.resources, "cpuset_cpus", "0;1"), "config.linux.resources.cpuset_cpus: '0;1'"),
    (lambda r: r.config.linux.resources.unified.__setitem__("../../x", "1"), "config.linux.resources.unified: key '../../x'"),
    (
        lambda r: _set(r.config.linux.resources.hugepage_limits[0], "page_size", "2MB\n"),
        "config.linux.resources.hugepage_limits[0]",
    ),
    (
        lambda r: _set(r.config.linux.security_context.run_as_user, "value", 2**32 - 1),
        "config.linux.security_context.run_as_user.value",
    ),
    (
        lambda r: _set(r.sandbox_config.linux.security_context.run_as_user, "value", -1),
        "sandbox_config.linux.security_context.run_as",
    ),
    (
        lambda r: r.config.linux.security_context.supplemental_groups.append(2**63 - 1),
        "config.linux.security_context.supplemental",
    ),
    (lambda r: _set(r, "pod_sandbox_id", "a" * 257), "pod_sandbox_id: 257 bytes, at most 256"),
]


@pytest.mark.parametrize(("mutate", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_refused(mutate: Mutation, message: str) -> None:
    request = api.CreateContainerRequest(pod_sandbox_id="a" * 64, config=kubelet_container(), sandbox_config=kubelet_pod())
    mutate(request)
    with pytest.raises(InvalidArgument) as refused:
        validate.check(request)
    assert refused.value.message.startswith(message), refused.value.message
    assert len(refused.value.message) < 400


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (api.ExecSyncRequest(container_id="c", cmd=["a"] * 8193), "cmd: 8193 arguments, at most 8192"),
        (api.ExecSyncRequest(container_id="c", cmd=["true"], timeout=2**31), "timeout: 2147483648 is outside 0..2147483647"),
        (api.StopContainerRequest(container_id="c", timeout=-1), "timeout: -1 is outside"),
        (api.PortForwardRequest(pod_sandbox_id="p", port=[0]), "port[0]: 0 is outside 1..65535"),
        (api.ListPodSandboxRequest(filter=api.PodSandboxFilter(id="\0")), "filter.id: contains a NUL byte"),
        (api.UpdateContainerResourcesRequest(container_id="c", annotations={"\0": ""}), "annotations: key '\\x00': contains"),
        (
            api.RunPodSandboxRequest(config=api.PodSandboxConfig(linux=api.LinuxPodSandboxConfig(sysctls={"a": "\0"}))),
            "config.linux",
        ),
    ],
)
def test_refused_elsewhere(request_: object, message: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate.check(request_)  # type: ignore[arg-type]
    assert refused.value.message.startswith(message), refused.value.message


def test_a_long_host_name_only_on_the_node_network() -> None:
    config = kubelet_pod()
    config.hostname = "node-1." + "a" * 60 + ".example.internal"
    with pytest.raises(InvalidArgument, match=r"^config.hostname: 84 bytes, at most 64 for a pod with its own network"):
        validate.check(api.RunPodSandboxRequest(config=config))
    config.linux.security_context.namespace_options.network = api.NODE
    validate.check(api.RunPodSandboxRequest(config=config))


def test_every_rule_names_a_field_of_the_api() -> None:
    """A typo in a table would silently check nothing."""
    messages = {m.name: m for m in api.DESCRIPTOR.message_types_by_name.values()}
    for table in (validate.STRINGS, validate.INTS, validate.REPEATED, validate.MAPS, validate.ARGV):
        for key in table:
            message, field, *rest = key.split(".")
            assert message in messages, key
            descriptor = messages[message].fields_by_name.get(field)
            assert descriptor is not None, key
            if rest:  # through a wrapper message
                assert descriptor.message_type is not None, key
                assert rest[0] in descriptor.message_type.fields_by_name, key
