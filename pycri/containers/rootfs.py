"""A container's root filesystem: an overlay of the image's unpacked layers and its own upper dir.

In a pod with its own user namespace, the layers are ID-mapped clones
(``lower/<n>``) and the upper dir belongs to the namespace's root, so the pod's
root owns what it sees as its own files. Blocking (mount syscalls, directory
creation): call in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from pycri.host import idmap, mounts

PAGE = 4096  # mount(2) data is one page


class MountsRemain(OSError):
    """Something under a container's directory is still mounted: it must not be deleted."""


def mount_rootfs(
    layers: list[Path], container_dir: Path, userns_path: str = "", root_owner: tuple[int, int] | None = None
) -> Path:
    """Mount ``container_dir/rootfs``: ``layers`` bottom first, ``upper`` and ``work`` beside it.

    With ``userns_path``, the layers are seen through that user namespace and the
    upper dir is owned by ``root_owner`` (the host IDs of its root).
    """
    upper, work, rootfs = container_dir / "upper", container_dir / "work", container_dir / "rootfs"
    for d in (upper, work, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    lower = layers[::-1] if layers else [container_dir / "empty"]
    if not layers:
        lower[0].mkdir(exist_ok=True)
    if userns_path:
        lower = idmapped_layers(lower, container_dir / "lower", userns_path)
        if root_owner is not None:
            os.chown(upper, *root_owner)
    data = f"lowerdir={':'.join(str(p) for p in lower)},upperdir={upper},workdir={work}"
    if len(data) >= PAGE:
        return _mount_relative(lower, upper, work, rootfs)
    mounts.mount("overlay", str(rootfs), "overlay", 0, data)
    return rootfs


def _mount_relative(lower: list[Path], upper: Path, work: Path, rootfs: Path) -> Path:
    """Many layers: mount from their common parent with relative paths, as containerd does."""
    parent = os.path.commonpath([str(p) for p in lower])
    data = f"lowerdir={':'.join(os.path.relpath(p, parent) for p in lower)},upperdir={upper},workdir={work}"
    if len(data) >= PAGE:
        raise OSError(f"overlay mount options for {len(lower)} layers exceed one page")
    previous = os.getcwd()
    os.chdir(parent)  # only in the worker thread's process-wide cwd: restored at once
    try:
        mounts.mount("overlay", str(rootfs), "overlay", 0, data)
    finally:
        os.chdir(previous)
    return rootfs


def idmapped_layers(layers: list[Path], into: Path, userns_path: str) -> list[Path]:
    into.mkdir(exist_ok=True)
    clones = []
    for n, layer in enumerate(layers):
        target = into / str(n)
        idmap.clone(str(layer), str(target), userns_path)
        clones.append(target)
    return clones


def unmount_rootfs(container_dir: Path) -> None:
    """Unmount the rootfs and everything else mounted under ``container_dir`` (ID-mapped clones).

    Raises ``MountsRemain`` when something stays mounted: the directory must then not be deleted.
    """
    remaining = mounts.unmount_below(str(container_dir))
    if remaining:
        raise MountsRemain(f"still mounted under {container_dir}: {', '.join(remaining)}")
