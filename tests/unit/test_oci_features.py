"""Handler features: the rro probe's container, and how a runtime's answers are read."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from pycri.host import idmap
from pycri.oci import features
from pycri.oci.runtime import OCIRuntime

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fake_runtime(tmp_path: Path, body: str) -> OCIRuntime:
    """A runc stand-in: a shell script logging its arguments to ``calls`` and then running ``body``."""
    script = tmp_path / "runtime"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return OCIRuntime(name="fake", path=str(script), root=str(tmp_path / "root"))


def calls(tmp_path: Path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "calls").read_text().splitlines()]


def test_kernel_has_mount_setattr_answers_without_side_effects() -> None:
    release = tuple(int(p) for p in os.uname().release.split(".")[:2] if p.isdigit())
    if release >= (5, 12):
        assert idmap.kernel_has_mount_setattr()


def test_probe_spec_mounts_the_source_recursively_read_only() -> None:
    spec = features.probe_spec("/usr/bin/catatonit", "/tmp/src")
    assert spec["process"]["args"] == ["/catatonit", "--version"]
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    mount = {"destination": "/mnt", "type": "bind", "source": "/tmp/src", "options": ["rbind", "rprivate", "rro"]}
    assert spec["mounts"][-1] == mount
    assert spec["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert spec["process"]["capabilities"]["bounding"] == []


def test_a_features_document_decides(tmp_path: Path) -> None:
    document = {"mountOptions": ["ro", "rro"]}
    rt = fake_runtime(tmp_path, f"[ \"$1\" = features ] && echo '{json.dumps(document)}'")
    found = features.HandlerFeatures({"fake": rt}, "/usr/bin/catatonit", "/pycri")

    async def twice() -> tuple[bool, bool, bool]:
        return (
            await found.recursive_read_only("fake"),
            await found.recursive_read_only("fake"),
            await found.recursive_read_only("x"),
        )

    assert run(twice()) == (True, True, False)
    assert calls(tmp_path) == [["features"]]  # worked out once


def test_a_features_document_without_rro(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, '[ "$1" = features ] && echo \'{"mountOptions": ["ro"]}\'')
    assert not run(features.HandlerFeatures({"fake": rt}, "/bin/true", "/pycri").recursive_read_only("fake"))


def test_without_features_a_failed_create_means_unsupported(tmp_path: Path) -> None:
    body = 'case "$3" in create) echo \'{"level":"error","msg":"unknown mount option rro"}\' >&2; exit 1;; esac; exit 1'
    rt = fake_runtime(tmp_path, body)
    ok, why = run(features.probe_rro(rt, "/bin/true", "/pycri"))
    assert (ok, why) == (False, "unknown mount option rro")
    create, delete = calls(tmp_path)[-2:]
    assert create[:4] == ["--root", rt.root, "create", "--bundle"]
    assert delete[:4] == ["--root", rt.root, "delete", "--force"]
    assert create[-1] == delete[-1]
    assert not Path(create[4]).exists(), "the probe bundle is removed"
    assert not run(features.HandlerFeatures({"fake": rt}, "/bin/true", "/pycri").recursive_read_only("fake"))


def test_without_features_a_created_probe_means_supported(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, '[ "$3" = create ] && exit 0; exit 1')
    assert run(features.HandlerFeatures({"fake": rt}, "/bin/true", "/pycri").recursive_read_only("fake"))


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a container")
@pytest.mark.parametrize("binary", ["/usr/sbin/runc", "/usr/bin/crun"])
def test_probe_with_a_real_runtime(tmp_path: Path, binary: str) -> None:
    if not os.access(binary, os.X_OK) or not os.access("/usr/bin/catatonit", os.X_OK):
        pytest.skip(f"{binary} or catatonit is not installed")
    from pycri.oci import hybrid

    path = hybrid.launcher_for(binary, tmp_path / "bin")
    rt = OCIRuntime(name=os.path.basename(binary), path=path, root=str(tmp_path / "root"))
    ok, why = run(features.probe_rro(rt, "/usr/bin/catatonit", "/pycri"))
    assert ok == idmap.kernel_has_mount_setattr(), why
    root = tmp_path / "root"
    assert not root.exists() or os.listdir(root) == [], "the probe container is deleted"


def searchable(path: Path) -> None:
    """Let others search ``path`` and its parents (pytest makes them 0700)."""
    for directory in [path, *path.parents]:
        directory.chmod(directory.stat().st_mode | stat.S_IXOTH)


def test_unsearchable_parent(tmp_path: Path) -> None:
    searchable(tmp_path)
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    assert features.unsearchable_parent(str(closed / "inner" / "not-yet")) == str(closed)
    closed.chmod(0o711)
    assert features.unsearchable_parent(str(closed / "inner" / "not-yet")) == ""


def test_user_namespaces_need_searchable_pod_dirs(tmp_path: Path) -> None:
    rt = fake_runtime(tmp_path, "exit 1")
    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    found = features.HandlerFeatures({"fake": rt}, "/bin/true", "/pycri", str(tmp_path), (str(closed / "run"),))
    assert not run(found.user_namespaces("fake"))
    assert not run(found.user_namespaces("unknown"))


@pytest.mark.skipif(os.geteuid() != 0, reason="ID-mapped mounts need root")
def test_user_namespaces_on_this_host(tmp_path: Path) -> None:
    searchable(tmp_path)
    rt = fake_runtime(tmp_path, "exit 1")
    found = features.HandlerFeatures({"fake": rt}, "/bin/true", "/pycri", str(tmp_path), (str(tmp_path),))
    expected = features.kernel_release() >= features.OVERLAY_IDMAPPED_LAYERS
    assert run(found.user_namespaces("fake")) == expected
