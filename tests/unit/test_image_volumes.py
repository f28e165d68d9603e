"""pycri.containers.image_volumes: image_sub_path resolved inside the image, never outside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri import errors
from pycri.containers.image_volumes import resolve_in_root, source


@pytest.fixture
def image(tmp_path: Path) -> Path:
    root = tmp_path / "image"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root\n")
    (root / "data" / "deep").mkdir(parents=True)
    (root / "data" / "file").write_text("x")
    os.symlink("/etc", root / "abs")  # absolute: the image's /etc
    os.symlink("../etc/passwd", root / "data" / "rel")
    os.symlink("../../../../../../../../etc", root / "data" / "up")  # climbs no higher than the root
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    os.symlink("/data/file", root / "to-file")
    return root


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("etc", "etc"),
        ("etc/passwd", "etc/passwd"),
        ("./data//deep/", "data/deep"),
        ("abs", "etc"),
        ("abs/passwd", "etc/passwd"),
        ("data/rel", "etc/passwd"),
        ("data/up/passwd", "etc/passwd"),
        ("data/../etc", "etc"),
        ("../../etc", "etc"),
        ("", ""),
    ],
)
def test_resolve_in_root(image: Path, path: str, expected: str) -> None:
    want = os.path.join(str(image), expected) if expected else str(image)
    assert resolve_in_root(str(image), path) == want


@pytest.mark.parametrize("path", ["missing", "etc/missing", "data/file/below", "to-file/below"])
def test_missing_paths(image: Path, path: str) -> None:
    assert resolve_in_root(str(image), path) is None


def test_symlink_loops(image: Path) -> None:
    with pytest.raises(errors.InvalidArgument, match="too many levels of symbolic links"):
        resolve_in_root(str(image), "loop1")


def test_source(image: Path) -> None:
    assert source(image, "", "config.mounts[0]", "img") == str(image)
    assert source(image, "abs", "config.mounts[0]", "img") == str(image / "etc")
    with pytest.raises(errors.InvalidArgument, match=r"config.mounts\[0\].image_sub_path: 'nope' does not exist in image 'img'"):
        source(image, "nope", "config.mounts[0]", "img")
