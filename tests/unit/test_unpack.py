from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard

from pycri.images.unpack import DigestingReader, UnpackError, UnpackStats, open_layer, unpack_layer
from tests.support import trees

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

MTIME = 1_600_000_000

Entry = tuple[tarfile.TarInfo, bytes | None]


def info(name: str, kind: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0, **attrs: Any) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.uid = uid
    ti.gid = gid
    ti.mtime = MTIME
    for key, value in attrs.items():
        setattr(ti, key, value)
    return ti


def reg(name: str, data: bytes = b"", **kw: Any) -> Entry:
    ti = info(name, tarfile.REGTYPE, **kw)
    ti.size = len(data)
    return ti, data


def dir_(name: str, **kw: Any) -> Entry:
    kw.setdefault("mode", 0o755)
    return info(name, tarfile.DIRTYPE, **kw), None


def sym(name: str, target: str, **kw: Any) -> Entry:
    return info(name, tarfile.SYMTYPE, linkname=target, mode=0o777, **kw), None


def link(name: str, target: str) -> Entry:
    return info(name, tarfile.LNKTYPE, linkname=target), None


def tar_bytes(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def unpack(raw: bytes, dest: Path, media_type: str = OCI_TAR, **kw: Any) -> UnpackStats:
    return unpack_layer(open_layer(io.BytesIO(raw), media_type), dest, **kw)


def probe_xattr(path: Path, name: str) -> None:
    try:
        os.setxattr(path, name, b"1")
        os.removexattr(path, name)
    except OSError as e:
        pytest.skip(f"{path} does not support {name.split('.')[0]}.* xattrs: {e}")


@pytest.fixture
def dest(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "layer"
    d.mkdir()
    yield d
    trees.empty(tmp_path)


def test_regular_file_content_mode_owner_mtime(dest: Path) -> None:
    stats = unpack(tar_bytes(reg("etc/app.conf", b"hello\n", mode=0o640, uid=1234, gid=5678)), dest)
    path = dest / "etc/app.conf"
    st = path.lstat()
    assert path.read_bytes() == b"hello\n"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert st.st_mtime_ns == MTIME * 10**9
    assert stat.S_IMODE((dest / "etc").lstat().st_mode) == 0o755  # implicit parent
    assert stats == UnpackStats(entries=1, bytes=6, whiteouts=0)


def test_large_file_is_streamed(dest: Path) -> None:
    data = os.urandom(3 << 20)
    stats = unpack(gzip.compress(tar_bytes(reg("big", data))), dest, OCI_GZIP)
    assert (dest / "big").read_bytes() == data
    assert stats.bytes == len(data)


def test_directory_mtime_owner_and_mode_survive_later_entries(dest: Path) -> None:
    raw = tar_bytes(dir_("srv/", mode=0o750, uid=7, gid=8, mtime=MTIME - 100), reg("srv/a", b"a"), reg("srv/b", b"b"))
    unpack(raw, dest)
    st = (dest / "srv").lstat()
    assert stat.S_ISDIR(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o750
    assert (st.st_uid, st.st_gid) == (7, 8)
    assert st.st_mtime_ns == (MTIME - 100) * 10**9


def test_fractional_pax_mtime(dest: Path) -> None:
    ti, data = reg("f", b"x")
    ti.pax_headers = {"mtime": "1600000000.123456789", "atime": "1500000000.5"}
    unpack(tar_bytes((ti, data)), dest)
    st = (dest / "f").lstat()
    assert st.st_mtime_ns == 1600000000_123456789
    assert st.st_atime_ns == 1500000000_500000000


def test_symlink_is_created_not_followed(dest: Path) -> None:
    unpack(tar_bytes(sym("bin", "usr/bin", uid=3, gid=4), sym("abs", "/etc/passwd")), dest)
    assert os.readlink(dest / "bin") == "usr/bin"
    assert os.readlink(dest / "abs") == "/etc/passwd"
    st = (dest / "bin").lstat()
    assert stat.S_ISLNK(st.st_mode)
    assert (st.st_uid, st.st_gid) == (3, 4)
    assert st.st_mtime_ns == MTIME * 10**9


def test_hardlink_shares_inode(dest: Path) -> None:
    unpack(tar_bytes(reg("usr/bin/python3.11", b"ELF", mode=0o755), link("usr/bin/python3", "usr/bin/python3.11")), dest)
    a, b = (dest / "usr/bin/python3.11").lstat(), (dest / "usr/bin/python3").lstat()
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)
    assert a.st_nlink == 2


def test_fifo_and_devices(dest: Path) -> None:
    raw = tar_bytes(
        (info("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3), None),
        (info("dev/loop0", tarfile.BLKTYPE, mode=0o660, gid=6, devmajor=7, devminor=0), None),
        (info("run/fifo", tarfile.FIFOTYPE, mode=0o620, uid=9), None),
    )
    unpack(raw, dest)
    null = (dest / "dev/null").lstat()
    assert stat.S_ISCHR(null.st_mode)
    assert (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    loop = (dest / "dev/loop0").lstat()
    assert stat.S_ISBLK(loop.st_mode)
    assert (os.major(loop.st_rdev), loop.st_gid) == (7, 6)
    fifo = (dest / "run/fifo").lstat()
    assert stat.S_ISFIFO(fifo.st_mode)
    assert (stat.S_IMODE(fifo.st_mode), fifo.st_uid) == (0o620, 9)


def test_setuid_survives_chown(dest: Path) -> None:
    unpack(tar_bytes(reg("usr/bin/su", b"ELF", mode=0o4755, uid=1000, gid=1000), dir_("tmp/", mode=0o1777)), dest)
    st = (dest / "usr/bin/su").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert st.st_uid == 1000
    assert stat.S_IMODE((dest / "tmp").lstat().st_mode) == 0o1777


def test_user_xattr_preserved(dest: Path) -> None:
    probe_xattr(dest, "user.pycri-probe")
    ti, data = reg("f", b"x")
    ti.pax_headers = {"SCHILY.xattr.user.comment": "hi", "SCHILY.xattr.user.bin": b"\xff\x00".decode("utf-8", "surrogateescape")}
    unpack(tar_bytes((ti, data)), dest)
    assert os.getxattr(dest / "f", "user.comment") == b"hi"
    assert os.getxattr(dest / "f", "user.bin") == b"\xff\x00"


def test_overlay_xattrs_from_the_tar_are_ignored(dest: Path) -> None:
    probe_xattr(dest, "trusted.pycri-probe")
    ti, _ = dir_("d/")
    ti.pax_headers = {"SCHILY.xattr.trusted.overlay.redirect": "/elsewhere"}
    unpack(tar_bytes((ti, None)), dest)
    assert "trusted.overlay.redirect" not in os.listxattr(dest / "d")


def test_whiteout_becomes_char_device(dest: Path) -> None:
    stats = unpack(tar_bytes(dir_("etc/"), reg("etc/.wh.motd", uid=5, gid=6)), dest)
    st = (dest / "etc/motd").lstat()
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_rdev == os.makedev(0, 0)
    assert (st.st_uid, st.st_gid) == (5, 6)
    assert not (dest / "etc/.wh.motd").exists()
    assert stats.whiteouts == 1


def test_opaque_directory(dest: Path) -> None:
    probe_xattr(dest, "trusted.pycri-probe")
    stats = unpack(tar_bytes(dir_("a/"), reg("a/.wh..wh..opq"), reg("a/new", b"n")), dest)
    assert os.getxattr(dest / "a", "trusted.overlay.opaque") == b"y"
    assert sorted(os.listdir(dest / "a")) == ["new"]
    assert stats.whiteouts == 1


def test_whiteout_keeps_same_layer_entries(dest: Path) -> None:
    """OCI: a whiteout hides lower layers only; what this layer writes stays, in either order."""
    probe_xattr(dest, "trusted.pycri-probe")
    raw = tar_bytes(
        reg("f", b"mine"),
        reg(".wh.f"),
        dir_("d/"),
        reg("d/x", b"x"),
        reg(".wh.d"),
        reg(".wh.e"),
        dir_("e/"),
        reg(".wh.g"),
        reg("g", b"g"),
    )
    unpack(raw, dest)
    assert (dest / "f").read_bytes() == b"mine"
    assert (dest / "d/x").read_bytes() == b"x"
    assert os.getxattr(dest / "d", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISDIR((dest / "e").lstat().st_mode)
    assert os.getxattr(dest / "e", "trusted.overlay.opaque") == b"y"
    assert (dest / "g").read_bytes() == b"g"


def test_replacement_rules(dest: Path) -> None:
    raw = tar_bytes(
        dir_("d/"),
        reg("d/keep", b"k"),
        dir_("d/", mode=0o700),  # existing dir: kept, metadata updated
        dir_("x/"),
        reg("x/child"),
        reg("x", b"now a file"),  # non-directory replaces a directory
        sym("s", "/etc/passwd"),
        reg("s", b"replaced"),  # a file replaces a symlink, not written through it
    )
    unpack(raw, dest)
    assert (dest / "d/keep").read_bytes() == b"k"
    assert stat.S_IMODE((dest / "d").lstat().st_mode) == 0o700
    assert (dest / "x").read_bytes() == b"now a file"
    assert stat.S_ISREG((dest / "s").lstat().st_mode)
    assert (dest / "s").read_bytes() == b"replaced"


def test_a_deep_directory_replaced_by_a_file(dest: Path) -> None:
    unpack(tar_bytes(reg("d/" * 1500 + "f", b"x"), reg("d", b"now a file")), dest)
    assert (dest / "d").read_bytes() == b"now a file"


def test_uid_map(dest: Path) -> None:
    def shift(uid: int, gid: int) -> tuple[int, int]:
        return uid + 100000, gid + 200000

    unpack(tar_bytes(reg("f", uid=1, gid=2), sym("l", "f", uid=3, gid=4)), dest, uid_map=shift)
    assert ((dest / "f").lstat().st_uid, (dest / "f").lstat().st_gid) == (100001, 200002)
    assert ((dest / "l").lstat().st_uid, (dest / "l").lstat().st_gid) == (100003, 200004)


def test_absolute_and_dot_paths_land_inside(dest: Path) -> None:
    unpack(tar_bytes(dir_("./"), reg("/abs/path", b"in"), reg("./rel/./x", b"x")), dest)
    assert (dest / "abs/path").read_bytes() == b"in"
    assert (dest / "rel/x").read_bytes() == b"x"


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "a/.."])
def test_dotdot_rejected(tmp_path: Path, dest: Path, name: str) -> None:
    with pytest.raises(UnpackError, match="escape"):
        unpack(tar_bytes(reg(name, b"x")), dest)
    assert not (tmp_path / "escape").exists()


def test_no_write_through_symlink_to_root(dest: Path) -> None:
    before = Path("/etc/passwd").read_bytes()
    with pytest.raises(UnpackError, match="symlink"):
        unpack(tar_bytes(sym("evil", "/"), reg("evil/etc/passwd", b"root::0:0::/:/bin/sh\n")), dest)
    assert Path("/etc/passwd").read_bytes() == before


@pytest.mark.parametrize(
    ("case", "raises"),
    [
        ("absolute-link", True),
        ("relative-link", True),
        ("whiteout-through-link", True),
        ("hardlink-through-link", True),
        ("dir-replaces-link", False),
    ],
)
def test_no_write_through_symlink_outside(tmp_path: Path, dest: Path, case: str, raises: bool) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary"
    canary.write_bytes(b"untouched")
    raw = {
        "absolute-link": tar_bytes(sym("evil", str(outside)), reg("evil/canary", b"pwned")),
        "relative-link": tar_bytes(sym("evil", "../outside"), reg("evil/new", b"pwned")),
        "whiteout-through-link": tar_bytes(sym("evil", "../outside"), reg("evil/.wh.canary")),
        "hardlink-through-link": tar_bytes(reg("f"), sym("evil", str(outside)), link("evil/canary2", "f")),
        "dir-replaces-link": tar_bytes(sym("evil", "../outside"), dir_("evil/"), reg("evil/new", b"inside")),
    }[case]
    if raises:
        with pytest.raises(UnpackError, match="'evil' is a symlink or not a directory"):
            unpack(raw, dest)
    else:
        unpack(raw, dest)
        assert (dest / "evil/new").read_bytes() == b"inside"
    assert canary.read_bytes() == b"untouched"
    assert sorted(os.listdir(outside)) == ["canary"]


def test_hardlink_outside_rejected(dest: Path) -> None:
    with pytest.raises(UnpackError, match="escapes"):
        unpack(tar_bytes(link("passwd", "../../etc/passwd")), dest)
    assert not (dest / "passwd").exists()


def test_hardlink_through_symlink_rejected(dest: Path) -> None:
    with pytest.raises(UnpackError, match="symlink"):
        unpack(tar_bytes(sym("etc", "/etc"), link("passwd", "etc/passwd")), dest)
    assert not (dest / "passwd").exists()


def test_hardlink_absolute_target_is_inside(dest: Path) -> None:
    unpack(tar_bytes(reg("etc/passwd", b"mine"), link("copy", "/etc/passwd")), dest)
    assert (dest / "copy").read_bytes() == b"mine"
    with pytest.raises(UnpackError, match="does not exist"):
        unpack(tar_bytes(link("x", "missing")), dest)


def test_truncated_gzip_rejected(dest: Path) -> None:
    gz = gzip.compress(tar_bytes(reg("f", os.urandom(200_000))))
    with pytest.raises(UnpackError, match="gzip"):
        unpack(gz[: len(gz) // 2], dest, OCI_GZIP)
    with pytest.raises(UnpackError, match="gzip"):
        unpack(gz[:-4], dest, DOCKER_GZIP)  # only the trailer (length) is missing


def test_not_gzip_rejected(dest: Path) -> None:
    with pytest.raises(UnpackError, match="gzip"):
        unpack(tar_bytes(reg("f", b"x")), dest, OCI_GZIP)


def test_corrupt_zstd_rejected(dest: Path) -> None:
    zst = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(tar_bytes(reg("f", os.urandom(100_000)))))
    zst[len(zst) // 2] ^= 0xFF  # inside the file's data: caught by the frame checksum
    with pytest.raises(UnpackError, match="zstd"):
        unpack(bytes(zst), dest, OCI_ZSTD)
    with pytest.raises(UnpackError, match="zstd"):
        unpack(b"definitely not zstd" * 10, dest, OCI_ZSTD)


def test_truncated_zstd_rejected(dest: Path) -> None:
    zst = zstandard.ZstdCompressor().compress(tar_bytes(reg("f", os.urandom(100_000))))
    with pytest.raises(UnpackError):
        unpack(zst[: len(zst) // 2], dest, OCI_ZSTD)


@pytest.mark.parametrize("where", ["in-header", "in-data", "before-second", "before-end-marker"])
def test_truncated_tar_rejected(dest: Path, where: str) -> None:
    raw = tar_bytes(reg("a", b"a" * 2000), reg("b", b"b"))
    with tarfile.open(fileobj=io.BytesIO(raw)) as tf:
        a, b = tf.getmembers()
    cut = {"in-header": 100, "in-data": a.offset_data + 1000, "before-second": b.offset, "before-end-marker": b.offset_data + 512}
    with pytest.raises(UnpackError, match="truncated"):
        unpack(raw[: cut[where]], dest)


def test_garbage_header_rejected(dest: Path) -> None:
    raw = bytearray(tar_bytes(reg("a", b"a"), reg("b", b"b")))
    end = len(tar_bytes(reg("a", b"a"))) - 10240 + 1024  # where the first archive's end marker was
    raw[end : end + 512] = b"x" * 512
    with pytest.raises(UnpackError):
        unpack(bytes(raw), dest)


def test_empty_stream_rejected(dest: Path) -> None:
    with pytest.raises(UnpackError):
        unpack(b"", dest)


def test_unknown_media_type_rejected() -> None:
    with pytest.raises(UnpackError, match="unsupported layer media type"):
        open_layer(io.BytesIO(b""), "application/vnd.oci.image.layer.v1.tar+bzip2")


def test_missing_destination_rejected(tmp_path: Path) -> None:
    with pytest.raises(UnpackError, match="destination"):
        unpack(tar_bytes(), tmp_path / "nope")


@pytest.mark.parametrize("media_type", [OCI_TAR, OCI_GZIP, OCI_ZSTD, DOCKER_GZIP, NONDIST_ZSTD])
def test_digesting_reader_covers_the_whole_uncompressed_stream(dest: Path, media_type: str) -> None:
    raw = tar_bytes(dir_("d/"), reg("d/f", b"data" * 1000), sym("l", "d/f")) + b"\0" * 4096  # extra padding
    if media_type.endswith("gzip"):
        blob = gzip.compress(raw)
    elif media_type.endswith("zstd"):
        blob = zstandard.ZstdCompressor().compress(raw[:5000]) + zstandard.ZstdCompressor().compress(raw[5000:])
    else:
        blob = raw
    reader = DigestingReader(open_layer(io.BytesIO(blob), media_type))
    stats = unpack_layer(reader, dest)
    assert reader.hexdigest() == hashlib.sha256(raw).hexdigest()
    assert reader.digest() == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert reader.size == len(raw)
    assert stats == UnpackStats(entries=3, bytes=4000, whiteouts=0)
    assert (dest / "d/f").read_bytes() == b"data" * 1000


@pytest.mark.parametrize("size", [512, 1024, 10240])
def test_empty_layer(dest: Path, size: int) -> None:
    assert unpack(b"\0" * size, dest) == UnpackStats()
    assert os.listdir(dest) == []


def test_xattrs_on_symlink_and_device(dest: Path) -> None:
    probe_xattr(dest, "trusted.pycri-probe")
    link_ti, _ = sym("l", "/nowhere")
    dev_ti = info("null", tarfile.CHRTYPE, devmajor=1, devminor=3)
    for ti in (link_ti, dev_ti):
        ti.pax_headers = {"SCHILY.xattr.trusted.note": "v"}
    unpack(tar_bytes((link_ti, None), (dev_ti, None)), dest)
    assert os.getxattr(dest / "l", "trusted.note", follow_symlinks=False) == b"v"
    assert os.getxattr(dest / "null", "trusted.note") == b"v"


def test_implicit_parents_ignore_umask(dest: Path) -> None:
    old = os.umask(0o077)
    try:
        unpack(tar_bytes(reg("a/b/c", b"x")), dest)
    finally:
        os.umask(old)
    assert stat.S_IMODE((dest / "a/b").lstat().st_mode) == 0o755
