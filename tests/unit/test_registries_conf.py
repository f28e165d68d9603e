from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pycri.images import reference, registries_conf
from pycri.images.registries_conf import BlockedRegistryError, Endpoint, Mirror, RegistriesConfError, Registry

DIGEST = "sha256:" + "ab" * 32
TEST_REGISTRY_SCRIPT = Path("/work/shared/tools/test-registry.sh")

# What `test-registry.sh registries-conf` prints (kept here so the test runs anywhere).
TEST_REGISTRY_CONF = """\
# Mirrors of the critest registries on this machine (test-registry.sh registries-conf).

[[registry]]
location = "registry.k8s.io"

[[registry.mirror]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "k8s.gcr.io"

[[registry.mirror]]
location = "127.0.0.1:5001"
insecure = true

[[registry]]
location = "gcr.io"

[[registry.mirror]]
location = "127.0.0.1:5002"
insecure = true

[[registry]]
location = "public.ecr.aws"

[[registry.mirror]]
location = "127.0.0.1:5003"
insecure = true
"""


def endpoints(conf: registries_conf.RegistriesConf, image: str) -> list[tuple[str, str, bool, bool]]:
    return [(e.host, e.repository, e.insecure, e.mirror) for e in conf.endpoints(reference.parse(image))]


def test_test_registry_file() -> None:
    conf = registries_conf.parse(TEST_REGISTRY_CONF, "test.conf")
    assert [r.prefix for r in conf.registries] == ["gcr.io", "k8s.gcr.io", "public.ecr.aws", "registry.k8s.io"]
    assert conf.warnings == ()
    first = conf.endpoints(reference.parse("registry.k8s.io/pause:3.9"))[0]
    assert first == Endpoint(
        host="127.0.0.1:5000",
        repository="pause",
        insecure=True,
        mirror=True,
        reference=reference.parse("127.0.0.1:5000/pause:3.9"),
    )
    assert endpoints(conf, "registry.k8s.io/pause:3.9") == [
        ("127.0.0.1:5000", "pause", True, True),
        ("registry.k8s.io", "pause", False, False),
    ]
    assert endpoints(conf, "k8s.gcr.io/e2e/x@" + DIGEST)[0] == ("127.0.0.1:5001", "e2e/x", True, True)
    assert endpoints(conf, "gcr.io/a/b:1")[0] == ("127.0.0.1:5002", "a/b", True, True)
    assert endpoints(conf, "public.ecr.aws/docker/library/busybox")[0] == ("127.0.0.1:5003", "docker/library/busybox", True, True)
    # Unconfigured: straight to the registry; Docker Hub is served by registry-1.docker.io.
    assert endpoints(conf, "busybox") == [("registry-1.docker.io", "library/busybox", False, False)]
    assert endpoints(conf, "quay.io/x/y") == [("quay.io", "x/y", False, False)]


@pytest.mark.skipif(not TEST_REGISTRY_SCRIPT.exists(), reason="test-registry.sh not present")
def test_file_the_test_tooling_prints(tmp_path: Path) -> None:
    out = subprocess.run(
        ["bash", str(TEST_REGISTRY_SCRIPT), "registries-conf"], capture_output=True, text=True, check=True
    ).stdout
    path = tmp_path / "registries.conf"
    path.write_text(out)
    conf = registries_conf.load(path)
    assert conf.source == str(path)
    first = conf.endpoints(reference.parse("registry.k8s.io/pause:3.9"))[0]
    assert (first.host, first.repository, first.insecure, first.mirror) == ("127.0.0.1:5000", "pause", True, True)


def test_full_file() -> None:
    conf = registries_conf.parse(
        """
unqualified-search-registries = ["docker.io", "quay.io/"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json"]

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar/"
insecure = true
mirror-by-digest-only = false

[[registry.mirror]]
location = "m1.example.com:5000/x"
pull-from-mirror = "all"
""",
    )
    assert conf.unqualified_search_registries == ("docker.io", "quay.io")
    assert conf.short_name_mode == "enforcing"
    assert conf.credential_helpers == ("containers-auth.json",)
    assert conf.aliases == {"fedora": "registry.fedoraproject.org/fedora"}
    assert conf.registries == (
        Registry(
            prefix="example.com/foo",
            location="internal.example.com/bar",
            insecure=True,
            mirrors=(Mirror(location="m1.example.com:5000/x", pull_from_mirror="all"),),
        ),
    )
    eps = conf.endpoints(reference.parse("example.com/foo/img:1"))
    assert [(e.host, e.repository, e.insecure, e.mirror) for e in eps] == [
        ("m1.example.com:5000", "x/img", False, True),
        ("internal.example.com", "bar/img", True, False),
    ]
    assert str(eps[1].reference) == "internal.example.com/bar/img:1"
    # The prefix matches whole components only.
    assert endpoints(conf, "example.com/foobar") == [("example.com", "foobar", False, False)]
    # The prefix itself as the repository: location + ":tag".
    assert endpoints(conf, "example.com/foo:2")[-1] == ("internal.example.com", "bar", True, False)


