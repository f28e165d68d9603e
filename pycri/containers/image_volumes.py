"""Image volumes (``Mount.image``): an image's file system mounted read-only into a container.

kubelet pulls the image first (the ImageVolume feature), then names it in a
mount. pycri mounts the image's unpacked layers under the container's
directory (``volumes/<n>``): one layer as a read-only bind mount, several as
an overlay without an upper dir, which is read-only by construction; in a pod
with its own user namespace, ID-mapped as the rootfs is. ``image_sub_path``
is resolved inside the image (symbolic links stay in it, as under chroot), so
the bind mount the runtime makes never leaves the image.

Blocking (mount syscalls): call in a thread.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pycri import errors
from pycri.containers import rootfs
from pycri.containers.users import MAX_SYMLINKS, path_parts
from pycri.host import mounts


def resolve_in_root(root: str, path: str) -> str | None:
    """``path`` inside ``root`` with its symbolic links resolved within ``root``; None if it does not exist.

    For a tree nobody else changes meanwhile (a read-only image mount).
    """
    resolved: list[str] = []
    pending = path_parts(path)
    links = 0
    while pending:
        name = pending.pop(0)
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, name)
        try:
            mode = os.lstat(candidate).st_mode
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return None
            raise
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise errors.InvalidArgument(f"{path!r}: too many levels of symbolic links")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending[:0] = path_parts(target)
            continue
        if pending and not stat.S_ISDIR(mode):
            return None
        resolved.append(name)
    return os.path.join(root, *resolved)


def mount(layers: list[Path], target: Path, userns_path: str = "") -> None:
    """Mount ``layers`` (bottom first) read-only at ``target`` (created), ID-mapped with ``userns_path``."""
    target.mkdir(parents=True, exist_ok=True)
    if not layers:
        mounts.mount("tmpfs", str(target), "tmpfs", mounts.MS_RDONLY, "mode=0755,size=4k")  # an image with no layers
        return
    lower = layers[::-1]
    if userns_path:
        lower = rootfs.idmapped_layers(lower, target.with_name(target.name + "-lower"), userns_path)
    if len(lower) == 1:
        mounts.mount(str(lower[0]), str(target), "", mounts.MS_BIND)
        mounts.mount("", str(target), "", mounts.MS_BIND | mounts.MS_REMOUNT | mounts.MS_RDONLY)
        return
    data = f"lowerdir={':'.join(str(p) for p in lower)}"
    if len(data) >= rootfs.PAGE:
        raise errors.FailedPrecondition(f"the image volume's {len(lower)} layers do not fit one overlay mount")
    mounts.mount("overlay", str(target), "overlay", mounts.MS_RDONLY, data)


def source(volume: Path, sub_path: str, what: str, image: str) -> str:
    """The host path to bind-mount: the volume's root, or its ``sub_path`` resolved inside it."""
    if not sub_path:
        return str(volume)
    found = resolve_in_root(str(volume), sub_path)
    if found is None:
        raise errors.InvalidArgument(f"{what}.image_sub_path: {sub_path!r} does not exist in image {image!r}")
    return found
