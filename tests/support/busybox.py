"""Test images made of the host's static busybox (Debian's busybox-static at /bin/busybox).

One layer holds ``/bin/busybox`` with a hard link per applet the tests use, a small
``/etc/passwd`` and ``/etc/group`` (root, nobody 65534, alice 1000:1000, a group "extra"
5000 listing alice), ``/tmp`` (1777) and empty ``/proc``, ``/dev``, ``/sys``, ``/mnt``,
``/data``. ``busybox_image(...)`` wraps it in an image whose config varies by keyword
(user, entrypoint, cmd, env, working_dir, stop_signal), and ``push_busybox`` pushes such an
image to a registry under ``busybox:<tag>``; the layer is built once and shared, so every
variant after the first uploads only its config and manifest.

Debian's busybox-static is built with FEATURE_SH_STANDALONE: its shell runs applets in
process (or re-executes /proc/self/exe), so the links matter only for commands that the
runtime executes directly (``/bin/sleep``, ``/bin/id``...).
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Sequence

from tests.support.images import DEFAULT_ENV, Dir, Entry, File, Hardlink, Image, Layer, push
from tests.support.registry import LocalRegistry

BUSYBOX = "/bin/busybox"
REPOSITORY = "busybox"

# Applets linked into /bin (only those this busybox has are linked; see ``applets``).
WANTED_APPLETS = (
    "sh",
    "echo",
    "cat",
    "sleep",
    "id",
    "ls",
    "ps",
    "pidof",
    "top",
    "hostname",
    "mount",
    "umount",
    "touch",
    "kill",
    "true",
    "false",
    "env",
    "test",
    "grep",
    "head",
    "tail",
    "tr",
    "wc",
    "stat",
    "ping",
    "nc",
    "ip",
    "mkdir",
    "printf",
    "readlink",
    "unshare",
    "pwd",
    "dd",
    "rm",
    "yes",
)

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
alice:x:1000:1000:Alice:/home/alice:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""

GROUP = """\
root:x:0:
alice:x:1000:
extra:x:5000:alice
nogroup:x:65534:
"""


def available() -> bool:
    """Whether the host has a busybox to build images from."""
    return os.access(BUSYBOX, os.X_OK)


@functools.cache
def applets() -> tuple[str, ...]:
    """The wanted applets this busybox provides (``busybox --list``)."""
    listed = set(subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True).stdout.split())
    return tuple(a for a in WANTED_APPLETS if a in listed)


@functools.cache
def busybox_layer() -> Layer:
    """The one layer every busybox test image shares."""
    with open(BUSYBOX, "rb") as f:
        binary = f.read()
    entries: list[Entry] = [
        Dir("bin"),
        File("bin/busybox", binary, mode=0o755),
        *(Hardlink(f"bin/{name}", "bin/busybox", mode=0o755) for name in applets()),
        Dir("etc"),
        File("etc/passwd", PASSWD.encode()),
        File("etc/group", GROUP.encode()),
        Dir("tmp", mode=0o1777),
        Dir("root", mode=0o700),
        Dir("home"),
        Dir("home/alice", mode=0o755, uid=1000, gid=1000),
        Dir("data"),
        Dir("mnt"),
        Dir("proc", mode=0o555),
        Dir("dev"),
        Dir("sys", mode=0o555),
    ]
    return Layer(entries)


def busybox_image(
    *,
    user: str = "",
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = None,
    env: Sequence[str] | None = DEFAULT_ENV,
    working_dir: str | None = None,
    stop_signal: str | None = None,
    labels: dict[str, str] | None = None,
) -> Image:
    """A busybox image; the keywords become the image config's User, Entrypoint, Cmd, Env, WorkingDir, StopSignal."""
    return Image(
        [busybox_layer()],
        user=user,
        entrypoint=entrypoint,
        cmd=cmd,
        env=env,
        working_dir=working_dir,
        stop_signal=stop_signal,
        labels=labels,
    )


def push_busybox(registry: LocalRegistry, tag: str, image: Image | None = None) -> str:
    """Push ``image`` (default: a plain busybox image) as ``busybox:<tag>``; returns its reference on ``registry``."""
    push(registry, REPOSITORY, tag, image if image is not None else busybox_image())
    return f"{registry.host}/{REPOSITORY}:{tag}"


__all__ = [
    "BUSYBOX",
    "GROUP",
    "PASSWD",
    "REPOSITORY",
    "WANTED_APPLETS",
    "applets",
    "available",
    "busybox_image",
    "busybox_layer",
    "push_busybox",
]
