"""Exec, Attach and PortForward end to end: the RPC's URL, the streaming server, real containers.

Driven by pycri's own streaming client (pycri.client.streaming) over SPDY and WebSocket, and by
crictl where the machine has it (CI does not), under runc and crun.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from pycri.api import api_pb2 as api
from pycri.client import FailedPreconditionError, InvalidArgumentError, NotFoundError
from pycri.client.streaming import PortForward, RemoteCommand, StreamingError, Transport
from pycri.testing import DaemonProcess
from tests.integration.conftest import CRICTL
from tests.integration.harness import Harness, Pod, wait_for

pytestmark = pytest.mark.integration

HANDLERS = pytest.mark.parametrize("handler", ["runc", "crun"])
TRANSPORTS = pytest.mark.parametrize("transport", ["spdy", "websocket"])
TIMEOUT = 30.0


def exec_url(h: Harness, cid: str, *cmd: str, tty: bool = False, stdin: bool = False, stderr: bool = True) -> str:
    request = api.ExecRequest(container_id=cid, cmd=list(cmd), tty=tty, stdin=stdin, stdout=True, stderr=stderr and not tty)
    return h.client.exec(request).url


async def read_until(cmd: RemoteCommand, needle: bytes) -> bytes:
    seen = b""
    try:
        async with asyncio.timeout(TIMEOUT):
            while needle not in seen:
                item = await cmd.read()
                assert item is not None, f"the output ended before {needle!r}: {seen!r}"
                seen += item[1]
    except TimeoutError:
        pytest.fail(f"no {needle!r} within {TIMEOUT}s; the output was {seen!r}")
    return seen


def shell_pod(h: Harness, handler: str) -> tuple[Pod, str]:
    pod = h.pod(f"stream-{handler}", handler=handler)
    return pod, h.container(pod, "shell")


# -- exec ---------------------------------------------------------------------------------------------


@HANDLERS
async def test_exec_with_a_terminal_types_reads_resizes_and_exits_3(h: Harness, handler: str) -> None:
    _, cid = shell_pod(h, handler)
    async with await RemoteCommand.open(exec_url(h, cid, "/bin/sh", tty=True, stdin=True), stdin=True, tty=True) as cmd:
        await cmd.resize(100, 40)
        await cmd.write(b"echo typed-$((40+2))\n")
        await read_until(cmd, b"typed-42")
        await cmd.resize(111, 33)
        await asyncio.sleep(0.2)
        await cmd.write(b"stty size\n")
        await read_until(cmd, b"33 111")
        await cmd.write(b"exit 3\n")
        async with asyncio.timeout(TIMEOUT):
            assert await cmd.wait() == 3


@TRANSPORTS
async def test_exec_with_piped_stdin(h: Harness, transport: Transport) -> None:
    _, cid = shell_pod(h, "runc")
    payload = os.urandom(1 << 20)
    url = exec_url(h, cid, "/bin/sh", "-c", "wc -c; echo done >&2", stdin=True)
    async with await RemoteCommand.open(url, stdin=True, transport=transport) as cmd:
        for i in range(0, len(payload), 100_000):
            await cmd.write(payload[i : i + 100_000])
        await cmd.close_stdin()
        async with asyncio.timeout(TIMEOUT):
            stdout, stderr = await cmd.output()
            assert await cmd.wait() == 0
    assert stdout.strip() == str(len(payload)).encode()
    assert stderr == b"done\n"


@TRANSPORTS
async def test_exec_reports_stdout_stderr_and_a_non_zero_exit(h: Harness, transport: Transport) -> None:
    _, cid = shell_pod(h, "crun")
    url = exec_url(h, cid, "/bin/sh", "-c", "echo out; echo err >&2; exit 5")
    async with await RemoteCommand.open(url, transport=transport) as cmd:
        async with asyncio.timeout(TIMEOUT):
            assert await cmd.output() == (b"out\n", b"err\n")
            assert await cmd.wait() == 5
        assert cmd.status is not None
        assert cmd.status["reason"] == "NonZeroExitCode"


async def test_fifty_concurrent_exec_sessions(h: Harness) -> None:
    _, cid = shell_pod(h, "runc")
    urls = [exec_url(h, cid, "/bin/echo", f"session-{i}") for i in range(50)]

    async def one(url: str) -> bytes:
        async with await RemoteCommand.open(url) as cmd:
            out, _ = await cmd.output()
            assert await cmd.wait() == 0
            return out

    async with asyncio.timeout(120):
        outputs = await asyncio.gather(*(one(url) for url in urls))
    assert outputs == [f"session-{i}\n".encode() for i in range(50)]


def test_exec_requests_are_validated(h: Harness) -> None:
    _, cid = shell_pod(h, "runc")
    cases = [
        (api.ExecRequest(container_id=cid, cmd=[], stdout=True), InvalidArgumentError, "cmd: required"),
        (api.ExecRequest(container_id=cid, cmd=["sh"], tty=True, stderr=True), InvalidArgumentError, "tty and stderr"),
        (api.ExecRequest(container_id=cid, cmd=["sh"]), InvalidArgumentError, "one of stdin, stdout, or stderr"),
        (api.ExecRequest(container_id="nope", cmd=["sh"], stdout=True), NotFoundError, "not found"),
    ]
    for request, error, message in cases:
        with pytest.raises(error, match=message):
            h.client.exec(request)
    h.stop(cid)
    with pytest.raises(FailedPreconditionError, match="is not running"):
        h.client.exec(api.ExecRequest(container_id=cid, cmd=["sh"], stdout=True))


async def test_a_used_token_is_refused_and_runs_nothing(h: Harness) -> None:
    _, cid = shell_pod(h, "runc")
    url = exec_url(h, cid, "/bin/sh", "-c", "echo ran >> /tmp/runs")
    async with await RemoteCommand.open(url) as cmd:
        await cmd.output()
        assert await cmd.wait() == 0
    with pytest.raises(StreamingError, match="404 Not Found"):
        await RemoteCommand.open(url)
    assert h.sh(cid, "cat /tmp/runs") == "ran\n"


CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    from pycri.client.streaming import RemoteCommand
    async def main():
        cmd = await RemoteCommand.open(sys.argv[1], stdin=True, tty=True)
        await cmd.write(b"echo sta''rted; exec sleep 4242\\n")  # the echo of the typed line is not "started"
        while b"started" not in (await cmd.read() or (None, b"started"))[1]:
            pass
        print("ready", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
    """
)


