from __future__ import annotations

import subprocess
from pathlib import Path

from pycri.host import cgroups
from pycri.oci import hybrid

HYBRID = cgroups.CgroupMounts(cgroups.Layout.HYBRID, "/sys/fs/cgroup/unified", {"memory": "/sys/fs/cgroup/memory"})
V1 = cgroups.CgroupMounts(cgroups.Layout.V1, None, {"memory": "/sys/fs/cgroup/memory"})
V2 = cgroups.CgroupMounts(cgroups.Layout.V2, "/sys/fs/cgroup", {})


def test_only_crun_on_hybrid_hosts_with_unified_controllers() -> None:
    assert hybrid.needs_v1_view("/usr/bin/crun", HYBRID, "hugetlb\n")
    assert not hybrid.needs_v1_view("/usr/bin/crun", HYBRID, "\n")  # an empty unified hierarchy is fine
    assert not hybrid.needs_v1_view("/usr/sbin/runc", HYBRID, "hugetlb\n")
    assert not hybrid.needs_v1_view("/usr/bin/crun", V1, "")
    assert not hybrid.needs_v1_view("/usr/bin/crun", V2, "cpu memory pids\n")


def test_launcher_hides_the_unified_mount_and_passes_arguments(tmp_path: Path) -> None:
    text = hybrid.launcher_text("/usr/bin/crun", "/sys/fs/cgroup/unified")
    assert text.startswith("#!/bin/sh\n")
    assert "unshare --mount --propagation unchanged" in text
    # Private first, so the unmount cannot propagate to the host; no unmount if that fails.
    assert "mount --make-private /sys/fs/cgroup/unified && umount -l /sys/fs/cgroup/unified" in text
    # The arguments reach the binary unchanged, spaces and all: echo stands in for crun, and the
    # launcher runs without unshare and with a path that is no mount, so it touches nothing real.
    harmless = hybrid.launcher_text("/bin/echo", str(tmp_path / "not-a-mount"))
    assert "umount -l /sys/fs/cgroup" not in harmless
    script = tmp_path / "launcher"
    script.write_text(
        harmless.replace("exec unshare --mount --propagation unchanged ", "exec ").replace("mount --make-private", "false")
    )
    script.chmod(0o755)
    out = subprocess.run([str(script), "--root", "/run/x y", "state", "id"], capture_output=True, text=True, check=True)
    assert out.stdout == "--root /run/x y state id\n"
