"""pycri.images.manifest: media types, parsing and its errors, digests, platforms, chain IDs, users."""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import pytest

from pycri.images import manifest as mf
from pycri.images.manifest import (
    DOCKER_CONFIG,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    Index,
    ManifestError,
    Platform,
)

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
D4 = "sha256:" + "4" * 64


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def desc(media_type: str = OCI_MANIFEST, digest: str = D1, size: Any = 10, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size, **extra}


def manifest_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, D1, 100),
        "layers": [desc(OCI_LAYER_GZIP, D2, 200), desc(OCI_LAYER_GZIP, D3, 300)],
    }
    doc.update(overrides)
    return doc


def config_doc(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "arm",
        "variant": "v7",
        "os": "linux",
        "config": {"User": "www-data", "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [D2, D3]},
    }
    doc.update(overrides)
    return doc


def entry(plat: str, digest: str = D1, media_type: str = OCI_MANIFEST) -> Descriptor:
    parts = plat.split("/")
    return Descriptor(media_type, digest, 100, Platform(parts[0], parts[1], parts[2] if len(parts) > 2 else ""))


def index_of(*entries: Descriptor) -> Index:
    return Index(OCI_INDEX, entries)


# -- sha256_digest / verify ---------------------------------------------------------------------------


def test_sha256_digest() -> None:
    assert mf.sha256_digest(b"abc") == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_verify_accepts_matching_sha256_and_sha512() -> None:
    mf.verify(b"abc", mf.sha256_digest(b"abc"), "blob")
    mf.verify(b"abc", "sha512:" + hashlib.sha512(b"abc").hexdigest(), "blob")


def test_verify_mismatch_names_both_digests() -> None:
    actual = mf.sha256_digest(b"abc")
    with pytest.raises(ManifestError) as info:
        mf.verify(b"abc", D1, "manifest docker.io/library/busybox:latest")
    assert str(info.value) == f"manifest docker.io/library/busybox:latest: digest mismatch: expected {D1}, got {actual}"


def test_verify_unsupported_algorithm() -> None:
    with pytest.raises(ManifestError, match=r"^blob: unsupported digest algorithm 'md5'$"):
        mf.verify(b"abc", "md5:900150983cd24fb0d6963f7d28e17f72", "blob")


# -- detect_media_type --------------------------------------------------------------------------------


def test_detect_media_type_prefers_the_documents_own_field() -> None:
    data = dumps({"mediaType": DOCKER_LIST, "manifests": []})
    assert mf.detect_media_type(data, OCI_MANIFEST) == DOCKER_LIST


@pytest.mark.parametrize("content_type", [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])
def test_detect_media_type_uses_the_content_type(content_type: str) -> None:
    assert mf.detect_media_type(dumps({"schemaVersion": 2}), content_type + "; charset=utf-8") == content_type


def test_detect_media_type_by_shape() -> None:
    assert mf.detect_media_type(dumps({"manifests": []}), "application/json") == OCI_INDEX
    assert mf.detect_media_type(dumps({"config": {}, "layers": []}), "") == OCI_MANIFEST


def test_detect_media_type_unknown() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: unknown media type text/plain$"):
        mf.detect_media_type(dumps({"schemaVersion": 2}), "text/plain; charset=utf-8")
    with pytest.raises(ManifestError, match=r"^manifest: unknown media type \(none\)$"):
        mf.detect_media_type(dumps({"config": {}}), "")


def test_detect_media_type_ignores_an_empty_own_field() -> None:
    assert mf.detect_media_type(dumps({"mediaType": "", "manifests": []}), "") == OCI_INDEX


def test_detect_media_type_bad_json() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: not valid JSON: "):
        mf.detect_media_type(b"{nope", "")
    with pytest.raises(ManifestError, match=r"^manifest: not valid JSON: "):
        mf.detect_media_type(b"\xff\xfe\x00", "")
    with pytest.raises(ManifestError, match=r"^manifest: expected a JSON object$"):
        mf.detect_media_type(b"[]", OCI_MANIFEST)


# -- parse_index --------------------------------------------------------------------------------------


def test_parse_index() -> None:
    data = dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                desc(OCI_MANIFEST, D1, 500, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
                desc(OCI_MANIFEST, D2, 600, platform={"os": "linux", "architecture": "amd64"}),
                desc(OCI_MANIFEST, D3, 700, annotations={"vnd.docker.reference.type": "attestation-manifest"}),
            ],
        }
    )
    index = mf.parse_index(data, DOCKER_LIST)
    assert index.media_type == DOCKER_LIST
    assert [m.digest for m in index.manifests] == [D1, D2, D3]
    assert [m.size for m in index.manifests] == [500, 600, 700]
    assert index.manifests[0].platform == Platform("linux", "arm64", "v8")
    assert index.manifests[1].platform == Platform("linux", "amd64", "")
    assert index.manifests[2].platform is None
    assert index.manifests[2].annotations == {"vnd.docker.reference.type": "attestation-manifest"}


