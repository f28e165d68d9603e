"""Shared pieces of the benchmarks: timing, percentiles, side-by-side reports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from pycri import config as config_mod
from pycri.client import Client, UnavailableError, UnimplementedError
from pycri.testing import DaemonProcess

CONTAINERD_REF = "/run/containerd-ref/containerd.sock"  # ../shared/tools/containerd-reference.sh
# Version does no work in either runtime: its round trip is the floor under every status and
# list call, the cost of the gRPC server itself (grpcio's C core and Python for pycri, grpc-go
# for containerd), measured in the same run so status and list can be read against it.
FLOOR = "Version (gRPC floor)"


@dataclass
class Result:
    name: str
    samples_ms: list[float]

    @property
    def p50(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def p99(self) -> float:
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def measure(name: str, fn: Callable[[], object], count: int, warmup: int = 50) -> Result:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return Result(name, samples)


def containerd_endpoint(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    return f"unix://{CONTAINERD_REF}" if os.path.exists(CONTAINERD_REF) else None


def report(ours: list[Result], theirs: list[Result] | None) -> str:
    header = f"{'operation':<28}{'pycri p50':>11}{'p99':>11}"
    if theirs:
        header += f"{'containerd p50':>16}{'p99':>11}{'ratio p50':>11}{'p99':>7}"
    lines = [header]
    by_name = {r.name: r for r in theirs or []}
    for r in ours:
        line = f"{r.name:<28}{r.p50:>9.3f}ms{r.p99:>9.3f}ms"
        other = by_name.get(r.name)
        if other:
            line += f"{other.p50:>14.3f}ms{other.p99:>9.3f}ms{r.p50 / other.p50:>11.2f}{r.p99 / other.p99:>7.2f}"
        lines.append(line)
    if theirs is None:
        lines.append("(containerd not running: start ../shared/tools/containerd-reference.sh for ratios)")
    else:
        lines.append("ratio = pycri / containerd; below 1.0 means pycri is faster")
    return "\n".join(lines)


def timed(fn: Callable[[], object]) -> float:
    """Milliseconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def summary(ours: list[Result], theirs: list[Result] | None) -> str:
    """One line: the p50 ratio pycri/containerd of every operation both measured, and their geometric mean."""
    if not theirs:
        return "summary: pycri only (no containerd to compare with)"
    by_name = {r.name: r for r in theirs}
    ratios = [(r.name, r.p50 / by_name[r.name].p50) for r in ours if r.name in by_name and by_name[r.name].p50 > 0]
    if not ratios:
        return "summary: no operation measured on both runtimes"
    mean = statistics.geometric_mean(ratio for _, ratio in ratios)
    return "summary p50 pycri/containerd: " + ", ".join(f"{n} {x:.2f}" for n, x in ratios) + f"; geometric mean {mean:.2f}"


def vm_rss_kib(pid: int) -> int | None:
    """VmRSS of a process in KiB, or None when it is gone (or a kernel thread)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def processes(comm: str, cmdline_contains: str, *, prefix: bool = False) -> list[int]:
    """Pids named ``comm`` (or, with ``prefix``, whose name starts with it; names are cut at 15
    characters) whose command line contains ``cmdline_contains``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{entry}/cmdline", "rb") as fb:
                cmdline = fb.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (name.startswith(comm) if prefix else name == comm) and cmdline_contains in cmdline:
            found.append(int(entry))
    return sorted(found)


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuTicks:
    """A process's CPU time in clock ticks (/proc/<pid>/stat): its own, and that of its reaped children."""

    own: int  # utime + stime
    children: int  # cutime + cstime: children it has waited for (and, through them, theirs)
    start: int  # starttime, to tell a reused pid from the process first seen


def cpu_ticks(pid: int) -> CpuTicks | None:
    """CPU times of a process, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The name (field 2) is in parentheses and may hold spaces: count the fields after its ")".
    fields = data[data.rindex(")") + 2 :].split()  # fields[0] is field 3, state
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])  # fields 14 to 17
    return CpuTicks(own=utime + stime, children=cutime + cstime, start=int(fields[19]))  # field 22


def total_rss_kib(pids: list[int]) -> int:
    return sum(vm_rss_kib(pid) or 0 for pid in pids)


def pss_kib(pid: int) -> int | None:
    """Proportional set size in KiB (shared pages divided among the processes sharing them)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def total_pss_kib(pids: list[int]) -> int:
    return sum(pss_kib(pid) or 0 for pid in pids)


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def unless_unimplemented(runtime: str, stage: str, fn: Callable[[], object]) -> bool:
    """Run one stage of a suite; when the runtime answers UNIMPLEMENTED, say so and go on (False)."""
    try:
        fn()
    except UnimplementedError as exc:
        print(f"{runtime}: {exc.method} is not implemented there; {stage} skipped")
        return False
    return True


class BenchDaemon(DaemonProcess):
    """A :class:`DaemonProcess` in a session of its own.

    Ctrl-C in a terminal signals the whole foreground process group; a daemon in that group
    would shut down at once, and the benchmark could no longer remove its pods and images
    through it. In its own session only the benchmark gets the signal, cleans up through the
    daemon, then stops it. A daemon that fails to start leaves no directory behind.
    """

    def start(self, timeout: float = 20.0) -> None:
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.config_path.write_text(config_mod.render(self.cfg))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "pycri", "--config", str(self.config_path), "daemon", "--log-level", self.log_level],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            deadline = time.monotonic() + timeout
            while not _accepts(self.cfg.socket):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pycri daemon exited with {self.proc.returncode}:\n{self.log()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pycri daemon did not listen on {self.cfg.socket} within {timeout}s:\n{self.log()}")
                time.sleep(0.02)
        except BaseException:
            self.kill()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


def exit_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, so the benchmarks' cleanup (try/finally) runs as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def answers(client: Client, endpoint: str) -> bool:
    """Whether a runtime answers Version there; says so when it does not."""
    try:
        client.version(timeout=5)
    except UnavailableError as exc:
        print(f"{endpoint} does not answer ({exc.details}); pycri only")
        return False
    return True
