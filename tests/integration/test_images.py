"""ImageService against a real daemon and real registries (docker-registry on 127.0.0.1).

One registry, one empty registry (a mirror that lacks everything), a bandwidth-limited TCP relay
in front of the registry and one daemon are shared by the module; the daemon's registries.conf
sends ``example.invalid``, ``fallback.invalid`` (empty mirror first) and ``slow.invalid`` (through
the relay, so a test can act while a download is surely under way) to them as mirrors. Every test
that uses the shared daemon (the ``cri`` fixture) leaves it as it found it: the fixture removes
every image afterwards and checks that the store is empty again (no record, blob, layer, ingest or
temporary file). Tests needing a daemon of their own (restart, crash) or auth (basic, token) start
what they need. Downloads are counted in the registry's log ("response completed" lines).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import gzip
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, DeadlineExceededError, NotFoundError
from pycri.images.manifest import chain_ids
from pycri.stats.fsusage import mount_of
from pycri.testing import DaemonProcess
from tests.integration.conftest import CRICTL
from tests.support.images import (
    DEFAULT_MTIME,
    OCI_LAYER_GZIP,
    Compression,
    Dir,
    Entry,
    File,
    Hardlink,
    Image,
    ImageFormat,
    Index,
    Layer,
    OpaqueWhiteout,
    Platform,
    Symlink,
    Whiteout,
    build_tar,
    host_arch,
    push,
    sha256_digest,
    simple_image,
)
from tests.support.registry import LocalRegistry

pytestmark = pytest.mark.integration

MiB = 1 << 20
SLOW_RATE = 64 * MiB  # bytes/s through the slow proxy: the big layer takes a second
HOST_ARCH = host_arch()
OTHER_ARCHES = [a for a in ("arm64", "amd64", "ppc64le", "s390x") if a != HOST_ARCH]
Artifact = Image | Index


# -- helpers -------------------------------------------------------------------------------------


def spec(image: str) -> api.ImageSpec:
    return api.ImageSpec(image=image)


def pull(client: Client, image: str, *, auth: api.AuthConfig | None = None) -> str:
    return client.pull_image(api.PullImageRequest(image=spec(image), auth=auth)).image_ref


def status(client: Client, image: str, *, verbose: bool = False) -> api.ImageStatusResponse:
    return client.image_status(api.ImageStatusRequest(image=spec(image), verbose=verbose))


def remove(client: Client, image: str) -> None:
    client.remove_image(api.RemoveImageRequest(image=spec(image)))


def pull_error(client: Client, image: str, *, auth: api.AuthConfig | None = None) -> ClientError:
    with pytest.raises(ClientError) as info:
        pull(client, image, auth=auth)
    return info.value


def images_of(artifact: Artifact) -> list[Image]:
    return artifact.images if isinstance(artifact, Index) else [artifact]


def chains(image: Image) -> list[str]:
    return chain_ids([layer.diff_id for layer in image.layers])


class Store:
    """The daemon's image store on disk: ``<root_dir>/images``."""

    def __init__(self, daemon: DaemonProcess) -> None:
        self.root_dir = Path(daemon.cfg.root_dir)
        self.root = self.root_dir / "images"
        self.blobs = self.root / "content" / "blobs" / "sha256"
        self.ingest = self.root / "content" / "ingest"
        self.layers = self.root / "layers"

    def blob(self, digest: str) -> Path:
        return self.blobs / digest.removeprefix("sha256:")

    def layer(self, chain_id: str) -> Path:
        return self.layers / chain_id.removeprefix("sha256:")

    def tmp_dirs(self) -> list[str]:
        return sorted(n for n in os.listdir(self.layers) if n.startswith(".tmp-"))

    def leftovers(self, client: Client, artifact: Artifact) -> list[str]:
        """What a failed, cancelled or removed pull of ``artifact`` left behind (empty: nothing)."""
        found: list[str] = []
        if ingest := sorted(os.listdir(self.ingest)):
            found.append(f"ingest files {ingest}")
        if tmp := self.tmp_dirs():
            found.append(f"temporary layer dirs {tmp}")
        digests = [artifact.digest] if isinstance(artifact, Index) else []
        for image in images_of(artifact):
            if status(client, image.config_digest).HasField("image"):
                found.append(f"image record {image.config_digest}")
            digests += [image.manifest_digest, image.config_digest, *(layer.digest for layer in image.layers)]
            found += [f"layer dir of {c}" for c in chains(image) if self.layer(c).exists()]
        found += [f"blob {d}" for d in digests if self.blob(d).exists()]
        return found

    def contents(self) -> list[str]:
        """Everything in the store besides its fixed directories."""
        return sorted(
            [f"blob {n}" for n in os.listdir(self.blobs)]
            + [f"ingest {n}" for n in os.listdir(self.ingest)]
            + [f"layer {n}" for n in os.listdir(self.layers)]
        )


def wait_for(what: str, check: Callable[[], list[str]], timeout: float = 10.0) -> None:
    """Poll ``check`` until it reports nothing."""
    deadline = time.monotonic() + timeout
    while problems := check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} after {timeout}s: {problems}")
        time.sleep(0.05)


_ACCESS = re.compile(r'msg="response completed.*?http\.request\.method=(\w+) .*?http\.request\.uri="?([^"\s]+)"?')


def registry_gets(registry: LocalRegistry, path: str, *, settle: float = 0.15) -> int:
    """How many GETs of ``path`` the registry has answered (from its log; a request is logged as it ends)."""
    time.sleep(settle)
    return sum(1 for m in _ACCESS.finditer(registry.log()) if m.group(1) == "GET" and m.group(2) == path)


def blob_gets(registry: LocalRegistry, repository: str, digest: str) -> int:
    return registry_gets(registry, f"/v2/{repository}/blobs/{digest}")


