"""Kubelet's load on a node: its periodic CRI calls, pod startup, and the runtime's CPU and memory.

    python -m benchmarks.bench_kubelet [--pods 30,100] [--containers 2] [--seconds 60] [--quick]
                                       [--pod-stats auto|cri|cadvisor] [--scope auto|all|run]
                                       [--containerd unix:///run/containerd-ref/containerd.sock]

For each ``--pods`` N and each runtime (a temporary pycri daemon, then containerd when it
answers), this process acts as the kubelet of a node running N pods of ``--containers`` busybox
``sleep`` containers: it starts kubelet's periodic loops (below) in threads, starts the N pods one
after another while they run, lets the node settle, then measures a steady-state window of
``--seconds``. Reported per runtime, and as the ratio pycri/containerd:

- p50/p99 of every CRI call, during pod startup and in the steady window (lists named by the
  filter kubelet gives them);
- pod startup: RunPodSandbox + C x (CreateContainer + StartContainer), the calls' own times, for
  each pod (kubelet's SyncPod also calls PodSandboxStatus and ImageStatus between them: timed, but
  not in that sum);
- CPU over the steady window (/proc/<pid>/stat utime+stime, and cutime+cstime for the children
  each has reaped) of the daemon and of its helpers: pycri's conmon processes (one per container,
  the pod's infra one included), containerd's containerd-shim-runc-v2 processes of this run's pods
  (one per pod); the pods' own processes (pause / catatonit, sleep) are not counted, but what
  the probes run in them is, through whoever reaps it;
- the daemon's RSS (the largest of one sample a second over the window) and the helpers' summed
  PSS at its end;
- the goals of issue "Node overhead" beside each figure, met or missed: runtime CPU (daemon +
  helpers + their children) <= 0.5x containerd's; daemon RSS <= 60 MB (60,000,000 bytes); pod
  startup p50 <= 0.75x containerd's; every status and list call's p50 <= 1.0x containerd's.

Kubelet's loops, from its source (kubernetes master, pkg/kubelet; periods are the defaults):

============================  ======  =================================================================
loop                          period  CRI calls
============================  ======  =================================================================
PLEG relist                   1 s     ListPodSandbox + ListContainers, unfiltered (pleg/generic.go Relist
                                      -> GetPods(all=true), kuberuntime_manager.go); for a pod whose
                                      containers or sandboxes changed state, GetPodStatus: ListPodSandbox
                                      {pod uid label}, PodSandboxStatus each, ListContainers {pod uid
                                      label}, ContainerStatus each (generic.go updateCache,
                                      kuberuntime_manager.go GetPodStatus, getPodContainerStatuses)
housekeeping                  2 s     ListPodSandbox {state READY} + ListContainers {state RUNNING}
                                      (kubelet.go housekeepingPeriod; kubelet_pods.go HandlePodCleanups
                                      -> runtimeCache.ForceUpdateIfOlder -> GetPods(all=false))
runtime status                5 s     Status (kubelet.go Run: wait.Until(updateRuntimeUp, 5s))
node status                   10 s    Version (nodeStatusUpdateFrequency; nodestatus/setters.go
                                      VersionInfo -> runtime.Version)
container log rotation        10 s    ListContainers, unfiltered; ContainerStatus for each running
                                      container, stat of its log, ReopenContainerLog when the file is
                                      missing (logs/container_log_manager.go rotateLogs, processContainer;
                                      containerLogMonitorInterval, one worker)
eviction manager              10 s    ImageFsInfo, ListContainers + ListPodSandbox, then ListPodSandboxStats
                                      or ListContainerStats (kubelet.go evictionMonitoringPeriod;
                                      eviction_manager.go synchronize -> summary.go Get ->
                                      stats/cri_stats_provider.go ImageFsStats, listPodStats)
metrics-server scrape         15 s    ListContainers + ListPodSandbox, then ListPodSandboxStats or
                                      ListContainerStats (/metrics/resource -> GetCPUAndMemoryStats ->
                                      cri_stats_provider.go ListPodCPUAndMemoryStats; metrics-server's
                                      default resolution)
image cache                   30 s    ListImages (images/image_gc_manager.go Start)
container GC                  1 min   ListContainers; ListContainers + ListPodSandbox, unfiltered
                                      (kubelet.go ContainerGCPeriod; kuberuntime_gc.go evictContainers,
                                      evictSandboxes)
image detection               5 min   ListImages + ListPodSandbox + ListContainers (image_gc_manager.go
                                      Start -> detectImages)
image GC                      5 min   ListImages + ListPodSandbox + ListContainers, ImageFsInfo
                                      (kubelet.go ImageGCPeriod; image_gc_manager.go GarbageCollect)
exec probes                   10 s    ExecSync ``true``, timeout 1 s, on half the containers (prober/
                                      worker.go: a ticker per probe from its container's start;
                                      kuberuntime_container.go RunInContainer)
============================  ======  =================================================================

Each loop runs as kubelet's ``wait.Until``: the first iteration when kubelet starts (before the
pods), the next a period after the previous one ended; the probes tick at a fixed rate and skip a
tick while still busy, as a Go ticker does. The status manager (status/status_manager.go) makes no
CRI call: it syncs to the API server what the pod workers computed from the PLEG's cache; nor does
the pod workers' periodic resync of a running pod that needs nothing. Starting a pod follows
SyncPod (kuberuntime_manager.go): RunPodSandbox, PodSandboxStatus (the pod's IP), then per
container ImageStatus (EnsureImageExists; the image is passed on by its id, as kubelet does),
CreateContainer, StartContainer. Pods and containers carry kubelet's labels (pod name, namespace,
uid; container name) and a log directory / log path, as kubelet sets them.

Stats: kubelet calls ListPodSandboxStats only with the PodAndContainerStatsFromCRI feature gate
(alpha, off by default), and on UNIMPLEMENTED falls back, each time, to ListContainerStats and
cAdvisor. ``--pod-stats cri`` does exactly that on each runtime; ``cadvisor`` calls
ListContainerStats (kubelet's default); ``auto`` (the default) takes ``cri`` when every runtime
measured implements ListPodSandboxStats, and otherwise ``cadvisor`` for both, so both runtimes
answer the same calls, and says so. containerd 1.6 answers ListPodSandboxStats for these pods with
UNKNOWN ("cgroupPath is empty"): they have no cgroup parent (kubelet gives each pod one; not
reproduced here), so with ``cri`` its loops' stats calls fail, and the errors are reported.

Not reproduced: cAdvisor (it reads cgroups itself, and for containerd also asks containerd's own
API about new containers), the API server side, volumes and mounts kubelet adds (/etc/hosts,
termination log, service account token), pod cgroup parents, DNS config.

Other users of a runtime: on a node every pod is kubelet's, but the reference containerd may be
shared. ``--scope all`` lists unfiltered, as kubelet does, so others' pods lengthen the lists and
their containers' stats are gathered too; ``--scope run`` adds this run's label to every list's
filter (kubelet's own filters kept), so each runtime reports on this run's pods only; ``auto``
(the default) takes ``run`` when containerd holds pods before the run starts, and says so. The
per-pod follow-ups (GetPodStatus, the ContainerStatus of log rotation) are made for this run's
pods only either way. Others' pods and containers at the steady window's start and end, whether
they changed, and other connections to the runtime's socket are reported: the daemon's CPU
includes whatever it did for them.

Needs the local registries of ../shared/tools/test-registry.sh (``seed``): both runtimes pull
registry.k8s.io/e2e-test-images/busybox:1.29-2 through the mirror on 127.0.0.1:5000.

Every pod and container carries the label ``pycri-bench=<token of this run>``; all of them are
stopped and removed at the end, also on errors and Ctrl-C (found by that label too), as are the
log directories; the image and the sandbox image are removed again when the runtime did not have
them before and nothing else uses them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import heapq
import itertools
import os
import resource
import secrets
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from benchmarks.bench_images import registries_conf
from benchmarks.bench_pods import containerd_pid, sandbox_image
from benchmarks.common import (
    CLOCK_TICKS,
    BenchDaemon,
    CpuTicks,
    Result,
    answers,
    containerd_endpoint,
    cpu_ticks,
    exit_on_sigterm,
    mib,
    processes,
    pss_kib,
    vm_rss_kib,
)
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, NotFoundError, UnimplementedError

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
COMMAND = ["sleep", "86400"]
PROBE_COMMAND = ["true"]
PROBE_TIMEOUT = 1  # seconds: a probe's default timeoutSeconds
LABEL = "pycri-bench"
NAMESPACE = "pycri-bench"
POD_NAME_LABEL = "io.kubernetes.pod.name"  # kubelet's labels (pkg/kubelet/types/labels.go)
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
PULL_TIMEOUT = 120.0
CALL_TIMEOUT = 120.0  # kubelet's --runtime-request-timeout default, 2 min
LOOP_WORKERS = 16  # threads for the loops' iterations: kubelet runs each in a goroutine of its own
KUBELET_HEAD_START = 1.0  # seconds the loops run before the first pod arrives
SETTLE = 3.0  # seconds after the last pod started before the steady window: PLEG has seen it all
INTERRUPTED_CALL_WAIT = 10.0  # seconds to watch for the pod of an interrupted RunPodSandbox

# The goals.
GOAL_CPU_RATIO = 0.5
GOAL_RSS_BYTES = 60_000_000
GOAL_STARTUP_RATIO = 0.75
GOAL_STATUS_RATIO = 1.0

# Kubelet's periods, in seconds (see the table above).
PLEG_RELIST = 1.0
HOUSEKEEPING = 2.0
RUNTIME_STATUS = 5.0
NODE_STATUS = 10.0
LOG_ROTATION = 10.0
EVICTION = 10.0
METRICS_SCRAPE = 15.0
IMAGE_CACHE = 30.0
CONTAINER_GC = 60.0
IMAGE_DETECT = 300.0
IMAGE_GC = 300.0
PROBE_PERIOD = 10.0

# The PLEG's view of states (pleg/generic.go convertState; a sandbox is a container to it).
CONTAINER_STATES = {
    api.CONTAINER_CREATED: "unknown",
    api.CONTAINER_RUNNING: "running",
    api.CONTAINER_EXITED: "exited",
    api.CONTAINER_UNKNOWN: "unknown",
}
SANDBOX_STATES = {api.SANDBOX_READY: "running", api.SANDBOX_NOTREADY: "exited"}

T = TypeVar("T")


# recording ------------------------------------------------------------------------------------


class Recorder:
    """Durations of the CRI calls, by phase and name, and of the loops' iterations; errors by loop."""

    def __init__(self) -> None:
        self.phase = "setup"
        self._lock = threading.Lock()
        self.samples: dict[str, dict[str, list[float]]] = {}
        self.loops: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}

    def add(self, phase: str, name: str, ms: float) -> None:
        with self._lock:
            self.samples.setdefault(phase, {}).setdefault(name, []).append(ms)

    def call(self, name: str, fn: Callable[[], T]) -> T:
        """Time one CRI call under ``name`` in the phase it started in (a failed call is not timed)."""
        phase = self.phase
        start = time.perf_counter()
        result = fn()
        self.add(phase, name, (time.perf_counter() - start) * 1000)
        return result

    def loop(self, name: str, ms: float) -> None:
        if self.phase == "steady":
            with self._lock:
                self.loops.setdefault(name, []).append(ms)

    def error(self, loop: str, exc: BaseException) -> None:
        with self._lock:
            self.errors.setdefault(loop, []).append(f"{type(exc).__name__}: {exc}")

    def results(self, phase: str) -> list[Result]:
        with self._lock:
            return [Result(name, list(samples)) for name, samples in self.samples.get(phase, {}).items()]


