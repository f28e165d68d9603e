"""crun on cgroup v1 hybrid hosts.

crun 1.8 refuses every container on a hybrid host whose unified (v2)
hierarchy has controllers enabled ("cgroups in hybrid mode not supported").
runc copes. pycri runs crun through a small launcher that gives it its own
mount namespace (receiving the host's later mounts) in which the unified
hierarchy is not mounted: crun then sees a plain cgroup v1 host and puts
containers in the v1 controllers, as runc does. Only that namespace's copy of
the mount is made private and unmounted; the host keeps its own.
"""

from __future__ import annotations

import logging
import os
import shlex
from pathlib import Path

from pycri.host import cgroups

log = logging.getLogger("pycri.oci")

# The new mount namespace keeps the host's propagation (so rshared container mounts still reach
# the host); only its own copy of the unified mount is made private, then unmounted, so the
# unmount cannot propagate anywhere. If making it private fails, nothing is unmounted.
LAUNCHER = """#!/bin/sh
# Written by pycri: runs {binary} without the cgroup v2 mount of this hybrid host ({unified}).
exec unshare --mount --propagation unchanged /bin/sh -c \
  'mount --make-private {unified_q} && umount -l {unified_q}; exec {binary_q} "$@"' {name} "$@"
"""


def needs_v1_view(binary: str, found: cgroups.CgroupMounts, controllers: str) -> bool:
    """Whether ``binary`` (crun) must not see the unified hierarchy of this host."""
    return (
        os.path.basename(binary) == "crun"
        and found.layout is cgroups.Layout.HYBRID
        and found.unified is not None
        and bool(controllers.split())
    )


def launcher_text(binary: str, unified: str) -> str:
    return LAUNCHER.format(
        binary=binary,
        unified=unified,
        unified_q=shlex.quote(unified),
        binary_q=shlex.quote(binary),
        name=os.path.basename(binary),
    )


def launcher_for(binary: str, directory: Path) -> str:
    """The path to execute for ``binary``: the binary itself, or a launcher written to ``directory``."""
    found = cgroups.detect()
    controllers = ""
    if found.unified is not None:
        try:
            controllers = Path(found.unified, "cgroup.controllers").read_text()
        except OSError:
            controllers = ""
    if not needs_v1_view(binary, found, controllers):
        return binary
    assert found.unified is not None
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / os.path.basename(binary)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(launcher_text(binary, found.unified))
    tmp.chmod(0o755)
    os.replace(tmp, target)
    log.warning(
        "%s cannot run on this hybrid cgroup host (controllers %s on %s): running it without that mount (%s)",
        binary,
        controllers.strip(),
        found.unified,
        target,
    )
    return str(target)


def remove_unified_leftover(cgroups_path: str) -> None:
    """After a delete through the launcher: remove the container's empty cgroup on the unified
    hierarchy, which the runtime created but could not see to remove. Blocking: call in a thread."""
    found = cgroups.detect()
    if found.layout is not cgroups.Layout.HYBRID or found.unified is None or not cgroups_path:
        return
    target = Path(found.unified, cgroups_path.lstrip("/"))
    try:
        target.rmdir()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove leftover cgroup %s: %s", target, exc)
