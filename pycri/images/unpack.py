"""Unpack one OCI/Docker image layer into a directory used as an overlayfs lower dir.

Safety approach: the layer is untrusted. Entry names are normalized like tar
does (leading ``/`` stripped, ``.`` dropped) and any ``..`` component is
rejected. Every entry is created with ``*at`` calls relative to a descriptor
of its parent directory, and that descriptor is reached by an openat-style walk
from a descriptor of ``dest`` with ``O_NOFOLLOW | O_DIRECTORY`` at each step,
so nothing is ever written *through* a symlink, not even one this layer just
created (the symlink itself may point anywhere; it is just a link). Hardlink
targets are resolved the same way and must already exist inside ``dest``.
Final components are never followed either (``O_NOFOLLOW``, ``lchown``,
``lsetxattr``, ``utimensat(AT_SYMLINK_NOFOLLOW)``).

Whiteouts become overlayfs whiteouts: ``.wh.<name>`` a 0/0 character device,
``.wh..wh..opq`` the ``trusted.overlay.opaque=y`` xattr. Following the OCI
spec, a whiteout only hides what *lower* layers hold: an entry this layer
writes stays, before or after its whiteout (a directory is then made opaque,
which is how overlayfs says "this layer's version, nothing from below").

The tar is read forward only, file data is copied in chunks, and the rest of
the stream is drained at the end so a ``DigestingReader`` sees every
uncompressed byte. Truncated or corrupt input raises ``UnpackError``.

Memory stays bounded whatever the layer says. ``tarfile`` reads each extension
header (PAX ``x``/``g``, GNU long name ``L`` and long link ``K``) whole, so its
size is checked on the raw 512-byte header first and refused over 1 MiB, Go's
``archive/tar`` limit (containerd's reader); all the headers and the sparse map of
one entry may take 4 MiB at most, and 16 extension headers at most may lead one
entry. Global PAX headers are ignored, as containerd does. Going over a limit, or
running out of memory, raises ``UnpackLimitError``.
"""

from __future__ import annotations

import decimal
import errno
import gzip
import hashlib
import io
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO, Protocol, Self, TypeVar, cast

import zstandard

from pycri.errors import Code, CRIError
from pycri.host import tree
from pycri.host.tree import remove_tree

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "MAX_ENTRY_HEADER_BYTES",
    "MAX_EXTENSION_HEADERS",
    "MAX_HEADER_BYTES",
    "MEDIA_TYPES",
    "DigestingReader",
    "IdMap",
    "Limits",
    "Readable",
    "UnpackError",
    "UnpackLimitError",
    "UnpackStats",
    "open_layer",
    "unpack_layer",
]

_OCI = "application/vnd.oci.image.layer"
_DOCKER = "application/vnd.docker.image.rootfs"
MEDIA_TYPES: dict[str, str] = {
    f"{_OCI}.v1.tar": "tar",
    f"{_OCI}.v1.tar+gzip": "gzip",
    f"{_OCI}.v1.tar+zstd": "zstd",
    f"{_OCI}.nondistributable.v1.tar": "tar",
    f"{_OCI}.nondistributable.v1.tar+gzip": "gzip",
    f"{_OCI}.nondistributable.v1.tar+zstd": "zstd",
    f"{_DOCKER}.diff.tar.gzip": "gzip",
    f"{_DOCKER}.foreign.diff.tar.gzip": "gzip",
    f"{_DOCKER}.diff.tar.zstd": "zstd",
    f"{_DOCKER}.diff.tar": "tar",  # not in Docker's spec, but containerd and containers/image accept it
}
"""Layer media type -> compression ("tar" means none)."""

_T = TypeVar("_T")

IdMap = Callable[[int, int], tuple[int, int]]
"""Maps the (uid, gid) in the tar to the (uid, gid) stored on disk; raise ValueError or KeyError if unmapped."""

MAX_HEADER_BYTES = 1 << 20
"""One PAX or GNU long name/link header, as Go's archive/tar (maxSpecialFileSize)."""
MAX_ENTRY_HEADER_BYTES = 4 << 20
"""Everything read to parse one entry's headers: extension headers and sparse map together."""
MAX_EXTENSION_HEADERS = 16
"""Extension headers before one entry (tar writers put three at most: x, L, K)."""