# kubelet's loops ------------------------------------------------------------------------------


@dataclass
class Loop:
    name: str
    period: float
    fn: Callable[[], None]
    ticker: bool = False  # a fixed rate, skipping ticks while busy (probes); else wait.Until's sliding period
    busy: bool = False


class Scheduler:
    """Runs loops in a thread pool, each iteration in a thread of its own, as kubelet's goroutines."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._pool = ThreadPoolExecutor(LOOP_WORKERS, thread_name_prefix="kubelet")
        self._due: list[tuple[float, int, Loop]] = []
        self._serial = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="kubelet-scheduler", daemon=True)
        self._thread.start()

    def add(self, loop: Loop, at: float | None = None) -> None:
        with self._cond:
            if not self._stopped:
                heapq.heappush(self._due, (time.monotonic() if at is None else at, next(self._serial), loop))
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and (not self._due or self._due[0][0] > time.monotonic()):
                    self._cond.wait(timeout=self._due[0][0] - time.monotonic() if self._due else None)
                if self._stopped:
                    return
                due, _, loop = heapq.heappop(self._due)
                if loop.busy:  # only a ticker gets here while busy: it drops the tick
                    heapq.heappush(self._due, (due + loop.period, next(self._serial), loop))
                    continue
                loop.busy = True
            self._pool.submit(self._iterate, loop, due)

    def _iterate(self, loop: Loop, due: float) -> None:
        start = time.perf_counter()
        try:
            loop.fn()
        except Exception as exc:
            self.recorder.error(loop.name, exc)
        finally:
            self.recorder.loop(loop.name, (time.perf_counter() - start) * 1000)
            with self._cond:
                loop.busy = False
            if loop.ticker:
                self.add(loop, due + loop.period)
            else:
                self.add(loop, time.monotonic() + loop.period)

    def stop(self) -> None:
        """Schedule nothing more and wait for the iterations under way."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join()
        self._pool.shutdown(wait=True, cancel_futures=True)


# one node ---------------------------------------------------------------------------------------


@dataclass
class Pod:
    uid: str
    name: str
    config: api.PodSandboxConfig
    log_dir: Path
    sandbox_id: str = ""
    containers: list[str] = field(default_factory=list)


@dataclass
class Cpu:
    """CPU seconds over the steady window."""

    daemon: float = 0.0
    daemon_children: float = 0.0
    helpers: float = 0.0
    helpers_children: float = 0.0
    helper_count: int = 0
    helpers_gone: int = 0  # helpers that ended within the window: their last part is not counted
    daemon_found: bool = True

    @property
    def total(self) -> float:
        return self.daemon + self.daemon_children + self.helpers + self.helpers_children


