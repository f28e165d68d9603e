"""Single-use tokens for streaming requests, as kubelet's streaming server keeps them.

``Exec``, ``Attach`` and ``PortForward`` validate their request, store it here and answer a URL
holding the token; the client then connects to the streaming server with it. A token is 8
random bytes (URL-safe base64, 11 characters), is good once, and expires after
``TOKEN_TTL`` seconds; at most ``MAX_IN_FLIGHT`` wait at a time (kubelet's
``pkg/kubelet/cri/streaming/request_cache.go`` uses the same numbers). A used, unknown or
expired token finds nothing, and the server answers 404 without running anything.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from pycri import errors

TOKEN_TTL = 60.0
MAX_IN_FLIGHT = 1000
TOKEN_BYTES = 8

T = TypeVar("T")


@dataclass(frozen=True)
class _Entry(Generic[T]):
    request: T
    expires: float


class RequestCache(Generic[T]):
    def __init__(
        self, ttl: float = TOKEN_TTL, max_in_flight: int = MAX_IN_FLIGHT, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_in_flight = max_in_flight
        self._clock = clock
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # oldest first: expiry order

    def __len__(self) -> int:
        self._expire()
        return len(self._entries)

    def _expire(self) -> None:
        now = self._clock()
        while self._entries:
            token, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                break
            del self._entries[token]

    def insert(self, request: T) -> str:
        """Store ``request``; its token. RESOURCE_EXHAUSTED when too many wait unused."""
        self._expire()
        if len(self._entries) >= self.max_in_flight:
            raise errors.ResourceExhausted(f"maximum number of in-flight streaming requests ({self.max_in_flight}) exceeded")
        while True:
            token = base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()
            if token not in self._entries:
                break
        self._entries[token] = _Entry(request, self._clock() + self.ttl)
        return token

    def consume(self, token: str) -> T | None:
        """The request stored under ``token``, removed; None when unknown, used or expired."""
        self._expire()
        entry = self._entries.pop(token, None)
        return entry.request if entry is not None else None
