"""From RPC families to gRPC handlers, with the per-call interceptor.

A *family* is a plain object whose methods are named after RPCs
(``async def Version(self, request) -> VersionResponse``; server-streaming
RPCs are async generators). :func:`service_handler` walks a service's
descriptor, so every RPC of the API is registered: one a family implements is
wrapped by :func:`intercept` (the request checked by :mod:`pycri.server.validate`; debug log of method, duration and status;
domain errors mapped to their gRPC code; anything unexpected becomes INTERNAL
with a message instead of a crashed daemon), one nobody implements answers
UNIMPLEMENTED saying so.

The interception is done when the table is built rather than with a
``grpc.aio.ServerInterceptor``: the behaviour is the same, and it spares every
call the interceptor's extra handler look-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, NewType, TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from pycri.api import api_pb2
from pycri.errors import Code, CRIError, InvalidArgument
from pycri.server import validate

log = logging.getLogger("pycri.rpc")

GRPC_CODES: dict[Code, grpc.StatusCode] = {code: getattr(grpc.StatusCode, code.value) for code in Code}


# A response already in wire form: the handler table sends it as it is (grpc wants exact bytes).
Encoded = NewType("Encoded", bytes)
Unary = Callable[[Any], Awaitable[Message | Encoded]]
Streaming = Callable[[Any], AsyncIterator[Message | Encoded]]
Context = grpc.aio.ServicerContext[Any, Any]


def _log_call(method: str, started: float, code: str, detail: str = "") -> None:
    elapsed_ms = (time.perf_counter() - started) * 1000
    if detail:
        log.debug("rpc %s %s %.3fms: %s", method, code, elapsed_ms, detail)
    else:
        log.debug("rpc %s %s %.3fms", method, code, elapsed_ms)


async def _abort(context: Context, method: str, exc: BaseException, started: float) -> None:
    if isinstance(exc, CRIError):
        code, message = GRPC_CODES[exc.code], exc.message
    else:
        log.exception("rpc %s failed unexpectedly", method)
        code, message = grpc.StatusCode.INTERNAL, f"pycri internal error in {method}: {type(exc).__name__}: {exc}"
    if log.isEnabledFor(logging.DEBUG):
        _log_call(method, started, code.name, message)
    await context.abort(code, message)


def _decoder(request_type: type[Message]) -> Callable[[bytes], Message]:
    """Parse and check a request (:func:`pycri.server.validate.check`): a malformed one is
    INVALID_ARGUMENT naming its type (grpc would say UNKNOWN), one that breaks a rule names the field."""
    name = request_type.DESCRIPTOR.full_name

    def decode(raw: bytes) -> Message:
        try:
            request = request_type.FromString(raw)
        except DecodeError as exc:
            raise InvalidArgument(f"malformed {name}: {exc}") from None
        validate.check(request)
        return request

    return decode


def intercept(
    method: str, impl: Unary, decode: Callable[[bytes], Message]
) -> Callable[[bytes, Context], Awaitable[Message | Encoded]]:
    async def behaviour(raw: bytes, context: Context) -> Message | Encoded:
        started = time.perf_counter()
        try:
            response = await impl(decode(raw))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, method, exc, started)
            raise  # abort raised already; keeps type checkers content
        if log.isEnabledFor(logging.DEBUG):
            _log_call(method, started, "OK")
        return response

    return behaviour


def intercept_stream(
    method: str, impl: Streaming, decode: Callable[[bytes], Message]
) -> Callable[[bytes, Context], AsyncIterator[Message | Encoded]]:
    async def behaviour(raw: bytes, context: Context) -> AsyncIterator[Message | Encoded]:
        started = time.perf_counter()
        try:
            async for response in impl(decode(raw)):
                yield response
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort(context, method, exc, started)
            raise
        if log.isEnabledFor(logging.DEBUG):
            _log_call(method, started, "OK")

    return behaviour


def unimplemented_message(method: str) -> str:
    return f"pycri does not implement {method} yet"


def _unimplemented(method: str) -> Callable[[Any, Context], Awaitable[Message]]:
    message = unimplemented_message(method)

    async def behaviour(request: Any, context: Context) -> Message:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        raise AssertionError("unreachable")

    return behaviour


def _unimplemented_stream(method: str) -> Callable[[Any, Context], AsyncIterator[Message]]:
    message = unimplemented_message(method)

    async def behaviour(request: Any, context: Context) -> AsyncIterator[Message]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)
        yield api_pb2.VersionResponse()  # pragma: no cover - abort raised

    return behaviour


def _message_class(descriptor: Any) -> type[Message]:
    """The generated class of a message descriptor, whichever .proto it comes from."""
    cls: type[Message] = message_factory.GetMessageClass(descriptor)
    return cls


def _find(families: Sequence[object], name: str) -> Any:
    found = [getattr(f, name) for f in families if callable(getattr(f, name, None))]
    if len(found) > 1:
        raise RuntimeError(f"RPC {name} is implemented by more than one family")
    return found[0] if found else None


def implemented(service: ServiceDescriptor, families: Sequence[object]) -> list[str]:
    """Names of the service's RPCs that ``families`` implement."""
    return [m.name for m in service.methods if _find(families, m.name) is not None]


