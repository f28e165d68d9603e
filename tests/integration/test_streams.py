"""Exec and attach sessions of the runtime interface on real containers, under runc and crun.

The daemon (the module's shared one) makes the pods and containers; the test process drives
the same handlers (``handlers_from_config`` on the daemon's configuration) as the streaming
server will, and checks that a session leaves no process and no file behind.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from pycri.oci import OCIRuntime, RuntimeContainer, handlers_from_config
from pycri.oci.interface import AttachSession, ExecSession
from pycri.testing import DaemonProcess
from tests.integration.harness import Harness

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

HANDLERS = pytest.mark.parametrize("handler", ["runc", "crun"])
WAIT = 15.0


@pytest.fixture
def runtimes(shared_daemon: DaemonProcess) -> dict[str, OCIRuntime]:
    cfg = shared_daemon.cfg
    return handlers_from_config(cfg, Path(cfg.state_dir) / "bin")


def in_runtime(
    h: Harness, cid: str, *, terminal: bool = False, stdin: bool = False, stdin_once: bool = False
) -> RuntimeContainer:
    directory = Path(h.daemon.cfg.root_dir) / "containers" / cid
    return RuntimeContainer(
        id=cid,
        bundle=directory / "bundle",
        persist_dir=directory / "conmon",
        log_path=h.log_path(cid),
        terminal=terminal,
        stdin=stdin,
        stdin_once=stdin_once,
    )


async def read_until(session: ExecSession | AttachSession, needle: bytes, *, stream: str = "", timeout: float = WAIT) -> bytes:
    """Read until ``needle`` has arrived (on ``stream``, if given); returns what was read."""
    got = b""

    async def read() -> None:
        nonlocal got
        while needle not in got:
            item = await session.read()
            assert item is not None, f"the output ended before {needle!r}: {got!r}"
            if not stream or item[0] == stream:
                got += item[1]

    try:
        await asyncio.wait_for(read(), timeout)
    except TimeoutError:
        pytest.fail(f"no {needle!r} within {timeout}s: {got!r}")
    return got


async def read_all(session: ExecSession | AttachSession, timeout: float = WAIT) -> dict[str, bytes]:
    out: dict[str, bytes] = {"stdout": b"", "stderr": b""}

    async def read() -> None:
        while (item := await session.read()) is not None:
            out[item[0]] += item[1]

    await asyncio.wait_for(read(), timeout)
    return out


def pids_of(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False).stdout.split()
    return [int(p) for p in found]


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def exec_files(c: RuntimeContainer) -> list[str]:
    return sorted(p.name for p in c.bundle.parent.glob("exec-*"))


async def typed_until(session: ExecSession | AttachSession, command: bytes, needle: bytes, timeout: float = WAIT) -> None:
    """Type ``command`` until its output holds ``needle`` (the size reaches the runtime a moment later)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        await session.write(command)
        try:
            await read_until(session, needle, timeout=0.5)
            return
        except pytest.fail.Exception:
            if asyncio.get_running_loop().time() > deadline:
                raise


# -- exec ---------------------------------------------------------------------------------------------------------


@HANDLERS
async def test_exec_with_a_terminal(h: Harness, runtimes: dict[str, OCIRuntime], handler: str) -> None:
    pod = h.pod(f"tty-exec-{handler}", handler=handler)
    cid = h.container(pod, "sleeper")
    c = in_runtime(h, cid)
    session = await runtimes[handler].exec(c, ["/bin/sh"], tty=True, stdin=True, width=90, height=30)
    try:
        assert session.tty
        await session.write(b"echo tty-$((40+2)); tty\n")
        got = await read_until(session, b"/dev/pts/")
        assert b"tty-42" in got
        await typed_until(session, b"stty size\n", b"30 90")  # the size it was started with
        await session.resize(100, 40)
        await typed_until(session, b"stty size\n", b"40 100")
        await session.write(b"exit 3\n")
        assert await asyncio.wait_for(session.wait(), WAIT) == 3
        await read_all(session)  # the output ends with the runtime
    finally:
        await session.close()
    assert exec_files(c) == []
    assert h.status(cid).state == 1  # CONTAINER_RUNNING: the exec ended, not the container


@HANDLERS
async def test_exec_with_pipes_reads_stdin_to_its_end(h: Harness, runtimes: dict[str, OCIRuntime], handler: str) -> None:
    pod = h.pod(f"pipe-exec-{handler}", handler=handler)
    cid = h.container(pod, "sleeper")
    c = in_runtime(h, cid)
    runtime = runtimes[handler]

    async with await runtime.exec(c, ["/bin/cat"], tty=False, stdin=True) as cat:
        await cat.write(b"hello, ")
        await read_until(cat, b"hello, ", stream="stdout")
        await cat.write(b"world\n")
        await cat.close_stdin()
        rest = await read_all(cat)
        assert rest == {"stdout": b"world\n", "stderr": b""}
        assert await cat.wait() == 0

    data = os.urandom(300_000)
    script = "wc -c; echo to-stderr >&2; exit 7"
    async with await runtime.exec(c, ["/bin/sh", "-c", script], tty=False, stdin=True) as wc:
        assert not wc.tty
        writing = asyncio.create_task(wc.write(data))
        output = asyncio.create_task(read_all(wc))
        await writing
        await wc.close_stdin()
        out = await output
        assert out["stdout"].split() == [b"300000"]
        assert out["stderr"] == b"to-stderr\n"
        assert await wc.wait() == 7

    # Without stdin the command reads end-of-file at once.
    async with await runtime.exec(c, ["/bin/sh", "-c", "cat; echo done"], tty=False, stdin=False) as no_stdin:
        assert (await read_all(no_stdin))["stdout"] == b"done\n"
        assert await no_stdin.wait() == 0
    assert exec_files(c) == []