_CHUNK = 1 << 20
_PATH_MAX = 4095  # bytes of a Linux path, without its NUL
_MAX_MESSAGE = 1024
_EXTENSIONS = {
    tarfile.XHDTYPE: "PAX extended header",
    tarfile.SOLARIS_XHDTYPE: "PAX extended header",
    tarfile.XGLTYPE: "PAX global header",
    tarfile.GNUTYPE_LONGNAME: "GNU long name",
    tarfile.GNUTYPE_LONGLINK: "GNU long link name",
}
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_WH = ".wh."
_WH_META = ".wh..wh."
_OPAQUE = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
_EOF_HEADER: type[Exception] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
_READ_ERRORS = (OSError, EOFError, ValueError, zlib.error, zstandard.ZstdError)


class UnpackError(CRIError):
    """The layer is malformed, hostile or could not be written; the message is kept short whatever names it quotes."""

    def __init__(self, message: str) -> None:
        if len(message) > _MAX_MESSAGE:  # the start names the entry, the end says what is wrong
            half = (_MAX_MESSAGE - 40) // 2
            message = f"{message[:half]} [...{len(message) - 2 * half} characters...] {message[-half:]}"
        super().__init__(message)


class UnpackLimitError(UnpackError):
    """The layer goes over a limit (header sizes, unpacked size, entry count) or over the memory there is."""

    code = Code.RESOURCE_EXHAUSTED


@dataclass(frozen=True)
class Limits:
    """How much one layer may hold; the defaults are those of the configuration's ``[images]``."""

    max_bytes: int = 64 << 30
    """The uncompressed tar stream, and the sizes of its files (a sparse file's at its full size), each at most."""
    max_entries: int = 2_000_000


@dataclass
class UnpackStats:
    entries: int = 0
    bytes: int = 0
    whiteouts: int = 0


class Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Decompressing(io.RawIOBase):
    """A decompressor whose failures are ``UnpackError``s naming the compression."""

    def __init__(self, inner: gzip.GzipFile | zstandard.ZstdDecompressionReader, kind: str) -> None:
        super().__init__()
        self._inner = inner
        self._kind = kind

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        try:
            return int(self._inner.readinto(buffer))
        except _READ_ERRORS as e:
            raise UnpackError(f"layer {self._kind} stream is corrupt or truncated: {e}") from e

    def close(self) -> None:
        self._inner.close()
        super().close()


def open_layer(fileobj: BinaryIO, media_type: str) -> BinaryIO:
    """Return the uncompressed tar stream of a layer blob, by its media type."""
    kind = MEDIA_TYPES.get(media_type)
    if kind is None:
        raise UnpackError(f"unsupported layer media type {media_type!r}")
    if kind == "tar":
        return fileobj
    inner: gzip.GzipFile | zstandard.ZstdDecompressionReader
    if kind == "gzip":
        inner = gzip.GzipFile(fileobj=fileobj, mode="rb")
    else:
        inner = zstandard.ZstdDecompressor().stream_reader(fileobj, read_across_frames=True, closefd=False)
    return io.BufferedReader(_Decompressing(inner, kind), _CHUNK)


