"""The user a container runs as, from the request and the image's /etc/passwd and /etc/group.

Blocking (reads files of the container's root filesystem): call it in a thread.

The rules are containerd's and Kubernetes':

* the user: ``run_as_user``, else ``run_as_username`` (which must exist in the
  image's /etc/passwd), else the image's USER ("name", "uid", "name:group",
  "uid:gid"; a name must exist, an unknown uid is fine), else root;
* the primary group: ``run_as_group``, else the group part of the image's USER,
  else the passwd entry's group, else 0; ``run_as_group`` without a user is an
  error, as in containerd and CRI-O;
* supplementary groups: the request's ``supplemental_groups`` and, with the
  Merge policy (the default), every group of /etc/group that lists the user as
  a member (containerd's WithAdditionalGIDs); Strict takes only the request's.

Files are looked up as the container would see them: symbolic links are
followed, but resolved inside the root filesystem (an absolute link starts at
the rootfs, ``..`` stops at it), so nothing outside it is ever read.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.oci.container_spec import MAX_ID, ResolvedUser

__all__ = ["effective_user", "read_rootfs_file", "resolve_user"]

SC_FIELD = "config.linux.security_context"
MAX_FILE_SIZE = 10 * 1024 * 1024  # containerd's cap on /etc/passwd and /etc/group
MAX_SYMLINKS = 40


@dataclass(frozen=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


# -- reading files inside the rootfs ----------------------------------------------------------------


def path_parts(path: str) -> list[str]:
    """The names along ``path``, without empty ones and '.' (as a path walk takes them)."""
    return [p for p in path.split("/") if p and p != "."]


_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(root: int, names: list[str]) -> int | None:
    """A fresh fd of ``names`` below ``root``, each a real directory (None if one no longer is)."""
    fd = os.dup(root)
    for name in names:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = child
    return fd


def _read_regular(name: str, parent: int, display: str, limit: int) -> str:
    # O_NOFOLLOW: a swap to a symbolic link since the check makes this fail instead of leaving the rootfs.
    readable = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
    with os.fdopen(readable, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise errors.InvalidArgument(f"image file {display}: not a regular file")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise errors.InvalidArgument(f"image file {display}: larger than {limit} bytes")
    return data.decode("utf-8", "replace")


def read_rootfs_file(rootfs: str, path: str, limit: int = MAX_FILE_SIZE) -> str | None:
    """The text of ``path`` inside ``rootfs``, or None when it does not exist.

    Every component is opened with O_NOFOLLOW relative to its parent; a symbolic link is
    read and resolved within ``rootfs`` (as under chroot), never outside it. At most three
    descriptors are open at a time, however deep the path or its links.
    """
    display = "/" + "/".join(path_parts(path))
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    current = root  # the directory reached so far; ``resolved`` names it from the root
    resolved: list[str] = []
    pending = path_parts(path)
    links = 0

    def move(fd: int | None, names: list[str]) -> bool:
        nonlocal current, resolved
        if current != root:
            os.close(current)
        current, resolved = (fd, names) if fd is not None else (root, [])
        return fd is not None

    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if resolved and not move(_open_dir(root, resolved[:-1]), resolved[:-1]):
                    return None
                continue
            try:
                fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    return None
                raise
            try:
                mode = os.fstat(fd).st_mode
            except OSError:
                os.close(fd)
                raise
            if stat.S_ISLNK(mode):
                os.close(fd)
                links += 1
                if links > MAX_SYMLINKS:
                    raise errors.InvalidArgument(f"image file {display}: too many levels of symbolic links")
                target = os.readlink(name, dir_fd=current)
                if target.startswith("/"):
                    move(root, [])
                pending[:0] = path_parts(target)
                continue
            if pending:
                if not stat.S_ISDIR(mode):
                    os.close(fd)
                    return None
                move(fd, [*resolved, name])
                continue
            os.close(fd)
            if not stat.S_ISREG(mode):
                raise errors.InvalidArgument(f"image file {display}: not a regular file")
            return _read_regular(name, current, display, limit)
        return None  # the path named a directory (the root itself)
    finally:
        if current != root:
            os.close(current)
        os.close(root)


# -- /etc/passwd and /etc/group ---------------------------------------------------------------------


def _int(text: str) -> int | None:
    try:
        value = int(text, 10)
    except ValueError:
        return None
    return value if 0 <= value <= MAX_ID and text.strip().isdigit() else None


def parse_passwd(text: str) -> list[PasswdEntry]:
    entries = []
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        fields = line.split(":")
        if len(fields) < 4:
            continue
        uid, gid = _int(fields[2]), _int(fields[3])
        if uid is None or gid is None or not fields[0]:
            continue
        entries.append(PasswdEntry(fields[0], uid, gid))
    return entries


def parse_group(text: str) -> list[GroupEntry]:
    entries = []
    for line in text.splitlines():
        if not line or line.startswith(("#", "+", "-")):
            continue
        fields = line.split(":")
        if len(fields) < 3:
            continue
        gid = _int(fields[2])
        if gid is None or not fields[0]:
            continue
        members = tuple(m.strip() for m in fields[3].split(",") if m.strip()) if len(fields) > 3 else ()
        entries.append(GroupEntry(fields[0], gid, members))
    return entries


class _Files:
    """The image's user and group databases, read once, on first use."""

    def __init__(self, rootfs: str) -> None:
        self.rootfs = rootfs
        self._passwd: list[PasswdEntry] | None = None
        self._group: list[GroupEntry] | None = None

    @property
    def passwd(self) -> list[PasswdEntry]:
        if self._passwd is None:
            self._passwd = parse_passwd(read_rootfs_file(self.rootfs, "etc/passwd") or "")
        return self._passwd

    @property
    def group(self) -> list[GroupEntry]:
        if self._group is None:
            self._group = parse_group(read_rootfs_file(self.rootfs, "etc/group") or "")
        return self._group

    def user(self, match: Callable[[PasswdEntry], bool]) -> PasswdEntry | None:
        return next((e for e in self.passwd if match(e)), None)

    def group_by_name(self, name: str) -> GroupEntry | None:
        return next((g for g in self.group if g.name == name), None)