def test_parse_index_accepts_sha512() -> None:
    digest = "sha512:" + "a" * 128
    assert mf.parse_index(dumps({"manifests": [desc(digest=digest)]}), OCI_INDEX).manifests[0].digest == digest


def test_parse_index_size_limit() -> None:
    at_limit = dumps({"manifests": []})
    at_limit += b" " * (mf.MAX_MANIFEST_BYTES - len(at_limit))
    assert len(at_limit) == mf.MAX_MANIFEST_BYTES
    assert mf.parse_index(at_limit, OCI_INDEX).manifests == ()
    over = at_limit + b" "
    with pytest.raises(ManifestError) as info:
        mf.parse_index(over, OCI_INDEX)
    assert str(info.value) == f"index: {mf.MAX_MANIFEST_BYTES + 1} bytes is over the 4194304-byte limit"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({}, "index: 'manifests' must be a list"),
        ({"manifests": {}}, "index: 'manifests' must be a list"),
        ({"manifests": ["x"]}, "index manifests[0]: expected a descriptor object"),
        ({"manifests": [desc(), {"digest": D1, "size": 1}]}, "index manifests[1]: missing mediaType"),
        ({"manifests": [desc(media_type="")]}, "index manifests[0]: missing mediaType"),
        ({"manifests": [desc(size=-1)]}, "index manifests[0]: missing or invalid size"),
        ({"manifests": [desc(size=True)]}, "index manifests[0]: missing or invalid size"),
        ({"manifests": [desc(size="10")]}, "index manifests[0]: missing or invalid size"),
        ({"manifests": [{"mediaType": OCI_MANIFEST, "size": 1}]}, "index manifests[0]: missing or invalid digest None"),
        ({"manifests": [desc(digest="abc")]}, "index manifests[0]: missing or invalid digest 'abc'"),
        ({"manifests": [desc(digest="sha256:abc")]}, "index manifests[0]: invalid digest 'sha256:abc'"),
        ({"manifests": [desc(digest="sha256:" + "A" * 64)]}, f"index manifests[0]: invalid digest 'sha256:{'A' * 64}'"),
        ({"manifests": [desc(digest="md5:" + "a" * 32)]}, f"index manifests[0]: invalid digest 'md5:{'a' * 32}'"),
        ({"manifests": [desc(digest="sha512:" + "a" * 64)]}, f"index manifests[0]: invalid digest 'sha512:{'a' * 64}'"),
    ],
)
def test_parse_index_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        mf.parse_index(dumps(doc), OCI_INDEX)
    assert str(info.value) == message


def test_parse_index_not_json() -> None:
    with pytest.raises(ManifestError, match=r"^index: not valid JSON: "):
        mf.parse_index(b"", OCI_INDEX)
    with pytest.raises(ManifestError, match=r"^index: expected a JSON object$"):
        mf.parse_index(b'"manifests"', OCI_INDEX)


