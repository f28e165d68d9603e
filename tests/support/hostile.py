"""Hand-made tar streams for hostile-layer tests: headers written byte by byte, huge runs streamed.

A stream is a list of parts: bytes, ``Zeros(n)`` or ``Repeat(data, n)``, so that a layer
declaring gigabytes costs the test no memory: :func:`gzipped` compresses the parts as
it goes (a run of zeros shrinks about a thousandfold), :func:`joined` writes them out
when they are small.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

BLOCK = 512
MTIME = 1_600_000_000
END = b"\0" * (2 * BLOCK)


@dataclass(frozen=True)
class Zeros:
    size: int


@dataclass(frozen=True)
class Repeat:
    data: bytes
    count: int


Part = bytes | Zeros | Repeat


def chunks(parts: Iterable[Part], size: int = 1 << 20) -> Iterator[bytes]:
    zeros = bytes(size)
    for part in parts:
        if isinstance(part, Zeros):
            left = part.size
            while left > 0:
                yield zeros[: min(left, size)]
                left -= size
        elif isinstance(part, Repeat):
            batch = max(1, size // max(1, len(part.data)))
            left = part.count
            while left > 0:
                yield part.data * min(left, batch)
                left -= batch
        else:
            yield part


def gzipped(parts: Iterable[Part]) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    out = [compressor.compress(chunk) for chunk in chunks(parts)]
    out.append(compressor.flush())
    return b"".join(out)


def joined(parts: Iterable[Part]) -> bytes:
    return b"".join(chunks(parts))


def padded(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % BLOCK)


def blocks(size: int) -> int:
    """Bytes the data of an entry of ``size`` bytes takes in the archive."""
    return size + (-size % BLOCK)


def _octal(value: int, width: int = 12) -> bytes:
    """A numeric field: octal, or base-256 when that does not fit (GNU)."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")


def _checksummed(block: bytearray) -> bytes:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def header(name: str, typeflag: bytes, size: int = 0, *, linkname: str = "", mode: int = 0o644) -> bytes:
    """A raw header in the GNU format: sizes of 8 GiB and over in base-256, a name or link name over
    100 bytes in a long name ('L', 'K') header before it; ``size`` may be negative."""
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname, info.mode, info.mtime = typeflag, max(size, 0), linkname, mode, MTIME
    raw = info.tobuf(tarfile.GNU_FORMAT)
    block = bytearray(raw[-BLOCK:])
    if size < 0:  # base-256, two's complement
        block[124:136] = (size % (1 << 96)).to_bytes(12, "big")
        block[124] |= 0x80
    return raw[:-BLOCK] + _checksummed(block)


def regular(name: str, data: bytes = b"", *, mode: int = 0o644) -> bytes:
    return header(name, tarfile.REGTYPE, len(data), mode=mode) + padded(data)


def directory(name: str) -> bytes:
    return header(name, tarfile.DIRTYPE, mode=0o755)


