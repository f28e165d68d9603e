"""The default seccomp profile enforced by the real runc (root only).

The container's rootfs is an empty directory with the host's /usr bind-mounted
read-only (Debian's /bin, /lib and /lib64 are symlinks into /usr), so host
binaries run unchanged inside. Each run gets its own container id, runc state
root in tmp_path and cgroup ``/pycri-test/<id>``; everything is deleted again.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import resource
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri.oci import capabilities, seccomp
from pycri.oci.spec import base_spec, default_mounts

RUNC = shutil.which("runc")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(RUNC is None, reason="runc missing"),
    pytest.mark.skipif(not os.access("/usr/bin/unshare", os.X_OK), reason="util-linux unshare missing"),
]


class Runner:
    def __init__(self, tmp_path: Path) -> None:
        assert RUNC is not None
        self.runc = RUNC
        self.tmp = tmp_path
        self.state = tmp_path / "runc-state"
        self.ids: list[str] = []

    def run(
        self, args: list[str], *, add_caps: tuple[str, ...] = (), profile: str = "default"
    ) -> subprocess.CompletedProcess[str]:
        cid = f"pycri-seccomp-{uuid.uuid4().hex[:12]}"
        self.ids.append(cid)
        bundle = self.tmp / cid
        rootfs = bundle / "rootfs"
        for d in ("usr", "proc", "dev", "sys", "tmp", "etc"):
            (rootfs / d).mkdir(parents=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                (rootfs / link).symlink_to(os.readlink(f"/{link}"))
        (bundle / "config.json").write_text(json.dumps(self.spec(cid, args, add_caps, profile)))
        return subprocess.run(
            [self.runc, "--root", str(self.state), "run", "--bundle", str(bundle), cid],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def spec(self, cid: str, args: list[str], add_caps: tuple[str, ...], profile: str) -> dict[str, Any]:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nofile = min(1048576, hard if hard != resource.RLIM_INFINITY else 1048576)
        spec = base_spec(nofile)
        caps = capabilities.resolve(list(add_caps), [], [], privileged=False, run_as_root=True, field="test")
        spec["process"]["args"] = args
        spec["process"]["capabilities"] = caps
        spec["root"] = {"path": "rootfs", "readonly": True}
        spec["hostname"] = "seccomp-test"
        spec["mounts"] = [
            *default_mounts(None),
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro", "nosuid", "nodev"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "size=16m"]},
        ]
        linux = spec["linux"]
        # New namespaces only; the network namespace is a fresh empty one.
        linux["namespaces"] = [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")]
        linux["cgroupsPath"] = f"/pycri-test/{cid}"
        if profile == "default":
            linux["seccomp"] = seccomp.default_profile(caps["bounding"])
        return spec

    def cleanup(self) -> None:
        for cid in self.ids:
            subprocess.run(
                [self.runc, "--root", str(self.state), "delete", "--force", cid], capture_output=True, timeout=30, check=False
            )
            for path in glob.glob(f"/sys/fs/cgroup/*/pycri-test/{cid}"):
                with contextlib.suppress(FileNotFoundError):
                    os.rmdir(path)
        # The shared parent goes too once empty (another run may still use it: then rmdir fails, fine).
        for parent in glob.glob("/sys/fs/cgroup/*/pycri-test"):
            with contextlib.suppress(OSError):
                os.rmdir(parent)


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    r = Runner(tmp_path)
    try:
        yield r
    finally:
        r.cleanup()
    assert not [p for cid in r.ids for p in glob.glob(f"/sys/fs/cgroup/*/pycri-test/{cid}")]


def test_default_profile_under_runc(runner: Runner) -> None:
    ok = runner.run(["/bin/true"])
    assert ok.returncode == 0, ok.stderr
    # dash forks (clone without namespace flags) and runs a dynamically linked binary.
    forked = runner.run(["/bin/sh", "-c", "ls / >/dev/null && echo forked"])
    assert (forked.returncode, forked.stdout.strip()) == (0, "forked"), forked.stderr
    status = runner.run(["/bin/grep", "^Seccomp:", "/proc/self/status"])
    assert status.stdout.split() == ["Seccomp:", "2"], status  # 2 = SECCOMP_MODE_FILTER

    blocked = runner.run(["/usr/bin/unshare", "--user", "true"])
    assert blocked.returncode != 0
    assert "Operation not permitted" in blocked.stderr, blocked.stderr

    # Control: the same command works without the filter, and with CAP_SYS_ADMIN the profile allows it.
    unfiltered = runner.run(["/usr/bin/unshare", "--user", "true"], profile="none")
    assert unfiltered.returncode == 0, unfiltered.stderr
    admin = runner.run(["/usr/bin/unshare", "--user", "true"], add_caps=("SYS_ADMIN",))
    assert admin.returncode == 0, admin.stderr