@pytest.mark.parametrize("annotations", [5, ["x"], "text"])
def test_parse_index_rejects_non_object_annotations(annotations: Any) -> None:
    with pytest.raises(ManifestError, match=r"index manifests\[0\]"):
        mf.parse_index(dumps({"manifests": [desc(annotations=annotations)]}), OCI_INDEX)


def test_deeply_nested_json_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match=r"^index: not valid JSON"):
        mf.parse_index(b"[" * 100_000, OCI_INDEX)


# -- parse_manifest -----------------------------------------------------------------------------------


def test_parse_manifest_oci() -> None:
    m = mf.parse_manifest(dumps(manifest_doc()), OCI_MANIFEST)
    assert m.media_type == OCI_MANIFEST
    assert m.config == Descriptor(OCI_CONFIG, D1, 100)
    assert m.layers == (Descriptor(OCI_LAYER_GZIP, D2, 200), Descriptor(OCI_LAYER_GZIP, D3, 300))


def test_parse_manifest_docker() -> None:
    doc = manifest_doc(mediaType=DOCKER_MANIFEST, config=desc(DOCKER_CONFIG, D1, 10), layers=[desc(DOCKER_LAYER, D2, 20)])
    m = mf.parse_manifest(dumps(doc), DOCKER_MANIFEST)
    assert m.config.media_type == DOCKER_CONFIG
    assert [layer.media_type for layer in m.layers] == [DOCKER_LAYER]


def test_parse_manifest_without_layers() -> None:
    assert mf.parse_manifest(dumps(manifest_doc(layers=[])), OCI_MANIFEST).layers == ()


@pytest.mark.parametrize("layer_type", mf.LAYER_TYPES)
def test_parse_manifest_accepts_every_layer_type(layer_type: str) -> None:
    m = mf.parse_manifest(dumps(manifest_doc(layers=[desc(layer_type, D2, 1)])), OCI_MANIFEST)
    assert m.layers[0].media_type == layer_type


def test_parse_manifest_size_limit() -> None:
    at_limit = dumps(manifest_doc())
    at_limit += b" " * (mf.MAX_MANIFEST_BYTES - len(at_limit))
    assert len(mf.parse_manifest(at_limit, OCI_MANIFEST).layers) == 2
    with pytest.raises(ManifestError) as info:
        mf.parse_manifest(at_limit + b"\n", OCI_MANIFEST)
    assert str(info.value) == f"manifest: {mf.MAX_MANIFEST_BYTES + 1} bytes is over the {mf.MAX_MANIFEST_BYTES}-byte limit"


@pytest.mark.parametrize(
    "media_type", ["application/vnd.docker.distribution.manifest.v1+prettyjws", OCI_INDEX, DOCKER_LIST, "application/json"]
)
def test_parse_manifest_unsupported_media_type(media_type: str) -> None:
    with pytest.raises(ManifestError) as info:
        mf.parse_manifest(dumps(manifest_doc()), media_type)
    assert str(info.value) == f"manifest: unsupported media type {media_type!r} (schema 1 manifests are not supported)"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"schemaVersion": 1}, "manifest: schemaVersion 1 is not 2"),
        ({"schemaVersion": "2"}, "manifest: schemaVersion '2' is not 2"),
        ({"schemaVersion": None}, "manifest: schemaVersion None is not 2"),
        ({"config": None}, "manifest config: expected a descriptor object"),
        ({"config": desc(OCI_CONFIG, size=-5)}, "manifest config: missing or invalid size"),
        ({"config": desc(OCI_CONFIG, digest="sha256:x")}, "manifest config: invalid digest 'sha256:x'"),
        (
            {"config": desc("application/vnd.oci.image.layer.v1.tar")},
            "manifest config: unsupported media type 'application/vnd.oci.image.layer.v1.tar'",
        ),
        ({"layers": None}, "manifest: 'layers' must be a list"),
        ({"layers": {"0": desc(OCI_LAYER_GZIP)}}, "manifest: 'layers' must be a list"),
        ({"layers": [desc(OCI_LAYER_GZIP), 7]}, "manifest layers[1]: expected a descriptor object"),
        ({"layers": [desc(OCI_LAYER_GZIP, size=None)]}, "manifest layers[0]: missing or invalid size"),
        ({"layers": [{"mediaType": OCI_LAYER_GZIP, "size": 1}]}, "manifest layers[0]: missing or invalid digest None"),
        (
            {"layers": [desc(OCI_LAYER_GZIP), desc("application/octet-stream")]},
            "manifest layers[1]: unsupported media type 'application/octet-stream'",
        ),
    ],
)
def test_parse_manifest_errors(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError) as info:
        mf.parse_manifest(dumps(manifest_doc(**overrides)), OCI_MANIFEST)
    assert str(info.value) == message


