"""Build OCI / Docker schema 2 test images in memory and push them to a registry.

Everything is deterministic (fixed mtimes, gzip header mtime 0, fixed ``created``), so the
same builder arguments always give the same digests::

    layer = Layer([Dir("etc"), File("etc/hello", b"hi\\n", mode=0o600, uid=1000)], compression="zstd")
    image = Image([layer], user="1000:1000", cmd=["/bin/sh"])
    index = Index([(image, Platform(architecture="amd64")), (arm_image, Platform(architecture="arm64", variant="v8"))])
    digest = push(registry, "library/test", "latest", index)

``push`` speaks the distribution HTTP API with httpx (monolithic blob uploads, manifest PUT)
and answers Basic or Bearer (Docker token) challenges itself.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import platform as _platform
import re
import tarfile
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import httpx
import zstandard

from tests.support.registry import LocalRegistry

Compression = Literal["gzip", "zstd", "none"]
ImageFormat = Literal["oci", "docker"]

# Media types ---------------------------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# Not in the Docker spec; containerd's name for it.
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

# What a client pulling any of the above should put in Accept (distribution 2.8 answers 404
# for OCI content and rewrites Docker schema 2 to schema 1 unless the type is accepted).
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST])

_LAYER_MEDIA_TYPES: dict[tuple[ImageFormat, Compression], str] = {
    ("oci", "gzip"): OCI_LAYER_GZIP,
    ("oci", "zstd"): OCI_LAYER_ZSTD,
    ("oci", "none"): OCI_LAYER,
    ("docker", "gzip"): DOCKER_LAYER_GZIP,
    ("docker", "zstd"): DOCKER_LAYER_ZSTD,
    ("docker", "none"): DOCKER_LAYER,
}

DEFAULT_MTIME = 1_700_000_000
DEFAULT_CREATED = "2024-01-01T00:00:00Z"
DEFAULT_ENV: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def host_arch() -> str:
    """GOARCH-style name of this machine's architecture (amd64 on x86_64)."""
    machine = _platform.machine().lower()
    return {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "i386": "386",
        "i686": "386",
    }.get(machine, machine)


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, indent=2).encode()


# Layer entries --------------------------------------------------------------------------------
# Paths are written into the tar verbatim (so "../x" or "/abs" can be used for hostile layers).


