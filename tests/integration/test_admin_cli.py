"""``pycri pull``, ``pycri images`` and ``pycri import`` against a running daemon (pycri.admin.v1 Admin)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pycri.api import admin_pb2 as admin
from pycri.api import admin_pb2_grpc
from pycri.client.common import target
from pycri.testing import DaemonProcess
from tests.support.images import File, Image, Layer, push, simple_image
from tests.support.registry import LocalRegistry
from tests.unit.test_importer import Image as ArchiveImage
from tests.unit.test_importer import hello, tar_of, write_docker, write_oci

pytestmark = pytest.mark.integration


def pycri(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pycri", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


@pytest.fixture
def admin_daemon(daemon: DaemonProcess) -> DaemonProcess:
    """The daemon, once it is known to serve the Admin service (an empty ImportImages is INVALID_ARGUMENT)."""
    code = grpc.StatusCode.OK
    with grpc.insecure_channel(target(daemon.socket)) as channel:
        try:
            admin_pb2_grpc.AdminStub(channel).ImportImages(admin.ImportRequest(), timeout=10)
        except grpc.RpcError as exc:
            code = exc.code()
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    return daemon


@pytest.fixture(scope="module")
def registry() -> Iterator[LocalRegistry]:
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("docker-registry is not installed")
    with LocalRegistry() as reg:
        yield reg


def two_layer_image() -> Image:
    base = Layer([File("etc/base", b"base\n")])
    top = Layer([File("etc/top", b"top\n")], compression="zstd")
    return Image([base, top], cmd=["/bin/sh"])


def table(stdout: str) -> list[list[str]]:
    return [line.split() for line in stdout.splitlines()]


def test_pull_shows_progress_then_the_id(admin_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    image = two_layer_image()
    push(registry, "test/app", "1", image)
    ref = f"{registry.host}/test/app:1"

    result = pycri("pull", "--socket", admin_daemon.socket, ref)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == image.image_id
    assert "config" in result.stderr
    for layer in image.layers:
        assert f"layer    {layer.digest.partition(':')[2][:13]}" in result.stderr

    again = pycri("pull", "--socket", admin_daemon.endpoint, "--json", ref)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {"id": image.image_id}
    assert again.stderr == ""

    listed = pycri("images", "--socket", admin_daemon.socket)
    assert listed.returncode == 0, listed.stderr
    rows = table(listed.stdout)
    assert rows[0] == ["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "SIZE"]
    short_digest = image.manifest_digest.partition(":")[2][:13]
    short_id = image.image_id.partition(":")[2][:13]
    assert rows[1][:4] == [f"{registry.host}/test/app", "1", short_digest, short_id]
    assert rows[1][4].endswith("B")
    doc = json.loads(pycri("images", "--socket", admin_daemon.socket, "--json").stdout)
    [found] = doc["images"]
    assert found["id"] == image.image_id
    assert found["repo_tags"] == [f"{registry.host}/test/app:1"]


def test_pull_progress_is_throttled(admin_daemon: DaemonProcess, registry: LocalRegistry) -> None:
    big = Layer([File("data", os.urandom(24 << 20))], compression="none")
    image = Image([big])
    push(registry, "test/big", "1", image)
    messages: list[admin.PullProgress] = []
    started = time.monotonic()
    with grpc.insecure_channel(target(admin_daemon.socket)) as channel:
        for message in admin_pb2_grpc.AdminStub(channel).PullImage(
            admin.PullImageRequest(image=f"{registry.host}/test/big:1"), timeout=120
        ):
            messages.append(message)
    elapsed = time.monotonic() - started
    assert messages[-1].done
    assert messages[-1].image_id == image.image_id
    layer = [m for m in messages if m.digest == big.digest]
    assert layer, messages
    assert layer[-1].done_bytes == layer[-1].total_bytes == big.size
    assert all(m.kind == "layer" and not m.done for m in layer)
    assert len(layer) <= elapsed * 10 + 2, (len(layer), elapsed)
    assert [m.done_bytes for m in layer] == sorted(m.done_bytes for m in layer)


def test_pull_with_credentials(admin_daemon: DaemonProcess) -> None:
    if not os.path.exists("/usr/bin/docker-registry"):
        pytest.skip("docker-registry is not installed")
    with LocalRegistry(auth="basic") as reg:
        image = simple_image({"etc/secret": b"s\n"})
        push(reg, "private/app", "1", image)
        ref = f"{reg.host}/private/app:1"

        anonymous = pycri("pull", "--socket", admin_daemon.socket, ref)
        assert anonymous.returncode == 1
        assert anonymous.stderr.startswith("pycri: PullImage: ")

        wrong = pycri("pull", "--socket", admin_daemon.socket, "--creds", f"{reg.username}:wrong", ref)
        assert wrong.returncode == 1

        right = pycri("pull", "--socket", admin_daemon.socket, "--creds", f"{reg.username}:{reg.password}", "--json", ref)
        assert right.returncode == 0, right.stderr
        assert json.loads(right.stdout) == {"id": image.image_id}


def test_pull_errors(admin_daemon: DaemonProcess, registry: LocalRegistry, tmp_path: Path) -> None:
    missing = pycri("pull", "--socket", admin_daemon.socket, f"{registry.host}/test/absent:1")
    assert missing.returncode == 1
    assert "PullImage: NOT_FOUND" in missing.stderr

    invalid = pycri("pull", "--socket", admin_daemon.socket, "Not A Reference")
    assert invalid.returncode == 1
    assert "PullImage: INVALID_ARGUMENT" in invalid.stderr

    bad_creds = pycri("pull", "--socket", admin_daemon.socket, "--creds", "nocolon", "busybox")
    assert bad_creds.returncode == 2
    assert "USER:PASSWORD" in bad_creds.stderr

    nobody = pycri("pull", "--socket", str(tmp_path / "absent.sock"), "busybox")
    assert nobody.returncode == 3
    assert "cannot reach the daemon" in nobody.stderr


def test_pull_from_an_unreachable_registry_is_not_a_missing_daemon(admin_daemon: DaemonProcess) -> None:
    with socket.socket() as closed:  # a loopback port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = pycri("pull", "--socket", admin_daemon.socket, "--json", f"127.0.0.1:{port}/test/app:1")
    assert result.returncode == 1, result.stderr
    assert "cannot reach the daemon" not in result.stderr
    assert f"PullImage: UNAVAILABLE: pulling 127.0.0.1:{port}/test/app:1: registry 127.0.0.1:{port}: cannot connect" in (
        result.stderr
    )
    assert "the daemon is running" in result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "UNAVAILABLE"
    assert error["exit_code"] == 1


def test_import_docker_archive_and_oci_layout(admin_daemon: DaemonProcess, tmp_path: Path) -> None:
    app, tool = ArchiveImage([hello("app")], cmd="/app"), ArchiveImage([hello("tool", gz=True)], cmd="/tool")
    tar_of(write_docker(tmp_path / "saved", [(app, ["app:1", "example.com/app:2"])]), tmp_path / "saved.tar")
    layout = write_oci(tmp_path / "layout", [(tool.descriptor({"io.containerd.image.name": "tool:3"}), tool.blobs())])

    result = pycri("import", "--socket", admin_daemon.socket, "saved.tar", cwd=tmp_path)  # relative to the client's cwd

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"Imported docker.io/library/app:1 ({app.id})",
        f"Imported example.com/app:2 ({app.id})",
    ]
    as_json = pycri("import", "--socket", admin_daemon.socket, "--json", str(layout))
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == [{"id": tool.id, "repo_tags": ["docker.io/library/tool:3"]}]

    rows = table(pycri("images", "--socket", admin_daemon.socket).stdout)
    names = {(row[0], row[1]): row for row in rows[1:]}
    assert set(names) == {("docker.io/library/app", "1"), ("example.com/app", "2"), ("docker.io/library/tool", "3")}
    assert names[("example.com/app", "2")][2:4] == ["<none>", app.id.partition(":")[2][:13]]


def test_import_errors(admin_daemon: DaemonProcess, tmp_path: Path) -> None:
    absent = pycri("import", "--socket", admin_daemon.socket, str(tmp_path / "absent.tar"))
    assert absent.returncode == 1
    assert "ImportImages: NOT_FOUND" in absent.stderr

    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"junk" * 1000)
    bad = pycri("import", "--socket", admin_daemon.socket, str(junk))
    assert bad.returncode == 1
    assert "ImportImages: INVALID_ARGUMENT" in bad.stderr
    assert "not a tar archive" in bad.stderr

    image = ArchiveImage([hello()])
    saved = write_docker(tmp_path / "saved", [(image, ["evil:1"])])
    doc = json.loads((saved / "manifest.json").read_text())
    doc[0]["Layers"] = ["../../etc/passwd"]
    (saved / "manifest.json").write_text(json.dumps(doc))
    hostile = pycri("import", "--socket", admin_daemon.socket, str(saved))
    assert hostile.returncode == 1
    assert "escapes the archive" in hostile.stderr
    listed = json.loads(pycri("images", "--socket", admin_daemon.socket, "--json").stdout)
    assert listed == {"images": []}


def test_images_table_when_empty(daemon: DaemonProcess) -> None:
    # ListImages is CRI: no Admin service needed.
    result = pycri("images", "--socket", daemon.socket)
    assert result.returncode == 0, result.stderr
    assert table(result.stdout) == [["REPOSITORY", "TAG", "DIGEST", "IMAGE", "ID", "SIZE"]]
