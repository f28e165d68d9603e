"""Stats: what kubelet's CRI stats provider calls, with pods and containers running.

    python -m benchmarks.bench_stats [--pods 30] [--per-pod 2] [--count 200] [--write-mib 1]
                                     [--containerd unix:///run/containerd-ref/containerd.sock]

Needs the local registries of ../shared/tools/test-registry.sh (``seed``): both runtimes pull
registry.k8s.io/e2e-test-images/busybox:1.29-2 through the mirror on 127.0.0.1:5000, pycri with
the registries.conf that ``test-registry.sh registries-conf`` prints.

For each runtime (a temporary pycri daemon, then containerd when it answers): ``--pods`` pods
of ``--per-pod`` containers running ``sh -c "sleep 3600"``, each of which first writes
``--write-mib`` MiB into its writable layer (so there is something to account for); then, over
``--count`` calls each, the calls kubelet makes every ten seconds or so (the lists filtered by
this run's label, as a reference runtime may hold other pods): ListPodSandboxStats
(the summary API and eviction), ListContainerStats (``kubectl top``'s path on older kubelets),
ImageFsInfo (image garbage collection, eviction), and ListPodSandboxMetrics (``/metrics/cadvisor``)
when the runtime serves it; and Version, the gRPC floor under every call. A second round of
ListPodSandboxStats and ImageFsInfo runs while one container keeps writing, to show that
background accounting does not make the calls slower.

Every pod and container carries the label ``pycri-bench=<token of this run>``; all of them are
stopped and removed at the end, also on errors and Ctrl-C, and the image is removed again when
the runtime did not have it before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from benchmarks.bench_containers import IMAGE, LABEL, NAMESPACE, ContainerSuite
from benchmarks.bench_images import registries_conf
from benchmarks.common import (
    FLOOR,
    BenchDaemon,
    Result,
    answers,
    containerd_endpoint,
    exit_on_sigterm,
    measure,
    report,
    summary,
    unless_unimplemented,
)
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError
from pycri.stats.cgroups import detect_host


class StatsSuite(ContainerSuite):
    """Pods of containers from the container benchmark's helpers; stats calls timed over them.

    Each pod gets a cgroup parent of its own, as kubelet gives (``/pycri-bench-<token>/pod<n>``,
    cgroupfs): the pod's cgroup is what pod stats read, and containerd requires one. The
    empty cgroups left behind are removed at the end.
    """

    def __init__(self, label: str, client: Client, args: argparse.Namespace) -> None:
        super().__init__(label, client, args)
        self.ids: list[str] = []
        self.cgroup_root = f"pycri-bench-{self.token}"
        # This run's pods only: a reference runtime may hold others' (containerd fails the whole list
        # for a pod without a cgroup parent).
        self.pod_listing = api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(label_selector={LABEL: self.token}))

    def run_pod(self) -> str:
        n = next(self.serial)
        name = f"bench-{self.token}-{n}"
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=str(uuid.uuid4()), attempt=0),
            hostname=name,
            labels={LABEL: self.token},
            linux=api.LinuxPodSandboxConfig(cgroup_parent=f"/{self.cgroup_root}/pod{n}"),
        )
        pod_id = self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        self.pods[pod_id] = config
        return pod_id

    def cleanup(self) -> None:
        super().cleanup()
        remove_cgroups(self.cgroup_root)

    def populate(self) -> None:
        per_pod, write = self.args.per_pod, self.args.write_mib
        for _ in range(self.args.pods):
            pod_id = self.run_pod()
            for _ in range(per_pod):
                cid = self.create(pod_id)
                self.start(cid)
                if write:
                    script = f"head -c {write * 1048576} /dev/urandom > /tmp/data"
                    request = api.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", script], timeout=30)
                    self.client.exec_sync(request, timeout=60)
                self.ids.append(cid)
        got = len(self.client.list_pod_sandbox_stats(self.pod_listing).stats)
        print(f"{self.label}: {len(self.ids)} containers in {self.args.pods} pods ({got} pods in ListPodSandboxStats)")

    def timings(self, suffix: str = "") -> None:
        count, n, pods = self.args.count, len(self.ids), self.args.pods
        self.results.append(measure(FLOOR + suffix, self.client.version, count, 10))
        listing = self.pod_listing
        self.results.append(
            measure(f"ListPodSandboxStats ({pods}){suffix}", lambda: self.client.list_pod_sandbox_stats(listing), count, 10)
        )
        containers = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(label_selector={LABEL: self.token}))
        self.results.append(
            measure(f"ListContainerStats ({n}){suffix}", lambda: self.client.list_container_stats(containers), count, 10)
        )
        self.results.append(measure(f"ImageFsInfo{suffix}", self.client.image_fs_info, count, 10))

    def metrics(self) -> None:
        self.client.list_pod_sandbox_metrics()
        count = max(self.args.count // 4, 10)
        self.results.append(measure(f"ListPodSandboxMetrics ({self.args.pods})", self.client.list_pod_sandbox_metrics, count, 3))

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
        """One container appending to a file (a megabyte at a time) while the block runs."""
        cid = self.ids[0]
        script = "while :; do head -c 1048576 /dev/zero >> /tmp/growing; sleep 0.05; [ -s /tmp/stop ] && break; done"
        request = api.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", f"rm -f /tmp/stop; ({script}) >/dev/null 2>&1 &"])
        self.client.exec_sync(request, timeout=30)
        try:
            yield
        finally:
            stop = "echo 1 > /tmp/stop; sleep 0.2; rm -f /tmp/growing"
            self.client.exec_sync(api.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", stop], timeout=10), timeout=30)

    def run(self, between: contextlib.AbstractContextManager[object] | None = None) -> list[Result]:
        with contextlib.ExitStack() as stack:
            stack.callback(self.cleanup)
            if unless_unimplemented(self.label, "image pull", self.pull):
                self.populate()
                unless_unimplemented(self.label, "stats calls", self.timings)
                unless_unimplemented(self.label, "metrics", self.metrics)
                with self.writer():
                    unless_unimplemented(self.label, "stats calls while writing", lambda: self.timings(" +writer"))
        return self.results


def remove_cgroups(name: str) -> None:
    """Remove the (empty) cgroup tree ``/<name>`` from every hierarchy."""
    host = detect_host()
    mountpoints = {h.mountpoint for h in host.v1.values()} | ({host.unified.mountpoint} if host.unified else set())
    for mountpoint in mountpoints:
        top = Path(mountpoint) / name
        if not top.is_dir():
            continue
        for found in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                found.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=int, default=30, help="pods running while the calls are timed")
    parser.add_argument("--per-pod", type=int, default=2, help="containers per pod")
    parser.add_argument("--count", type=int, default=200, help="calls timed of each kind")
    parser.add_argument("--write-mib", type=int, default=1, help="MiB each container writes into its writable layer first")
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    parser.add_argument("--log-level", default="info", help="pycri daemon log level (debug logs every RPC's time)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the pycri daemon's log there at the end")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    start = time.monotonic()

    fd, conf = tempfile.mkstemp(prefix="pycri-bench-registries-", suffix=".conf")
    os.write(fd, registries_conf().encode())
    os.close(fd)
    try:
        daemon = BenchDaemon.temporary(images={"registries_conf": conf})
        daemon.log_level = args.log_level
        with daemon:
            try:
                with Client(daemon.socket, timeout=60) as client:
                    ours = StatsSuite("pycri", client, args).run()
                left = daemon.leftovers()
                if left:
                    print(f"pycri left runtime state behind: {left}")
            finally:
                if args.keep_log:
                    shutil.copy(daemon.log_path, args.keep_log)
    finally:
        os.unlink(conf)

    endpoint = containerd_endpoint(args.containerd)
    theirs: list[Result] | None = None
    if endpoint:
        with Client(endpoint, timeout=60) as client:
            if answers(client, endpoint):
                suite = StatsSuite("containerd", client, args)
                try:
                    theirs = suite.run()
                except ClientError as exc:
                    print(f"containerd: {exc}; its results so far are shown")
                    theirs = suite.results

    print(f"{IMAGE} running sleep; {args.pods} pods of {args.per_pod} containers, each wrote {args.write_mib} MiB;")
    print(f"{args.count} calls of each kind; blocking Python gRPC client over a unix socket")
    print(report(ours, theirs))
    print(summary(ours, theirs))
    print(f"total {time.monotonic() - start:.0f}s")
    return 0


def interrupted() -> int:
    print("interrupted; cleanup done (any container, pod or image it could not remove is named above)")
    return 130


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(interrupted()) from None