def opaque(path: Path) -> bytes | None:
    """The overlayfs opaque marker of a directory, None when it has none."""
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        raise


def random_layer(size: int, name: str = "data") -> Layer:
    return Layer([File(name, os.urandom(size))], compression="gzip")


def unique_image(label: str, *, layers: int = 3, layer_size: int = 64 * 1024) -> Image:
    """An image no other test pushes (random layer contents)."""
    return Image([random_layer(layer_size, f"{label}-{i}") for i in range(layers)], labels={"test": label})


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def empty_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


class SlowProxy:
    """A TCP relay on 127.0.0.1 in front of a registry that passes its answers at ``rate`` bytes/s per connection.

    Pulls through it take long enough for a test to act while a download is surely under way.
    """

    def __init__(self, upstream: LocalRegistry, rate: int) -> None:
        self.upstream = upstream
        self.rate = rate
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, name="slow-proxy", daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream.port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.rate), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket, rate: int) -> None:
        try:
            while data := source.recv(64 * 1024):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                sock.close()


@pytest.fixture(scope="module")
def slow_proxy(registry: LocalRegistry) -> Iterator[SlowProxy]:
    proxy = SlowProxy(registry, rate=SLOW_RATE)
    yield proxy
    proxy.close()


REGISTRIES_CONF = """\
[[registry]]
location = "example.invalid"

[[registry.mirror]]
location = "{full}"
insecure = true

[[registry]]
location = "fallback.invalid"

[[registry.mirror]]
location = "{empty}"
insecure = true

[[registry.mirror]]
location = "{full}"
insecure = true

[[registry]]
location = "slow.invalid"

[[registry.mirror]]
location = "{slow}"
insecure = true
"""


@pytest.fixture(scope="module")
def registries_conf(
    registry: LocalRegistry, empty_registry: LocalRegistry, slow_proxy: SlowProxy, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """``example.invalid``: the registry as a mirror; ``fallback.invalid``: the empty one first;
    ``slow.invalid``: the registry behind the slow proxy."""
    conf = tmp_path_factory.mktemp("registries") / "registries.conf"
    conf.write_text(REGISTRIES_CONF.format(full=registry.host, empty=empty_registry.host, slow=slow_proxy.host))
    return conf


@pytest.fixture(scope="module")
def shared_daemon(registries_conf: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess.temporary(images={"registries_conf": str(registries_conf)}) as daemon:
        yield daemon


@pytest.fixture
def cri(shared_daemon: DaemonProcess) -> Iterator[Client]:
    """A client of the shared daemon; afterwards every image is removed and the store must be empty."""
    with Client(shared_daemon.socket, timeout=30) as client:
        yield client
        for image in client.list_images().images:
            remove(client, image.id)
        assert not client.list_images().images
        assert shared_daemon.proc is not None
        assert shared_daemon.proc.poll() is None, f"daemon died:\n{shared_daemon.log()}"
        store = Store(shared_daemon)
        wait_for("the store is not empty once every image is removed", store.contents)


@pytest.fixture
def store(shared_daemon: DaemonProcess) -> Store:
    return Store(shared_daemon)


# -- pull, status ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "uid", "username"),
    [
        ("1002", 1002, ""),
        ("www-data", None, "www-data"),
        ("1003:1004", 1003, ""),
        ("www-data:1004", None, "www-data"),
        ("", None, ""),
    ],
)
def test_pull_and_image_status(cri: Client, registry: LocalRegistry, user: str, uid: int | None, username: str) -> None:
    image = simple_image({"etc/user": user.encode()}, user=user, cmd=["/bin/true"])
    tag = re.sub(r"[^a-z0-9]", "-", user) or "nouser"
    name = f"{registry.host}/status/app"
    push(registry, "status/app", tag, image)

    assert pull(cri, f"{name}:{tag}") == image.config_digest

    found = status(cri, f"{name}:{tag}")
    assert found.HasField("image")
    assert not found.info
    img = found.image
    assert img.id == image.config_digest
    assert list(img.repo_tags) == [f"{name}:{tag}"]
    assert list(img.repo_digests) == [f"{name}@{image.manifest_digest}"]
    # As containerd counts it: every blob the image is made of, its manifest included.
    assert img.size == len(image.manifest_bytes) + sum(len(blob) for blob in image.blobs().values()) > 0
    assert img.HasField("uid") is (uid is not None)
    if uid is not None:
        assert img.uid.value == uid
    assert img.username == username
    assert img.spec.image == image.config_digest
    assert img.spec.user_specified_image == f"{name}:{tag}"
    assert not img.pinned

    hexid = image.config_digest.removeprefix("sha256:")
    for key in (image.config_digest, hexid, f"{name}@{image.manifest_digest}", hexid[:12], f"sha256:{hexid[:12]}"):
        assert status(cri, key).image == img, key

    verbose = status(cri, f"{name}:{tag}", verbose=True)
    assert verbose.image == img
    info = json.loads(verbose.info["info"])
    assert info["imageSpec"] == image.config
    assert info["imageSpec"]["config"].get("User", "") == user
    assert info["chainIDs"] == chains(image)
    assert info["manifestDigest"] == image.manifest_digest


def test_unknown_image_status_is_empty(cri: Client, registry: LocalRegistry) -> None:
    for key in (f"{registry.host}/status/absent:v1", "absent", sha256_digest(b"absent"), "deadbeef"):
        assert status(cri, key, verbose=True) == api.ImageStatusResponse(), key


def test_layers_on_disk(cri: Client, registry: LocalRegistry, store: Store) -> None:
    base = Layer(
        [
            Dir("etc"),
            File("etc/keep", b"keep\n"),
            File("etc/gone", b"gone\n"),
            Dir("data"),
            File("data/old", b"old\n"),
            Dir("opt"),
            Dir("opt/sub"),
            File("opt/sub/f", b"f\n"),
            Dir("bin"),
            File("bin/tool", b"#!/bin/sh\n", mode=0o755, uid=1000, gid=1001),
            File("secret", b"s\n", mode=0o600, gid=42),
            Dir("home", mode=0o750, uid=1000, gid=1000),
        ],
        compression="gzip",
    )
    middle = Layer(
        [
            Dir("etc"),
            Whiteout("etc/gone"),
            Symlink("etc/link", "/etc/keep"),
            Symlink("rel", "etc/keep"),
            Dir("data"),
            OpaqueWhiteout("data"),
            File("data/new", b"new\n"),
            Whiteout("opt"),
            Dir("usr"),
            File("usr/a", b"shared\n", mode=0o640, uid=7, gid=8),
            Hardlink("usr/b", "usr/a"),
        ],
        compression="zstd",
    )
    top = Layer([Dir("data"), File("data/newest", b"3\n", mode=0o444), Hardlink("data/again", "data/newest")], compression="none")
    image = Image([base, middle, top], user="1000")
    push(registry, "layers/app", "v1", image)
    assert pull(cri, f"{registry.host}/layers/app:v1") == image.config_digest

    ids = chains(image)
    assert ids[0] == base.diff_id
    assert sorted(os.listdir(store.layers)) == sorted(c.removeprefix("sha256:") for c in ids)
    l1, l2, l3 = (store.layer(c) for c in ids)
    for layer_dir in (l1, l2, l3):
        assert stat.S_IMODE(layer_dir.stat().st_mode) == 0o755
        for _, dirnames, filenames in os.walk(layer_dir):
            assert not [n for n in dirnames + filenames if n.startswith(".wh.")]

    # Layer 1: plain files, modes, owners, times.
    tool = l1 / "bin/tool"
    st = tool.lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o755, 1000, 1001, DEFAULT_MTIME)
    assert tool.read_bytes() == b"#!/bin/sh\n"
    st = (l1 / "secret").lstat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 42)
    st = (l1 / "home").lstat()
    assert stat.S_ISDIR(st.st_mode)
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1000)
    assert (l1 / "etc/gone").read_bytes() == b"gone\n"
    assert (l1 / "opt/sub/f").is_file()
    assert opaque(l1 / "data") is None

    # Layer 2: whiteouts are 0/0 character devices, the opaque dir has the overlay xattr.
    for whiteout in (l2 / "etc/gone", l2 / "opt"):
        st = whiteout.lstat()
        assert stat.S_ISCHR(st.st_mode), whiteout
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (0, 0)
    assert opaque(l2 / "data") == b"y"
    assert os.listdir(l2 / "data") == ["new"]
    assert not (l2 / "etc/keep").exists()  # a layer holds its own changes only
    assert os.readlink(l2 / "etc/link") == "/etc/keep"
    assert os.readlink(l2 / "rel") == "etc/keep"
    a, b = (l2 / "usr/a").lstat(), (l2 / "usr/b").lstat()
    assert a.st_ino == b.st_ino
    assert a.st_nlink == 2
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) == (0o640, 7, 8)
    assert (l2 / "usr/b").read_bytes() == b"shared\n"

    # Layer 3 (uncompressed): a hardlink in a directory the layer only re-lists.
    newest, again = (l3 / "data/newest").lstat(), (l3 / "data/again").lstat()
    assert newest.st_ino == again.st_ino
    assert stat.S_IMODE(newest.st_mode) == 0o444
    assert opaque(l3 / "data") is None

    found = status(cri, image.config_digest).image
    assert found.uid.value == 1000