@dataclass
class NodeResult:
    label: str
    helper_name: str
    pods: int
    containers: int
    startup: list[Result]
    steady: list[Result]
    loops: list[Result]
    pod_startup_ms: list[float]
    window_s: float
    cpu: Cpu
    daemon_rss_max_kib: int | None
    helpers_pss_kib: int
    helpers_rss_kib: int
    helper_count: int
    foreign: tuple[int, int]  # most sandboxes / containers of others at the steady window's start or end
    foreign_churn: bool  # others' pods or containers were not the same at its end
    scope: str
    other_clients: int  # most connections to the runtime's socket besides this benchmark's, in the window
    stats_note: str
    errors: dict[str, list[str]]
    client_cpu_s: float


class Node:
    """The kubelet of one node: its loops, its pods, and what it measures of the runtime."""

    def __init__(
        self,
        label: str,
        client: Client,
        args: argparse.Namespace,
        pods: int,
        pod_stats: str,
        daemon_pid: Callable[[], int | None],
        helpers: tuple[str, Callable[[set[str]], list[int]]],
        socket_path: str,
        scope: str,
    ) -> None:
        self.label = label
        self.socket_path = socket_path
        self.client = client
        self.args = args
        self.n = pods
        self.pod_stats = pod_stats  # "cri": ListPodSandboxStats, falling back on UNIMPLEMENTED; "cadvisor"
        self.daemon_pid = daemon_pid
        self.helper_name, self.helper_pids = helpers
        self.token = secrets.token_hex(4)
        self.serial = itertools.count()
        self.rec = Recorder()
        self.pods: dict[str, Pod] = {}  # by uid
        self.ours: set[str] = set()  # uids of this run's pods, as the PLEG sees them
        self.pleg: dict[str, dict[str, str]] = {}  # pod uid -> {sandbox or container id: state}
        self.scope = {LABEL: self.token} if scope == "run" else {}  # added to every list's filter
        self.foreign = (0, 0)
        self.foreign_churn = False  # others' pods or containers changed over the steady window: the runtime worked for them
        self.fell_back = False  # a ListPodSandboxStats answered UNIMPLEMENTED
        self.in_flight = False  # a RunPodSandbox or CreateContainer is under way
        self.had_image = self.has_image(IMAGE)
        self.pulled = False
        self.image_ref = IMAGE
        self.sandbox_image = sandbox_image(client)
        self.had_sandbox_image = self.sandbox_image is not None and self.has_image(self.sandbox_image)
        self.lock = threading.Lock()
        self.log_root = Path(tempfile.mkdtemp(prefix="pycri-bench-kubelet-logs-"))  # last: run() removes it

    # CRI calls as kubelet makes them -----------------------------------------------------------

    def list_sandboxes(self, ready_only: bool = False) -> list[api.PodSandbox]:
        """ListPodSandbox as kubelet filters it (every pod, or the ready ones), within the run's scope."""
        state = api.PodSandboxStateValue(state=api.SANDBOX_READY) if ready_only else None
        request = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(state=state, label_selector=self.scope))
        name = "ListPodSandbox {ready}" if ready_only else "ListPodSandbox"
        return list(self.rec.call(name, functools.partial(self.client.list_pod_sandbox, request)).items)

    def list_containers(self, running_only: bool = False) -> list[api.Container]:
        """ListContainers as kubelet filters it (every container, or the running ones), within the run's scope."""
        state = api.ContainerStateValue(state=api.CONTAINER_RUNNING) if running_only else None
        request = api.ListContainersRequest(filter=api.ContainerFilter(state=state, label_selector=self.scope))
        name = "ListContainers {running}" if running_only else "ListContainers"
        return list(self.rec.call(name, functools.partial(self.client.list_containers, request)).containers)

    def get_pods(self, all_: bool) -> tuple[list[api.PodSandbox], list[api.Container]]:
        """GetPods: every sandbox and container, or (housekeeping) the ready and running ones."""
        return self.list_sandboxes(ready_only=not all_), self.list_containers(running_only=not all_)

    def relist(self) -> None:
        """PLEG: list everything, inspect the pods whose sandboxes or containers changed state."""
        sandboxes, containers = self.get_pods(all_=True)
        current: dict[str, dict[str, str]] = {}
        for s in sandboxes:
            current.setdefault(s.metadata.uid, {})[s.id] = SANDBOX_STATES.get(s.state, "unknown")
        for c in containers:
            current.setdefault(c.labels.get(POD_UID_LABEL, ""), {})[c.id] = CONTAINER_STATES.get(c.state, "unknown")
        ours = set(self.ours)
        for uid in set(self.pleg) | set(current):
            old, new = self.pleg.get(uid, {}), current.get(uid, {})
            if old == new:
                continue
            if new and uid in ours:
                try:
                    self.get_pod_status(uid)
                except ClientError:
                    continue  # inspected again at the next relist: the record stays as it was
            if new:
                self.pleg[uid] = new
            else:
                self.pleg.pop(uid, None)

    def get_pod_status(self, uid: str) -> None:
        selector = {POD_UID_LABEL: uid}
        sandboxes = self.rec.call(
            "ListPodSandbox {pod uid}",
            lambda: self.client.list_pod_sandbox(api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector=selector))),
        ).items
        for s in sorted(sandboxes, key=lambda s: s.created_at, reverse=True):
            with contextlib.suppress(NotFoundError):
                request = api.PodSandboxStatusRequest(pod_sandbox_id=s.id)
                self.rec.call("PodSandboxStatus", functools.partial(self.client.pod_sandbox_status, request))
        containers = self.rec.call(
            "ListContainers {pod uid}",
            lambda: self.client.list_containers(api.ListContainersRequest(filter=api.ContainerFilter(label_selector=selector))),
        ).containers
        for c in containers:
            self.container_status(c.id)

    def container_status(self, cid: str) -> api.ContainerStatus | None:
        try:
            request = api.ContainerStatusRequest(container_id=cid)
            return self.rec.call("ContainerStatus", lambda: self.client.container_status(request)).status
        except NotFoundError:
            return None

    def housekeeping(self) -> None:
        self.get_pods(all_=False)

    def runtime_status(self) -> None:
        self.rec.call("Status", lambda: self.client.status(api.StatusRequest(verbose=False)))

    def node_status(self) -> None:
        self.rec.call("Version", lambda: self.client.version(api.VersionRequest(version="0.1.0")))

    def rotate_logs(self) -> None:
        containers = self.list_containers()
        ours = set(self.ours)
        for c in containers:
            if c.state != api.CONTAINER_RUNNING or c.labels.get(POD_UID_LABEL) not in ours:
                continue
            status = self.container_status(c.id)
            if status is None:
                continue
            try:
                os.stat(status.log_path)
            except FileNotFoundError:
                request = api.ReopenContainerLogRequest(container_id=c.id)
                self.rec.call("ReopenContainerLog", functools.partial(self.client.reopen_container_log, request))
            except OSError:
                pass

    def list_pod_stats(self) -> None:
        """The CRI part of listPodStats / ListPodCPUAndMemoryStats once the pod and container maps are made."""
        if self.pod_stats == "cri":
            phase, start = self.rec.phase, time.perf_counter()
            try:
                request = api.ListPodSandboxStatsRequest(filter=api.PodSandboxStatsFilter(label_selector=self.scope))
                self.rec.call("ListPodSandboxStats", functools.partial(self.client.list_pod_sandbox_stats, request))
                return
            except UnimplementedError:
                self.fell_back = True  # kubelet logs it and falls back, at every call
                self.rec.add(phase, "ListPodSandboxStats (UNIMPLEMENTED)", (time.perf_counter() - start) * 1000)
        stats = api.ListContainerStatsRequest(filter=api.ContainerStatsFilter(label_selector=self.scope))
        self.rec.call("ListContainerStats", functools.partial(self.client.list_container_stats, stats))

    def image_fs_info(self) -> None:
        self.rec.call("ImageFsInfo", lambda: self.client.image_fs_info(api.ImageFsInfoRequest()))

    def eviction(self) -> None:
        """summary.Get(updateStats=true): ImageFsStats, then listPodStats."""
        self.image_fs_info()
        self.list_containers()
        self.list_sandboxes()
        self.list_pod_stats()

    def metrics_scrape(self) -> None:
        """/metrics/resource: GetCPUAndMemoryStats -> ListPodCPUAndMemoryStats."""
        self.list_containers()
        self.list_sandboxes()
        self.list_pod_stats()

    def list_images(self) -> None:
        self.rec.call("ListImages", lambda: self.client.list_images(api.ListImagesRequest()))

    def detect_images(self) -> None:
        self.list_images()
        self.get_pods(all_=True)

    def image_gc(self) -> None:
        self.detect_images()
        self.image_fs_info()

    def container_gc(self) -> None:
        self.list_containers()  # evictContainers
        self.list_containers()  # evictSandboxes: containers, then sandboxes
        self.list_sandboxes()

    def probe(self, cid: str) -> Callable[[], None]:
        request = api.ExecSyncRequest(container_id=cid, cmd=PROBE_COMMAND, timeout=PROBE_TIMEOUT)

        def run() -> None:
            response = self.rec.call("ExecSync (probe)", lambda: self.client.exec_sync(request, timeout=CALL_TIMEOUT))
            if response.exit_code != 0:
                raise RuntimeError(f"probe of {cid[:13]} exited {response.exit_code}: {response.stderr[-200:]!r}")

        return run

    def loops(self) -> list[Loop]:
        return [
            Loop("PLEG relist", PLEG_RELIST, self.relist),
            Loop("housekeeping", HOUSEKEEPING, self.housekeeping),
            Loop("runtime status", RUNTIME_STATUS, self.runtime_status),
            Loop("node status", NODE_STATUS, self.node_status),
            Loop("container log rotation", LOG_ROTATION, self.rotate_logs),
            Loop("eviction manager", EVICTION, self.eviction),
            Loop("metrics-server scrape", METRICS_SCRAPE, self.metrics_scrape),
            Loop("image cache", IMAGE_CACHE, self.list_images),
            Loop("container GC", CONTAINER_GC, self.container_gc),
            Loop("image detection", IMAGE_DETECT, self.detect_images),
            Loop("image GC", IMAGE_GC, self.image_gc),
        ]

    # pods -----------------------------------------------------------------------------------

    def has_image(self, ref: str) -> bool:
        return bool(self.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=ref))).image.id)

    def pull(self) -> None:
        if not self.had_image:
            self.pulled = True
            self.client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=IMAGE)), timeout=PULL_TIMEOUT)
        image = self.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=IMAGE))).image
        self.image_ref = image.id or IMAGE

    def new_pod(self) -> Pod:
        uid = str(uuid.uuid4())
        name = f"kubelet-{self.token}-{next(self.serial)}"
        log_dir = self.log_root / f"{NAMESPACE}_{name}_{uid}"  # kubelet: /var/log/pods/<ns>_<name>_<uid>
        log_dir.mkdir(mode=0o755)
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=uid, attempt=0),
            hostname=name,
            log_directory=str(log_dir),
            labels={LABEL: self.token, POD_NAME_LABEL: name, POD_NAMESPACE_LABEL: NAMESPACE, POD_UID_LABEL: uid},
            annotations={"kubernetes.io/config.source": "api", "kubernetes.io/config.seen": time.strftime("%Y-%m-%dT%H:%M:%SZ")},
        )
        pod = Pod(uid=uid, name=name, config=config, log_dir=log_dir)
        with self.lock:
            self.pods[uid] = pod
        self.ours.add(uid)
        return pod

    def container_config(self, pod: Pod, index: int) -> api.ContainerConfig:
        name = f"c{index}"
        (pod.log_dir / name).mkdir(mode=0o755, exist_ok=True)  # kubelet makes the container's log directory
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name, attempt=0),
            image=api.ImageSpec(image=self.image_ref, user_specified_image=IMAGE),
            command=COMMAND,
            log_path=f"{name}/0.log",
            labels={
                LABEL: self.token,
                POD_NAME_LABEL: pod.name,
                POD_NAMESPACE_LABEL: NAMESPACE,
                POD_UID_LABEL: pod.uid,
                CONTAINER_NAME_LABEL: name,
            },
            annotations={
                "io.kubernetes.container.hash": secrets.token_hex(4),
                "io.kubernetes.container.restartCount": "0",
                "io.kubernetes.container.terminationMessagePath": "/dev/termination-log",
                "io.kubernetes.container.terminationMessagePolicy": "File",
                "io.kubernetes.pod.terminationGracePeriod": "30",
            },
        )

    def start_pod(self, containers: int, probes: Scheduler | None, probe_first: int) -> float:
        """SyncPod for a new pod; returns RunPodSandbox + the containers' CreateContainer + StartContainer, in ms.
        Containers whose index in the node (from ``probe_first``) is even get an exec probe."""
        pod = self.new_pod()
        self.in_flight = True
        start = time.perf_counter()
        response = self.rec.call(
            "RunPodSandbox",
            lambda: self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=pod.config), timeout=CALL_TIMEOUT),
        )
        total = time.perf_counter() - start
        pod.sandbox_id = response.pod_sandbox_id
        self.in_flight = False
        status = api.PodSandboxStatusRequest(pod_sandbox_id=pod.sandbox_id)
        self.rec.call("PodSandboxStatus", lambda: self.client.pod_sandbox_status(status))
        for index in range(containers):
            image = api.ImageStatusRequest(image=api.ImageSpec(image=IMAGE))
            self.rec.call("ImageStatus", functools.partial(self.client.image_status, image))
            create = api.CreateContainerRequest(
                pod_sandbox_id=pod.sandbox_id, config=self.container_config(pod, index), sandbox_config=pod.config
            )
            self.in_flight = True
            start = time.perf_counter()
            created = self.rec.call(
                "CreateContainer", functools.partial(self.client.create_container, create, timeout=CALL_TIMEOUT)
            )
            cid = created.container_id
            total += time.perf_counter() - start
            pod.containers.append(cid)
            self.in_flight = False
            request = api.StartContainerRequest(container_id=cid)
            start = time.perf_counter()
            self.rec.call("StartContainer", functools.partial(self.client.start_container, request, timeout=CALL_TIMEOUT))
            total += time.perf_counter() - start
            if probes is not None and (probe_first + index) % 2 == 0:
                probes.add(Loop(f"exec probe {cid[:13]}", PROBE_PERIOD, self.probe(cid), ticker=True))
        return total * 1000

    def remove_pod(self, pod: Pod) -> None:
        for cid in pod.containers:
            with contextlib.suppress(NotFoundError):
                self.client.stop_container(api.StopContainerRequest(container_id=cid, timeout=0), timeout=CALL_TIMEOUT)
            with contextlib.suppress(NotFoundError):
                self.client.remove_container(api.RemoveContainerRequest(container_id=cid), timeout=CALL_TIMEOUT)
        if pod.sandbox_id:
            with contextlib.suppress(NotFoundError):
                self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id), timeout=CALL_TIMEOUT)
            with contextlib.suppress(NotFoundError):
                self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id), timeout=CALL_TIMEOUT)
        with self.lock:
            self.pods.pop(pod.uid, None)
        self.ours.discard(pod.uid)
        shutil.rmtree(pod.log_dir, ignore_errors=True)

    # measuring ------------------------------------------------------------------------------

    def others(self) -> tuple[set[str], set[str]]:
        """Sandboxes and containers (id and state) that are not this run's: untimed, outside the window."""
        sandboxes = self.client.list_pod_sandbox(api.ListPodSandboxRequest()).items
        containers = self.client.list_containers(api.ListContainersRequest()).containers
        return (
            {f"{s.id}:{s.state}" for s in sandboxes if s.labels.get(LABEL) != self.token},
            {f"{c.id}:{c.state}" for c in containers if c.labels.get(LABEL) != self.token},
        )

    def sandbox_ids(self) -> set[str]:
        with self.lock:
            return {p.sandbox_id for p in self.pods.values() if p.sandbox_id}

    def cpu_snapshot(self) -> tuple[CpuTicks | None, dict[int, CpuTicks]]:
        pid = self.daemon_pid()
        helpers = {p: t for p in self.helper_pids(self.sandbox_ids()) if (t := cpu_ticks(p)) is not None}
        return (cpu_ticks(pid) if pid else None), helpers

    def cpu_used(
        self, before: tuple[CpuTicks | None, dict[int, CpuTicks]], after: tuple[CpuTicks | None, dict[int, CpuTicks]]
    ) -> Cpu:
        (d0, h0), (d1, h1) = before, after
        cpu = Cpu(helper_count=len(h1))
        if d0 is None or d1 is None or d0.start != d1.start:
            cpu.daemon_found = False
        else:
            cpu.daemon = (d1.own - d0.own) / CLOCK_TICKS
            cpu.daemon_children = (d1.children - d0.children) / CLOCK_TICKS
        for pid, end in h1.items():
            begin = h0.get(pid)
            if begin is None or begin.start != end.start:  # started within the window
                begin = CpuTicks(own=0, children=0, start=end.start)
            cpu.helpers += (end.own - begin.own) / CLOCK_TICKS
            cpu.helpers_children += (end.children - begin.children) / CLOCK_TICKS
        cpu.helpers_gone = sum(1 for pid, t in h0.items() if pid not in h1 or h1[pid].start != t.start)
        return cpu

    # the run --------------------------------------------------------------------------------

    def run(self, containers: int, seconds: float) -> NodeResult:
        scheduler: Scheduler | None = None
        try:
            self.pull()
            self.rec.phase = "setup"
            self.start_pod(1, None, 1)  # untimed: the sandbox image, the first container of the process
            for pod in list(self.pods.values()):
                self.remove_pod(pod)
            client_start = resource.getrusage(resource.RUSAGE_SELF)
            self.rec.phase = "startup"
            scheduler = Scheduler(self.rec)
            for loop in self.loops():
                scheduler.add(loop)
            time.sleep(KUBELET_HEAD_START)
            startups = [self.start_pod(containers, scheduler, i * containers) for i in range(self.n)]
            time.sleep(SETTLE)
            others_before = self.others()
            before = self.cpu_snapshot()
            self.rec.phase = "steady"
            started = time.monotonic()
            rss_max: int | None = None
            connections = cri_connections(self.socket_path)
            while (left := started + seconds - time.monotonic()) > 0:
                time.sleep(min(1.0, left))
                pid = self.daemon_pid()
                rss = vm_rss_kib(pid) if pid else None
                if rss is not None:
                    rss_max = max(rss_max or 0, rss)
                connections = max(connections, cri_connections(self.socket_path))
            after = self.cpu_snapshot()
            window = time.monotonic() - started
            self.rec.phase = "after"
            others_after = self.others()
            self.foreign = (
                max(len(others_before[0]), len(others_after[0])),
                max(len(others_before[1]), len(others_after[1])),
            )
            self.foreign_churn = others_before != others_after
            helpers = sorted(after[1])
            pss = sum(pss_kib(p) or 0 for p in helpers)
            rss_helpers = sum(vm_rss_kib(p) or 0 for p in helpers)
            client_end = resource.getrusage(resource.RUSAGE_SELF)
            scheduler.stop()
            scheduler = None
            return NodeResult(
                label=self.label,
                helper_name=self.helper_name,
                pods=self.n,
                containers=containers,
                startup=self.rec.results("startup"),
                steady=self.rec.results("steady"),
                loops=[Result(name, samples) for name, samples in self.rec.loops.items() if not name.startswith("exec probe")]
                + probe_loops(self.rec.loops),
                pod_startup_ms=startups,
                window_s=window,
                cpu=self.cpu_used(before, after),
                daemon_rss_max_kib=rss_max,
                helpers_pss_kib=pss,
                helpers_rss_kib=rss_helpers,
                helper_count=len(helpers),
                foreign=self.foreign,
                foreign_churn=self.foreign_churn,
                scope="this run's pods (label selector on every list)" if self.scope else "every pod (unfiltered, as kubelet)",
                other_clients=max(0, connections - 1),
                stats_note=self.stats_note(),
                errors=dict(self.rec.errors),
                client_cpu_s=(client_end.ru_utime + client_end.ru_stime) - (client_start.ru_utime + client_start.ru_stime),
            )
        finally:
            if scheduler is not None:
                scheduler.stop()
            self.cleanup()

    def stats_note(self) -> str:
        if self.pod_stats == "cri":
            if self.fell_back:
                return "ListPodSandboxStats answered UNIMPLEMENTED: kubelet's fallback, ListContainerStats, at every call"
            return "ListPodSandboxStats (PodAndContainerStatsFromCRI on)"
        return "ListContainerStats (PodAndContainerStatsFromCRI off, kubelet's default)"

    # cleanup --------------------------------------------------------------------------------

    def labelled(self) -> tuple[list[str], list[str]]:
        containers = self.client.list_containers(
            api.ListContainersRequest(filter=api.ContainerFilter(label_selector={LABEL: self.token}))
        ).containers
        pods = self.client.list_pod_sandbox(
            api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={LABEL: self.token}))
        ).items
        return [c.id for c in containers], [p.id for p in pods]

    def cleanup(self) -> None:
        """Remove every container and pod of this run (known, or found by the run's label), the log
        directories, and the images pulled for the run when nothing else uses them."""
        failures: list[str] = []
        if self.in_flight:
            print(
                f"{self.label}: a call creating a pod or container was interrupted; watching for it for up to"
                f" {INTERRUPTED_CALL_WAIT:.0f}s"
            )
        deadline = time.monotonic() + (INTERRUPTED_CALL_WAIT if self.in_flight else 0)
        known_containers = {cid for pod in self.pods.values() for cid in pod.containers}
        known_pods = {pod.sandbox_id for pod in self.pods.values() if pod.sandbox_id}
        for pod in list(self.pods.values()):
            try:
                self.remove_pod(pod)
            except ClientError as exc:
                failures.append(f"pod {pod.sandbox_id[:13]}: {exc}")
        while True:
            try:
                containers, pods = self.labelled()
            except ClientError as exc:
                failures.append(f"listing: {exc}")
                break
            for cid in containers:
                try:
                    with contextlib.suppress(NotFoundError):
                        self.client.stop_container(api.StopContainerRequest(container_id=cid, timeout=0), timeout=CALL_TIMEOUT)
                    with contextlib.suppress(NotFoundError):
                        self.client.remove_container(api.RemoveContainerRequest(container_id=cid), timeout=CALL_TIMEOUT)
                except ClientError as exc:
                    failures.append(f"container {cid[:13]}: {exc}")
            for pod_id in pods:
                try:
                    with contextlib.suppress(NotFoundError):
                        self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=CALL_TIMEOUT)
                    with contextlib.suppress(NotFoundError):
                        self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=CALL_TIMEOUT)
                except ClientError as exc:
                    failures.append(f"pod {pod_id[:13]}: {exc}")
            found_unknown = set(containers) - known_containers or set(pods) - known_pods
            if found_unknown or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        shutil.rmtree(self.log_root, ignore_errors=True)
        try:
            self.remove_images()
        except ClientError as exc:
            failures.append(f"images: {exc}")
        if failures:
            print(f"{self.label}: cleanup failed: {failures}")

    def remove_images(self) -> None:
        if self.pulled and self.has_image(IMAGE):
            if self.client.list_containers(api.ListContainersRequest()).containers:
                print(f"{self.label}: other containers exist, so {IMAGE} stays")
            else:
                with contextlib.suppress(NotFoundError):
                    self.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=IMAGE)))
        if self.sandbox_image and not self.had_sandbox_image and self.has_image(self.sandbox_image):
            if self.client.list_pod_sandbox(api.ListPodSandboxRequest()).items:
                print(f"{self.label}: other pods exist, so its sandbox image {self.sandbox_image} stays")
            else:
                with contextlib.suppress(NotFoundError):
                    self.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=self.sandbox_image)))


