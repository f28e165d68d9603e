"""conmon, the per-container monitor: starting it, and what it leaves behind.

pycri starts one conmon per container (the pod's infra container included).
conmon forks away from pycri at once, runs ``<runtime> create`` for the
container, reports the container's pid (or the runtime's error) on a sync
pipe, then stays as the container's subreaper: it writes the CRI log, serves
the attach socket, and writes the exit code to ``<exit_dir>/<id>`` when the
container ends. Because conmon is not pycri's child, containers keep running
and exits are still recorded while the daemon is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from pycri.oci.runtime import OCIRuntime

SYNC_TIMEOUT = 60.0


class ConmonError(RuntimeError):
    """conmon or the runtime it ran failed to create the container."""


@dataclass
class ConmonSpec:
    """How to run one container under conmon."""

    cid: str
    bundle: Path
    log_path: str
    exit_dir: Path
    socket_dir: Path
    persist_dir: Path
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False
    log_level: str = "error"
    extra_args: list[str] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.persist_dir / "pid"

    @property
    def conmon_pid_file(self) -> Path:
        return self.persist_dir / "conmon.pid"


def exit_file(exit_dir: Path, cid: str) -> Path:
    return exit_dir / cid


def read_exit_code(exit_dir: Path, cid: str) -> int | None:
    """The exit code conmon recorded, or None while the container has not exited."""
    try:
        text = exit_file(exit_dir, cid).read_text().strip()
    except FileNotFoundError:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def conmon_args(conmon: str, runtime: OCIRuntime, spec: ConmonSpec) -> list[str]:
    args = [
        conmon,
        "--api-version",
        "1",
        "--cid",
        spec.cid,
        "--cuuid",
        spec.cid,
        "--name",
        spec.cid,
        "--runtime",
        runtime.path,
        "--runtime-arg",
        f"--root={runtime.root}",
        "--bundle",
        str(spec.bundle),
        "--container-pidfile",
        str(spec.pid_file),
        "--conmon-pidfile",
        str(spec.conmon_pid_file),
        "--log-path",
        spec.log_path,
        "--exit-dir",
        str(spec.exit_dir),
        "--socket-dir-path",
        str(spec.socket_dir),
        "--persist-dir",
        str(spec.persist_dir),
        "--log-level",
        spec.log_level,
    ]
    if spec.terminal:
        args.append("--terminal")
    if spec.stdin:
        args.append("--stdin")
    if spec.stdin and not spec.stdin_once:
        args.append("--leave-stdin-open")
    return args + spec.extra_args


def _parse_sync(data: bytes) -> tuple[int, str]:
    for line in data.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "data" in doc:
            return int(doc["data"]), str(doc.get("message", ""))
    raise ConmonError(f"conmon sent no status on its sync pipe (got {data[:200]!r})")


async def create(conmon: str, runtime: OCIRuntime, spec: ConmonSpec) -> int:
    """Run conmon for ``spec``; returns the container's pid once the runtime has created it."""
    for directory in (spec.exit_dir, spec.socket_dir, spec.persist_dir):
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_inheritable(write_fd, True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(write_fd)}
    try:
        proc = await asyncio.create_subprocess_exec(
            *conmon_args(conmon, runtime, spec),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd=str(spec.bundle),
        )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise ConmonError(f"cannot run conmon {conmon}: {exc}") from exc
    os.close(write_fd)
    try:
        data = await asyncio.wait_for(_read_all(read_fd), SYNC_TIMEOUT)
    except TimeoutError:
        raise ConmonError(f"conmon for {spec.cid} did not report within {SYNC_TIMEOUT:.0f}s") from None
    finally:
        os.close(read_fd)
        _, stderr = await proc.communicate()
    if not data:
        raise ConmonError(f"conmon for {spec.cid} exited with {proc.returncode}: {stderr.decode(errors='replace').strip()}")
    pid, message = _parse_sync(data)
    if pid <= 0:
        raise ConmonError(message.strip() or f"the runtime failed to create {spec.cid}")
    return pid


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _readable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, _settle, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


async def _read_all(fd: int) -> bytes:
    """Read the sync pipe until conmon's first status line arrives or it closes the pipe."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        await _readable(loop, fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if b"\n" in chunk or b"}" in chunk:
            return b"".join(chunks)


async def wait_pid(pid: int, timeout: float | None) -> bool:
    """Wait until process ``pid`` has exited; False on timeout. Uses a pidfd: no polling."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(pidfd, _settle, done)
    try:
        await asyncio.wait_for(done, timeout)
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
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
