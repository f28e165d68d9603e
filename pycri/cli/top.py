"""``pycri top``: pods and their containers by CPU, memory and network, refreshed in place.

    pycri top [--interval SECONDS] [--namespace NS] [--once] [--json]

From CRI ListPodSandboxStats, so it works against any runtime that serves it. CPU is the
runtime's ``usage_nano_cores`` (a rate over its last samples), memory the working set,
network the pod's interfaces (all but loopback): bytes received and sent so far, and
per second since the previous refresh. ``--once`` takes two samples ``--interval``
apart and prints one table (``--json``: the same as a document) instead of refreshing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from rich.console import Console
from rich.live import Live
from rich.table import Table

from pycri.api import api_pb2 as api
from pycri.client import Client

Command = Callable[[argparse.Namespace, Console], int]
AddCommand = Callable[[str, str, Command], argparse.ArgumentParser]
SocketOf = Callable[[argparse.Namespace], str]


@dataclass
class Row:
    pod: str  # namespace/name
    container: str  # "" for the pod's own row
    id: str
    cpu_cores: float | None
    memory_bytes: int | None
    rx_bytes: int | None = None
    tx_bytes: int | None = None
    rx_per_second: float | None = None
    tx_per_second: float | None = None
    containers: list[Row] = field(default_factory=list)


def _network(stats: api.PodSandboxStats) -> tuple[int, int] | None:
    if not stats.linux.HasField("network"):
        return None
    interfaces = list(stats.linux.network.interfaces) or [stats.linux.network.default_interface]
    return sum(i.rx_bytes.value for i in interfaces), sum(i.tx_bytes.value for i in interfaces)


def _cpu(cpu: api.CpuUsage) -> float | None:
    return cpu.usage_nano_cores.value / 1e9 if cpu.HasField("usage_nano_cores") else None


def _memory(memory: api.MemoryUsage) -> int | None:
    return memory.working_set_bytes.value if memory.HasField("working_set_bytes") else None


def rows(stats: list[api.PodSandboxStats], previous: dict[str, tuple[int, int, int]]) -> list[Row]:
    """One row per pod with its containers; ``previous`` (pod id -> rx, tx, timestamp) is updated for rates."""
    out = []
    for pod in sorted(stats, key=lambda s: (s.attributes.metadata.namespace, s.attributes.metadata.name)):
        md = pod.attributes.metadata
        row = Row(f"{md.namespace}/{md.name}", "", pod.attributes.id, _cpu(pod.linux.cpu), _memory(pod.linux.memory))
        network = _network(pod)
        if network is not None:
            row.rx_bytes, row.tx_bytes = network
            now = pod.linux.network.timestamp
            before = previous.get(pod.attributes.id)
            if before is not None and now > before[2]:
                seconds = (now - before[2]) / 1e9
                row.rx_per_second = max(network[0] - before[0], 0) / seconds
                row.tx_per_second = max(network[1] - before[1], 0) / seconds
            previous[pod.attributes.id] = (*network, now)
        for c in sorted(pod.linux.containers, key=lambda c: c.attributes.metadata.name):
            row.containers.append(Row(row.pod, c.attributes.metadata.name, c.attributes.id, _cpu(c.cpu), _memory(c.memory)))
        out.append(row)
    return out


def human(size: float | None, suffix: str = "") -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}{suffix}" if unit == "B" else f"{size:.1f}{unit}{suffix}"
        size /= 1024
    return f"{size}{suffix}"  # pragma: no cover


def cores(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}m"


def table(found: list[Row]) -> Table:
    t = Table(title="pods (CPU in millicores, memory: working set)", title_justify="left", expand=False)
    for name, justify in (
        ("POD", "left"),
        ("CONTAINER", "left"),
        ("CPU", "right"),
        ("MEMORY", "right"),
        ("NET RX", "right"),
        ("NET TX", "right"),
        ("RX/s", "right"),
        ("TX/s", "right"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for pod in found:
        t.add_row(
            f"[bold]{pod.pod}[/bold]",
            "",
            cores(pod.cpu_cores),
            human(pod.memory_bytes),
            human(pod.rx_bytes),
            human(pod.tx_bytes),
            human(pod.rx_per_second),
            human(pod.tx_per_second),
        )
        for c in pod.containers:
            t.add_row("", c.container, cores(c.cpu_cores), human(c.memory_bytes), "", "", "", "")
    if not found:
        t.add_row("(no ready pods)", "", "", "", "", "", "", "")
    return t


def _sample(client: Client, namespace: str) -> list[api.PodSandboxStats]:
    stats = list(client.list_pod_sandbox_stats(api.ListPodSandboxStatsRequest()).stats)
    return [s for s in stats if not namespace or s.attributes.metadata.namespace == namespace]


def cmd_top(socket_of: SocketOf) -> Command:
    def run(args: argparse.Namespace, console: Console) -> int:
        previous: dict[str, tuple[int, int, int]] = {}
        with Client(socket_of(args), timeout=args.timeout) as client:
            if args.once or args.json:
                rows(_sample(client, args.namespace), previous)  # primes the rates
                time.sleep(args.interval)
                found = rows(_sample(client, args.namespace), previous)
                if args.json:
                    sys.stdout.write(json.dumps([asdict(r) for r in found], indent=2, sort_keys=True) + "\n")
                else:
                    console.print(table(found))
                return 0
            with Live(table(rows(_sample(client, args.namespace), previous)), console=console, auto_refresh=False) as live:
                try:
                    while True:
                        time.sleep(args.interval)
                        live.update(table(rows(_sample(client, args.namespace), previous)), refresh=True)
                except KeyboardInterrupt:  # how one leaves top
                    return 0

    return run


def register(add: AddCommand, socket_of: SocketOf) -> None:
    p = add("top", "pods and containers by CPU, memory and network, refreshed in place", cmd_top(socket_of))
    p.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes (default 2)")
    p.add_argument("--namespace", "-n", default="", help="only the pods of this namespace")
    p.add_argument("--once", action="store_true", help="print one table (two samples --interval apart) and exit")
