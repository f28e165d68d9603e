from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pycri.config import Config
from pycri.host import cgroups, checks
from pycri.network import cni

V1 = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup /sys/fs/cgroup/pids cgroup rw,nosuid,pids 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,cpuset 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,relatime,name=systemd 0 0
"""
HYBRID = V1 + "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"
V2 = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n"


@pytest.mark.parametrize(
    ("text", "layout", "unified"),
    [
        (V1, cgroups.Layout.V1, None),
        (HYBRID, cgroups.Layout.HYBRID, "/sys/fs/cgroup/unified"),
        (V2, cgroups.Layout.V2, "/sys/fs/cgroup"),
        ("", cgroups.Layout.NONE, None),
    ],
)
def test_cgroup_layouts(text: str, layout: cgroups.Layout, unified: str | None) -> None:
    found = cgroups.parse_mounts(text)
    assert found.layout is layout
    assert found.unified == unified
    if layout in (cgroups.Layout.V1, cgroups.Layout.HYBRID):
        assert found.v1["memory"] == "/sys/fs/cgroup/memory"
        assert found.v1["systemd"] == "/sys/fs/cgroup/systemd"


def test_cgroup_check_on_each_layout(tmp_path: Path) -> None:
    for text, severity in (
        (V1, checks.Severity.OK),
        (HYBRID, checks.Severity.OK),
        (V2, checks.Severity.OK),
        ("", checks.Severity.FATAL),
    ):
        mounts = tmp_path / "mounts"
        mounts.write_text(text)
        assert checks.check_cgroups(mounts).severity is severity
    mounts.write_text("cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n")
    missing = checks.check_cgroups(mounts)
    assert missing.severity is checks.Severity.ERROR
    assert "missing cpuset, memory, pids" in missing.detail


def test_binary_check_and_fix(tmp_path: Path) -> None:
    result = checks.check_binary("runtime runc", str(tmp_path / "runc"), "apt-get install runc")
    assert result.severity is checks.Severity.ERROR
    assert "not found" in result.detail
    assert result.fix == "apt-get install runc"
    exe = tmp_path / "runc"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert checks.check_binary("runtime runc", str(exe), "").ok


def test_unwritable_dir_is_fatal(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = checks.check_writable_dir("root_dir", str(blocker / "sub"))
    assert result.severity is checks.Severity.FATAL


def test_capability_reading(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")
    assert not checks.has_capability(checks.CAP_SYS_RESOURCE, status)
    status.write_text("CapEff:\t000001ffffffffff\n")
    assert checks.has_capability(checks.CAP_SYS_RESOURCE, status)


def test_run_all_reports_every_prerequisite(tmp_path: Path) -> None:
    cfg = Config(root_dir=str(tmp_path / "r"), state_dir=str(tmp_path / "s"), socket=str(tmp_path / "s" / "p.sock"))
    names = [c.name for c in checks.run_all(cfg)]
    for expected in (
        "kernel namespaces",
        "overlayfs",
        "cgroups",
        "runtime runc",
        "runtime crun",
        "conmon",
        "infra process",
        "CNI plugins",
    ):
        assert expected in names


def _plugin_dir(tmp_path: Path, *names: str) -> str:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in names:
        (bindir / name).write_text("#!/bin/sh\n")
        os.chmod(bindir / name, 0o755)
    return str(bindir)


def test_cni_conflist_and_conf(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / "10-a.conflist").write_text(
        json.dumps({"cniVersion": "1.0.0", "name": "a", "plugins": [{"type": "bridge"}, {"type": "portmap"}]})
    )
    (conf / "20-b.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "b", "type": "ptp"}))
    (conf / "README").write_text("ignored")
    networks, errors = cni.load_networks(conf)
    assert errors == []
    assert [(n.name, n.plugin_types) for n in networks] == [("a", ["bridge", "portmap"]), ("b", ["ptp"])]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.conflist", "{", "invalid JSON"),
        ("x.conflist", "[]", "expected a JSON object"),
        ("x.conflist", '{"name": "x", "plugins": []}', "'plugins' must be a non-empty list"),
        ("x.conf", '{"name": "x"}', "plugins\\[0\\] has no 'type'"),
        ("x.conflist", '{"plugins": [{"type": "bridge"}]}', "missing 'name'"),
    ],
)
def test_cni_invalid_configs(tmp_path: Path, name: str, content: str, message: str) -> None:
    conf = tmp_path / "net.d"
    conf.mkdir()
    (conf / name).write_text(content)
    networks, errors = cni.load_networks(conf)
    assert networks == []
    assert len(errors) == 1
    assert name in errors[0]
    assert re.search(message, errors[0])


def test_cni_readiness(tmp_path: Path) -> None:
    conf = tmp_path / "net.d"
    ready, message = cni.readiness(conf, [])
    assert not ready
    assert "does not exist" in message
    conf.mkdir()
    ready, message = cni.readiness(conf, [])
    assert not ready
    assert "no network configuration" in message
    (conf / "10-a.conflist").write_text(json.dumps({"name": "a", "plugins": [{"type": "bridge"}, {"type": "portmap"}]}))
    ready, message = cni.readiness(conf, [_plugin_dir(tmp_path, "bridge")])
    assert not ready
    assert "plugins not found" in message
    assert "portmap" in message
    ready, _ = cni.readiness(conf, [_plugin_dir(tmp_path, "bridge", "portmap")])
    assert ready


# -- the node's picture: cgroup driver, free space, CNI network, other runtimes -----------------------


def test_cgroup_driver_agrees_with_kubelet(tmp_path: Path) -> None:
    mounts, kubelet = tmp_path / "mounts", tmp_path / "config.yaml"
    mounts.write_text(V2)
    kubelet.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncgroupDriver: cgroupfs\n")
    found = checks.check_cgroup_driver(Config(), [kubelet], mounts, tmp_path / "no-systemd")
    assert found.ok
    assert found.detail == f"pycri uses cgroupfs on cgroup v2 (no systemd); kubelet ({kubelet}) agrees"


def test_cgroup_driver_mismatch_is_an_error_with_its_fix(tmp_path: Path) -> None:
    mounts, kubelet, systemd = tmp_path / "mounts", tmp_path / "config.yaml", tmp_path / "systemd"
    mounts.write_text(HYBRID)
    kubelet.write_text("kind: KubeletConfiguration\ncgroupDriver: systemd\n")
    systemd.mkdir()
    found = checks.check_cgroup_driver(Config(), [tmp_path / "absent.yaml", kubelet], mounts, systemd)
    assert found.severity is checks.Severity.ERROR
    assert found.detail == f"pycri uses cgroupfs on cgroup hybrid (systemd is PID 1); kubelet ({kubelet}) expects systemd"
    assert found.fix == f"set cgroupDriver: cgroupfs in {kubelet}, then restart kubelet"


def test_kubelet_without_cgroup_driver_means_cgroupfs(tmp_path: Path) -> None:
    kubelet = tmp_path / "config.yaml"
    kubelet.write_text("kind: KubeletConfiguration\n")
    assert checks.kubelet_cgroup_driver(kubelet) == "cgroupfs"
    kubelet.write_text("{not: [yaml")
    assert checks.kubelet_cgroup_driver(kubelet) is None
    assert checks.kubelet_cgroup_driver(tmp_path / "absent") is None


def test_no_kubelet_configuration_says_what_to_set(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(V1)
    found = checks.check_cgroup_driver(Config(), [tmp_path / "absent.yaml"], mounts, tmp_path / "no-systemd")
    assert found.ok
    assert "give kubelet cgroupDriver: cgroupfs" in found.detail


def test_free_space_reports_bytes_and_inodes(tmp_path: Path) -> None:
    found = checks.check_free_space(str(tmp_path / "not" / "yet" / "made"))  # the nearest existing parent is measured
    assert found.name == "free space"
    assert re.match(rf"{re.escape(str(tmp_path))}/not/yet/made: \d+\.\d GiB free \(\d+%\), ", found.detail)


def test_free_space_below_kubelets_eviction_threshold_warns(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    full = os.statvfs_result((4096, 4096, 1000, 10, 10, 1000, 900, 900, 0, 255))  # 1% space free
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    found = checks.check_free_space(str(tmp_path))
    assert found.severity is checks.Severity.WARN
    assert "0.0 GiB free (1%), 900 inodes free (90%)" in found.detail
    assert "kubelet evicts pods" in found.detail


def test_cni_network_names_the_network_plugins_and_subnet(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    conf_dir.mkdir()
    (conf_dir / "10-pycri.conflist").write_text(json.dumps(cni.default_network("pycri9", "10.77.0.0/16")))
    cfg = Config()
    cfg.cni.conf_dir = str(conf_dir)
    cfg.cni.bin_dirs = [str(tmp_path / "bin")]
    found = checks.check_cni_network(cfg)
    assert found.severity is checks.Severity.ERROR
    source = conf_dir / "10-pycri.conflist"
    assert found.detail.startswith(f"'pycri' from {source}: bridge → portmap → bandwidth; subnet 10.77.0.0/16")
    assert "plugins not found" in found.detail
    (tmp_path / "bin").mkdir()
    for plugin in ("bridge", "portmap", "bandwidth"):
        (tmp_path / "bin" / plugin).write_text("#!/bin/sh\n")
        (tmp_path / "bin" / plugin).chmod(0o755)
    assert checks.check_cni_network(cfg).ok


def test_no_cni_network_says_what_pycri_will_write(tmp_path: Path) -> None:
    cfg = Config()
    cfg.cni.conf_dir = str(tmp_path / "absent")
    found = checks.check_cni_network(cfg)
    assert found.ok
    assert "pycri writes 10-pycri.conflist at start (bridge pycri0, subnet 10.88.0.0/16)" in found.detail


def test_another_runtime_serving_is_a_warning(tmp_path: Path) -> None:
    import socket

    live, stale = tmp_path / "containerd.sock", tmp_path / "crio.sock"
    stale.write_text("")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(live))
        server.listen()
        found = checks.check_other_runtimes(Config(), [("containerd", live), ("CRI-O", stale), ("none", tmp_path / "x")])
    assert found.severity is checks.Severity.WARN
    assert found.detail == f"also serving on this node: containerd ({live})"
    assert found.fix == "point kubelet at pycri: --container-runtime-endpoint unix:///run/pycri/pycri.sock"
    assert checks.check_other_runtimes(Config(), [("CRI-O", stale)]).ok
