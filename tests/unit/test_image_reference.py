from __future__ import annotations

import time

import pytest

from pycri.images import reference
from pycri.images.reference import Reference, ReferenceError

HEX = "0123456789abcdef" * 4
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest", "full"),
    [
        ("busybox", "docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None, "docker.io/library/busybox:1.36"),
        ("user/img", "docker.io", "user/img", "latest", None, "docker.io/user/img:latest"),
        ("docker.io/busybox", "docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
        ("index.docker.io/busybox", "docker.io", "library/busybox", "latest", None, "docker.io/library/busybox:latest"),
        ("index.docker.io/user/img:v1", "docker.io", "user/img", "v1", None, "docker.io/user/img:v1"),
        ("localhost/x", "localhost", "x", "latest", None, "localhost/x:latest"),
        ("localhost:5000/x", "localhost:5000", "x", "latest", None, "localhost:5000/x:latest"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io", "pause", "3.9", None, "registry.k8s.io/pause:3.9"),
        ("quay.io/a/b/c:v_1.0-rc", "quay.io", "a/b/c", "v_1.0-rc", None, "quay.io/a/b/c:v_1.0-rc"),
        (
            "127.0.0.1:5000/e2e/busybox:1.29-2",
            "127.0.0.1:5000",
            "e2e/busybox",
            "1.29-2",
            None,
            "127.0.0.1:5000/e2e/busybox:1.29-2",
        ),
        ("[::1]:5000/x:y", "[::1]:5000", "x", "y", None, "[::1]:5000/x:y"),
        ("example:5000/x", "example:5000", "x", "latest", None, "example:5000/x:latest"),
        ("a__b/c---d.e_f:T", "docker.io", "a__b/c---d.e_f", "T", None, "docker.io/a__b/c---d.e_f:T"),
        (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST, f"docker.io/library/busybox@{DIGEST}"),
        (f"busybox:1@{DIGEST}", "docker.io", "library/busybox", "1", DIGEST, f"docker.io/library/busybox:1@{DIGEST}"),
        # Uppercase first component: a domain, as in distribution/reference.
        ("Example/x", "Example", "x", "latest", None, "Example/x:latest"),
    ],
)
def test_parse_normalises(text: str, domain: str, path: str, tag: str | None, digest: str | None, full: str) -> None:
    ref = reference.parse(text)
    assert ref == Reference(domain, path, tag, digest)
    assert str(ref) == full
    assert reference.parse(str(ref)) == ref


def test_no_default_tag() -> None:
    ref = reference.parse("busybox", default_tag=False)
    assert ref.tag is None
    assert str(ref) == "docker.io/library/busybox"
    assert ref.manifest_reference == "latest"
    assert ref.tagged_string is None


def test_properties() -> None:
    ref = reference.parse(f"registry.k8s.io/e2e-test-images/busybox:1.29-2@{DIGEST}")
    assert ref.name == "registry.k8s.io/e2e-test-images/busybox"
    assert ref.repository == "e2e-test-images/busybox"
    assert ref.tagged_string == "registry.k8s.io/e2e-test-images/busybox:1.29-2"
    assert ref.digested_string == f"registry.k8s.io/e2e-test-images/busybox@{DIGEST}"
    assert ref.manifest_reference == DIGEST
    assert ref.familiar == f"registry.k8s.io/e2e-test-images/busybox:1.29-2@{DIGEST}"
    tagged = reference.parse("busybox:1")
    assert tagged.digested_string is None
    assert tagged.manifest_reference == "1"


@pytest.mark.parametrize(
    ("text", "familiar"),
    [
        ("busybox", "busybox:latest"),
        ("docker.io/library/busybox:1", "busybox:1"),
        ("user/img:2", "user/img:2"),
        ("docker.io/library/a/b:3", "library/a/b:3"),
        ("localhost:5000/x:y", "localhost:5000/x:y"),
        (f"busybox@{DIGEST}", f"busybox@{DIGEST}"),
    ],
)
def test_familiar(text: str, familiar: str) -> None:
    assert reference.parse(text).familiar == familiar


def test_with_tag_and_digest_keep_the_other() -> None:
    ref = reference.parse("busybox:1")
    both = ref.with_digest(DIGEST)
    assert str(both) == f"docker.io/library/busybox:1@{DIGEST}"
    assert str(both.with_tag("2")) == f"docker.io/library/busybox:2@{DIGEST}"
    assert ref.with_tag("x").tag == "x"
    with pytest.raises(ReferenceError, match=r"invalid tag '-x' for docker\.io/library/busybox"):
        ref.with_tag("-x")
    with pytest.raises(ReferenceError, match="invalid digest 'sha256:abc'"):
        ref.with_digest("sha256:abc")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("Busybox", "repository name 'library/Busybox' must be lowercase"),
        ("user/Img", "repository name 'user/Img' must be lowercase"),
        ("quay.io/Org/x", "repository name 'Org/x' must be lowercase"),
        (HEX, "is an image ID, not a repository name"),
        ("busybox:-bad", "invalid tag '-bad'"),
        ("busybox:.bad", "invalid tag '.bad'"),
        ("busybox:" + "a" * 129, "invalid tag"),
        ("busybox:a:b", "invalid tag 'a:b'"),
        ("busybox@sha256:abc", "sha256 needs exactly 64 lowercase hex characters"),
        (f"busybox@sha256:{HEX.upper()}", "sha256 needs exactly 64 lowercase hex characters"),
        (f"busybox@sha512:{HEX}", "sha512 needs exactly 128 lowercase hex characters"),
        ("busybox@md5:" + "a" * 32, "unsupported algorithm 'md5'"),
        ("busybox@", "expected <algorithm>:<hex>"),
        ("busybox@sha256", "expected <algorithm>:<hex>"),
        ("busybox@@sha256:" + HEX, "expected <algorithm>:<hex>"),
        ("foo bar", "invalid repository name 'library/foo bar'"),
        ("a/-b", "invalid repository name 'a/-b'"),
        ("a//b", "invalid repository name 'a//b'"),
        ("a/b/", "invalid repository name 'a/b/'"),
        ("quay.io/", "invalid repository name ''"),
        ("/x", "invalid repository name '/x'"),
        (":tag", "invalid repository name 'library/'"),
        ("a/b_", "invalid repository name"),
        ("a/b___c", "invalid repository name"),
        ("foo_bar.com/x", "invalid registry domain 'foo_bar.com'"),
        ("-bad.com/x", "invalid registry domain '-bad.com'"),
        ("host:port/x", "invalid registry domain 'host:port'"),
        ("a/" + "b" * 300, "repository name is 302 characters long, the limit is 255"),
        ("busybox\n", "invalid repository name"),
        ("bùsybox", "invalid repository name"),
    ],
)
def test_parse_rejects(text: str, reason: str) -> None:
    with pytest.raises(ReferenceError) as info:
        reference.parse(text)
    message = str(info.value)
    shown = text if len(text) <= 300 else text[:300] + "..."
    assert message.startswith(f"invalid image reference {shown!r}: ")
    assert reason in message
    assert isinstance(info.value, ValueError)


