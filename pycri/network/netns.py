"""Persistent network namespaces: bind mounts of nsfs files in /run/netns, as ``ip netns`` makes them.

A pod's network namespace outlives its infra process (so CNI DEL can still find
it), hence it is pinned by a bind mount rather than referenced by
``/proc/<pid>/ns/net``. ``create`` only makes the namespace: every link in it,
``lo`` included, stays down until CNI configures it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import socket
import subprocess
import threading
from pathlib import Path

from pycri.errors import AlreadyExists, Internal, InvalidArgument
from pycri.host.userns import network_helper

NETNS_DIR = Path("/run/netns")
IP = "ip"
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")
_NSFS_REFERENCE = "/proc/self/ns/net"


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidArgument(f"invalid network namespace name {name!r}: use letters, digits, '_', '.' and '-'")


def path_of(name: str) -> Path:
    """Where the namespace called ``name`` is pinned."""
    _check_name(name)
    return NETNS_DIR / name


async def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    except FileNotFoundError as exc:
        raise Internal(f"{argv[0]} not found (apt-get install iproute2): {exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise Internal(f"{' '.join(argv)}: no answer after {timeout:g}s") from None
    except asyncio.CancelledError:
        # Do not let the command finish behind the caller's back (after its clean-up ran).
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def exists(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a live network namespace reference (a pinned bind mount or /proc/<pid>/ns/net).

    A file left behind after its bind mount went away is a plain file on the
    parent filesystem and does not count.
    """
    try:
        st = os.stat(path)
        reference = os.stat(_NSFS_REFERENCE)
    except OSError:
        return False
    # All namespace files live on the single nsfs superblock.
    return st.st_dev == reference.st_dev


async def create(name: str, userns: str = "") -> Path:
    """Make the persistent network namespace ``/run/netns/<name>`` and return its path.

    With ``userns`` (a pinned user namespace) the network namespace is owned by
    that user namespace, so its root may mount sysfs in it.
    """
    path = path_of(name)
    if await asyncio.to_thread(os.path.lexists, path):
        raise AlreadyExists(f"network namespace {name!r} already exists at {path}")
    if not userns:
        result = await _run([IP, "netns", "add", name], timeout=30)
        if result.returncode != 0:
            raise Internal(f"ip netns add {name}: {result.stderr.strip() or f'exit status {result.returncode}'}")
        return path
    helper = await network_helper(userns)
    try:
        result = await _run([IP, "netns", "attach", name, str(helper.pid)], timeout=30)
    finally:
        await helper.close()
    if result.returncode != 0:
        raise Internal(f"ip netns attach {name}: {result.stderr.strip() or f'exit status {result.returncode}'}")
    return path


def _name_of(path_or_name: str | os.PathLike[str]) -> tuple[str, Path]:
    text = os.fspath(path_or_name)
    if "/" not in text:
        return text, path_of(text)
    path = Path(text)
    if os.path.realpath(path.parent) != os.path.realpath(NETNS_DIR):
        raise InvalidArgument(f"{path} is not a network namespace under {NETNS_DIR}")
    _check_name(path.name)
    return path.name, path


async def delete(path_or_name: str | os.PathLike[str]) -> None:
    """Remove a namespace made by :func:`create` (by name or path); a missing one is fine.

    ``ip netns delete`` unmounts and unlinks; when the bind mount is already
    gone but the file remains, the file is removed too.
    """
    name, path = _name_of(path_or_name)
    if not await asyncio.to_thread(os.path.lexists, path):
        return
    result = await _run([IP, "netns", "delete", name], timeout=30)
    if result.returncode == 0 or not await asyncio.to_thread(os.path.lexists, path):
        return
    if not await asyncio.to_thread(exists, path):
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as exc:
            raise Internal(f"removing stale network namespace file {path}: {exc}") from exc
        return
    raise Internal(f"ip netns delete {name}: {result.stderr.strip() or f'exit status {result.returncode}'}")


async def run_in(name: str, *argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the namespace (``ip netns exec``); with ``check``, a non-zero exit raises."""
    _check_name(name)
    if not argv:
        raise InvalidArgument("run_in needs a command")
    result = await _run([IP, "netns", "exec", name, *argv], timeout=timeout)
    if check and result.returncode != 0:
        raise Internal(f"ip netns exec {name} {' '.join(argv)}: exit status {result.returncode}: {result.stderr.strip()}")
    return result


_CLONE_NEWNET = 0x40000000


def _socket_in(path: str, family: socket.AddressFamily) -> socket.socket:
    """Runs in a thread of its own, which ends right after: the namespace leaves with it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    return sock


async def socket_in(path: str | os.PathLike[str], family: socket.AddressFamily = socket.AF_INET) -> socket.socket:
    """A non-blocking TCP socket that lives in the network namespace pinned at ``path``.

    A socket belongs to the namespace it was created in, whichever thread uses it later; so a
    short-lived thread enters the namespace (setns), creates the socket and ends. No thread of
    the daemon stays in a foreign namespace and nothing needs restoring (containerd's
    netns.Do locks an OS thread for the same reason)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[socket.socket] = loop.create_future()

    def settle(outcome: socket.socket | BaseException) -> None:
        if done.cancelled():
            if isinstance(outcome, socket.socket):
                outcome.close()
        elif isinstance(outcome, BaseException):
            done.set_exception(outcome)
        else:
            done.set_result(outcome)

    def run() -> None:
        outcome: socket.socket | BaseException
        try:
            outcome = _socket_in(os.fspath(path), family)
        except BaseException as exc:  # handed to the waiting task
            outcome = exc
        loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name="pycri-netns", daemon=True).start()
    return await done
