"""pycri.oci.cdi: CDI specs parsed and checked, devices resolved by priority, edits applied to a spec."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.containers import devices
from pycri.oci import cdi
from pycri.oci.spec import base_spec


def spec_doc(kind: str = "vendor.com/gpu", **device_edits: Any) -> dict[str, Any]:
    return {
        "cdiVersion": "0.6.0",
        "kind": kind,
        "containerEdits": {"env": ["VENDOR_SPEC=1"]},
        "devices": [
            {"name": "0", "containerEdits": device_edits or {"env": ["GPU=0"]}},
            {"name": "all", "containerEdits": {"env": ["GPU=all"]}},
        ],
    }


def test_parse_a_full_spec() -> None:
    spec = cdi.parse(
        spec_doc(
            env=["A=1"],
            deviceNodes=[
                {"path": "/dev/gpu0", "hostPath": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0, "permissions": "rw"}
            ],
            mounts=[{"hostPath": "/opt/lib", "containerPath": "/usr/lib/x", "options": ["ro", "bind"], "type": "bind"}],
            hooks=[{"hookName": "createContainer", "path": "/usr/bin/hook", "args": ["hook", "x"], "timeout": 5}],
            additionalGids=[44],
            intelRdt={"closID": "gold"},
        ),
        "/etc/cdi/x.yaml",
    )
    edits = spec.devices["0"]
    assert spec.kind == "vendor.com/gpu"
    assert spec.edits.env == ("VENDOR_SPEC=1",)
    assert edits.device_nodes == (cdi.DeviceNode("/dev/gpu0", "/dev/nvidia0", "c", 195, 0, None, "rw"),)
    assert edits.mounts == ({"destination": "/usr/lib/x", "source": "/opt/lib", "options": ["ro", "bind"], "type": "bind"},)
    assert edits.hooks == (("createContainer", {"path": "/usr/bin/hook", "args": ["hook", "x"], "timeout": 5}),)
    assert edits.additional_gids == (44,)
    assert edits.intel_rdt == {"closID": "gold"}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "vendor.com/gpu", "devices": []}, "cdiVersion: required"),
        ({**spec_doc(), "kind": "gpu"}, "kind: 'gpu' is not vendor.com/class"),
        ({**spec_doc(), "devices": []}, "devices: at least one device is required"),
        ({**spec_doc(), "devices": [{"name": "bad name", "containerEdits": {"env": ["A=1"]}}]}, "is not a valid device name"),
        ({**spec_doc(), "devices": [{"name": "x", "containerEdits": {}}]}, "a device must edit the container"),
        (spec_doc(env=["NOEQUALS"]), "env[0]: 'NOEQUALS' is not NAME=value"),
        (spec_doc(deviceNodes=[{"path": "dev/x"}]), "deviceNodes[0].path: must be an absolute path"),
        (spec_doc(deviceNodes=[{"path": "/dev/x", "permissions": "rwx"}]), "permissions: 'rwx' may only contain"),
        (spec_doc(mounts=[{"containerPath": "/x"}]), "mounts[0].hostPath: required"),
        (spec_doc(hooks=[{"hookName": "preStart", "path": "/x"}]), "hooks[0].hookName: 'preStart' is not one of"),
        (spec_doc(additionalGids=[-1]), "additionalGids[0]: must be a non-negative integer"),
    ],
)
def test_invalid_specs(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(cdi.SpecError) as info:
        cdi.parse(doc, "/etc/cdi/x.json")
    assert message in str(info.value)
    assert str(info.value).startswith("/etc/cdi/x.json: ")


def test_later_directories_override_and_conflicts_are_dropped() -> None:
    low = [("/etc/cdi/a.json", spec_doc()), ("/etc/cdi/other.json", spec_doc("other.org/nic"))]
    high = [("/var/run/cdi/b.json", spec_doc(env=["GPU=override"])), ("/var/run/cdi/broken.json", {"kind": 1})]
    registry = cdi.Registry.build([low, high])
    assert registry.devices["vendor.com/gpu=0"][1].env == ("GPU=override",)
    assert registry.devices["vendor.com/gpu=all"][0].source == "/var/run/cdi/b.json"
    assert "other.org/nic=0" in registry.devices
    assert any(p.startswith("/var/run/cdi/broken.json") for p in registry.problems)
    clash = cdi.Registry.build([[("/etc/cdi/a.json", spec_doc()), ("/etc/cdi/b.json", spec_doc())]])
    assert "vendor.com/gpu=0" not in clash.devices
    assert any("is also defined in /etc/cdi/a.json" in p for p in clash.problems)


def test_resolve_adds_each_spec_edits_once() -> None:
    registry = cdi.Registry.build([[("/etc/cdi/a.json", spec_doc())]])
    edits = registry.resolve([("f0", "vendor.com/gpu=0"), ("f1", "vendor.com/gpu=all")])
    assert [e.env for e in edits] == [("VENDOR_SPEC=1",), ("GPU=0",), ("GPU=all",)]
    with pytest.raises(errors.InvalidArgument, match="f: 'gpu0' is not a CDI device name"):
        registry.resolve([("f", "gpu0")])
    with pytest.raises(errors.NotFound, match=r"f: CDI device 'vendor\.com/gpu=9' is not defined by any CDI spec"):
        registry.resolve([("f", "vendor.com/gpu=9")])


def test_requested_from_field_and_annotations() -> None:
    annotations = {"cdi.k8s.io/plugin_1": "vendor.com/gpu=1, vendor.com/gpu=0", "other": "vendor.com/gpu=7"}
    assert cdi.requested(["vendor.com/gpu=0"], annotations) == [
        ("config.CDI_devices[0].name", "vendor.com/gpu=0"),
        ("config.annotations[cdi.k8s.io/plugin_1]", "vendor.com/gpu=1"),
    ]


def test_apply() -> None:
    spec = base_spec()
    spec["process"]["env"] = ["PATH=/bin", "GPU=none"]
    spec["mounts"] = [{"destination": "/proc"}, {"destination": "/dev/pts"}]
    node = cdi.DeviceNode("/dev/gpu0", type="c", major=195, minor=0, uid=0, gid=44)
    fifo = cdi.DeviceNode("/dev/pipe", type="p")
    cdi.apply(
        spec,
        [
            cdi.Edits(env=("GPU=0",), device_nodes=(node, fifo), additional_gids=(44,)),
            cdi.Edits(mounts=({"destination": "/lib", "source": "/opt/lib"},), hooks=(("prestart", {"path": "/h"}),)),
        ],
    )
    assert spec["process"]["env"] == ["PATH=/bin", "GPU=0"]
    assert spec["linux"]["devices"] == [
        {"path": "/dev/gpu0", "type": "c", "major": 195, "minor": 0, "uid": 0, "gid": 44},
        {"path": "/dev/pipe", "type": "p"},
    ]
    assert spec["linux"]["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 195, "minor": 0, "access": "rwm"}
    assert spec["process"]["user"]["additionalGids"] == [44]
    assert [m["destination"] for m in spec["mounts"]] == ["/proc", "/lib", "/dev/pts"]
    assert spec["hooks"] == {"prestart": [{"path": "/h"}]}
    with pytest.raises(ValueError, match="was not completed"):
        cdi.apply(spec, [cdi.Edits(device_nodes=(cdi.DeviceNode("/dev/x"),))])


def test_load_and_complete_from_the_host(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    (etc / "gpu.json").write_text(json.dumps(spec_doc(deviceNodes=[{"path": "/dev/null"}])))
    (run / "nic.yaml").write_text(
        "cdiVersion: 0.5.0\nkind: example.org/nic\ndevices:\n  - name: eth\n    containerEdits:\n      env: [NIC=1]\n"
    )
    (run / "junk.yaml").write_text("{not: [yaml")
    (run / "ignored.txt").write_text("x")
    registry = devices.load_cdi([str(etc), str(run), str(tmp_path / "missing")])
    assert sorted(registry.devices) == ["example.org/nic=eth", "vendor.com/gpu=0", "vendor.com/gpu=all"]
    assert len(registry.problems) == 1
    assert "junk.yaml: cannot be read" in registry.problems[0]

    config = api.ContainerConfig(CDI_devices=[api.CDIDevice(name="vendor.com/gpu=0")])
    edits = devices.cdi_edits(config, [str(etc), str(run)])
    null = os.stat("/dev/null")
    assert edits[1].device_nodes == (cdi.DeviceNode("/dev/null", "", "c", os.major(null.st_rdev), os.minor(null.st_rdev), 0o666),)
    assert devices.cdi_edits(api.ContainerConfig(), []) == []
    with pytest.raises(errors.FailedPrecondition, match="CDI is turned off on this node"):
        devices.cdi_edits(config, [])
    (etc / "gpu.json").write_text(json.dumps(spec_doc(deviceNodes=[{"path": "/dev/none-such"}])))
    with pytest.raises(errors.FailedPrecondition, match="CDI device node /dev/none-such: No such file or directory"):
        devices.cdi_edits(config, [str(etc)])