def cri_connections(socket_path: str) -> int:
    """Connected sockets at a listening unix socket's path: one per client connection (/proc/net/unix)."""
    count = 0
    with contextlib.suppress(OSError), open("/proc/net/unix") as f:
        next(f, None)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == socket_path and fields[5] == "03":  # SS_CONNECTED
                count += 1
    return count


def probe_loops(loops: dict[str, list[float]]) -> list[Result]:
    """All probe workers' iterations as one row."""
    samples = [ms for name, values in loops.items() if name.startswith("exec probe") for ms in values]
    return [Result("exec probes", samples)] if samples else []


def others_pods(client: Client) -> int:
    """Pods a runtime holds before this run starts any."""
    return len(client.list_pod_sandbox(api.ListPodSandboxRequest()).items)


def supports_pod_stats(client: Client) -> bool:
    """Whether a runtime answers ListPodSandboxStats (asked about a label no pod has)."""
    request = api.ListPodSandboxStatsRequest(
        filter=api.PodSandboxStatsFilter(label_selector={LABEL: f"probe-{secrets.token_hex(4)}"})
    )
    try:
        client.list_pod_sandbox_stats(request, timeout=30)
    except UnimplementedError:
        return False
    return True


# reporting ------------------------------------------------------------------------------------


def is_status_or_list(name: str) -> bool:
    return name.startswith("List") or name.split()[0].endswith("Status")


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "MISSED")