def test_longest_prefix_wins() -> None:
    conf = registries_conf.parse(
        """
[[registry]]
location = "example.com"
[[registry.mirror]]
location = "short.mirror"

[[registry]]
prefix = "example.com/team/project"
location = "project.example.net"
[[registry.mirror]]
location = "long.mirror/p"

[[registry]]
prefix = "example.com/team"
location = "team.example.net/t"
"""
    )
    assert endpoints(conf, "example.com/team/project/app:1") == [
        ("long.mirror", "p/app", False, True),
        ("project.example.net", "app", False, False),
    ]
    assert endpoints(conf, "example.com/team/other") == [("team.example.net", "t/other", False, False)]
    assert endpoints(conf, "example.com/teamx/y") == [
        ("short.mirror", "teamx/y", False, True),
        ("example.com", "teamx/y", False, False),
    ]
    assert conf.find(reference.parse("example.org/x")) is None


def test_duplicate_prefix_first_wins() -> None:
    conf = registries_conf.parse(
        """
[[registry]]
prefix = "example.com"
location = "first.example.com"
[[registry]]
prefix = "example.com"
location = "second.example.com"
"""
    )
    assert endpoints(conf, "example.com/x") == [("first.example.com", "x", False, False)]


def test_wildcard_prefix() -> None:
    conf = registries_conf.parse(
        """
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local:5000/sub"

[[registry]]
prefix = "*.internal.example.com"
location = "internal-mirror.local"
"""
    )
    # Empty location: the primary endpoint is the reference's own registry.
    assert endpoints(conf, "foo.example.com/app:1") == [
        ("mirror.local:5000", "sub/app", False, True),
        ("foo.example.com", "app", True, False),
    ]
    # As in containers/image, the wildcard also matches "host:port", and the ":port" is kept in the
    # rewritten mirror reference, which therefore cannot be parsed.
    with pytest.raises(RegistriesConfError, match=r"invalid image reference 'mirror.local:5000/sub:5000/app:latest'"):
        conf.endpoints(reference.parse("a.b.example.com:5000/app"))
    # The longer wildcard wins for its subdomains.
    assert endpoints(conf, "x.internal.example.com/y/z") == [("internal-mirror.local", "y/z", False, False)]
    # The wildcard does not match the bare domain, lookalikes or paths.
    for image in ("example.com/app", "fooexample.com/app", "foo.example.com.evil.net/app", "evil.net/foo.example.com/app"):
        assert conf.find(reference.parse(image)) is None, image


@pytest.mark.parametrize(
    ("ref", "prefix", "length"),
    [
        ("example.com/foo", "example.com/foo", 15),
        ("example.com/foo/bar", "example.com/foo", 15),
        ("example.com/foo:tag", "example.com/foo", 15),
        ("example.com/foo@sha256:x", "example.com/foo", 15),
        ("example.com/foobar", "example.com/foo", -1),
        ("example.co", "example.com", -1),
        ("other.com/x", "example.com", -1),
        ("a.example.com/x", "*.example.com", 13),
        ("a.example.com", "*.example.com", 13),
        ("a.example.com:5000/x", "*.example.com", 13),
        ("example.com/x", "*.example.com", -1),
        ("a.example.community/x", "*.example.com", -1),
        ("x/a.example.com/y", "*.example.com", -1),
    ],
)
def test_match_length(ref: str, prefix: str, length: int) -> None:
    assert registries_conf.match_length(ref, prefix) == length


MIRRORS = """
[[registry]]
location = "registry.example.com"
{registry_extra}
[[registry.mirror]]
location = "all.mirror"
[[registry.mirror]]
location = "digest.mirror"
{digest_pull}
[[registry.mirror]]
location = "tag.mirror"
{tag_pull}
"""


