"""Everything a ``StressEnv`` daemon's pods and containers may leave on the host, by kind.

Every probe is scoped to the one daemon (its directories, its bridge, its host-local data dir,
its cgroup parent, the IDs it handed out or logged), because other daemons and tests run on the
same machine at the same time. The host inspection itself is the one the sandbox failure tests
use (``tests/integration/test_sandbox_failures.py``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from tests.integration.test_sandbox_failures import links_on, mounts_under, processes_mentioning, runtime_containers, sh
from tests.stress.env import StressEnv, ids_in

# What a stopped daemon may keep in its directories: not a pod's or a container's.
IPAM_BOOKKEEPING = ("lock", "last_reserved_ip.")


def find_leaks(env: StressEnv, *, extra_ids: Iterable[str] = (), daemon_stopped: bool = True) -> dict[str, list[str]]:
    """Leftovers by kind ("mount", "netns", ...); an empty dict when nothing is left.

    With ``daemon_stopped`` the daemon's database is read too (it must hold no pod or container).
    """
    daemon = env.d
    ids = env.known_ids | set(extra_ids) | ids_in(daemon.log())
    found: dict[str, list[str]] = {}

    def add(kind: str, items: Iterable[str]) -> None:
        items = sorted(set(items))
        if items:
            found.setdefault(kind, []).extend(items)

    add("mount", mounts_under(daemon.workdir))
    add("runtime container", runtime_containers(daemon.cfg))
    add("netns", (f"/run/netns/pycri-{i[:16]}" for i in ids if os.path.lexists(f"/run/netns/pycri-{i[:16]}")))
    add("veth", (f"{link} on {env.bridge}" for link in links_on(env.bridge)))
    add("IP reservation", ipam_reservations(env.ipam_dir))
    add("cgroup", cgroups(env, ids))
    add("process", processes(env))
    add("state dir", state_entries(env))
    add("iptables rule", iptables_rules(ids))
    if daemon_stopped:
        add("database record", database_records(daemon.cfg.database))
    return found


def ipam_reservations(data_dir: Path) -> list[str]:
    """host-local's reservations (one file per IP, holding the pod's ID) in ``<data_dir>/<network>/``."""
    if not data_dir.is_dir():
        return []
    found = []
    for network in data_dir.iterdir():
        for entry in network.iterdir() if network.is_dir() else []:
            if not entry.name.startswith(IPAM_BOOKKEEPING):
                holder = entry.read_text(errors="replace").split()[0] if entry.is_file() else ""
                found.append(f"{entry} (held by {holder[:16] or '?'})")
    return found


def cgroups(env: StressEnv, ids: Iterable[str]) -> list[str]:
    """Cgroups below our cgroup parent (in any hierarchy), and under pycri's default parent by ID."""
    found = []
    for top in env.cgroup_dirs():
        for dirpath, dirnames, _ in os.walk(top):
            found += [os.path.join(dirpath, d) for d in dirnames]
    roots = [entry.path for entry in os.scandir("/sys/fs/cgroup") if entry.is_dir()] + ["/sys/fs/cgroup"]
    for cid in ids:
        found += [f"{root}/pycri/pycri-{cid}" for root in roots if os.path.isdir(f"{root}/pycri/pycri-{cid}")]
    return found


def processes(env: StressEnv) -> list[str]:
    """Live processes naming the daemon's directory (conmon, runc, crun) or in our cgroups (containers, infra)."""
    daemon_pid = env.d.proc.pid if env.d.proc is not None else None
    found = {}
    for text in (str(env.d.workdir), env.cgroup_parent):
        for pid, description in processes_mentioning(text):
            if pid not in (os.getpid(), daemon_pid):
                found[pid] = description
    return list(found.values())


def state_entries(env: StressEnv) -> list[str]:
    """Pod and container directories and per-container files in the daemon's directories."""
    cfg = env.d.cfg
    places = [
        Path(cfg.state_dir) / "pods",
        Path(cfg.state_dir) / "exits",
        Path(cfg.state_dir) / "sockets",
        Path(cfg.root_dir) / "containers",
        *(Path(handler.root) for handler in cfg.runtimes.values()),
    ]
    found = []
    for place in places:
        if place.is_dir():
            found += [str(entry) for entry in place.iterdir()]
    return found


def iptables_rules(ids: Iterable[str]) -> list[str]:
    wanted = list(ids)
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        listing = sh(tool).stdout if shutil.which(tool) else ""
        found += [f"{tool}: {line}" for line in listing.splitlines() if any(i in line for i in wanted)]
    return found


def database_records(database: Path) -> list[str]:
    """Pods and containers the (stopped) daemon's state database still holds."""
    if not database.exists():
        return []
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        pods = db.execute("SELECT id, name, state FROM sandboxes").fetchall()
        containers = db.execute("SELECT id, name, state FROM containers").fetchall()
    finally:
        db.close()
    return [f"pod {i} ({name}, {state})" for i, name, state in pods] + [
        f"container {i} ({name}, {state})" for i, name, state in containers
    ]


def format_leaks(leaks: dict[str, list[str]], limit: int = 20) -> str:
    lines = []
    for kind, items in sorted(leaks.items()):
        lines.append(f"  {kind}: {len(items)}")
        lines += [f"    {item}" for item in items[:limit]]
        if len(items) > limit:
            lines.append(f"    ... and {len(items) - limit} more")
    return "\n".join(lines)


__all__ = ["database_records", "find_leaks", "format_leaks", "ipam_reservations", "state_entries"]
