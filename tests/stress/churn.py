"""Fault injection: pods and containers churn while the daemon is SIGKILLed and restarted.

    python -m tests.stress.churn [--kills 30] [--workers 3] [--seconds 600] [--seed N]

Several asyncio workers run pods (a quarter with crun), create and start one or two busybox
containers in each (some exit by themselves with code 3, the others sleep), sometimes exec in
one, keep some pods alive for a while, then stop and remove containers and pods in varying
orders. A killer SIGKILLs the daemon at random moments, now and then again while it is
recovering, and restarts it on the same directories at once.

Every object whose creating call was answered is recorded, with when each later call about it
was answered. After each restart, the first successful ``Version`` ends the recovery time;
then ``ListPodSandbox`` and ``ListContainers`` must show every recorded object whose removal
has not begun (lost otherwise), none whose removal was answered (came back otherwise), pods
and containers whose stop was answered as not ready / exited, and the others as ready /
running. Stop and remove are retried through restarts until they succeed (a 120 s budget).
Any other error from a daemon that was up for the whole call is reported. Containers that
exited by themselves must be reported exited with code 3, also when they exited while the
daemon was down.

At the end the workers tear everything down, whatever the lists still show is removed, the
daemon is stopped with SIGTERM (it must exit 0), and nothing may be left: mounts, network
namespaces, veths on its bridge, host-local reservations, cgroups, conmon/runtime/container
processes, pod and container directories, runtime state, database records (``probes``).

The exit code is 1 on any loss, leak, failed stop or remove, unexpected error or daemon crash.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import random
import shutil
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

from pycri.api import api_pb2 as api
from pycri.client import AsyncClient, ClientError
from tests.stress.env import StressEnv, daemon_environment, missing_requirements
from tests.stress.probes import find_leaks, format_leaks

T = TypeVar("T")
R = TypeVar("R")

CALL_TIMEOUT = 60.0
RETRY_BUDGET = 120.0
RECOVERY_LIMIT = 90.0
SHORT_EXIT_CODE = 3
SLEEP = ["/bin/sleep", "1000"]
SHORT = ["/bin/sh", "-c", f"sleep 0.5; exit {SHORT_EXIT_CODE}"]
DISRUPTION_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass
class Obj:
    """A pod or container whose creating call was answered; times are ``time.monotonic()`` when answered."""

    kind: str  # "pod" or "container"
    id: str
    name: str
    handler: str
    acked: float
    pod: Obj | None = None  # a container's pod
    short: bool = False  # a container that exits by itself
    start_acked: float | None = None
    stop_begun: float | None = None
    stop_acked: float | None = None
    remove_begun: float | None = None
    remove_acked: float | None = None
    teardown: str = ""  # how it was stopped and removed

    def describe(self) -> str:
        where = f" in pod {self.pod.id[:12]}" if self.pod is not None else ""
        return f"{self.kind} {self.id[:12]} ({self.name}, {self.handler or 'runc'}){where}"

    def removal_begun(self) -> float | None:
        times = [t for t in (self.remove_begun, self.pod.remove_begun if self.pod else None) if t is not None]
        return min(times) if times else None

    def removal_acked(self) -> float | None:
        times = [t for t in (self.remove_acked, self.pod.remove_acked if self.pod else None) if t is not None]
        return min(times) if times else None

    def stop_begun_at(self) -> float | None:
        times = [t for t in (self.stop_begun, self.pod.stop_begun if self.pod else None, self.removal_begun()) if t is not None]
        return min(times) if times else None

    def stop_acked_at(self) -> float | None:
        times = [t for t in (self.stop_acked, self.pod.stop_acked if self.pod else None) if t is not None]
        return min(times) if times else None


@dataclass
class PodRun:
    pod: Obj
    config: api.PodSandboxConfig
    containers: list[Obj] = field(default_factory=list)


@dataclass
class Kill:
    number: int
    at: float
    during: str  # "serving" or "recovery"
    in_flight: list[str]
    recovery: float | None = None  # kill -> first successful Version; None when killed again first


@dataclass
class Finding:
    kind: str
    detail: str


@dataclass
class Report:
    kills_requested: int
    workers: int
    seed: int
    kills: list[Kill] = field(default_factory=list)
    seconds: float = 0.0
    operations: Counter[str] = field(default_factory=Counter)
    disrupted: Counter[str] = field(default_factory=Counter)
    lost: list[Finding] = field(default_factory=list)
    resurrected: list[Finding] = field(default_factory=list)
    wrong_state: list[Finding] = field(default_factory=list)
    errors: list[Finding] = field(default_factory=list)
    stuck: list[Finding] = field(default_factory=list)
    crashes: list[Finding] = field(default_factory=list)
    unacknowledged: list[str] = field(default_factory=list)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    daemon_exit_code: int | None = None
    harness_error: str = ""

    @property
    def recoveries(self) -> list[float]:
        return [k.recovery for k in self.kills if k.recovery is not None]

    @property
    def ok(self) -> bool:
        return (
            len(self.kills) >= self.kills_requested
            and not (self.lost or self.resurrected or self.wrong_state or self.errors or self.stuck or self.crashes)
            and not self.leaks
            and self.daemon_exit_code == 0
            and not self.harness_error
        )

    def format(self) -> str:
        rec = self.recoveries
        during = Counter(k.during for k in self.kills)
        landed = Counter(m for k in self.kills for m in k.in_flight)
        lines = [
            f"churn: {len(self.kills)} kills survived ({self.kills_requested} requested; {during['recovery']} of them during "
            f"recovery) in {self.seconds:.0f} s, {self.workers} workers, seed {self.seed}",
            "  acknowledged: " + ", ".join(f"{k} {v}" for k, v in sorted(self.operations.items())),
            "  calls cut by a kill: " + (", ".join(f"{k} {v}" for k, v in sorted(self.disrupted.items())) or "none"),
            "  calls in flight at the kills: " + (", ".join(f"{k} {v}" for k, v in landed.most_common()) or "none"),
            "  recovery time (kill -> first Version): "
            + (f"p50 {statistics.median(rec):.2f} s, max {max(rec):.2f} s ({len(rec)} recoveries)" if rec else "none measured"),
            f"  acknowledged objects lost: {len(self.lost)}",
        ]
        sections = [
            ("lost", self.lost),
            ("removed objects listed again", self.resurrected),
            ("wrong state after a restart", self.wrong_state),
            ("stop/remove that never succeeded", self.stuck),
            ("unexpected errors", self.errors),
            ("daemon crashes (exits nobody caused)", self.crashes),
        ]
        for title, findings in sections:
            if title != "lost":
                lines.append(f"  {title}: {len(findings)}")
            lines += [f"    {f.kind}: {f.detail}" for f in findings[:30]]
            if len(findings) > 30:
                lines.append(f"    ... and {len(findings) - 30} more")
        lines.append(
            f"  objects found that no answer acknowledged (the answer was cut by a kill; removed at the end): "
            f"{len(self.unacknowledged)}"
        )
        lines.append(f"  daemon exit code on SIGTERM at the end: {self.daemon_exit_code}")
        if self.leaks:
            lines.append("  leaks by kind:")
            lines.append(format_leaks(self.leaks))
        else:
            lines.append("  leaks: none")
        if self.harness_error:
            lines.append(f"  harness error: {self.harness_error}")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def calling(method: Callable[[AsyncClient, R], Awaitable[T]], request: R) -> Callable[[AsyncClient], Awaitable[T]]:
    """``method`` (an ``AsyncClient`` method) with ``request``, for whichever client is current when called."""
    return lambda client: method(client, request)


class Disrupted(Exception):
    """The call was cut by a kill (or sent while the daemon was down)."""


class GaveUp(Exception):
    pass


class Churn:
    def __init__(self, env: StressEnv, *, kills: int, workers: int, seconds: float, seed: int) -> None:
        self.env = env
        self.kills_wanted = kills
        self.workers = workers
        self.seconds = seconds
        self.rng = random.Random(seed)
        self.seed = seed
        self.report = Report(kills_requested=kills, workers=workers, seed=seed)
        self.objects: dict[str, Obj] = {}
        self.client = AsyncClient(env.d.socket, timeout=CALL_TIMEOUT)
        self.old_clients: list[AsyncClient] = []
        self.epoch = 0
        self.serving = True
        self.up = asyncio.Event()
        self.up.set()
        self.stopping = False
        self.in_flight: dict[int, str] = {}
        self.call_ids = itertools.count()

    # -- calls ---------------------------------------------------------------------------------------

    async def attempt(self, method: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """One call; ``Disrupted`` when a kill cut it, ``ClientError`` for an answer from a daemon that was up."""
        call_id = next(self.call_ids)
        self.in_flight[call_id] = method
        epoch, serving = self.epoch, self.serving
        try:
            return await call(self.client)
        except ClientError as exc:
            cut = epoch != self.epoch or not serving or not self.serving
            if exc.code in DISRUPTION_CODES and cut:
                self.report.disrupted[method] += 1
                raise Disrupted(str(exc)) from None
            if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                self.unexpected(method, exc, "while no kill was under way")
                raise Disrupted(str(exc)) from None
            raise
        finally:
            del self.in_flight[call_id]

    def unexpected(self, method: str, exc: ClientError, what: str) -> None:
        self.report.errors.append(Finding(method, f"{what}: {exc.code.name}: {exc.details}"))

    async def once(self, method: str, what: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T | None:
        """The answer, or None when a kill cut the call or the daemon failed it (recorded)."""
        try:
            return await self.attempt(method, call)
        except Disrupted:
            return None
        except ClientError as exc:
            self.unexpected(method, exc, what)
            return None

    async def must(self, method: str, what: str, call: Callable[[AsyncClient], Awaitable[T]]) -> T:
        """Retried through kills (and through errors, which are recorded) until it succeeds."""
        deadline = time.monotonic() + RETRY_BUDGET
        last = ""
        while True:
            try:
                return await self.attempt(method, call)
            except Disrupted as exc:
                last = str(exc)
                await self.wait_up()
            except ClientError as exc:
                last = f"{exc.code.name}: {exc.details}"
                self.unexpected(method, exc, what)
                await asyncio.sleep(0.5)
            if time.monotonic() > deadline:
                self.report.stuck.append(Finding(method, f"{what}: still failing after {RETRY_BUDGET:.0f} s: {last}"))
                raise GaveUp(what)

    async def wait_up(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.up.wait(), RECOVERY_LIMIT + 30)

    # -- the workload -----------------------------------------------------------------------------------

    async def worker(self, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        residents: list[PodRun] = []
        for i in itertools.count(1):
            if self.stopping:
                break
            await self.wait_up()
            run = await self.run_pod(rng, f"w{number}-{i}")
            if run is None:
                continue
            await self.fill(run, rng)
            if rng.random() < 0.3:
                residents.append(run)  # lives through a few kills
                if len(residents) > 2:
                    await self.teardown(residents.pop(0), rng)
            else:
                await asyncio.sleep(rng.uniform(0, 2))
                await self.teardown(run, rng)
        for run in residents:
            await self.teardown(run, rng)

    async def run_pod(self, rng: random.Random, name: str) -> PodRun | None:
        handler = "crun" if rng.random() < 0.25 else ""
        config = self.env.pod_config(name, "stress")
        request = api.RunPodSandboxRequest(config=config, runtime_handler=handler)
        response = await self.once("RunPodSandbox", f"pod {name}", lambda c: c.run_pod_sandbox(request))
        if response is None:
            return None
        pod = Obj("pod", response.pod_sandbox_id, name, handler, time.monotonic())
        self.track(pod)
        return PodRun(pod, config)

    async def fill(self, run: PodRun, rng: random.Random) -> None:
        for k in range(rng.randint(1, 2)):
            short = rng.random() < 0.2
            name = f"c{k}"
            config = self.env.container_config(name, SHORT if short else SLEEP)
            create = api.CreateContainerRequest(pod_sandbox_id=run.pod.id, config=config, sandbox_config=run.config)
            what = f"container {name} in pod {run.pod.id[:12]}"
            created = await self.once("CreateContainer", what, calling(AsyncClient.create_container, create))
            if created is None:
                continue
            container = Obj("container", created.container_id, name, run.pod.handler, time.monotonic(), pod=run.pod, short=short)
            self.track(container)
            run.containers.append(container)
            start = api.StartContainerRequest(container_id=container.id)
            if await self.once("StartContainer", container.describe(), calling(AsyncClient.start_container, start)) is not None:
                container.start_acked = time.monotonic()
                self.report.operations["StartContainer"] += 1
                if not short and rng.random() < 0.3:
                    await self.exec(container)

    async def exec(self, container: Obj) -> None:
        request = api.ExecSyncRequest(container_id=container.id, cmd=["/bin/echo", "hi"], timeout=20)
        result = await self.once("ExecSync", container.describe(), lambda c: c.exec_sync(request))
        if result is None:
            return
        self.report.operations["ExecSync"] += 1
        if result.exit_code != 0 or result.stdout != b"hi\n":
            detail = f"{container.describe()}: exit {result.exit_code}, stdout {result.stdout!r}, stderr {result.stderr!r}"
            self.report.errors.append(Finding("ExecSync", detail))

    async def teardown(self, run: PodRun, rng: random.Random) -> None:
        try:
            for container in run.containers:
                if container.short and container.start_acked is not None:
                    await self.check_exit(container)
            mode = rng.random()
            if mode < 0.4:
                run.pod.teardown = "containers stopped and removed one by one, then the pod stopped and removed"
                for container in run.containers:
                    container.teardown = "stopped, then removed"
                    await self.stop_container(container, rng.choice([0, 1, 2]))
                    await self.remove_container(container)
            elif mode < 0.9:
                run.pod.teardown = "StopPodSandbox, then RemovePodSandbox"
            else:
                run.pod.teardown = "RemovePodSandbox without StopPodSandbox"
            for container in run.containers:
                container.teardown = container.teardown or f"with its pod ({run.pod.teardown})"
            if mode < 0.9:
                await self.stop_pod(run.pod)
            await self.remove_pod(run.pod)
        except GaveUp:
            pass  # recorded; the final sweep removes it

    async def check_exit(self, container: Obj) -> None:
        """A container that exits by itself is reported exited with its code, also when it exited while the daemon was down."""
        request = api.ContainerStatusRequest(container_id=container.id)
        deadline = time.monotonic() + 30
        status: api.ContainerStatus | None = None
        while time.monotonic() < deadline:
            response = await self.once("ContainerStatus", container.describe(), lambda c: c.container_status(request))
            if response is None:
                await self.wait_up()
                continue
            status = response.status
            if status.state == api.CONTAINER_EXITED:
                if status.exit_code != SHORT_EXIT_CODE:
                    detail = (
                        f"{container.describe()}: exited with {status.exit_code} ({status.reason}: {status.message}), "
                        f"not {SHORT_EXIT_CODE}"
                    )
                    self.report.wrong_state.append(Finding("exit code", detail))
                return
            await asyncio.sleep(0.2)
        state = api.ContainerState.Name(status.state) if status is not None else "unknown"
        self.report.wrong_state.append(Finding("exit", f"{container.describe()}: still {state} 30 s after it should have exited"))

    async def stop_container(self, container: Obj, timeout: int) -> None:
        container.stop_begun = container.stop_begun or time.monotonic()
        request = api.StopContainerRequest(container_id=container.id, timeout=timeout)
        await self.must("StopContainer", container.describe(), lambda c: c.stop_container(request))
        container.stop_acked = time.monotonic()
        self.report.operations["StopContainer"] += 1

    async def remove_container(self, container: Obj) -> None:
        container.remove_begun = container.remove_begun or time.monotonic()
        request = api.RemoveContainerRequest(container_id=container.id)
        await self.must("RemoveContainer", container.describe(), lambda c: c.remove_container(request))
        container.remove_acked = time.monotonic()
        self.report.operations["RemoveContainer"] += 1

    async def stop_pod(self, pod: Obj) -> None:
        pod.stop_begun = pod.stop_begun or time.monotonic()
        request = api.StopPodSandboxRequest(pod_sandbox_id=pod.id)
        await self.must("StopPodSandbox", pod.describe(), lambda c: c.stop_pod_sandbox(request))
        pod.stop_acked = time.monotonic()
        self.report.operations["StopPodSandbox"] += 1

    async def remove_pod(self, pod: Obj) -> None:
        pod.remove_begun = pod.remove_begun or time.monotonic()
        request = api.RemovePodSandboxRequest(pod_sandbox_id=pod.id)
        await self.must("RemovePodSandbox", pod.describe(), lambda c: c.remove_pod_sandbox(request))
        pod.remove_acked = time.monotonic()
        self.report.operations["RemovePodSandbox"] += 1

    def track(self, obj: Obj) -> None:
        self.objects[obj.id] = obj
        self.env.known_ids.add(obj.id)
        self.report.operations["RunPodSandbox" if obj.kind == "pod" else "CreateContainer"] += 1

    # -- kills and checks ----------------------------------------------------------------------------------

    async def killer(self, spread_until: float, deadline: float) -> None:
        """The kills, spread at random until ``spread_until``; the ones still due come before ``deadline``."""
        rng = self.rng
        while len(self.report.kills) < self.kills_wanted and time.monotonic() < deadline:
            left = self.kills_wanted - len(self.report.kills)
            room = spread_until - time.monotonic()
            # Random gaps, yet room kept for the kills still due (a kill and its recovery take about 3 s).
            gap = min(rng.uniform(0.3, 1.7) * max(1.0, room / left - 2.0), max(0.5, room - 3.0 * (left - 1)))
            if not await self.sleep_watching(gap, deadline):
                continue  # the daemon died by itself; it was restarted
            self.record_kill("serving")
            await asyncio.to_thread(self.env.kill)
            again = rng.random() < 0.15 and len(self.report.kills) < self.kills_wanted
            await self.restart(kill_during_recovery=rng.uniform(0.05, 0.8) if again else None)
            await self.check_lists()

    async def sleep_watching(self, seconds: float, deadline: float) -> bool:
        """Sleep, watching the daemon; False if it died by itself (a crash: recorded, restarted)."""
        end = min(time.monotonic() + seconds, deadline)
        while time.monotonic() < end:
            await asyncio.sleep(0.2)
            if not self.env.alive():
                code = self.env.d.proc.returncode if self.env.d.proc is not None else None
                tail = "\n".join(self.env.log().splitlines()[-15:])
                self.report.crashes.append(Finding("daemon exited", f"exit code {code}; log tail:\n{tail}"))
                self.down()
                await self.restart(kill_during_recovery=None, after_kill=False)
                return False
        return True

    def down(self) -> None:
        self.epoch += 1
        self.serving = False
        self.up.clear()

    def record_kill(self, during: str) -> None:
        self.down()
        kill = Kill(len(self.report.kills) + 1, time.monotonic(), during, sorted(self.in_flight.values()))
        self.report.kills.append(kill)
        self.mark_log(f"SIGKILL #{kill.number} ({during}); in flight: {', '.join(kill.in_flight) or 'nothing'}")

    async def restart(self, kill_during_recovery: float | None, after_kill: bool = True) -> None:
        """Start the daemon again (killing it once more while it recovers, if asked); recovery time from the last kill."""
        if kill_during_recovery is not None:
            starting = asyncio.create_task(asyncio.to_thread(self.env.d.start, RECOVERY_LIMIT))
            await asyncio.sleep(kill_during_recovery)
            proc = self.env.d.proc
            killed = False
            if not starting.done() and proc is not None and proc.poll() is None:
                self.record_kill("recovery")
                proc.kill()  # not DaemonProcess.kill(): start() is still polling its process in a thread
                killed = True
            try:
                await starting
            except RuntimeError as exc:
                if not killed:
                    self.report.crashes.append(Finding("start failed", str(exc)[-3000:]))
        if not self.env.alive():
            try:
                await asyncio.to_thread(self.env.restart, RECOVERY_LIMIT)
            except RuntimeError as exc:
                self.report.crashes.append(Finding("restart failed", str(exc)[-3000:]))
                raise
        await self.probe_version()
        if after_kill and self.report.kills:
            kill = self.report.kills[-1]
            kill.recovery = time.monotonic() - kill.at
        self.old_clients.append(self.client)
        self.client = AsyncClient(self.env.d.socket, timeout=CALL_TIMEOUT)
        self.serving = True
        self.up.set()

    async def probe_version(self) -> None:
        deadline = time.monotonic() + RECOVERY_LIMIT
        while True:
            async with AsyncClient(self.env.d.socket, timeout=2) as probe:
                try:
                    await probe.version()
                    return
                except ClientError as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no Version answer {RECOVERY_LIMIT:.0f} s after the restart: {exc}") from exc
            await asyncio.sleep(0.02)

    def mark_log(self, text: str) -> None:
        with open(self.env.d.log_path, "a") as log:
            log.write(f"===== stress harness: {text}\n")

    async def check_lists(self) -> None:
        """Every answered object whose removal has not begun is listed, in the state its answered calls imply."""
        kill_no = len(self.report.kills)
        before = time.monotonic()
        try:
            pods = await self.must("ListPodSandbox", "after a restart", lambda c: c.list_pod_sandbox())
            containers = await self.must("ListContainers", "after a restart", lambda c: c.list_containers())
        except GaveUp:
            return
        after = time.monotonic()
        listed: dict[str, int] = {p.id: p.state for p in pods.items}
        listed.update({c.id: c.state for c in containers.containers})
        for obj in list(self.objects.values()):
            if obj.acked >= before:
                continue
            removed, removing = obj.removal_acked(), obj.removal_begun()
            state = listed.get(obj.id)
            if removed is not None and removed < before:
                if state is not None:
                    self.report.resurrected.append(Finding(obj.kind, f"{obj.describe()}: listed after kill #{kill_no}"))
                    del self.objects[obj.id]  # reported once
                continue
            if removing is not None and removing < after:
                continue  # may or may not be listed
            if state is None:
                self.report.lost.append(Finding(obj.kind, f"{obj.describe()}: not listed after kill #{kill_no}"))
                del self.objects[obj.id]
                continue
            expected = self.expected_state(obj, before, after)
            if expected is not None and state != expected:
                detail = f"{obj.describe()}: {state_name(obj, state)} after kill #{kill_no}, not {state_name(obj, expected)}"
                self.report.wrong_state.append(Finding(obj.kind, detail))

    @staticmethod
    def expected_state(obj: Obj, before: float, after: float) -> int | None:
        stop_acked, stop_begun = obj.stop_acked_at(), obj.stop_begun_at()
        if obj.kind == "pod":
            if stop_acked is not None and stop_acked < before:
                return api.SANDBOX_NOTREADY
            return api.SANDBOX_READY if stop_begun is None or stop_begun > after else None
        if stop_acked is not None and stop_acked < before:
            return api.CONTAINER_EXITED
        started = obj.start_acked is not None and obj.start_acked < before
        if started and not obj.short and (stop_begun is None or stop_begun > after):
            return api.CONTAINER_RUNNING
        return None

    # -- the run ----------------------------------------------------------------------------------------

    async def run(self) -> Report:
        started = time.monotonic()
        workers = [asyncio.create_task(self.worker(n)) for n in range(self.workers)]
        try:
            try:  # the last 10 % of the time for the workers' teardown and the final sweep
                await self.killer(started + self.seconds * 0.8, started + self.seconds * 0.9)
            finally:
                self.stopping = True
                done, pending = await asyncio.wait(workers, timeout=RETRY_BUDGET * 2)
                for task in pending:
                    task.cancel()
                for task in done:
                    if task.exception() is not None:
                        exc = task.exception()
                        self.report.harness_error = f"worker failed: {type(exc).__name__}: {exc}"
            await self.sweep()
        finally:
            self.report.seconds = time.monotonic() - started
            for client in [*self.old_clients, self.client]:
                with contextlib.suppress(Exception):
                    await client.close()
        return self.report

    async def sweep(self) -> None:
        """Remove whatever is still listed (pods whose answer a kill cut, or whose removal gave up)."""
        pods = await self.must("ListPodSandbox", "final sweep", lambda c: c.list_pod_sandbox())
        before = await self.must("ListContainers", "final sweep", lambda c: c.list_containers())
        found = [("pod", p.id, p.metadata.name) for p in pods.items]
        found += [("container", c.id, c.metadata.name) for c in before.containers]
        for kind, listed_id, name in found:
            self.env.known_ids.add(listed_id)
            if listed_id not in self.objects:
                self.report.unacknowledged.append(f"{kind} {listed_id[:12]} ({name})")
        for pod in pods.items:
            remove = calling(AsyncClient.remove_pod_sandbox, api.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
            with contextlib.suppress(GaveUp):
                await self.must("RemovePodSandbox", f"final sweep of pod {pod.id[:12]}", remove)
        containers = await self.must("ListContainers", "final sweep", lambda c: c.list_containers())
        for container in containers.containers:
            self.report.errors.append(Finding("ListContainers", f"container {container.id[:12]} outlived its pod"))


def annotated(leaks: dict[str, list[str]], objects: dict[str, Obj]) -> dict[str, list[str]]:
    """Each leftover that names a recorded pod or container, with what it was and how it went."""
    by_prefix = {obj.id[:16]: obj for obj in objects.values()}
    found: dict[str, list[str]] = {}
    for kind, items in leaks.items():
        found[kind] = []
        for item in items:
            obj = next((o for prefix, o in by_prefix.items() if prefix in item), None)
            if obj is not None:
                item += f"  <- {obj.describe()}; {obj.teardown or 'not torn down by its worker'}"
            found[kind].append(item)
    return found


def state_name(obj: Obj, state: int) -> str:
    if obj.kind == "pod":
        return api.PodSandboxState.Name(state)  # type: ignore[arg-type]
    return api.ContainerState.Name(state)  # type: ignore[arg-type]


def run(*, kills: int = 30, workers: int = 3, seconds: float = 600, seed: int | None = None, keep_log: str = "") -> Report:
    """The whole run: set-up, churn under kills, final sweep, graceful stop, leak probes, clean-up."""
    seed = seed if seed is not None else random.randrange(1 << 30)
    report = Report(kills_requested=kills, workers=workers, seed=seed)
    with daemon_environment(proxy=False), StressEnv("churn") as env:
        churns: list[Churn] = []

        async def churn() -> Report:
            churns.append(Churn(env, kills=kills, workers=workers, seconds=seconds, seed=seed))
            return await churns[0].run()

        try:
            report = asyncio.run(churn())
        except Exception as exc:  # the report says so; the graceful stop, probes and clean-up still run
            report = churns[0].report if churns else report
            report.harness_error = f"{type(exc).__name__}: {exc}"
        if env.alive():
            report.daemon_exit_code = env.d.stop()
        report.leaks = annotated(find_leaks(env), churns[0].objects if churns else {})
        if keep_log:
            shutil.copyfile(env.d.log_path, keep_log)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.churn", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="SIGKILLs of the daemon, at least (default 30)")
    parser.add_argument("--workers", type=int, default=3, help="concurrent workers churning pods (default 3)")
    parser.add_argument("--seconds", type=float, default=600, help="how long the run lasts, at most (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    parser.add_argument("--keep-log", default="", metavar="PATH", help="copy the daemon's log there at the end")
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    report = run(kills=args.kills, workers=args.workers, seconds=args.seconds, seed=args.seed, keep_log=args.keep_log)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
