"""conmon, the per-container monitor: its command line, its sync pipe, and what it leaves behind.

pycri starts one conmon per container (the pod's infra container included).
conmon forks away from pycri at once, runs ``<runtime> create`` for the
container, reports the container's pid (or the runtime's error) on a sync
pipe, then stays as the container's subreaper: it writes the CRI log, serves
the attach socket, and writes the exit code to ``<exit_dir>/<id>`` when the
container ends. Because conmon is not pycri's child, containers keep running
and exits are still recorded while the daemon is down.

Only :class:`pycri.oci.runtime.OCIRuntime` uses this module. conmon's files for a container
(conmon 2.1, ``src/ctrl.c`` and ``src/conn_sock.c``):

- ``<bundle>/ctl``: a FIFO of control lines ``"<type> <height> <width>\\n"``, type 1 resizing
  the terminal, 2 reopening the log file;
- ``<socket_dir>/<id>``: a symbolic link to the bundle, and ``<bundle>/attach``: the attach
  socket (SOCK_SEQPACKET). Each message conmon sends is one byte naming the stream (2 stdout,
  3 stderr) and the output; what a client sends goes to the container's stdin. conmon closes
  the container's stdin when a client goes unless it runs with ``--leave-stdin-open``.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from pycri.oci.interface import ConmonError, RuntimeContainer
from pycri.procs import read_pid, readable

SYNC_TIMEOUT = 60.0

CTL_RESIZE = 1  # WIN_RESIZE_EVENT
CTL_REOPEN_LOG = 2  # REOPEN_LOGS_EVENT
ATTACH_STDOUT = 2  # STDOUT_PIPE, the first byte of an attach socket message
ATTACH_STDERR = 3  # STDERR_PIPE


def pid_file(c: RuntimeContainer) -> Path:
    return c.persist_dir / "pid"


def conmon_pid_file(c: RuntimeContainer) -> Path:
    return c.persist_dir / "conmon.pid"


def monitor_pid(c: RuntimeContainer) -> int:
    """The pid of ``c``'s conmon while it runs, from its pid file (0: none, or the pid is another process's). Blocking."""
    pid = read_pid(conmon_pid_file(c))
    if pid <= 0:
        return 0
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return 0
    return pid if c.id.encode() in cmdline else 0


def ctl_fifo(c: RuntimeContainer) -> Path:
    return c.bundle / "ctl"


def ctl_line(kind: int, height: int = 0, width: int = 0) -> bytes:
    return f"{kind} {height} {width}\n".encode()


def write_ctl(c: RuntimeContainer, line: bytes) -> None:
    """Send one control line to conmon (it has the FIFO open while it runs). Blocking."""
    fd = os.open(ctl_fifo(c), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


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


def conmon_args(
    conmon: str, runtime_path: str, runtime_root: str, c: RuntimeContainer, exit_dir: Path, socket_dir: Path, log_level: str
) -> list[str]:
    args = [
        conmon,
        "--api-version",
        "1",
        "--cid",
        c.id,
        "--cuuid",
        c.id,
        "--name",
        c.id,
        "--runtime",
        runtime_path,
        "--runtime-arg",
        f"--root={runtime_root}",
        "--bundle",
        str(c.bundle),
        "--container-pidfile",
        str(pid_file(c)),
        "--conmon-pidfile",
        str(conmon_pid_file(c)),
        "--log-path",
        f"k8s-file:{c.log_path}" if c.log_path else "k8s-file:/dev/null",
        "--exit-dir",
        str(exit_dir),
        "--socket-dir-path",
        str(socket_dir),
        "--persist-dir",
        str(c.persist_dir),
        "--log-level",
        log_level,
    ]
    if c.terminal:
        args.append("--terminal")
    if c.stdin:
        args.append("--stdin")
    if c.stdin and not c.stdin_once:
        args.append("--leave-stdin-open")
    return args


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


async def run(args: list[str], c: RuntimeContainer) -> int:
    """Run conmon with ``args`` for ``c``; returns the container's pid once the runtime has created it."""
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_inheritable(write_fd, True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(write_fd)}
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            pass_fds=(write_fd,),
            start_new_session=True,
            cwd=str(c.bundle),
        )
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise ConmonError(f"cannot run conmon {args[0]}: {exc}") from exc
    os.close(write_fd)
    try:
        data = await asyncio.wait_for(_read_all(read_fd), SYNC_TIMEOUT)
    except TimeoutError:
        raise ConmonError(f"conmon for {c.id} did not report within {SYNC_TIMEOUT:.0f}s") from None
    finally:
        os.close(read_fd)
        _, stderr = await proc.communicate()
    if not data:
        raise ConmonError(f"conmon for {c.id} exited with {proc.returncode}: {stderr.decode(errors='replace').strip()}")
    pid, message = _parse_sync(data)
    if pid <= 0:
        raise ConmonError(message.strip() or f"the runtime failed to create {c.id}")
    return pid


async def _read_all(fd: int) -> bytes:
    """Read the sync pipe until conmon's first status line arrives or it closes the pipe."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    while True:
        await readable(fd)
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if b"\n" in chunk or b"}" in chunk:
            return b"".join(chunks)
