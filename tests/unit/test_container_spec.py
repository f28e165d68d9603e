"""pycri.oci.container_spec: the container's config.json, built from a SpecInput without I/O."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.oci import capabilities, cdi, container_spec
from pycri.oci.container_spec import HostDevice, ResolvedUser, SandboxInfo, SpecInput, build, environment, process_args
from pycri.oci.spec import DEFAULT_CAPABILITIES, DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS
from pycri.oci.userns import IDMapping, UserNamespace

POD_DIR = "/var/lib/pycri/pods/sb1"
NETNS = "/var/run/netns/pycri-sb1"
CID = "c0ffee"
SC = "config.linux.security_context"


def pod_config(*, privileged: bool = False, hostname: str = "web-0") -> api.PodSandboxConfig:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="web-0", namespace="default", uid="uid-1", attempt=0),
        hostname=hostname,
    )
    config.linux.cgroup_parent = "/kubepods/burstable/pod-uid-1"
    config.linux.security_context.privileged = privileged
    return config


def sandbox(**changes: Any) -> SandboxInfo:
    info = SandboxInfo(
        id="sb1",
        infra_pid=4242,
        netns=NETNS,
        pod_dir=POD_DIR,
        host_network=False,
        host_ipc=False,
        host_pid=False,
        cgroup_parent="/kubepods/burstable/pod-uid-1",
        config=pod_config(),
    )
    return dataclasses.replace(info, **changes)


def container_config(**kwargs: Any) -> api.ContainerConfig:
    config = api.ContainerConfig(
        metadata=api.ContainerMetadata(name="app", attempt=1),
        image=api.ImageSpec(image="sha256:abc", user_specified_image="docker.io/library/nginx:1"),
        **kwargs,
    )
    return config


IMAGE = {"Env": ["PATH=/usr/bin:/bin", "LANG=C"], "Entrypoint": ["/entry"], "Cmd": ["serve"], "WorkingDir": "/srv"}


def make_input(config: api.ContainerConfig | None = None, **changes: Any) -> SpecInput:
    inp = SpecInput(
        container_id=CID,
        config=config if config is not None else container_config(),
        sandbox=sandbox(),
        image_config=dict(IMAGE),
        rootfs="/var/lib/pycri/containers/c0ffee/rootfs",
        user=ResolvedUser(uid=0, gid=0),
        seccomp=None,
        devices=[],
        privileged_devices=[],
        image_mounts={},
    )
    return dataclasses.replace(inp, **changes)


def spec_of(config: api.ContainerConfig | None = None, **changes: Any) -> dict[str, Any]:
    return build(make_input(config, **changes))


def mount_at(spec: dict[str, Any], destination: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in spec["mounts"] if m["destination"] == destination]
    assert len(found) == 1, found
    return found[0]


def namespaces(spec: dict[str, Any]) -> dict[str, str | None]:
    return {ns["type"]: ns.get("path") for ns in spec["linux"]["namespaces"]}


def invalid(config: api.ContainerConfig | None = None, **changes: Any) -> str:
    with pytest.raises(errors.InvalidArgument) as info:
        spec_of(config, **changes)
    return info.value.message


# -- process args ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "args", "image", "expected"),
    [
        ([], [], {"Entrypoint": ["/e"], "Cmd": ["c1", "c2"]}, ["/e", "c1", "c2"]),
        (["/cmd"], [], {"Entrypoint": ["/e"], "Cmd": ["c1"]}, ["/cmd"]),
        (["/cmd"], ["a1"], {"Entrypoint": ["/e"], "Cmd": ["c1"]}, ["/cmd", "a1"]),
        ([], ["a1", "a2"], {"Entrypoint": ["/e"], "Cmd": ["c1"]}, ["/e", "a1", "a2"]),
        ([], ["a1"], {"Cmd": ["c1"]}, ["a1"]),
        ([], [], {"Cmd": ["/bin/sh", "-c", "x"]}, ["/bin/sh", "-c", "x"]),
        ([], [], {"Entrypoint": ["/e"]}, ["/e"]),
        ([], [], {"Entrypoint": ["/e"], "Cmd": None}, ["/e"]),
        ([], [], {"Entrypoint": [""], "Cmd": ["c1"]}, ["c1"]),
        (["/cmd"], [], {}, ["/cmd"]),
        ([], ["a1"], {}, ["a1"]),
    ],
)
def test_process_args(command: list[str], args: list[str], image: dict[str, Any], expected: list[str]) -> None:
    config = container_config(command=command, args=args)
    assert process_args(config, image) == expected
    assert spec_of(config, image_config=image)["process"]["args"] == expected


@pytest.mark.parametrize("image", [{}, {"Entrypoint": None, "Cmd": None}, {"Entrypoint": [""]}, {"Entrypoint": [], "Cmd": []}])
def test_no_command_anywhere(image: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"config\.command: no command given and the image has none"):
        process_args(container_config(), image)


# -- environment ------------------------------------------------------------------------------------


def env(key: str, value: str) -> api.KeyValue:
    return api.KeyValue(key=key, value=value.encode())


def test_environment_merge_order_and_override() -> None:
    config = container_config(envs=[env("LANG", "en_US.UTF-8"), env("FOO", "1"), env("BAR", "a=b"), env("FOO", "2")])
    result = environment(config, {"Env": ["PATH=/img/bin", "LANG=C", "HOME=/root"]}, "web-0")
    assert result == ["PATH=/img/bin", "HOSTNAME=web-0", "LANG=en_US.UTF-8", "HOME=/root", "FOO=2", "BAR=a=b"]


def test_environment_defaults_and_tty() -> None:
    config = container_config(tty=True)
    assert environment(config, {}) == [container_spec.DEFAULT_PATH_ENV, "TERM=xterm"]
    assert environment(config, {"Env": ["TERM=vt100"]}, "h") == [container_spec.DEFAULT_PATH_ENV, "TERM=vt100", "HOSTNAME=h"]


def test_environment_image_can_unset_and_skips_junk() -> None:
    result = environment(container_config(), {"Env": ["PATH", "=x", "A=1"]}, "h")
    assert result == ["HOSTNAME=h", "A=1"]


def test_environment_request_overrides_hostname() -> None:
    result = environment(container_config(envs=[env("HOSTNAME", "mine")]), {}, "web-0")
    assert result == [container_spec.DEFAULT_PATH_ENV, "HOSTNAME=mine"]


def test_environment_non_utf8_value_survives() -> None:
    config = container_config(envs=[api.KeyValue(key="RAW", value=b"\xff\xfe")])
    assert environment(config, {})[-1] == "RAW=\udcff\udcfe"


@pytest.mark.parametrize("key", ["", "A=B"])
def test_environment_bad_key(key: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=r"config\.envs\[0\]\.key"):
        environment(container_config(envs=[env(key, "v")]), {})


def test_spec_env_uses_pod_hostname_or_node_hostname() -> None:
    assert "HOSTNAME=web-0" in spec_of()["process"]["env"]
    host = sandbox(host_network=True, config=pod_config(hostname=""))
    assert "HOSTNAME=node-1" in spec_of(sandbox=host, node_hostname="node-1")["process"]["env"]
    assert not any(e.startswith("HOSTNAME=") for e in spec_of(sandbox=host)["process"]["env"])


# -- process ------------------------------------------------------------------------------------------


def test_basic_spec_shape() -> None:
    spec = spec_of()
    assert spec["ociVersion"]
    process = spec["process"]
    assert process["args"] == ["/entry", "serve"]
    assert process["cwd"] == "/srv"
    assert process["terminal"] is False
    assert process["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert process["noNewPrivileges"] is False
    assert process["oomScoreAdj"] == 0
    assert process["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": container_spec.DEFAULT_NOFILE, "soft": container_spec.DEFAULT_NOFILE}
    ]
    assert "apparmorProfile" not in process
    assert spec["root"] == {"path": "/var/lib/pycri/containers/c0ffee/rootfs", "readonly": False}
    assert spec["hostname"] == "web-0"
    assert spec["linux"]["cgroupsPath"] == f"/kubepods/burstable/pod-uid-1/pycri-{CID}"
    assert "seccomp" not in spec["linux"]
    assert "sysctl" not in spec["linux"]
    assert "devices" not in spec["linux"]
    assert "rootfsPropagation" not in spec["linux"]


def test_cwd_sources() -> None:
    assert spec_of(container_config(working_dir="/work"))["process"]["cwd"] == "/work"
    assert spec_of(image_config={"Cmd": ["x"]})["process"]["cwd"] == "/"
    assert spec_of(image_config={"Cmd": ["x"], "WorkingDir": "app"})["process"]["cwd"] == "/app"
    assert "config.working_dir" in invalid(container_config(working_dir="rel"))


def test_terminal_and_rlimit() -> None:
    spec = spec_of(container_config(tty=True), nofile=1024)
    assert spec["process"]["terminal"] is True
    assert spec["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]


def test_user_and_additional_gids() -> None:
    user = ResolvedUser(uid=1000, gid=3000, additional_gids=[50000, 4000, 3000, 4000])
    spec = spec_of(user=user)
    assert spec["process"]["user"] == {"uid": 1000, "gid": 3000, "additionalGids": [3000, 4000, 50000]}


def test_user_out_of_range() -> None:
    assert "user id" in invalid(user=ResolvedUser(uid=-1, gid=0))
    assert "supplemental group" in invalid(user=ResolvedUser(uid=0, gid=0, additional_gids=[2**31]))


def test_capabilities_default_root_and_non_root() -> None:
    root = spec_of()["process"]["capabilities"]
    assert set(root["bounding"]) == set(DEFAULT_CAPABILITIES)
    assert set(root["effective"]) == set(DEFAULT_CAPABILITIES)
    non_root = spec_of(user=ResolvedUser(uid=1000, gid=1000))["process"]["capabilities"]
    assert set(non_root["bounding"]) == set(DEFAULT_CAPABILITIES)
    assert non_root["effective"] == []
    assert non_root == capabilities.resolve([], [], [], privileged=False, run_as_root=False, field="x")


def test_capabilities_add_drop() -> None:
    config = container_config()
    caps = config.linux.security_context.capabilities
    caps.add_capabilities.extend(["NET_ADMIN", "sys_time"])
    caps.drop_capabilities.extend(["CHOWN"])
    bounding = spec_of(config)["process"]["capabilities"]["bounding"]
    assert "CAP_NET_ADMIN" in bounding
    assert "CAP_SYS_TIME" in bounding
    assert "CAP_CHOWN" not in bounding


def test_capabilities_unknown_names_the_field() -> None:
    config = container_config()
    config.linux.security_context.capabilities.add_capabilities.append("NOT_A_CAP")
    assert f"{SC}.capabilities.add_capabilities" in invalid(config)


def test_no_new_privs() -> None:
    config = container_config()
    config.linux.security_context.no_new_privs = True
    assert spec_of(config)["process"]["noNewPrivileges"] is True


@pytest.mark.parametrize(
    ("wanted", "minimum", "expected"), [(-999, -1000, -999), (-999, -500, -500), (500, -500, 500), (1200, -1000, 1000)]
)
def test_oom_score_adj_clamped(wanted: int, minimum: int, expected: int) -> None:
    config = container_config()
    config.linux.resources.oom_score_adj = wanted
    assert spec_of(config, min_oom_score_adj=minimum)["process"]["oomScoreAdj"] == expected


def test_oom_score_adj_unset_is_zero_at_least_minimum() -> None:
    assert spec_of(min_oom_score_adj=100)["process"]["oomScoreAdj"] == 100


# -- AppArmor --------------------------------------------------------------------------------------------


def apparmor_config(kind: int | None = None, ref: str = "", legacy: str = "", privileged: bool = False) -> api.ContainerConfig:
    config = container_config()
    sc = config.linux.security_context
    if kind is not None:
        sc.apparmor.profile_type = kind  # type: ignore[assignment]
        sc.apparmor.localhost_ref = ref
    if legacy:
        sc.apparmor_profile = legacy
    sc.privileged = privileged
    return config


def test_apparmor_unavailable() -> None:
    assert "apparmorProfile" not in spec_of(apparmor_config())["process"]
    assert "apparmorProfile" not in spec_of(apparmor_config(api.SecurityProfile.Unconfined))["process"]
    assert "apparmorProfile" not in spec_of(apparmor_config(legacy="unconfined"))["process"]
    message = invalid(apparmor_config(api.SecurityProfile.RuntimeDefault))
    assert message.startswith(f"{SC}.apparmor:")
    assert "AppArmor is not available on this host" in message
    assert "not available" in invalid(apparmor_config(api.SecurityProfile.Localhost, "prof"))
    assert invalid(apparmor_config(legacy="runtime/default")).startswith(f"{SC}.apparmor_profile:")


def test_apparmor_available() -> None:
    def profile(config: api.ContainerConfig, default: str = "") -> str | None:
        spec = spec_of(config, apparmor_available=True, apparmor_default_profile=default)
        result: str | None = spec["process"].get("apparmorProfile")
        return result

    assert profile(apparmor_config(), "pycri-default") == "pycri-default"
    assert profile(apparmor_config()) is None
    assert profile(apparmor_config(api.SecurityProfile.Unconfined), "pycri-default") is None
    assert profile(apparmor_config(api.SecurityProfile.Localhost, "localhost/mine")) == "mine"
    assert profile(apparmor_config(legacy="localhost/other")) == "other"
    assert profile(apparmor_config(legacy="docker/default"), "d") == "d"
    privileged = apparmor_config(api.SecurityProfile.RuntimeDefault, privileged=True)
    privileged_input = make_input(privileged, sandbox=sandbox(config=pod_config(privileged=True)), apparmor_available=True)
    assert "apparmorProfile" not in build(dataclasses.replace(privileged_input, apparmor_default_profile="d"))["process"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (apparmor_config(api.SecurityProfile.Localhost, ""), "needs a localhost_ref"),
        (apparmor_config(api.SecurityProfile.RuntimeDefault, "x"), "localhost_ref is only for profile type Localhost"),
        (apparmor_config(legacy="bogus"), "invalid profile 'bogus'"),
    ],
)
def test_apparmor_errors(config: api.ContainerConfig, message: str) -> None:
    assert message in invalid(config, apparmor_available=True)


# -- namespaces ---------------------------------------------------------------------------------------------


def with_pid_mode(mode: int, target: str = "") -> api.ContainerConfig:
    config = container_config()
    options = config.linux.security_context.namespace_options
    options.pid = mode  # type: ignore[assignment]
    options.target_id = target
    return config


def test_namespaces_pod_defaults() -> None:
    assert namespaces(spec_of()) == {
        "pid": "/proc/4242/ns/pid",
        "network": NETNS,
        "ipc": "/proc/4242/ns/ipc",
        "uts": "/proc/4242/ns/uts",
        "mount": None,
        "cgroup": None,
    }
    order = [ns["type"] for ns in spec_of()["linux"]["namespaces"]]
    assert order == ["pid", "network", "ipc", "uts", "mount", "cgroup"]


def test_namespace_network_falls_back_to_infra() -> None:
    assert namespaces(spec_of(sandbox=sandbox(netns="")))["network"] == "/proc/4242/ns/net"


def test_namespaces_container_pid() -> None:
    assert namespaces(spec_of(with_pid_mode(api.CONTAINER)))["pid"] is None
    assert "pid" in namespaces(spec_of(with_pid_mode(api.CONTAINER)))


def test_namespaces_target_pid() -> None:
    ns = namespaces(spec_of(with_pid_mode(api.TARGET, "other"), target_pid=777))
    assert ns["pid"] == "/proc/777/ns/pid"
    message = invalid(with_pid_mode(api.TARGET, "other"))
    assert message.startswith(f"{SC}.namespace_options.target_id:")
    assert "'other'" in message


def test_namespaces_node_pid() -> None:
    host_pid = sandbox(host_pid=True)
    assert "pid" not in namespaces(spec_of(with_pid_mode(api.NODE), sandbox=host_pid))
    assert "pid" not in namespaces(spec_of(with_pid_mode(api.POD), sandbox=host_pid))
    # containerd joins the pod's PID namespace for NODE when the pod itself is not host-PID.
    assert namespaces(spec_of(with_pid_mode(api.NODE)))["pid"] == "/proc/4242/ns/pid"


def test_namespaces_host_network_and_ipc() -> None:
    spec = spec_of(sandbox=sandbox(host_network=True, host_ipc=True))
    ns = namespaces(spec)
    assert "network" not in ns
    assert "uts" not in ns
    assert "ipc" not in ns
    assert ns["pid"] == "/proc/4242/ns/pid"
    assert "hostname" not in spec
    only_net = namespaces(spec_of(sandbox=sandbox(host_network=True)))
    assert only_net["ipc"] == "/proc/4242/ns/ipc"


def test_no_hostname_without_pod_hostname() -> None:
    assert "hostname" not in spec_of(sandbox=sandbox(config=pod_config(hostname="")))


def test_cgroup_namespace_v2_only_and_not_privileged() -> None:
    assert "cgroup" not in namespaces(spec_of(cgroup_v2=False))
    config = container_config()
    config.linux.security_context.privileged = True
    assert "cgroup" not in namespaces(spec_of(config, sandbox=sandbox(config=pod_config(privileged=True))))


POD_USERNS = UserNamespace(IDMapping(0, 165536, 65536), IDMapping(0, 165536, 65536))
USERNS_PATH = f"{POD_DIR}/userns"


def userns_options(mode: api.NamespaceMode.ValueType, length: int = 65536, host: int = 165536) -> api.NamespaceOption:
    mapping = [api.IDMapping(container_id=0, host_id=host, length=length)]
    return api.NamespaceOption(userns_options=api.UserNamespace(mode=mode, uids=mapping, gids=mapping))


def in_userns_pod(config: api.ContainerConfig | None = None, **changes: Any) -> dict[str, Any]:
    return spec_of(config, sandbox=sandbox(userns=POD_USERNS, userns_path=USERNS_PATH), **changes)


def test_user_namespace_of_the_pod_is_joined() -> None:
    config = container_config()
    config.linux.security_context.namespace_options.CopyFrom(userns_options(api.POD))
    spec = in_userns_pod(config, user=ResolvedUser(uid=1000, gid=1000, additional_gids=[5]))
    assert namespaces(spec)["user"] == USERNS_PATH
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 165536, "size": 65536}]
    assert spec["linux"]["gidMappings"] == [{"containerID": 0, "hostID": 165536, "size": 65536}]
    assert spec["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000, 5]}
    # kubelet may leave the container's own options out: the pod's namespace is joined all the same
    assert namespaces(in_userns_pod())["user"] == USERNS_PATH


def test_user_namespace_ids_must_be_mapped() -> None:
    message = "not mapped in the pod's user namespace (0..65535)"
    with pytest.raises(errors.InvalidArgument, match=r"run_as_user \(uid 70000\): " + re.escape(message)):
        in_userns_pod(user=ResolvedUser(uid=70000, gid=0))
    with pytest.raises(errors.InvalidArgument, match=r"\(gid 65536\): " + re.escape(message)):
        in_userns_pod(user=ResolvedUser(uid=0, gid=0, additional_gids=[65536]))


@pytest.mark.parametrize(
    ("options", "pod_userns", "message"),
    [
        (userns_options(api.POD), False, "userns_options.mode: POD, but the pod sandbox has no user namespace of its own"),
        (
            api.NamespaceOption(userns_options=api.UserNamespace(mode=api.NODE)),
            True,
            "userns_options.mode: NODE, but the pod sandbox has its own",
        ),
        (userns_options(api.CONTAINER), True, "userns_options.mode: must be POD or NODE"),
        (userns_options(api.TARGET), False, "userns_options.mode: must be POD or NODE"),
        (userns_options(api.POD, length=100), True, "userns_options.uids: differ from the pod's (0 165536 65536)"),
        (userns_options(api.POD, host=1000), True, "userns_options.uids: differ from the pod's"),
    ],
)
def test_user_namespace_errors(options: api.NamespaceOption, pod_userns: bool, message: str) -> None:
    config = container_config()
    config.linux.security_context.namespace_options.CopyFrom(options)
    info = sandbox(userns=POD_USERNS, userns_path=USERNS_PATH) if pod_userns else sandbox()
    assert message in invalid(config, sandbox=info)


def test_user_namespace_node_is_fine() -> None:
    config = container_config()
    config.linux.security_context.namespace_options.userns_options.mode = api.NODE
    spec = spec_of(config)
    assert "user" not in namespaces(spec)
    assert "uidMappings" not in spec["linux"]


def test_user_namespace_bind_sources_are_the_id_mapped_clones() -> None:
    mapping = [api.IDMapping(container_id=0, host_id=165536, length=65536)]
    config = container_config(
        mounts=[host_mount("/data", "/srv/data"), host_mount("/logs", "/srv/logs", uidMappings=mapping, gidMappings=mapping)]
    )
    spec = in_userns_pod(config, bind_sources={0: "/c/binds/0", 1: "/c/binds/1"})
    assert mount_at(spec, "/data")["source"] == "/c/binds/0"
    assert mount_at(spec, "/logs")["source"] == "/c/binds/1"
    other = [api.IDMapping(container_id=0, host_id=1, length=65536)]
    bad = container_config(mounts=[host_mount("/data", "/srv/data", uidMappings=other)])
    with pytest.raises(errors.InvalidArgument, match=r"mounts\[0\].uidMappings: only the pod's own mapping"):
        in_userns_pod(bad)


def test_target_only_for_pid() -> None:
    config = container_config()
    config.linux.security_context.namespace_options.network = api.TARGET
    assert "TARGET is only valid for pid" in invalid(config)


def test_sandbox_without_infra() -> None:
    with pytest.raises(errors.FailedPrecondition):
        spec_of(sandbox=sandbox(infra_pid=0))


# -- mounts -----------------------------------------------------------------------------------------------------


def test_default_mounts() -> None:
    spec = spec_of()
    destinations = [m["destination"] for m in spec["mounts"]]
    for d in ("/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup", "/dev/shm"):
        assert d in destinations
    assert "ro" in mount_at(spec, "/sys")["options"]
    assert "ro" in mount_at(spec, "/sys/fs/cgroup")["options"]
    shm = mount_at(spec, "/dev/shm")
    assert shm["type"] == "bind"
    assert shm["source"] == f"{POD_DIR}/shm"
    for name in ("hostname", "hosts", "resolv.conf"):
        m = mount_at(spec, f"/etc/{name}")
        assert m == {
            "destination": f"/etc/{name}",
            "type": "bind",
            "source": f"{POD_DIR}/{name}",
            "options": ["rbind", "rprivate", "rw"],
        }


def test_host_ipc_uses_host_shm() -> None:
    assert mount_at(spec_of(sandbox=sandbox(host_ipc=True)), "/dev/shm")["source"] == "/dev/shm"


def test_readonly_rootfs_makes_pod_files_readonly() -> None:
    config = container_config()
    config.linux.security_context.readonly_rootfs = True
    spec = spec_of(config)
    assert spec["root"]["readonly"] is True
    for name in ("hostname", "hosts", "resolv.conf"):
        assert mount_at(spec, f"/etc/{name}")["options"][-1] == "ro"


def test_host_cgroup_options_only_without_cgroupns() -> None:
    assert "nsdelegate" not in mount_at(spec_of(host_cgroup_options=("nsdelegate",)), "/sys/fs/cgroup")["options"]
    spec = spec_of(cgroup_v2=False, host_cgroup_options=("nsdelegate", "memory_recursiveprot"))
    options = mount_at(spec, "/sys/fs/cgroup")["options"]
    assert options[-2:] == ["nsdelegate", "memory_recursiveprot"]


def host_mount(container_path: str, host_path: str, **kwargs: Any) -> api.Mount:
    return api.Mount(container_path=container_path, host_path=host_path, **kwargs)


def test_kubelet_mount_options_and_propagation() -> None:
    config = container_config(
        mounts=[
            host_mount("/data", "/srv/data"),
            host_mount("/cfg", "/srv/cfg", readonly=True, propagation=api.PROPAGATION_HOST_TO_CONTAINER),
            host_mount("/shared", "/srv/shared", propagation=api.PROPAGATION_BIDIRECTIONAL, mount_options=["nosuid"]),
        ]
    )
    spec = spec_of(config)
    assert mount_at(spec, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": "/srv/data",
        "options": ["rbind", "rprivate", "rw"],
    }
    assert mount_at(spec, "/cfg")["options"] == ["rbind", "rslave", "ro"]
    assert mount_at(spec, "/shared")["options"] == ["rbind", "rshared", "rw", "nosuid"]
    assert spec["linux"]["rootfsPropagation"] == "rshared"


@pytest.mark.parametrize(
    ("propagations", "expected"),
    [
        ([api.PROPAGATION_PRIVATE], None),
        ([api.PROPAGATION_HOST_TO_CONTAINER], "rslave"),
        ([api.PROPAGATION_BIDIRECTIONAL, api.PROPAGATION_HOST_TO_CONTAINER], "rshared"),
        ([api.PROPAGATION_HOST_TO_CONTAINER, api.PROPAGATION_BIDIRECTIONAL, api.PROPAGATION_PRIVATE], "rshared"),
    ],
)
def test_rootfs_propagation_upgrade(propagations: list[int], expected: str | None) -> None:
    mounts = [host_mount(f"/m{i}", f"/h{i}", propagation=p) for i, p in enumerate(propagations)]
    assert spec_of(container_config(mounts=mounts))["linux"].get("rootfsPropagation") == expected


def test_mounts_sorted_by_depth_stably() -> None:
    config = container_config(
        mounts=[
            host_mount("/a/b/c", "/h/abc"),
            host_mount("/z", "/h/z"),
            host_mount("/a/b", "/h/ab"),
            host_mount("/a", "/h/a"),
            host_mount("/y", "/h/y"),
        ]
    )
    spec = spec_of(config)
    binds = [m["destination"] for m in spec["mounts"] if m["type"] == "bind" and m["destination"] != "/dev/shm"]
    assert binds == ["/z", "/a", "/y", "/a/b", "/etc/hostname", "/etc/hosts", "/etc/resolv.conf", "/a/b/c"]
    # The standard mounts come first.
    assert spec["mounts"][0]["destination"] == "/proc"


def test_kubelet_mounts_override_defaults() -> None:
    config = container_config(
        mounts=[
            host_mount("/etc/hosts", "/var/lib/kubelet/pods/uid/etc-hosts"),
            host_mount("/dev/shm/", "/my/shm"),
            host_mount("/dev/termination-log", "/var/lib/kubelet/pods/uid/containers/app/1"),
        ]
    )
    spec = spec_of(config)
    assert mount_at(spec, "/etc/hosts")["source"] == "/var/lib/kubelet/pods/uid/etc-hosts"
    assert mount_at(spec, "/dev/shm")["source"] == "/my/shm"
    assert mount_at(spec, "/dev/termination-log")["options"] == ["rbind", "rprivate", "rw"]
    assert mount_at(spec, "/etc/resolv.conf")["source"] == f"{POD_DIR}/resolv.conf"


def test_kubelet_dev_mount_hides_all_default_dev_mounts() -> None:
    spec = spec_of(container_config(mounts=[host_mount("/dev", "/dev")]))
    destinations = [m["destination"] for m in spec["mounts"]]
    assert [d for d in destinations if d.startswith("/dev")] == ["/dev"]
    assert mount_at(spec, "/dev")["type"] == "bind"


def test_readonly_and_rro() -> None:
    config = container_config(mounts=[host_mount("/ro", "/h", readonly=True, recursive_read_only=True)])
    assert mount_at(spec_of(config, supports_rro=True), "/ro")["options"] == ["rbind", "rprivate", "rro"]


def test_rro_unsupported() -> None:
    config = container_config(mounts=[host_mount("/ok", "/h"), host_mount("/ro", "/h", readonly=True, recursive_read_only=True)])
    message = invalid(config)
    assert message.startswith("config.mounts[1].recursive_read_only:")
    assert "does not support recursive read-only mounts" in message


def test_rro_needs_readonly() -> None:
    config = container_config(mounts=[host_mount("/rw", "/h", recursive_read_only=True)])
    message = invalid(config, supports_rro=True)
    assert message.startswith("config.mounts[0].recursive_read_only:")
    assert "needs readonly" in message


def test_rro_needs_private_propagation() -> None:
    mount = host_mount("/ro", "/h", readonly=True, recursive_read_only=True, propagation=api.PROPAGATION_HOST_TO_CONTAINER)
    message = invalid(container_config(mounts=[mount]), supports_rro=True)
    assert message.startswith("config.mounts[0].recursive_read_only:")
    assert "private propagation" in message
    assert "PROPAGATION_HOST_TO_CONTAINER" in message


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (host_mount("", "/h"), "config.mounts[0].container_path: required"),
        (host_mount("rel", "/h"), "config.mounts[0].container_path: 'rel' must be absolute"),
        (host_mount("/", "/h"), "config.mounts[0].container_path: cannot mount over the root filesystem"),
        (host_mount("/c", ""), "config.mounts[0].host_path: required"),
        (host_mount("/c", "h"), "config.mounts[0].host_path: 'h' must be absolute"),
        (host_mount("/c", "/h", propagation=7), "config.mounts[0].propagation: unknown mode 7"),
        (host_mount("/c", "/h", mount_options=["a,b"]), "config.mounts[0].mount_options[0]"),
        (host_mount("/c", "/h", mount_options=[""]), "config.mounts[0].mount_options[0]"),
        (
            host_mount("/c", "/h", readonly=True, mount_options=["nodev", "rw"]),
            "config.mounts[0].mount_options[1]: 'rw' contradicts",
        ),
        (host_mount("/c", "/h", mount_options=["rshared"]), "config.mounts[0].mount_options[0]: 'rshared' contradicts"),
        (
            host_mount("/c", "/h", uidMappings=[api.IDMapping(host_id=1, container_id=0, length=1)]),
            "config.mounts[0].uidMappings: ID-mapped mounts need a pod with its own user namespace",
        ),
        (
            host_mount("/c", "/h", gidMappings=[api.IDMapping(host_id=1, container_id=0, length=1)]),
            "config.mounts[0].gidMappings: ID-mapped mounts need a pod with its own user namespace",
        ),
    ],
)
def test_mount_errors(mount: api.Mount, message: str) -> None:
    assert invalid(container_config(mounts=[mount])).startswith(message)


def test_mount_destination_cleaned_and_selinux_relabel_ignored() -> None:
    spec = spec_of(container_config(mounts=[host_mount("/x/../data//", "/h", selinux_relabel=True)]))
    assert mount_at(spec, "/data")["source"] == "/h"


def image_mount(container_path: str, sub: str = "", readonly: bool = True) -> api.Mount:
    return api.Mount(
        container_path=container_path,
        image=api.ImageSpec(image="docker.io/library/data:1"),
        readonly=readonly,
        image_sub_path=sub,
    )


def test_image_mounts() -> None:
    config = container_config(mounts=[image_mount("/models"), image_mount("/sub", "a/b")])
    spec = spec_of(config, image_mounts={0: "/var/lib/pycri/c/volumes/0", 1: "/var/lib/pycri/c/volumes/1/a/b"})
    assert mount_at(spec, "/models") == {
        "destination": "/models",
        "type": "bind",
        "source": "/var/lib/pycri/c/volumes/0",
        "options": ["rbind", "rprivate", "ro"],
    }
    assert mount_at(spec, "/sub")["source"] == "/var/lib/pycri/c/volumes/1/a/b"  # resolved by the caller


@pytest.mark.parametrize(
    ("mount", "message"),
    [
        (image_mount("/m", readonly=False), "config.mounts[0].readonly: an image volume is always read-only"),
        (image_mount("/m", "../etc"), "config.mounts[0].image_sub_path: '../etc' must be a relative path"),
        (image_mount("/m", "a/../../x"), "config.mounts[0].image_sub_path"),
        (image_mount("/m", "/abs"), "config.mounts[0].image_sub_path"),
        (image_mount("/m"), "config.mounts[0].image: image 'docker.io/library/data:1' is not mounted"),
    ],
)
def test_image_mount_errors(mount: api.Mount, message: str) -> None:
    mounted = {} if message.endswith("is not mounted") else {0: "/vol"}
    assert invalid(container_config(mounts=[mount]), image_mounts=mounted).startswith(message)


# -- resources ---------------------------------------------------------------------------------------------------


def test_resources() -> None:
    config = container_config()
    r = config.linux.resources
    r.cpu_shares, r.cpu_quota, r.cpu_period = 512, 50000, 100000
    r.cpuset_cpus, r.cpuset_mems = "0-1", "0"
    r.memory_limit_in_bytes = 256 * 2**20
    r.hugepage_limits.append(api.HugepageLimit(page_size="2MB", limit=2**21))
    r.unified["memory.high"] = "200M"
    resources = spec_of(config)["linux"]["resources"]
    assert resources["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert resources["memory"] == {"limit": 256 * 2**20, "swap": 256 * 2**20}
    assert resources["hugepageLimits"] == [{"pageSize": "2MB", "limit": 2**21}]
    assert resources["unified"] == {"memory.high": "200M"}


def test_resources_empty() -> None:
    resources = spec_of()["linux"]["resources"]
    assert set(resources) == {"devices"}


def test_memory_swap() -> None:
    config = container_config()
    config.linux.resources.memory_limit_in_bytes = 100
    config.linux.resources.memory_swap_limit_in_bytes = 300
    assert spec_of(config)["linux"]["resources"]["memory"] == {"limit": 100, "swap": 300}
    assert spec_of(config, swap_controller=False)["linux"]["resources"]["memory"] == {"limit": 100}
    config.linux.resources.memory_swap_limit_in_bytes = 0
    assert spec_of(config, swap_controller=False)["linux"]["resources"]["memory"] == {"limit": 100}


def test_quota_may_be_minus_one_and_hugetlb_skipped_without_controller() -> None:
    config = container_config()
    config.linux.resources.cpu_quota = -1
    config.linux.resources.hugepage_limits.append(api.HugepageLimit(page_size="1GB", limit=1))
    resources = spec_of(config, hugetlb_controller=False)["linux"]["resources"]
    assert resources["cpu"] == {"quota": -1}
    assert "hugepageLimits" not in resources


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("cpu_shares", -1, "config.linux.resources.cpu_shares: must not be negative"),
        ("cpu_period", -5, "config.linux.resources.cpu_period: must not be negative"),
        ("memory_limit_in_bytes", -1, "config.linux.resources.memory_limit_in_bytes: must not be negative"),
    ],
)
def test_resource_errors(name: str, value: int, message: str) -> None:
    config = container_config()
    setattr(config.linux.resources, name, value)
    assert invalid(config) == message


def test_hugepage_without_size() -> None:
    config = container_config()
    config.linux.resources.hugepage_limits.append(api.HugepageLimit(page_size="", limit=1))
    assert invalid(config) == "config.linux.resources.hugepage_limits[0].page_size: required"


def test_cgroups_path_default_parent() -> None:
    assert spec_of(sandbox=sandbox(cgroup_parent=""))["linux"]["cgroupsPath"] == f"/pycri/pycri-{CID}"
    assert spec_of(sandbox=sandbox(cgroup_parent="/kubepods/"))["linux"]["cgroupsPath"] == f"/kubepods/pycri-{CID}"


# -- devices ----------------------------------------------------------------------------------------------------------

NULL = HostDevice(path="/dev/null", type="c", major=1, minor=3, file_mode=0o666, uid=0, gid=0)
SDA = HostDevice(path="/dev/sda", type="b", major=8, minor=0, file_mode=0o660, uid=0, gid=6)
FIFO = HostDevice(path="/run/fifo", type="p", major=0, minor=0, file_mode=0o600, uid=0, gid=0)


def test_device_rules_default() -> None:
    rules = spec_of()["linux"]["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    assert rules[1:] == container_spec.ALLOWED_DEVICE_RULES
    assert {"allow": True, "type": "c", "major": 136, "access": "rwm"} in rules


def test_devices_added() -> None:
    spec = spec_of(devices=[(SDA, "/dev/xvda", "mr"), (FIFO, "/dev/fifo", "rw")])
    assert spec["linux"]["devices"] == [
        {"path": "/dev/xvda", "type": "b", "major": 8, "minor": 0, "fileMode": 0o660, "uid": 0, "gid": 6},
        {"path": "/dev/fifo", "type": "p", "major": 0, "minor": 0, "fileMode": 0o600, "uid": 0, "gid": 0},
    ]
    rules = spec["linux"]["resources"]["devices"]
    assert rules[-1] == {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "rm"}
    assert not any(r.get("type") == "p" for r in rules)


def test_device_errors() -> None:
    assert "may only contain r, w and m" in invalid(devices=[(SDA, "/dev/x", "rwx")])
    assert "must be absolute" in invalid(devices=[(SDA, "dev/x", "rw")])
    bad = dataclasses.replace(SDA, type="x")
    assert "unknown device type 'x'" in invalid(devices=[(bad, "/dev/x", "rw")])


def test_empty_permissions_mean_rwm() -> None:
    rules = spec_of(devices=[(SDA, "/dev/x", "")])["linux"]["resources"]["devices"]
    assert rules[-1]["access"] == "rwm"


def test_cdi_edits_are_applied_last() -> None:
    node = cdi.DeviceNode(path="/dev/gpu0", type="c", major=195, minor=0, file_mode=0o660, permissions="rw")
    edits = [cdi.Edits(env=("GPU=0",), device_nodes=(node,), mounts=({"destination": "/usr/lib/gpu", "source": "/opt/gpu"},))]
    spec = spec_of(container_config(CDI_devices=[api.CDIDevice(name="vendor.com/gpu=0")]), cdi=edits)
    assert "GPU=0" in spec["process"]["env"]
    assert {"path": "/dev/gpu0", "type": "c", "major": 195, "minor": 0, "fileMode": 0o660} in spec["linux"]["devices"]
    assert spec["linux"]["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rw"}
    assert mount_at(spec, "/usr/lib/gpu")["source"] == "/opt/gpu"


# -- privileged ---------------------------------------------------------------------------------------------------------


def privileged_input(**changes: Any) -> SpecInput:
    config = container_config()
    config.linux.security_context.privileged = True
    config.linux.security_context.no_new_privs = True
    config.linux.security_context.masked_paths.extend(DEFAULT_MASKED_PATHS)
    config.linux.security_context.readonly_paths.extend(DEFAULT_READONLY_PATHS)
    return make_input(config, sandbox=sandbox(config=pod_config(privileged=True)), **changes)


def test_privileged() -> None:
    spec = build(privileged_input(devices=[(SDA, "/dev/sda", "rw")], privileged_devices=[NULL, SDA], seccomp=None))
    caps = spec["process"]["capabilities"]
    held = [c for c in capabilities.ALL_CAPABILITIES if c in capabilities.current_bounding()]
    assert caps["bounding"] == held  # all this process holds: it cannot grant more
    assert caps["effective"] == held
    assert spec["process"]["noNewPrivileges"] is False
    assert spec["linux"]["maskedPaths"] == []
    assert spec["linux"]["readonlyPaths"] == []
    assert "ro" not in mount_at(spec, "/sys")["options"]
    assert "rw" in mount_at(spec, "/sys")["options"]
    assert "rw" in mount_at(spec, "/sys/fs/cgroup")["options"]
    assert spec["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert [d["path"] for d in spec["linux"]["devices"]] == ["/dev/sda", "/dev/null"]
    assert "cgroup" not in namespaces(spec)


def test_privileged_needs_privileged_pod() -> None:
    config = container_config()
    config.linux.security_context.privileged = True
    assert invalid(config) == f"{SC}.privileged: the pod sandbox is not privileged"


# -- masked / readonly paths, seccomp, annotations ---------------------------------------------------------------------------


def test_masked_and_readonly_paths_are_the_requests() -> None:
    config = container_config()
    config.linux.security_context.masked_paths.extend(DEFAULT_MASKED_PATHS)
    config.linux.security_context.readonly_paths.extend(["/proc/sys"])
    spec = spec_of(config)
    assert spec["linux"]["maskedPaths"] == DEFAULT_MASKED_PATHS
    assert spec["linux"]["readonlyPaths"] == ["/proc/sys"]


def test_masked_paths_empty_means_none() -> None:
    # containerd: kubelet sends the defaults; empty lists (procMount: Unmasked) mask nothing.
    spec = spec_of()
    assert spec["linux"]["maskedPaths"] == []
    assert spec["linux"]["readonlyPaths"] == []


def test_masked_path_must_be_absolute() -> None:
    config = container_config()
    config.linux.security_context.masked_paths.extend(["/ok", "rel"])
    assert invalid(config) == f"{SC}.masked_paths[1]: 'rel' must be absolute"
    config = container_config()
    config.linux.security_context.readonly_paths.append("x")
    assert invalid(config).startswith(f"{SC}.readonly_paths[0]")


def test_seccomp_passed_through() -> None:
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": []}
    assert spec_of(seccomp=profile)["linux"]["seccomp"] == profile


def test_annotations() -> None:
    config = container_config(annotations={"custom": "1", container_spec.SANDBOX_ID: "spoofed"})
    annotations = spec_of(config, log_path="/var/log/pods/x/app/1.log")["annotations"]
    assert annotations == {
        "custom": "1",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": "uid-1",
        "io.kubernetes.cri.sandbox-name": "web-0",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.image-name": "docker.io/library/nginx:1",
        "io.kubernetes.cri.container-type": "container",
        "io.pycri.container.log-path": "/var/log/pods/x/app/1.log",
    }


def test_image_name_falls_back_to_image() -> None:
    config = container_config()
    config.image.user_specified_image = ""
    assert spec_of(config)["annotations"]["io.kubernetes.cri.image-name"] == "sha256:abc"


def test_rootfs_must_be_absolute() -> None:
    assert "rootfs" in invalid(rootfs="rootfs")


def test_build_does_not_mutate_inputs() -> None:
    inp = make_input()
    image = dict(inp.image_config)
    first = build(inp)
    first["process"]["env"].append("X=1")
    first["mounts"].clear()
    assert inp.image_config == image
    second = build(inp)
    assert second["mounts"]
    assert "X=1" not in second["process"]["env"]
