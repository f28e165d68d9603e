"""pycri.images.records: ImageRecord rows and users, ImageIndex lookups."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycri.images.records import ImageIndex, ImageRecord
from pycri.store import ImageRow

ID_A = "sha256:" + "abc1" + "0" * 60
ID_B = "sha256:" + "abc2" + "0" * 60
ID_C = "sha256:" + "f00d" + "1" * 60
MANIFEST = "sha256:" + "9" * 64


def record(image_id: str, tags: list[str] | None = None, digests: list[str] | None = None, **kw: Any) -> ImageRecord:
    values: dict[str, Any] = {
        "repo_tags": tags or [],
        "repo_digests": digests or [],
        "size": 1000,
        "created_at": 1,
        "config": {},
        "chain_ids": [],
        "blobs": [],
    }
    values.update(kw)
    return ImageRecord(id=image_id, **values)


def full_record() -> ImageRecord:
    return ImageRecord(
        id=ID_A,
        repo_tags=["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"],
        repo_digests=[f"docker.io/library/busybox@{MANIFEST}"],
        size=4_321_000,
        created_at=1_700_000_000_123_456_789,
        config={"architecture": "amd64", "os": "linux", "config": {"User": "1002", "Env": ["A=1"]}},
        chain_ids=["sha256:" + "1" * 64, "sha256:" + "2" * 64],
        blobs=[MANIFEST, ID_A, "sha256:" + "3" * 64],
        manifest_digest=MANIFEST,
        media_type="application/vnd.oci.image.manifest.v1+json",
        user_specified="busybox",
        runtime_handler="kata",
    )


# -- ImageRecord --------------------------------------------------------------------------------------


def test_to_row() -> None:
    rec = full_record()
    row = rec.to_row()
    assert isinstance(row, ImageRow)
    assert row.id == ID_A
    assert row.repo_tags == rec.repo_tags
    assert row.repo_digests == rec.repo_digests
    assert row.size == 4_321_000
    assert row.created_at == 1_700_000_000_123_456_789
    assert row.data == {
        "config": rec.config,
        "chain_ids": rec.chain_ids,
        "blobs": rec.blobs,
        "manifest_digest": MANIFEST,
        "media_type": "application/vnd.oci.image.manifest.v1+json",
        "user_specified": "busybox",
        "runtime_handler": "kata",
    }
    json.dumps(row.data)  # what the store writes


def test_row_round_trip() -> None:
    rec = full_record()
    assert ImageRecord.from_row(rec.to_row()) == rec


def test_row_round_trip_through_json() -> None:
    rec = full_record()
    row = rec.to_row()
    reloaded = ImageRow(
        id=row.id,
        repo_tags=json.loads(json.dumps(row.repo_tags)),
        repo_digests=json.loads(json.dumps(row.repo_digests)),
        size=row.size,
        created_at=row.created_at,
        data=json.loads(json.dumps(row.data)),
    )
    assert ImageRecord.from_row(reloaded) == rec


def test_to_row_copies_the_tag_lists() -> None:
    rec = full_record()
    row = rec.to_row()
    rec.repo_tags.append("docker.io/library/busybox:new")
    rec.repo_digests.clear()
    assert "docker.io/library/busybox:new" not in row.repo_tags
    assert row.repo_digests == [f"docker.io/library/busybox@{MANIFEST}"]


def test_from_row_copies_the_lists() -> None:
    row = full_record().to_row()
    rec = ImageRecord.from_row(row)
    rec.repo_tags.clear()
    rec.chain_ids.clear()
    assert row.repo_tags
    assert row.data["chain_ids"]


def test_from_row_with_empty_data() -> None:
    rec = ImageRecord.from_row(ImageRow(id=ID_B, repo_tags=["x:1"], repo_digests=[], size=5, created_at=7))
    assert rec == ImageRecord(
        id=ID_B, repo_tags=["x:1"], repo_digests=[], size=5, created_at=7, config={}, chain_ids=[], blobs=[]
    )
    assert (rec.manifest_digest, rec.media_type, rec.user_specified, rec.runtime_handler) == ("", "", "", "")


def test_from_row_with_null_values() -> None:
    row = ImageRow(id=ID_B, repo_tags=[], repo_digests=[], size=0, created_at=0, data={"config": None, "chain_ids": None})
    rec = ImageRecord.from_row(row)
    assert (rec.config, rec.chain_ids, rec.blobs) == ({}, [], [])


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, (None, "")),
        ({"config": None}, (None, "")),
        ({"config": []}, (None, "")),
        ({"config": {}}, (None, "")),
        ({"config": {"User": ""}}, (None, "")),
        ({"config": {"User": None}}, (None, "")),
        ({"config": {"User": "1002"}}, (1002, "")),
        ({"config": {"User": "www-data"}}, (None, "www-data")),
        ({"config": {"User": "1003:1004"}}, (1003, "")),
        ({"config": {"User": "www-data:1004"}}, (None, "www-data")),
    ],
)
def test_user(config: dict[str, Any], expected: tuple[int | None, str]) -> None:
    assert record(ID_A, config=config).user == expected


def test_verbose_info() -> None:
    info = json.loads(full_record().verbose_info())
    assert info == {
        "imageSpec": full_record().config,
        "chainIDs": full_record().chain_ids,
        "manifestDigest": MANIFEST,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "userSpecifiedImage": "busybox",
    }


# -- ImageIndex ---------------------------------------------------------------------------------------


@pytest.fixture
def index() -> ImageIndex:
    idx = ImageIndex()
    idx.put(
        record(
            ID_A,
            ["docker.io/library/busybox:latest", "docker.io/library/busybox:1.36"],
            [f"docker.io/library/busybox@{MANIFEST}"],
            created_at=30,
        )
    )
    idx.put(record(ID_B, ["registry.example.com:5000/team/app:v1"], created_at=10))
    idx.put(record(ID_C, ["docker.io/someone/tool:2"], [f"docker.io/someone/tool@sha256:{'8' * 64}"], created_at=20))
    return idx


def test_find_by_full_id(index: ImageIndex) -> None:
    for image_id in (ID_A, ID_B, ID_C):
        found = index.find(image_id)
        assert found is not None
        assert found.id == image_id


def test_find_by_id_without_algorithm(index: ImageIndex) -> None:
    found = index.find(ID_C.removeprefix("sha256:"))
    assert found is not None
    assert found.id == ID_C


def test_find_by_unique_prefix(index: ImageIndex) -> None:
    for text, expected in (
        ("abc1", ID_A),
        ("abc10000", ID_A),
        ("abc2", ID_B),
        ("f", ID_C),
        ("f00d1", ID_C),
        ("sha256:abc2", ID_B),
    ):
        found = index.find(text)
        assert found is not None, text
        assert found.id == expected, text


@pytest.mark.parametrize("text", ["abc", "a", "sha256:ab", "sha256:abc"])
def test_find_ambiguous_prefix(index: ImageIndex, text: str) -> None:
    assert index.find(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "busybox",
        "busybox:latest",
        "library/busybox",
        "docker.io/library/busybox",
        "docker.io/library/busybox:latest",
        "index.docker.io/library/busybox:latest",
        "busybox:1.36",
    ],
)
def test_find_by_tag_normalised(index: ImageIndex, text: str) -> None:
    found = index.find(text)
    assert found is not None
    assert found.id == ID_A


def test_find_by_tag_other_registries(index: ImageIndex) -> None:
    found = index.find("registry.example.com:5000/team/app:v1")
    assert found is not None
    assert found.id == ID_B
    found = index.find("someone/tool:2")
    assert found is not None
    assert found.id == ID_C
    assert index.find("registry.example.com:5000/team/app") is None  # :latest is not tagged


def test_find_by_digest_reference(index: ImageIndex) -> None:
    for text in (f"busybox@{MANIFEST}", f"docker.io/library/busybox@{MANIFEST}", f"busybox:1.36@{MANIFEST}"):
        found = index.find(text)
        assert found is not None, text
        assert found.id == ID_A, text
    found = index.find(f"someone/tool@sha256:{'8' * 64}")
    assert found is not None
    assert found.id == ID_C


def test_find_digest_of_another_repository(index: ImageIndex) -> None:
    assert index.find(f"someone/tool@{MANIFEST}") is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sha256:",
        "nginx",
        "busybox:1.35",
        "docker.io/library/nginx:latest",
        f"busybox@sha256:{'7' * 64}",
        "sha256:" + "e" * 64,
        "e" * 64,
        "0123",
        "NOT A REFERENCE",
        "Busybox",
    ],
)
def test_find_unknown(index: ImageIndex, text: str) -> None:
    assert index.find(text) is None


def test_find_in_an_empty_index() -> None:
    assert ImageIndex().find("busybox") is None
    assert ImageIndex().find("abc") is None


def test_find_prefers_a_tag_to_an_id_prefix() -> None:
    idx = ImageIndex()
    idx.put(record(ID_A))  # id starts with abc1
    idx.put(record(ID_C, ["docker.io/library/abc1:latest"]))
    found = idx.find("abc1")
    assert found is not None
    assert found.id == ID_C


def test_with_tag(index: ImageIndex) -> None:
    found = index.with_tag("docker.io/library/busybox:1.36")
    assert found is not None
    assert found.id == ID_A
    assert index.with_tag("busybox:1.36") is None  # exact, already normalised tags only
    assert index.with_tag("docker.io/library/busybox:1.35") is None


def test_all_is_ordered_by_creation_then_id(index: ImageIndex) -> None:
    assert [r.id for r in index.all()] == [ID_B, ID_C, ID_A]
    index.put(record("sha256:" + "0" * 64, created_at=20))
    assert [r.id for r in index.all()] == [ID_B, "sha256:" + "0" * 64, ID_C, ID_A]
    assert ImageIndex().all() == []


def test_put_replaces_and_drop_removes(index: ImageIndex) -> None:
    index.put(record(ID_A, ["docker.io/library/busybox:stable"], created_at=30))
    assert index.find("busybox") is None
    found = index.find("busybox:stable")
    assert found is not None
    assert found.id == ID_A
    index.drop(ID_A)
    assert index.find(ID_A) is None
    assert index.find("busybox:stable") is None
    index.drop(ID_A)  # twice: no error
    assert [r.id for r in index.all()] == [ID_B, ID_C]