class DigestingReader:
    """Pass-through reader computing the sha256 of everything read (the layer's diff_id)."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self._hash = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1, /) -> bytes:
        data = self._stream.read(size)
        self._hash.update(data)
        self.size += len(data)
        return data

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def digest(self) -> str:
        """``sha256:<hex>``, comparable with a diff_id from the image config."""
        return f"sha256:{self._hash.hexdigest()}"


class _Source:
    """What tarfile reads: the layer, forward only, with the position and forward seeks tarfile needs.

    Read failures become ``UnpackError``. While the headers of an entry are parsed
    (``budget`` set) what is read is counted against ``MAX_ENTRY_HEADER_BYTES``.
    """

    def __init__(self, stream: Readable, max_bytes: int) -> None:
        self._stream = stream
        self._max_bytes = max_bytes
        self._position = 0
        self.budget: int | None = None
        self.entry_at = 0  # where the headers being parsed start
        self.extensions = 0  # extension headers seen before the entry at entry_at

    def _take(self, size: int) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            try:
                data = self._stream.read(min(wanted, _CHUNK))
            except _READ_ERRORS as e:
                raise UnpackError(f"reading layer: {e}") from e
            if not data:
                break
            parts.append(data)
            wanted -= len(data)
        self._position += size - wanted
        if self._position > self._max_bytes:
            raise UnpackLimitError(
                f"layer tar stream is over {self._max_bytes} bytes uncompressed (images.max_layer_unpacked_bytes)"
            )
        return b"".join(parts)

    def read(self, size: int, /) -> bytes:
        if self.budget is not None:
            if size > self.budget:
                raise UnpackLimitError(
                    f"layer tar stream: the headers of the entry at offset {self.entry_at} (extended headers, sparse map) "
                    f"take more than {MAX_ENTRY_HEADER_BYTES} bytes"
                )
            self.budget -= size
        return self._take(size)

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = os.SEEK_SET, /) -> int:
        if whence != os.SEEK_SET or position < self._position:
            raise UnpackError(f"layer tar stream: cannot go back from offset {self._position} to {position}")
        while position > self._position and self._take(min(position - self._position, _CHUNK)):
            pass
        return self._position

    def seekable(self) -> bool:
        return False


class _IgnoredGlobals(dict[str, str]):
    """The archive's global PAX headers: none kept (containerd ignores them too), so they cannot pile up."""

    def __setitem__(self, key: str, value: str) -> None:
        pass


class _Archive(tarfile.TarFile):
    members: list[tarfile.TarInfo]  # undocumented in typeshed
    end: Exception | None = None  # why tarfile stopped: must be the end-of-archive block


class _Oversized(Exception):
    def __init__(self, kind: str, size: int) -> None:
        super().__init__(kind, size)
        self.kind = kind
        self.size = size


class _Header(tarfile.TarInfo):
    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
        """The raw header checked before tarfile reads what follows it."""
        info = super().frombuf(buf, encoding, errors)
        if info.size < 0:
            raise UnpackError(f"layer tar stream: header {info.name[:100]!r} has a negative size")
        kind = _EXTENSIONS.get(info.type)
        if kind is not None and info.size > MAX_HEADER_BYTES:
            raise _Oversized(kind, info.size)
        return info

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> Self:
        source = tf.fileobj
        if not isinstance(source, _Source):
            return super().fromtarfile(tf)
        first = source.budget is None  # not an extension header's next one
        if first:
            source.budget, source.entry_at, source.extensions = MAX_ENTRY_HEADER_BYTES, source.tell(), 0
        else:
            source.extensions += 1
            if source.extensions > MAX_EXTENSION_HEADERS:
                raise UnpackLimitError(
                    f"layer tar stream: more than {MAX_EXTENSION_HEADERS} extension headers "
                    f"before the entry at offset {source.entry_at}"
                )
        try:
            return super().fromtarfile(tf)
        except _Oversized as e:
            at = source.tell() - tarfile.BLOCKSIZE
            raise UnpackLimitError(
                f"layer tar stream: {e.kind} of {e.size} bytes at offset {at} is over the {MAX_HEADER_BYTES}-byte limit"
            ) from None
        except Exception as e:
            if isinstance(tf, _Archive):
                tf.end = e
            raise
        finally:
            if first:
                source.budget = None

    def _proc_gnusparse_10(self, next: tarfile.TarInfo, pax_headers: dict[str, str], tf: tarfile.TarFile) -> None:
        """A GNU 1.0 sparse map (which leads the entry's data), in linear time and within MAX_HEADER_BYTES as Go reads it.

        Overrides tarfile's own, which splits its buffer once per number (quadratic) and knows no limit.
        """
        fileobj = tf.fileobj
        assert fileobj is not None
        at = fileobj.tell()
        data = bytearray()
        newlines, count = 0, -1
        while count < 0 or newlines < 1 + 2 * count:
            if len(data) >= MAX_HEADER_BYTES:
                raise UnpackLimitError(
                    f"layer tar stream: the sparse map at offset {at} is over the {MAX_HEADER_BYTES}-byte limit"
                )
            block = fileobj.read(tarfile.BLOCKSIZE)
            if len(block) != tarfile.BLOCKSIZE:
                raise tarfile.ReadError(f"unexpected end of data in the sparse map at offset {at}")
            data += block
            newlines += block.count(b"\n")
            if count < 0 and newlines:
                count = int(data[: data.index(b"\n")])
                if count < 0:
                    raise tarfile.ReadError(f"negative entry count in the sparse map at offset {at}")
        numbers = [int(field) for field in data.split(b"\n", 1 + 2 * count)[1 : 1 + 2 * count]]
        next.offset_data = fileobj.tell()
        next.sparse = list(zip(numbers[::2], numbers[1::2], strict=True))  # type: ignore[assignment]  # typeshed says bytes


