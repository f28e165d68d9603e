"""ID-mapped mounts (Linux 5.12+): a directory seen through a user namespace's mappings.

For a pod with its own user namespace, pycri clones each image layer and each
bind-mount source as an ID-mapped mount: a file owned by host UID 0 shows as
the pod's root (say host UID 65536), which the pod's user namespace maps back
to 0. The layers stay shared and unchanged on disk; only their view differs.
The overlay of ID-mapped lower layers (Linux 5.19+) then gives a rootfs the
pod's root owns. This needs no support from the OCI runtime: a bind mount of
an ID-mapped mount keeps its mapping.

Blocking (syscalls): call in a thread.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long

# System call numbers shared by every architecture (asm-generic/unistd.h).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000


class MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _idmapped_tree(source: str, userns_fd: int) -> int:
    """A detached ID-mapped clone of the mount tree at ``source`` (an fd to attach or close)."""
    flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE
    tree = _check(
        _libc.syscall(SYS_OPEN_TREE, ctypes.c_int(AT_FDCWD), source.encode(), ctypes.c_uint(flags)), f"open_tree {source}"
    )
    try:
        attr = MountAttr(MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(
            _libc.syscall(
                SYS_MOUNT_SETATTR,
                ctypes.c_int(tree),
                b"",
                ctypes.c_uint(AT_EMPTY_PATH | AT_RECURSIVE),
                ctypes.byref(attr),
                ctypes.c_size_t(ctypes.sizeof(attr)),
            ),
            f"ID-mapping {source}",
        )
    except BaseException:
        os.close(tree)
        raise
    return tree


def clone(source: str, target: str, userns_path: str) -> None:
    """Mount ``source`` at ``target`` as seen through ``userns_path``'s mappings; a missing ``target``
    is made as a directory or an empty file, like ``source``."""
    if not os.path.lexists(target):
        if os.path.isdir(source):
            os.mkdir(target)
        else:
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    userns_fd = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        tree = _idmapped_tree(source, userns_fd)
    finally:
        os.close(userns_fd)
    try:
        _check(
            _libc.syscall(
                SYS_MOVE_MOUNT,
                ctypes.c_int(tree),
                b"",
                ctypes.c_int(AT_FDCWD),
                target.encode(),
                ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH),
            ),
            f"attaching the ID-mapped {source} at {target}",
        )
    finally:
        os.close(tree)


def kernel_has_mount_setattr() -> bool:
    """Whether ``mount_setattr(2)`` exists: called with a bad fd, it fails EBADF, not ENOSYS."""
    result = _libc.syscall(SYS_MOUNT_SETATTR, -1, None, 0, None, 0)
    return result == -1 and ctypes.get_errno() != errno.ENOSYS


def unsupported_reason(path: str, userns_path: str) -> str:
    """Why ``path``'s file system cannot be ID-mapped through the user namespace ``userns_path``
    ("" when it can), found by trying (as critest checks it). Blocking."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    userns_fd = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(_idmapped_tree(path, userns_fd))
    except OSError as exc:
        return str(exc)
    finally:
        os.close(userns_fd)
    return ""