# -- resolution -------------------------------------------------------------------------------------


def _request_id(value: api.Int64Value, what: str) -> int:
    if not 0 <= value.value <= MAX_ID:
        raise errors.InvalidArgument(f"{what}: {value.value} is outside 0..{MAX_ID}")
    return value.value


def _numeric(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _by_uid(files: _Files, uid: int) -> tuple[int, str]:
    """The passwd entry's group and name for ``uid``; group 0 and no name when it has none."""
    entry = files.user(lambda e: e.uid == uid)
    return (entry.gid, entry.name) if entry is not None else (0, "")


def _image_user(files: _Files, image_user: str) -> tuple[int, int, str]:
    what = f"image config User {image_user!r}"
    user, sep, group = image_user.partition(":")
    if ":" in group or not user:
        raise errors.InvalidArgument(f"{what}: must be user, uid, user:group or uid:gid")
    uid = _numeric(user)
    if uid is not None:
        if uid > MAX_ID:
            raise errors.InvalidArgument(f"{what}: uid out of range")
        gid, name = _by_uid(files, uid)
    else:
        entry = files.user(lambda e: e.name == user)
        if entry is None:
            raise errors.InvalidArgument(f"{what}: user {user!r} not found in the image's /etc/passwd")
        uid, gid, name = entry.uid, entry.gid, entry.name
    if group:
        number = _numeric(group)
        if number is not None:
            if number > MAX_ID:
                raise errors.InvalidArgument(f"{what}: gid out of range")
            gid = number
        else:
            found = files.group_by_name(group)
            if found is None:
                raise errors.InvalidArgument(f"{what}: group {group!r} not found in the image's /etc/group")
            gid = found.gid
    elif sep:
        gid = 0  # "user:" with an empty group: containerd gives group 0
    return uid, gid, name


def resolve_user(rootfs: str, image_user: str, security: api.LinuxContainerSecurityContext) -> ResolvedUser:
    """The uid, gid and supplementary groups of the container's process."""
    has_user = security.HasField("run_as_user")
    if security.HasField("run_as_group") and not has_user and not security.run_as_username:
        raise errors.InvalidArgument(f"{SC_FIELD}.run_as_group: set without run_as_user or run_as_username")
    files = _Files(rootfs)
    if has_user:
        uid = _request_id(security.run_as_user, f"{SC_FIELD}.run_as_user")
        gid, name = _by_uid(files, uid)
    elif security.run_as_username:
        username = security.run_as_username
        entry = files.user(lambda e: e.name == username)
        if entry is None:
            number = _numeric(username)
            if number is None or number > MAX_ID:
                raise errors.InvalidArgument(f"{SC_FIELD}.run_as_username: user {username} not found in the image")
            uid = number
            gid, name = _by_uid(files, uid)
        else:
            uid, gid, name = entry.uid, entry.gid, entry.name
    elif image_user:
        uid, gid, name = _image_user(files, image_user)
    else:
        uid = 0
        gid, name = _by_uid(files, 0)
    if security.HasField("run_as_group"):
        gid = _request_id(security.run_as_group, f"{SC_FIELD}.run_as_group")

    extra: set[int] = set()
    for i, group in enumerate(security.supplemental_groups):
        if not 0 <= group <= MAX_ID:
            raise errors.InvalidArgument(f"{SC_FIELD}.supplemental_groups[{i}]: {group} is outside 0..{MAX_ID}")
        extra.add(group)
    policy = security.supplemental_groups_policy
    if policy == api.Merge:
        if name:
            # containerd leaves out a group named like the user: that is its primary group.
            extra.update(g.gid for g in files.group if name in g.members and g.name != name)
    elif policy != api.Strict:
        raise errors.InvalidArgument(f"{SC_FIELD}.supplemental_groups_policy: unknown policy {policy}")
    return ResolvedUser(uid=uid, gid=gid, additional_gids=sorted(extra - {gid}), username=name)


def effective_user(user: ResolvedUser) -> tuple[int, int, list[int]]:
    """uid, gid and the groups ContainerStatus.user reports: the primary group is among them, as `id -G` shows."""
    return user.uid, user.gid, sorted({user.gid, *user.additional_gids})
