"""Waiting on processes that are not pycri's children: pidfds, no polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path


def settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def readable(fd: int) -> None:
    """Wait until ``fd`` is readable (or closed by its writer)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, settle, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def wait_pid(pid: int, timeout: float | None) -> bool:
    """Wait until process ``pid`` has exited; False on timeout. Uses a pidfd: no polling."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        await asyncio.wait_for(readable(pidfd), timeout)
        return True
    except TimeoutError:
        return False
    finally:
        os.close(pidfd)


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(path.read_text().strip())
    return 0
