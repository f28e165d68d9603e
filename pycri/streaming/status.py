"""The ``metav1.Status`` a remote command's error stream carries when the command ends.

From v4 the stream carries its JSON, as Go's ``encoding/json`` writes it; in v1
to v3 the bare message text and nothing at all on success (see
:mod:`pycri.streaming.protocol`, which re-exports these names).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

STATUS_SUCCESS = "Success"
STATUS_FAILURE = "Failure"
REASON_NON_ZERO_EXIT_CODE = "NonZeroExitCode"
REASON_INTERNAL_ERROR = "InternalError"
CAUSE_EXIT_CODE = "ExitCode"


def _go_list(items: Sequence[str]) -> str:
    """How Go's ``%v`` prints a ``[]string``."""
    return "[" + " ".join(items) + "]"


def _go_json_string(text: str) -> str:
    """A JSON string as Go's ``encoding/json`` writes it (HTML-safe escapes, invalid text as U+FFFD)."""
    out = ['"']
    for char in text:
        code = ord(char)
        if char == '"':
            out.append('\\"')
        elif char == "\\":
            out.append("\\\\")
        elif char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or char in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:  # a lone surrogate: Go writes invalid UTF-8 as this escape
            out.append("\\ufffd")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


@dataclass(frozen=True)
class StatusCause:
    """``metav1.StatusCause``; ``reason`` is the Go field ``Type`` (JSON ``reason``)."""

    reason: str = ""
    message: str = ""
    field: str = ""

    def to_json(self) -> str:
        parts = [
            f'"{key}":{_go_json_string(value)}'
            for key, value in (("reason", self.reason), ("message", self.message), ("field", self.field))
            if value
        ]
        return "{" + ",".join(parts) + "}"


@dataclass(frozen=True)
class Status:
    """The ``metav1.Status`` the server writes on the error stream when a command ends.

    ``details`` None means no ``details`` member; an empty tuple means ``{}``.
    """

    status: str
    message: str = ""
    reason: str = ""
    details: tuple[StatusCause, ...] | None = None
    code: int = 0

    @classmethod
    def success(cls) -> Status:
        return cls(STATUS_SUCCESS)

    @classmethod
    def non_zero_exit(cls, exit_code: int, error: str) -> Status:
        """``ServeExec`` for an exited process: ``error`` is the runtime's error text (see :func:`exec_exit_error`)."""
        if exit_code == 0:
            raise ValueError("a zero exit code is a success, not a NonZeroExitCode status")
        return cls(
            STATUS_FAILURE,
            message=f"command terminated with non-zero exit code: {error}",
            reason=REASON_NON_ZERO_EXIT_CODE,
            details=(StatusCause(reason=CAUSE_EXIT_CODE, message=str(exit_code)),),
        )

    @classmethod
    def internal_error(cls, error: str) -> Status:
        """``apierrors.NewInternalError``: what exec/attach report for any other failure."""
        return cls(
            STATUS_FAILURE,
            message=f"Internal error occurred: {error}",
            reason=REASON_INTERNAL_ERROR,
            details=(StatusCause(message=error),),
            code=500,
        )

    def to_json(self) -> bytes:
        """``json.Marshal(metav1.Status)``: fields in struct order, empty ones omitted, ``metadata`` always ``{}``."""
        parts = ['"metadata":{}']
        if self.status:
            parts.append(f'"status":{_go_json_string(self.status)}')
        if self.message:
            parts.append(f'"message":{_go_json_string(self.message)}')
        if self.reason:
            parts.append(f'"reason":{_go_json_string(self.reason)}')
        if self.details is not None:
            causes = '"causes":[' + ",".join(c.to_json() for c in self.details) + "]" if self.details else ""
            parts.append('"details":{' + causes + "}")
        if self.code:
            parts.append(f'"code":{self.code}')
        return ("{" + ",".join(parts) + "}").encode("utf-8")

    def to_text(self) -> bytes:
        """The v1-v3 error stream: nothing on success, else the message (``StatusError.Error()``)."""
        if self.status == STATUS_SUCCESS:
            return b""
        try:
            return self.message.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return self.message.encode("utf-8", "replace")

    def encode(self, protocol: str) -> bytes:
        """The error-stream payload for a negotiated remote-command protocol (SPDY names)."""
        from pycri.streaming.protocol import remote_command_version  # here, as protocol imports this module

        return self.to_json() if remote_command_version(protocol).status_as_json else self.to_text()


def exec_exit_error(cmd: Sequence[str], exit_code: int) -> str:
    """The error text containerd (and CRI-O's VM runtimes) give a non-zero exit: ``[sh -c exit 3]`` is Go's ``%v``."""
    return f"error executing command {_go_list(cmd)}, exit code {exit_code}"


def status_success() -> bytes:
    """``{"metadata":{},"status":"Success"}``."""
    return Status.success().to_json()


def status_exit_code(exit_code: int, cmd: Sequence[str]) -> bytes:
    """The JSON for an exec whose process exited non-zero, message as containerd's kubelet-derived server words it."""
    return Status.non_zero_exit(exit_code, exec_exit_error(cmd, exit_code)).to_json()


def status_failure(message: str, reason: str = REASON_INTERNAL_ERROR, code: int = 0) -> bytes:
    """A bare failure Status; for upstream's exec/attach errors use :func:`status_internal_error`."""
    return Status(STATUS_FAILURE, message=message, reason=reason, code=code).to_json()


def status_internal_error(error: str) -> bytes:
    """The JSON of ``NewInternalError``; ``error`` as the kubelet words it, e.g.
    ``"error executing command in container: ..."`` or ``"error attaching to container: ..."``."""
    return Status.internal_error(error).to_json()