def test_error_message_truncates_long_input() -> None:
    with pytest.raises(ReferenceError) as info:
        reference.parse("A" * 10_000)
    assert len(str(info.value)) < 1000


def test_hostile_input_is_fast() -> None:
    start = time.monotonic()
    for text in ("a" * 50_000 + "!", "a." * 20_000 + "-/x", "a-" * 20_000 + "/x", "x/" + "a_" * 20_000 + "!"):
        with pytest.raises(ReferenceError):
            reference.parse(text)
    assert time.monotonic() - start < 2


def test_sha256_id_string_is_a_docker_hub_name_like_go() -> None:
    # ParseNormalizedNamed reads "sha256:<hex>" as image "sha256" with a tag; callers check IDs first.
    assert str(reference.parse(DIGEST)) == f"docker.io/library/sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DIGEST, ("sha256", HEX)),
        ("sha384:" + "a" * 96, ("sha384", "a" * 96)),
        ("sha512:" + "b" * 128, ("sha512", "b" * 128)),
    ],
)
def test_parse_digest(text: str, expected: tuple[str, str]) -> None:
    assert reference.parse_digest(text) == expected
    assert reference.is_digest(text)


@pytest.mark.parametrize(
    "text",
    ["", "sha256", "sha256:", ":" + HEX, "sha256:" + HEX[:-1], "sha256:" + HEX + "0", "sha256:" + HEX.upper(), "SHA256:" + HEX,
     "sha512:" + HEX, "sha256:" + HEX[:-1] + "g", "md5:" + "a" * 32, "sha256:" + HEX + "\n", HEX],
)  # fmt: skip
def test_bad_digests(text: str) -> None:
    assert not reference.is_digest(text)
    with pytest.raises(ReferenceError, match="invalid digest"):
        reference.parse_digest(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (HEX, DIGEST),
        (DIGEST, DIGEST),
        (HEX.upper(), None),
        (HEX[:12], None),
        ("sha512:" + HEX, None),
        ("busybox", None),
        ("sha256:" + HEX + "a", None),
        ("", None),
    ],
)
def test_looks_like_image_id(text: str, expected: str | None) -> None:
    assert reference.looks_like_image_id(text) == expected


def test_is_valid_domain() -> None:
    assert reference.is_valid_domain("registry.k8s.io")
    assert reference.is_valid_domain("127.0.0.1:5000")
    assert reference.is_valid_domain("[fe80::1]:443")
    assert not reference.is_valid_domain("a/b")
    assert not reference.is_valid_domain("x:")
    assert not reference.is_valid_domain("")
