"""pycri.host.tree: iterative removal of directory trees (any depth, no symlinks followed, no mounts entered)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.host.tree import remove_tree, walk
from tests.support import trees
from tests.support.trees import deep_tree

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


@pytest.fixture(autouse=True)
def _no_deep_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    trees.empty(tmp_path)


def test_removes_a_tree_deeper_than_the_recursion_limit(tmp_path: Path) -> None:
    deep_tree(tmp_path / "top")
    assert remove_tree(tmp_path / "top") == []
    assert os.listdir(tmp_path) == []


def test_removes_a_deep_tree_relative_to_a_descriptor(tmp_path: Path) -> None:
    deep_tree(tmp_path / "top", 1500)
    fd = os.open(tmp_path, _DIR)
    try:
        remove_tree("top", dir_fd=fd)
    finally:
        os.close(fd)
    assert os.listdir(tmp_path) == []


def test_needs_few_descriptors(tmp_path: Path) -> None:
    deep_tree(tmp_path / "top")
    before = len(os.listdir("/proc/self/fd"))
    most = 0
    for _, _, name, _ in walk_tree(tmp_path / "top"):
        most = max(most, len(os.listdir("/proc/self/fd")))
        assert name
    assert most - before <= 4  # the walk's two, listdir's own, and scandir's while it lists


def walk_tree(top: Path) -> list[tuple[int, str, str, os.stat_result | None]]:
    fd = os.open(top, _DIR)
    try:
        return [(parent, path, name, st) for parent, path, name, st in walk(fd, str(top), _raise)]
    finally:
        os.close(fd)


def _raise(exc: OSError) -> None:
    raise exc


def test_walk_is_post_order_and_names_paths(tmp_path: Path) -> None:
    (tmp_path / "t/a/b").mkdir(parents=True)
    (tmp_path / "t/a/b/f").write_bytes(b"x")
    (tmp_path / "t/g").write_bytes(b"y")
    os.symlink("a", tmp_path / "t/l")
    seen = [(os.path.join(path, name), st is not None) for _, path, name, st in walk_tree(tmp_path / "t")]
    top = str(tmp_path / "t")
    assert sorted(seen) == sorted(
        [(f"{top}/a/b/f", False), (f"{top}/a/b", True), (f"{top}/a", True), (f"{top}/g", False), (f"{top}/l", False)]
    )
    order = [p for p, _ in seen]
    assert order.index(f"{top}/a/b/f") < order.index(f"{top}/a/b") < order.index(f"{top}/a")


def test_symlinks_inside_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "canary").write_bytes(b"keep")
    (outside / "sub" / "canary").write_bytes(b"keep")
    top = tmp_path / "top"
    (top / "a").mkdir(parents=True)
    os.symlink(outside, top / "dir-link")
    os.symlink(outside / "canary", top / "a" / "file-link")
    os.symlink("../../outside/sub", top / "a" / "relative-link")
    assert remove_tree(top) == []
    assert not top.exists()
    assert (outside / "canary").read_bytes() == b"keep"
    assert (outside / "sub" / "canary").read_bytes() == b"keep"


def test_a_symlink_given_as_the_top_is_unlinked_not_followed(tmp_path: Path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "canary").write_bytes(b"keep")
    os.symlink(tmp_path / "target", tmp_path / "link")
    remove_tree(tmp_path / "link")
    assert not os.path.lexists(tmp_path / "link")
    assert (tmp_path / "target" / "canary").read_bytes() == b"keep"


def test_a_file_given_as_the_top_is_removed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    remove_tree(tmp_path / "f")
    assert os.listdir(tmp_path) == []


def test_missing_top(tmp_path: Path) -> None:
    assert remove_tree(tmp_path / "nope", ignore_errors=True) == []
    with pytest.raises(FileNotFoundError):
        remove_tree(tmp_path / "nope")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")
def test_mount_points_below_are_not_entered(tmp_path: Path) -> None:
    top = tmp_path / "top"
    (top / "a" / "tmpfs").mkdir(parents=True)
    (top / "a" / "bind").mkdir()
    (top / "a" / "f").write_bytes(b"x")
    source = tmp_path / "source"
    source.mkdir()
    (source / "canary").write_bytes(b"keep")
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(top / "a" / "tmpfs")], check=True)
    try:
        (top / "a" / "tmpfs" / "canary").write_bytes(b"keep")
        subprocess.run(["mount", "--bind", str(source), str(top / "a" / "bind")], check=True)  # same file system
        try:
            failures = remove_tree(top, ignore_errors=True)
            assert sorted(f.filename for f in failures if f.errno == errno.EBUSY) == [
                str(top / "a" / "bind"),
                str(top / "a" / "tmpfs"),
            ]
            assert (top / "a" / "tmpfs" / "canary").read_bytes() == b"keep"
            assert (source / "canary").read_bytes() == b"keep"
            assert sorted(os.listdir(top / "a")) == ["bind", "tmpfs"]  # everything else went
            with pytest.raises(OSError, match="a mount point: not entered") as info:
                remove_tree(top)
            assert info.value.errno == errno.EBUSY
        finally:
            subprocess.run(["umount", str(top / "a" / "bind")], check=True)
    finally:
        subprocess.run(["umount", str(top / "a" / "tmpfs")], check=True)
    assert remove_tree(top) == []
    assert (source / "canary").read_bytes() == b"keep"


def test_without_ignore_errors_the_first_failure_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "t" / "a").mkdir(parents=True)
    (tmp_path / "t" / "a" / "f").write_bytes(b"x")
    real_unlink = os.unlink

    def refuse(path: str, *, dir_fd: int | None = None) -> None:
        if path == "f":
            raise PermissionError(errno.EPERM, "Operation not permitted", path)
        real_unlink(path, dir_fd=dir_fd)

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(PermissionError) as info:
        remove_tree(tmp_path / "t")
    assert info.value.filename == str(tmp_path / "t" / "a" / "f")
    failures = remove_tree(tmp_path / "t", ignore_errors=True)
    assert [f.filename for f in failures] == [str(tmp_path / "t" / "a" / "f"), str(tmp_path / "t" / "a"), str(tmp_path / "t")]
    assert (tmp_path / "t" / "a" / "f").exists()
