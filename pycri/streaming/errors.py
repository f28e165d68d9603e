"""The errors of the Kubernetes streaming protocols (re-exported by :mod:`pycri.streaming.protocol`)."""

from __future__ import annotations

import http
from collections.abc import Sequence


class StreamingError(Exception):
    """Base of this package's errors."""


class HandshakeError(StreamingError):
    """The upgrade request is refused; write :meth:`response` and close the connection.

    ``status`` and the extra ``headers`` are upstream's; the body is the
    message and a newline as ``http.Error`` writes it, also where upstream's
    WebSocket library sends none (the 403 for no common subprotocol).
    """

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def response(self) -> bytes:
        """A complete HTTP/1.1 response, ``Connection: close``."""
        body = (self.message + "\n").encode("utf-8", "replace")
        lines = [f"HTTP/1.1 {self.status} {_status_phrase(self.status)}"]
        lines += [f"{name}: {value}" for name, value in self.headers]
        lines += [
            "Content-Type: text/plain; charset=utf-8",
            "X-Content-Type-Options: nosniff",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


class PortForwardOptionsError(HandshakeError):
    """Unusable port-forward ports (the kubelet answers 400 Bad Request)."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)


class StreamHeaderError(StreamingError):
    """A SPDY stream's headers are unusable; upstream resets (RST_STREAM) that stream."""


class PortForwardPairError(StreamingError):
    """A second data or error stream for one request ID.

    Upstream writes ``str(error)`` on the pair's error stream, if it has one, and
    leaves the offending stream alone (``httpStreamHandler.run``).
    """

    def __init__(self, request_id: str, problem: str) -> None:
        super().__init__(f"error processing stream for request {request_id}: {problem}")
        self.request_id = request_id


def _status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"
