"""pycri.images.importer against a real ImageService: OCI layouts and docker-archives, good and hostile."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycri import config, errors
from pycri.images import manifest as mf
from pycri.images.importer import import_archive
from pycri.images.service import ImageService
from pycri.store import Store
from tests.support import hostile

MTIME = 1_700_000_000
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def hex_of(digest: str) -> str:
    return digest.partition(":")[2]


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def layer_tar(files: Mapping[str, bytes]) -> bytes:
    """A deterministic layer: each file with its parent directories."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs: set[str] = set()
        for path in files:
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, MTIME
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, MTIME
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


@dataclass
class Layer:
    tar: bytes
    gzip: bool = False

    @property
    def blob(self) -> bytes:
        return gzip.compress(self.tar, mtime=0) if self.gzip else self.tar

    @property
    def diff_id(self) -> str:
        return digest_of(self.tar)

    @property
    def media_type(self) -> str:
        return OCI_LAYER + "+gzip" if self.gzip else OCI_LAYER

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": digest_of(self.blob), "size": len(self.blob)}


class Image:
    def __init__(
        self, layers: Sequence[Layer], *, arch: str | None = None, cmd: str = "/bin/true", diff_ids: list[str] | None = None
    ) -> None:
        self.layers = list(layers)
        self.config = {
            "architecture": arch or mf.host_platform().architecture,
            "os": "linux",
            "config": {"Cmd": [cmd], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids if diff_ids is not None else [la.diff_id for la in layers]},
        }
        self.config_bytes = dumps(self.config)
        self.manifest_bytes = dumps(
            {
                "schemaVersion": 2,
                "mediaType": mf.OCI_MANIFEST,
                "config": {"mediaType": mf.OCI_CONFIG, "digest": self.id, "size": len(self.config_bytes)},
                "layers": [la.descriptor() for la in self.layers],
            }
        )

    @property
    def id(self) -> str:
        return digest_of(self.config_bytes)

    @property
    def manifest_digest(self) -> str:
        return digest_of(self.manifest_bytes)

    def descriptor(self, annotations: Mapping[str, str] | None = None, platform: bool = False) -> dict[str, Any]:
        desc: dict[str, Any] = {"mediaType": mf.OCI_MANIFEST, "digest": self.manifest_digest, "size": len(self.manifest_bytes)}
        if annotations:
            desc["annotations"] = dict(annotations)
        if platform:
            desc["platform"] = {"os": "linux", "architecture": self.config["architecture"]}
        return desc

    def blobs(self) -> dict[str, bytes]:
        out = {digest_of(la.blob): la.blob for la in self.layers}
        out[self.id] = self.config_bytes
        out[self.manifest_digest] = self.manifest_bytes
        return out


def hello(text: str = "hello", gz: bool = False) -> Layer:
    return Layer(layer_tar({"etc/hello": text.encode() + b"\n"}), gzip=gz)


