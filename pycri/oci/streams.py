"""Streams into containers: an exec'd command's (``runtime exec``) and a container's own (conmon's attach socket).

Exec with a terminal: pycri opens a pseudo-terminal and runs the runtime in the foreground
on its slave side (``setsid --ctty``: a new session whose controlling terminal it is) with
``process.terminal`` set and no console socket. runc and crun then make the container's
console themselves and copy between it and their own stdio, as CRI-O's ``ExecContainer``
relies on; their stdin is set raw first, so the outer terminal adds no echo or line editing.
Resizing sets the outer terminal's size (TIOCSWINSZ on the master): the kernel signals
SIGWINCH to the runtime, which copies the size to the container's console. Without a
terminal the runtime gets pipes, which runc copies and crun hands on to the command.

The command's pid comes from ``--pid-file``: killing the runtime process alone would leave
the command running in the container, so :meth:`ExecProcess.kill` kills the command (the
runtime then reaps it and exits), and only then the runtime if it lingers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import os
import shutil
import signal
import socket
import struct
import termios
import tty as tty_mod
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType

from pycri.oci import conmon
from pycri.oci.interface import RuntimeContainer, StreamName
from pycri.procs import read_pid, readable, settle, wait_pid

READ_SIZE = 65536
ATTACH_CHUNK = 8192  # conmon reads at most CONN_SOCK_BUF_SIZE - 1 bytes of one message
KILL_WAIT = 5.0
PID_FILE_WAIT = 5.0
EOT = b"\x04"  # the terminal's EOF character (VEOF) in canonical mode

Output = tuple[StreamName, bytes] | None


def set_window_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def resize_terminal_of(pid: int, width: int, height: int) -> None:
    """Resize the terminal that is process ``pid``'s stdin (a container's console), if it is one. Blocking."""
    link = f"/proc/{pid}/fd/0"
    try:
        if not os.readlink(link).startswith("/dev/pts/"):
            return
        fd = os.open(link, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return  # gone meanwhile
    try:
        if os.isatty(fd):
            set_window_size(fd, width, height)
    finally:
        os.close(fd)


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    loop.add_writer(fd, settle, ready)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await _writable(fd)
            continue
        view = view[written:]


class _Outputs:
    """Output of several sources, read in the order it arrives, with backpressure."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Output] = asyncio.Queue(maxsize=16)
        self.tasks: list[asyncio.Task[None]] = []
        self._open = 0
        self._ended = False

    def add(self, name: StreamName, read: Callable[[], Awaitable[bytes]]) -> None:
        self._open += 1
        self.tasks.append(asyncio.create_task(self._pump(name, read)))

    async def _pump(self, name: StreamName, read: Callable[[], Awaitable[bytes]]) -> None:
        try:
            while data := await read():
                await self.queue.put((name, data))
        except (OSError, ValueError):
            pass  # closed under it: the session is closing
        self._open -= 1
        if self._open == 0:
            await self.queue.put(None)

    async def get(self) -> Output:
        if self._ended:
            return None
        item = await self.queue.get()
        if item is None:
            self._ended = True
        return item

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self._ended = True