def calls_table(title: str, ours: list[Result], theirs: list[Result] | None) -> str:
    lines = [title]
    header = f"  {'call':<34}{'n':>6}{'pycri p50':>11}{'p99':>9}"
    if theirs is not None:
        header += f"{'n':>7}{'containerd p50':>16}{'p99':>9}{'ratio p50':>11}{'p99':>7}  goal (status/list p50 <= 1.0x)"
    lines.append(header)
    by_name = {r.name: r for r in theirs or []}
    names = [r.name for r in ours] + [r.name for r in theirs or [] if r.name not in {o.name for o in ours}]
    mine = {r.name: r for r in ours}
    for name in names:
        r, other = mine.get(name), by_name.get(name)
        line = f"  {name:<34}"
        line += f"{len(r.samples_ms):>6}{r.p50:>9.2f}ms{r.p99:>7.2f}ms" if r else f"{'-':>6}{'-':>11}{'-':>9}"
        if theirs is not None:
            line += (
                f"{len(other.samples_ms):>7}{other.p50:>14.2f}ms{other.p99:>7.2f}ms" if other else f"{'-':>7}{'-':>16}{'-':>9}"
            )
            if r and other:
                line += f"{r.p50 / other.p50:>11.2f}{r.p99 / other.p99:>7.2f}"
                if is_status_or_list(name):
                    line += f"  {verdict(r.p50 <= GOAL_STATUS_RATIO * other.p50)}"
        lines.append(line)
    return "\n".join(lines)


