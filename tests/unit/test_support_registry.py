"""The test registry infrastructure (tests/support) works against a real docker-registry."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import zstandard

from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Compression,
    Device,
    Dir,
    File,
    Hardlink,
    Image,
    ImageFormat,
    Index,
    Layer,
    OpaqueWhiteout,
    Platform,
    RawManifest,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    Symlink,
    Whiteout,
    host_arch,
    parse_www_authenticate,
    push,
    sha256_digest,
    simple_image,
)
from tests.support.registry import (
    HTPASSWD_REALM,
    REGISTRY_BINARY,
    RESERVED_PORTS,
    TOKEN_SERVICE,
    AuthMode,
    LocalRegistry,
    free_port,
    libtrust_key_id,
    parse_scope,
    port_in_use,
    signing_key,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(REGISTRY_BINARY), reason="docker-registry is not installed"),
]


# fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def basic() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="basic", username="alice", password="s3cret pw") as reg:
        yield reg


@pytest.fixture(scope="module")
def token() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="token", username="bob", password="hunter2") as reg:
        yield reg


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=30) as client:
        yield client


def full_layer(compression: Compression = "gzip") -> Layer:
    return Layer(
        [
            Dir("etc"),
            File("etc/hello", b"hello\n", mode=0o600, uid=1000, gid=1001, mtime=1_234_567_890),
            Dir("bin", mode=0o711),
            File("bin/tool", b"#!/bin/sh\necho hi\n", mode=0o4755),
            Symlink("bin/link", "tool"),
            Hardlink("bin/hard", "bin/tool"),
            File("etc/xattr", b"x", xattrs={"user.pycri": "yes"}),
            Whiteout("etc/removed"),
            Whiteout("top-removed"),
            OpaqueWhiteout("var/cache"),
            Device("dev/fifo", kind="fifo"),
            Device("dev/null", kind="char", major=1, minor=3, mode=0o666),
        ],
        compression=compression,
    )


def decompress(blob: bytes, compression: Compression) -> bytes:
    if compression == "gzip":
        return gzip.decompress(blob)
    if compression == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(blob)
    return blob


def assert_roundtrip(client: RegistryClient, repository: str, image: Image) -> None:
    """Manifest, config and layers read back byte-identical with matching digests."""
    r = client.get_manifest(repository, image.manifest_digest)
    assert r.status_code == 200, r.text
    assert r.content == image.manifest_bytes
    assert r.headers["Docker-Content-Digest"] == image.manifest_digest
    assert r.headers["Content-Type"] == image.media_type
    r = client.get_blob(repository, image.config_digest)
    assert r.status_code == 200
    assert r.content == image.config_bytes
    config = json.loads(r.content)
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]
    for layer in image.layers:
        r = client.get_blob(repository, layer.digest)
        assert r.status_code == 200
        assert sha256_digest(r.content) == layer.digest
        assert sha256_digest(decompress(r.content, layer.compression)) == layer.diff_id


# builders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_layer_tar_contents(compression: Compression) -> None:
    layer = full_layer(compression)
    assert layer.diff_id == sha256_digest(layer.tar_bytes)
    assert layer.digest == sha256_digest(layer.blob)
    assert decompress(layer.blob, compression) == layer.tar_bytes
    assert layer.media_type == {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}[compression]
    if compression == "gzip":
        assert layer.media_type_for("docker") == DOCKER_LAYER_GZIP
    if compression == "none":
        assert layer.media_type_for("docker") == DOCKER_LAYER
        assert layer.blob == layer.tar_bytes
    # Deterministic: the same entries give the same digests.
    assert full_layer(compression).digest == layer.digest

    with tarfile.open(fileobj=io.BytesIO(layer.tar_bytes)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert list(members) == [
            "etc",
            "etc/hello",
            "bin",
            "bin/tool",
            "bin/link",
            "bin/hard",
            "etc/xattr",
            "etc/.wh.removed",
            ".wh.top-removed",
            "var/cache/.wh..wh..opq",
            "dev/fifo",
            "dev/null",
        ]
        hello = members["etc/hello"]
        assert hello.isreg()
        assert (hello.mode, hello.uid, hello.gid, hello.mtime) == (0o600, 1000, 1001, 1_234_567_890)
        extracted = tf.extractfile(hello)
        assert extracted is not None
        assert extracted.read() == b"hello\n"
        assert members["etc"].isdir()
        assert members["bin"].mode == 0o711
        assert members["bin/tool"].mode == 0o4755
        assert members["bin/link"].issym()
        assert members["bin/link"].linkname == "tool"
        assert members["bin/hard"].islnk()
        assert members["bin/hard"].linkname == "bin/tool"
        assert members["etc/xattr"].pax_headers["SCHILY.xattr.user.pycri"] == "yes"
        for name in ("etc/.wh.removed", ".wh.top-removed", "var/cache/.wh..wh..opq"):
            assert members[name].isreg()
            assert members[name].size == 0
        assert members["dev/fifo"].isfifo()
        null = members["dev/null"]
        assert null.ischr()
        assert (null.devmajor, null.devminor, null.mode) == (1, 3, 0o666)


def test_layer_from_raw_tar() -> None:
    raw = b"not a tar at all"
    layer = Layer(tar_bytes=raw, compression="gzip", media_type="application/x-custom")
    assert layer.diff_id == sha256_digest(raw)
    assert gzip.decompress(layer.blob) == raw
    assert layer.media_type == layer.media_type_for("docker") == "application/x-custom"
    with pytest.raises(ValueError, match="either"):
        Layer([File("a")], tar_bytes=raw)


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_image_config_and_manifest(fmt: ImageFormat) -> None:
    layers = [full_layer("gzip"), Layer([File("b", b"b")], compression="none")]
    image = Image(
        layers,
        fmt=fmt,
        architecture="arm",
        variant="v7",
        user="1000:1000",
        env=["A=1", "PATH=/bin"],
        entrypoint=["/bin/tool"],
        cmd=["--flag"],
        working_dir="/work",
        labels={"org.example": "yes"},
        stop_signal="SIGINT",
        extra_config={"ExposedPorts": {"80/tcp": {}}},
    )
    config = json.loads(image.config_bytes)
    assert image.image_id == image.config_digest == sha256_digest(image.config_bytes)
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm", "v7")
    assert config["config"] == {
        "User": "1000:1000",
        "Env": ["A=1", "PATH=/bin"],
        "Entrypoint": ["/bin/tool"],
        "Cmd": ["--flag"],
        "WorkingDir": "/work",
        "Labels": {"org.example": "yes"},
        "StopSignal": "SIGINT",
        "ExposedPorts": {"80/tcp": {}},
    }
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    assert len(config["history"]) == 2

    manifest = json.loads(image.manifest_bytes)
    assert image.manifest_digest == sha256_digest(image.manifest_bytes)
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == image.media_type == (OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST)
    assert manifest["config"] == {
        "mediaType": OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG,
        "digest": image.config_digest,
        "size": len(image.config_bytes),
    }
    assert [d["digest"] for d in manifest["layers"]] == [layer.digest for layer in layers]
    assert [d["size"] for d in manifest["layers"]] == [layer.size for layer in layers]
    assert [d["mediaType"] for d in manifest["layers"]] == [layer.media_type_for(fmt) for layer in layers]
    assert image.platform == Platform(os="linux", architecture="arm", variant="v7")


def test_index_and_simple_image() -> None:
    amd = simple_image({"etc/os": b"amd\n"}, arch="amd64")
    arm = simple_image({"etc/os": b"arm\n"}, arch="arm64", compression="zstd")
    index = Index([amd, (arm, Platform(architecture="arm64", variant="v8"))])
    data = json.loads(index.index_bytes)
    assert index.digest == sha256_digest(index.index_bytes)
    assert data["mediaType"] == OCI_INDEX
    assert [m["digest"] for m in data["manifests"]] == [amd.manifest_digest, arm.manifest_digest]
    assert data["manifests"][0]["platform"] == {"architecture": "amd64", "os": "linux"}
    assert data["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    assert index.image_for("arm64") is arm
    docker = Index([amd, arm], fmt="docker")
    assert json.loads(docker.index_bytes)["mediaType"] == DOCKER_MANIFEST_LIST
    # simple_image adds the parent directories.
    with tarfile.open(fileobj=io.BytesIO(amd.layers[0].tar_bytes)) as tf:
        assert tf.getnames() == ["etc", "etc/os"]
    assert simple_image({}).architecture == host_arch()


def test_helpers() -> None:
    assert parse_scope("repository:library/busybox:pull,push") == ("repository", "library/busybox", ("pull", "push"))
    assert parse_scope("repository:127.0.0.1:5000/x:pull") == ("repository", "127.0.0.1:5000/x", ("pull",))
    assert parse_scope("garbage") is None
    assert parse_www_authenticate('Bearer realm="http://a/token",service="svc",scope="repository:x:pull,push"') == (
        "bearer",
        {"realm": "http://a/token", "service": "svc", "scope": "repository:x:pull,push"},
    )
    assert parse_www_authenticate('Basic realm="r"') == ("basic", {"realm": "r"})
    kid = signing_key().kid
    assert kid == libtrust_key_id(signing_key().spki_der)
    groups = kid.split(":")
    assert len(groups) == 12
    assert all(len(g) == 4 for g in groups)
    for _ in range(20):
        assert free_port() not in RESERVED_PORTS


# lifecycle ----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", [None, "basic", "token"])
def test_lifecycle_leaves_nothing_behind(auth: AuthMode | None, http: httpx.Client) -> None:
    reg = LocalRegistry(auth=auth)
    with reg:
        assert reg.proc is not None
        pid = reg.proc.pid
        tmp = reg.tmpdir
        assert reg.host == f"127.0.0.1:{reg.port}"
        assert reg.url == f"http://127.0.0.1:{reg.port}"
        assert reg.port not in RESERVED_PORTS
        assert reg.running
        assert reg.root.is_dir()
        r = http.get(f"{reg.url}/v2/")
        assert r.status_code == (200 if auth is None else 401)
        assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        token_port = reg.token_server.port if reg.token_server is not None else None
    assert not reg.running
    assert reg.proc is None
    assert not tmp.exists()
    assert not port_in_use(reg.port)
    # The process is gone (reaped), not merely a zombie.
    assert not Path(f"/proc/{pid}/cmdline").exists() or b"docker-registry" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    if token_port is not None:
        assert reg.token_server is not None
        assert not reg.token_server.running
        assert not port_in_use(token_port)
    assert "listening on 127.0.0.1" in reg.log()


def test_two_registries_side_by_side(http: httpx.Client) -> None:
    with LocalRegistry() as a, LocalRegistry() as b:
        assert a.port != b.port
        push(a, "only/in-a", "v1", simple_image({"a": b"a"}))
        assert http.get(f"{a.url}/v2/only/in-a/tags/list").json()["tags"] == ["v1"]
        assert http.get(f"{b.url}/v2/only/in-a/tags/list").status_code == 404


# pushing to a registry without auth ---------------------------------------------------------


@pytest.mark.parametrize("fmt", ["oci", "docker"])
@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_push_single_platform(plain: LocalRegistry, fmt: ImageFormat, compression: Compression) -> None:
    image = Image(
        [full_layer(compression), Layer([File("second", b"2")], compression=compression)],
        fmt=fmt,
        cmd=["/bin/tool"],
    )
    repo = f"single/{fmt}-{compression}"
    digest = push(plain, repo, "latest", image)
    assert digest == image.manifest_digest
    with RegistryClient(plain) as client:
        r = client.get_manifest(repo, "latest")
        assert r.status_code == 200
        assert r.content == image.manifest_bytes
        assert r.headers["Docker-Content-Digest"] == image.manifest_digest
        assert_roundtrip(client, repo, image)
        # The blob written to disk is exactly the pushed blob.
        assert plain.blob_path(image.layers[0].digest).read_bytes() == image.layers[0].blob


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_push_index_two_platforms(plain: LocalRegistry, fmt: ImageFormat) -> None:
    amd = Image([full_layer("gzip"), Layer([File("amd", b"x86")], compression="none")], fmt=fmt, architecture="amd64")
    arm = Image([full_layer("zstd")], fmt=fmt, architecture="arm64", variant="v8")
    index = Index([amd, arm], fmt=fmt)
    repo = f"multi/{fmt}"
    assert push(plain, repo, "v1", index) == index.digest
    with RegistryClient(plain) as client:
        r = client.get_manifest(repo, "v1")
        assert r.status_code == 200
        assert r.content == index.index_bytes
        assert r.headers["Docker-Content-Digest"] == index.digest
        assert r.headers["Content-Type"] == index.media_type
        listed = json.loads(r.content)["manifests"]
        assert [m["platform"]["architecture"] for m in listed] == ["amd64", "arm64"]
        for image in (amd, arm):
            assert_roundtrip(client, repo, image)
        # Push by digest works too.
        assert push(plain, repo, index.digest, index) == index.digest
        assert client.get_manifest(repo, index.digest).content == index.index_bytes


def test_registry_quirks_on_accept_header(plain: LocalRegistry) -> None:
    """distribution 2.8: OCI content is 404 unless accepted; Docker schema 2 is rewritten to schema 1."""
    oci = simple_image({"q": b"oci"})
    docker = simple_image({"q": b"docker"}, fmt="docker")
    push(plain, "quirks/oci", "t", oci)
    push(plain, "quirks/docker", "t", docker)
    with RegistryClient(plain) as client:
        r = client.get_manifest("quirks/oci", "t", accept=DOCKER_MANIFEST)
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
        r = client.get_manifest("quirks/docker", "t", accept="application/json")
        assert r.status_code == 200
        assert r.content != docker.manifest_bytes
        assert json.loads(r.content)["schemaVersion"] == 1
        assert client.get_manifest("quirks/docker", "t", accept=MANIFEST_ACCEPT).content == docker.manifest_bytes


def test_push_refused_manifest_with_missing_blob(plain: LocalRegistry) -> None:
    image = simple_image({"m": b"missing"})
    raw = RawManifest(image.media_type, image.manifest_bytes, {image.config_digest: image.config_bytes})
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN") as excinfo:
        push(plain, "raw/missing", "t", raw)
    assert excinfo.value.status_code == 400


# storage tampering --------------------------------------------------------------------------


def test_corrupt_and_truncate_blob(plain: LocalRegistry) -> None:
    image = Image([full_layer("gzip"), Layer([File("z", b"z" * 1000)], compression="zstd")])
    repo = "tamper/image"
    push(plain, repo, "t", image)
    first, second = image.layers
    with RegistryClient(plain) as client:
        assert client.get_blob(repo, first.digest).content == first.blob
        plain.corrupt_blob(first.digest)
        r = client.get_blob(repo, first.digest)
        assert r.status_code == 200
        assert len(r.content) == first.size
        assert sha256_digest(r.content) != first.digest
        # The registry still labels the bytes with the original digest.
        assert r.headers["Docker-Content-Digest"] == first.digest

        plain.corrupt_blob(second.digest, b"entirely different")
        assert client.get_blob(repo, second.digest).content == b"entirely different"

        plain.truncate_blob(image.config_digest, 10)
        r = client.get_blob(repo, image.config_digest)
        assert r.status_code == 200
        assert r.content == image.config_bytes[:10]
        assert r.headers["Content-Length"] == "10"


def test_push_with_corrupt_or_omitted_blob(plain: LocalRegistry) -> None:
    image = simple_image({"c": b"corrupt me"}, compression="zstd")
    layer = image.layers[0]
    push(plain, "tamper/corrupt", "t", image, corrupt_blob=layer.digest)
    with RegistryClient(plain) as client:
        assert client.get_manifest("tamper/corrupt", "t").content == image.manifest_bytes
        served = client.get_blob("tamper/corrupt", layer.digest).content
        assert len(served) == layer.size
        assert sha256_digest(served) != layer.digest

    other = simple_image({"o": b"omit me"})
    push(plain, "tamper/omit", "t", other, omit_blob=other.config_digest)
    with RegistryClient(plain) as client:
        assert client.get_manifest("tamper/omit", "t").content == other.manifest_bytes
        r = client.get_blob("tamper/omit", other.config_digest)
        assert r.status_code == 404
        assert r.json()["errors"][0]["code"] == "BLOB_UNKNOWN"
        assert client.get_blob("tamper/omit", other.layers[0].digest).status_code == 200


def test_corrupt_child_manifest_of_index(plain: LocalRegistry) -> None:
    amd = simple_image({"p": b"amd"}, arch="amd64")
    arm = simple_image({"p": b"arm"}, arch="arm64")
    index = Index([amd, arm])
    push(plain, "tamper/index", "t", index, omit_blob=arm.manifest_digest)
    with RegistryClient(plain) as client:
        assert client.get_manifest("tamper/index", "t").content == index.index_bytes
        assert client.get_manifest("tamper/index", amd.manifest_digest).status_code == 200
        assert client.get_manifest("tamper/index", arm.manifest_digest).status_code == 404


def test_tampering_rejects_unknown_blobs(plain: LocalRegistry) -> None:
    with pytest.raises(FileNotFoundError):
        plain.corrupt_blob(sha256_digest(b"never pushed"))
    with pytest.raises(ValueError, match="sha256"):
        plain.blob_path("md5:abc")
    with pytest.raises(TypeError):
        push(plain.url, "x/y", "t", simple_image({}), corrupt_blob=sha256_digest(b""))


# basic auth ---------------------------------------------------------------------------------


def test_basic_auth_challenge_and_credentials(basic: LocalRegistry, http: httpx.Client) -> None:
    r = http.get(f"{basic.url}/v2/")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == f'Basic realm="{HTPASSWD_REALM}"'
    assert http.get(f"{basic.url}/v2/", auth=("alice", "wrong")).status_code == 401
    assert http.get(f"{basic.url}/v2/", auth=("mallory", "s3cret pw")).status_code == 401
    assert http.get(f"{basic.url}/v2/", auth=("alice", "s3cret pw")).status_code == 200


def test_basic_auth_push_and_pull(basic: LocalRegistry, http: httpx.Client) -> None:
    image = simple_image({"etc/basic": b"basic"}, fmt="docker")
    assert push(basic, "auth/basic", "v1", image) == image.manifest_digest  # registry's credentials
    with RegistryClient(basic, username="alice", password="s3cret pw") as client:
        assert_roundtrip(client, "auth/basic", image)
        assert client.authorization is not None
        assert client.authorization.startswith("Basic ")
    r = http.get(f"{basic.url}/v2/auth/basic/manifests/v1", headers={"Accept": MANIFEST_ACCEPT})
    assert r.status_code == 401
    with RegistryClient(basic) as anonymous:
        assert anonymous.get_manifest("auth/basic", "v1").status_code == 401
    with pytest.raises(RegistryError) as excinfo:
        push(basic, "auth/basic", "v2", image, anonymous=True)
    assert excinfo.value.status_code == 401
    with pytest.raises(RegistryError) as excinfo:
        push(basic, "auth/basic", "v2", image, username="alice", password="nope")
    assert excinfo.value.status_code == 401


# token auth ---------------------------------------------------------------------------------


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_token_challenge_and_token_flow(token: LocalRegistry, http: httpx.Client) -> None:
    r = http.get(f"{token.url}/v2/")
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge == f'Bearer realm="{token.realm}",service="{TOKEN_SERVICE}"'
    scheme, params = parse_www_authenticate(challenge)
    assert scheme == "bearer"
    assert params["realm"] == f"http://127.0.0.1:{token.token_server.port if token.token_server else 0}/token"

    before = token.token_requests
    t = http.get(params["realm"], params={"service": params["service"]}, auth=("bob", "hunter2"))
    assert t.status_code == 200
    body = t.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert body["issued_at"].endswith("Z")
    assert token.token_requests == before + 1
    header = json.loads(base64.urlsafe_b64decode(body["token"].split(".")[0] + "=="))
    assert header == {"typ": "JWT", "alg": "RS256", "kid": signing_key().kid}

    assert http.get(f"{token.url}/v2/", headers=bearer(body["token"])).status_code == 200

    wrong = http.get(params["realm"], params={"service": params["service"]}, auth=("bob", "wrong"))
    assert wrong.status_code == 401
    assert http.get(params["realm"], params={"service": params["service"]}).status_code == 401
    log = token.token_request_log
    assert [(e.username, e.status) for e in log[-3:]] == [("bob", 200), ("bob", 401), (None, 401)]


def test_token_scopes_are_enforced(token: LocalRegistry, http: httpx.Client) -> None:
    image = simple_image({"scoped": b"1"})
    push(token, "auth/scoped", "v1", image)
    realm, service = token.realm, token.service
    assert realm is not None
    assert service is not None
    manifest_url = f"{token.url}/v2/auth/scoped/manifests/v1"
    accept = {"Accept": MANIFEST_ACCEPT}

    r = http.get(manifest_url, headers=accept)
    assert r.status_code == 401
    assert 'scope="repository:auth/scoped:pull"' in r.headers["WWW-Authenticate"]

    pull = http.get(realm, params={"service": service, "scope": "repository:auth/scoped:pull"}, auth=("bob", "hunter2"))
    pull_token = pull.json()["token"]
    assert http.get(manifest_url, headers={**accept, **bearer(pull_token)}).content == image.manifest_bytes
    # A pull-only token cannot start an upload...
    r = http.post(f"{token.url}/v2/auth/scoped/blobs/uploads/", headers=bearer(pull_token))
    assert r.status_code == 401
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    # ...nor read another repository.
    assert http.get(f"{token.url}/v2/other/manifests/v1", headers={**accept, **bearer(pull_token)}).status_code == 401

    # Tokens the registry must refuse: bad signature, wrong audience/issuer, expired.
    head, claims, sig = pull_token.split(".")
    forged = f"{head}.{claims}.{sig[:-4]}AAAA"
    expired = token.issue_token("auth/scoped", ttl=-3600)
    wrong_aud = token.issue_token("auth/scoped", audience="someone-else")
    wrong_iss = token.issue_token("auth/scoped", issuer="someone-else")
    for bad in (forged, expired, wrong_aud, wrong_iss):
        r = http.get(manifest_url, headers={**accept, **bearer(bad)})
        assert r.status_code == 401
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert http.get(manifest_url, headers={**accept, **bearer(token.issue_token("auth/scoped"))}).status_code == 200


def test_token_push_caches_token(token: LocalRegistry) -> None:
    image = Image([full_layer("gzip"), Layer([File("t", b"t")], compression="zstd")])
    token.reset_token_requests()
    assert push(token, "auth/token", "v1", image) == image.manifest_digest
    # One pull,push token covered the HEADs, uploads and the manifest PUT.
    assert token.token_requests == 1
    (req,) = token.token_request_log
    assert req.username == "bob"
    assert req.service == TOKEN_SERVICE
    assert ("repository", "auth/token", ("pull", "push")) in req.access

    with RegistryClient(token, username="bob", password="hunter2") as client:
        assert_roundtrip(client, "auth/token", image)
        assert client.token_fetches == 1

    index = Index([image, simple_image({"arm": b"arm"}, arch="arm64", fmt="oci")])
    token.reset_token_requests()
    push(token, "auth/token", "multi", index)
    assert token.token_requests == 1

    with pytest.raises(RegistryAuthError) as excinfo:
        push(token, "auth/token", "v2", image, password="wrong")
    assert excinfo.value.status_code == 401
    with pytest.raises(RegistryAuthError):
        push(token, "auth/token", "v2", image, anonymous=True)


def test_token_oauth_post(token: LocalRegistry, http: httpx.Client) -> None:
    assert token.realm is not None
    form = {
        "grant_type": "password",
        "username": "bob",
        "password": "hunter2",
        "service": TOKEN_SERVICE,
        "scope": "repository:auth/post:pull",
        "client_id": "pycri-test",
    }
    r = http.post(token.realm, data=form)
    assert r.status_code == 200
    assert http.get(f"{token.url}/v2/", headers=bearer(r.json()["access_token"])).status_code == 200
    assert token.token_request_log[-1].method == "POST"
    assert http.post(token.realm, data={**form, "password": "bad"}).status_code == 401
    assert http.post(token.realm, data={**form, "grant_type": "refresh_token"}).status_code == 400


def test_token_x5c_and_anonymous_pull(http: httpx.Client) -> None:
    with LocalRegistry(auth="token", token_key_header="x5c", anonymous_pull=True) as reg:
        image = simple_image({"x5c": b"cert chain"}, compression="none")
        push(reg, "auth/x5c", "v1", image)
        assert reg.token_request_log[-1].username == reg.username
        # Anonymous clients get pull-only tokens.
        with RegistryClient(reg) as anonymous:
            assert_roundtrip(anonymous, "auth/x5c", image)
            assert anonymous.authorization is not None
            jwt_header = json.loads(base64.urlsafe_b64decode(anonymous.authorization.split()[1].split(".")[0] + "=="))
            assert "x5c" in jwt_header
            assert "kid" not in jwt_header
        assert reg.token_request_log[-1].username is None
        assert reg.token_request_log[-1].access == (("repository", "auth/x5c", ("pull",)),)
        with pytest.raises(RegistryError) as excinfo:
            push(reg, "auth/x5c", "v2", image, anonymous=True)
        assert excinfo.value.status_code == 401
        # Wrong credentials are still refused even though anonymous pull is allowed.
        r = http.get(f"{reg.realm}", params={"service": TOKEN_SERVICE}, auth=("bob", "nope"))
        assert r.status_code == 401
    assert not port_in_use(reg.port)


def test_digest_helper_matches_hashlib() -> None:
    assert sha256_digest(b"abc") == "sha256:" + hashlib.sha256(b"abc").hexdigest()
