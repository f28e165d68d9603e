"""A container's root filesystem: an overlay of the image's unpacked layers and its own upper dir.

Blocking (mount syscalls, directory creation): call in a thread.
"""

from __future__ import annotations

import os
from pathlib import Path

from pycri.host import mounts

PAGE = 4096  # mount(2) data is one page


def mount_rootfs(layers: list[Path], container_dir: Path) -> Path:
    """Mount ``container_dir/rootfs``: ``layers`` bottom first, ``upper`` and ``work`` beside it."""
    upper, work, rootfs = container_dir / "upper", container_dir / "work", container_dir / "rootfs"
    for d in (upper, work, rootfs):
        d.mkdir(parents=True, exist_ok=True)
    lower = layers[::-1] if layers else [container_dir / "empty"]
    if not layers:
        lower[0].mkdir(exist_ok=True)
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


def unmount_rootfs(container_dir: Path) -> None:
    rootfs = container_dir / "rootfs"
    while mounts.unmount(str(rootfs)):
        pass