@HANDLERS
@pytest.mark.parametrize("tty", [True, False], ids=["tty", "pipes"])
async def test_killing_an_exec_leaves_no_process(h: Harness, runtimes: dict[str, OCIRuntime], handler: str, tty: bool) -> None:
    pod = h.pod(f"kill-exec-{handler}-{'tty' if tty else 'pipes'}", handler=handler)
    cid = h.container(pod, "sleeper")
    c = in_runtime(h, cid)
    marker = f"sleep 42{4 if tty else 5}{len(handler)}"
    session = await runtimes[handler].exec(c, ["/bin/sh", "-c", f"echo started; exec /bin/{marker}"], tty=tty, stdin=True)
    try:
        await read_until(session, b"started")
        (command,) = await asyncio.to_thread(lambda: pids_of(f"^/bin/{marker}$") or pids_of(marker))
        runtime_pid = session.pid
        assert not gone(runtime_pid)
        await session.kill()
        assert gone(command), "the command in the container was killed, not only the runtime process"
        assert gone(runtime_pid)
        assert await session.wait() != 0
    finally:
        await session.close()
    assert pids_of(marker) == []
    assert exec_files(c) == []
    assert h.status(cid).state == 1  # the container itself runs on


@HANDLERS
async def test_a_container_that_exits_ends_its_exec_sessions(h: Harness, runtimes: dict[str, OCIRuntime], handler: str) -> None:
    pod = h.pod(f"exit-exec-{handler}", handler=handler)
    cid = h.container(pod, "sleeper")
    c = in_runtime(h, cid)
    marker = f"sleep 4343{len(handler)}"
    session = await runtimes[handler].exec(c, ["/bin/sh", "-c", f"echo started; exec /bin/{marker}"], tty=True, stdin=False)
    try:
        await read_until(session, b"started")
        assert len(pids_of(marker)) == 1
        await asyncio.to_thread(h.stop, cid, 0)
        assert await asyncio.wait_for(session.wait(), WAIT) != 0
        await read_all(session)
    finally:
        await session.close()
    assert pids_of(marker) == []


async def test_exec_in_a_container_that_is_not_running_fails(h: Harness, runtimes: dict[str, OCIRuntime]) -> None:
    from pycri import errors

    pod = h.pod("exec-stopped")
    cid = h.container(pod, "done", ("/bin/sh", "-c", "exit 0"))
    h.wait_exited(cid)
    with pytest.raises(errors.FailedPrecondition):
        await runtimes["runc"].exec(in_runtime(h, cid), ["/bin/true"], tty=False, stdin=False)


# -- attach -------------------------------------------------------------------------------------------------------


@HANDLERS
async def test_attach_to_a_shell_with_a_terminal(h: Harness, runtimes: dict[str, OCIRuntime], handler: str) -> None:
    pod = h.pod(f"attach-tty-{handler}", handler=handler)
    cid = h.container(pod, "shell", ("/bin/sh",), tty=True, stdin=True)
    c = in_runtime(h, cid, terminal=True, stdin=True)
    async with await runtimes[handler].attach(c) as session:
        await typed_until(session, b"echo attached-$((2*3))\n", b"attached-6")
        await session.resize(120, 50)
        await typed_until(session, b"stty size\n", b"50 120")
    # Detaching leaves the shell running, its stdin open (not stdin_once): attach again.
    assert h.status(cid).state == 1
    async with await runtimes[handler].attach(c) as again:
        await typed_until(again, b"echo again\n", b"again")
        await again.write(b"exit 5\n")
        assert await read_all(again) is not None  # conmon closes the connection as the container ends
    assert h.wait_exited(cid).exit_code == 5
    log = await asyncio.to_thread(Path(h.log_path(cid)).read_bytes)
    assert b"attached-6" in log  # conmon logs what the terminal showed


@HANDLERS
async def test_attach_to_output(h: Harness, runtimes: dict[str, OCIRuntime], handler: str) -> None:
    pod = h.pod(f"attach-out-{handler}", handler=handler)
    script = "i=0; while [ $i -lt 300 ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); sleep 0.05; done"
    cid = h.container(pod, "printer", ("/bin/sh", "-c", script))
    c = in_runtime(h, cid)
    async with await runtimes[handler].attach(c) as session:
        await read_until(session, b"out-", stream="stdout")
        await read_until(session, b"err-", stream="stderr")
        await session.write(b"ignored\n")  # no stdin: conmon drops it
        await session.resize(80, 24)  # no terminal: nothing to resize
    assert h.status(cid).state == 1


@HANDLERS
async def test_detaching_closes_stdin_of_a_stdin_once_container(
    h: Harness, runtimes: dict[str, OCIRuntime], handler: str
) -> None:
    pod = h.pod(f"attach-once-{handler}", handler=handler)
    cid = h.container(pod, "cat", ("/bin/sh", "-c", "cat; echo stdin-closed"), stdin=True, stdin_once=True)
    c = in_runtime(h, cid, stdin=True, stdin_once=True)
    async with await runtimes[handler].attach(c) as session:
        await session.write(b"through conmon\n")
        await read_until(session, b"through conmon\n", stream="stdout")
        await session.close_stdin()
        rest = await read_all(session)
        assert rest["stdout"] == b"stdin-closed\n"
    assert h.wait_exited(cid).exit_code == 0