def loops_table(ours: NodeResult, theirs: NodeResult | None) -> str:
    lines = ["kubelet loops, one iteration (steady window):"]
    header = f"  {'loop':<34}{'n':>6}{'pycri p50':>11}{'p99':>9}"
    if theirs is not None:
        header += f"{'n':>7}{'containerd p50':>16}{'p99':>9}"
    lines.append(header)
    by_name = {r.name: r for r in theirs.loops} if theirs else {}
    for r in ours.loops:
        line = f"  {r.name:<34}{len(r.samples_ms):>6}{r.p50:>9.1f}ms{r.p99:>7.1f}ms"
        other = by_name.get(r.name)
        if other:
            line += f"{len(other.samples_ms):>7}{other.p50:>14.1f}ms{other.p99:>7.1f}ms"
        lines.append(line)
    return "\n".join(lines)


@dataclass
class Goals:
    cpu: bool | None
    rss: bool | None
    startup: bool | None
    status: bool | None
    cpu_ratio: float | None
    startup_ratio: float | None
    worst_status: tuple[str, float] | None
    missed_status: list[str]


def status_rows(node: NodeResult) -> dict[str, Result]:
    """The status and list calls: as timed in the steady window, else (PodSandboxStatus) during startup."""
    rows = {r.name: r for r in node.startup if is_status_or_list(r.name)}
    rows.update({r.name: r for r in node.steady if is_status_or_list(r.name)})
    return rows


