"""What the async and blocking clients share."""

from __future__ import annotations

import socket as _socket

DEFAULT_SOCKET = "/run/pycri/pycri.sock"
DEFAULT_TIMEOUT = 120.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024  # as kubelet's CRI client

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]


def target(socket: str) -> str:
    """A gRPC target for a socket path or an endpoint (``unix:///path`` or ``unix:/path``)."""
    if socket.startswith("unix://"):
        return "unix:" + socket.removeprefix("unix://")
    if socket.startswith("unix:"):
        return socket
    return "unix:" + socket


def socket_path(socket: str) -> str:
    """The file system path of a socket path or ``unix://`` endpoint."""
    return target(socket).removeprefix("unix:")


def listening(socket: str, timeout: float = 1.0) -> bool:
    """Whether a process accepts connections on ``socket``: tells "no daemon" from "the daemon said UNAVAILABLE"."""
    with _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM) as conn:
        conn.settimeout(timeout)
        try:
            conn.connect(socket_path(socket))
        except OSError:
            return False
    return True
