"""NRI's ContainerAdjustment applied to an OCI spec (pycri.nri.adjust.apply, a pure function)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pycri.nri import api_pb2 as nri
from pycri.nri.adjust import AdjustmentError, apply
from pycri.oci import cdi


def base() -> dict[str, Any]:
    return {
        "process": {
            "args": ["/bin/app"],
            "env": ["PATH=/bin", "KEEP=1", "DROP=x"],
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/data/sub", "type": "bind", "source": "/host/sub", "options": ["rbind"]},
            {"destination": "/old", "type": "bind", "source": "/host/old", "options": ["rbind"]},
        ],
        "annotations": {"keep": "1", "drop": "2"},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network", "path": "/run/netns/x"}],
            "resources": {"memory": {"limit": 100}, "cpu": {"shares": 2}, "devices": [{"allow": False, "access": "rwm"}]},
            "cgroupsPath": "/pycri/a",
            "sysctl": {"net.a": "1"},
        },
    }


def test_the_input_is_not_changed() -> None:
    spec = base()
    before = copy.deepcopy(spec)
    apply(spec, nri.ContainerAdjustment(env=[nri.KeyValue(key="A", value="b")], annotations={"x": "y"}))
    assert spec == before


def test_annotations_env_args_and_rlimits() -> None:
    adjust = nri.ContainerAdjustment(
        annotations={"new": "v", "-drop": ""},
        env=[nri.KeyValue(key="KEEP", value="2"), nri.KeyValue(key="-DROP"), nri.KeyValue(key="NEW", value="n")],
        args=["", "/bin/other", "arg"],
        rlimits=[nri.POSIXRlimit(type="RLIMIT_NOFILE", hard=20, soft=15), nri.POSIXRlimit(type="RLIMIT_NPROC", hard=5, soft=5)],
    )
    out = apply(base(), adjust)
    assert out["annotations"] == {"keep": "1", "new": "v"}
    assert out["process"]["env"] == ["PATH=/bin", "KEEP=2", "NEW=n"]
    assert out["process"]["args"] == ["/bin/other", "arg"]
    assert out["process"]["rlimits"] == [
        {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 15},
        {"type": "RLIMIT_NPROC", "hard": 5, "soft": 5},
    ]


def test_mounts_are_replaced_removed_added_and_ordered_by_depth() -> None:
    adjust = nri.ContainerAdjustment(
        mounts=[
            nri.Mount(destination="-/old"),
            nri.Mount(destination="/data", type="bind", source="/host/data", options=["rbind", "ro"]),
            nri.Mount(destination="/proc", type="proc", source="proc2"),
        ]
    )
    out = apply(base(), adjust)
    assert [(m["destination"], m["source"]) for m in out["mounts"]] == [
        ("/data", "/host/data"),
        ("/proc", "proc2"),
        ("/data/sub", "/host/sub"),
    ]
    assert out["mounts"][0]["options"] == ["rbind", "ro"]


def test_hooks_are_appended() -> None:
    spec = base()
    spec["hooks"] = {"prestart": [{"path": "/bin/first"}]}
    hooks = nri.Hooks(prestart=[nri.Hook(path="/bin/second", args=["second"])], poststop=[nri.Hook(path="/bin/after")])
    out = apply(spec, nri.ContainerAdjustment(hooks=hooks))
    assert out["hooks"] == {
        "prestart": [{"path": "/bin/first"}, {"path": "/bin/second", "args": ["second"]}],
        "poststop": [{"path": "/bin/after"}],
    }


def test_linux_devices_resources_cgroups_oom_sysctl_namespaces() -> None:
    linux = nri.LinuxContainerAdjustment(
        devices=[nri.LinuxDevice(path="/dev/fuse", type="c", major=10, minor=229, file_mode=nri.OptionalFileMode(value=0o666))],
        cgroups_path="/pycri/b",
        oom_score_adj=nri.OptionalInt(value=900),
        sysctl={"net.b": "2", "-net.a": ""},
        namespaces=[nri.LinuxNamespace(type="-network"), nri.LinuxNamespace(type="ipc", path="/proc/1/ns/ipc")],
    )
    linux.resources.memory.limit.value = 200
    linux.resources.cpu.cpus = "0"
    linux.resources.pids.limit = 50
    linux.resources.unified["memory.high"] = "150"
    out = apply(base(), nri.ContainerAdjustment(linux=linux))
    assert out["linux"]["devices"] == [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}]
    resources = out["linux"]["resources"]
    assert resources["devices"][-1] == {"allow": True, "type": "c", "major": 10, "minor": 229, "access": "rwm"}
    assert resources["memory"] == {"limit": 200}
    assert resources["cpu"] == {"shares": 2, "cpus": "0"}
    assert resources["pids"] == {"limit": 50}
    assert resources["unified"] == {"memory.high": "150"}
    assert out["linux"]["cgroupsPath"] == "/pycri/b"
    assert out["process"]["oomScoreAdj"] == 900
    assert out["linux"]["sysctl"] == {"net.b": "2"}
    assert out["linux"]["namespaces"] == [{"type": "pid"}, {"type": "ipc", "path": "/proc/1/ns/ipc"}]


def test_a_device_is_removed_by_its_path() -> None:
    spec = base()
    spec["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}]
    out = apply(spec, nri.ContainerAdjustment(linux=nri.LinuxContainerAdjustment(devices=[nri.LinuxDevice(path="-/dev/fuse")])))
    assert out["linux"]["devices"] == []


def test_cdi_edits_are_applied() -> None:
    edits = cdi.Edits(env=("CDI=yes",))
    out = apply(base(), nri.ContainerAdjustment(CDI_devices=[nri.CDIDevice(name="vendor.com/x=y")]), [edits])
    assert "CDI=yes" in out["process"]["env"]


def test_what_pycri_cannot_apply_is_refused() -> None:
    linux = nri.LinuxContainerAdjustment(scheduler=nri.LinuxScheduler(nice=5))
    with pytest.raises(AdjustmentError, match=r"cannot apply linux\.scheduler"):
        apply(base(), nri.ContainerAdjustment(linux=linux))
