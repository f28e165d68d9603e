"""Mounting and unmounting with mount(2)/umount2(2) directly (no subprocess). Blocking: call in a thread."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import re

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MNT_DETACH = 2


def mount(source: str, target: str, fstype: str, flags: int = 0, data: str = "") -> None:
    if _libc.mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode() or None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {fstype} on {target}: {os.strerror(err)}")


def unmount(target: str, *, detach: bool = True) -> bool:
    """Unmount ``target``; False when nothing was mounted there."""
    if _libc.umount2(target.encode(), MNT_DETACH if detach else 0) != 0:
        err = ctypes.get_errno()
        if err in (errno.EINVAL, errno.ENOENT):
            return False
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return True


def is_mountpoint(path: str) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[4].replace("\\040", " ") == target:
                return True
    return False


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes (``\\040``)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounted_below(path: str) -> list[str]:
    """Mount points at or under ``path`` in this mount namespace, deepest first."""
    root = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                target = _unescape(fields[4])
                if target == root or target.startswith(root + "/"):
                    found.append(target)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount_below(path: str) -> list[str]:
    """Unmount everything at or under ``path``; returns what is still mounted there (empty on success).

    Run before deleting a directory that may hold mounts: a recursive delete would
    otherwise walk into them (a bind-mounted volume, an image layer) and empty them.
    """
    for _ in range(8):  # stacked mounts need one round each
        targets = mounted_below(path)
        if not targets:
            return []
        for target in targets:
            try:
                unmount(target)
            except OSError:
                continue
    return mounted_below(path)
