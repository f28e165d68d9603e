"""Clients of the CRI: asyncio (:class:`AsyncClient`) and blocking (:class:`Client`).

They speak runtime.v1 over a unix socket to pycri or to any other CRI runtime
(containerd, CRI-O).
"""

from pycri.client.aio import AsyncClient
from pycri.client.common import DEFAULT_SOCKET
from pycri.client.errors import (
    AlreadyExistsError,
    ClientError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    UnavailableError,
    UnimplementedError,
)
from pycri.client.sync import Client

__all__ = [
    "DEFAULT_SOCKET",
    "AlreadyExistsError",
    "AsyncClient",
    "Client",
    "ClientError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "UnavailableError",
    "UnimplementedError",
]