def test_repeated_layers(cri: Client, registry: LocalRegistry, store: Store) -> None:
    """Docker images often repeat a layer (the empty one): each position gets its own chain ID."""
    empty, same = Layer([]), Layer([File("same", b"same\n")])
    image = Image([empty, same, empty, same])
    push(registry, "repeated/app", "v1", image)
    assert pull(cri, f"{registry.host}/repeated/app:v1") == image.config_digest
    ids = chains(image)
    assert len(set(ids)) == 4
    assert sorted(os.listdir(store.layers)) == sorted(c.removeprefix("sha256:") for c in ids)
    assert os.listdir(store.layer(ids[2])) == []
    assert (store.layer(ids[3]) / "same").read_bytes() == b"same\n"
    assert blob_gets(registry, "repeated/app", empty.digest) == 1
    assert blob_gets(registry, "repeated/app", same.digest) == 1


# -- formats and platforms -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_index_picks_the_host_platform(cri: Client, registry: LocalRegistry, store: Store, fmt: ImageFormat) -> None:
    here = simple_image({"arch": HOST_ARCH.encode()}, fmt=fmt)
    other_arch = OTHER_ARCHES[0]
    variant = "v8" if other_arch == "arm64" else None
    there = simple_image({"arch": other_arch.encode()}, fmt=fmt, arch=other_arch, variant=variant)
    index = Index(
        [(there, Platform(architecture=other_arch, variant=variant)), (here, Platform(architecture=HOST_ARCH))],
        fmt=fmt,
    )
    name = f"{registry.host}/multi/{fmt}"
    push(registry, f"multi/{fmt}", "v1", index)

    assert pull(cri, f"{name}:v1") == here.config_digest
    img = status(cri, f"{name}:v1").image
    assert list(img.repo_tags) == [f"{name}:v1"]
    assert list(img.repo_digests) == [f"{name}@{index.digest}"]  # what the tag resolved to: the index
    assert status(cri, f"{name}@{index.digest}").image == img
    assert img.size == len(index.index_bytes) + len(here.manifest_bytes) + sum(len(b) for b in here.blobs().values())
    info = json.loads(status(cri, img.id, verbose=True).info["info"])
    assert info["manifestDigest"] == here.manifest_digest
    assert info["imageSpec"]["architecture"] == HOST_ARCH
    # The other platform's config and layers were never fetched.
    assert blob_gets(registry, f"multi/{fmt}", there.layers[0].digest) == 0
    assert blob_gets(registry, f"multi/{fmt}", there.config_digest) == 0
    assert not store.blob(there.config_digest).exists()
    assert store.layer(chains(here)[0]).is_dir()