@dataclass(frozen=True)
class File:
    path: str
    content: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME
    xattrs: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME
    xattrs: Mapping[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME


@dataclass(frozen=True)
class Hardlink:
    path: str
    target: str  # path of an earlier entry in the same layer (as written in the tar)
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME


@dataclass(frozen=True)
class Whiteout:
    """Deletes `path` from lower layers: written as ``<dir>/.wh.<name>`` (empty regular file)."""

    path: str
    mtime: int = DEFAULT_MTIME


@dataclass(frozen=True)
class OpaqueWhiteout:
    """Hides everything lower layers put in `directory`: written as ``<dir>/.wh..wh..opq``."""

    directory: str
    mtime: int = DEFAULT_MTIME


@dataclass(frozen=True)
class Device:
    """Character/block device or FIFO node."""

    path: str
    kind: Literal["char", "block", "fifo"] = "fifo"
    major: int = 0
    minor: int = 0
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = DEFAULT_MTIME


Entry = File | Dir | Symlink | Hardlink | Whiteout | OpaqueWhiteout | Device

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


def whiteout_name(path: str) -> str:
    head, _, name = path.rstrip("/").rpartition("/")
    return f"{head}/{WHITEOUT_PREFIX}{name}" if head else f"{WHITEOUT_PREFIX}{name}"


def _tarinfo(entry: Entry) -> tuple[tarfile.TarInfo, bytes | None]:
    data: bytes | None = None
    if isinstance(entry, File):
        ti = tarfile.TarInfo(entry.path)
        ti.type, ti.mode, ti.size, data = tarfile.REGTYPE, entry.mode, len(entry.content), entry.content
        ti.uid, ti.gid, ti.mtime = entry.uid, entry.gid, entry.mtime
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
    elif isinstance(entry, Dir):
        ti = tarfile.TarInfo(entry.path)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = tarfile.DIRTYPE, entry.mode, entry.uid, entry.gid, entry.mtime
        ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs.items()}
    elif isinstance(entry, Symlink):
        ti = tarfile.TarInfo(entry.path)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, entry.target, 0o777
        ti.uid, ti.gid, ti.mtime = entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, Hardlink):
        ti = tarfile.TarInfo(entry.path)
        ti.type, ti.linkname, ti.mode = tarfile.LNKTYPE, entry.target, entry.mode
        ti.uid, ti.gid, ti.mtime = entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, Whiteout):
        ti = tarfile.TarInfo(whiteout_name(entry.path))
        ti.type, ti.mode, ti.mtime, data = tarfile.REGTYPE, 0o644, entry.mtime, b""
    elif isinstance(entry, OpaqueWhiteout):
        directory = entry.directory.strip("/")
        ti = tarfile.TarInfo(f"{directory}/{OPAQUE_MARKER}" if directory else OPAQUE_MARKER)
        ti.type, ti.mode, ti.mtime, data = tarfile.REGTYPE, 0o644, entry.mtime, b""
    else:
        ti = tarfile.TarInfo(entry.path)
        ti.type = {"char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}[entry.kind]
        ti.devmajor, ti.devminor, ti.mode = entry.major, entry.minor, entry.mode
        ti.uid, ti.gid, ti.mtime = entry.uid, entry.gid, entry.mtime
    return ti, data


def build_tar(entries: Iterable[Entry]) -> bytes:
    """Uncompressed (PAX) tar of `entries`, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            ti, data = _tarinfo(entry)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def compress(data: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    if compression == "none":
        return data
    raise ValueError(f"unknown compression {compression!r}")


class Layer:
    """One layer blob.

    Either from `entries`, or from ready-made `tar_bytes` (e.g. a hand-crafted or malformed
    archive).  `media_type` overrides the media type derived from format and compression.
    """

    def __init__(
        self,
        entries: Iterable[Entry] = (),
        *,
        compression: Compression = "gzip",
        tar_bytes: bytes | None = None,
        media_type: str | None = None,
    ) -> None:
        self.entries: tuple[Entry, ...] = tuple(entries)
        if tar_bytes is not None and self.entries:
            raise ValueError("give either entries or tar_bytes")
        self.compression: Compression = compression
        self.tar_bytes: bytes = tar_bytes if tar_bytes is not None else build_tar(self.entries)
        self.blob: bytes = compress(self.tar_bytes, compression)
        self._media_type = media_type

    @property
    def digest(self) -> str:
        """Digest of the (compressed) blob, as in the manifest."""
        return sha256_digest(self.blob)

    @property
    def diff_id(self) -> str:
        """Digest of the uncompressed tar, as in the config's rootfs.diff_ids."""
        return sha256_digest(self.tar_bytes)

    @property
    def size(self) -> int:
        return len(self.blob)

    @property
    def media_type(self) -> str:
        return self.media_type_for("oci")

    def media_type_for(self, fmt: ImageFormat) -> str:
        return self._media_type or _LAYER_MEDIA_TYPES[(fmt, self.compression)]

    def descriptor(self, fmt: ImageFormat = "oci") -> dict[str, Any]:
        return {"mediaType": self.media_type_for(fmt), "digest": self.digest, "size": self.size}


# Images -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = field(default_factory=host_arch)
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out


class Image:
    """A single-platform image: config blob + layers + manifest.

    Config keys given as None are left out of the config JSON.  `extra_config` is merged into
    ``config`` (e.g. ExposedPorts, Volumes, Healthcheck); `diff_ids` overrides rootfs.diff_ids
    and `config_bytes` the whole config blob (both for negative tests).
    """

    def __init__(
        self,
        layers: Sequence[Layer] = (),
        *,
        fmt: ImageFormat = "oci",
        os: str = "linux",
        architecture: str | None = None,
        variant: str | None = None,
        user: str | None = "",
        env: Sequence[str] | None = DEFAULT_ENV,
        entrypoint: Sequence[str] | None = None,
        cmd: Sequence[str] | None = None,
        working_dir: str | None = None,
        labels: Mapping[str, str] | None = None,
        stop_signal: str | None = None,
        extra_config: Mapping[str, Any] | None = None,
        created: str = DEFAULT_CREATED,
        history: Sequence[Mapping[str, Any]] | None = None,
        diff_ids: Sequence[str] | None = None,
        annotations: Mapping[str, str] | None = None,
        config_bytes: bytes | None = None,
    ) -> None:
        if fmt not in ("oci", "docker"):
            raise ValueError(f"unknown image format {fmt!r}")
        self.layers: tuple[Layer, ...] = tuple(layers)
        self.fmt: ImageFormat = fmt
        self.os = os
        self.architecture = architecture or host_arch()
        self.variant = variant
        self.annotations = dict(annotations) if annotations else None

        container_config: dict[str, Any] = {}
        for key, value in (
            ("User", user),
            ("Env", list(env) if env is not None else None),
            ("Entrypoint", list(entrypoint) if entrypoint is not None else None),
            ("Cmd", list(cmd) if cmd is not None else None),
            ("WorkingDir", working_dir),
            ("Labels", dict(labels) if labels is not None else None),
            ("StopSignal", stop_signal),
        ):
            if value is not None:
                container_config[key] = value
        container_config.update(extra_config or {})
        if history is None:
            history = [{"created": created, "created_by": f"pycri test layer {i}"} for i in range(len(self.layers))]
        config: dict[str, Any] = {"created": created, "architecture": self.architecture, "os": os}
        if variant:
            config["variant"] = variant
        config["config"] = container_config
        config["rootfs"] = {
            "type": "layers",
            "diff_ids": list(diff_ids) if diff_ids is not None else [layer.diff_id for layer in self.layers],
        }
        config["history"] = [dict(h) for h in history]
        self.config: dict[str, Any] = config
        self.config_bytes: bytes = config_bytes if config_bytes is not None else _json_bytes(config)

        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": self.config_media_type, "digest": self.config_digest, "size": len(self.config_bytes)},
            "layers": [layer.descriptor(fmt) for layer in self.layers],
        }
        if self.annotations and fmt == "oci":
            manifest["annotations"] = self.annotations
        self.manifest: dict[str, Any] = manifest
        self.manifest_bytes: bytes = _json_bytes(manifest)

    @property
    def media_type(self) -> str:
        return OCI_MANIFEST if self.fmt == "oci" else DOCKER_MANIFEST

    @property
    def config_media_type(self) -> str:
        return OCI_CONFIG if self.fmt == "oci" else DOCKER_CONFIG

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @property
    def image_id(self) -> str:
        """The image ID is the config digest."""
        return self.config_digest

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def digest(self) -> str:
        return self.manifest_digest

    @property
    def platform(self) -> Platform:
        return Platform(os=self.os, architecture=self.architecture, variant=self.variant)

    def blobs(self) -> dict[str, bytes]:
        """Every blob the manifest references (layers first, then config), by digest."""
        out = {layer.digest: layer.blob for layer in self.layers}
        out[self.config_digest] = self.config_bytes
        return out

    def descriptor(self, platform: Platform | None = None) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.manifest_digest,
            "size": len(self.manifest_bytes),
            "platform": (platform or self.platform).to_json(),
        }