def write_oci(root: Path, entries: Sequence[tuple[dict[str, Any], dict[str, bytes]]]) -> Path:
    """An OCI layout in ``root``: index.json lists each descriptor; blobs holds each blob."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (root / "index.json").write_bytes(dumps({"schemaVersion": 2, "manifests": [desc for desc, _ in entries]}))
    for _, blobs in entries:
        for digest, data in blobs.items():
            path = root / "blobs" / "sha256" / hex_of(digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


def write_docker(root: Path, images: Sequence[tuple[Image, list[str]]]) -> Path:
    """A legacy ``docker save`` directory: <id>.json configs, <layer>/layer.tar uncompressed layers."""
    root.mkdir(parents=True, exist_ok=True)
    manifest = []
    for image, tags in images:
        (root / f"{hex_of(image.id)}.json").write_bytes(image.config_bytes)
        layer_names = []
        for i, layer in enumerate(image.layers):
            layer_dir = hashlib.sha256(f"{image.id}{i}".encode()).hexdigest()
            (root / layer_dir).mkdir(exist_ok=True)
            (root / layer_dir / "layer.tar").write_bytes(layer.blob)
            layer_names.append(f"{layer_dir}/layer.tar")
        manifest.append({"Config": f"{hex_of(image.id)}.json", "RepoTags": tags, "Layers": layer_names})
    (root / "manifest.json").write_bytes(dumps(manifest))
    return root


def tar_of(directory: Path, out: Path, *, compress: bool = False) -> Path:
    with tarfile.open(out, "w:gz" if compress else "w") as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return out


def add_member(tar_path: Path, info: tarfile.TarInfo, data: bytes = b"") -> None:
    with tarfile.open(tar_path, "a") as tar:
        tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.fixture
async def images(tmp_path: Path) -> AsyncIterator[ImageService]:
    cfg = config.from_dict(
        {
            "root_dir": str(tmp_path / "root"),
            "state_dir": str(tmp_path / "run"),
            "images": {"registries_conf": str(tmp_path / "absent-registries.conf")},
        }
    )
    (tmp_path / "root").mkdir()
    store = await Store.open(cfg.database)
    service = ImageService(cfg, store)
    await service.start()
    try:
        yield service
    finally:
        await service.close()
        await store.close()


async def assert_nothing_left(images: ImageService) -> None:
    assert images.list() == []
    assert await images.store.images.all() == []
    assert images.content.digests() == set()
    assert images.layers.chain_ids() == set()
    assert list(images.content.ingest_dir.iterdir()) == []
    assert not images.claims._counts


# -- OCI image layouts ----------------------------------------------------------------------------


async def test_oci_layout_directory(images: ImageService, tmp_path: Path) -> None:
    base, top = hello("base"), Layer(layer_tar({"usr/bin/app": b"#!/bin/sh\n"}), gzip=True)
    image = Image([base, top])
    layout = write_oci(
        tmp_path / "layout", [(image.descriptor({"io.containerd.image.name": "docker.io/library/app:1.0"}), image.blobs())]
    )

    [record] = await import_archive(images, layout)

    assert record.id == image.id
    assert record.repo_tags == ["docker.io/library/app:1.0"]
    assert record.manifest_digest == image.manifest_digest
    assert record.media_type == mf.OCI_MANIFEST
    assert record.chain_ids == mf.chain_ids([base.diff_id, top.diff_id])
    assert record.size == len(image.manifest_bytes) + len(image.config_bytes) + len(base.blob) + len(top.blob)
    assert record.user == (1000, "")
    assert images.find("app:1.0") is record
    assert set(record.blobs) == set(image.blobs())
    assert images.content.digests() == set(image.blobs())
    assert images.content.read(image.id) == image.config_bytes
    top_dir = images.layers.path(record.chain_ids[1])
    assert (top_dir / "usr" / "bin" / "app").read_bytes() == b"#!/bin/sh\n"
    assert (images.layers.path(record.chain_ids[0]) / "etc" / "hello").read_bytes() == b"base\n"
    [row] = await images.store.images.all()
    assert row.id == image.id
    assert row.repo_tags == ["docker.io/library/app:1.0"]
    assert not images.claims._counts


async def test_oci_layout_tar_names_from_ref_name(images: ImageService, tmp_path: Path) -> None:
    one, two, three = Image([hello("1", gz=True)]), Image([hello("2")]), Image([hello("3")])
    layout = write_oci(
        tmp_path / "layout",
        [
            (one.descriptor({"org.opencontainers.image.ref.name": "example.com/team/one:v1"}), one.blobs()),
            (two.descriptor({"org.opencontainers.image.ref.name": "latest"}), two.blobs()),  # a bare tag names no repository
            (three.descriptor({"org.opencontainers.image.ref.name": "busybox:1.36"}), three.blobs()),
        ],
    )
    archive = tar_of(layout, tmp_path / "oci.tar")

    records = await import_archive(images, archive)

    assert [r.id for r in records] == [one.id, two.id, three.id]
    assert [r.repo_tags for r in records] == [["example.com/team/one:v1"], [], ["docker.io/library/busybox:1.36"]]
    assert {r.id for r in images.list()} == {one.id, two.id, three.id}


async def test_oci_index_entry_gets_this_hosts_platform(images: ImageService, tmp_path: Path) -> None:
    here = Image([hello("here")])
    elsewhere = Image([hello("elsewhere")], arch="s390x" if mf.host_platform().architecture != "s390x" else "amd64")
    index_bytes = dumps(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_INDEX,
            "manifests": [elsewhere.descriptor(platform=True), here.descriptor(platform=True)],
        }
    )
    index_digest = digest_of(index_bytes)
    top = {
        "mediaType": mf.OCI_INDEX,
        "digest": index_digest,
        "size": len(index_bytes),
        "annotations": {"io.containerd.image.name": "registry.local:5000/multi:2"},
    }
    # Only this platform's blobs are in the archive: the other one's are not needed.
    layout = write_oci(tmp_path / "layout", [(top, {index_digest: index_bytes, **here.blobs()})])

    [record] = await import_archive(images, layout)

    assert record.id == here.id
    assert record.repo_tags == ["registry.local:5000/multi:2"]
    assert record.manifest_digest == here.manifest_digest
    assert index_digest in record.blobs
    assert images.content.has(index_digest)


async def test_gzipped_oci_archive_and_same_image_twice(images: ImageService, tmp_path: Path) -> None:
    image = Image([hello()])
    layout = write_oci(
        tmp_path / "layout",
        [
            (image.descriptor({"io.containerd.image.name": "docker.io/library/a:1"}), image.blobs()),
            (image.descriptor({"io.containerd.image.name": "docker.io/library/a:2"}), {}),
        ],
    )
    archive = tar_of(layout, tmp_path / "oci.tar.gz", compress=True)

    [record] = await import_archive(images, archive)
    assert record.repo_tags == ["docker.io/library/a:1", "docker.io/library/a:2"]

    # Importing again changes nothing.
    [again] = await import_archive(images, archive)
    assert again is record
    assert record.repo_tags == ["docker.io/library/a:1", "docker.io/library/a:2"]
    assert len(await images.store.images.all()) == 1


# -- docker-archive ---------------------------------------------------------------------------------


async def test_docker_archive_uncompressed_layers_and_tags(images: ImageService, tmp_path: Path) -> None:
    base = hello("base")
    app = Image([base, Layer(layer_tar({"app/run": b"run\n"}))], cmd="/app/run")
    other = Image([base], cmd="/bin/other")  # shares its layer with app
    archive = tar_of(
        write_docker(tmp_path / "saved", [(app, ["app:latest", "example.com/app:1.0"]), (other, ["other:1"])]),
        tmp_path / "saved.tar",
    )

    records = await import_archive(images, archive)

    assert [r.id for r in records] == [app.id, other.id]
    assert records[0].repo_tags == ["docker.io/library/app:latest", "example.com/app:1.0"]
    assert records[1].repo_tags == ["docker.io/library/other:1"]
    assert records[0].chain_ids[0] == records[1].chain_ids[0] == base.diff_id
    assert (images.layers.path(records[0].chain_ids[1]) / "app" / "run").read_bytes() == b"run\n"
    # The layers are stored as they were in the archive (uncompressed), with a manifest written for them.
    manifest = mf.parse_manifest(images.content.read(records[0].manifest_digest), mf.OCI_MANIFEST)
    assert [layer.digest for layer in manifest.layers] == [base.diff_id, app.layers[1].diff_id]
    assert [layer.media_type for layer in manifest.layers] == [OCI_LAYER, OCI_LAYER]
    assert manifest.config.digest == app.id
    assert records[0].manifest_digest in records[0].blobs
    assert images.find("example.com/app:1.0") is records[0]


async def test_docker_archive_gzip_layer_and_symlinked_duplicate(images: ImageService, tmp_path: Path) -> None:
    # docker save writes a layer two images share once and links the second copy to the first.
    shared = hello("shared", gz=True)
    first, second = Image([shared], cmd="/a"), Image([shared], cmd="/b")
    saved = write_docker(tmp_path / "saved", [(first, ["first:1"]), (second, ["second:1"])])
    manifest = json.loads((saved / "manifest.json").read_text())
    duplicate = saved / manifest[1]["Layers"][0]
    duplicate.unlink()
    duplicate.symlink_to(Path("..") / manifest[0]["Layers"][0])
    archive = tar_of(saved, tmp_path / "saved.tar")

    records = await import_archive(images, archive)

    assert [r.repo_tags for r in records] == [["docker.io/library/first:1"], ["docker.io/library/second:1"]]
    assert records[0].chain_ids == records[1].chain_ids == [shared.diff_id]
    manifest_doc = json.loads(images.content.read(records[0].manifest_digest))
    assert manifest_doc["layers"][0]["mediaType"] == OCI_LAYER + "+gzip"
    # The directory form works too (same images: nothing new).
    assert [r.id for r in await import_archive(images, saved)] == [first.id, second.id]


async def test_import_moves_a_tag_from_another_image(images: ImageService, tmp_path: Path) -> None:
    old, new = Image([hello("old")]), Image([hello("new")])
    await import_archive(images, write_docker(tmp_path / "old", [(old, ["app:1", "app:old"])]))
    [record] = await import_archive(images, write_docker(tmp_path / "new", [(new, ["app:1"])]))

    assert record.id == new.id
    assert images.find("app:1") is record
    old_record = images.find(old.id)
    assert old_record is not None
    assert old_record.repo_tags == ["docker.io/library/app:old"]
    rows = {row.id: row for row in await images.store.images.all()}
    assert rows[old.id].repo_tags == ["docker.io/library/app:old"]
    assert rows[new.id].repo_tags == ["docker.io/library/app:1"]


# -- bad and hostile archives --------------------------------------------------------------------


async def test_path_problems(images: ImageService, tmp_path: Path) -> None:
    with pytest.raises(errors.NotFound, match="no such file"):
        await import_archive(images, tmp_path / "absent.tar")
    with pytest.raises(errors.InvalidArgument, match="must be absolute"):
        await import_archive(images, Path("relative.tar"))
    with pytest.raises(errors.InvalidArgument, match="embedded null byte"):
        await import_archive(images, Path("/tmp/a\0b"))
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(errors.InvalidArgument, match="not a tar archive"):
        await import_archive(images, junk)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.InvalidArgument, match="neither an OCI image layout"):
        await import_archive(images, empty)
    await assert_nothing_left(images)


@pytest.mark.parametrize(
    "layer_name",
    ["../outside/layer.tar", "/etc/passwd", "a/../../outside/layer.tar"],
)
async def test_docker_paths_escaping_the_archive(images: ImageService, tmp_path: Path, layer_name: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = hello()
    (outside / "layer.tar").write_bytes(layer.blob)
    image = Image([layer])
    saved = write_docker(tmp_path / "archive" / "saved", [(image, ["evil:1"])])
    doc = json.loads((saved / "manifest.json").read_text())
    doc[0]["Layers"] = [layer_name]
    (saved / "manifest.json").write_bytes(dumps(doc))
    for path in (saved, tar_of(saved, tmp_path / "saved.tar")):
        with pytest.raises(errors.InvalidArgument, match="escapes the archive"):
            await import_archive(images, path)
    await assert_nothing_left(images)


async def test_symlinks_leading_out(images: ImageService, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text("{}")
    image = Image([hello()])
    saved = write_docker(tmp_path / "saved", [(image, ["evil:1"])])
    config_file = saved / f"{hex_of(image.id)}.json"
    config_file.unlink()
    config_file.symlink_to(secret)
    with pytest.raises(errors.InvalidArgument, match="leads out of the archive"):
        await import_archive(images, saved)

    archive = tmp_path / "saved.tar"
    config_file.unlink()
    tar_of(saved, archive)
    link = tarfile.TarInfo(f"{hex_of(image.id)}.json")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../../secret.json"
    add_member(archive, link)
    with pytest.raises(errors.InvalidArgument, match="leads out of the archive"):
        await import_archive(images, archive)
    await assert_nothing_left(images)


async def test_not_a_regular_file(images: ImageService, tmp_path: Path) -> None:
    image = Image([hello()])
    saved = write_docker(tmp_path / "saved", [(image, ["x:1"])])
    archive = tar_of(saved, tmp_path / "saved.tar")
    doc = json.loads((saved / "manifest.json").read_text())
    device = tarfile.TarInfo(doc[0]["Layers"][0])  # a later entry wins: the layer becomes a device
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    add_member(archive, device)
    with pytest.raises(errors.InvalidArgument, match="not a regular file"):
        await import_archive(images, archive)
    fifo = doc[0]["Layers"][0] + ".fifo"
    os.mkfifo(saved / fifo)
    doc[0]["Layers"] = [fifo]
    (saved / "manifest.json").write_bytes(dumps(doc))
    with pytest.raises(errors.InvalidArgument, match="not a regular file"):
        await import_archive(images, saved)
    await assert_nothing_left(images)


async def test_missing_blob(images: ImageService, tmp_path: Path) -> None:
    image = Image([hello(gz=True)])
    layout = write_oci(tmp_path / "layout", [(image.descriptor({"io.containerd.image.name": "x:1"}), image.blobs())])
    (layout / "blobs" / "sha256" / hex_of(digest_of(image.layers[0].blob))).unlink()
    with pytest.raises(errors.InvalidArgument, match="missing from the archive"):
        await import_archive(images, tar_of(layout, tmp_path / "oci.tar"))
    await assert_nothing_left(images)
    shutil.rmtree(layout / "blobs")
    with pytest.raises(errors.InvalidArgument, match="missing from the archive"):
        await import_archive(images, layout)
    (layout / "index.json").unlink()
    with pytest.raises(errors.InvalidArgument, match=r"needs index\.json"):
        await import_archive(images, layout)
    await assert_nothing_left(images)


async def test_wrong_digests(images: ImageService, tmp_path: Path) -> None:
    image = Image([hello(gz=True)])
    layout = write_oci(tmp_path / "layout", [(image.descriptor({"io.containerd.image.name": "x:1"}), image.blobs())])
    blob = layout / "blobs" / "sha256" / hex_of(digest_of(image.layers[0].blob))
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    blob.write_bytes(bytes(data))
    with pytest.raises(errors.DataLoss, match="digest mismatch"):
        await import_archive(images, layout)
    blob.write_bytes(bytes(data) + b"extra")
    with pytest.raises(errors.DataLoss, match="descriptor says"):
        await import_archive(images, layout)
    manifest = layout / "blobs" / "sha256" / hex_of(image.manifest_digest)
    manifest.write_bytes(manifest.read_bytes().replace(b"schemaVersion", b"schemaVersioN"))
    with pytest.raises(errors.DataLoss, match="digest mismatch"):
        await import_archive(images, layout)
    await assert_nothing_left(images)

    # docker-archive: a config whose name is its digest, but whose content is not.
    saved = write_docker(tmp_path / "saved", [(image, ["x:1"])])
    config_file = saved / f"{hex_of(image.id)}.json"
    config_file.write_bytes(config_file.read_bytes().replace(b"/bin/true", b"/bin/evil"))
    with pytest.raises(errors.DataLoss, match="digest mismatch"):
        await import_archive(images, saved)
    await assert_nothing_left(images)


async def test_diff_id_mismatch_leaves_no_layer(images: ImageService, tmp_path: Path) -> None:
    layer = hello()
    image = Image([layer], diff_ids=[digest_of(b"something else")])
    with pytest.raises(errors.DataLoss, match="does not match the config's diff ID"):
        await import_archive(images, write_docker(tmp_path / "saved", [(image, ["x:1"])]))
    await assert_nothing_left(images)


async def test_a_hostile_layer_is_refused_naming_it(images: ImageService, tmp_path: Path) -> None:
    bomb = Layer(hostile.joined(hostile.header_bomb(tarfile.XHDTYPE, 8 << 20)), gzip=True)
    image = Image([hello(), bomb])
    with pytest.raises(errors.ResourceExhausted) as info:
        await import_archive(images, write_docker(tmp_path / "saved", [(image, ["x:1"])]))
    assert f"layer {digest_of(bomb.blob)}: layer tar stream: PAX extended header of {8 << 20} bytes" in info.value.message
    await assert_nothing_left(images)


async def test_one_bad_image_fails_the_whole_archive(images: ImageService, tmp_path: Path) -> None:
    good, bad = Image([hello("good")]), Image([hello("bad")], diff_ids=[])  # 1 layer, 0 diff IDs
    with pytest.raises(errors.InvalidArgument, match="1 layers, but 0 diff IDs"):
        await import_archive(images, write_docker(tmp_path / "saved", [(good, ["good:1"]), (bad, ["bad:1"])]))
    await assert_nothing_left(images)


async def test_hostile_layer_content(images: ImageService, tmp_path: Path) -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    layer = Layer(out.getvalue())
    with pytest.raises(errors.DataLoss, match="escapes the destination"):
        await import_archive(images, write_docker(tmp_path / "saved", [(Image([layer]), ["x:1"])]))
    await assert_nothing_left(images)
    assert not (images.layers.root.parent / "escape").exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        (b"{not json", "manifest.json: not valid JSON"),
        (b'{"Config": "x"}', "expected a list of images"),
        (b"[]", "holds no image"),
        (b'[{"Config": "", "Layers": []}]', "Config must name the image config"),
        (b'[{"Config": "c.json", "Layers": "x"}]', "Layers must be a list"),
        (b'[{"Config": "c.json", "Layers": [], "RepoTags": ["Bad Name!"]}]', "RepoTags"),
    ],
)
async def test_bad_docker_manifest(images: ImageService, tmp_path: Path, manifest: bytes, message: str) -> None:
    saved = tmp_path / "saved"
    saved.mkdir()
    (saved / "manifest.json").write_bytes(manifest)
    with pytest.raises(errors.InvalidArgument, match=re.escape(message)):
        await import_archive(images, saved)
    await assert_nothing_left(images)


async def test_bad_oci_layout(images: ImageService, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    layout.mkdir()
    (layout / "oci-layout").write_text("[]")
    (layout / "index.json").write_text("{}")
    with pytest.raises(errors.InvalidArgument, match="imageLayoutVersion"):
        await import_archive(images, layout)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    with pytest.raises(errors.InvalidArgument, match="'manifests' must be a list"):
        await import_archive(images, layout)
    image = Image([hello()])
    desc = image.descriptor({"io.containerd.image.name": "example.com/NOT/valid:1"})
    write_oci(layout, [(desc, image.blobs())])
    with pytest.raises(errors.InvalidArgument, match="must be lowercase"):
        await import_archive(images, layout)
    for bad in ("not an object", 5, {"io.containerd.image.name": 5}):
        write_oci(layout, [(image.descriptor() | {"annotations": bad}, image.blobs())])
        with pytest.raises(errors.InvalidArgument, match="annotation"):
            await import_archive(images, layout)
    desc = image.descriptor() | {"mediaType": "application/vnd.example.thing"}
    write_oci(layout, [(desc, image.blobs())])
    with pytest.raises(errors.InvalidArgument, match="unsupported media type"):
        await import_archive(images, layout)
    await assert_nothing_left(images)