class ExecProcess:
    """An :class:`~pycri.oci.interface.ExecSession`: ``runtime exec`` of one command in one container."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        *,
        master: int | None,
        pid_file: Path,
        leftovers: list[Path],
        container_pid: int,
    ) -> None:
        self._proc = proc
        self._master = master
        self._pid_file = pid_file
        self._leftovers = leftovers
        self._outputs = _Outputs()
        self._closed = False
        self._killing: asyncio.Task[None] | None = None
        if master is not None:
            self._outputs.add("stdout", self._read_master)
        else:
            assert proc.stdout is not None
            assert proc.stderr is not None
            self._outputs.add("stdout", functools.partial(proc.stdout.read, READ_SIZE))
            self._outputs.add("stderr", functools.partial(proc.stderr.read, READ_SIZE))
        # A container that exits ends its exec sessions (also where its PID namespace outlives it).
        self._watch = asyncio.create_task(self._end_with(container_pid))

    @property
    def tty(self) -> bool:
        return self._master is not None

    @property
    def pid(self) -> int:
        """The runtime process's pid."""
        return self._proc.pid

    async def _read_master(self) -> bytes:
        assert self._master is not None
        while True:
            try:
                return os.read(self._master, READ_SIZE)
            except BlockingIOError:
                await readable(self._master)
            except OSError as exc:
                if exc.errno == errno.EIO:  # the slave side has no holder left: the runtime is gone
                    return b""
                raise

    async def _end_with(self, container_pid: int) -> None:
        if container_pid <= 0:
            return
        await wait_pid(container_pid, None)
        if self._proc.returncode is None:
            await self.kill()

    async def read(self) -> Output:
        return await self._outputs.get()

    async def write(self, data: bytes) -> None:
        if self._master is not None:
            await _write_fd(self._master, data)
            return
        if self._proc.stdin is None:
            raise ValueError("this exec session has no stdin")
        self._proc.stdin.write(data)
        await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self._master is not None:
            await _write_fd(self._master, EOT)
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()
            with contextlib.suppress(ConnectionError):
                await self._proc.stdin.wait_closed()

    async def resize(self, width: int, height: int) -> None:
        if self._master is None or width <= 0 or height <= 0:
            return
        set_window_size(self._master, width, height)
        # runc copies the new size to the container's console on SIGWINCH; crun only does so from
        # 1.8.7 on (Debian 12 has 1.8.1), so the command's own terminal is resized too (to the same
        # size: the kernel signals a change once).
        pid = await asyncio.to_thread(read_pid, self._pid_file)
        if pid and self._proc.returncode is None:
            await asyncio.to_thread(resize_terminal_of, pid, width, height)

    async def wait(self) -> int:
        code = await self._proc.wait()
        return 128 - code if code < 0 else code

    async def _command_pid(self) -> int:
        """The command's pid, once the runtime has written it (0 if it exits without doing so)."""
        deadline = asyncio.get_running_loop().time() + PID_FILE_WAIT
        while True:
            with contextlib.suppress(FileNotFoundError, ValueError):
                text = await asyncio.to_thread(self._pid_file.read_text)
                if text.strip():
                    return int(text.strip())
            if self._proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                return 0
            await asyncio.sleep(0.01)

    async def kill(self) -> None:
        if self._killing is None:
            self._killing = asyncio.create_task(self._kill())
        await asyncio.shield(self._killing)

    async def _kill(self) -> None:
        if self._proc.returncode is None:
            pid = await self._command_pid()
            # Only while the runtime runs is the pid surely the command's: it is the command's reaper.
            if pid and self._proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(self._proc.wait(), KILL_WAIT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await self._proc.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.kill()
        finally:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            await self._outputs.stop()
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            if self._master is not None:
                os.close(self._master)
                self._master = None
            for leftover in self._leftovers:
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()

    async def __aenter__(self) -> ExecProcess:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


async def start_exec(
    argv: list[str], *, tty: bool, stdin: bool, width: int, height: int, pid_file: Path, leftovers: list[Path], container_pid: int
) -> ExecProcess:
    """Run the runtime's exec command line ``argv`` (with a terminal: on a new pseudo-terminal)."""
    if not tty:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return ExecProcess(proc, master=None, pid_file=pid_file, leftovers=leftovers, container_pid=container_pid)
    master, slave = os.openpty()
    try:
        tty_mod.setraw(slave)  # the runtime sets it raw too, but only once it runs: no echo before that
        if width > 0 and height > 0:
            set_window_size(master, width, height)
        os.set_blocking(master, False)
        # setsid --ctty: a session of its own whose controlling terminal is its stdin, the slave, so
        # the kernel signals SIGWINCH to it on a resize (and SIGHUP once the master closes).
        setsid = shutil.which("setsid") or "/usr/bin/setsid"
        proc = await asyncio.create_subprocess_exec(setsid, "--ctty", "--wait", *argv, stdin=slave, stdout=slave, stderr=slave)
    except BaseException:
        os.close(master)
        raise
    finally:
        os.close(slave)
    return ExecProcess(proc, master=master, pid_file=pid_file, leftovers=leftovers, container_pid=container_pid)


class AttachConnection:
    """An :class:`~pycri.oci.interface.AttachSession`: a client of conmon's attach socket."""

    def __init__(self, sock: socket.socket, c: RuntimeContainer) -> None:
        self._sock = sock
        self._container = c
        self._ended = False

    @classmethod
    async def connect(cls, socket_dir: Path, c: RuntimeContainer) -> AttachConnection:
        # <socket dir>/<id> links to the bundle, where conmon binds "attach". The whole path may be
        # longer than a socket address holds: connect through /proc/self/fd, as conmon binds.
        directory = os.open(socket_dir / c.id, os.O_PATH | os.O_CLOEXEC)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{directory}/attach")
        except BaseException:
            sock.close()
            raise
        finally:
            os.close(directory)
        return cls(sock, c)

    async def read(self) -> Output:
        if self._ended:
            return None
        while True:
            try:
                message = await asyncio.get_running_loop().sock_recv(self._sock, READ_SIZE)
            except (ConnectionResetError, OSError) as exc:
                if isinstance(exc, ConnectionResetError) or exc.errno in (errno.ECONNRESET, errno.EBADF):
                    message = b""
                else:
                    raise
            if not message:
                self._ended = True
                return None
            stream: StreamName = "stderr" if message[0] == conmon.ATTACH_STDERR else "stdout"
            if len(message) > 1:
                return stream, message[1:]

    async def write(self, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        for start in range(0, len(data), ATTACH_CHUNK):
            await loop.sock_sendall(self._sock, data[start : start + ATTACH_CHUNK])

    async def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    async def resize(self, width: int, height: int) -> None:
        if self._container.terminal and width > 0 and height > 0:
            line = conmon.ctl_line(conmon.CTL_RESIZE, height, width)
            await asyncio.to_thread(conmon.write_ctl, self._container, line)

    async def close(self) -> None:
        self._ended = True
        self._sock.close()

    async def __aenter__(self) -> AttachConnection:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()
