"""Processes that are not pycri's children: waiting on them with pidfds (no polling), and telling
whether a recorded pid still names the process pycri recorded.

A pid alone does not name a process for long: once it ends, the kernel may give its number to
another one. So pycri records each process's start time (field 22 of ``/proc/PID/stat``, clock
ticks since boot) with its pid, as runc and CRI-O do, and a pid whose start time differs is not
its process. Start times count from the boot, so they mean nothing after a reboot: see
``pycri.host.boot``.
"""

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


def start_time(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot); 0 when there is no such live process.

    A zombie counts as gone: it has exited, only its parent has not collected it yet.
    """
    if pid <= 0:
        return 0
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0
    # The command name (field 2) is in parentheses and may hold spaces and parentheses itself.
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20 or fields[0] in (b"Z", b"X", b"x"):
        return 0
    return int(fields[19])  # field 22 overall: fields[0] is field 3


def same_process(pid: int, started: int) -> bool:
    """Whether ``pid`` still names the live process that started at ``started`` (``start_time``).

    ``started`` 0 (a record from before pycri kept start times) trusts the pid alone.
    """
    if not started:
        return pid_alive(pid)
    return start_time(pid) == started


def read_pid(path: Path) -> int:
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(path.read_text().strip())
    return 0
