"""Exceptions of the pycri client: one class per gRPC status a caller may handle."""

from __future__ import annotations

import grpc


class ClientError(Exception):
    """A call failed; ``code`` is the gRPC status, ``details`` the server's message."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details


class InvalidArgumentError(ClientError):
    pass


class NotFoundError(ClientError):
    pass


class AlreadyExistsError(ClientError):
    pass


class FailedPreconditionError(ClientError):
    pass


class DeadlineExceededError(ClientError):
    pass


class UnimplementedError(ClientError):
    pass


class UnavailableError(ClientError):
    """The daemon is not reachable (not running, or the socket is wrong)."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def from_rpc_error(method: str, exc: grpc.RpcError) -> ClientError:
    code: grpc.StatusCode = exc.code()
    details: str = exc.details() or ""
    return _BY_CODE.get(code, ClientError)(method, code, details)
