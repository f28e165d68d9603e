"""What /proc says about a pod's network and a container's processes. Synchronous; call in a thread.

A pod's interfaces are read from ``/proc/<infra pid>/net/dev``: the file shows the
network namespace of the process it belongs to, so nothing has to enter the
namespace (as containerd and CRI-O do with netlink inside it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_INTERFACE = "eth0"  # kubelet's name for a pod's interface (containerd's defaultIfName)


@dataclass(frozen=True)
class Interface:
    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


def parse_net_dev(text: str) -> list[Interface]:
    """``/proc/net/dev``: two header lines, then ``name: rx bytes packets errs drop fifo frame compressed
    multicast tx bytes packets errs drop fifo colls carrier compressed``."""
    found = []
    for line in text.splitlines()[2:]:
        name, sep, rest = line.partition(":")
        values = rest.split()
        if not sep or len(values) < 16:
            continue
        try:
            n = [int(v) for v in values[:16]]
        except ValueError:
            continue
        found.append(Interface(name.strip(), n[0], n[1], n[2], n[3], n[8], n[9], n[10], n[11]))
    return found


def pod_interfaces(pid: int) -> list[Interface] | None:
    """The interfaces of the network namespace ``pid`` is in, but loopback; None when it is gone."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            text = f.read()
    except OSError:
        return None
    return [i for i in parse_net_dev(text) if i.name != "lo"]


@dataclass(frozen=True)
class Processes:
    count: int
    file_descriptors: int
    sockets: int


def open_files(pids: list[int]) -> Processes:
    """How many processes ``pids`` are, and their open file descriptors and sockets (as cAdvisor counts)."""
    fds = sockets = 0
    for pid in pids:
        directory = f"/proc/{pid}/fd"
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        fds += len(names)
        for name in names:
            try:
                if os.readlink(f"{directory}/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:
                continue
    return Processes(len(pids), fds, sockets)


def soft_nofile(pid: int) -> int | None:
    """The soft limit on open files of ``pid`` (cAdvisor's ``max_open_files`` ulimit); -1 for unlimited."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    soft = line[len("Max open files") :].split()[0]
                    return -1 if soft == "unlimited" else int(soft)
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_name(major: int, minor: int) -> str:
    """``/dev/<name>`` of a block device (from /sys/dev/block), or ``major:minor`` when unknown."""
    try:
        with open(f"/sys/dev/block/{major}:{minor}/uevent") as f:
            for line in f:
                if line.startswith("DEVNAME="):
                    return "/dev/" + line.strip().partition("=")[2]
    except OSError:
        pass
    return f"{major}:{minor}"