def test_index_without_the_host_platform(cri: Client, registry: LocalRegistry, store: Store) -> None:
    arm = simple_image({"arch": b"arm64"}, arch="arm64", variant="v8")
    other = simple_image({"arch": b"other"}, arch=OTHER_ARCHES[-1])
    entries = [(arm, Platform(architecture="arm64", variant="v8")), (other, Platform(architecture=OTHER_ARCHES[-1]))]
    if HOST_ARCH == "arm64":
        entries = entries[1:]
    index = Index(entries)
    push(registry, "multi/foreign", "v1", index)

    error = pull_error(cri, f"{registry.host}/multi/foreign:v1")
    assert error.code is grpc.StatusCode.DATA_LOSS
    assert f"linux/{HOST_ARCH}" in error.details
    for _, plat in entries:
        assert "/".join(p for p in ("linux", plat.architecture, plat.variant) if p) in error.details
    assert store.leftovers(cri, index) == []


@pytest.mark.parametrize(
    ("fmt", "compression"),
    [
        ("oci", "gzip"),
        ("oci", "zstd"),
        ("oci", "none"),
        ("docker", "gzip"),
        ("docker", "zstd"),
        ("docker", "none"),
    ],
)
def test_layer_compressions(
    cri: Client, registry: LocalRegistry, store: Store, fmt: ImageFormat, compression: Compression
) -> None:
    content = f"{fmt} {compression}\n".encode() * 100
    image = simple_image({"etc/format": content}, fmt=fmt, compression=compression)
    push(registry, f"compression/{fmt}", compression, image)
    assert pull(cri, f"{registry.host}/compression/{fmt}:{compression}") == image.config_digest
    assert (store.layer(chains(image)[0]) / "etc/format").read_bytes() == content


# -- authentication --------------------------------------------------------------------------------


def basic_image() -> Image:
    return simple_image({"secret": b"basic"})


@pytest.fixture(scope="module")
def basic_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="basic") as reg:
        push(reg, "private/app", "v1", basic_image())
        yield reg


def test_basic_auth_anonymous_is_refused(cri: Client, basic_registry: LocalRegistry, store: Store) -> None:
    error = pull_error(cri, f"{basic_registry.host}/private/app:v1")
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert basic_registry.host in error.details
    assert store.leftovers(cri, basic_image()) == []


@pytest.mark.parametrize("form", ["username", "auth"])
def test_basic_auth_with_credentials(cri: Client, basic_registry: LocalRegistry, form: str) -> None:
    reg = basic_registry
    if form == "username":
        auth = api.AuthConfig(username=reg.username, password=reg.password)
    else:
        auth = api.AuthConfig(auth=base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode())
    assert pull(cri, f"{reg.host}/private/app:v1", auth=auth) == basic_image().config_digest
    assert status(cri, f"{reg.host}/private/app:v1").image.id == basic_image().config_digest


def test_basic_auth_wrong_password(cri: Client, basic_registry: LocalRegistry, store: Store) -> None:
    reg = basic_registry
    ref = f"{reg.host}/private/app:v1"
    for auth in (
        api.AuthConfig(username=reg.username, password="wrong"),
        api.AuthConfig(auth=base64.b64encode(f"{reg.username}:wrong".encode()).decode()),
    ):
        error = pull_error(cri, ref, auth=auth)
        assert error.code is grpc.StatusCode.UNAUTHENTICATED
        assert "authentication failed" in error.details
    assert store.leftovers(cri, basic_image()) == []
    # Good credentials work; afterwards, wrong or no credentials still do not (nothing is reused).
    pull(cri, ref, auth=api.AuthConfig(username=reg.username, password=reg.password))
    retries: list[api.AuthConfig | None] = [api.AuthConfig(username=reg.username, password="wrong"), None]
    for retry in retries:
        assert pull_error(cri, ref, auth=retry).code is grpc.StatusCode.UNAUTHENTICATED


@pytest.fixture(scope="module")
def token_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(auth="token") as reg:
        yield reg


def test_token_auth_reuses_the_token(cri: Client, token_registry: LocalRegistry) -> None:
    reg = token_registry
    one, two = simple_image({"t": b"one"}), simple_image({"t": b"two"})
    push(reg, "tokens/app", "one", one)
    push(reg, "tokens/app", "two", two)
    reg.reset_token_requests()
    auth = api.AuthConfig(username=reg.username, password=reg.password)

    assert pull(cri, f"{reg.host}/tokens/app:one", auth=auth) == one.config_digest
    first = reg.token_request_log
    assert len(first) == 1, first
    assert first[0].scopes == ("repository:tokens/app:pull",)
    assert (first[0].username, first[0].status) == (reg.username, 200)
    assert first[0].access == (("repository", "tokens/app", ("pull",)),)

    assert pull(cri, f"{reg.host}/tokens/app:two", auth=auth) == two.config_digest
    assert reg.token_request_log == first  # the same scope: the token is reused


