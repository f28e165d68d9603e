"""Walking and removing directory trees of any depth: iterative, descriptor-relative, never leaving the tree.

``shutil.rmtree`` recurses once per directory level (Python 3.11), so a tree a few
thousand levels deep, which an image layer or a container's writable layer can
hold, raises ``RecursionError`` even with ``ignore_errors``. :func:`walk` keeps no
call stack and at most two descriptors open whatever the depth: it goes down with
``openat(O_NOFOLLOW | O_DIRECTORY)`` and back up through ``..``, checking at every
step that the directory it reaches is the one it expects (device and inode), so a
tree moved or swapped while it is walked stops the walk rather than sending it
elsewhere. It never follows a symbolic link and never enters another file system
or a mount point listed in ``/proc/self/mountinfo``. Blocking: call in a thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Generator
from dataclasses import dataclass, field

from pycri.host import mounts

__all__ = ["OnError", "remove_tree", "walk"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

OnError = Callable[[OSError], None]
"""Told of what could not be done; raising stops the walk, returning skips that entry (and what is below it)."""


@dataclass
class _Level:
    name: str  # in its parent
    st: os.stat_result
    path: str
    subdirs: list[str] = field(default_factory=list)  # still to visit


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _error(code: int, what: str, path: str) -> OSError:
    return OSError(code, f"{os.strerror(code)} ({what})", path)


def _named(exc: OSError, path: str) -> OSError:
    """``exc`` naming the whole path, not just the name relative to a descriptor."""
    return type(exc)(exc.errno, exc.strerror, path) if exc.errno is not None else exc


def _scan(fd: int, level: _Level, onerror: OnError) -> list[str]:
    """Names of the non-directories in ``fd``; its subdirectories go to ``level.subdirs``."""
    others: list[str] = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    is_dir = False
                (level.subdirs if is_dir else others).append(entry.name)
    except OSError as exc:
        onerror(_named(exc, level.path))
    level.subdirs.reverse()  # visited in listing order
    return others


def walk(
    top: int, top_path: str, onerror: OnError, *, mount_points: frozenset[str] = frozenset()
) -> Generator[tuple[int, str, str, os.stat_result | None], None, None]:
    """Everything below the directory open as ``top``, depth first, each directory after its contents.

    Yields ``(parent_fd, parent_path, name, st)``: ``parent_fd`` is valid until the next
    step, ``st`` is the ``lstat`` of a directory and None for anything else (a symbolic
    link is never followed). ``top_path`` names ``top`` in paths and errors;
    ``mount_points`` are paths below it not to enter (as other file systems are not),
    each reported to ``onerror`` as ``EBUSY``. ``top`` stays open and untouched.
    """
    fd = os.dup(top)
    try:
        current = _Level("", os.fstat(fd), top_path)
        above: list[_Level] = []
        for name in _scan(fd, current, onerror):
            yield fd, current.path, name, None
        while True:
            if current.subdirs:
                name = current.subdirs.pop()
                path = f"{current.path}/{name}"
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    onerror(_named(exc, path))
                    continue
                if not stat.S_ISDIR(st.st_mode):  # replaced since it was listed
                    yield fd, current.path, name, None
                    continue
                if st.st_dev != current.st.st_dev or path in mount_points:
                    onerror(_error(errno.EBUSY, "a mount point: not entered", path))
                    continue
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    onerror(_named(exc, path))
                    continue
                if not _same(os.fstat(child), st):
                    os.close(child)
                    onerror(_error(errno.EBUSY, "replaced while being opened: not entered", path))
                    continue
                os.close(fd)
                fd = child
                above.append(current)
                current = _Level(name, st, path)
                for other in _scan(fd, current, onerror):
                    yield fd, current.path, other, None
                continue
            if not above:
                return
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            done, current = current, above.pop()
            if not _same(os.fstat(parent), current.st):
                os.close(parent)
                raise _error(errno.ESTALE, "moved while its tree was walked: stopped", done.path)
            os.close(fd)
            fd = parent
            yield fd, current.path, done.name, done.st
    finally:
        os.close(fd)


def remove_tree(path: str | os.PathLike[str], ignore_errors: bool = False, *, dir_fd: int | None = None) -> list[OSError]:
    """Delete ``path`` (relative to ``dir_fd`` if given) and everything below it, like ``shutil.rmtree``.

    Any depth; symbolic links are removed, never followed (``path`` itself may be a
    link, a file or a directory); a mount point below ``path`` is left alone, with
    the directories that lead to it. Without ``ignore_errors`` the first failure is
    raised; with it, everything that can go goes and the failures are returned
    (nothing raised, a missing ``path`` is no failure). Blocking.
    """
    where = os.fspath(path)
    failures: list[OSError] = []

    def onerror(exc: OSError) -> None:
        if not ignore_errors:
            raise exc
        failures.append(exc)

    def shown(name: str) -> str:
        return name if dir_fd is None or name.startswith("/") else f"/proc/self/fd/{dir_fd}/{name}"

    try:
        st = os.stat(where, dir_fd=dir_fd, follow_symlinks=False)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(where, dir_fd=dir_fd)
            return failures
        fd = os.open(where, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not ignore_errors:
            raise
        return failures
    except OSError as exc:
        onerror(_named(exc, shown(where)))
        return failures
    try:
        if not _same(os.fstat(fd), st):
            onerror(_error(errno.EBUSY, "replaced while being opened: not removed", shown(where)))
            return failures
        real = os.path.realpath(f"/proc/self/fd/{fd}")
        below = frozenset(m for m in mounts.mounted_below(real) if m != real)
        with contextlib.closing(walk(fd, real, onerror, mount_points=below)) as entries:
            for parent, parent_path, name, entry in entries:
                try:
                    if entry is None:
                        os.unlink(name, dir_fd=parent)
                    else:
                        os.rmdir(name, dir_fd=parent)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    onerror(_named(exc, f"{parent_path}/{name}"))
    except OSError as exc:  # the walk itself could not go on (onerror only raises without ignore_errors)
        if not ignore_errors:
            raise
        failures.append(exc)
        return failures
    finally:
        os.close(fd)
    try:
        os.rmdir(where, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    except OSError as exc:
        onerror(_named(exc, real))
    return failures