class Index:
    """A multi-platform OCI image index or Docker manifest list.

    `manifests` holds images (their own os/architecture/variant is the platform) or
    (image, platform) pairs.
    """

    def __init__(
        self,
        manifests: Sequence[Image | tuple[Image, Platform]],
        *,
        fmt: ImageFormat = "oci",
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        if fmt not in ("oci", "docker"):
            raise ValueError(f"unknown index format {fmt!r}")
        self.fmt: ImageFormat = fmt
        self.entries: tuple[tuple[Image, Platform], ...] = tuple(
            m if isinstance(m, tuple) else (m, m.platform) for m in manifests
        )
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [image.descriptor(plat) for image, plat in self.entries],
        }
        if annotations and fmt == "oci":
            index["annotations"] = dict(annotations)
        self.index: dict[str, Any] = index
        self.index_bytes: bytes = _json_bytes(index)

    @property
    def images(self) -> list[Image]:
        return [image for image, _ in self.entries]

    @property
    def media_type(self) -> str:
        return OCI_INDEX if self.fmt == "oci" else DOCKER_MANIFEST_LIST

    @property
    def manifest_bytes(self) -> bytes:
        return self.index_bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.index_bytes)

    @property
    def manifest_digest(self) -> str:
        return self.digest

    def image_for(self, architecture: str, variant: str | None = None, os: str = "linux") -> Image:
        for image, plat in self.entries:
            if plat.os == os and plat.architecture == architecture and (variant is None or plat.variant == variant):
                return image
        raise KeyError(f"no {os}/{architecture}{'/' + variant if variant else ''} image in index")


@dataclass(frozen=True)
class RawManifest:
    """Arbitrary manifest bytes (+ blobs to upload first), for negative tests."""

    media_type: str
    manifest_bytes: bytes
    blob_data: Mapping[str, bytes] = field(default_factory=dict)  # digest -> bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)

    @property
    def manifest_digest(self) -> str:
        return self.digest