def test_mirror_order_and_pull_from_mirror() -> None:
    conf = registries_conf.parse(
        MIRRORS.format(
            registry_extra="", digest_pull='pull-from-mirror = "digest-only"', tag_pull='pull-from-mirror = "tag-only"'
        )
    )
    assert [h for h, *_ in endpoints(conf, "registry.example.com/app:1")] == ["all.mirror", "tag.mirror", "registry.example.com"]
    assert [h for h, *_ in endpoints(conf, f"registry.example.com/app@{DIGEST}")] == [
        "all.mirror",
        "digest.mirror",
        "registry.example.com",
    ]
    # tag + digest counts as a digest pull.
    assert [h for h, *_ in endpoints(conf, f"registry.example.com/app:1@{DIGEST}")] == [
        "all.mirror",
        "digest.mirror",
        "registry.example.com",
    ]


def test_mirror_by_digest_only_skips_mirrors_for_tags() -> None:
    conf = registries_conf.parse(MIRRORS.format(registry_extra="mirror-by-digest-only = true", digest_pull="", tag_pull=""))
    assert endpoints(conf, "registry.example.com/app:1") == [("registry.example.com", "app", False, False)]
    by_digest = conf.endpoints(reference.parse(f"registry.example.com/app@{DIGEST}"))
    assert [e.host for e in by_digest] == ["all.mirror", "digest.mirror", "tag.mirror", "registry.example.com"]
    assert by_digest[0].reference.digest == DIGEST


def test_docker_hub_registry_and_mirror() -> None:
    conf = registries_conf.parse(
        """
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "mirror.gcr.io"
"""
    )
    assert endpoints(conf, "busybox") == [
        ("mirror.gcr.io", "library/busybox", False, True),
        ("registry-1.docker.io", "library/busybox", False, False),
    ]
    assert endpoints(conf, "index.docker.io/user/x") == [
        ("mirror.gcr.io", "user/x", False, True),
        ("registry-1.docker.io", "user/x", False, False),
    ]


def test_blocked_registry() -> None:
    conf = registries_conf.parse(
        '[[registry]]\nlocation = "bad.example.com"\nblocked = true\n', "/etc/containers/registries.conf"
    )
    with pytest.raises(BlockedRegistryError) as info:
        conf.endpoints(reference.parse("bad.example.com/x:1"))
    assert str(info.value) == (
        "registry 'bad.example.com' is blocked in /etc/containers/registries.conf: refusing to pull bad.example.com/x:1"
    )
    assert isinstance(info.value, RegistriesConfError)
    assert endpoints(conf, "good.example.com/x") == [("good.example.com", "x", False, False)]


def test_location_that_is_not_a_host_is_reported() -> None:
    conf = registries_conf.parse('[[registry]]\nprefix = "example.com"\nlocation = "nohost"\n', "r.conf")
    message = (
        r"r.conf: cannot pull example.com/x:latest from \[\[registry\]\] prefix 'example.com' location 'nohost': the rewritten"
    )
    with pytest.raises(RegistriesConfError, match=message):
        conf.endpoints(reference.parse("example.com/x"))


def test_location_cannot_hold_the_repository() -> None:
    conf = registries_conf.parse('[[registry]]\nprefix = "example.com/foo"\nlocation = "m.example.com"\n', "r.conf")
    with pytest.raises(
        RegistriesConfError, match=r"r\.conf: cannot pull example\.com/foo:1 .*'m\.example\.com:1' does not name a repository"
    ):
        conf.endpoints(reference.parse("example.com/foo:1"))