def test_token_auth_wrong_credentials(cri: Client, token_registry: LocalRegistry, store: Store) -> None:
    reg = token_registry
    image = simple_image({"t": b"refused"})
    push(reg, "tokens/refused", "v1", image)
    ref = f"{reg.host}/tokens/refused:v1"
    reg.reset_token_requests()
    error = pull_error(cri, ref, auth=api.AuthConfig(username=reg.username, password="wrong"))
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert f"{reg.host}: token server refused the credentials (401)" in error.details
    error = pull_error(cri, ref)
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert [(r.username, r.status) for r in reg.token_request_log] == [(reg.username, 401), (None, 401)]
    assert store.leftovers(cri, image) == []


# -- mirrors ---------------------------------------------------------------------------------------


def test_mirror_has_the_image(cri: Client, registry: LocalRegistry) -> None:
    image = simple_image({"m": b"mirrored"})
    push(registry, "mirror/app", "v1", image)
    assert pull(cri, "example.invalid/mirror/app:v1") == image.config_digest
    img = status(cri, "example.invalid/mirror/app:v1").image
    assert list(img.repo_tags) == ["example.invalid/mirror/app:v1"]
    assert list(img.repo_digests) == [f"example.invalid/mirror/app@{image.manifest_digest}"]
    assert status(cri, f"example.invalid/mirror/app@{image.manifest_digest}").image == img
    assert not status(cri, f"{registry.host}/mirror/app:v1").HasField("image")  # the mirror's name is not the image's
    assert registry_gets(registry, "/v2/mirror/app/manifests/v1") >= 1
    assert blob_gets(registry, "mirror/app", image.layers[0].digest) == 1


def test_mirror_without_the_image_falls_back(cri: Client, registry: LocalRegistry, empty_registry: LocalRegistry) -> None:
    image = simple_image({"m": b"fallback"})
    push(registry, "mirror/fallback", "v1", image)
    assert pull(cri, "fallback.invalid/mirror/fallback:v1") == image.config_digest
    img = status(cri, "fallback.invalid/mirror/fallback:v1").image
    assert list(img.repo_tags) == ["fallback.invalid/mirror/fallback:v1"]
    assert list(img.repo_digests) == [f"fallback.invalid/mirror/fallback@{image.manifest_digest}"]
    assert registry_gets(empty_registry, "/v2/mirror/fallback/manifests/v1") >= 1  # tried first, lacked it
    assert blob_gets(registry, "mirror/fallback", image.layers[0].digest) == 1


def test_no_mirror_has_the_image(cri: Client) -> None:
    error = pull_error(cri, "fallback.invalid/mirror/nowhere:v1")
    assert "fallback.invalid/mirror/nowhere:v1" in error.details
    assert not cri.list_images().images


# -- failed pulls leave nothing behind -------------------------------------------------------------


