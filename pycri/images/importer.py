"""Importing images from an archive: an OCI image layout or a docker-archive, as a tar or a directory.

Two formats are understood, whether packed in a tar file (plain or compressed) or
unpacked in a directory:

* an OCI image layout (``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``), as
  ``skopeo copy ... oci-archive:``, ``ctr export``, ``podman save --format oci-archive``
  and Docker 25+ ``docker save`` write. Images are named by the
  ``io.containerd.image.name`` annotation of their ``index.json`` entry, else by
  ``org.opencontainers.image.ref.name`` when that is a full reference (a bare tag such as
  ``latest`` names no repository: that image is imported untagged). An entry that is an
  index gets this host's platform, as a pull does.
* a docker-archive (``docker save`` before Docker 25): ``manifest.json`` lists each
  image's ``Config``, ``RepoTags`` and ``Layers``. There is no manifest, so one is written
  (an OCI manifest describing the layers as stored: plain tar, gzip or zstd, by their
  first bytes).

Every blob is checked: against its descriptor's digest and size in a layout, and where a
docker-archive's file names carry digests (``<hex>.json``, ``blobs/sha256/<hex>``) against
those. Layers are unpacked and checked against the config's diff IDs as pulled ones are.
Paths inside the archive (and symlinks in it) must stay inside it. All files are read in
worker threads, one at a time (a tar is one stream).

Everything is staged first, under claims so that garbage collection leaves it alone; only
when every image of the archive is complete are the records written. A bad archive
therefore leaves no record, and garbage collection removes what it had brought in.
A structurally bad archive (not an archive, missing files, escaping paths, invalid JSON or
names) is INVALID_ARGUMENT; content that does not match its digest, size or diff ID is
DATA_LOSS; a path that does not exist is NOT_FOUND.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pycri import errors
from pycri.images import manifest as mf
from pycri.images import reference
from pycri.images.content import ContentError
from pycri.images.layers import LayerError
from pycri.images.records import ImageRecord
from pycri.images.unpack import UnpackError, UnpackLimitError

if TYPE_CHECKING:
    from pycri.images.service import ImageService

log = logging.getLogger("pycri.import")

OCI_LAYOUT = "oci-layout"
OCI_INDEX_FILE = "index.json"
DOCKER_MANIFEST_FILE = "manifest.json"
OCI_REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_IMAGE_NAME = "io.containerd.image.name"

CHUNK = 1 << 20
MAX_LINK_HOPS = 16
MAX_SMALL_FILE = 64 * 1024  # oci-layout

_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
LAYER_MEDIA_TYPES = {"tar": _OCI_LAYER, "gzip": _OCI_LAYER + "+gzip", "zstd": _OCI_LAYER + "+zstd"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class _Bad(Exception):
    """A structural problem with the archive (INVALID_ARGUMENT)."""


class _Corrupt(Exception):
    """Content that is not what the archive says it is (DATA_LOSS)."""


class _TooBig(Exception):
    """A layer over one of the unpacking limits (RESOURCE_EXHAUSTED)."""


# -- reading the archive (synchronous: always called in a worker thread) -------------------------


def _clean(name: str) -> str:
    """An archive-relative path, normalised; raises _Bad when it is absolute or escapes the archive."""
    if not name or "\0" in name:
        raise _Bad(f"invalid path {name!r}")
    if name.startswith("/"):
        raise _Bad(f"path {name!r} is absolute: it escapes the archive")
    cleaned = posixpath.normpath(name)
    if cleaned == ".." or cleaned.startswith("../"):
        raise _Bad(f"path {name!r} escapes the archive")
    if cleaned == ".":
        raise _Bad(f"invalid path {name!r}")
    return cleaned


class _Archive:
    """Files of an archive by archive-relative path: regular files only, never outside it."""

    def exists(self, name: str) -> bool:
        try:
            self.check(name)
        except _Bad:
            return False
        return True

    def check(self, name: str) -> None:
        """Raises _Bad unless ``name`` is a regular file inside the archive."""
        stream, _ = self.open(name)
        stream.close()

    def open(self, name: str) -> tuple[IO[bytes], int]:
        """The file and its size; raises _Bad when it is missing, not a file, or escapes."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def read(self, name: str, limit: int) -> bytes:
        stream, size = self.open(name)
        with stream:
            if size > limit:
                raise _Bad(f"{name}: {size} bytes is over the {limit}-byte limit")
            data = stream.read(limit + 1)
        if len(data) != size:
            raise _Corrupt(f"{name}: read {len(data)} bytes, expected {size}")
        return data

    def read_json(self, name: str, limit: int) -> Any:
        data = self.read(name, limit)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _Bad(f"{name}: not valid JSON: {exc}") from None

    def hash(self, name: str) -> tuple[str, int, str]:
        """(sha256 digest, size, compression) of the file as stored."""
        stream, size = self.open(name)
        hasher = hashlib.sha256()
        read = 0
        head = b""
        with stream:
            while chunk := stream.read(CHUNK):
                if not head:
                    head = chunk[:8]
                hasher.update(chunk)
                read += len(chunk)
        if read != size:
            raise _Corrupt(f"{name}: read {read} bytes, expected {size}")
        return "sha256:" + hasher.hexdigest(), size, _compression(name, head)