def test_load_missing_file_is_empty(tmp_path: Path) -> None:
    conf = registries_conf.load(tmp_path / "absent.conf")
    assert conf.registries == ()
    assert endpoints(conf, "registry.k8s.io/pause:3.9") == [("registry.k8s.io", "pause", False, False)]


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "registries.conf"
    path.write_text("[[registry]\n")
    with pytest.raises(RegistriesConfError, match=f"^{path}: invalid TOML: "):
        registries_conf.load(path)
    path.write_bytes(b'unqualified-search-registries = ["\xff"]\n')
    with pytest.raises(RegistriesConfError, match=f"^{path}: not UTF-8 text"):
        registries_conf.load(path)
    with pytest.raises(RegistriesConfError, match=f"^{tmp_path}: cannot read: "):
        registries_conf.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[registry]]\nlocation = "x.io"\ninsecure = "yes"\n',
            "[[registry]] #1 (location 'x.io'): key 'insecure' must be a boolean, not a string",
        ),
        (
            '[[registry]]\nprefix = "p.io"\nlocation = "x.io"\nblocked = 1\n',
            "[[registry]] #1 (prefix 'p.io'): key 'blocked' must be a boolean, not an integer",
        ),
        ("[[registry]]\nlocation = 5\n", "[[registry]] #1: key 'location' must be a string, not an integer"),
        (
            '[[registry]]\nlocation = "a.io"\n[[registry]]\nlocation = "b.io"\nmirror-by-digest-only = "no"\n',
            "[[registry]] #2 (location 'b.io'): key 'mirror-by-digest-only' must be a boolean",
        ),
        ('[registry]\nlocation = "x.io"\n', "key 'registry' must be an array of tables ([[registry]])"),
        ('[[registry]]\nlocation = "x.io"\nmirror = "m.io"\n', "key 'mirror' must be an array of tables ([[registry.mirror]])"),
        (
            '[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\ninsecure = true\n',
            "[[registry]] #1 (location 'x.io') [[registry.mirror]] #1: 'location' is unset",
        ),
        (
            '[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\nlocation = "m.io"\ninsecure = "true"\n',
            "[[registry.mirror]] #1: key 'insecure' must be a boolean, not a string",
        ),
        (
            '[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\nlocation = "m.io"\npull-from-mirror = "sometimes"\n',
            "key 'pull-from-mirror': 'sometimes' is not one of all, digest-only, tag-only",
        ),
        (
            '[[registry]]\nlocation = "x.io"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m.io"\npull-from-mirror = "all"\n',
            "'pull-from-mirror' cannot be set when the registry has mirror-by-digest-only = true",
        ),
        ('[[registry]]\nlocation = "x.io"\npull-from-mirror = "all"\n', "'pull-from-mirror' belongs in [[registry.mirror]]"),
        ("[[registry]]\ninsecure = true\n", "[[registry]] #1: both 'location' and 'prefix' are unset"),
        ('[[registry]]\nprefix = "x.io/a"\n', "'location' is unset and 'prefix' is not of the form *.example.com"),
        ('[[registry]]\nlocation = "https://x.io"\n', "location 'https://x.io': URI schemes are not supported"),
        ('[[registry]]\nprefix = "http://x.io"\nlocation = "x.io"\n', "prefix 'http://x.io': URI schemes are not supported"),
        ('[[registry]]\nlocation = "x.io"\n[[registry.mirror]]\nlocation = "http://m.io"\n', "URI schemes are not supported"),
        (
            '[[registry]]\nlocation = "x.io"\n[[registry]]\nprefix = "y.io"\nlocation = "x.io"\ninsecure = true\n',
            "registry 'x.io' is defined multiple times with conflicting 'insecure' settings",
        ),
        (
            '[[registry]]\nlocation = "x.io"\nblocked = true\n[[registry]]\nprefix = "y.io"\nlocation = "x.io"\n',
            "registry 'x.io' is defined multiple times with conflicting 'blocked' settings",
        ),
        ('unqualified-search-registries = "docker.io"\n', "key 'unqualified-search-registries' must be an array, not a string"),
        (
            'unqualified-search-registries = ["docker.io", 3]\n',
            "key 'unqualified-search-registries': entry 2 must be a string, not an integer",
        ),
        ('unqualified-search-registries = ["docker.io/library"]\n', "'docker.io/library' is not a registry host[:port]"),
        ('short-name-mode = "prompt"\n', "key 'short-name-mode': 'prompt' is not one of disabled, enforcing, permissive"),
        ("short-name-mode = true\n", "key 'short-name-mode' must be a string, not a boolean"),
        ('aliases = "x"\n', "key 'aliases' must be a table, not a string"),
        ("[aliases]\nfedora = 1\n", "[aliases]: key 'fedora' must be a string, not an integer"),
        ('[registries.search]\nregistries = ["docker.io"]\n', "the v1 format ([registries.search] etc.) is not supported"),
    ],
)
def test_invalid_files(text: str, message: str) -> None:
    with pytest.raises(RegistriesConfError) as info:
        registries_conf.parse(text, "/etc/containers/registries.conf")
    assert str(info.value).startswith("/etc/containers/registries.conf: ")
    assert message in str(info.value)


def test_unknown_keys_are_warnings() -> None:
    conf = registries_conf.parse(
        'future-key = 1\n[[registry]]\nlocation = "x.io"\nfancy = true\n[[registry.mirror]]\nlocation = "m.io"\nextra = 2\n',
        "r.conf",
    )
    assert conf.warnings == (
        "r.conf: top level: unknown key 'future-key' ignored",
        "r.conf: [[registry]] #1 (location 'x.io'): unknown key 'fancy' ignored",
        "r.conf: [[registry]] #1 (location 'x.io') [[registry.mirror]] #1: unknown key 'extra' ignored",
    )
    assert [e.host for e in conf.endpoints(reference.parse("x.io/a"))] == ["m.io", "x.io"]


def test_empty_text() -> None:
    conf = registries_conf.parse("")
    assert conf == registries_conf.RegistriesConf()
    assert conf.source == "<string>"
