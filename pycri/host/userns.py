"""Persistent user namespaces, and network namespaces owned by them.

A pod's user namespace must exist before its network namespace (which it
owns, so the pod's root may mount sysfs) and before its first container, and
must outlive every process in it. pycri pins it like ``ip netns`` pins network
namespaces: a helper process enters a new namespace, pycri writes its
``uid_map`` and ``gid_map`` from outside (root needs no newuidmap), bind-mounts
``/proc/<pid>/ns/user`` onto a file, and lets the helper exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

from pycri.errors import Internal
from pycri.host import mounts
from pycri.oci.userns import UserNamespace

HELPER_TIMEOUT = 10.0
# The helper says when it is inside its new namespace(s), then waits for stdin to close.
_READY = b"ready\n"
_SCRIPT = "echo ready; read _"


class Helper:
    """A process waiting inside new namespaces (``argv`` puts it there) until closed."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *argv: str) -> Helper:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, "/bin/sh", "-c", _SCRIPT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            raise Internal(f"{argv[0]}: {exc}") from exc
        helper = cls(proc)
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), HELPER_TIMEOUT)
        except BaseException:
            await helper.close()
            raise
        if line != _READY:
            err = b""
            if proc.stderr is not None:
                with contextlib.suppress(TimeoutError):
                    err = await asyncio.wait_for(proc.stderr.read(), 1)
            await helper.close()
            raise Internal(f"{' '.join(argv)}: {err.decode(errors='replace').strip() or 'failed'}")
        return helper

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def close(self) -> None:
        if self.proc.returncode is None:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), HELPER_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()


def write_maps(pid: int, userns: UserNamespace) -> None:
    """Give the fresh user namespace of ``pid`` its mappings (as its parent's root may). Blocking."""
    for name, mapping in (("uid_map", userns.uid), ("gid_map", userns.gid)):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(mapping.line())


def _pin(pid: int, kind: str, target: Path) -> None:
    target.touch(mode=0o444, exist_ok=True)
    mounts.mount(f"/proc/{pid}/ns/{kind}", str(target), "", mounts.MS_BIND)


async def pin(target: Path, userns: UserNamespace) -> None:
    """Create a user namespace with ``userns``'s mappings and pin it at ``target``."""
    helper = await user_helper(userns)
    try:
        await asyncio.to_thread(_pin, helper.pid, "user", target)
    except OSError as exc:
        raise Internal(f"user namespace {target}: {exc}") from exc
    finally:
        await helper.close()


async def user_helper(userns: UserNamespace) -> Helper:
    """A helper in a new user namespace with ``userns``'s mappings (``/proc/<pid>/ns/user``); close it after."""
    helper = await Helper.start("unshare", "--user", "--")
    try:
        await asyncio.to_thread(write_maps, helper.pid, userns)
    except BaseException as exc:
        await helper.close()
        if isinstance(exc, OSError):
            raise Internal(f"user namespace mappings {userns.uid.line().strip()}: {exc}") from exc
        raise
    return helper


async def network_helper(userns_path: str) -> Helper:
    """A helper in a new network namespace owned by the pinned user namespace ``userns_path``.

    The caller pins its network namespace (``ip netns attach``), then closes it.
    """
    return await Helper.start("nsenter", f"--user={userns_path}", "--", "unshare", "--net", "--")


def release(target: Path) -> None:
    """Unpin a namespace pinned by :func:`pin` and remove its file; fine when already gone. Blocking."""
    with contextlib.suppress(FileNotFoundError):
        while mounts.unmount(str(target)):
            pass
    with contextlib.suppress(FileNotFoundError):
        os.unlink(target)