def test_parse_manifest_missing_schema_version() -> None:
    doc = manifest_doc()
    del doc["schemaVersion"]
    with pytest.raises(ManifestError, match=r"^manifest: schemaVersion None is not 2$"):
        mf.parse_manifest(dumps(doc), OCI_MANIFEST)


def test_parse_manifest_not_json() -> None:
    with pytest.raises(ManifestError, match=r"^manifest: not valid JSON: "):
        mf.parse_manifest(b"{", OCI_MANIFEST)
    with pytest.raises(ManifestError, match=r"^manifest: expected a JSON object$"):
        mf.parse_manifest(b"null", OCI_MANIFEST)


# -- parse_config -------------------------------------------------------------------------------------


def test_parse_config() -> None:
    doc = config_doc()
    config = mf.parse_config(dumps(doc))
    assert config.diff_ids == (D2, D3)
    assert config.user == "www-data"
    assert config.platform == Platform("linux", "arm", "v7")
    assert config.raw == doc
    assert config.config == {"User": "www-data", "Env": ["PATH=/bin"]}


def test_parse_config_minimal() -> None:
    config = mf.parse_config(dumps({"rootfs": {"type": "layers", "diff_ids": []}}))
    assert config.diff_ids == ()
    assert config.user == ""
    assert config.platform == Platform("", "", "")
    assert config.config == {}


@pytest.mark.parametrize("value", [None, [], "root", 5])
def test_parse_config_odd_config_section(value: Any) -> None:
    config = mf.parse_config(dumps(config_doc(config=value)))
    assert config.user == ""
    assert config.config == {}


def test_parse_config_null_user() -> None:
    assert mf.parse_config(dumps(config_doc(config={"User": None}))).user == ""


def test_parse_config_size_limit() -> None:
    data = dumps(config_doc())
    data += b" " * (mf.MAX_CONFIG_BYTES - len(data))
    assert mf.parse_config(data).diff_ids == (D2, D3)
    with pytest.raises(ManifestError) as info:
        mf.parse_config(data + b" ")
    assert str(info.value) == f"image config: {mf.MAX_CONFIG_BYTES + 1} bytes is over the 16777216-byte limit"


@pytest.mark.parametrize(
    "rootfs",
    [
        None,
        "layers",
        {"diff_ids": [D1]},
        {"type": "layer", "diff_ids": [D1]},
        {"type": "layers"},
        {"type": "layers", "diff_ids": D1},
    ],
)
def test_parse_config_bad_rootfs(rootfs: Any) -> None:
    with pytest.raises(ManifestError) as info:
        mf.parse_config(dumps(config_doc(rootfs=rootfs)))
    assert str(info.value) == "image config: rootfs must be {type: layers, diff_ids: [...]}"


def test_parse_config_missing_rootfs() -> None:
    doc = config_doc()
    del doc["rootfs"]
    with pytest.raises(ManifestError, match=r"^image config: rootfs must be"):
        mf.parse_config(dumps(doc))


def test_parse_config_bad_diff_id() -> None:
    with pytest.raises(ManifestError) as info:
        mf.parse_config(dumps(config_doc(rootfs={"type": "layers", "diff_ids": [D1, "sha256:xyz"]})))
    assert str(info.value) == "image config rootfs.diff_ids[1]: invalid digest 'sha256:xyz'"
    with pytest.raises(ManifestError) as info:
        mf.parse_config(dumps(config_doc(rootfs={"type": "layers", "diff_ids": [42]})))
    assert str(info.value) == "image config rootfs.diff_ids[0]: missing or invalid digest 42"


