"""Shared pieces of the benchmarks: timing, percentiles, side-by-side reports."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

CONTAINERD_REF = "/run/containerd-ref/containerd.sock"  # ../shared/tools/containerd-reference.sh


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
    header = f"{'operation':<28}{'pycri p50':>11}{'p99':>9}"
    if theirs:
        header += f"{'containerd p50':>16}{'p99':>9}{'ratio p50':>11}{'p99':>7}"
    lines = [header]
    by_name = {r.name: r for r in theirs or []}
    for r in ours:
        line = f"{r.name:<28}{r.p50:>9.3f}ms{r.p99:>7.3f}ms"
        other = by_name.get(r.name)
        if other:
            line += f"{other.p50:>14.3f}ms{other.p99:>7.3f}ms{r.p50 / other.p50:>11.2f}{r.p99 / other.p99:>7.2f}"
        lines.append(line)
    if theirs is None:
        lines.append("(containerd not running: start ../shared/tools/containerd-reference.sh for ratios)")
    else:
        lines.append("ratio = pycri / containerd; below 1.0 means pycri is faster")
    return "\n".join(lines)