def _compression(name: str, head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd"
    if head.startswith((b"BZh", b"\xfd7zXZ\x00")):
        raise _Bad(f"layer {name}: bzip2 and xz compressed layers are not supported")
    return "tar"


class _DirArchive(_Archive):
    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))

    def _resolve(self, name: str) -> str:
        cleaned = _clean(name)
        real = os.path.realpath(self.root / cleaned)
        if os.path.commonpath([real, self.root]) != str(self.root):
            raise _Bad(f"{name}: a symlink leads out of the archive")
        return real

    def open(self, name: str) -> tuple[IO[bytes], int]:
        real = self._resolve(name)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise _Bad(f"{name}: missing from the archive") from None
        except OSError as exc:
            raise _Bad(f"{name}: cannot be read: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise _Bad(f"{name}: not a regular file")
        return os.fdopen(fd, "rb"), st.st_size


class _TarArchive(_Archive):
    def __init__(self, path: Path) -> None:
        try:
            self.tar = tarfile.open(path, "r:*")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise _Bad(f"not a tar archive or a directory: {exc}") from None
        self.members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self.tar.getmembers():
                key = posixpath.normpath(member.name.lstrip("/"))
                if key == ".." or key.startswith("../"):
                    continue  # never looked up: every name we look up is cleaned first
                self.members[key] = member  # a later entry wins, as when tar extracts
        except (tarfile.TarError, EOFError, OSError) as exc:
            self.tar.close()
            raise _Bad(f"corrupt tar archive: {exc}") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        key = _clean(name)
        for _ in range(MAX_LINK_HOPS):
            member = self.members.get(key)
            if member is None:
                raise _Bad(f"{name}: missing from the archive")
            if member.isreg():
                return member
            if member.issym():
                if member.linkname.startswith("/"):
                    raise _Bad(f"{name}: a symlink leads out of the archive")
                target = posixpath.join(posixpath.dirname(key), member.linkname)
            elif member.islnk():
                target = member.linkname
            else:
                raise _Bad(f"{name}: not a regular file")
            try:
                key = _clean(target)
            except _Bad:
                raise _Bad(f"{name}: a link leads out of the archive") from None
        raise _Bad(f"{name}: too many levels of links")

    def check(self, name: str) -> None:
        self._member(name)

    def open(self, name: str) -> tuple[IO[bytes], int]:
        member = self._member(name)
        try:
            stream = self.tar.extractfile(member)
        except (tarfile.TarError, OSError) as exc:
            raise _Corrupt(f"{name}: cannot be read: {exc}") from None
        if stream is None:
            raise _Bad(f"{name}: not a regular file")
        return stream, member.size

    def close(self) -> None:
        self.tar.close()


def _open_archive(path: Path) -> _Archive:
    try:
        st = path.stat()
    except FileNotFoundError:
        raise errors.NotFound(f"import {path}: no such file or directory") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise errors.InvalidArgument(f"import {str(path)!r}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        if stat.S_ISDIR(st.st_mode):
            return _DirArchive(path)
        if stat.S_ISREG(st.st_mode):
            return _TarArchive(path)
    except _Bad as exc:
        raise errors.InvalidArgument(f"import {path}: {exc}") from None
    raise errors.InvalidArgument(f"import {path}: not a tar archive or a directory")


# -- names ----------------------------------------------------------------------------------------


def _tag(text: str, what: str) -> str | None:
    """``name:tag`` for an image name; None for a name with a digest only."""
    try:
        ref = reference.parse(text)
    except reference.ReferenceError as exc:
        raise _Bad(f"{what}: {exc}") from None
    return f"{ref.name}:{ref.tag}" if ref.tag else None


def _oci_names(annotations: dict[str, str], what: str) -> list[str]:
    for key in (CONTAINERD_IMAGE_NAME, OCI_REF_NAME):
        if not isinstance(annotations.get(key, ""), str):
            raise _Bad(f"{what} annotation {key}: expected a string")
    full = annotations.get(CONTAINERD_IMAGE_NAME)
    if full:
        tag = _tag(full, f"{what} annotation {CONTAINERD_IMAGE_NAME}")
        return [tag] if tag else []
    ref_name = annotations.get(OCI_REF_NAME, "")
    if not ref_name:
        return []
    if "/" not in ref_name and ":" not in ref_name:
        log.info("%s: %s %r is a tag without a repository: imported untagged", what, OCI_REF_NAME, ref_name)
        return []
    tag = _tag(ref_name, f"{what} annotation {OCI_REF_NAME}")
    return [tag] if tag else []


# -- staging --------------------------------------------------------------------------------------


@dataclass
class _Staged:
    config_digest: str
    config: dict[str, Any]
    chain_ids: list[str]
    blobs: list[str]
    size: int
    manifest_digest: str
    media_type: str
    names: list[str] = field(default_factory=list)


class _Importer:
    def __init__(self, images: ImageService, archive: _Archive) -> None:
        self.images = images
        self.archive = archive
        self.claimed: list[str] = []
        self.staged: dict[str, _Staged] = {}  # by config digest, in archive order

    def _claim(self, keys: list[str]) -> None:
        self.images.claims.add(keys)
        self.claimed.extend(keys)

    def release(self) -> None:
        self.images.claims.release(self.claimed)
        self.claimed = []

    async def run(self) -> list[_Staged]:
        if await asyncio.to_thread(self.archive.exists, OCI_LAYOUT):
            await self._oci()
        elif await asyncio.to_thread(self.archive.exists, DOCKER_MANIFEST_FILE):
            await self._docker()
        else:
            raise _Bad(
                f"neither an OCI image layout ({OCI_LAYOUT}, {OCI_INDEX_FILE}) nor a docker-archive ({DOCKER_MANIFEST_FILE})"
            )
        if not self.staged:
            raise _Bad("the archive holds no image")
        return list(self.staged.values())

    def _add(self, staged: _Staged) -> None:
        known = self.staged.get(staged.config_digest)
        if known is None:
            self.staged[staged.config_digest] = staged
            return
        known.blobs += [b for b in staged.blobs if b not in known.blobs]
        known.names += [n for n in staged.names if n not in known.names]

    # -- OCI image layout

    async def _oci(self) -> None:
        layout = await asyncio.to_thread(self.archive.read_json, OCI_LAYOUT, MAX_SMALL_FILE)
        if not isinstance(layout, dict) or not isinstance(layout.get("imageLayoutVersion"), str):
            raise _Bad(f"{OCI_LAYOUT}: expected {{'imageLayoutVersion': '1.0.0'}}")
        if not await asyncio.to_thread(self.archive.exists, OCI_INDEX_FILE):
            raise _Bad(f"an OCI image layout needs {OCI_INDEX_FILE}")
        data = await asyncio.to_thread(self.archive.read, OCI_INDEX_FILE, mf.MAX_MANIFEST_BYTES)
        try:
            index = mf.parse_index(data, mf.OCI_INDEX)
        except mf.ManifestError as exc:
            raise _Bad(f"{OCI_INDEX_FILE}: {exc}") from None
        except (ValueError, TypeError) as exc:  # from dict(annotations)
            raise _Bad(f"{OCI_INDEX_FILE}: descriptor annotations must be an object ({exc})") from None
        for i, desc in enumerate(index.manifests):
            what = f"{OCI_INDEX_FILE} manifests[{i}]"
            await self._oci_image(desc, _oci_names(desc.annotations, what), what)

    @staticmethod
    def _blob_name(digest: str) -> str:
        algorithm, _, hexpart = digest.partition(":")
        return f"blobs/{algorithm}/{hexpart}"

    async def _small_blob(self, desc: mf.Descriptor, limit: int, what: str) -> bytes:
        if desc.size > limit:
            raise _Bad(f"{what} {desc.digest}: {desc.size} bytes is over the {limit}-byte limit")
        data = await asyncio.to_thread(self.archive.read, self._blob_name(desc.digest), limit)
        try:
            mf.verify(data, desc.digest, f"{what} {self._blob_name(desc.digest)}")
        except mf.ManifestError as exc:
            raise _Corrupt(str(exc)) from None
        if len(data) != desc.size:
            raise _Corrupt(f"{what} {desc.digest}: {len(data)} bytes, its descriptor says {desc.size}")
        return data

    async def _oci_image(self, desc: mf.Descriptor, names: list[str], what: str) -> None:
        kept: list[tuple[str, bytes]] = []
        try:
            if desc.media_type in mf.INDEX_TYPES:
                data = await self._small_blob(desc, mf.MAX_MANIFEST_BYTES, "index")
                kept.append((desc.digest, data))
                chosen = mf.select_platform(mf.parse_index(data, desc.media_type))
                if chosen.media_type in mf.INDEX_TYPES:
                    raise _Bad(f"{what}: nested indexes are not supported")
                desc = chosen
            elif desc.media_type not in mf.MANIFEST_TYPES:
                raise _Bad(f"{what}: unsupported media type {desc.media_type!r}")
            data = await self._small_blob(desc, mf.MAX_MANIFEST_BYTES, "manifest")
            kept.append((desc.digest, data))
            manifest = mf.parse_manifest(data, desc.media_type)
        except mf.ManifestError as exc:
            raise _Bad(f"{what}: {exc}") from None
        except (ValueError, TypeError) as exc:  # from dict(annotations)
            raise _Bad(f"{what}: descriptor annotations must be an object ({exc})") from None
        config_bytes = await self._small_blob(manifest.config, mf.MAX_CONFIG_BYTES, "config")
        await self._stage(
            kept,
            manifest.config.digest,
            config_bytes,
            [(layer, self._blob_name(layer.digest)) for layer in manifest.layers],
            manifest_digest=desc.digest,
            media_type=manifest.media_type,
            names=names,
        )

    # -- docker-archive

    async def _docker(self) -> None:
        doc = await asyncio.to_thread(self.archive.read_json, DOCKER_MANIFEST_FILE, mf.MAX_MANIFEST_BYTES)
        if not isinstance(doc, list):
            raise _Bad(f"{DOCKER_MANIFEST_FILE}: expected a list of images")
        for i, entry in enumerate(doc):
            what = f"{DOCKER_MANIFEST_FILE}[{i}]"
            if not isinstance(entry, dict):
                raise _Bad(f"{what}: expected an object")
            config_name, layer_names, repo_tags = entry.get("Config"), entry.get("Layers"), entry.get("RepoTags") or []
            if not isinstance(config_name, str) or not config_name:
                raise _Bad(f"{what}: Config must name the image config")
            if not isinstance(layer_names, list) or not all(isinstance(n, str) and n for n in layer_names):
                raise _Bad(f"{what}: Layers must be a list of paths")
            if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
                raise _Bad(f"{what}: RepoTags must be a list of names")
            names = [t for t in (_tag(text, f"{what} RepoTags") for text in repo_tags) if t]
            await self._docker_image(config_name, layer_names, names)

    @staticmethod
    def _digest_in_name(name: str) -> str | None:
        """The digest a docker-archive file name carries: ``<hex>.json``, ``blobs/sha256/<hex>``."""
        cleaned = posixpath.normpath(name)
        base = posixpath.basename(cleaned)
        if base.endswith(".json") and _HEX64.fullmatch(base.removesuffix(".json")):
            return "sha256:" + base.removesuffix(".json")
        if posixpath.dirname(cleaned) == "blobs/sha256" and _HEX64.fullmatch(base):
            return "sha256:" + base
        return None

    async def _docker_image(self, config_name: str, layer_names: list[str], names: list[str]) -> None:
        config_bytes = await asyncio.to_thread(self.archive.read, config_name, mf.MAX_CONFIG_BYTES)
        config_digest = mf.sha256_digest(config_bytes)
        named = self._digest_in_name(config_name)
        if named is not None and named != config_digest:
            raise _Corrupt(f"config {config_name}: digest mismatch: its name says {named}, content is {config_digest}")
        layers: list[tuple[mf.Descriptor, str]] = []
        for name in layer_names:
            digest, size, compression = await asyncio.to_thread(self.archive.hash, name)
            named = self._digest_in_name(name)
            if named is not None and named != digest:
                raise _Corrupt(f"layer {name}: digest mismatch: its name says {named}, content is {digest}")
            layers.append((mf.Descriptor(LAYER_MEDIA_TYPES[compression], digest, size), name))
        manifest = {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": mf.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": d.media_type, "digest": d.digest, "size": d.size} for d, _ in layers],
        }
        manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
        manifest_digest = mf.sha256_digest(manifest_bytes)
        await self._stage(
            [(manifest_digest, manifest_bytes)],
            config_digest,
            config_bytes,
            layers,
            manifest_digest=manifest_digest,
            media_type=mf.OCI_MANIFEST,
            names=names,
        )

    # -- common

    async def _stage(
        self,
        kept: list[tuple[str, bytes]],
        config_digest: str,
        config_bytes: bytes,
        layers: list[tuple[mf.Descriptor, str]],
        *,
        manifest_digest: str,
        media_type: str,
        names: list[str],
    ) -> None:
        """Store the manifests and config, copy and unpack the layers; the record comes later."""
        try:
            config = mf.parse_config(config_bytes)
        except mf.ManifestError as exc:
            raise _Bad(f"config {config_digest}: {exc}") from None
        if len(config.diff_ids) != len(layers):
            raise _Bad(f"image {config_digest}: {len(layers)} layers, but {len(config.diff_ids)} diff IDs in its config")
        chains = mf.chain_ids(config.diff_ids)
        blobs = list(dict.fromkeys([d for d, _ in kept] + [config_digest] + [desc.digest for desc, _ in layers]))
        self._claim(blobs + chains)
        content = self.images.content
        try:
            for digest, data in [*kept, (config_digest, config_bytes)]:
                if not await asyncio.to_thread(content.has, digest):
                    await content.put_bytes(digest, data, "manifest")
            for (desc, name), diff_id, chain in zip(layers, config.diff_ids, chains, strict=True):
                blob = await self._copy(desc, name)
                if not await asyncio.to_thread(self.images.layers.has, chain):
                    try:
                        await self.images.layers.ensure(chain, diff_id, blob, desc.media_type)
                    except UnpackLimitError as exc:
                        raise _TooBig(f"image {config_digest}: layer {desc.digest}: {exc}") from None
                    except (LayerError, UnpackError) as exc:
                        raise _Corrupt(f"image {config_digest}: layer {desc.digest}: {exc}") from None
        except ContentError as exc:
            raise _Corrupt(str(exc)) from None
        size = sum(len(data) for _, data in kept) + len(config_bytes) + sum(desc.size for desc, _ in layers)
        self._add(
            _Staged(
                config_digest=config_digest,
                config=config.raw,
                chain_ids=chains,
                blobs=blobs,
                size=size,
                manifest_digest=manifest_digest,
                media_type=media_type,
                names=list(dict.fromkeys(names)),
            )
        )

    async def _copy(self, desc: mf.Descriptor, name: str) -> Path:
        """The layer blob in the content store, copied there from the archive unless it is there already."""
        archive = self.archive
        await asyncio.to_thread(archive.check, name)  # even when the store has the blob: the archive must be whole

        async def chunks() -> AsyncIterator[bytes]:
            stream, size = await asyncio.to_thread(archive.open, name)
            try:
                if size != desc.size:
                    raise _Corrupt(f"layer {name}: {size} bytes, its descriptor says {desc.size}")
                while chunk := await asyncio.to_thread(stream.read, CHUNK):
                    yield chunk
            finally:
                await asyncio.to_thread(stream.close)

        return await self.images.content.ensure(desc.digest, desc.size, chunks, "layer")


