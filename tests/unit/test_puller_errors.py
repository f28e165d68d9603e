"""pycri.images.pull.Puller against a fake registry: endpoint fallback, error classes and messages, claims.

Manifests, configs and layers are real JSON and tar bytes with correct digests, so the
success path stores and unpacks them for real in a ContentStore and LayerStore under tmp_path.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pycri import errors
from pycri.images import manifest as mf
from pycri.images import reference, unpack
from pycri.images.auth import Credentials
from pycri.images.content import ContentStore
from pycri.images.layers import LayerStore
from pycri.images.pull import Claims, Pulled, Puller
from pycri.images.reference import Reference
from pycri.images.registries_conf import Endpoint
from pycri.images.registry import Fetched, ManifestNotFound, RegistryAuthError, RegistryClient, RegistryError
from tests.support import hostile

LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MIRROR = "mirror.example.com"
PRIMARY = "registry-1.docker.io"
REPO = "library/busybox"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


@dataclass
class Image:
    config: bytes
    manifest: bytes
    layers: list[bytes]  # compressed blobs
    diff_ids: list[str]

    @property
    def config_digest(self) -> str:
        return sha(self.config)

    @property
    def manifest_digest(self) -> str:
        return sha(self.manifest)

    @property
    def layer_digests(self) -> list[str]:
        return [sha(layer) for layer in self.layers]

    @property
    def chain_ids(self) -> list[str]:
        return mf.chain_ids(self.diff_ids)

    def blobs(self) -> dict[str, bytes]:
        found = {self.config_digest: self.config}
        found.update({sha(layer): layer for layer in self.layers})
        return found


def build_image(
    layer_files: list[dict[str, bytes]],
    *,
    diff_ids: list[str] | None = None,
    config: bytes | None = None,
    docker: bool = False,
    user: str = "1002",
    tars: list[bytes] | None = None,
) -> Image:
    """An image of one layer per dict of files, or of the ready-made layer ``tars``."""
    tars = [tar_of(files) for files in layer_files] if tars is None else tars
    layers = [gzip.compress(t, mtime=0) for t in tars]
    real_diff_ids = [sha(t) for t in tars]
    host = mf.host_platform()
    if config is None:
        config = dumps(
            {
                "architecture": host.architecture,
                "os": host.os,
                "config": {"User": user, "Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": real_diff_ids if diff_ids is None else diff_ids},
            }
        )
    media_type = mf.DOCKER_MANIFEST if docker else mf.OCI_MANIFEST
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "config": {"mediaType": mf.DOCKER_CONFIG if docker else mf.OCI_CONFIG, "digest": sha(config), "size": len(config)},
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip" if docker else LAYER_GZIP,
                "digest": sha(layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    if not docker:
        doc["mediaType"] = media_type  # a Docker manifest is told apart by its Content-Type alone
    return Image(config, dumps(doc), layers, real_diff_ids if diff_ids is None else diff_ids)


def index_bytes(*entries: tuple[mf.Platform, bytes, str], size_delta: int = 0) -> bytes:
    manifests = []
    for plat, data, media_type in entries:
        platform_doc = {"os": plat.os, "architecture": plat.architecture}
        if plat.variant:
            platform_doc["variant"] = plat.variant
        manifests.append({"mediaType": media_type, "digest": sha(data), "size": len(data) + size_delta, "platform": platform_doc})
    return dumps({"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": manifests})


FOREIGN = mf.Platform("plan9", "mips")  # no host is this


@dataclass
class Host:
    """What one registry host serves."""

    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # tag or digest -> (body, content type)
    blobs: dict[str, bytes] = field(default_factory=dict)
    error: Exception | None = None  # raised by every request: unreachable, auth...
    stall: asyncio.Event | None = None  # blob streams wait for it after their first chunk
    streaming: int = 0  # blob streams whose first chunk was taken
    streamed: asyncio.Event = field(default_factory=asyncio.Event)  # set at each of those

    def serve(self, image: Image, tag: str = "latest", content_type: str = mf.OCI_MANIFEST) -> None:
        self.manifests[tag] = (image.manifest, content_type)
        self.manifests[image.manifest_digest] = (image.manifest, content_type)
        self.blobs.update(image.blobs())

    def serve_index(self, index: bytes, children: list[Image], tag: str = "latest") -> None:
        self.manifests[tag] = (index, mf.OCI_INDEX)
        self.manifests[sha(index)] = (index, mf.OCI_INDEX)
        for child in children:
            self.manifests[child.manifest_digest] = (child.manifest, mf.OCI_MANIFEST)
            self.blobs.update(child.blobs())


class FakeRegistry(RegistryClient):
    """The four methods Puller calls, answering from ``hosts``; every request is logged."""

    def __init__(self, hosts: dict[str, Host], order: list[tuple[str, bool]]) -> None:
        # no super().__init__(): no HTTP clients
        self.hosts = hosts
        self.order = order  # (host, is a mirror), mirrors first as registries.conf gives them
        self.requests: list[tuple[str, str, str]] = []  # (host, "manifest" | "blob", reference or digest)
        self.credentials_asked: list[tuple[str, Credentials | None, str]] = []

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        return [Endpoint(host, ref.repository, False, mirror, ref) for host, mirror in self.order]

    def credentials(self, endpoint: Endpoint, given: Credentials | None, server_address: str = "") -> Credentials | None:
        self.credentials_asked.append((endpoint.host, given, server_address))
        return given

    async def manifest(self, endpoint: Endpoint, reference: str, creds: Credentials | None) -> Fetched:
        self.requests.append((endpoint.host, "manifest", reference))
        await asyncio.sleep(0)
        host = self.hosts[endpoint.host]
        if host.error is not None:
            raise host.error
        if reference not in host.manifests:
            raise ManifestNotFound(f"{endpoint.host}/{endpoint.repository}:{reference}: manifest unknown")
        data, content_type = host.manifests[reference]
        return Fetched(data, content_type, sha(data))

    async def blob(self, endpoint: Endpoint, digest: str, creds: Credentials | None) -> AsyncIterator[bytes]:
        self.requests.append((endpoint.host, "blob", digest))
        host = self.hosts[endpoint.host]
        if host.error is not None:
            raise host.error
        if digest not in host.blobs:
            raise ManifestNotFound(f"{endpoint.host}/{endpoint.repository}: blob {digest} unknown")
        data = host.blobs[digest]
        middle = len(data) // 2
        yield data[:middle]
        host.streaming += 1
        host.streamed.set()
        if host.stall is not None:
            await host.stall.wait()
        await asyncio.sleep(0)
        yield data[middle:]

    def asked(self, host: str, kind: str | None = None) -> list[str]:
        return [what for h, k, what in self.requests if h == host and (kind is None or k == kind)]


@dataclass
class Rig:
    registry: FakeRegistry
    content: ContentStore
    layers: LayerStore
    claims: Claims
    puller: Puller

    async def pull(self, text: str = "busybox", creds: Credentials | None = None, **kw: Any) -> Pulled:
        return await self.puller.pull(reference.parse(text), creds, **kw)

    def ingest_leftovers(self) -> list[str]:
        return os.listdir(self.content.ingest_dir) + [n for n in os.listdir(self.layers.root) if n.startswith(".")]


def make_rig(tmp_path: Path, hosts: dict[str, Host], order: list[tuple[str, bool]] | None = None) -> Rig:
    registry = FakeRegistry(hosts, order if order is not None else [(MIRROR, True), (PRIMARY, False)])
    content = ContentStore(tmp_path / "content")
    content.prepare()
    layers = LayerStore(tmp_path / "layers")
    layers.prepare()
    claims = Claims()
    return Rig(registry, content, layers, claims, Puller(registry, content, layers, claims, concurrency=2))


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


def assert_unclaimed(claims: Claims, keys: list[str]) -> None:
    held = [key for key in keys if key in claims]
    assert held == [], f"still claimed: {held}"


IMAGE = build_image([{"etc/hello": b"hello\n"}, {"bin/sh": b"#!shell\n", "etc/hello": b"bye\n"}])
REF = "docker.io/library/busybox:latest"


# -- success paths ------------------------------------------------------------------------------------


async def test_pull_a_manifest_from_the_primary(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    creds = Credentials(username="u", password="p")
    pulled = await rig.pull(creds=creds, server_address="docker.io")

    assert pulled.config_digest == IMAGE.config_digest
    assert pulled.top_digest == IMAGE.manifest_digest
    assert pulled.manifest_digest == IMAGE.manifest_digest
    assert pulled.media_type == mf.OCI_MANIFEST
    assert pulled.chain_ids == IMAGE.chain_ids
    assert pulled.blobs == [IMAGE.manifest_digest, IMAGE.config_digest, *IMAGE.layer_digests]
    assert pulled.size == len(IMAGE.manifest) + len(IMAGE.config) + sum(len(layer) for layer in IMAGE.layers)
    assert pulled.config.user == "1002"
    assert pulled.config.diff_ids == tuple(IMAGE.diff_ids)
    assert rig.registry.credentials_asked == [(PRIMARY, creds, "docker.io")]

    assert rig.content.digests() == {IMAGE.manifest_digest, IMAGE.config_digest, *IMAGE.layer_digests}
    assert rig.layers.chain_ids() == set(IMAGE.chain_ids)
    assert (rig.layers.path(IMAGE.chain_ids[0]) / "etc" / "hello").read_bytes() == b"hello\n"
    assert (rig.layers.path(IMAGE.chain_ids[1]) / "etc" / "hello").read_bytes() == b"bye\n"
    assert rig.ingest_leftovers() == []

    # the pull keeps its claims until the caller records the image and releases them
    assert all(key in rig.claims for key in pulled.claimed)
    rig.claims.release(pulled.claimed)
    assert_unclaimed(rig.claims, pulled.claimed)


async def test_pull_through_an_index(tmp_path: Path) -> None:
    other = build_image([{"foreign": b"x"}])
    index = index_bytes((FOREIGN, other.manifest, mf.OCI_MANIFEST), (mf.host_platform(), IMAGE.manifest, mf.OCI_MANIFEST))
    primary = Host()
    primary.serve_index(index, [IMAGE, other])
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    pulled = await rig.pull()
    assert pulled.top_digest == sha(index)
    assert pulled.manifest_digest == IMAGE.manifest_digest
    assert pulled.blobs[:3] == [sha(index), IMAGE.manifest_digest, IMAGE.config_digest]
    assert pulled.size == len(index) + len(IMAGE.manifest) + len(IMAGE.config) + sum(len(x) for x in IMAGE.layers)
    assert rig.content.read(sha(index)) == index
    assert rig.content.read(IMAGE.manifest_digest) == IMAGE.manifest
    assert rig.registry.asked(PRIMARY, "manifest") == ["latest", IMAGE.manifest_digest]
    assert other.config_digest not in rig.registry.asked(PRIMARY, "blob")


async def test_pull_by_digest(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    pulled = await rig.pull(f"busybox@{IMAGE.manifest_digest}")
    assert pulled.top_digest == IMAGE.manifest_digest
    assert rig.registry.asked(PRIMARY, "manifest") == [IMAGE.manifest_digest]


async def test_pull_a_docker_manifest_told_by_its_content_type(tmp_path: Path) -> None:
    image = build_image([{"f": b"docker"}], docker=True)
    primary = Host()
    primary.serve(image, content_type=mf.DOCKER_MANIFEST)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    pulled = await rig.pull()
    assert pulled.media_type == mf.DOCKER_MANIFEST
    assert (rig.layers.path(pulled.chain_ids[0]) / "f").read_bytes() == b"docker"


async def test_pull_reports_progress(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    seen: list[tuple[str, str, int, int]] = []
    await rig.pull(progress=lambda what, digest, done, total: seen.append((what, digest, done, total)))
    last = {(what, digest): (done, total) for what, digest, done, total in seen}
    assert last[("config", IMAGE.config_digest)] == (len(IMAGE.config), len(IMAGE.config))
    for layer in IMAGE.layers:
        assert last[("layer", sha(layer))] == (len(layer), len(layer))


async def test_layers_already_unpacked_are_not_downloaded_again(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    first = await rig.pull()
    rig.claims.release(first.claimed)
    for digest in IMAGE.layer_digests:
        rig.content.delete(digest)  # only the unpacked layers remain
    rig.registry.requests.clear()
    seen: list[tuple[str, str, int, int]] = []
    second = await rig.pull(progress=lambda *a: seen.append(a))
    assert second.chain_ids == first.chain_ids
    assert rig.registry.asked(PRIMARY, "blob") == []  # the config is in the store, the layers are unpacked
    assert sorted((what, digest, done) for what, digest, done, _ in seen) == sorted(
        ("layer", sha(x), len(x)) for x in IMAGE.layers
    )


# -- endpoint fallback --------------------------------------------------------------------------------


async def test_mirror_not_found_then_primary_succeeds(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {MIRROR: Host(), PRIMARY: primary})
    pulled = await rig.pull()
    assert pulled.config_digest == IMAGE.config_digest
    assert rig.registry.asked(MIRROR) == ["latest"]
    assert rig.registry.asked(PRIMARY, "manifest") == ["latest"]
    rig.claims.release(pulled.claimed)
    assert_unclaimed(rig.claims, pulled.claimed)


async def test_mirror_unreachable_then_primary_succeeds(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    mirror = Host(error=RegistryError(f"{MIRROR}: cannot connect: connection refused"))
    rig = make_rig(tmp_path, {MIRROR: mirror, PRIMARY: primary})
    assert (await rig.pull()).manifest_digest == IMAGE.manifest_digest


async def test_mirror_missing_a_blob_then_primary_succeeds_and_claims_balance(tmp_path: Path) -> None:
    mirror = Host()
    mirror.serve(IMAGE)
    del mirror.blobs[IMAGE.layer_digests[1]]
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {MIRROR: mirror, PRIMARY: primary})
    pulled = await rig.pull()
    assert IMAGE.layer_digests[1] in rig.registry.asked(MIRROR, "blob")
    from_primary = rig.registry.asked(PRIMARY, "blob")
    assert IMAGE.layer_digests[1] in from_primary
    assert IMAGE.config_digest not in from_primary  # kept from the mirror attempt
    assert rig.layers.chain_ids() == set(IMAGE.chain_ids)
    # the mirror attempt released what it claimed: one release leaves nothing
    rig.claims.release(pulled.claimed)
    assert_unclaimed(rig.claims, pulled.claimed)
    # (no check of ingest/ here: the layer download cancelled by the mirror's failure may have been
    # inside tempfile.mkstemp, which leaks its file; see test_content_store's xfail)


async def test_mirror_missing_the_config_then_primary_succeeds(tmp_path: Path) -> None:
    mirror = Host()
    mirror.serve(IMAGE)
    del mirror.blobs[IMAGE.config_digest]
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {MIRROR: mirror, PRIMARY: primary})
    pulled = await rig.pull()
    assert rig.registry.asked(MIRROR, "blob") == [IMAGE.config_digest]
    assert sorted(rig.registry.asked(PRIMARY, "blob")) == sorted([IMAGE.config_digest, *IMAGE.layer_digests])
    rig.claims.release(pulled.claimed)
    assert_unclaimed(rig.claims, pulled.claimed)
    assert rig.ingest_leftovers() == []


async def test_all_endpoints_not_found(tmp_path: Path) -> None:
    second_mirror = "mirror2.example.com"
    rig = make_rig(
        tmp_path,
        {MIRROR: Host(), second_mirror: Host(), PRIMARY: Host()},
        [(MIRROR, True), (second_mirror, True), (PRIMARY, False)],
    )
    with pytest.raises(errors.NotFound) as info:
        await rig.pull()
    assert type(info.value) is errors.NotFound
    assert info.value.code is errors.Code.NOT_FOUND
    assert info.value.message == (
        f"pulling {REF}: image not found: "
        f"mirror {MIRROR}/{REPO}:latest: manifest unknown; "
        f"mirror {second_mirror}/{REPO}:latest: manifest unknown; "
        f"registry {PRIMARY}/{REPO}:latest: manifest unknown"
    )


async def test_only_the_primary_not_found(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, {PRIMARY: Host()}, [(PRIMARY, False)])
    with pytest.raises(errors.NotFound) as info:
        await rig.pull("busybox:1.99")
    expected = f"pulling docker.io/library/busybox:1.99: image not found: registry {PRIMARY}/{REPO}:1.99: manifest unknown"
    assert info.value.message == expected


async def test_mirror_unreachable_and_primary_not_found_is_unavailable(tmp_path: Path) -> None:
    """Unreachable tells more than not found (pull.py: "auth over unreachable over not found")."""
    mirror = Host(error=RegistryError(f"{MIRROR}: cannot connect: connection refused"))
    rig = make_rig(tmp_path, {MIRROR: mirror, PRIMARY: Host()})
    with pytest.raises(RegistryError) as info:
        await rig.pull()
    assert type(info.value) is RegistryError
    assert info.value.code is errors.Code.UNAVAILABLE
    assert info.value.message == (
        f"pulling {REF}: mirror {MIRROR}: cannot connect: connection refused; registry {PRIMARY}/{REPO}:latest: manifest unknown"
    )


async def test_mirror_not_found_and_primary_unreachable_is_unavailable(tmp_path: Path) -> None:
    primary = Host(error=RegistryError(f"{PRIMARY}: GET /v2/{REPO}/manifests/latest answered 502"))
    rig = make_rig(tmp_path, {MIRROR: Host(), PRIMARY: primary})
    with pytest.raises(RegistryError) as info:
        await rig.pull()
    assert type(info.value) is RegistryError
    assert info.value.message == (
        f"pulling {REF}: mirror {MIRROR}/{REPO}:latest: manifest unknown; "
        f"registry {PRIMARY}: GET /v2/{REPO}/manifests/latest answered 502"
    )


async def test_auth_failure_beats_unreachable_and_not_found(tmp_path: Path) -> None:
    second_mirror = "mirror2.example.com"
    hosts = {
        MIRROR: Host(error=RegistryError(f"{MIRROR}: cannot connect: refused")),
        second_mirror: Host(error=RegistryAuthError(f"{second_mirror}: authentication failed for {REPO}")),
        PRIMARY: Host(),
    }
    rig = make_rig(tmp_path, hosts, [(MIRROR, True), (second_mirror, True), (PRIMARY, False)])
    with pytest.raises(RegistryAuthError) as info:
        await rig.pull()
    assert info.value.code is errors.Code.UNAUTHENTICATED
    assert f"mirror {MIRROR}: cannot connect: refused" in info.value.message
    assert f"mirror {second_mirror}: authentication failed for {REPO}" in info.value.message
    assert f"registry {PRIMARY}/{REPO}:latest: manifest unknown" in info.value.message


async def test_a_failing_primary_ends_the_search(tmp_path: Path) -> None:
    later = "later.example.com"
    primary = Host()
    rig = make_rig(tmp_path, {PRIMARY: primary, later: Host()}, [(PRIMARY, False), (later, True)])
    with pytest.raises(errors.NotFound):
        await rig.pull()
    assert rig.registry.asked(later) == []


async def test_a_corrupt_mirror_is_data_loss_without_fallback(tmp_path: Path) -> None:
    """Only not-found and registry errors move on to the next endpoint; bad data stops the pull."""
    mirror = Host()
    mirror.serve(IMAGE)
    mirror.blobs[IMAGE.config_digest] = b"{}" + IMAGE.config[2:]
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {MIRROR: mirror, PRIMARY: primary})
    with pytest.raises(errors.DataLoss):
        await rig.pull()
    assert rig.registry.asked(PRIMARY) == []
    assert_unclaimed(rig.claims, [IMAGE.manifest_digest, IMAGE.config_digest, *IMAGE.layer_digests])


# -- data errors --------------------------------------------------------------------------------------


async def test_index_without_the_hosts_platform(tmp_path: Path) -> None:
    other = build_image([{"x": b"1"}])
    windows = mf.Platform("windows", "amd64")
    index = index_bytes((FOREIGN, other.manifest, mf.OCI_MANIFEST), (windows, other.manifest, mf.OCI_MANIFEST))
    primary = Host()
    primary.serve_index(index, [other])
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.code is errors.Code.DATA_LOSS
    assert info.value.message == (
        f"pulling {REF} from {PRIMARY}: no manifest for platform {mf.host_platform()} in the index "
        "(it has: plan9/mips, windows/amd64)"
    )
    assert rig.content.digests() == set()
    assert rig.registry.asked(PRIMARY) == ["latest"]


async def test_index_child_size_mismatch(tmp_path: Path) -> None:
    index = index_bytes((mf.host_platform(), IMAGE.manifest, mf.OCI_MANIFEST), size_delta=1)
    primary = Host()
    primary.serve_index(index, [IMAGE])
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message == (
        f"pulling {REF} from {PRIMARY}: manifest {IMAGE.manifest_digest} of {REF}: "
        f"size {len(IMAGE.manifest)}, index says {len(IMAGE.manifest) + 1}"
    )


async def test_index_child_digest_mismatch(tmp_path: Path) -> None:
    index = index_bytes((mf.host_platform(), IMAGE.manifest, mf.OCI_MANIFEST))
    primary = Host()
    primary.serve_index(index, [IMAGE])
    tampered = IMAGE.manifest.replace(b'"schemaVersion": 2', b'"schemaVersion":  2')
    primary.manifests[IMAGE.manifest_digest] = (tampered, mf.OCI_MANIFEST)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    expected = (
        f"manifest {IMAGE.manifest_digest} of {REF}: digest mismatch: expected {IMAGE.manifest_digest}, got {sha(tampered)}"
    )
    assert expected in info.value.message


async def test_nested_index(tmp_path: Path) -> None:
    inner = index_bytes((mf.host_platform(), IMAGE.manifest, mf.OCI_MANIFEST))
    outer = index_bytes((mf.host_platform(), inner, mf.OCI_INDEX))
    primary = Host()
    primary.serve_index(outer, [IMAGE])
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message == f"pulling {REF} from {PRIMARY}: {REF}: nested indexes are not supported"


async def test_pull_by_digest_with_wrong_content(tmp_path: Path) -> None:
    other = build_image([{"other": b"1"}])
    primary = Host()
    primary.serve(IMAGE)
    primary.manifests[IMAGE.manifest_digest] = (other.manifest, mf.OCI_MANIFEST)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    ref = f"docker.io/library/busybox@{IMAGE.manifest_digest}"
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull(ref)
    assert info.value.message == (
        f"pulling {ref} from {PRIMARY}: manifest {ref}: "
        f"digest mismatch: expected {IMAGE.manifest_digest}, got {other.manifest_digest}"
    )


async def test_schema1_manifest(tmp_path: Path) -> None:
    schema1 = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    primary = Host()
    primary.manifests["latest"] = (dumps({"schemaVersion": 1, "name": REPO, "fsLayers": []}), schema1)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message == f"pulling {REF} from {PRIMARY}: manifest: unknown media type {schema1}"


async def test_schema1_manifest_with_its_own_media_type(tmp_path: Path) -> None:
    schema1 = "application/vnd.docker.distribution.manifest.v1+json"
    primary = Host()
    primary.manifests["latest"] = (dumps({"schemaVersion": 1, "mediaType": schema1, "fsLayers": []}), schema1)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss, match=r"schema 1 manifests are not supported\)$"):
        await rig.pull()


async def test_config_diff_ids_count_mismatch_releases_claims(tmp_path: Path) -> None:
    image = build_image([{"a": b"1"}, {"b": b"2"}], diff_ids=[sha(b"one"), sha(b"two"), sha(b"three")])
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message == f"pulling {REF}: 2 layers in the manifest, 3 diff IDs in the config"
    assert_unclaimed(rig.claims, [image.manifest_digest, image.config_digest, *image.layer_digests, *image.chain_ids])
    assert rig.registry.asked(PRIMARY, "blob") == [image.config_digest]  # no layer was fetched
    assert rig.layers.chain_ids() == set()


async def test_an_oversized_config_is_refused_before_it_is_fetched(tmp_path: Path) -> None:
    config = dumps({"rootfs": {"type": "layers", "diff_ids": []}, "padding": "x" * mf.MAX_CONFIG_BYTES})
    image = build_image([], config=config)
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.ResourceExhausted) as info:
        await rig.pull()
    assert info.value.message == (
        f"pulling {REF}: image config {image.config_digest} is {len(config)} bytes, over the {mf.MAX_CONFIG_BYTES}-byte limit"
    )
    assert rig.registry.asked(PRIMARY, "blob") == []
    assert_unclaimed(rig.claims, [image.manifest_digest, image.config_digest])


async def test_bad_config_json(tmp_path: Path) -> None:
    image = build_image([{"a": b"1"}], config=b"not json")
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss, match=rf"^pulling {REF}: image config: not valid JSON: "):
        await rig.pull()
    assert_unclaimed(rig.claims, [image.manifest_digest, image.config_digest, *image.layer_digests])


async def test_corrupt_layer_blob_releases_claims_and_leaves_no_layers(tmp_path: Path) -> None:
    primary = Host()
    primary.serve(IMAGE)
    bad = bytearray(IMAGE.layers[1])
    bad[len(bad) // 2] ^= 0xFF
    primary.blobs[IMAGE.layer_digests[1]] = bytes(bad)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message == (
        f"{PRIMARY}/{REPO}: layer {IMAGE.layer_digests[1]}: digest mismatch: content is {sha(bytes(bad))}"
    )
    assert_unclaimed(rig.claims, [IMAGE.manifest_digest, IMAGE.config_digest, *IMAGE.layer_digests, *IMAGE.chain_ids])
    assert not rig.layers.has(IMAGE.chain_ids[1])
    assert IMAGE.layer_digests[1] not in rig.content.digests()
    assert rig.ingest_leftovers() == []


async def test_a_header_bomb_is_refused_naming_the_layer(tmp_path: Path) -> None:
    bomb = hostile.joined(hostile.header_bomb(tarfile.XHDTYPE, 64 << 20))
    image = build_image([], tars=[tar_of({"a": b"1"}), bomb])
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.ResourceExhausted) as info:
        await rig.pull()
    assert info.value.code is errors.Code.RESOURCE_EXHAUSTED
    assert info.value.message == (
        f"layer {image.layer_digests[1]}: layer tar stream: PAX extended header of {64 << 20} bytes at offset 0 "
        "is over the 1048576-byte limit"
    )
    assert_unclaimed(rig.claims, [image.manifest_digest, image.config_digest, *image.layer_digests, *image.chain_ids])
    assert not rig.layers.has(image.chain_ids[1])


async def test_running_out_of_memory_unpacking_is_refused_naming_the_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def starve(stream: object, dest: Path, **kw: object) -> None:
        raise MemoryError

    monkeypatch.setattr(unpack, "unpack_layer", starve)
    primary = Host()
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.ResourceExhausted) as info:
        await rig.pull()
    assert info.value.message in {f"layer {digest}: out of memory unpacking the layer" for digest in IMAGE.layer_digests}
    assert rig.ingest_leftovers() == []


async def test_wrong_diff_id_is_data_loss(tmp_path: Path) -> None:
    good = build_image([{"a": b"1"}])
    image = build_image([{"a": b"1"}], diff_ids=[sha(b"something else")])
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    with pytest.raises(errors.DataLoss) as info:
        await rig.pull()
    assert info.value.message.startswith(f"layer {image.layer_digests[0]}: layer ")
    assert f"uncompressed digest {good.diff_ids[0]} does not match the config's diff ID {sha(b'something else')}" in (
        info.value.message
    )
    assert rig.layers.chain_ids() == set()
    assert_unclaimed(rig.claims, [image.manifest_digest, image.config_digest, *image.layer_digests, *image.chain_ids])


async def test_a_failed_pull_keeps_other_pulls_claims(tmp_path: Path) -> None:
    image = build_image([{"a": b"1"}], diff_ids=[sha(b"one"), sha(b"two")])
    primary = Host()
    primary.serve(image)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    rig.claims.add([image.config_digest])  # another pull under way holds it
    with pytest.raises(errors.DataLoss):
        await rig.pull()
    assert image.config_digest in rig.claims
    rig.claims.release([image.config_digest])
    assert image.config_digest not in rig.claims


async def test_a_cancelled_pull_releases_claims_and_leaves_no_temp_files(tmp_path: Path) -> None:
    stall = asyncio.Event()
    primary = Host(stall=stall)
    primary.serve(IMAGE)
    rig = make_rig(tmp_path, {PRIMARY: primary}, [(PRIMARY, False)])
    # the config is here already; both layer downloads stall after their first chunk
    rig.content.path(IMAGE.config_digest).write_bytes(IMAGE.config)
    task = asyncio.create_task(rig.pull())
    async with asyncio.timeout(10):
        while primary.streaming < len(IMAGE.layers):
            primary.streamed.clear()
            await primary.streamed.wait()
    assert len(os.listdir(rig.content.ingest_dir)) == len(IMAGE.layers)
    assert all(key in rig.claims for key in IMAGE.chain_ids)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_unclaimed(rig.claims, [IMAGE.manifest_digest, IMAGE.config_digest, *IMAGE.layer_digests, *IMAGE.chain_ids])
    assert rig.content.in_flight() == set()
    # _layers cancels its tasks a second time, which can interrupt the await of a (shielded) temp-file
    # removal: the file goes a moment later
    await eventually(lambda: rig.ingest_leftovers() == [])
    assert set(IMAGE.layer_digests).isdisjoint(rig.content.digests())
