"""Assemble the gRPC servers from the RPC families.

The main socket serves RuntimeService, ImageService, the v1alpha2 refusal and
any extra handlers (pycri's own Admin service); the optional image socket serves
ImageService alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from pycri.api import api_pb2
from pycri.server.legacy import V1Alpha2Handler
from pycri.server.rpc import service_handler

MAX_MESSAGE_BYTES = 16 * 1024 * 1024

RUNTIME_SERVICE = api_pb2.DESCRIPTOR.services_by_name["RuntimeService"]
IMAGE_SERVICE = api_pb2.DESCRIPTOR.services_by_name["ImageService"]

SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
]


def build_server(
    families: Sequence[object],
    *,
    images_only: bool = False,
    extra_handlers: Sequence[grpc.GenericRpcHandler[Any, Any]] = (),
) -> grpc.aio.Server:
    """A server for the CRI ``families``; ``extra_handlers`` (other services) only when not ``images_only``."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    handlers: list[grpc.GenericRpcHandler[Any, Any]] = [service_handler(IMAGE_SERVICE, families)]
    if not images_only:
        handlers.insert(0, service_handler(RUNTIME_SERVICE, families))
        handlers.append(V1Alpha2Handler())
        handlers.extend(extra_handlers)
    server.add_generic_rpc_handlers(handlers)
    return server
