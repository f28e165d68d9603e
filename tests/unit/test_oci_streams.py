"""conmon's command line and control lines, and the stream sessions' plumbing without a container.

The exec session runs a plain shell as its "runtime" (on a pseudo-terminal or on pipes); the
attach session talks to one end of a SOCK_SEQPACKET pair, framed as conmon frames its messages.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from pycri.oci import conmon, streams
from pycri.oci.interface import RuntimeContainer

C = RuntimeContainer(id="c1", bundle=Path("/b/bundle"), persist_dir=Path("/b/conmon"), log_path="/logs/c.log")


def args_for(c: RuntimeContainer) -> list[str]:
    return conmon.conmon_args("conmon", "/usr/sbin/runc", "/run/runc", c, Path("/exits"), Path("/sockets"), "error")


def test_conmon_args_name_the_container_files_and_its_stdio() -> None:
    args = args_for(C)
    assert args[args.index("--log-path") + 1] == "k8s-file:/logs/c.log"
    assert args[args.index("--runtime-arg") + 1] == "--root=/run/runc"
    assert args[args.index("--container-pidfile") + 1] == "/b/conmon/pid"
    assert not {"--terminal", "--stdin", "--leave-stdin-open"} & set(args)
    no_log = RuntimeContainer(id="c2", bundle=C.bundle, persist_dir=C.persist_dir)
    assert args_for(no_log)[args_for(no_log).index("--log-path") + 1] == "k8s-file:/dev/null"

    interactive = RuntimeContainer(id="c3", bundle=C.bundle, persist_dir=C.persist_dir, terminal=True, stdin=True)
    assert {"--terminal", "--stdin", "--leave-stdin-open"} <= set(args_for(interactive))
    once = RuntimeContainer(id="c4", bundle=C.bundle, persist_dir=C.persist_dir, stdin=True, stdin_once=True)
    assert "--stdin" in args_for(once)
    assert "--leave-stdin-open" not in args_for(once)


def test_control_lines() -> None:
    assert conmon.ctl_line(conmon.CTL_RESIZE, 50, 120) == b"1 50 120\n"  # type, height (rows), width
    assert conmon.ctl_line(conmon.CTL_REOPEN_LOG) == b"2 0 0\n"


async def test_exec_on_a_terminal(tmp_path: Path) -> None:
    script = "stty size; read line; echo got-$line; exit 4"
    session = await streams.start_exec(
        ["/bin/sh", "-c", script],
        tty=True,
        stdin=True,
        width=90,
        height=30,
        pid_file=tmp_path / "pid",
        leftovers=[],
        container_pid=0,
    )
    async with session:
        assert session.tty
        output = b""
        while b"30 90" not in output:
            item = await asyncio.wait_for(session.read(), 10)
            assert item is not None
            assert item[0] == "stdout"
            output += item[1]
        await session.write(b"abc\n")
        while b"got-abc" not in output:
            item = await asyncio.wait_for(session.read(), 10)
            assert item is not None
            output += item[1]
        assert await asyncio.wait_for(session.wait(), 10) == 4
        assert await asyncio.wait_for(session.read(), 10) is None
        assert await session.read() is None


async def test_exec_on_pipes_and_kill(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    leftover = tmp_path / "process.json"
    leftover.write_text("{}")
    script = f"wc -c; echo err >&2; echo $$ > {pid_file}; exec sleep 100"
    session = await streams.start_exec(
        ["/bin/sh", "-c", script],
        tty=False,
        stdin=True,
        width=0,
        height=0,
        pid_file=pid_file,
        leftovers=[leftover],
        container_pid=0,
    )
    await session.write(b"x" * 100_000)
    await session.close_stdin()
    got: dict[str, bytes] = {"stdout": b"", "stderr": b""}
    while b"err" not in got["stderr"] or b"100000" not in got["stdout"]:
        item = await asyncio.wait_for(session.read(), 10)
        assert item is not None
        got[item[0]] += item[1]
    await session.kill()  # waits for the pid file, kills the command it names
    sleeper = int(pid_file.read_text())
    assert not await asyncio.to_thread(os.path.exists, f"/proc/{sleeper}")  # killed and reaped
    assert await session.wait() == 128 + 9
    await session.close()
    assert not leftover.exists()


async def test_attach_framing() -> None:
    ours, conmons = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    container = RuntimeContainer(id="c", bundle=Path("/nonexistent"), persist_dir=Path("/nonexistent"))
    async with streams.AttachConnection(ours, container) as session:
        conmons.send(bytes([conmon.ATTACH_STDOUT]) + b"out")
        conmons.send(bytes([conmon.ATTACH_STDERR]) + b"err")
        assert await session.read() == ("stdout", b"out")
        assert await session.read() == ("stderr", b"err")
        await session.write(b"y" * 20_000)
        sizes = [len(conmons.recv(65536)) for _ in range(3)]
        assert sizes == [8192, 8192, 3616]  # conmon reads one message of at most 32767 bytes
        await session.resize(80, 24)  # no terminal: nothing to do (and no ctl FIFO to write)
        await session.close_stdin()
        assert conmons.recv(65536) == b""  # conmon sees the end of input
        conmons.close()
        assert await session.read() is None
    with pytest.raises(OSError, match="Bad file descriptor"):
        ours.send(b"closed")