def _raise(exc: OSError) -> None:
    raise exc


def _split(name: str, member: str, what: str = "path") -> list[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnpackError(f"{member[:200]!r}: {what} {name[:200]!r} escapes the destination ('..' component)")
    size = len("/".join(parts).encode("utf-8", "surrogateescape"))
    if size > _PATH_MAX:  # as containerd, which opens whole paths: nothing could use such a path
        raise UnpackError(f"{member[:200]!r}: {what} is {size} bytes long, over the {_PATH_MAX}-byte limit of Linux paths")
    return parts


def _ns(value: object, default: int = 0) -> int:
    try:
        return int(decimal.Decimal(str(value)).scaleb(9))
    except (ArithmeticError, ValueError):
        return default


def _times(m: tarfile.TarInfo) -> tuple[int, int]:
    """(atime, mtime) in ns; PAX headers keep sub-second precision."""
    mtime = _ns(m.pax_headers.get("mtime", m.mtime))
    return (_ns(m.pax_headers["atime"], mtime) if "atime" in m.pax_headers else mtime), mtime


def _xattrs(m: tarfile.TarInfo) -> Iterator[tuple[str, bytes]]:
    for key, value in m.pax_headers.items():
        # trusted.overlay.* would let a layer forge overlayfs metadata (redirects, metacopy): never taken from the tar.
        if key.startswith(_XATTR_PAX) and not key.startswith(_XATTR_PAX + "trusted.overlay."):
            yield key[len(_XATTR_PAX) :], value.encode("utf-8", "surrogateescape")


class _Unpacker:
    def __init__(self, archive: _Archive, source: _Source, root: int, uid_map: IdMap | None, limits: Limits) -> None:
        self.archive = archive
        self.source = source
        self.root = root
        self.uid_map = uid_map
        self.limits = limits
        self.stats = UnpackStats()
        # Times of the directories entries made, by (device, inode): a layer can name one deep directory
        # over and over, and its path would be kept each time.
        self.dir_times: dict[tuple[int, int], tuple[int, int]] = {}
        self.last_parent: tuple[list[str], int] | None = None  # the previous entry's parent and a descriptor of it

    def close(self) -> None:
        if self.last_parent is not None:
            os.close(self.last_parent[1])
            self.last_parent = None

    def parent(self, parts: list[str], member: str) -> int:
        """A new descriptor of directory ``parts``, made if missing; entries in one directory share one walk."""
        if self.last_parent is not None and self.last_parent[0] == parts:
            return os.dup(self.last_parent[1])
        fd = self.walk(parts, member, create=True)
        self.close()
        self.last_parent = (parts, os.dup(fd))
        return fd

    def walk(self, parts: list[str], member: str, *, create: bool) -> int:
        """A new descriptor of directory ``parts`` under root, never crossing a symlink."""
        fd = os.dup(self.root)
        try:
            for i, part in enumerate(parts):
                made = False
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise UnpackError(f"{member!r}: {'/'.join(parts[: i + 1])!r} does not exist") from None
                    os.mkdir(part, 0o755, dir_fd=fd)
                    nfd, made = os.open(part, _DIR_FLAGS, dir_fd=fd), True
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    raise UnpackError(f"{member!r}: {'/'.join(parts[: i + 1])!r} is a symlink or not a directory") from None
                os.close(fd)
                fd = nfd
                if made:
                    os.chmod(fd, 0o755)  # mkdir's mode is subject to the umask
        except BaseException:
            os.close(fd)
            raise
        return fd

    def ids(self, m: tarfile.TarInfo) -> tuple[int, int]:
        if self.uid_map is None:
            return m.uid, m.gid
        try:
            return self.uid_map(m.uid, m.gid)
        except (KeyError, ValueError) as e:
            raise UnpackError(f"{m.name!r}: uid {m.uid} / gid {m.gid} cannot be mapped: {e}") from e

    def entry(self, m: tarfile.TarInfo) -> None:
        parts = _split(m.name, m.name)
        if not parts:
            return  # the root itself: dest keeps its own metadata (as containerd does)
        if any(p.startswith(_WH_META) for p in parts) and parts[-1] != _OPAQUE:
            return  # aufs bookkeeping (.wh..wh.plnk and such), meaningless here
        self.stats.entries += 1
        parent = self.parent(parts[:-1], m.name)
        try:
            if parts[-1].startswith(_WH):
                self.whiteout(m, parent, parts[-1])
            else:
                self.create(m, parent, parts)
        finally:
            os.close(parent)

    def whiteout(self, m: tarfile.TarInfo, parent: int, base: str) -> None:
        self.stats.whiteouts += 1
        if base == _OPAQUE:
            os.setxattr(parent, _OPAQUE_XATTR, b"y")
            return
        name = base[len(_WH) :]
        if name in ("", ".", ".."):
            raise UnpackError(f"{m.name!r}: invalid whiteout name")
        try:
            st = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
            os.chown(name, *self.ids(m), dir_fd=parent, follow_symlinks=False)
            return
        # This layer wrote `name` itself, and that entry stays; it already hides a lower non-directory.
        if stat.S_ISDIR(st.st_mode):
            self.set_opaque(parent, name)

    def set_opaque(self, parent: int, name: str) -> None:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        try:
            os.setxattr(fd, _OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)

    def make_room(self, parent: int, base: str, is_dir: bool) -> tuple[bool, bool]:
        """Clear the way for a new entry: (existing directory kept, a whiteout was replaced)."""
        try:
            st = os.stat(base, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return False, False
        if stat.S_ISDIR(st.st_mode):
            if is_dir:
                return True, False
            self.close()  # the previous entry's directory may be in what goes
            self.forget_times(parent, base, st)
            remove_tree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)
        return False, stat.S_ISCHR(st.st_mode) and st.st_rdev == 0

    def forget_times(self, parent: int, base: str, st: os.stat_result) -> None:
        """The directories below ``base`` are about to go: their inodes may come back as other directories."""
        if not self.dir_times:
            return
        self.dir_times.pop((st.st_dev, st.st_ino), None)
        fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
        try:
            for _, _, _, below in tree.walk(fd, base, _raise):
                if below is not None:
                    self.dir_times.pop((below.st_dev, below.st_ino), None)
        finally:
            os.close(fd)

    def create(self, m: tarfile.TarInfo, parent: int, parts: list[str]) -> None:
        base = parts[-1]
        if m.islnk():
            self.hardlink(m, parent, parts)
            return
        if not (m.isreg() or m.isdir() or m.issym() or m.ischr() or m.isblk() or m.isfifo()):
            raise UnpackError(f"{m.name!r}: unsupported tar entry type {m.type!r}")
        segments: list[tuple[int, int]] = []
        if m.isreg():
            if self.stats.bytes + m.size > self.limits.max_bytes:
                raise UnpackLimitError(
                    f"{m.name!r}: the layer's files come to more than {self.limits.max_bytes} bytes "
                    "(images.max_layer_unpacked_bytes)"
                )
            segments = self.segments(m)
        kept, was_whiteout = self.make_room(parent, base, m.isdir())
        if m.isreg():
            fd = os.open(base, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=parent)
            try:
                self.write(m, fd, segments)
                self.metadata(m, parent, base, fd)
            finally:
                os.close(fd)
            self.stats.bytes += m.size
        elif m.isdir():
            if not kept:
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = os.open(base, _DIR_FLAGS, dir_fd=parent)
            try:
                self.metadata(m, parent, base, fd, times=False)
                if was_whiteout:  # `.wh.<dir>` then `<dir>/`: nothing from below shows through
                    os.setxattr(fd, _OPAQUE_XATTR, b"y")
                made = os.fstat(fd)
            finally:
                os.close(fd)
            self.dir_times[(made.st_dev, made.st_ino)] = _times(m)
        elif m.issym():
            os.symlink(m.linkname, base, dir_fd=parent)
            self.metadata(m, parent, base, None, symlink=True)
        else:
            if m.isfifo():
                os.mkfifo(base, 0o600, dir_fd=parent)
            else:
                kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                os.mknod(base, kind | 0o600, os.makedev(m.devmajor, m.devminor), dir_fd=parent)
            self.metadata(m, parent, base, None)

    def segments(self, m: tarfile.TarInfo) -> list[tuple[int, int]]:
        """Where the entry's data goes in the file, (offset, size) in order: one run, or a sparse map's runs."""
        sparse = cast("list[tuple[int, int]] | None", m.sparse)
        if sparse is None:
            return [(0, m.size)]
        runs: list[tuple[int, int]] = []
        end = 0
        for offset, size in sparse:
            if offset < 0 or size < 0 or offset + size > m.size:
                raise UnpackError(f"{m.name!r}: invalid sparse map: {size} bytes at {offset} go beyond the file's size {m.size}")
            if size == 0:
                continue  # GNU tar ends some maps with (file size, 0)
            if offset < end:
                raise UnpackError(f"{m.name!r}: invalid sparse map: {size} bytes at {offset} are out of order or overlapping")
            runs.append((offset, size))
            end = offset + size
        if m.offset_data + sum(size for _, size in runs) > self.archive.offset:
            raise UnpackError(f"{m.name!r}: the sparse map refers to more data than the entry holds")
        return runs

    def write(self, m: tarfile.TarInfo, fd: int, segments: list[tuple[int, int]]) -> None:
        """The entry's data into ``fd``: a sparse file's holes are sought over, never written."""
        self.source.seek(m.offset_data)
        position = 0
        for offset, size in segments:
            if offset != position:
                os.lseek(fd, offset, os.SEEK_SET)
            left = size
            while left:
                chunk = memoryview(self.source.read(min(left, _CHUNK)))
                if not chunk:
                    raise UnpackError(f"{m.name!r}: layer tar stream is truncated in the file's data")
                left -= len(chunk)
                while chunk:
                    chunk = chunk[os.write(fd, chunk) :]
            position = offset + size
        if position != m.size:
            os.ftruncate(fd, m.size)  # a hole up to the end

    def hardlink(self, m: tarfile.TarInfo, parent: int, parts: list[str]) -> None:
        target = _split(m.linkname, m.name, "hardlink target")
        if not target:
            raise UnpackError(f"{m.name!r}: hardlink to the root directory")
        if target == parts:
            return
        tparent = self.walk(target[:-1], m.name, create=False)
        try:
            try:
                st = os.stat(target[-1], dir_fd=tparent, follow_symlinks=False)
            except FileNotFoundError:
                raise UnpackError(f"{m.name!r}: hardlink target {m.linkname!r} does not exist") from None
            if stat.S_ISDIR(st.st_mode):
                raise UnpackError(f"{m.name!r}: hardlink target {m.linkname!r} is a directory")
            self.make_room(parent, parts[-1], False)
            os.link(target[-1], parts[-1], src_dir_fd=tparent, dst_dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(tparent)

    def metadata(
        self, m: tarfile.TarInfo, parent: int, base: str, fd: int | None, *, symlink: bool = False, times: bool = True
    ) -> None:
        """Owner first (chown clears setuid bits and file capabilities), then xattrs, mode, times."""
        uid, gid = self.ids(m)
        if fd is not None:
            os.chown(fd, uid, gid)
        else:
            os.chown(base, uid, gid, dir_fd=parent, follow_symlinks=False)
        for key, value in _xattrs(m):
            try:
                if fd is not None:
                    os.setxattr(fd, key, value)
                else:  # no lsetxattrat: go through the parent descriptor's /proc link
                    os.setxattr(f"/proc/self/fd/{parent}/{base}", key, value, follow_symlinks=False)
            except OSError as e:
                if not (key.startswith("security.") and e.errno == errno.EOPNOTSUPP):
                    raise UnpackError(f"{m.name!r}: setting xattr {key!r}: {e.strerror}") from e
        if not symlink:
            mode = stat.S_IMODE(m.mode)
            if fd is not None:
                os.chmod(fd, mode)
            else:
                os.chmod(base, mode, dir_fd=parent)  # just created by us, not a symlink
        if times:
            if fd is not None:
                os.utime(fd, ns=_times(m))
            else:
                os.utime(base, ns=_times(m), dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory times last (writing inside a directory changes its mtime), in one walk of the layer."""
        self.close()
        if not self.dir_times:
            return
        for parent, _, name, st in tree.walk(self.root, "<layer>", _raise):
            if st is not None and (times := self.dir_times.get((st.st_dev, st.st_ino))) is not None:
                os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)


def _headers(read: Callable[[], _T], source: _Source) -> _T:
    """``read`` parses tar headers: whatever it raises is an ``UnpackError``."""
    try:
        return read()
    except UnpackError:
        raise
    except tarfile.TarError as e:
        raise UnpackError(f"layer tar stream is corrupt or truncated: {e}") from e
    except MemoryError as e:
        raise UnpackLimitError(f"layer tar stream: out of memory reading the headers at offset {source.entry_at}") from e
    except Exception as e:  # tarfile lets IndexError, ValueError... out of malformed headers
        raise UnpackError(f"layer tar stream is corrupt or truncated at offset {source.entry_at}: {type(e).__name__}: {e}") from e


def unpack_layer(stream: Readable, dest: Path, *, uid_map: IdMap | None = None, limits: Limits = Limits()) -> UnpackStats:
    """Extract the uncompressed layer tar ``stream`` into ``dest`` (an existing, normally empty directory).

    The stream is read to its end, so a ``DigestingReader`` wrapped around it
    holds the layer's diff_id afterwards. Raises ``UnpackError`` (``UnpackLimitError``
    for a layer over one of ``limits``).
    """
    try:
        root = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UnpackError(f"opening unpack destination {str(dest)!r}: {e.strerror}") from e
    source = _Source(stream, limits.max_bytes)
    try:
        archive = _headers(
            lambda: _Archive(
                fileobj=cast(IO[bytes], source),
                mode="r",
                tarinfo=_Header,
                encoding="utf-8",
                errors="surrogateescape",
                pax_headers=_IgnoredGlobals(),
            ),
            source,
        )
        with archive:
            unpacker = _Unpacker(archive, source, root, uid_map, limits)
            try:
                entries = 0
                while True:
                    member = _headers(archive.next, source)
                    if member is None:
                        break
                    archive.members.clear()  # every header is kept otherwise
                    entries += 1
                    if entries > limits.max_entries:
                        raise UnpackLimitError(f"layer has more than {limits.max_entries} entries (images.max_layer_entries)")
                    try:
                        unpacker.entry(member)
                    except tarfile.TarError as e:
                        raise UnpackError(f"{member.name!r}: layer tar stream is corrupt or truncated: {e}") from e
                    except (OSError, ValueError, OverflowError) as e:
                        raise UnpackError(f"{member.name!r}: {e}") from e
                    except MemoryError as e:
                        raise UnpackLimitError(f"{member.name!r}: out of memory unpacking the layer") from e
                if not isinstance(archive.end, _EOF_HEADER):
                    reason = archive.end or "no end-of-archive marker"
                    raise UnpackError(f"layer tar stream is truncated or corrupt at offset {archive.offset}: {reason}")
                try:
                    unpacker.finish()
                except OSError as e:
                    raise UnpackError(f"setting directory times: {e}") from e
            finally:
                unpacker.close()
        while source.read(_CHUNK):
            pass  # padding after the end-of-archive marker belongs to the diff_id too
    finally:
        os.close(root)
    return unpacker.stats