def test_parse_config_not_json() -> None:
    with pytest.raises(ManifestError, match=r"^image config: not valid JSON: "):
        mf.parse_config(b"\x00")
    with pytest.raises(ManifestError, match=r"^image config: expected a JSON object$"):
        mf.parse_config(b"[1]")


# -- platforms ----------------------------------------------------------------------------------------


def test_platform_str() -> None:
    assert str(Platform("linux", "amd64")) == "linux/amd64"
    assert str(Platform("linux", "arm", "v7")) == "linux/arm/v7"


@pytest.mark.parametrize(
    ("machine", "expected"),
    [
        ("x86_64", Platform("linux", "amd64")),
        ("AMD64", Platform("linux", "amd64")),
        ("aarch64", Platform("linux", "arm64", "v8")),
        ("arm64", Platform("linux", "arm64", "v8")),
        ("armv7l", Platform("linux", "arm", "v7")),
        ("armv6l", Platform("linux", "arm", "v6")),
        ("i686", Platform("linux", "386")),
        ("ppc64le", Platform("linux", "ppc64le")),
        ("s390x", Platform("linux", "s390x")),
        ("riscv64", Platform("linux", "riscv64")),
        ("mips64", Platform("linux", "mips64")),
    ],
)
def test_host_platform(monkeypatch: pytest.MonkeyPatch, machine: str, expected: Platform) -> None:
    monkeypatch.setattr(platform, "machine", lambda: machine)
    assert mf.host_platform() == expected


MULTI = index_of(
    entry("linux/amd64", D1),
    entry("linux/arm/v6", D2),
    entry("linux/arm/v7", D3),
    entry("linux/arm64/v8", D4),
)


def test_select_platform_amd64() -> None:
    assert mf.select_platform(MULTI, Platform("linux", "amd64")).digest == D1


def test_select_platform_defaults_to_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert mf.select_platform(MULTI).digest == D4
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert mf.select_platform(MULTI).digest == D1


@pytest.mark.parametrize("want_variant", ["v8", ""])
@pytest.mark.parametrize("entry_variant", ["v8", ""])
def test_select_platform_arm64_variant_v8_is_the_default(want_variant: str, entry_variant: str) -> None:
    index = index_of(entry("linux/amd64", D1), entry("linux/arm64/" + entry_variant if entry_variant else "linux/arm64", D2))
    assert mf.select_platform(index, Platform("linux", "arm64", want_variant)).digest == D2


def test_select_platform_equal_matches_keep_the_first() -> None:
    index = index_of(entry("linux/arm64", D1), entry("linux/arm64/v8", D2))
    assert mf.select_platform(index, Platform("linux", "arm64", "v8")).digest == D1  # both exact: the first


def test_select_platform_arm_v7_exact_beats_v6() -> None:
    want = Platform("linux", "arm", "v7")
    assert mf.select_platform(MULTI, want).digest == D3
    reordered = index_of(entry("linux/arm/v7", D3), entry("linux/arm/v6", D2))
    assert mf.select_platform(reordered, want).digest == D3


def test_select_platform_arm_v7_falls_back_to_v6() -> None:
    index = index_of(entry("linux/amd64", D1), entry("linux/arm/v6", D2))
    assert mf.select_platform(index, Platform("linux", "arm", "v7")).digest == D2


def test_select_platform_arm_variantless_entry_beats_an_older_variant() -> None:
    index = index_of(entry("linux/arm/v6", D2), entry("linux/arm", D3))
    assert mf.select_platform(index, Platform("linux", "arm", "v7")).digest == D3


def test_select_platform_arm_v7_prefers_the_newest_older_variant() -> None:
    index = index_of(entry("linux/arm/v5", D1), entry("linux/arm/v6", D2))
    assert mf.select_platform(index, Platform("linux", "arm", "v7")).digest == D2


