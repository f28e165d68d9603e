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