def goals(ours: NodeResult, theirs: NodeResult | None) -> Goals:
    rss = ours.daemon_rss_max_kib * 1024 <= GOAL_RSS_BYTES if ours.daemon_rss_max_kib is not None else None
    if theirs is None:
        return Goals(None, rss, None, None, None, None, None, [])
    cpu_ratio = None
    if ours.cpu.daemon_found and theirs.cpu.daemon_found and theirs.cpu.total > 0:
        cpu_ratio = (ours.cpu.total / ours.window_s) / (theirs.cpu.total / theirs.window_s)
    startup_ratio = statistics.median(ours.pod_startup_ms) / statistics.median(theirs.pod_startup_ms)
    mine, other = status_rows(ours), status_rows(theirs)
    ratios = {name: mine[name].p50 / other[name].p50 for name in mine if name in other and other[name].p50 > 0}
    worst = max(ratios.items(), key=lambda kv: kv[1]) if ratios else None
    missed = [f"{name} {x:.2f}" for name, x in ratios.items() if x > GOAL_STATUS_RATIO]
    return Goals(
        cpu=None if cpu_ratio is None else cpu_ratio <= GOAL_CPU_RATIO,
        rss=rss,
        startup=startup_ratio <= GOAL_STARTUP_RATIO,
        status=not missed if ratios else None,
        cpu_ratio=cpu_ratio,
        startup_ratio=startup_ratio,
        worst_status=worst,
        missed_status=missed,
    )


def seconds_and_share(cpu_s: float, window: float) -> str:
    return f"{cpu_s:.2f}s {100 * cpu_s / window:4.1f}%"


def shared_note(ours: NodeResult, theirs: NodeResult | None) -> str:
    busy = [n.label for n in (ours, theirs) if n is not None and (n.foreign_churn or n.other_clients)]
    return f" (not trustworthy: {' and '.join(busy)} also worked for others' pods)" if busy else ""


def overhead_table(ours: NodeResult, theirs: NodeResult | None, g: Goals) -> str:
    def row(name: str, mine: str, other: str = "", ratio: str = "", goal: str = "") -> str:
        line = f"  {name:<44}{mine:>16}"
        if theirs is not None:
            line += f"{other:>18}{ratio:>8}"
        return line + (f"  {goal}" if goal else "")

    def cpu_parts(n: NodeResult) -> list[str]:
        c, w = n.cpu, n.window_s
        if not c.daemon_found:
            return ["daemon not found"] * 5
        return [seconds_and_share(x, w) for x in (c.total, c.daemon, c.daemon_children, c.helpers, c.helpers_children)]

    o = cpu_parts(ours)
    t = cpu_parts(theirs) if theirs else [""] * 5
    helpers = f"{ours.helper_name} x{ours.helper_count}" + (f" / {theirs.helper_name} x{theirs.helper_count}" if theirs else "")
    lines = [f"node overhead, steady window of {ours.window_s:.1f}s" + (f" / {theirs.window_s:.1f}s" if theirs else "")]
    lines.append(row("", "pycri", "containerd", "ratio", "goal") if theirs else row("", "pycri", goal="goal"))
    ratio = f"{g.cpu_ratio:.2f}" if g.cpu_ratio is not None else "?"
    lines.append(
        row(
            "runtime CPU: total (share of one core)",
            o[0],
            t[0],
            ratio,
            f"<= {GOAL_CPU_RATIO:.2f}x containerd: {verdict(g.cpu)}{shared_note(ours, theirs)}",
        )
    )
    lines.append(row("  daemon", o[1], t[1]))
    lines.append(row("  daemon's reaped children (runc, CNI...)", o[2], t[2]))
    lines.append(row(f"  helpers ({helpers})", o[3], t[3]))
    lines.append(row("  helpers' reaped children (runc, probes)", o[4], t[4]))
    rss_o = mib(ours.daemon_rss_max_kib) if ours.daemon_rss_max_kib is not None else "?"
    rss_t = (mib(theirs.daemon_rss_max_kib) if theirs.daemon_rss_max_kib is not None else "?") if theirs else ""
    lines.append(
        row(
            "daemon RSS (largest sample in the window)",
            rss_o,
            rss_t,
            "",
            f"<= {mib(GOAL_RSS_BYTES / 1024)} (60 MB): {verdict(g.rss)}",
        )
    )
    lines.append(
        row(
            "helpers' PSS, summed (RSS summed)",
            f"{mib(ours.helpers_pss_kib)}",
            f"{mib(theirs.helpers_pss_kib)}" if theirs else "",
        )
    )
    lines.append(row("", f"({mib(ours.helpers_rss_kib)})", f"({mib(theirs.helpers_rss_kib)})" if theirs else ""))
    p50_o = f"{statistics.median(ours.pod_startup_ms):.1f}ms"
    p50_t = f"{statistics.median(theirs.pod_startup_ms):.1f}ms" if theirs else ""
    ratio = f"{g.startup_ratio:.2f}" if g.startup_ratio is not None else ""
    lines.append(
        row(
            f"pod startup p50 (Run + {ours.containers}x(Create+Start))",
            p50_o,
            p50_t,
            ratio,
            f"<= {GOAL_STARTUP_RATIO:.2f}x containerd: {verdict(g.startup)}",
        )
    )
    if theirs is not None:
        worst = f"worst {g.worst_status[0]} {g.worst_status[1]:.2f}" if g.worst_status else "none compared"
        missed = f" ({len(g.missed_status)} over: {', '.join(g.missed_status)})" if g.missed_status else ""
        lines.append(
            f"  status and list calls p50: {worst}; goal each <= {GOAL_STATUS_RATIO:.1f}x containerd: {verdict(g.status)}{missed}"
        )
    lines.append(
        f"  load generator (this process, kubelet's stand-in) CPU: {ours.client_cpu_s:.2f}s for pycri"
        + (f", {theirs.client_cpu_s:.2f}s for containerd" if theirs else "")
        + " (startup and window; not counted)"
    )
    return "\n".join(lines)


def notes(node: NodeResult) -> list[str]:
    out = [f"{node.label}: pod stats: {node.stats_note}; lists: {node.scope}"]
    if node.foreign != (0, 0):
        out.append(
            f"{node.label}: it also held {node.foreign[0]} sandboxes and {node.foreign[1]} containers of others"
            + (
                "; they changed over the steady window: the daemon's CPU, its reaped children's and the latencies"
                " include work done for others"
                if node.foreign_churn
                else " (the same at the steady window's start and end)"
            )
        )
    if node.other_clients:
        out.append(
            f"{node.label}: up to {node.other_clients} other clients were connected to its socket during the steady window:"
            " the daemon's CPU and the latencies include whatever they asked"
        )
    if node.cpu.helpers_gone:
        out.append(f"{node.label}: {node.cpu.helpers_gone} helper processes ended within the window (not fully counted)")
    for loop, errors in node.errors.items():
        out.append(f"{node.label}: {loop}: {len(errors)} errors, first: {errors[0]}")
    return out