def test_select_platform_arm_v6_cannot_run_v7() -> None:
    index = index_of(entry("linux/arm/v7", D3), entry("linux/arm64/v8", D4))
    with pytest.raises(ManifestError) as info:
        mf.select_platform(index, Platform("linux", "arm", "v6"))
    assert str(info.value) == "no manifest for platform linux/arm/v6 in the index (it has: linux/arm/v7, linux/arm64/v8)"


def test_select_platform_missing_platform_lists_what_the_index_has() -> None:
    index = index_of(
        entry("linux/amd64", D1),
        entry("linux/arm64/v8", D2),
        Descriptor(OCI_MANIFEST, D3, 10),  # no platform: not listed
        entry("windows/amd64", D4),
    )
    with pytest.raises(ManifestError) as info:
        mf.select_platform(index, Platform("linux", "s390x"))
    assert (
        str(info.value)
        == "no manifest for platform linux/s390x in the index (it has: linux/amd64, linux/arm64/v8, windows/amd64)"
    )


def test_select_platform_empty_index() -> None:
    with pytest.raises(ManifestError) as info:
        mf.select_platform(index_of(Descriptor(OCI_MANIFEST, D1, 1)), Platform("linux", "amd64"))
    assert str(info.value) == "no manifest for platform linux/amd64 in the index (it has: none)"


def test_select_platform_os_must_match() -> None:
    index = index_of(entry("windows/amd64", D1), entry("linux/amd64", D2))
    assert mf.select_platform(index, Platform("linux", "amd64")).digest == D2


def test_select_platform_skips_entries_that_are_not_manifests() -> None:
    index = index_of(
        entry("linux/amd64", D1, media_type="application/vnd.in-toto+json"),
        entry("linux/amd64", D2, media_type=DOCKER_MANIFEST),
    )
    assert mf.select_platform(index, Platform("linux", "amd64")).digest == D2


def test_select_platform_can_choose_a_nested_index() -> None:
    index = index_of(entry("linux/amd64", D1, media_type=OCI_INDEX))
    chosen = mf.select_platform(index, Platform("linux", "amd64"))
    assert (chosen.digest, chosen.media_type) == (D1, OCI_INDEX)


def test_select_platform_amd64_variant_entries() -> None:
    # an amd64 host (no variant) runs an entry without variant, not one that needs v3
    index = index_of(entry("linux/amd64/v3", D1), entry("linux/amd64", D2))
    assert mf.select_platform(index, Platform("linux", "amd64")).digest == D2


# -- chain IDs ----------------------------------------------------------------------------------------


def test_chain_ids_empty_and_single() -> None:
    assert mf.chain_ids([]) == []
    assert mf.chain_ids((D1,)) == [D1]


def test_chain_ids_hand_computed() -> None:
    chain1 = "sha256:" + hashlib.sha256(f"{D1} {D2}".encode()).hexdigest()
    chain2 = "sha256:" + hashlib.sha256(f"{chain1} {D3}".encode()).hexdigest()
    assert mf.chain_ids([D1, D2, D3]) == [D1, chain1, chain2]
    assert mf.chain_ids((D1, D2, D3)) == [D1, chain1, chain2]


def test_chain_ids_known_value() -> None:
    # sha256("sha256:111...1 sha256:222...2") written out, computed independently
    assert (
        mf.chain_ids([D1, D2])[1]
        == "sha256:" + hashlib.sha256(("sha256:" + "1" * 64 + " sha256:" + "2" * 64).encode()).hexdigest()
    )
    assert mf.chain_ids([D1, D2])[1] != mf.chain_ids([D2, D1])[1]


# -- user_of ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("", (None, "")),
        ("1002", (1002, "")),
        ("0", (0, "")),
        ("www-data", (None, "www-data")),
        ("1003:1004", (1003, "")),
        ("www-data:1004", (None, "www-data")),
        ("www-data:www-data", (None, "www-data")),
    ],
)
def test_user_of(user: str, expected: tuple[int | None, str]) -> None:
    assert mf.user_of(user) == expected