def simple_image(
    files: Mapping[str, bytes | File],
    *,
    user: str = "",
    fmt: ImageFormat = "oci",
    compression: Compression = "gzip",
    arch: str | None = None,
    **image_kwargs: Any,
) -> Image:
    """One-layer image holding `files` (parent directories are added, mode 0755)."""
    dirs: set[str] = set()
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    entries: list[Entry] = [Dir(d) for d in sorted(dirs)]
    for path, content in files.items():
        entries.append(content if isinstance(content, File) else File(path.strip("/"), content))
    return Image([Layer(entries, compression=compression)], fmt=fmt, user=user, architecture=arch or host_arch(), **image_kwargs)


# Registry client --------------------------------------------------------------------------------


class RegistryError(Exception):
    def __init__(self, message: str, response: httpx.Response | None = None) -> None:
        if response is not None:
            message = f"{message}: HTTP {response.status_code} {response.text[:500]}"
        super().__init__(message)
        self.response = response
        self.status_code = response.status_code if response is not None else None


class RegistryAuthError(RegistryError):
    pass


_CHALLENGE_PARAM = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]+))')


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y",scope="a b"`` -> ("bearer", {...}) (one challenge)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for match in _CHALLENGE_PARAM.finditer(rest):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return scheme.lower(), params