def symlink(name: str, target: str) -> bytes:
    return header(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def hardlink(name: str, target: str) -> bytes:
    return header(name, tarfile.LNKTYPE, linkname=target)


def pax_payload(records: Mapping[str, str]) -> bytes:
    out = b""
    for key, value in records.items():
        body = b" " + key.encode() + b"=" + value.encode("utf-8", "surrogateescape") + b"\n"
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length += 1
        out += str(length).encode() + body
    return out


def pax(records: Mapping[str, str], typeflag: bytes = tarfile.XHDTYPE) -> bytes:
    """A PAX extended ('x') or global ('g') header with its records."""
    payload = pax_payload(records)
    return header("././@PaxHeader", typeflag, len(payload)) + padded(payload)


def long_name(name: str, typeflag: bytes = tarfile.GNUTYPE_LONGNAME) -> bytes:
    """A GNU long name ('L') or long link name ('K') header with its data."""
    data = name.encode() + b"\0"
    return header("././@LongLink", typeflag, len(data)) + padded(data)


META_NAMES = {
    tarfile.XHDTYPE: "././@PaxHeader",
    tarfile.XGLTYPE: "././@PaxHeader",
    tarfile.SOLARIS_XHDTYPE: "././@PaxHeader",
    tarfile.GNUTYPE_LONGNAME: "././@LongLink",
    tarfile.GNUTYPE_LONGLINK: "././@LongLink",
}


def header_bomb(typeflag: bytes, size: int, *, with_data: bool = True) -> list[Part]:
    """An extension header of ``typeflag`` declaring ``size`` bytes (which follow, all zeros, if ``with_data``)."""
    parts: list[Part] = [header(META_NAMES[typeflag], typeflag, size)]
    if with_data:
        parts.append(Zeros(blocks(size)))
    return [*parts, regular("after", b"x"), END]


def _sparse_entries(entries: Sequence[tuple[int, int]], count: int) -> bytes:
    out = bytearray()
    for offset, size in entries[:count]:
        out += _octal(offset) + _octal(size)
    return bytes(out) + b"\0" * (24 * count - len(out))


def gnu_sparse(name: str, real_size: int, segments: Sequence[tuple[int, int]], data: bytes | None = None) -> list[Part]:
    """An old-GNU sparse ('S') entry: the file is ``real_size`` bytes, ``segments`` (offset, size) hold data, the rest is holes.

    ``data`` is what the segments hold, one after the other (default: ``x``s).
    """
    stored = sum(size for _, size in segments)
    data = b"x" * stored if data is None else data
    block = bytearray(header(name, tarfile.GNUTYPE_SPARSE, stored))
    block[386:482] = _sparse_entries(segments, 4)
    rest = list(segments[4:])
    block[482] = 1 if rest else 0
    block[483:495] = _octal(real_size)
    parts: list[Part] = [_checksummed(block)]
    while rest:
        head, rest = rest[:21], rest[21:]
        extension = bytearray(BLOCK)
        extension[: 21 * 24] = _sparse_entries(head, 21)
        extension[504] = 1 if rest else 0
        parts.append(bytes(extension))
    return [*parts, padded(data)]


def gnu_sparse_map_bomb(extensions: int) -> list[Part]:
    """An old-GNU sparse header followed by ``extensions`` extension blocks, each saying another follows."""
    block = bytearray(header("bomb", tarfile.GNUTYPE_SPARSE, 0))
    block[482] = 1
    block[483:495] = _octal(1 << 30)
    extension = bytearray(BLOCK)
    extension[: 21 * 24] = _sparse_entries([(1, 1)] * 21, 21)
    extension[504] = 1
    return [_checksummed(block), Repeat(bytes(extension), extensions), END]


def pax_sparse(name: str, real_size: int, segments: Sequence[tuple[int, int]], data: bytes | None = None) -> list[Part]:
    """A GNU sparse file in the PAX 1.0 format: the map leads the entry's data."""
    stored = sum(size for _, size in segments)
    data = b"x" * stored if data is None else data
    sparse_map = padded(f"{len(segments)}\n".encode() + b"".join(b"%d\n%d\n" % s for s in segments))
    records = {
        "GNU.sparse.major": "1",
        "GNU.sparse.minor": "0",
        "GNU.sparse.name": name,
        "GNU.sparse.realsize": str(real_size),
    }
    return [pax(records), header(f"GNUSparseFile.0/{name}", tarfile.REGTYPE, len(sparse_map) + stored), sparse_map, padded(data)]


def pax_sparse_map_bomb(numbers: int) -> list[Part]:
    """A PAX 1.0 sparse entry whose map announces a billion entries and brings ``numbers`` of them."""
    records = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "bomb", "GNU.sparse.realsize": "1"}
    body = 2 * numbers + BLOCK
    return [
        pax(records),
        header("GNUSparseFile.0/bomb", tarfile.REGTYPE, body),
        b"1000000000\n" + b"0\n" * ((BLOCK - 11) // 2) + b"0",
        Repeat(b"0\n", numbers),
        Zeros(blocks(body) - BLOCK - 2 * numbers),
        END,
    ]


def from_tarfile(entries: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in entries:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()
