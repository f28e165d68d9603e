"""Image manifests, indexes and configs (OCI and Docker schema 2): parsing and checks.

Pure code: bytes in, validated descriptors out. Platform selection follows
containerd's matcher: the host os/architecture, and for arm the variant
(``v8`` for arm64 being the default when a manifest omits it).
"""

from __future__ import annotations

import hashlib
import json
import platform as platform_mod
from dataclasses import dataclass, field
from typing import Any

from pycri.images.unpack import MEDIA_TYPES

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"

INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
CONFIG_TYPES = (OCI_CONFIG, DOCKER_CONFIG)
LAYER_TYPES = tuple(MEDIA_TYPES)  # every layer type the unpacker can read
# What a client accepts when resolving a reference, best first.
ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # as containerd's limit for manifests and indexes
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class ManifestError(ValueError):
    """A manifest, index or config that cannot be used; the message says which and why."""


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def verify(data: bytes, digest: str, what: str) -> None:
    algorithm, _, expected = digest.partition(":")
    if algorithm not in ("sha256", "sha512"):
        raise ManifestError(f"{what}: unsupported digest algorithm {algorithm!r}")
    actual = hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise ManifestError(f"{what}: digest mismatch: expected {digest}, got {algorithm}:{actual}")


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    machine = platform_mod.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "i686": ("386", ""),
        "i386": ("386", ""),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return Platform("linux", arch, variant)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config pycri uses; ``raw`` keeps the whole document."""

    diff_ids: tuple[str, ...]
    user: str
    platform: Platform
    raw: dict[str, Any] = field(hash=False, compare=False)

    @property
    def config(self) -> dict[str, Any]:
        value = self.raw.get("config") or {}
        return value if isinstance(value, dict) else {}


def _json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ManifestError(f"{what}: not valid JSON: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: expected a JSON object")
    return doc


def _digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or ":" not in value:
        raise ManifestError(f"{what}: missing or invalid digest {value!r}")
    algorithm, _, hexpart = value.partition(":")
    lengths = {"sha256": 64, "sha512": 128}
    if algorithm not in lengths or len(hexpart) != lengths[algorithm] or any(c not in "0123456789abcdef" for c in hexpart):
        raise ManifestError(f"{what}: invalid digest {value!r}")
    return value


def _descriptor(doc: Any, what: str) -> Descriptor:
    if not isinstance(doc, dict):
        raise ManifestError(f"{what}: expected a descriptor object")
    media_type = doc.get("mediaType")
    size = doc.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ManifestError(f"{what}: missing mediaType")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ManifestError(f"{what}: missing or invalid size")
    plat = doc.get("platform")
    parsed_platform = None
    if isinstance(plat, dict):
        parsed_platform = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", "")))
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()):
        raise ManifestError(f"{what}: annotations must be an object of strings")
    return Descriptor(media_type, _digest(doc.get("digest"), what), size, parsed_platform, dict(annotations))


def detect_media_type(data: bytes, content_type: str) -> str:
    """The manifest's media type: its own ``mediaType`` field, else the HTTP Content-Type, else by shape."""
    doc = _json(data, "manifest")
    own = doc.get("mediaType")
    if isinstance(own, str) and own:
        return own
    declared = content_type.split(";")[0].strip()
    if declared in INDEX_TYPES + MANIFEST_TYPES:
        return declared
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise ManifestError(f"manifest: unknown media type {declared or '(none)'}")


def parse_index(data: bytes, media_type: str) -> Index:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"index: {len(data)} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    doc = _json(data, "index")
    entries = doc.get("manifests")
    if not isinstance(entries, list):
        raise ManifestError("index: 'manifests' must be a list")
    return Index(media_type, tuple(_descriptor(e, f"index manifests[{i}]") for i, e in enumerate(entries)))


def parse_manifest(data: bytes, media_type: str) -> Manifest:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest: {len(data)} bytes is over the {MAX_MANIFEST_BYTES}-byte limit")
    if media_type not in MANIFEST_TYPES:
        raise ManifestError(f"manifest: unsupported media type {media_type!r} (schema 1 manifests are not supported)")
    doc = _json(data, "manifest")
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"manifest: schemaVersion {doc.get('schemaVersion')!r} is not 2")
    config = _descriptor(doc.get("config"), "manifest config")
    if config.media_type not in CONFIG_TYPES:
        raise ManifestError(f"manifest config: unsupported media type {config.media_type!r}")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ManifestError("manifest: 'layers' must be a list")
    layers = tuple(_descriptor(layer, f"manifest layers[{i}]") for i, layer in enumerate(layers_doc))
    for i, layer in enumerate(layers):
        if layer.media_type not in LAYER_TYPES:
            raise ManifestError(f"manifest layers[{i}]: unsupported media type {layer.media_type!r}")
    return Manifest(media_type, config, layers)


def _platform_score(candidate: Platform, want: Platform) -> int | None:
    """Lower is better; None when the candidate cannot run here."""
    if candidate.os != want.os or candidate.architecture != want.architecture:
        return None
    if candidate.variant == want.variant:
        return 0
    if want.architecture == "arm64" and {candidate.variant, want.variant} <= {"", "v8"}:
        return 0
    if not candidate.variant:
        return 1
    if want.architecture == "arm" and candidate.variant < want.variant:
        try:  # an older ARM variant still runs; the newest of them is best
            return 2 + int(want.variant.lstrip("v")) - int(candidate.variant.lstrip("v"))
        except ValueError:
            return None
    return None


def select_platform(index: Index, want: Platform | None = None) -> Descriptor:
    """The manifest of ``index`` for the platform ``want`` (default: this host)."""
    target = want or host_platform()
    best: tuple[int, Descriptor] | None = None
    for entry in index.manifests:
        if entry.media_type not in MANIFEST_TYPES + INDEX_TYPES or entry.platform is None:
            continue
        score = _platform_score(entry.platform, target)
        if score is not None and (best is None or score < best[0]):
            best = (score, entry)
    if best is None:
        found = ", ".join(str(e.platform) for e in index.manifests if e.platform) or "none"
        raise ManifestError(f"no manifest for platform {target} in the index (it has: {found})")
    return best[1]


def parse_config(data: bytes) -> ImageConfig:
    if len(data) > MAX_CONFIG_BYTES:
        raise ManifestError(f"image config: {len(data)} bytes is over the {MAX_CONFIG_BYTES}-byte limit")
    doc = _json(data, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers" or not isinstance(rootfs.get("diff_ids"), list):
        raise ManifestError("image config: rootfs must be {type: layers, diff_ids: [...]}")
    diff_ids = tuple(_digest(d, f"image config rootfs.diff_ids[{i}]") for i, d in enumerate(rootfs["diff_ids"]))
    config = doc.get("config") or {}
    user = config.get("User", "") if isinstance(config, dict) else ""
    plat = Platform(str(doc.get("os", "")), str(doc.get("architecture", "")), str(doc.get("variant", "")))
    return ImageConfig(diff_ids=diff_ids, user=str(user or ""), platform=plat, raw=doc)


def chain_ids(diff_ids: tuple[str, ...] | list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(diff_id if not chains else sha256_digest(f"{chains[-1]} {diff_id}".encode()))
    return chains


def user_of(user: str) -> tuple[int | None, str]:
    """CRI's Image uid/username from the config's User: ``1002`` -> uid; ``www-data:1004`` -> username."""
    if not user:
        return None, ""
    name = user.split(":", 1)[0]
    if name.isdigit():
        return int(name), ""
    return None, name