def runtime_execs(cid: str) -> list[str]:
    """runc or crun processes still executing in container ``cid``."""
    found = subprocess.run(["pgrep", "-a", "-f", f"exec.*{cid}"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in found if "runc" in line or "crun" in line]


def daemon_fds(daemon: DaemonProcess) -> int:
    assert daemon.proc is not None
    return len(os.listdir(f"/proc/{daemon.proc.pid}/fd"))


@HANDLERS
def test_a_killed_client_leaves_nothing_behind(h: Harness, handler: str) -> None:
    _, cid = shell_pod(h, handler)
    h.sh(cid, "true")  # warm up: the daemon's first exec opens what it keeps open
    fds = daemon_fds(h.daemon)
    url = exec_url(h, cid, "/bin/sh", tty=True, stdin=True)
    client = subprocess.Popen([sys.executable, "-c", CLIENT, url], stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        wait_for("the exec'd command", lambda: "sleep 4242" in h.sh(cid, "ps -o args"))
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait()
    wait_for("the exec'd process to end", lambda: "sleep 4242" not in h.sh(cid, "ps -o args"), timeout=15)
    wait_for("the runtime's exec process to end", lambda: not runtime_execs(cid), timeout=15)
    wait_for("the daemon's descriptors to be released", lambda: daemon_fds(h.daemon) <= fds, timeout=15)


# -- attach -------------------------------------------------------------------------------------------


@HANDLERS
async def test_attach_to_a_shell_with_a_terminal(h: Harness, handler: str) -> None:
    pod = h.pod(f"attach-{handler}", handler=handler)
    cid = h.container(pod, "tty", ("/bin/sh",), stdin=True, tty=True)
    url = h.client.attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True, tty=True)).url
    async with await RemoteCommand.open(url, stdin=True, tty=True) as cmd:
        await cmd.write(b"echo attached-$((1+1))\n")
        await read_until(cmd, b"attached-2")
        await cmd.resize(70, 20)
        await asyncio.sleep(0.2)
        await cmd.write(b"stty size\n")
        await read_until(cmd, b"20 70")


@TRANSPORTS
async def test_attach_reads_the_containers_output(h: Harness, transport: Transport) -> None:
    pod = h.pod("attach-out")
    cid = h.container(pod, "ticker", ("/bin/sh", "-c", "while true; do echo tick; echo tock >&2; sleep 0.2; done"))
    url = h.client.attach(api.AttachRequest(container_id=cid, stdout=True, stderr=True)).url
    async with await RemoteCommand.open(url, transport=transport) as cmd:
        seen: set[str] = set()
        async with asyncio.timeout(TIMEOUT):
            while seen != {"stdout", "stderr"}:
                item = await cmd.read()
                assert item is not None
                seen.add(item[0])


async def test_attach_with_stdin_once_closes_the_containers_stdin(h: Harness) -> None:
    pod = h.pod("attach-once")
    cid = h.container(pod, "cat", ("/bin/sh", "-c", "cat; echo stdin-closed"), stdin=True, stdin_once=True)
    url = h.client.attach(api.AttachRequest(container_id=cid, stdin=True, stdout=True, stderr=True)).url
    async with await RemoteCommand.open(url, stdin=True) as cmd:
        await cmd.write(b"line\n")
        await read_until(cmd, b"line")
        await cmd.close_stdin()
        await read_until(cmd, b"stdin-closed")
    h.wait_exited(cid)


# -- port-forward -------------------------------------------------------------------------------------


def port_forward_url(h: Harness, pod: Pod, *ports: int) -> str:
    return h.client.port_forward(api.PortForwardRequest(pod_sandbox_id=pod.id, port=list(ports))).url


