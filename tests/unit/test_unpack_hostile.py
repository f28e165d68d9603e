"""Hostile layers: header bombs, sparse bombs and size limits, memory measured while they are read."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pycri import config
from pycri.images import unpack
from pycri.images.unpack import Limits, UnpackError, UnpackLimitError, UnpackStats, open_layer, unpack_layer
from tests.support import trees
from tests.support.hostile import (
    END,
    MTIME,
    Part,
    Repeat,
    Zeros,
    directory,
    gnu_sparse,
    gnu_sparse_map_bomb,
    gzipped,
    header,
    header_bomb,
    joined,
    long_name,
    pax,
    pax_sparse,
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


# -- item 10: sparse files and size limits -------------------------------------------------------------------

SPARSE_SIZE = 256 * MiB
SEGMENTS = [(0, 4096), (128 * MiB, 4096), (SPARSE_SIZE - 2048, 2048)]  # 10 KiB of data


def segment_data() -> bytes:
    return b"".join(bytes([65 + i]) * size for i, (_, size) in enumerate(SEGMENTS))


def assert_sparse(path: Path) -> None:
    st = path.stat()
    assert st.st_size == SPARSE_SIZE
    assert st.st_blocks * 512 < MiB  # holes are holes: 10 KiB of data, not 256 MiB of zeros
    with open(path, "rb") as f:
        for i, (offset, size) in enumerate(SEGMENTS):
            f.seek(offset)
            assert f.read(size) == bytes([65 + i]) * size
        f.seek(64 * MiB)
        assert f.read(4096) == bytes(4096)


@pytest.mark.parametrize("builder", [gnu_sparse, pax_sparse], ids=["old-gnu", "pax-1.0"])
def test_a_sparse_file_is_written_sparse(dest: Path, builder: Callable[..., list[Part]]) -> None:
    blob = gzipped([*builder("big", SPARSE_SIZE, SEGMENTS, segment_data()), regular("after", b"a"), END])
    assert len(blob) < 10 * 1024
    stats = unpack_blob(blob, dest)
    assert_sparse(dest / "big")
    assert (dest / "after").read_bytes() == b"a"
    assert stats == UnpackStats(entries=2, bytes=SPARSE_SIZE + 1, whiteouts=0)


@pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar")
@pytest.mark.parametrize("fmt", ["gnu", "posix-0.0", "posix-0.1", "posix-1.0"])
def test_sparse_files_from_gnu_tar(tmp_path: Path, dest: Path, fmt: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big", "wb") as f:
        for i, (offset, size) in enumerate(SEGMENTS):
            f.seek(offset)
            f.write(bytes([65 + i]) * size)
    archive = tmp_path / "layer.tar"
    form, _, version = fmt.partition("-")
    options = [f"--format={form}", *([f"--sparse-version={version}"] if version else [])]
    subprocess.run(["tar", "-C", str(src), "--sparse", *options, "-cf", str(archive), "big"], check=True)
    assert archive.stat().st_size < MiB
    unpack_blob(archive.read_bytes(), dest, OCI_TAR)
    assert os.listdir(dest) == ["big"]
    assert_sparse(dest / "big")


@pytest.mark.parametrize(
    ("segments", "problem"),
    [
        ([(4096, 10), (0, 10)], "out of order or overlapping"),
        ([(0, 100), (50, 10)], "out of order or overlapping"),
        ([(SPARSE_SIZE - 5, 10)], "beyond the file's size"),
    ],
)
def test_an_invalid_sparse_map_is_refused(dest: Path, segments: list[tuple[int, int]], problem: str) -> None:
    with pytest.raises(UnpackError, match=rf"^'bad': invalid sparse map: .*{problem}"):
        unpack_blob(joined([*gnu_sparse("bad", SPARSE_SIZE, segments), END]), dest, OCI_TAR)


def test_a_sparse_map_asking_for_more_data_than_the_entry_holds_is_refused(dest: Path) -> None:
    parts = gnu_sparse("greedy", SPARSE_SIZE, [(0, 1000)])
    raw = bytearray(joined(parts))
    raw[124:136] = b"%011o\0" % 10  # the header says one block of data follows, the map two
    raw[148:156] = b" " * 8
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    with pytest.raises(UnpackError, match=r"^'greedy': the sparse map refers to more data than the entry holds$"):
        unpack_blob(bytes(raw) + END, dest, OCI_TAR)


def test_a_layer_whose_files_are_over_the_byte_limit_is_refused_before_writing(dest: Path) -> None:
    limits = Limits(max_bytes=10 * MiB)
    message, _ = refused(
        gzipped([regular("small", b"s"), header("huge", tarfile.REGTYPE, 11 * MiB), END]), dest, UnpackLimitError, limits=limits
    )
    assert message == f"'huge': the layer's files come to more than {10 * MiB} bytes (images.max_layer_unpacked_bytes)"
    assert os.listdir(dest) == ["small"]


def test_a_sparse_file_counts_at_its_full_size(dest: Path) -> None:
    blob = gzipped([*gnu_sparse("big", SPARSE_SIZE, SEGMENTS, segment_data()), END])
    with pytest.raises(UnpackLimitError, match=r"^'big': the layer's files come to more than 268435455 bytes"):
        unpack_blob(blob, dest, limits=Limits(max_bytes=SPARSE_SIZE - 1))
    assert unpack_blob(blob, dest, limits=Limits(max_bytes=SPARSE_SIZE)).bytes == SPARSE_SIZE


def test_a_layer_stream_over_the_byte_limit_is_refused(dest: Path) -> None:
    blob = gzipped([regular("a", b"a"), END, Zeros(20 * MiB)])  # 20 MiB of padding after the end
    message, peak = refused(blob, dest, UnpackLimitError, limits=Limits(max_bytes=10 * MiB))
    assert message == f"layer tar stream is over {10 * MiB} bytes uncompressed (images.max_layer_unpacked_bytes)"
    assert peak < 8 * MiB


def test_a_layer_over_the_entry_limit_is_refused(dest: Path) -> None:
    entries = [regular(f"f{i}") for i in range(100)]
    assert unpack_blob(joined([*entries, END]), dest, OCI_TAR, limits=Limits(max_entries=100)).entries == 100
    trees.empty(dest)
    with pytest.raises(UnpackLimitError, match=r"^layer has more than 100 entries \(images.max_layer_entries\)$"):
        unpack_blob(joined([*entries, regular("one-more"), END]), dest, OCI_TAR, limits=Limits(max_entries=100))
    assert len(os.listdir(dest)) == 100


def test_skipped_entries_count_too(dest: Path) -> None:
    with pytest.raises(UnpackLimitError, match="more than 10 entries"):
        unpack_blob(gzipped([Repeat(header("./", tarfile.DIRTYPE), 1000), END]), dest, limits=Limits(max_entries=10))


def test_default_limits_match_the_configuration() -> None:
    images = config.ImagesConfig()
    assert Limits() == Limits(images.max_layer_unpacked_bytes, images.max_layer_entries)


# -- directories: their times are kept by inode, consecutive entries share a walk ------------------------------


def test_repeated_deep_directory_entries_cost_neither_memory_nor_walks(dest: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deep = "d/" * 2000  # 4000 bytes: within PATH_MAX
    blob = gzipped([Repeat(directory(deep), 2000), regular(deep + "f", b"x"), END])
    opened = 0
    real_open = os.open

    def counting_open(*args: Any, **kwargs: Any) -> int:
        nonlocal opened
        opened += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    peak = peak_of(lambda: unpack_blob(blob, dest))
    assert peak < 8 * MiB  # not 2000 lists of 2000 names
    assert opened < 20_000  # not 2000 per entry
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        depth = 0
        while True:
            try:
                child = os.open("d", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except FileNotFoundError:
                break
            os.close(fd)
            fd, depth = child, depth + 1
        assert depth == 2000
        assert os.stat(fd).st_mtime_ns == hostile_mtime_ns()
        assert os.stat("f", dir_fd=fd).st_size == 1
    finally:
        os.close(fd)


def hostile_mtime_ns() -> int:
    return MTIME * 10**9


def test_directory_times_survive_later_entries_and_replacements(dest: Path) -> None:
    raw = joined(
        [
            header("a/", tarfile.DIRTYPE, mode=0o755),
            header("a/b/", tarfile.DIRTYPE, mode=0o755),
            regular("a/b/f", b"1"),
            header("x/", tarfile.DIRTYPE, mode=0o755),
            header("x/y/", tarfile.DIRTYPE, mode=0o755),
            regular("x", b"now a file"),  # x/ and x/y/ are gone: their times go with them
            header("z/", tarfile.DIRTYPE, mode=0o755),  # may reuse a freed inode: gets its own time
            regular("a/g", b"2"),
            END,
        ]
    )
    unpack_blob(raw, dest, OCI_TAR)
    for path in ("a", "a/b", "z"):
        assert (dest / path).stat().st_mtime_ns == hostile_mtime_ns()
    assert (dest / "x").read_bytes() == b"now a file"