async def import_archive(images: ImageService, path: Path) -> list[ImageRecord]:
    """Import every image of the archive at ``path`` (absolute); returns their records, in archive order."""
    if not path.is_absolute():
        raise errors.InvalidArgument(f"import {path}: the path must be absolute")
    archive = await asyncio.to_thread(_open_archive, path)
    importer = _Importer(images, archive)
    try:
        try:
            staged = await importer.run()
        except _Bad as exc:
            raise errors.InvalidArgument(f"import {path}: {exc}") from None
        except _Corrupt as exc:
            raise errors.DataLoss(f"import {path}: {exc}") from None
        except _TooBig as exc:
            raise errors.ResourceExhausted(f"import {path}: {exc}") from None
        records = [
            await images.add_record(
                config_digest=s.config_digest,
                config=s.config,
                chain_ids=s.chain_ids,
                blobs=s.blobs,
                size=s.size,
                manifest_digest=s.manifest_digest,
                media_type=s.media_type,
                names=s.names,
            )
            for s in staged
        ]
    except BaseException:
        importer.release()
        await asyncio.shield(images.gc())  # what the failed import brought in and nothing needs
        raise
    finally:
        importer.release()
        with contextlib.suppress(OSError):
            await asyncio.to_thread(archive.close)
    for record in records:
        log.info("imported %s as %s from %s", ", ".join(record.repo_tags) or "untagged image", record.id, path)
    return records