@HANDLERS
async def test_port_forward_moves_100_mib_each_way_intact(h: Harness, handler: str) -> None:
    pod = h.pod(f"pf-{handler}", handler=handler)
    size = 100 << 20
    up = h.container(pod, "up", ("/bin/sh", "-c", "nc -l -p 8080 > /tmp/up; touch /tmp/up.done; sleep 1000"))
    script = f"head -c {size} /dev/urandom > /tmp/blob && sha256sum /tmp/blob > /tmp/sum && nc -l -p 8081 < /tmp/blob; sleep 1000"
    down = h.container(pod, "down", ("/bin/sh", "-c", script))
    wait_for("the download blob", lambda: h.exec(down, "test", "-s", "/tmp/sum").exit_code == 0, timeout=30)
    expected = h.sh(down, "cat /tmp/sum").split()[0]
    listening = "cat /proc/net/tcp /proc/net/tcp6"
    wait_for("the listeners", lambda: ":1F90 " in h.sh(up, listening) and ":1F91 " in h.sh(down, listening))
    payload = os.urandom(size)
    async with await PortForward.open(port_forward_url(h, pod, 8080, 8081)) as pf:
        upload = await pf.connect(8080)
        async with asyncio.timeout(120):
            for i in range(0, size, 1 << 20):
                await upload.write(payload[i : i + (1 << 20)])
            await upload.close_write()
        download = await pf.connect(8081)
        digest, received = hashlib.sha256(), 0
        async with asyncio.timeout(120):
            while received < size and (data := await download.read()):
                digest.update(data)
                received += len(data)
    assert received == size
    assert digest.hexdigest() == expected
    wait_for("the upload to land", lambda: h.exec(up, "test", "-e", "/tmp/up.done").exit_code == 0, timeout=60)
    assert h.sh(up, "sha256sum /tmp/up").split()[0] == hashlib.sha256(payload).hexdigest()


@TRANSPORTS
async def test_a_refused_port_is_reported_and_the_session_stays_usable(h: Harness, transport: Transport) -> None:
    pod = h.pod("pf-refused")
    server = h.container(pod, "echo", ("/bin/sh", "-c", "while true; do echo pong | nc -l -p 8080; done"))
    wait_for("the listener", lambda: ":1F90 " in h.sh(server, "cat /proc/net/tcp /proc/net/tcp6"))
    url = port_forward_url(h, pod, 8080, 8089)
    async with await PortForward.open(url, transport=transport, ports=[8080, 8089]) as pf:
        refused = await pf.connect(8089)
        async with asyncio.timeout(TIMEOUT):
            assert "error forwarding port 8089 to pod" in await refused.error()
            for _ in range(20 if transport == "spdy" else 1):  # SPDY: the listener may still be starting
                works = await pf.connect(8080)
                got = await works.read()
                if got:
                    break
                await asyncio.sleep(0.2)
        assert got.startswith(b"pong")


def test_port_forward_requests_are_validated(h: Harness) -> None:
    pod = h.pod("pf-validate")
    with pytest.raises(InvalidArgumentError, match=r"port\[0\]: 70000 is outside 1..65535"):
        h.client.port_forward(api.PortForwardRequest(pod_sandbox_id=pod.id, port=[70000]))
    with pytest.raises(NotFoundError):
        h.client.port_forward(api.PortForwardRequest(pod_sandbox_id="nope", port=[80]))
    h.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    with pytest.raises(FailedPreconditionError, match="not ready"):
        h.client.port_forward(api.PortForwardRequest(pod_sandbox_id=pod.id, port=[80]))


# -- crictl -------------------------------------------------------------------------------------------


@pytest.fixture
def crictl(h: Harness) -> list[str]:
    if CRICTL is None:
        pytest.skip("crictl is not installed")
    return [CRICTL, "--runtime-endpoint", h.daemon.endpoint, "--image-endpoint", h.daemon.endpoint, "--timeout", "30s"]


@TRANSPORTS
def test_crictl_exec_and_port_forward(h: Harness, crictl: list[str], transport: str) -> None:
    pod, cid = shell_pod(h, "runc")
    piped = subprocess.run([*crictl, "exec", "-i", "-r", transport, cid, "wc", "-c"], input=b"12345", capture_output=True)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() == b"5"
    failed = subprocess.run([*crictl, "exec", "-r", transport, cid, "sh", "-c", "exit 3"], capture_output=True, text=True)
    assert "command terminated with exit code 3" in failed.stderr
    h.container(pod, "server", ("/bin/sh", "-c", "while true; do echo hello | nc -l -p 8080; done"))
    forward = subprocess.Popen(
        [*crictl, "port-forward", "-r", transport, pod.id, "18181:8080"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()

        def fetch() -> bytes:
            import socket

            with socket.create_connection(("127.0.0.1", 18181), timeout=5) as conn:
                conn.shutdown(socket.SHUT_WR)
                return conn.recv(100)

        assert wait_for("a forwarded answer", lambda: fetch().startswith(b"hello"), timeout=15)
    finally:
        forward.terminate()
        forward.wait()
