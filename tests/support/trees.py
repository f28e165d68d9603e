"""Deep directory trees for tests, and their removal (pytest's own clean-up of old temporary
directories uses ``shutil.rmtree``, which cannot remove them on Python 3.11)."""

from __future__ import annotations

import os
from pathlib import Path

from pycri.host.tree import remove_tree

DEPTH = 3000
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def deep_tree(top: Path, depth: int = DEPTH, *, files: bool = True) -> None:
    """``top/d/d/.../d`` ``depth`` levels deep (far over PATH_MAX), made through descriptors,
    with a file every 500 levels and a symbolic link to ``/`` at the bottom."""
    top.mkdir()
    fd = os.open(top, _DIR)
    try:
        for level in range(depth):
            os.mkdir("d", dir_fd=fd)
            if files and level % 500 == 0:
                os.close(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=fd))
            child = os.open("d", _DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        os.symlink("/", "root-link", dir_fd=fd)
    finally:
        os.close(fd)


def empty(directory: Path) -> None:
    """Remove everything in ``directory`` whatever its depth (a test's clean-up)."""
    if directory.is_dir():
        for name in os.listdir(directory):
            remove_tree(directory / name, ignore_errors=True)