@pytest.mark.parametrize("fault", ["corrupt-layer", "truncate-layer", "corrupt-config", "remove-layer"])
def test_bad_blob(cri: Client, registry: LocalRegistry, store: Store, fault: str) -> None:
    image = unique_image(fault)
    repo = f"faults/{fault}"
    push(registry, repo, "v1", image)
    victim = image.config_digest if fault == "corrupt-config" else image.layers[1].digest
    if fault.startswith("corrupt"):
        registry.corrupt_blob(victim)
    elif fault == "truncate-layer":
        registry.truncate_blob(victim, image.layers[1].size // 2)
    else:
        registry.remove_blob(victim)

    error = pull_error(cri, f"{registry.host}/{repo}:v1")
    if fault != "remove-layer":
        assert error.code is grpc.StatusCode.DATA_LOSS, error
    assert victim in error.details
    assert store.leftovers(cri, image) == []
    assert not cri.list_images().images


def test_pull_by_digest_checks_the_digest(cri: Client, registry: LocalRegistry, store: Store) -> None:
    wanted, served = unique_image("digest-wanted", layers=1), unique_image("digest-served", layers=1)
    push(registry, "faults/digest", "wanted", wanted)
    push(registry, "faults/digest", "served", served)
    name = f"{registry.host}/faults/digest"

    # A digest the registry does not have.
    error = pull_error(cri, f"{name}@{sha256_digest(b'no such manifest')}")
    assert isinstance(error, NotFoundError), error

    # The registry answers the digest with another manifest: refused, nothing kept.
    registry.corrupt_blob(wanted.manifest_digest, served.manifest_bytes)
    error = pull_error(cri, f"{name}@{wanted.manifest_digest}")
    assert error.code is grpc.StatusCode.DATA_LOSS
    assert "digest mismatch" in error.details
    assert wanted.manifest_digest in error.details
    assert store.leftovers(cri, wanted) == []
    assert store.leftovers(cri, served) == []

    # The right digest works, and names the image by digest only.
    assert pull(cri, f"{name}@{served.manifest_digest}") == served.config_digest
    img = status(cri, f"{name}@{served.manifest_digest}").image
    assert list(img.repo_tags) == []
    assert list(img.repo_digests) == [f"{name}@{served.manifest_digest}"]


def test_missing_tag_is_not_found(cri: Client, registry: LocalRegistry) -> None:
    push(registry, "faults/tags", "present", simple_image({"t": b"present"}))
    with pytest.raises(NotFoundError, match="faults/tags:absent"):
        pull(cri, f"{registry.host}/faults/tags:absent")
    with pytest.raises(NotFoundError):
        pull(cri, f"{registry.host}/faults/no-such-repository:v1")


@pytest.mark.parametrize("attack", ["dotdot", "deep-dotdot", "symlink-dir", "hardlink-out"])
def test_hostile_layer(cri: Client, registry: LocalRegistry, store: Store, tmp_path: Path, attack: str) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    up = "../" * 40
    attacks: dict[str, list[Entry]] = {
        "dotdot": [File("ok", b"fine"), File("../escape", b"x")],
        "deep-dotdot": [File(up + str(canary / "escaped").lstrip("/"), b"x")],
        "symlink-dir": [Symlink("evil", str(canary)), File("evil/pwned", b"x")],
        "hardlink-out": [Hardlink("stolen", up + "etc/hostname")],
    }
    image = Image([Layer([File("first", b"1")]), Layer(attacks[attack])], labels={"attack": attack})
    push(registry, f"hostile/{attack}", "v1", image)

    error = pull_error(cri, f"{registry.host}/hostile/{attack}:v1")
    assert error.code is grpc.StatusCode.DATA_LOSS, error
    assert image.layers[1].digest in error.details
    assert os.listdir(canary) == []
    for where in (store.root_dir.parent, store.root_dir, store.root, store.layers):
        assert not (where / "escape").exists()
    assert store.leftovers(cri, image) == []


# -- cancelled and concurrent pulls ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_image(registry: LocalRegistry) -> Image:
    """A small layer and a 64 MiB one of random data (gzip level 1), pushed as big/app:v1."""
    tar = build_tar([File("big", os.urandom(64 * MiB))])
    big = Layer(tar_bytes=tar, compression="none", media_type=OCI_LAYER_GZIP)
    big.blob = gzip.compress(tar, compresslevel=1, mtime=0)
    image = Image([Layer([File("small", b"small\n")]), big])
    push(registry, "big/app", "v1", image)
    return image


def test_cancelled_pull_cleans_up(cri: Client, shared_daemon: DaemonProcess, big_image: Image) -> None:
    ref = "slow.invalid/big/app:v1"  # a second's download: 0.3 s is surely midway
    store = Store(shared_daemon)
    with Client(shared_daemon.socket, timeout=0.3) as impatient, pytest.raises(DeadlineExceededError):
        pull(impatient, ref)
    wait_for("a cancelled pull left", lambda: store.leftovers(cri, big_image))
    assert not cri.list_images().images
    assert pull(cri, ref) == big_image.config_digest
    assert (store.layer(chains(big_image)[1]) / "big").stat().st_size == 64 * MiB


def test_cancelled_pull_does_not_fail_a_concurrent_one(cri: Client, shared_daemon: DaemonProcess, big_image: Image) -> None:
    """A pull waiting for a download another pull started takes it over when that one is cancelled.

    (Until 9830a7c the waiter failed with DATA_LOSS "download cancelled" / "unpack ... cancelled".)
    """
    ref = "slow.invalid/big/app:v1"
    store = Store(shared_daemon)
    results: dict[str, str | ClientError] = {}

    def run(name: str, timeout: float) -> None:
        with Client(shared_daemon.socket, timeout=timeout) as client:
            try:
                results[name] = pull(client, ref)
            except ClientError as exc:
                results[name] = exc

    first = threading.Thread(target=run, args=("cancelled", 0.5))
    first.start()
    # The second pull starts once the first is downloading the big layer, and so waits for that download.
    big_ingest = big_image.layers[1].digest.removeprefix("sha256:")[:12]
    deadline = time.monotonic() + 0.5
    while not any(n.startswith(big_ingest) for n in os.listdir(store.ingest)) and time.monotonic() < deadline:
        time.sleep(0.002)
    second = threading.Thread(target=run, args=("patient", 30))
    second.start()
    first.join()
    second.join()
    assert isinstance(results["cancelled"], DeadlineExceededError), results
    assert results["patient"] == big_image.config_digest, results


def test_concurrent_pulls_download_once(cri: Client, shared_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    image = unique_image("concurrent", layers=2, layer_size=4 * MiB)
    push(registry, "concurrent/app", "v1", image)
    ref = "slow.invalid/concurrent/app:v1"  # through the slow proxy: the two pulls surely overlap
    barrier = threading.Barrier(2)
    results: list[str | Exception] = []

    def run() -> None:
        with Client(shared_daemon.socket, timeout=30) as client:
            barrier.wait()
            try:
                results.append(pull(client, ref))
            except Exception as exc:
                results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [image.config_digest] * 2
    for digest in [image.config_digest, *(layer.digest for layer in image.layers)]:
        assert blob_gets(registry, "concurrent/app", digest) == 1, digest
    assert len(cri.list_images().images) == 1


# -- tags, shared layers, removal ------------------------------------------------------------------


def test_tag_moves_to_the_new_image(cri: Client, registry: LocalRegistry) -> None:
    x, y = simple_image({"v": b"x"}), simple_image({"v": b"y"})
    name = f"{registry.host}/tags/app"
    push(registry, "tags/app", "a", x)
    assert pull(cri, f"{name}:a") == x.config_digest
    push(registry, "tags/app", "a", y)
    assert pull(cri, f"{name}:a") == y.config_digest

    assert status(cri, f"{name}:a").image.id == y.config_digest
    old, new = status(cri, x.config_digest).image, status(cri, y.config_digest).image
    assert (list(old.repo_tags), list(old.repo_digests)) == ([], [f"{name}@{x.manifest_digest}"])
    assert (list(new.repo_tags), list(new.repo_digests)) == ([f"{name}:a"], [f"{name}@{y.manifest_digest}"])
    assert status(cri, f"{name}@{x.manifest_digest}").image == old
    assert {i.id for i in cri.list_images().images} == {x.config_digest, y.config_digest}


def test_images_sharing_layers(cri: Client, registry: LocalRegistry, store: Store) -> None:
    shared = random_layer(256 * 1024, "shared")
    a = Image([shared, Layer([File("who", b"a")])])
    b = Image([shared, Layer([File("who", b"b")])])
    name = f"{registry.host}/shared/app"
    push(registry, "shared/app", "a", a)
    push(registry, "shared/app", "b", b)
    pull(cri, f"{name}:a")
    pull(cri, f"{name}:b")
    base_chain, a_top, b_top = chains(a)[0], chains(a)[1], chains(b)[1]
    assert base_chain == chains(b)[0]
    assert blob_gets(registry, "shared/app", shared.digest) == 1

    remove(cri, f"{name}:a")
    assert not status(cri, f"{name}:a").HasField("image")
    assert status(cri, f"{name}:b").image.id == b.config_digest
    assert store.layer(base_chain).is_dir()
    assert store.layer(b_top).is_dir()
    assert not store.layer(a_top).exists()
    assert store.blob(shared.digest).is_file()
    assert not store.blob(a.config_digest).exists()
    assert not store.blob(a.layers[1].digest).exists()

    # Both come back without downloading the shared layer again.
    before = {d: blob_gets(registry, "shared/app", d) for d in (shared.digest, b.layers[1].digest, b.config_digest)}
    assert pull(cri, f"{name}:b") == b.config_digest
    assert pull(cri, f"{name}:a") == a.config_digest
    after = {d: blob_gets(registry, "shared/app", d) for d in before}
    assert after == before
    assert blob_gets(registry, "shared/app", a.layers[1].digest) == 2  # A's own layer was gone


def test_remove_by_one_tag_removes_all(cri: Client, registry: LocalRegistry) -> None:
    image = simple_image({"many": b"names"})
    refs = [f"{registry.host}/names/one:t1", f"{registry.host}/names/one:t2", f"{registry.host}/names/two:t3"]
    for ref in refs:
        repo, _, tag = ref.removeprefix(registry.host + "/").partition(":")
        push(registry, repo, tag, image)
        assert pull(cri, ref) == image.config_digest
    img = status(cri, image.config_digest).image
    assert sorted(img.repo_tags) == sorted(refs)
    assert sorted(img.repo_digests) == sorted(f"{registry.host}/names/{r}@{image.manifest_digest}" for r in ("one", "two"))
    assert len(cri.list_images().images) == 1

    remove(cri, refs[0])
    for key in [*refs, image.config_digest, *img.repo_digests]:
        assert not status(cri, key).HasField("image"), key
    assert not cri.list_images().images


def test_remove_unknown_image_succeeds(cri: Client, registry: LocalRegistry) -> None:
    for key in (f"{registry.host}/absent/app:v1", "absent", sha256_digest(b"absent"), "0123abcd"):
        remove(cri, key)
    with pytest.raises(ClientError) as info:
        remove(cri, "")
    assert info.value.code is grpc.StatusCode.INVALID_ARGUMENT


def test_concurrent_removes(cri: Client, shared_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    image = unique_image("removes", layers=2)
    push(registry, "removes/app", "v1", image)
    ref = f"{registry.host}/removes/app:v1"
    pull(cri, ref)
    barrier = threading.Barrier(5)
    errors: list[Exception] = []

    def run() -> None:
        with Client(shared_daemon.socket, timeout=30) as client:
            barrier.wait()
            try:
                remove(client, ref)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not cri.list_images().images
    assert Store(shared_daemon).leftovers(cri, image) == []


# -- listing, disk usage ---------------------------------------------------------------------------


def test_list_and_stream_images(cri: Client, registry: LocalRegistry) -> None:
    a, b = simple_image({"l": b"a"}), simple_image({"l": b"b"})
    name = f"{registry.host}/list/app"
    push(registry, "list/app", "a", a)
    push(registry, "list/app", "b", b)
    pull(cri, f"{name}:a")
    pull(cri, f"{name}:b")

    def listed(image_filter: str = "") -> list[api.Image]:
        request = api.ListImagesRequest(filter=api.ImageFilter(image=spec(image_filter)))
        return list(cri.list_images(request).images)

    def streamed(image_filter: str = "") -> list[api.Image]:
        request = api.StreamImagesRequest(filter=api.ImageFilter(image=spec(image_filter)))
        return [image for page in cri.stream_images(request) for image in page.images]

    everything = listed()
    assert sorted(i.id for i in everything) == sorted([a.config_digest, b.config_digest])
    assert streamed() == everything
    assert [i.id for i in listed(f"{name}:a")] == [a.config_digest]
    assert [i.id for i in listed(b.config_digest)] == [b.config_digest]
    assert [i.id for i in listed(f"{name}@{a.manifest_digest}")] == [a.config_digest]
    assert listed(f"{name}:absent") == []
    for image_filter in (f"{name}:a", b.config_digest, f"{name}:absent"):
        assert streamed(image_filter) == listed(image_filter), image_filter


def test_image_fs_info(cri: Client, shared_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    root_dir = shared_daemon.cfg.root_dir

    root_mount = mount_of(root_dir)
    assert root_mount is not None

    def usage() -> tuple[int, int]:
        info = cri.image_fs_info()
        assert len(info.image_filesystems) == 1
        assert len(info.container_filesystems) == 1
        for fs in (*info.image_filesystems, *info.container_filesystems):
            # The mount holding both (one file system here: the same mount point, no split image fs).
            assert fs.fs_id.mountpoint == root_mount.mountpoint, fs
            assert abs(fs.timestamp - time.time_ns()) < 60 * 10**9
        fs = info.image_filesystems[0]
        return fs.used_bytes.value, fs.inodes_used.value

    image = Image([random_layer(2 * MiB, "fsinfo"), Layer([Dir("d"), File("d/1", b"1"), File("d/2", b"2")])])
    push(registry, "fsinfo/app", "v1", image)
    before = usage()
    pull(cri, f"{registry.host}/fsinfo/app:v1")
    pulled = usage()
    assert pulled[0] >= before[0] + 4 * MiB  # the 2 MiB layer's blob and its unpacked file
    assert pulled[1] >= before[1] + 4 + 2 + 4  # 4 blobs, 2 layer dirs, 4 entries
    remove(cri, image.config_digest)
    removed = usage()
    assert removed[0] < pulled[0] - 4 * MiB
    assert removed[1] == before[1]


# -- restart ---------------------------------------------------------------------------------------


def test_images_survive_a_restart(registry: LocalRegistry) -> None:
    image = unique_image("restart", layers=2)
    push(registry, "restart/app", "v1", image)
    ref = f"{registry.host}/restart/app:v1"
    with DaemonProcess.temporary() as daemon:
        store = Store(daemon)
        with Client(daemon.socket, timeout=30) as client:
            assert pull(client, ref) == image.config_digest
            before = status(client, ref, verbose=True)
        assert daemon.stop() == 0
        daemon.start()
        with Client(daemon.socket, timeout=30) as client:
            for key in (ref, image.config_digest, f"{registry.host}/restart/app@{image.manifest_digest}"):
                after = status(client, key, verbose=True)
                assert after.image == before.image, key
                assert json.loads(after.info["info"]) == json.loads(before.info["info"])
            assert sorted(os.listdir(store.layers)) == sorted(c.removeprefix("sha256:") for c in chains(image))
            gets = {d: blob_gets(registry, "restart/app", d) for d in (image.config_digest, *(x.digest for x in image.layers))}
            assert gets == dict.fromkeys(gets, 1)
            started = time.monotonic()
            assert pull(client, ref) == image.config_digest
            assert time.monotonic() - started < 2
            assert {d: blob_gets(registry, "restart/app", d) for d in gets} == gets  # nothing downloaded again
            remove(client, ref)
            assert store.leftovers(client, image) == []


def test_crash_mid_pull_leaves_nothing_after_restart(registries_conf: Path, big_image: Image) -> None:
    ref = "slow.invalid/big/app:v1"
    with DaemonProcess.temporary(images={"registries_conf": str(registries_conf)}) as daemon:
        store = Store(daemon)
        outcome: list[Exception] = []

        def run() -> None:
            with Client(daemon.socket, timeout=30) as client:
                try:
                    pull(client, ref)
                except Exception as exc:
                    outcome.append(exc)

        puller = threading.Thread(target=run)
        puller.start()
        deadline = time.monotonic() + 10
        while not os.listdir(store.ingest) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
        puller.join()
        assert len(outcome) == 1, "the pull finished before the daemon was killed"
        assert store.contents(), "the crash should have left a half-done pull behind"
        daemon.start()
        assert store.contents() == []  # start-up drops ingests and unreferenced blobs and layers
        assert store.tmp_dirs() == []
        with Client(daemon.socket, timeout=30) as client:
            assert not client.list_images().images
            assert pull(client, ref) == big_image.config_digest
            remove(client, ref)
        assert store.contents() == []


# -- crictl ----------------------------------------------------------------------------------------


def crictl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    assert CRICTL is not None
    env = os.environ | {"CRI_CONFIG_FILE": "/dev/null"}
    return subprocess.run(
        [CRICTL, "--runtime-endpoint", daemon.endpoint, "--image-endpoint", daemon.endpoint, "--timeout", "20s", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


@pytest.mark.skipif(shutil.which("crictl") is None, reason="crictl is not installed on this machine")
def test_crictl_images(cri: Client, shared_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    image = simple_image({"crictl": b"yes"}, user="www-data")
    push(registry, "crictl/app", "v1", image)
    ref = f"{registry.host}/crictl/app:v1"

    pulled = crictl(shared_daemon, "pull", ref)
    assert pulled.returncode == 0, pulled.stderr
    assert image.config_digest in pulled.stdout

    table = crictl(shared_daemon, "images")
    assert table.returncode == 0, table.stderr
    assert re.search(rf"^{re.escape(registry.host)}/crictl/app\s+v1\s+{image.config_digest[7:20]}", table.stdout, re.M), (
        table.stdout
    )
    listed = json.loads(crictl(shared_daemon, "images", "-o", "json").stdout)
    assert [(i["id"], i["repoTags"]) for i in listed["images"]] == [(image.config_digest, [ref])]

    inspected = crictl(shared_daemon, "inspecti", "-o", "json", ref)
    assert inspected.returncode == 0, inspected.stderr
    doc = json.loads(inspected.stdout)
    assert doc["status"]["id"] == image.config_digest
    assert doc["status"]["username"] == "www-data"
    assert doc["status"]["repoDigests"] == [f"{registry.host}/crictl/app@{image.manifest_digest}"]
    assert doc["info"]["imageSpec"] == image.config  # crictl unpacks the verbose info JSON

    fsinfo = crictl(shared_daemon, "imagefsinfo", "-o", "json")
    assert fsinfo.returncode == 0, fsinfo.stderr
    status = json.loads(fsinfo.stdout)["status"]
    fs = status["imageFilesystems"][0]
    root_mount = mount_of(shared_daemon.cfg.root_dir)
    assert root_mount is not None
    assert fs["fsId"]["mountpoint"] == root_mount.mountpoint  # the mount holding the store
    assert int(fs["usedBytes"]["value"]) > 0
    assert status["containerFilesystems"][0]["fsId"]["mountpoint"] == root_mount.mountpoint  # not split

    removed = crictl(shared_daemon, "rmi", ref)
    assert removed.returncode == 0, removed.stderr
    assert f"Deleted: {ref}" in removed.stdout
    assert not cri.list_images().images
    quiet = crictl(shared_daemon, "images", "-q")
    assert (quiet.returncode, quiet.stdout.strip()) == (0, "")
