"""TCP connections to a port of a pod, for port-forward: ``localhost:PORT`` seen from inside the pod.

As containerd's ``portForward``: in the pod's network namespace, IPv4 loopback first, then IPv6;
a host-network pod's ports are the node's own loopback ones.
"""

from __future__ import annotations

import asyncio
import socket

from pycri.network import netns

CONNECT_TIMEOUT = 10.0


async def _connect(sock: socket.socket, address: tuple[str, int]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, address), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def dial(netns_path: str | None, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``port`` on loopback in the namespace pinned at ``netns_path`` (None: the host's).

    Raises OSError (ConnectionRefusedError when nothing listens) from the IPv4 attempt when
    IPv6 fails too."""
    attempts = ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_INET6, ("::1", port)))
    first: OSError | None = None
    for family, address in attempts:
        try:
            if netns_path is None:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setblocking(False)
            else:
                sock = await netns.socket_in(netns_path, family)
            return await _connect(sock, address)
        except OSError as exc:
            first = first or exc
    assert first is not None
    raise first