class RegistryClient:
    """Minimal distribution API client (sync httpx) that handles Basic and Bearer challenges.

    Bearer tokens are cached: a token is requested for the challenged scope plus
    `scopes` (so one ``pull,push`` token covers a whole push) and reused until the registry
    challenges again.  `token_fetches` counts token-server round trips.
    """

    def __init__(
        self,
        registry: LocalRegistry | str,
        *,
        username: str | None = None,
        password: str | None = None,
        scopes: Iterable[str] = (),
        timeout: float = 30.0,
    ) -> None:
        self.base_url = registry.url if isinstance(registry, LocalRegistry) else registry.rstrip("/")
        self.username = username
        self.password = password
        self.scopes: list[str] = list(scopes)
        self.token_fetches = 0
        self._authorization: str | None = None
        self._http = httpx.Client(trust_env=False, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def authorization(self) -> str | None:
        """The Authorization header value currently in use."""
        return self._authorization

    def _basic(self) -> str | None:
        if self.username is None:
            return None
        raw = f"{self.username}:{self.password or ''}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def fetch_token(self, realm: str, service: str | None, scopes: Sequence[str]) -> str:
        params: list[tuple[str, str | int | float | bool | None]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        headers = {}
        basic = self._basic()
        if basic is not None:
            headers["Authorization"] = basic
        self.token_fetches += 1
        r = self._http.get(realm, params=params, headers=headers)
        if r.status_code != 200:
            raise RegistryAuthError(f"token request to {realm} refused", r)
        body = r.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"token server {realm} returned no token", r)
        return token

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """Send a request, answering at most two auth challenges; returns the final response."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        response: httpx.Response | None = None
        for _ in range(3):
            hdrs = dict(headers or {})
            if self._authorization is not None:
                hdrs["Authorization"] = self._authorization
            response = self._http.request(method, url, headers=hdrs, content=content)
            if response.status_code != 401:
                return response
            challenge = response.headers.get("WWW-Authenticate")
            if not challenge:
                return response
            scheme, params = parse_www_authenticate(challenge)
            if scheme == "basic":
                basic = self._basic()
                if basic is None or self._authorization == basic:
                    return response
                self._authorization = basic
            elif scheme == "bearer":
                if "realm" not in params:
                    return response
                wanted = [*params.get("scope", "").split(), *self.scopes]
                scopes = list(dict.fromkeys(s for s in wanted if s))
                self._authorization = "Bearer " + self.fetch_token(params["realm"], params.get("service"), scopes)
            else:
                return response
        assert response is not None
        return response

    # API helpers -------------------------------------------------------------------------
    def ping(self) -> httpx.Response:
        return self.request("GET", "/v2/")

    def get_manifest(self, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> httpx.Response:
        return self.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": accept})

    def get_blob(self, repository: str, digest: str) -> httpx.Response:
        return self.request("GET", f"/v2/{repository}/blobs/{digest}")

    def blob_exists(self, repository: str, digest: str) -> bool:
        r = self.request("HEAD", f"/v2/{repository}/blobs/{digest}")
        if r.status_code == 200:
            return True
        if r.status_code == 404:
            return False
        raise RegistryError(f"HEAD blob {digest}", r)

    def upload_blob(self, repository: str, data: bytes, digest: str | None = None) -> str:
        """Monolithic upload (POST then PUT ?digest=); skipped if the blob already exists."""
        digest = digest or sha256_digest(data)
        if self.blob_exists(repository, digest):
            return digest
        r = self.request("POST", f"/v2/{repository}/blobs/uploads/")
        if r.status_code != 202 or "Location" not in r.headers:
            raise RegistryError(f"starting upload of {digest} to {repository}", r)
        location = urllib.parse.urljoin(self.base_url + "/", r.headers["Location"])
        sep = "&" if "?" in location else "?"
        r = self.request(
            "PUT",
            location + sep + urllib.parse.urlencode({"digest": digest}),
            headers={"Content-Type": "application/octet-stream"},
            content=data,
        )
        if r.status_code != 201:
            raise RegistryError(f"uploading {digest} to {repository}", r)
        return digest

    def put_manifest(self, repository: str, reference: str, media_type: str, data: bytes) -> str:
        r = self.request("PUT", f"/v2/{repository}/manifests/{reference}", headers={"Content-Type": media_type}, content=data)
        if r.status_code != 201:
            raise RegistryError(f"putting manifest {repository}:{reference}", r)
        digest = sha256_digest(data)
        served = r.headers.get("Docker-Content-Digest")
        if served is not None and served != digest:
            raise RegistryError(f"registry stored manifest as {served}, expected {digest}")
        return digest


def _push_image(client: RegistryClient, repository: str, reference: str, image: Image) -> str:
    for digest, data in image.blobs().items():
        client.upload_blob(repository, data, digest)
    return client.put_manifest(repository, reference, image.media_type, image.manifest_bytes)


def push(
    registry: LocalRegistry | str,
    repository: str,
    reference: str,
    artifact: Image | Index | RawManifest,
    *,
    username: str | None = None,
    password: str | None = None,
    anonymous: bool = False,
    corrupt_blob: str | None = None,
    omit_blob: str | None = None,
) -> str:
    """Push `artifact` as ``repository:reference`` (a tag or a digest); returns its digest.

    For an index, every child manifest is pushed by digest first.  `username` / `password`
    each default to the LocalRegistry's own when it has auth; ``anonymous=True`` sends none.

    The registry verifies digests on upload and refuses manifests whose blobs are missing,
    so faults are injected into storage after a successful push (LocalRegistry only):
    `corrupt_blob` flips a byte of that blob (same size, wrong content), `omit_blob` deletes
    it (GET -> 404 BLOB_UNKNOWN).  Either may also name a child manifest digest.
    """
    if (corrupt_blob or omit_blob) and not isinstance(registry, LocalRegistry):
        raise TypeError("corrupt_blob/omit_blob need a LocalRegistry (they edit its storage)")
    if not anonymous and isinstance(registry, LocalRegistry) and registry.auth is not None:
        username = registry.username if username is None else username
        password = registry.password if password is None else password
    if anonymous:
        username = password = None
    with RegistryClient(registry, username=username, password=password, scopes=[f"repository:{repository}:pull,push"]) as client:
        if isinstance(artifact, Image):
            digest = _push_image(client, repository, reference, artifact)
        elif isinstance(artifact, Index):
            for image in dict.fromkeys(artifact.images):
                _push_image(client, repository, image.manifest_digest, image)
            digest = client.put_manifest(repository, reference, artifact.media_type, artifact.index_bytes)
        else:
            for blob_digest, data in artifact.blob_data.items():
                client.upload_blob(repository, data, blob_digest)
            digest = client.put_manifest(repository, reference, artifact.media_type, artifact.manifest_bytes)
    if isinstance(registry, LocalRegistry):
        if corrupt_blob is not None:
            registry.corrupt_blob(corrupt_blob)
        if omit_blob is not None:
            registry.remove_blob(omit_blob)
    return digest


__all__ = [
    "DEFAULT_CREATED",
    "DEFAULT_ENV",
    "DEFAULT_MTIME",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_ACCEPT",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "OPAQUE_MARKER",
    "WHITEOUT_PREFIX",
    "Compression",
    "Device",
    "Dir",
    "Entry",
    "File",
    "Hardlink",
    "Image",
    "ImageFormat",
    "Index",
    "Layer",
    "OpaqueWhiteout",
    "Platform",
    "RawManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "Symlink",
    "Whiteout",
    "build_tar",
    "compress",
    "host_arch",
    "parse_www_authenticate",
    "push",
    "sha256_digest",
    "simple_image",
    "whiteout_name",
]
