"""The removed ``runtime.v1alpha2`` API: every call answers UNIMPLEMENTED.

Old clients (crictl, kubelet before 1.26) try v1 first or fall back between
versions by looking for UNIMPLEMENTED; an explicit message tells a person why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

PREFIX = "/runtime.v1alpha2."
MESSAGE = "runtime.v1alpha2 was removed from the CRI; pycri serves runtime.v1 only"


async def _refuse(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, MESSAGE)
    raise AssertionError("unreachable")


_HANDLER = grpc.unary_unary_rpc_method_handler(_refuse)

if TYPE_CHECKING:
    _Base = grpc.GenericRpcHandler[Any, Any]
else:  # the class is generic only in the type stubs
    _Base = grpc.GenericRpcHandler


class V1Alpha2Handler(_Base):
    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler[Any, Any] | None:
        method: str = handler_call_details.method
        return _HANDLER if method.startswith(PREFIX) else None
