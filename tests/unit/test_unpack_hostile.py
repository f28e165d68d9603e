"""Hostile layers: header bombs, sparse bombs and size limits, memory measured while they are read."""

from __future__ import annotations

import io
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri.images import unpack
from pycri.images.unpack import UnpackError, UnpackLimitError, UnpackStats, open_layer, unpack_layer
from tests.support import trees
from tests.support.hostile import (
    END,
    Part,
    Repeat,
    gnu_sparse,
    gnu_sparse_map_bomb,
    gzipped,
    header,
    header_bomb,
    joined,
    long_name,
    pax,
    pax_sparse_map_bomb,
    regular,
)

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 1 << 20


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "layer"
    d.mkdir()
    yield d
    trees.empty(tmp_path)


def unpack_blob(blob: bytes, dest: Path, media_type: str = OCI_GZIP, **kw: Any) -> UnpackStats:
    return unpack_layer(open_layer(io.BytesIO(blob), media_type), dest, **kw)


def peak_of(run: Callable[[], object]) -> int:
    """The most memory Python held at once while ``run`` ran, over what it held before."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def refused(blob: bytes, dest: Path, error: type[UnpackError] = UnpackError, **kw: Any) -> tuple[str, int]:
    """The message ``blob`` is refused with, and the peak memory reading it took."""
    messages: list[str] = []

    def run() -> None:
        with pytest.raises(error) as info:
            unpack_blob(blob, dest, **kw)
        messages.append(info.value.message)

    peak = peak_of(run)
    return messages[0], peak


# -- item 9: headers read whole --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typeflag", "kind"),
    [
        (tarfile.XHDTYPE, "PAX extended header"),
        (tarfile.SOLARIS_XHDTYPE, "PAX extended header"),
        (tarfile.XGLTYPE, "PAX global header"),
        (tarfile.GNUTYPE_LONGNAME, "GNU long name"),
        (tarfile.GNUTYPE_LONGLINK, "GNU long link name"),
    ],
)
def test_an_oversized_extension_header_is_refused_before_it_is_read(dest: Path, typeflag: bytes, kind: str) -> None:
    blob = gzipped(header_bomb(typeflag, 64 * MiB))
    assert len(blob) < 128 * 1024  # 64 MiB of header in a few dozen KiB
    message, peak = refused(blob, dest, UnpackLimitError)
    assert message == f"layer tar stream: {kind} of {64 * MiB} bytes at offset 0 is over the {MiB}-byte limit"
    assert peak < 8 * MiB
    assert list(dest.iterdir()) == []


def test_a_header_declaring_a_terabyte_is_refused_at_once(dest: Path) -> None:
    message, _ = refused(
        joined(header_bomb(tarfile.XHDTYPE, 1 << 40, with_data=False)), dest, UnpackLimitError, media_type=OCI_TAR
    )
    assert message == f"layer tar stream: PAX extended header of {1 << 40} bytes at offset 0 is over the {MiB}-byte limit"


def test_headers_up_to_the_limit_are_read(dest: Path) -> None:
    at_limit = pax({"comment": "c" * (MiB - 17)})
    assert len(at_limit) == 512 + MiB
    stats = unpack_blob(joined([long_name("n" * 200), regular("short"), at_limit, regular("x"), END]), dest, OCI_TAR)
    assert stats.entries == 2
    assert sorted(p.name for p in dest.iterdir()) == ["n" * 200, "x"]


def test_an_old_gnu_sparse_map_that_never_ends_is_refused(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blob = gzipped(gnu_sparse_map_bomb(64 * 2048))  # 64 MiB of extension blocks, 2.7 million map entries
    with pytest.raises(UnpackLimitError) as info:
        unpack_blob(blob, dest)
    assert info.value.message == (
        f"layer tar stream: the headers of the entry at offset 0 (extended headers, sparse map) take more than {4 * MiB} bytes"
    )
    monkeypatch.setattr(unpack, "MAX_ENTRY_HEADER_BYTES", MiB)  # a quarter of the work under tracemalloc
    _, peak = refused(blob, dest, UnpackLimitError)
    assert peak < 8 * MiB


def test_a_pax_sparse_map_that_never_ends_is_refused(dest: Path) -> None:
    blob = gzipped(pax_sparse_map_bomb(32 * MiB))  # 64 MiB of "0\n"
    message, peak = refused(blob, dest, UnpackLimitError)
    assert message == f"layer tar stream: the sparse map at offset 1536 is over the {MiB}-byte limit"
    assert peak < 8 * MiB


def test_a_long_chain_of_extension_headers_is_refused(dest: Path) -> None:
    blob = gzipped([Repeat(long_name("a" * 1000), 20_000), regular("f"), END])
    message, peak = refused(blob, dest, UnpackLimitError)
    assert message == "layer tar stream: more than 16 extension headers before the entry at offset 0"
    assert peak < 8 * MiB


def test_a_truncated_sparse_extension_chain_is_an_unpack_error(dest: Path) -> None:
    parts: list[Part] = gnu_sparse("f", 1 << 20, [(i * 4096, 1) for i in range(30)])
    raw = joined(parts)
    with pytest.raises(UnpackError, match="corrupt or truncated"):
        unpack_blob(raw[:1024], dest, OCI_TAR)  # the header and one of its two extension blocks


def test_global_pax_headers_are_ignored_as_containerd_does(dest: Path) -> None:
    glob = pax({"path": "elsewhere", "uid": "1234", "SCHILY.xattr.user.x": "y"}, tarfile.XGLTYPE)
    unpack_blob(joined([glob, regular("a", b"1"), regular("b", b"2"), END]), dest, OCI_TAR)
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b"]
    assert (dest / "a").stat().st_uid == 0


def test_a_negative_size_is_refused(dest: Path) -> None:
    with pytest.raises(UnpackError, match="negative size"):
        unpack_blob(joined([header("f", tarfile.REGTYPE, -512), END]), dest, OCI_TAR)


def test_running_out_of_memory_is_an_unpack_error(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def starve(self: object, member: tarfile.TarInfo) -> None:
        raise MemoryError

    monkeypatch.setattr(unpack._Unpacker, "entry", starve)
    with pytest.raises(UnpackLimitError, match=r"^'a': out of memory unpacking the layer$"):
        unpack_blob(joined([regular("a"), END]), dest, OCI_TAR)
