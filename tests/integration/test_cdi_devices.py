"""CDI devices on the real daemon: specs in the daemon's cdi_spec_dirs, devices asked for by
``CDI_devices`` and by ``cdi.k8s.io/`` annotations, with runc and crun."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, NotFoundError
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness
from tests.support import busybox

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]


@pytest.fixture(scope="module")
def cdi_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("cdi")
    return base / "etc", base / "run"


@pytest.fixture(scope="module")
def shared_daemon(image_refs: dict[str, str], cdi_dirs: tuple[Path, Path]) -> Iterator[DaemonProcess]:
    """The module's daemon, reading CDI specs from the module's own directories."""
    with DaemonProcess.temporary(cdi_spec_dirs=[str(d) for d in cdi_dirs]) as daemon, Client(daemon.socket) as client:
        for ref in image_refs.values():
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=ref)))
        yield daemon


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_cdi_devices(h: Harness, handler: str, cdi_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    etc, run = cdi_dirs
    etc.mkdir(exist_ok=True)
    run.mkdir(exist_ok=True)
    libs = tmp_path / "vendor-libs"
    libs.mkdir()
    (libs / "libvendor.so").write_text("vendor library\n")
    (etc / "vendor.yaml").write_text(
        f"""cdiVersion: 0.6.0
kind: vendor.example/accel
containerEdits:
  env: [ACCEL_VENDOR=example]
devices:
  - name: "0"
    containerEdits:
      env: [ACCEL=0]
      deviceNodes:
        - path: /dev/accel0
          hostPath: /dev/null
      mounts:
        - hostPath: {libs}
          containerPath: /usr/lib/vendor
          options: [ro, rbind]
          type: bind
  - name: "1"
    containerEdits:
      env: [ACCEL=1]
"""
    )
    # The later directory overrides device 1.
    device = {"name": "1", "containerEdits": {"env": ["ACCEL=one"]}}
    override = {"cdiVersion": "0.6.0", "kind": "vendor.example/accel", "devices": [device]}
    (run / "override.json").write_text(json.dumps(override))

    pod = h.pod(f"cdi-{handler}", handler=handler)
    cid = h.container(
        pod,
        "accel",
        CDI_devices=[api.CDIDevice(name="vendor.example/accel=0")],
        annotations={"cdi.k8s.io/accel-plugin": "vendor.example/accel=1"},
    )
    env = h.sh(cid, "env").split()
    assert "ACCEL_VENDOR=example" in env
    assert "ACCEL=one" in env  # device 1's edits come after device 0's
    null = os.stat("/dev/null")
    assert h.sh(cid, "stat -c '%t:%T' /dev/accel0").strip() == f"{os.major(null.st_rdev):x}:{os.minor(null.st_rdev):x}"
    h.sh(cid, "echo written > /dev/accel0")  # the device cgroup lets it through
    assert h.sh(cid, "cat /usr/lib/vendor/libvendor.so") == "vendor library\n"
    assert "Read-only file system" in h.fails(cid, "touch /usr/lib/vendor/x")

    not_defined = r"config\.CDI_devices\[0\]\.name: CDI device 'vendor\.example/accel=7' is not defined"
    with pytest.raises(NotFoundError, match=not_defined):
        h.container(pod, "missing", CDI_devices=[api.CDIDevice(name="vendor.example/accel=7")])
    assert [c for c in h.list() if c != cid] == []
