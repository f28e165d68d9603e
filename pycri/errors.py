"""Errors the domain raises; the gRPC layer maps each kind to its status code.

Domain modules never import grpc: they raise one of these with a message that
names the field or object and the reason, and ``pycri.server`` turns it into
the matching gRPC status.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    UNAVAILABLE = "UNAVAILABLE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    DATA_LOSS = "DATA_LOSS"
    INTERNAL = "INTERNAL"


class CRIError(Exception):
    """Base class: an error with a gRPC-style code and a message for the caller."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CRIError):
    code = Code.INVALID_ARGUMENT


class NotFound(CRIError):
    code = Code.NOT_FOUND


class AlreadyExists(CRIError):
    code = Code.ALREADY_EXISTS


class FailedPrecondition(CRIError):
    code = Code.FAILED_PRECONDITION


class DeadlineExceeded(CRIError):
    code = Code.DEADLINE_EXCEEDED


class Unimplemented(CRIError):
    code = Code.UNIMPLEMENTED


class Unavailable(CRIError):
    code = Code.UNAVAILABLE


class ResourceExhausted(CRIError):
    code = Code.RESOURCE_EXHAUSTED


class Unauthenticated(CRIError):
    code = Code.UNAUTHENTICATED


class PermissionDenied(CRIError):
    code = Code.PERMISSION_DENIED


class DataLoss(CRIError):
    code = Code.DATA_LOSS


class Internal(CRIError):
    code = Code.INTERNAL
