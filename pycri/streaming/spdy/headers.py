"""SPDY/3 header blocks: :class:`Headers`, the uncompressed block codec and the compression dictionary."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import TypeAlias

from pycri.streaming.spdy.errors import LocalProtocolError, ProtocolError

# The SPDY/3 header compression dictionary, byte for byte as in spdystream's spdy/dictionary.go
# (and the SPDY/3 draft, section 2.6.10.1): 1423 bytes, Adler-32 0xe3c6a7c2.
HEADER_DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03put\x00\x00\x00\x06de"
    b"lete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00\x0eaccept-charset\x00\x00\x00\x0faccept-"
    b"encoding\x00\x00\x00\x0faccept-language\x00\x00\x00\x0daccept-ranges\x00\x00\x00\x03age\x00\x00\x00"
    b"\x05allow\x00\x00\x00\x0dauthorization\x00\x00\x00\x0dcache-control\x00\x00\x00\x0aconnection\x00"
    b"\x00\x00\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-language\x00\x00\x00"
    b"\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0bcontent-md5\x00\x00\x00\x0dcontent"
    b"-range\x00\x00\x00\x0ccontent-type\x00\x00\x00\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00"
    b"\x00\x00\x07expires\x00\x00\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11i"
    b"f-modified-since\x00\x00\x00\x0dif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13if-unmodified-s"
    b"ince\x00\x00\x00\x0dlast-modified\x00\x00\x00\x08location\x00\x00\x00\x0cmax-forwards\x00\x00\x00"
    b"\x06pragma\x00\x00\x00\x12proxy-authenticate\x00\x00\x00\x13proxy-authorization\x00\x00\x00\x05range"
    b"\x00\x00\x00\x07referer\x00\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00"
    b"\x00\x07trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\x0auser-agent"
    b"\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00\x00\x10www-authenticate\x00"
    b"\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06status\x00\x00\x00\x06200 OK\x00\x00\x00\x07ver"
    b"sion\x00\x00\x00\x08HTTP/1.1\x00\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\x0aset-cookie\x00"
    b"\x00\x00\x0akeep-alive\x00\x00\x00\x06origin10010120120220520630030230330430530630740240540640740840"
    b"9410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanent"
    b"ly400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemen"
    b"ted503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, T"
    b"hu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xh"
    b"tml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-88"
    b"59-1,utf-,*,enq=0."
)

# Connection-specific headers are invalid in SPDY; spdystream drops the whole connection on them (spdy/read.go).
FORBIDDEN_HEADERS = frozenset({"connection", "host", "keep-alive", "proxy-connection", "transfer-encoding"})


class Headers(tuple[tuple[str, str], ...]):
    """An immutable list of ``(name, value)`` pairs with lower-case names; equal to the plain tuple."""

    __slots__ = ()

    @classmethod
    def of(cls, headers: HeadersLike) -> Headers:
        """Headers from a mapping or pairs, names lower-cased, order kept."""
        if isinstance(headers, Headers):
            return headers
        items: Iterable[tuple[str, str]] = headers.items() if isinstance(headers, Mapping) else headers
        return cls((name.lower(), value) for name, value in items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of ``name`` (any case), or ``default``."""
        name = name.lower()
        for key, value in self:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self if key == name]


HeadersLike: TypeAlias = Headers | Mapping[str, str] | Iterable[tuple[str, str]]
NO_HEADERS = Headers()

_U32 = struct.Struct(">I")


def encode_header_block(headers: HeadersLike) -> bytes:
    """The uncompressed SPDY/3 header block: names lower-cased, repeated names merged with NUL in first-seen order."""
    merged: dict[str, list[str]] = {}
    for name, value in Headers.of(headers):
        if not name:
            raise LocalProtocolError("empty header name")
        if "\0" in name or "\0" in value:
            raise LocalProtocolError(f"NUL in header {name!r}")
        merged.setdefault(name, []).append(value)
    parts = [_U32.pack(len(merged))]
    try:
        for name, values in merged.items():
            raw_name = name.encode("latin-1")
            raw_value = "\0".join(values).encode("latin-1")
            parts += (_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value)
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"header text must be latin-1: {exc}") from None
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed header block; NUL-joined values become separate pairs.  Raises ProtocolError."""
    size = len(block)
    if size < 4:
        raise ProtocolError("truncated header block")
    (count,) = _U32.unpack_from(block, 0)
    if count > (size - 4) // 8:
        raise ProtocolError(f"header block claims {count} headers in {size} bytes")
    pos = 4
    items: list[tuple[str, str]] = []
    for _ in range(count):
        strings: list[bytes] = []
        for _part in (0, 1):
            if pos + 4 > size:
                raise ProtocolError("truncated header block")
            (length,) = _U32.unpack_from(block, pos)
            pos += 4
            if pos + length > size:
                raise ProtocolError("truncated header block")
            strings.append(block[pos : pos + length])
            pos += length
        name = strings[0].decode("latin-1").lower()
        items.extend((name, value.decode("latin-1")) for value in strings[1].split(b"\0"))
    if pos != size:
        raise ProtocolError(f"{size - pos} stray bytes after the header block")
    return Headers(items)
