"""Streaming: exec round trips and port-forward throughput, pycri beside containerd.

    python -m benchmarks.bench_streaming [--count 30] [--megabytes 100] [--transfers 5]
                                         [--containerd unix:///run/containerd-ref/containerd.sock]

Needs the local registries of ../shared/tools/test-registry.sh (``seed``): both runtimes pull
registry.k8s.io/e2e-test-images/busybox:1.29-2 through the mirror on 127.0.0.1:5000.

For each runtime (a temporary pycri daemon, then containerd when it answers), in one pod:

- ``Exec true``: ``--count`` times, the Exec RPC, the connection to its URL over SPDY (what
  ``crictl exec CONTAINER true`` and ``kubectl exec`` do), the command run, its exit status
  read, the connection closed; the same again over WebSocket; and, with ``crictl`` on PATH,
  ``crictl exec CONTAINER true`` itself;
- ``port-forward``: ``--transfers`` times, ``--megabytes`` MiB read from ``nc`` in the pod
  through a port-forward session over SPDY; throughput in MiB/s (p50 and the slowest). With
  ``crictl`` on PATH, the same through ``crictl port-forward`` (client-go's Go SPDY client,
  as kubectl's) read from its local port by a plain socket.

Both runtimes are driven by the same client (pycri.client.streaming), so the difference is the
runtimes' streaming servers and exec paths. Every pod carries the label
``pycri-bench=<token>`` and is removed at the end, also on errors and Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import uuid

from benchmarks.bench_images import registries_conf
from benchmarks.common import BenchDaemon, Result, answers, containerd_endpoint, exit_on_sigterm, report, summary
from pycri.api import api_pb2 as api
from pycri.client import Client
from pycri.client.streaming import PortForward, RemoteCommand, Transport

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
LABEL = "pycri-bench"
PORT = 8080


class StreamingSuite:
    def __init__(self, label: str, client: Client, endpoint: str, args: argparse.Namespace) -> None:
        self.label = label
        self.client = client
        self.endpoint = endpoint
        self.args = args
        self.token = secrets.token_hex(4)
        self.pod_id = ""
        self.results: list[Result] = []
        self.throughput: list[float] = []
        self.crictl_throughput: list[float] = []

    def setup(self) -> str:
        self.client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=IMAGE)), timeout=120)
        name = f"bench-stream-{self.token}"
        pod = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="pycri-bench", uid=str(uuid.uuid4())),
            hostname=name,
            labels={LABEL: self.token},
        )
        self.pod_id = self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=pod), timeout=60).pod_sandbox_id
        size = self.args.megabytes << 20
        containers = {
            "sleeper": ["sh", "-c", "sleep 3600"],
            "server": ["sh", "-c", f"while true; do head -c {size} /dev/zero | nc -l -p {PORT}; done"],
        }
        ids = {}
        for cname, command in containers.items():
            config = api.ContainerConfig(
                metadata=api.ContainerMetadata(name=cname), image=api.ImageSpec(image=IMAGE), command=command
            )
            request = api.CreateContainerRequest(pod_sandbox_id=self.pod_id, config=config, sandbox_config=pod)
            ids[cname] = self.client.create_container(request, timeout=60).container_id
            self.client.start_container(api.StartContainerRequest(container_id=ids[cname]), timeout=60)
        return ids["sleeper"]

    def cleanup(self) -> None:
        if self.pod_id:
            self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)
            self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)
            self.pod_id = ""

    async def exec_true(self, cid: str, transport: Transport) -> None:
        request = api.ExecRequest(container_id=cid, cmd=["true"], stdout=True, stderr=True)
        url = (await asyncio.to_thread(self.client.exec, request)).url
        async with await RemoteCommand.open(url, transport=transport) as cmd:
            await cmd.output()
            code = await cmd.wait()
        if code != 0:
            raise RuntimeError(f"{self.label}: exec true exited {code}")

    async def transfer(self) -> float:
        """MiB/s of one download of --megabytes through port-forward."""
        request = api.PortForwardRequest(pod_sandbox_id=self.pod_id, port=[PORT])
        url = (await asyncio.to_thread(self.client.port_forward, request)).url
        wanted = self.args.megabytes << 20
        async with await PortForward.open(url) as pf:
            for _ in range(50):  # the listener restarts between transfers
                conn = await pf.connect(PORT)
                start, received = time.perf_counter(), 0
                while received < wanted and (data := await conn.read()):
                    received += len(data)
                if received >= wanted:
                    return float(wanted / (1 << 20) / (time.perf_counter() - start))
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.label}: port-forward delivered no data")

    async def measure(self, cid: str) -> None:
        for transport in ("spdy", "websocket"):
            for _ in range(5):  # warm-up
                await self.exec_true(cid, transport)
            samples = []
            for _ in range(self.args.count):
                start = time.perf_counter()
                await self.exec_true(cid, transport)
                samples.append((time.perf_counter() - start) * 1000)
            self.results.append(Result(f"Exec true ({transport})", samples))
        await self.transfer()  # warm-up
        self.throughput = [await self.transfer() for _ in range(self.args.transfers)]

    def crictl_exec(self, crictl: str, cid: str) -> Result:
        """``crictl exec CONTAINER true``, the whole command: what a person or a script waits for."""
        argv = [crictl, "--runtime-endpoint", self.endpoint, "--image-endpoint", self.endpoint, "exec", cid, "true"]
        samples = []
        for i in range(self.args.count + 5):
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            if i >= 5:  # warm-up
                samples.append((time.perf_counter() - start) * 1000)
        return Result("crictl exec true", samples)

    def wait_listening(self, cid: str) -> None:
        """Until nc in the pod listens on PORT again (it restarts after each transfer)."""
        listening = re.compile(rf":{PORT:04X} [0-9A-F]+:0000 0A ")  # /proc/net/tcp: local, remote, state LISTEN
        for _ in range(100):
            request = api.ExecSyncRequest(container_id=cid, cmd=["cat", "/proc/net/tcp", "/proc/net/tcp6"], timeout=10)
            if listening.search(self.client.exec_sync(request, timeout=30).stdout.decode()):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.label}: nothing listens on port {PORT} in the pod")

    def crictl_transfers(self, crictl: str, cid: str) -> list[float]:
        """MiB/s of --transfers downloads through ``crictl port-forward`` (client-go's SPDY client)."""
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        argv = [crictl, "--runtime-endpoint", self.endpoint, "--image-endpoint", self.endpoint]
        argv += ["port-forward", self.pod_id, f"{port}:{PORT}"]
        forward = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wanted, results = self.args.megabytes << 20, list[float]()
        try:
            assert forward.stdout is not None
            if "Forwarding from" not in forward.stdout.readline():
                raise RuntimeError(f"{self.label}: crictl port-forward failed: {forward.communicate()[1]}")
            while len(results) < self.args.transfers + 1:  # the first is a warm-up
                self.wait_listening(cid)  # kubectl's and crictl's port-forward end at a refused connection
                with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
                    start, received = time.perf_counter(), 0
                    while received < wanted and (data := conn.recv(1 << 20)):
                        received += len(data)
                    if received >= wanted:
                        results.append(wanted / (1 << 20) / (time.perf_counter() - start))
                    else:
                        time.sleep(0.1)  # the listener restarts between transfers
        finally:
            forward.terminate()
            forward.wait()
        return results[1:]

    def run(self) -> list[Result]:
        try:
            cid = self.setup()
            asyncio.run(self.measure(cid))
            crictl = shutil.which("crictl")
            if crictl:
                self.results.append(self.crictl_exec(crictl, cid))
                self.crictl_throughput = self.crictl_transfers(crictl, cid)
        finally:
            self.cleanup()
        return self.results


def throughput_line(label: str, values: list[float]) -> str:
    return f"{label:<11} port-forward {statistics.median(values):8.1f} MiB/s p50, slowest {min(values):8.1f} MiB/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=30, help="exec round trips per transport")
    parser.add_argument("--megabytes", type=int, default=100, help="MiB per port-forward transfer")
    parser.add_argument("--transfers", type=int, default=5, help="port-forward transfers")
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    started = time.monotonic()
    fd, conf = tempfile.mkstemp(prefix="pycri-bench-registries-", suffix=".conf")
    os.write(fd, registries_conf().encode())
    os.close(fd)
    try:
        with BenchDaemon.temporary(images={"registries_conf": conf}) as daemon, Client(daemon.socket, timeout=30) as client:
            suite = StreamingSuite("pycri", client, daemon.endpoint, args)
            ours = suite.run()
            ours_throughput, ours_crictl = suite.throughput, suite.crictl_throughput
    finally:
        os.unlink(conf)
    theirs: list[Result] | None = None
    theirs_throughput: list[float] = []
    theirs_crictl: list[float] = []
    endpoint = containerd_endpoint(args.containerd)
    if endpoint:
        with Client(endpoint, timeout=30) as client:
            if answers(client, endpoint):
                suite = StreamingSuite("containerd", client, endpoint, args)
                theirs = suite.run()
                theirs_throughput, theirs_crictl = suite.throughput, suite.crictl_throughput
    print(f"{IMAGE}; {args.count} exec round trips per transport; {args.transfers} x {args.megabytes} MiB port-forward (SPDY)")
    print(report(ours, theirs))
    print(summary(ours, theirs))
    for client_name, mine, other in (
        ("pycri.client", ours_throughput, theirs_throughput),
        ("crictl", ours_crictl, theirs_crictl),
    ):
        if not mine:
            continue
        print(f"through {client_name}:")
        print(throughput_line("pycri", mine))
        if other:
            print(throughput_line("containerd", other))
            ratio = statistics.median(mine) / statistics.median(other)
            print(f"port-forward throughput pycri/containerd p50: {ratio:.2f} (above 1.0 means pycri is faster)")
    print(f"total {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted; cleanup done")
        raise SystemExit(130) from None
