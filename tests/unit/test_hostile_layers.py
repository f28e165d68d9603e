"""A catalogue of hostile layers, each generated here, unpacked, and either refused or neutralised,
with nothing written, changed or linked outside the layer directory.

Every layer is unpacked into ``<tmp>/box/layer`` next to ``<tmp>/box/outside``, which holds
canaries the layers aim at (by absolute path, by ``..``, through symbolic links and hard links).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycri.host.tree import walk
from pycri.images.unpack import UnpackError, open_layer, unpack_layer
from tests.support import trees
from tests.support.hostile import (
    END,
    Part,
    Repeat,
    directory,
    gnu_sparse,
    gnu_sparse_map_bomb,
    gzipped,
    hardlink,
    header,
    header_bomb,
    long_name,
    pax,
    pax_sparse_map_bomb,
    regular,
    symlink,
)

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MiB = 1 << 20


@dataclass(frozen=True)
class Refused:
    pattern: str  # in the UnpackError's message


@dataclass(frozen=True)
class Neutralised:
    check: Callable[[Path, Path], None]  # (layer, outside): what the layer looks like instead


Case = tuple[Callable[[Path], list[Part]], Refused | Neutralised]


def landed(path: str, data: bytes) -> Neutralised:
    def check(layer: Path, outside: Path) -> None:
        assert (layer / path).read_bytes() == data

    return Neutralised(check)


def sparse_kept(layer: Path, outside: Path) -> None:
    st = (layer / "big").stat()
    assert st.st_size == 16 << 30
    assert st.st_blocks * 512 < MiB


def deep_kept(layer: Path, outside: Path) -> None:
    fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        found = [name for _, _, name, st in walk(fd, str(layer), _raise) if st is None]
    finally:
        os.close(fd)
    assert found == ["f"]


def _raise(exc: OSError) -> None:
    raise exc


def absolute_landed(layer: Path, outside: Path) -> None:
    assert (layer / str(outside).lstrip("/") / "canary").read_bytes() == b"pwned"


def link_kept(layer: Path, outside: Path) -> None:
    assert (layer / "h").read_bytes() == b"pwned"
    assert os.readlink(layer / "l") == f"{outside}/canary"


def link_replaced(layer: Path, outside: Path) -> None:
    assert stat.S_ISREG((layer / "s").lstat().st_mode)
    assert (layer / "s").read_bytes() == b"pwned"


def dir_replaced(layer: Path, outside: Path) -> None:
    assert (layer / "evil" / "new").read_bytes() == b"inside"


def no_overlay_xattr(layer: Path, outside: Path) -> None:
    assert "trusted.overlay.redirect" not in os.listxattr(layer / "d")


CASES: dict[str, Case] = {
    # Paths out of the layer.
    "dotdot": (lambda o: [regular("../outside/canary", b"pwned")], Refused("escapes the destination")),
    "dotdot-nested": (lambda o: [regular("a/b/../../../outside/new", b"pwned")], Refused("escapes the destination")),
    "dotdot-directory": (lambda o: [directory("../outside/newdir/")], Refused("escapes the destination")),
    "dotdot-gnu-long-name": (
        lambda o: [long_name("x/" * 100 + "../" * 102 + "outside/canary"), regular("short", b"pwned")],
        Refused("escapes the destination"),
    ),
    "dotdot-pax-path": (lambda o: [pax({"path": "../outside/canary"}), regular("short", b"pwned")], Refused("escapes")),
    "absolute-path": (lambda o: [regular(f"{o}/canary", b"pwned")], Neutralised(absolute_landed)),
    "absolute-root": (lambda o: [regular("/etc/pycri-hostile-test", b"pwned")], landed("etc/pycri-hostile-test", b"pwned")),
    # Symbolic links leading out.
    "symlink-absolute-then-file": (
        lambda o: [symlink("evil", str(o)), regular("evil/canary", b"pwned")],
        Refused("'evil' is a symlink or not a directory"),
    ),
    "symlink-relative-then-file": (
        lambda o: [symlink("evil", "../outside"), regular("evil/new", b"pwned")],
        Refused("'evil' is a symlink or not a directory"),
    ),
    "symlink-chain-then-file": (
        lambda o: [symlink("b", str(o)), symlink("a", "b"), regular("a/new", b"pwned")],
        Refused("'a' is a symlink or not a directory"),
    ),
    "symlink-then-directory": (
        lambda o: [symlink("evil", str(o)), directory("evil/sub/")],
        Refused("'evil' is a symlink or not a directory"),
    ),
    "symlink-deeper-then-file": (
        lambda o: [directory("a/"), symlink("a/b", "../../outside"), regular("a/b/c/new", b"pwned")],
        Refused("'a/b' is a symlink or not a directory"),
    ),
    "symlink-then-whiteout": (
        lambda o: [symlink("evil", str(o)), regular("evil/.wh.canary")],
        Refused("'evil' is a symlink or not a directory"),
    ),
    "symlink-then-opaque": (
        lambda o: [symlink("evil", str(o)), regular("evil/.wh..wh..opq")],
        Refused("'evil' is a symlink or not a directory"),
    ),
    "symlink-replaced-by-file": (lambda o: [symlink("s", f"{o}/canary"), regular("s", b"pwned")], Neutralised(link_replaced)),
    "symlink-replaced-by-directory": (
        lambda o: [symlink("evil", "../outside"), directory("evil/"), regular("evil/new", b"inside")],
        Neutralised(dir_replaced),
    ),
    # Hard links to what is outside.
    "hardlink-dotdot": (lambda o: [hardlink("h", "../outside/canary")], Refused("escapes the destination")),
    "hardlink-absolute": (lambda o: [hardlink("h", f"{o}/canary")], Refused("does not exist")),
    "hardlink-through-symlink": (
        lambda o: [symlink("l", str(o)), hardlink("h", "l/canary")],
        Refused("'l' is a symlink or not a directory"),
    ),
    "hardlink-to-symlink-then-write": (
        lambda o: [symlink("l", f"{o}/canary"), hardlink("h", "l"), regular("h", b"pwned")],
        Neutralised(link_kept),  # h is a link to the link; the file replaces it
    ),
    "hardlink-to-directory": (lambda o: [directory("d/"), hardlink("h", "d")], Refused("is a directory")),
    "whiteout-of-dotdot": (lambda o: [regular(".wh..."), regular("x")], Refused("invalid whiteout name")),
    "whiteout-named-dotdot": (lambda o: [regular("a/.wh.."), regular("x")], Refused("invalid whiteout name")),
    # Deep trees.
    "deep-path-over-path-max": (lambda o: [regular("d/" * 3000 + "f", b"x")], Refused("over the 4095-byte limit")),
    "deep-path-within-path-max": (lambda o: [regular("d/" * 2000 + "f", b"x")], Neutralised(deep_kept)),
    "deep-hardlink-target": (lambda o: [hardlink("h", "d/" * 3000 + "f")], Refused("over the 4095-byte limit")),
    # Header bombs.
    "pax-header-bomb": (lambda o: header_bomb(tarfile.XHDTYPE, 64 * MiB), Refused("over the 1048576-byte limit")),
    "pax-global-header-bomb": (lambda o: header_bomb(tarfile.XGLTYPE, 64 * MiB), Refused("over the 1048576-byte limit")),
    "gnu-long-name-bomb": (lambda o: header_bomb(tarfile.GNUTYPE_LONGNAME, 64 * MiB), Refused("over the 1048576-byte limit")),
    "gnu-long-link-bomb": (lambda o: header_bomb(tarfile.GNUTYPE_LONGLINK, 64 * MiB), Refused("over the 1048576-byte limit")),
    "extension-header-chain": (
        lambda o: [Repeat(long_name("a" * 100), 10_000), regular("f"), END],
        Refused("more than 16 extension headers"),
    ),
    "huge-symlink-target": (
        lambda o: [long_name("t" * 100_000, tarfile.GNUTYPE_LONGLINK), symlink("l", "x")],
        Refused("File name too long"),
    ),
    # Sparse bombs.
    "sparse-gigabytes": (lambda o: gnu_sparse("big", 16 << 30, [(0, 10), ((16 << 30) - 10, 10)]), Neutralised(sparse_kept)),
    "sparse-terabyte": (
        lambda o: gnu_sparse("big", 1 << 40, [(0, 10), ((1 << 40) - 10, 10)]),
        Refused("the layer's files come to more than 68719476736 bytes"),
    ),
    "old-gnu-sparse-map-bomb": (lambda o: gnu_sparse_map_bomb(64 * 2048), Refused("take more than 4194304 bytes")),
    "pax-sparse-map-bomb": (lambda o: pax_sparse_map_bomb(32 * MiB), Refused("sparse map at offset 1536 is over")),
    # Metadata.
    "overlay-xattr-forged": (
        lambda o: [pax({"SCHILY.xattr.trusted.overlay.redirect": "/outside"}), directory("d/")],
        Neutralised(no_overlay_xattr),
    ),
    "negative-size": (lambda o: [header("f", tarfile.REGTYPE, -1024)], Refused("negative size")),
}


@dataclass(frozen=True)
class Seen:
    kind: int
    size: int
    digest: str
    mtime_ns: int
    inode: int


def snapshot(top: Path, skip: Path) -> dict[str, Seen]:
    """Everything under ``top`` but ``skip``, as it is."""
    seen: dict[str, Seen] = {}
    for root, dirs, files in os.walk(top):
        if Path(root) == skip.parent:
            dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                digest = os.readlink(path)
            else:
                digest = ""
            seen[str(path.relative_to(top))] = Seen(stat.S_IFMT(st.st_mode), st.st_size, digest, st.st_mtime_ns, st.st_ino)
    return seen


def inodes_in(layer: Path) -> set[int]:
    fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return {os.stat(name, dir_fd=parent, follow_symlinks=False).st_ino for parent, _, name, _ in walk(fd, str(layer), _raise)}
    finally:
        os.close(fd)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    layer, outside = tmp_path / "box" / "layer", tmp_path / "box" / "outside"
    layer.mkdir(parents=True)
    outside.mkdir()
    (outside / "canary").write_bytes(b"untouched")
    (outside / "dir").mkdir()
    (outside / "dir" / "canary").write_bytes(b"untouched")
    yield layer, outside
    trees.empty(tmp_path)


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_layer_is_refused_or_neutralised(box: tuple[Path, Path], tmp_path: Path, name: str) -> None:
    layer, outside = box
    build, expected = CASES[name]
    blob = gzipped([*build(outside), END])
    assert len(blob) < 2 * MiB
    before = snapshot(tmp_path, layer)
    absolute = Path("/etc/pycri-hostile-test")
    assert not absolute.exists()

    if isinstance(expected, Refused):
        with pytest.raises(UnpackError) as info:
            unpack_layer(open_layer(io.BytesIO(blob), OCI_GZIP), layer)
        assert expected.pattern in info.value.message
        assert len(info.value.message) <= 1100
    else:
        unpack_layer(open_layer(io.BytesIO(blob), OCI_GZIP), layer)
        expected.check(layer, outside)

    assert snapshot(tmp_path, layer) == before  # nothing outside written, changed, added or removed
    outside_inodes = {seen.inode for seen in before.values()}
    assert inodes_in(layer).isdisjoint(outside_inodes)  # nothing inside is a hard link to something outside
    assert not absolute.exists()