def node_report(ours: NodeResult, theirs: NodeResult | None) -> str:
    title = (
        f"== {ours.pods} pods x {ours.containers} containers (busybox {' '.join(COMMAND)}), steady window {ours.window_s:.0f}s"
    )
    startup_ours = [*ours.startup, Result("pod startup (Run+Create+Start)", ours.pod_startup_ms)]
    startup_theirs = [*theirs.startup, Result("pod startup (Run+Create+Start)", theirs.pod_startup_ms)] if theirs else None
    parts = [
        title,
        calls_table(f"startup: {ours.pods} pods one after another, kubelet's loops running:", startup_ours, startup_theirs),
        calls_table("steady window:", ours.steady, theirs.steady if theirs else None),
        loops_table(ours, theirs),
        overhead_table(ours, theirs, goals(ours, theirs)),
        *notes(ours),
        *(notes(theirs) if theirs else []),
    ]
    if theirs is None:
        parts.append("(containerd not running: start ../shared/tools/containerd-reference.sh for ratios)")
    return "\n".join(parts)


def summary_table(rows: list[tuple[NodeResult, NodeResult | None]]) -> str:
    lines = ["summary (pycri / containerd; goals: CPU <= 0.50x, daemon RSS <= 60 MB, startup p50 <= 0.75x, status/list <= 1.0x)"]
    for ours, theirs in rows:
        g = goals(ours, theirs)
        cpu = f"{g.cpu_ratio:.2f}x" if g.cpu_ratio is not None else "n/a"
        rss = mib(ours.daemon_rss_max_kib) if ours.daemon_rss_max_kib is not None else "?"
        startup = f"{g.startup_ratio:.2f}x" if g.startup_ratio is not None else "n/a"
        worst = f"worst {g.worst_status[0]} {g.worst_status[1]:.2f}x" if g.worst_status else "n/a"
        lines.append(
            f"  N={ours.pods:<4} CPU {cpu} {verdict(g.cpu)}{shared_note(ours, theirs)}; RSS {rss} {verdict(g.rss)}; "
            f"startup {startup} {verdict(g.startup)}; status/list {worst} {verdict(g.status)}"
        )
    return "\n".join(lines)


# main -----------------------------------------------------------------------------------------


def pod_counts(text: str) -> list[int]:
    counts = [int(x) for x in text.split(",") if x.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("pod counts are positive integers, comma separated")
    return counts


def choose_stats(mode: str, supported: dict[str, bool]) -> tuple[str, str | None]:
    """The stats path for every runtime, and a note when ``auto`` had to choose kubelet's default."""
    if mode != "auto":
        return mode, None
    if all(supported.values()):
        return "cri", None
    lacking = ", ".join(name for name, ok in supported.items() if not ok)
    note = (
        f"{lacking} answers UNIMPLEMENTED to ListPodSandboxStats: every runtime is driven on kubelet's fallback and"
        " default, ListContainerStats (--pod-stats cri keeps ListPodSandboxStats where implemented)"
    )
    return "cadvisor", note


def run_pycri(args: argparse.Namespace, pods: int, conf: str, stats: Callable[[Client], str]) -> NodeResult:
    daemon = BenchDaemon.temporary(images={"registries_conf": conf})
    daemon.log_level = args.log_level
    with daemon:
        try:
            with Client(daemon.socket, timeout=30) as client:
                pid = daemon.proc.pid if daemon.proc else None
                workdir = str(daemon.workdir)
                helpers = ("conmon", lambda _sandboxes: processes("conmon", workdir))
                node = Node("pycri", client, args, pods, stats(client), lambda: pid, helpers, daemon.socket, args.scope)
                result = node.run(args.containers, args.seconds)
            left = daemon.leftovers()
            if left:
                print(f"pycri left runtime state behind: {left}")
            return result
        finally:
            if args.keep_log:
                shutil.copy(daemon.log_path, f"{args.keep_log}.{pods}")


def shims(socket_path: str) -> Callable[[set[str]], list[int]]:
    """containerd-shim-runc-v2 processes of this containerd serving one of the given sandboxes."""

    def find(sandboxes: set[str]) -> list[int]:
        found = []
        for pid in processes("containerd-shim", socket_path, prefix=True):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            ids = {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-id"}
            if ids & sandboxes:
                found.append(pid)
        return found

    return find


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pods", type=pod_counts, default=[30, 100], help="pods on the node, one run each (default 30,100)")
    parser.add_argument("--containers", type=int, default=2, help="containers per pod")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the steady window")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 5 pods, a 15 s window")
    parser.add_argument(
        "--pod-stats",
        choices=("auto", "cri", "cadvisor"),
        default="auto",
        help="ListPodSandboxStats (cri, falling back as kubelet does), ListContainerStats (cadvisor), or auto",
    )
    parser.add_argument(
        "--scope",
        choices=("auto", "all", "run"),
        default="auto",
        help="lists unfiltered as kubelet's (all), or with this run's label (run); auto: run when the runtime has others' pods",
    )
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    parser.add_argument("--containerd-pid", type=int, help="containerd's pid (default: found for the reference)")
    parser.add_argument("--log-level", default="info", help="pycri daemon log level")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the pycri daemon's log to FILE.<pods> at the end")
    args = parser.parse_args(argv)
    if args.quick:
        args.pods, args.seconds = [5], 15.0
    exit_on_sigterm()
    start = time.monotonic()
    load = os.getloadavg()

    endpoint = containerd_endpoint(args.containerd)
    reference: Client | None = None
    if endpoint:
        reference = Client(endpoint, timeout=30)
        if not answers(reference, endpoint):
            reference.close()
            reference = None
    supported: dict[str, bool] = {}
    if reference is not None:
        supported["containerd"] = supports_pod_stats(reference)
    decided: dict[str, str] = {}
    notes_: list[str] = []
    if args.scope == "auto":
        held = others_pods(reference) if reference is not None else 0
        args.scope = "run" if held else "all"
        if held:
            notes_.append(
                f"containerd holds {held} pods of others: every list and stats list carries this run's label"
                " (--scope all for kubelet's unfiltered lists)"
            )
            print(notes_[-1])

    def stats_for(client: Client) -> str:
        """Asked by pycri's run once its daemon is up; decides for every runtime the first time."""
        if not decided:
            supported["pycri"] = supports_pod_stats(client)
            path, note = choose_stats(args.pod_stats, supported)
            decided["path"] = path
            if note:
                notes_.append(note)
                print(note)
        return decided["path"]

    fd, conf = tempfile.mkstemp(prefix="pycri-bench-registries-", suffix=".conf")
    os.write(fd, registries_conf().encode())
    os.close(fd)
    rows: list[tuple[NodeResult, NodeResult | None]] = []
    try:
        for pods in args.pods:
            ours = run_pycri(args, pods, conf, stats_for)
            theirs = None
            if reference is not None and endpoint is not None:
                socket_path = endpoint.removeprefix("unix://")
                node = Node(
                    "containerd",
                    reference,
                    args,
                    pods,
                    decided.get("path", "cadvisor"),
                    containerd_pid(endpoint, args.containerd_pid),
                    ("shim", shims(socket_path)),
                    socket_path,
                    args.scope,
                )
                theirs = node.run(args.containers, args.seconds)
            print(node_report(ours, theirs), flush=True)
            rows.append((ours, theirs))
    finally:
        os.unlink(conf)
        if reference is not None:
            reference.close()

    print(summary_table(rows))
    print(*notes_, sep="\n")
    end_load = os.getloadavg()
    print(
        f"load average {load[0]:.2f} at the start, {end_load[0]:.2f} at the end on {os.cpu_count()} CPUs: the machine is shared,"
        " so figures move from run to run"
    )
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
