"""What the async and blocking clients share."""

from __future__ import annotations

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
