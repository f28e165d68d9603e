"""A pod's files: /etc/hosts, /etc/resolv.conf and /etc/hostname contents (pure).

Containers of the pod bind-mount these from the pod's state directory.
DNS follows kubelet's ``dns_config``; a pod without one (or on the host
network) gets the host's resolv.conf, as with containerd and CRI-O.
"""

from __future__ import annotations

from collections.abc import Sequence

MAX_SEARCHES = 32  # as glibc 2.26+ allows; kubelet already validates


def hosts_file(hostname: str, ips: Sequence[str], host_hosts: str | None = None) -> str:
    """Pod /etc/hosts: localhost entries, then the pod's IPs with its hostname.

    For host-network pods ``host_hosts`` (the node's file) is used unchanged.
    """
    if host_hosts is not None:
        return host_hosts
    lines = [
        "# Kubernetes-managed hosts file (written by pycri).",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    lines += [f"{ip}\t{hostname}" for ip in ips]
    return "\n".join(lines) + "\n"


def resolv_conf(servers: Sequence[str], searches: Sequence[str], options: Sequence[str]) -> str:
    lines = [f"nameserver {s}" for s in servers]
    if searches:
        lines.append("search " + " ".join(searches[:MAX_SEARCHES]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"


def hostname_file(hostname: str) -> str:
    return hostname + "\n"
