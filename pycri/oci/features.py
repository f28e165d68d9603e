"""What an OCI runtime handler can do on this host, found out rather than assumed.

Pod user namespaces need ID-mapped mounts of the file system holding the image
layers, and overlayfs on ID-mapped layers (Linux 5.19); pycri tries the
former once, as critest does.

Recursive read-only mounts (the ``rro`` mount option) need the kernel's
``mount_setattr(2)`` (Linux 5.12) and a runtime that knows the option. A
runtime with a ``features`` command (runc 1.1+) lists its mount options; one
without it (such as Debian 12's crun 1.8) is asked the practical way: a throw-away container
with an ``rro`` bind mount is created and deleted, in new mount and PID
namespaces; nothing runs in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Any

from pycri.errors import Internal
from pycri.host import idmap
from pycri.host import userns as host_userns
from pycri.host.tree import remove_tree
from pycri.oci import hybrid
from pycri.oci import spec as oci_spec
from pycri.oci.runtime import OCIRuntime, last_error
from pycri.oci.userns import IDMapping, UserNamespace

log = logging.getLogger("pycri.oci")

PROBE_TIMEOUT = 20.0
OVERLAY_IDMAPPED_LAYERS = (5, 19)
PROBE_MAPPING = UserNamespace(IDMapping(0, 65536, 65536), IDMapping(0, 65536, 65536))  # any mapping will do


def kernel_release() -> tuple[int, ...]:
    """(6, 1) for "6.1.0-13-amd64"."""
    parts = []
    for part in os.uname().release.split(".")[:2]:
        digits = "".join(itertools.takewhile(str.isdigit, part))
        parts.append(int(digits or 0))
    return tuple(parts)


def unsearchable_parent(path: str) -> str:
    """The first existing directory on the way to ``path`` that others may not search ("" when none)."""
    current = Path(path).absolute()
    for directory in [*reversed(current.parents), current]:
        try:
            mode = directory.stat().st_mode
        except FileNotFoundError:
            break  # pycri creates the rest itself (0711)
        if not mode & stat.S_IXOTH:
            return str(directory)
    return ""


def probe_spec(binary: str, source: str) -> dict[str, Any]:
    """A container that only mounts ``source`` recursively read-only at /mnt (and holds ``binary`` to exist)."""
    spec = oci_spec.base_spec(1024)
    target = "/" + os.path.basename(binary)
    spec["process"]["args"] = [target, "--version"]
    spec["process"]["capabilities"] = {"bounding": [], "effective": [], "permitted": []}
    spec["process"]["noNewPrivileges"] = True
    spec["root"] = {"path": "rootfs", "readonly": True}
    spec["mounts"] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": target, "type": "bind", "source": binary, "options": ["rbind", "ro"]},
        {"destination": "/mnt", "type": "bind", "source": source, "options": ["rbind", "rprivate", "rro"]},
    ]
    spec["linux"]["namespaces"] = [{"type": "pid"}, {"type": "mount"}]
    spec["linux"]["maskedPaths"] = []
    spec["linux"]["readonlyPaths"] = []
    return spec


async def _runtime(rt: OCIRuntime, *args: str, output: Path) -> int:
    with output.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            rt.path, "--root", rt.root, *args, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        return await asyncio.wait_for(proc.wait(), PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        return await proc.wait()


async def probe_rro(rt: OCIRuntime, binary: str, cgroups_path: str) -> tuple[bool, str]:
    """Create (never start) a container with an ``rro`` mount; (whether it worked, why not)."""
    workdir = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="pycri-rro-probe-"))
    cid = f"pycri-rro-probe-{secrets.token_hex(6)}"
    output = workdir / "output"
    try:
        spec = probe_spec(binary, str(workdir / "source"))
        spec["linux"]["cgroupsPath"] = f"{cgroups_path}/{cid}" if cgroups_path else ""

        def prepare() -> None:
            rootfs = workdir / "rootfs"
            for directory in (rootfs / "dev", rootfs / "proc", rootfs / "mnt", workdir / "source"):
                directory.mkdir(parents=True)
            (rootfs / os.path.basename(binary)).touch()  # the mount points exist: the rootfs is read-only
            (workdir / "config.json").write_text(json.dumps(spec))

        await asyncio.to_thread(prepare)
        rc = await _runtime(rt, "create", "--bundle", str(workdir), cid, output=output)
        await _runtime(rt, "delete", "--force", cid, output=workdir / "delete-output")
        await asyncio.to_thread(hybrid.remove_unified_leftover, spec["linux"]["cgroupsPath"])
        if rc == 0:
            return True, ""
        text = await asyncio.to_thread(output.read_text, errors="replace")
        return False, last_error(text)
    finally:
        await asyncio.to_thread(remove_tree, workdir, True)


class HandlerFeatures:
    """Per-handler answers, worked out once on first use."""

    def __init__(
        self,
        handlers: dict[str, OCIRuntime],
        probe_binary: str,
        cgroups_path: str,
        layer_dir: str = "/var/lib",
        pod_dirs: tuple[str, ...] = (),
    ) -> None:
        self.handlers = handlers
        self.probe_binary = probe_binary
        self.cgroups_path = cgroups_path
        self.layer_dir = layer_dir  # where image layers live: they are ID-mapped for pod user namespaces
        self.pod_dirs = pod_dirs  # where rootfs and pod files live: a pod's unprivileged root must reach them
        self._rro: dict[str, asyncio.Task[bool]] = {}
        self._kernel_rro: bool | None = None
        self._userns: asyncio.Task[str] | None = None
        self._userns_logged = False

    async def _find_rro(self, name: str) -> bool:
        if self._kernel_rro is None:
            self._kernel_rro = idmap.kernel_has_mount_setattr()
        if not self._kernel_rro:
            log.info("recursive read-only mounts: the kernel lacks mount_setattr(2) (Linux 5.12+)")
            return False
        rt = self.handlers[name]
        features = await rt.features()
        if features:
            supported = "rro" in features.get("mountOptions", [])
            log.info("handler %s: recursive read-only mounts %s (its features document)", name, supported)
            return supported
        ok, why = await probe_rro(rt, self.probe_binary, self.cgroups_path)
        log.info("handler %s: recursive read-only mounts %s (probed)%s", name, ok, "" if ok else f": {why}")
        return ok

    async def recursive_read_only(self, name: str) -> bool:
        """Whether handler ``name`` honours ``rro``; an unknown handler does not."""
        if name not in self.handlers:
            return False
        task = self._rro.get(name)
        if task is None:
            task = self._rro[name] = asyncio.ensure_future(self._find_rro(name))
        try:
            return await asyncio.shield(task)
        except Exception:
            log.exception("handler %s: probing recursive read-only mounts failed", name)
            with contextlib.suppress(KeyError):
                del self._rro[name]
            return False

    async def _find_userns(self) -> str:
        release = kernel_release()
        if release < OVERLAY_IDMAPPED_LAYERS:
            return f"Linux {'.'.join(map(str, release))} cannot overlay ID-mapped layers (needs 5.19)"
        for directory in self.pod_dirs:
            blocked = await asyncio.to_thread(unsearchable_parent, directory)
            if blocked:
                return f"{blocked} is not searchable by others (a pod's root is an unprivileged host user): chmod o+x"
        try:
            helper = await host_userns.user_helper(PROBE_MAPPING)
        except Internal as exc:
            return f"no user namespace for the check: {exc.message}"
        try:
            return await asyncio.to_thread(idmap.unsupported_reason, self.layer_dir, f"/proc/{helper.pid}/ns/user")
        finally:
            await helper.close()

    async def user_namespaces(self, name: str) -> bool:
        """Whether pods of handler ``name`` may have their own user namespace.

        pycri ID-maps the rootfs and volumes itself and runc and crun join the
        pod's pinned namespace, so the host decides, the same for every handler.
        """
        if name not in self.handlers:
            return False
        if self._userns is None:
            self._userns = asyncio.ensure_future(self._find_userns())
        try:
            why = await asyncio.shield(self._userns)
        except Exception:
            log.exception("checking ID-mapped mounts failed")
            self._userns = None
            return False
        if why and not self._userns_logged:
            log.info("user namespaces are not offered: %s", why)
            self._userns_logged = True
        return not why