def _method_handler(
    service: ServiceDescriptor, method: MethodDescriptor, families: Sequence[object]
) -> grpc.RpcMethodHandler[Any, Any]:
    full = f"{service.full_name}/{method.name}"
    impl = _find(families, method.name)
    decode = _decoder(_message_class(method.input_type))
    serialize = _message_class(method.output_type).SerializeToString

    def response(message: Message | bytes) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    if method.client_streaming:
        raise RuntimeError(f"{full}: client streaming is not part of the CRI")
    if method.server_streaming:
        stream = intercept_stream(full, impl, decode) if impl else _unimplemented_stream(full)
        return grpc.unary_stream_rpc_method_handler(stream, response_serializer=response)
    unary = intercept(full, impl, decode) if impl else _unimplemented(full)
    return grpc.unary_unary_rpc_method_handler(unary, response_serializer=response)


def service_handler(service: ServiceDescriptor, families: Sequence[object]) -> grpc.GenericRpcHandler[Any, Any]:
    """A handler registering every RPC of ``service``, served by ``families`` where they implement it."""
    handlers = {m.name: _method_handler(service, m, families) for m in service.methods}
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


K = TypeVar("K")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def repeated_element(message: Message, field_number: int = 1) -> bytes:
    """``message`` as one element of a repeated message field: key, length, then the message.

    A response whose only field is that repeated field is the concatenation of its elements,
    so a list answer can be joined from elements encoded once (``ListedCache``).
    """
    payload = message.SerializeToString()
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def encoded(elements: Iterable[bytes]) -> Encoded:
    return Encoded(b"".join(elements))


class ListedCache(Generic[K]):
    """Listed messages by (object id, state), encoded once as elements of the list response's
    repeated field 1: rebuilding them (label and annotation maps above all) and copying them
    into a response cost more than the rest of a list call; an entry is reused while the state
    holds."""

    def __init__(self, build: Callable[[Any], Message]) -> None:
        self._build = build
        self._cache: dict[tuple[str, K], bytes] = {}

    def get(self, obj_id: str, state: K, obj: Any) -> bytes:
        key = (obj_id, state)
        element = self._cache.get(key)
        if element is None:
            element = self._cache[key] = repeated_element(self._build(obj))
        return element

    def prune(self, count: int, live: Callable[[], set[tuple[str, K]]]) -> None:
        """Drop stale entries once the cache outgrows the ``count`` objects (``live()`` keys them)."""
        if len(self._cache) > 2 * count + 16:
            keep = live()
            self._cache = {k: v for k, v in self._cache.items() if k in keep}


T = TypeVar("T")
STREAM_PAGE = 100  # items per message of the Stream* RPCs


def pages(items: Sequence[T], size: int = STREAM_PAGE) -> Iterator[Sequence[T]]:
    """``items`` in pages of ``size``, for the Stream* RPCs (nothing for an empty list)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
