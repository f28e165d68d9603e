"""pycri's pods and containers as NRI messages, and NRI's resources and hooks as OCI's."""

from __future__ import annotations

import pytest

from pycri import config as config_mod
from pycri.api import api_pb2 as api
from pycri.nri import api_pb2 as nri
from pycri.nri import convert

SPEC = {
    "process": {
        "args": ["/bin/sleep", "1d"],
        "env": ["PATH=/bin", "A=b"],
        "user": {"uid": 1000, "gid": 100, "additionalGids": [5, 6]},
        "oomScoreAdj": 500,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 512}],
    },
    "mounts": [{"destination": "/etc/hosts", "type": "bind", "source": "/run/x/hosts", "options": ["rbind", "ro"]}],
    "hooks": {"prestart": [{"path": "/bin/true", "args": ["true"], "timeout": 5}]},
    "annotations": {"io.kubernetes.cri.container-type": "container", "a": "1"},
    "linux": {
        "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
        "cgroupsPath": "/pycri/pod/ctr",
        "resources": {
            "memory": {"limit": 1 << 30, "swap": 2 << 30},
            "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1"},
            "pids": {"limit": 100},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "devices": [{"allow": False, "access": "rwm"}, {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
        },
        "devices": [{"path": "/dev/x", "type": "c", "major": 1, "minor": 9, "fileMode": 0o666, "uid": 0, "gid": 0}],
    },
}


def test_container_message_carries_the_spec() -> None:
    config = api.ContainerConfig(metadata=api.ContainerMetadata(name="app"), labels={"l": "v"})
    ctr = convert.container(container_id="c1", sandbox_id="p1", config=config, state="running", spec=SPEC, pid=42)
    assert (ctr.id, ctr.pod_sandbox_id, ctr.name, ctr.state, ctr.pid) == ("c1", "p1", "app", nri.CONTAINER_RUNNING, 42)
    assert ctr.labels == {"l": "v"}
    assert ctr.annotations["a"] == "1"
    assert list(ctr.args) == ["/bin/sleep", "1d"]
    assert list(ctr.env) == ["PATH=/bin", "A=b"]
    assert ctr.mounts[0].destination == "/etc/hosts"
    assert list(ctr.mounts[0].options) == ["rbind", "ro"]
    assert ctr.hooks.prestart[0].path == "/bin/true"
    assert ctr.hooks.prestart[0].timeout.value == 5
    assert [(n.type, n.path) for n in ctr.linux.namespaces] == [("pid", ""), ("network", "/run/netns/x")]
    assert ctr.linux.cgroups_path == "/pycri/pod/ctr"
    assert ctr.linux.oom_score_adj.value == 500
    assert ctr.linux.resources.memory.limit.value == 1 << 30
    assert ctr.linux.resources.cpu.shares.value == 512
    assert ctr.linux.resources.cpu.cpus == "0-1"
    assert ctr.linux.resources.pids.limit == 100
    assert ctr.linux.devices[0].file_mode.value == 0o666
    assert (ctr.rlimits[0].type, ctr.rlimits[0].hard, ctr.rlimits[0].soft) == ("RLIMIT_NOFILE", 1024, 512)
    assert (ctr.user.uid, ctr.user.gid, list(ctr.user.additional_gids)) == (1000, 100, [5, 6])


def test_resources_round_trip_through_nri() -> None:
    resources = SPEC["linux"]["resources"]  # type: ignore[index]
    assert convert.resources_to_oci(convert.resources_from_oci(resources)) == resources


def test_hooks_round_trip_through_nri() -> None:
    message = convert.container(container_id="c", sandbox_id="p", config=api.ContainerConfig(), state="created", spec=SPEC).hooks
    assert convert.hooks_to_oci(message) == SPEC["hooks"]


def test_pod_message() -> None:
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="n", namespace="ns", uid="u"), labels={"a": "b"}, annotations={"c": "d"}
    )
    config.linux.cgroup_parent = "/kubepods"
    config.linux.resources.memory_limit_in_bytes = 1 << 20
    pod = convert.pod_sandbox(
        sandbox_id="p",
        config=config,
        runtime_handler="runc",
        cgroups_path="/kubepods/pycri-p",
        netns="/run/netns/x",
        pid=7,
        ips=["10.0.0.2"],
    )
    assert (pod.id, pod.name, pod.namespace, pod.uid, pod.pid, list(pod.ips)) == ("p", "n", "ns", "u", 7, ["10.0.0.2"])
    assert pod.labels == {"a": "b"}
    assert pod.annotations == {"c": "d"}
    assert pod.linux.cgroup_parent == "/kubepods"
    assert pod.linux.cgroups_path == "/kubepods/pycri-p"
    assert ("network", "/run/netns/x") in [(n.type, n.path) for n in pod.linux.namespaces]
    assert pod.linux.pod_resources.memory.limit.value == 1 << 20


def test_nri_config_defaults_are_containerd_s() -> None:
    cfg = config_mod.Config().nri
    assert (cfg.enable, cfg.socket, cfg.plugin_path, cfg.plugin_config_path) == (
        False,
        "/var/run/nri/nri.sock",
        "/opt/nri/plugins",
        "/etc/nri/conf.d",
    )
    assert config_mod.parse_duration(cfg.plugin_registration_timeout) == 5
    assert config_mod.parse_duration(cfg.plugin_request_timeout) == 2


@pytest.mark.parametrize(
    ("nri_keys", "message"),
    [
        ({"socket": "nri.sock"}, "nri.socket: must be an absolute path"),
        ({"plugin_request_timeout": "2"}, "nri.plugin_request_timeout: '2' is not a duration"),
        ({"plugin_registration_timeout": "0s"}, "nri.plugin_registration_timeout: must be more than 0"),
        ({"enable": "yes"}, "nri.enable: expected a boolean"),
        ({"bogus": 1}, "nri.bogus: unknown key"),
    ],
)
def test_nri_config_is_validated(nri_keys: dict[str, object], message: str) -> None:
    with pytest.raises(config_mod.ConfigError, match=message):
        config_mod.from_dict({"nri": nri_keys})


def test_durations() -> None:
    assert config_mod.parse_duration("1m30s") == 90
    assert config_mod.parse_duration("250ms") == 0.25
    with pytest.raises(ValueError, match="not a duration"):
        config_mod.parse_duration("5 s")
