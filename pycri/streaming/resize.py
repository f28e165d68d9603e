"""Terminal sizes from the JSON stream of a remote command's ``resize`` stream or channel.

:class:`ResizeDecoder` reads it as upstream's ``json.Decoder`` loop does (see
:mod:`pycri.streaming.protocol`, which re-exports these names).
"""

from __future__ import annotations

import json
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TerminalSize:
    """``remotecommand.TerminalSize`` (two ``uint16``)."""

    width: int
    height: int


class _JsonObject:
    __slots__ = ("pairs",)

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        self.pairs = pairs


class _JsonNumber:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid character {name[0]!r} looking for beginning of value")


def _go_type_name(value: object) -> str:
    if isinstance(value, _JsonNumber):
        return f"number {value.text}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


_WS = b" \t\r\n"
_FIELDS = {"width": "Width", "height": "Height"}


class ResizeDecoder:
    """Terminal sizes from the bytes of a resize stream, as upstream's ``json.Decoder`` loop reads them.

    :meth:`feed` takes bytes split anywhere and returns the sizes completed.
    Like ``encoding/json`` decoding into ``TerminalSize``: keys match the
    fields ``Width``/``Height`` case-insensitively, unknown keys are ignored, a
    missing or ``null`` field is 0, and a top-level ``null`` is a 0x0 size (it
    ends at the next byte or at :meth:`feed_eof`).  The first error -- a syntax
    error, a value that is not an object, a field that is not an integer in
    0..65535 -- ends decoding for good, as upstream stops reading the stream:
    :attr:`error` says why and later input is ignored.  Zero sizes are passed
    on as upstream passes them; runtimes usually skip them.

    Two differences: a single JSON value longer than ``max_value_bytes`` is an
    error, so a client cannot grow the buffer without bound; and nesting deeper
    than Python's recursion limit is an error where Go allows 10000 levels.
    A syntax error inside an object is only noticed once the object's braces
    balance, later than Go notices it, with the same outcome: no more sizes.
    """

    def __init__(self, max_value_bytes: int = 64 * 1024) -> None:
        self.max_value_bytes = max_value_bytes
        self._buf = bytearray()
        self._scan = 0  # bytes of the pending object already scanned
        self._depth = 0
        self._in_string = False
        self._escaped = False
        self._error: str | None = None
        self._eof = False

    @property
    def error(self) -> str | None:
        """Why decoding stopped, or None while it goes on."""
        return self._error

    @property
    def stopped(self) -> bool:
        return self._error is not None or self._eof

    def feed(self, data: bytes) -> list[TerminalSize]:
        if self.stopped:
            return []
        self._buf += data
        return self._drain(eof=False)

    def feed_eof(self) -> list[TerminalSize]:
        """The stream ended: completes a trailing ``null``; an unfinished object is an error."""
        if self.stopped:
            return []
        sizes = self._drain(eof=True)
        self._eof = True
        return sizes

    def _fail(self, message: str) -> None:
        self._error = message
        self._buf.clear()

    def _drain(self, eof: bool) -> list[TerminalSize]:
        sizes: list[TerminalSize] = []
        buf = self._buf
        while self._error is None:
            start = 0
            while start < len(buf) and buf[start] in _WS:
                start += 1
            if start:
                del buf[:start]
            if not buf:
                break
            first = buf[0]
            if first == ord("{"):
                end = self._scan_object()
                if end is None:
                    if eof:
                        self._fail("unexpected EOF")
                    elif len(buf) > self.max_value_bytes:
                        self._fail(f"resize message longer than {self.max_value_bytes} bytes")
                    break
                value = bytes(buf[:end])
                del buf[:end]
                size = self._decode_object(value)
                if size is not None:
                    sizes.append(size)
            elif first == ord("n"):
                head = bytes(buf[:4])
                if not b"null".startswith(head):
                    self._fail(
                        f"invalid character {chr(buf[len(_common_prefix(head, b'null'))])!r} in literal null (expecting 'null')"
                    )
                    break
                # Go's scanner only knows a literal has ended when it sees the next byte (or EOF).
                if len(buf) < 4 or (len(buf) == 4 and not eof):
                    if eof:
                        self._fail("unexpected EOF")
                    break
                del buf[:4]
                sizes.append(TerminalSize(0, 0))
            else:
                self._fail(_not_an_object(first))
        return sizes

    def _scan_object(self) -> int | None:
        """End offset of the object at the start of the buffer, or None if it is not complete yet."""
        buf = self._buf
        for i in range(self._scan, len(buf)):
            c = buf[i]
            if self._in_string:
                if self._escaped:
                    self._escaped = False
                elif c == 0x5C:  # backslash
                    self._escaped = True
                elif c == 0x22:  # quote
                    self._in_string = False
            elif c == 0x22:
                self._in_string = True
            elif c in b"{[":
                self._depth += 1
            elif c in b"}]":
                self._depth -= 1
                if self._depth == 0:
                    self._scan = 0
                    if c == ord("]"):
                        self._fail("invalid character ']' after object key:value pair")
                        return None
                    return i + 1
        self._scan = len(buf)
        return None

    def _decode_object(self, value: bytes) -> TerminalSize | None:
        try:
            parsed = json.loads(
                value.decode("utf-8", "replace"),
                object_pairs_hook=_JsonObject,
                parse_int=_JsonNumber,
                parse_float=_JsonNumber,
                parse_constant=_reject_constant,
            )
        except (ValueError, RecursionError) as exc:
            self._fail(f"invalid resize message: {exc}")
            return None
        assert isinstance(parsed, _JsonObject)
        fields = {"Width": 0, "Height": 0}
        for key, item in parsed.pairs:
            name = _FIELDS.get(key.lower()) if key.isascii() else None
            if name is None or item is None:
                continue
            number = _uint16(item)
            if number is None:
                self._fail(
                    f"json: cannot unmarshal {_go_type_name(item)} into Go struct field TerminalSize.{name} of type uint16"
                )
                return None
            fields[name] = number
        return TerminalSize(fields["Width"], fields["Height"])


def _uint16(value: object) -> int | None:
    """Go's ``strconv.ParseUint(text, 10, 64)`` plus the uint16 overflow check."""
    if not isinstance(value, _JsonNumber) or not value.text.isdigit():
        return None
    number = int(value.text)
    return number if number <= 0xFFFF else None


def _common_prefix(a: bytes, b: bytes) -> bytes:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def _not_an_object(first: int) -> str:
    kinds = {ord("["): "array", ord('"'): "string", ord("t"): "bool", ord("f"): "bool", ord("-"): "number"}
    kind = kinds.get(first, "number" if chr(first).isdigit() else None)
    if kind is not None:
        return f"json: cannot unmarshal {kind} into Go value of type remotecommand.TerminalSize"
    return f"invalid character {chr(first)!r} looking for beginning of value"
