"""Pod sandboxes: RunPodSandbox, PodSandboxStatus, StopPodSandbox, RemovePodSandbox, ListPodSandbox.

    python -m benchmarks.bench_pods [--count 30] [--pods 100] [--list-count 300]
                                    [--containerd unix:///run/containerd-ref/containerd.sock]

For each runtime (a temporary pycri daemon, then containerd when it answers):

- a warm-up pod (containerd pulls its sandbox image, registry.k8s.io/pause:3.10.1, on the
  first RunPodSandbox; pycri's infra process is the host's catatonit and needs no image);
- ``--count`` pods, one at a time: RunPodSandbox each, PodSandboxStatus round-robin over them
  (``--list-count`` calls) and as many Version calls (the gRPC floor under any status or list
  call), then StopPodSandbox and RemovePodSandbox each;
- ``--pods`` pods present at once: RunPodSandbox while they accumulate, ListPodSandbox and
  PodSandboxStatus timed, and the memory of the runtime's daemon (VmRSS) and of its per-pod
  helper processes (pycri: conmon; containerd: containerd-shim-runc-v2; RSS and PSS) before,
  with the pods, and after their removal.

Every pod carries the label ``pycri-bench=<token of this run>`` and a fresh uid; all of them are
stopped and removed at the end, also on errors and Ctrl-C (found by that label, so even a pod
whose RunPodSandbox was interrupted is removed). A sandbox image the runtime pulled for them is
removed too when it had not had it before and no other pod is left.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import secrets
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.common import (
    CONTAINERD_REF,
    FLOOR,
    BenchDaemon,
    Result,
    answers,
    containerd_endpoint,
    exit_on_sigterm,
    measure,
    mib,
    processes,
    report,
    summary,
    timed,
    total_pss_kib,
    total_rss_kib,
    unless_unimplemented,
    vm_rss_kib,
)
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, NotFoundError

LABEL = "pycri-bench"
NAMESPACE = "pycri-bench"
INTERRUPTED_RUN_WAIT = 10.0  # seconds to watch for the pod of an interrupted RunPodSandbox


@dataclass
class Memory:
    """VmRSS in KiB of a daemon and of its per-pod helper processes, at three moments."""

    daemon: str
    helper: str
    pods: int
    daemon_kib: dict[str, int | None]
    helper_kib: dict[str, tuple[int, int, int]]  # moment -> (processes, total RSS, total PSS in KiB)


class PodSuite:
    def __init__(
        self,
        label: str,
        client: Client,
        args: argparse.Namespace,
        daemon_pid: Callable[[], int | None],
        helper: tuple[str, Callable[[], list[int]]],
    ) -> None:
        self.label = label
        self.client = client
        self.args = args
        self.daemon_pid = daemon_pid
        self.helper_name, self.helper_pids = helper
        self.token = secrets.token_hex(4)
        self.serial = itertools.count()
        self.created: list[str] = []
        self.running = False  # a RunPodSandbox is under way (its pod may appear after an interruption)
        self.results: list[Result] = []
        self.memory: Memory | None = None
        self.sandbox_image = sandbox_image(client)
        self.had_sandbox_image = self.sandbox_image is not None and self.has_image(self.sandbox_image)

    # helpers ---------------------------------------------------------------------------------

    def config(self) -> api.PodSandboxConfig:
        name = f"bench-{self.token}-{next(self.serial)}"
        return api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=str(uuid.uuid4()), attempt=0),
            hostname=name,
            labels={LABEL: self.token},
        )

    def run_pod(self) -> str:
        request = api.RunPodSandboxRequest(config=self.config())
        self.running = True
        try:
            pod_id = self.client.run_pod_sandbox(request, timeout=60).pod_sandbox_id
        except ClientError:
            self.running = False  # the runtime answered: it has undone the pod (or will list it)
            raise
        self.created.append(pod_id)
        self.running = False
        return pod_id

    def stop(self, pod_id: str) -> None:
        self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)

    def remove(self, pod_id: str) -> None:
        self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
        self.created.remove(pod_id)

    def run_timed(self, n: int) -> tuple[list[str], list[float]]:
        ids: list[str] = []
        samples = []
        for _ in range(n):
            start = time.perf_counter()
            ids.append(self.run_pod())
            samples.append((time.perf_counter() - start) * 1000)
        return ids, samples

    def add(self, name: str, samples: list[float]) -> None:
        if samples:
            self.results.append(Result(name, samples))

    def status_calls(self, ids: list[str]) -> Callable[[], object]:
        requests = itertools.cycle([api.PodSandboxStatusRequest(pod_sandbox_id=pod_id) for pod_id in ids])
        return lambda: self.client.pod_sandbox_status(next(requests))

    def rss(self) -> tuple[int | None, tuple[int, int, int]]:
        pid = self.daemon_pid()
        helpers = self.helper_pids()
        return (vm_rss_kib(pid) if pid else None), (len(helpers), total_rss_kib(helpers), total_pss_kib(helpers))

    # stages ----------------------------------------------------------------------------------

    def warm_up(self) -> None:
        pod_id = self.run_pod()
        self.stop(pod_id)
        self.remove(pod_id)

    def lifecycle(self) -> None:
        ids, runs = self.run_timed(self.args.count)
        self.add("RunPodSandbox", runs)
        self.results.append(measure("PodSandboxStatus", self.status_calls(ids), self.args.list_count, 20))
        self.results.append(measure(FLOOR, self.client.version, self.args.list_count, 20))
        self.add("StopPodSandbox", [timed(functools.partial(self.stop, pod_id)) for pod_id in ids])
        self.add("RemovePodSandbox", [timed(functools.partial(self.remove, pod_id)) for pod_id in ids])

    def many(self) -> None:
        n = self.args.pods
        daemon_before, helpers_before = self.rss()
        ids, runs = self.run_timed(n)
        time.sleep(0.5)  # let helper processes settle
        daemon_with, helpers_with = self.rss()
        self.add(f"RunPodSandbox (0 to {n})", runs)
        listing = api.ListPodSandboxRequest()
        self.results.append(
            measure(f"ListPodSandbox ({n} pods)", lambda: self.client.list_pod_sandbox(listing), self.args.list_count, 20)
        )
        ready = api.ListPodSandboxRequest(
            filter=api.PodSandboxFilter(
                state=api.PodSandboxStateValue(state=api.SANDBOX_READY), label_selector={LABEL: self.token}
            )
        )
        self.results.append(
            measure(f"ListPodSandbox ({n}, filter)", lambda: self.client.list_pod_sandbox(ready), self.args.list_count, 20)
        )
        self.results.append(measure(f"PodSandboxStatus ({n} pods)", self.status_calls(ids), self.args.list_count, 20))
        for pod_id in ids:
            self.stop(pod_id)
            self.remove(pod_id)
        time.sleep(0.5)
        daemon_after, helpers_after = self.rss()
        self.memory = Memory(
            daemon=self.label,
            helper=self.helper_name,
            pods=n,
            daemon_kib={"before": daemon_before, "with": daemon_with, "after": daemon_after},
            helper_kib={"before": helpers_before, "with": helpers_with, "after": helpers_after},
        )

    def run(self) -> list[Result]:
        try:
            if unless_unimplemented(self.label, "warm-up", self.warm_up):
                unless_unimplemented(self.label, "pod lifecycle", self.lifecycle)
                if self.args.pods:
                    unless_unimplemented(self.label, f"{self.args.pods} pods", self.many)
        finally:
            self.cleanup()
        return self.results

    def has_image(self, ref: str) -> bool:
        return bool(self.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=ref))).image.id)

    def remove_sandbox_image(self) -> None:
        """The runtime pulled its sandbox image for our pods: remove it again once no pod is left."""
        if self.sandbox_image is None or self.had_sandbox_image or not self.has_image(self.sandbox_image):
            return
        if self.client.list_pod_sandbox(api.ListPodSandboxRequest()).items:
            print(f"{self.label}: other pods exist, so its sandbox image {self.sandbox_image} stays")
            return
        with contextlib.suppress(NotFoundError):
            self.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=self.sandbox_image)))

    def labelled(self) -> list[str]:
        selector = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={LABEL: self.token}))
        return [pod.id for pod in self.client.list_pod_sandbox(selector).items]

    def cleanup(self) -> None:
        """Stop and remove every pod of this run: those we know, and any other carrying its label.

        After an interrupted RunPodSandbox the runtime may still finish that pod (it is listed only
        once built), so then the label is watched until the pod shows up, for a while at most."""
        known = set(self.created)
        removed: set[str] = set()
        failures: list[str] = []
        if self.running:
            print(f"{self.label}: a RunPodSandbox was interrupted; watching for its pod for up to {INTERRUPTED_RUN_WAIT:.0f}s")
        deadline = time.monotonic() + (INTERRUPTED_RUN_WAIT if self.running else 0)
        while True:
            ids = list(self.created)
            try:
                ids += [pod_id for pod_id in self.labelled() if pod_id not in ids]
            except ClientError as exc:
                failures.append(f"ListPodSandbox: {exc}")
            for pod_id in ids:
                if pod_id in removed:
                    continue
                removed.add(pod_id)
                try:
                    with contextlib.suppress(NotFoundError):
                        self.stop(pod_id)
                    with contextlib.suppress(NotFoundError):
                        self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
                except ClientError as exc:
                    failures.append(f"{pod_id[:13]}: {exc}")
            if removed - known or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        try:
            self.remove_sandbox_image()
        except ClientError as exc:
            failures.append(f"sandbox image {self.sandbox_image}: {exc}")
        if failures:
            print(f"{self.label}: cleanup failed: {failures}")


def sandbox_image(client: Client) -> str | None:
    """The sandbox (pause) image a runtime pulls for pods, from its verbose Status (containerd's
    ``config.sandboxImage``); None when it names none (pycri runs the host's catatonit)."""
    with contextlib.suppress(ClientError, ValueError, KeyError, TypeError):
        info = client.status(api.StatusRequest(verbose=True)).info
        image = json.loads(info["config"])["sandboxImage"]
        return image if isinstance(image, str) and image else None
    return None


def memory_report(memories: list[Memory]) -> str:
    def fmt(kib: int | None) -> str:
        return mib(kib) if kib is not None else "?"

    lines = [f"{'memory':<34}{'before':>11}{'with pods':>11}{'removed':>11}{'per pod':>11}"]
    for m in memories:
        before, with_pods, after = (m.daemon_kib[k] for k in ("before", "with", "after"))
        per_pod = f"{(with_pods - before) / m.pods:.0f} KiB" if before is not None and with_pods is not None else "?"
        lines.append(f"{m.daemon + ' daemon RSS':<34}{fmt(before):>11}{fmt(with_pods):>11}{fmt(after):>11}{per_pod:>11}")
        (nb, rb, pb), (nw, rw, pw), (na, ra, pa) = (m.helper_kib[k] for k in ("before", "with", "after"))
        name = f"  {m.helper} x{nb}/{nw}/{na} RSS"
        lines.append(f"{name:<34}{mib(rb):>11}{mib(rw):>11}{mib(ra):>11}{(rw - rb) / m.pods:>7.0f} KiB")
        name = f"  {m.helper} x{nb}/{nw}/{na} PSS"
        lines.append(f"{name:<34}{mib(pb):>11}{mib(pw):>11}{mib(pa):>11}{(pw - pb) / m.pods:>7.0f} KiB")
    lines.append("per pod = (with pods - before) / pods; daemons: VmRSS; helpers (one per pod) summed, RSS counting")
    lines.append("shared pages in every process, PSS dividing them; each pod's infra process (catatonit / pause) not counted")
    return "\n".join(lines)


def containerd_pid(endpoint: str, explicit: int | None) -> Callable[[], int | None]:
    """containerd's own pid: --containerd-pid, or the reference one (its command line names containerd-ref)."""

    def find() -> int | None:
        if explicit:
            return explicit
        if endpoint != f"unix://{CONTAINERD_REF}":
            return None
        pids = processes("containerd", "containerd-ref")
        return pids[0] if len(pids) == 1 else None

    return find


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=30, help="pods run, stopped and removed one at a time")
    parser.add_argument("--pods", type=int, default=100, help="pods present while ListPodSandbox is timed")
    parser.add_argument("--list-count", type=int, default=300, help="ListPodSandbox and PodSandboxStatus calls")
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    parser.add_argument("--containerd-pid", type=int, help="containerd's pid, for its memory (default: found for the reference)")
    parser.add_argument("--log-level", default="info", help="pycri daemon log level (debug logs every RPC's time)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the pycri daemon's log there at the end")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    start = time.monotonic()

    daemon = BenchDaemon.temporary()
    daemon.log_level = args.log_level
    with daemon:
        try:
            with Client(daemon.socket, timeout=30) as client:
                pid = daemon.proc.pid if daemon.proc else None
                conmons = ("conmon", lambda: processes("conmon", str(daemon.workdir)))
                ours_suite = PodSuite("pycri", client, args, lambda: pid, conmons)
                ours = ours_suite.run()
        finally:
            if args.keep_log:
                shutil.copy(daemon.log_path, args.keep_log)
    memories = [ours_suite.memory] if ours_suite.memory else []

    endpoint = containerd_endpoint(args.containerd)
    theirs: list[Result] | None = None
    if endpoint:
        with Client(endpoint, timeout=30) as client:
            if answers(client, endpoint):
                socket_path = endpoint.removeprefix("unix://")
                shims = ("containerd-shim", lambda: processes("containerd-shim", socket_path, prefix=True))
                suite = PodSuite("containerd", client, args, containerd_pid(endpoint, args.containerd_pid), shims)
                theirs = suite.run()
                if suite.memory:
                    memories.append(suite.memory)

    print(f"{args.count} pods one at a time, {args.pods} at once; {args.list_count} status/list calls;")
    print("blocking Python gRPC client over a unix socket")
    print(report(ours, theirs))
    if memories:
        print(memory_report(memories))
    print(summary(ours, theirs))
    print(f"total {time.monotonic() - start:.0f}s")
    return 0


def interrupted() -> int:
    print("interrupted; cleanup done (any pod or image it could not remove is named above)")
    return 130


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(interrupted()) from None
