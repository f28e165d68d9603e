"""Disk usage accounting: writable layers kept current by inotify, the image store, mount points."""

from __future__ import annotations

import errno
import os
import random
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycri.stats import fsusage, inotify
from pycri.stats.fsusage import StoreUsage, WritableLayers, disk_usage, mount_of, parse_mountinfo
from pycri.stats.inotify import Inotify, parse


@pytest.fixture
def layers() -> Iterator[WritableLayers]:
    accounting = WritableLayers(verify_interval=3600)
    yield accounting
    accounting.close()


def settled(layers: WritableLayers, key: str) -> tuple[int, int] | None:
    layers.drain()
    return layers.usage(key)


def write(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(os.urandom(size))


def test_a_new_directory_is_empty_then_follows_writes(layers: WritableLayers, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    layers.track("c1", str(upper))
    assert layers.usage("c1") == (0, 0)
    write(upper / "big", 1 << 20)
    assert settled(layers, "c1") == disk_usage(upper)
    assert layers.usage("c1") is not None
    used, inodes = disk_usage(upper)
    assert used >= 1 << 20
    assert inodes == 1
    with open(upper / "big", "ab") as f:  # grows while open: IN_MODIFY
        f.write(os.urandom(1 << 20))
        f.flush()
        assert settled(layers, "c1") == disk_usage(upper)
    (upper / "big").unlink()
    assert settled(layers, "c1") == (0, 0)


def test_directories_links_renames_and_removals(layers: WritableLayers, tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "pre" / "sub").mkdir(parents=True)
    write(upper / "pre" / "sub" / "f", 10_000)
    layers.track("c", str(upper))
    assert layers.usage("c") == disk_usage(upper)  # what was there is scanned

    (upper / "a" / "b" / "c").mkdir(parents=True)
    write(upper / "a" / "b" / "c" / "deep", 50_000)
    os.link(upper / "a" / "b" / "c" / "deep", upper / "a" / "hardlink")  # counted once
    os.symlink("deep", upper / "a" / "b" / "c" / "sym")
    assert settled(layers, "c") == disk_usage(upper)

    os.rename(upper / "a" / "b", upper / "pre" / "moved")  # a watched subtree moves within the tree
    write(upper / "pre" / "moved" / "c" / "after-move", 4096)
    assert settled(layers, "c") == disk_usage(upper)

    outside = tmp_path / "outside"
    os.rename(upper / "pre" / "moved", outside)  # and out of it
    assert settled(layers, "c") == disk_usage(upper)
    os.rename(outside, upper / "back")  # and back in, with what was written meanwhile
    assert settled(layers, "c") == disk_usage(upper)

    shutil.rmtree(upper / "pre")
    (upper / "a" / "hardlink").unlink()
    assert settled(layers, "c") == disk_usage(upper)
    os.mknod(upper / "whiteout", 0o600 | 0o020000, os.makedev(0, 0))  # overlayfs' whiteouts are inodes too
    assert settled(layers, "c") == disk_usage(upper)


def test_random_operations_match_du(layers: WritableLayers, tmp_path: Path) -> None:
    rng = random.Random(7)
    upper = tmp_path / "upper"
    upper.mkdir()
    layers.track("c", str(upper))
    for step in range(300):
        dirs = [upper, *(p for p in upper.rglob("*") if p.is_dir() and not p.is_symlink())]
        files = [p for p in upper.rglob("*") if p.is_file() and not p.is_symlink()]
        action = rng.choice(["mkdir", "write", "write", "append", "rm", "rmdir", "rename", "link", "truncate"])
        where = rng.choice(dirs)
        if action == "mkdir":
            (where / f"d{step}").mkdir()
        elif action == "write":
            write(where / f"f{step}", rng.randrange(0, 70_000))
        elif action == "append" and files:
            with open(rng.choice(files), "ab") as f:
                f.write(os.urandom(rng.randrange(1, 40_000)))
        elif action == "truncate" and files:
            os.truncate(rng.choice(files), rng.randrange(0, 5000))
        elif action == "rm" and files:
            rng.choice(files).unlink()
        elif action == "rmdir" and len(dirs) > 1:
            shutil.rmtree(rng.choice(dirs[1:]))
        elif action == "rename" and len(dirs) > 1:
            src = rng.choice(dirs[1:] + files)
            dest = rng.choice(dirs)
            if dest != src and not str(dest).startswith(str(src) + "/"):
                os.rename(src, dest / f"r{step}")
        elif action == "link" and files:
            os.link(rng.choice(files), where / f"l{step}")
        if step % 7 == 0:
            assert settled(layers, "c") == disk_usage(upper), f"after step {step} ({action})"
    assert settled(layers, "c") == disk_usage(upper)


def test_several_trees_and_sync(layers: WritableLayers, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "x", 8192)
    write(b / "y", 16384)
    layers.sync({"a": str(a), "b": str(b)})
    assert layers.totals() == tuple(map(sum, zip(disk_usage(a), disk_usage(b), strict=True)))
    layers.sync({"b": str(b)})
    assert layers.usage("a") is None
    assert layers.totals() == disk_usage(b)
    write(a / "z", 4096)  # no longer watched: nothing to take in
    assert settled(layers, "b") == disk_usage(b)
    shutil.rmtree(b)  # removed under the accounting (RemoveContainer): it counts nothing
    assert settled(layers, "b") == (0, 0)


def test_files_written_without_events_are_seen_while_hot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kernels before 6.x report no IN_MODIFY on the upper dir for writes through overlayfs."""
    monkeypatch.setattr(fsusage, "WATCH_MASK", fsusage.WATCH_MASK & ~(inotify.IN_MODIFY | inotify.IN_CLOSE_WRITE))
    now = [0.0]
    layers = WritableLayers(verify_interval=3600, hot_seconds=30, clock=lambda: now[0])
    try:
        upper = tmp_path / "upper"
        upper.mkdir()
        layers.track("c", str(upper))
        with open(upper / "log", "wb") as f:
            layers.drain()  # IN_CREATE: the file is hot
            f.write(os.urandom(100_000))
            f.flush()
            assert settled(layers, "c") == disk_usage(upper)
            now[0] = 20.0
            f.write(os.urandom(100_000))  # still changing: stays hot
            f.flush()
            assert settled(layers, "c") == disk_usage(upper)
            now[0] = 45.0
            layers.drain()  # unchanged since 20: still within 30 s of its last change
            now[0] = 51.0
            layers.drain()  # cooled down
            f.write(os.urandom(100_000))
            f.flush()
            assert settled(layers, "c") != disk_usage(upper)  # no event, not hot: unseen until verified
    finally:
        layers.close()


def test_verification_catches_what_no_event_said(tmp_path: Path) -> None:
    now = [0.0]
    layers = WritableLayers(verify_interval=60, clock=lambda: now[0])
    try:
        upper = tmp_path / "upper"
        write(upper / "d" / "f", 1000)
        layers.track("c", str(upper))
        write(upper / "d" / "g", 300_000)
        (upper / "d" / "f").unlink()
        assert layers._inotify is not None
        layers._inotify.read()  # the events are lost (an overflowed queue)
        layers.drain()
        assert layers.usage("c") != disk_usage(upper)
        assert layers.verify_step(1000) == 0  # not due yet
        now[0] = 61.0
        while layers.verify_step(1):  # a pass, one small step at a time
            pass
        assert layers.usage("c") == disk_usage(upper)
    finally:
        layers.close()


def test_no_watches_left_falls_back_to_walking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: Inotify, path: str, mask: int) -> int:
        raise OSError(errno.ENOSPC, "no space", path)

    now = [0.0]
    layers = WritableLayers(verify_interval=60, clock=lambda: now[0])
    try:
        upper = tmp_path / "upper"
        write(upper / "a", 5000)
        monkeypatch.setattr(Inotify, "add_watch", refuse)
        layers.track("c", str(upper))
        assert layers.trees["c"].polled
        assert layers.usage("c") == disk_usage(upper)
        write(upper / "b", 70_000)
        now[0] = 61.0
        while layers.verify_step(100):
            pass
        assert layers.usage("c") == disk_usage(upper)
    finally:
        layers.close()


def test_the_background_thread_takes_in_events(tmp_path: Path) -> None:
    layers = WritableLayers(verify_interval=3600)
    try:
        upper = tmp_path / "upper"
        upper.mkdir()
        layers.track("c", str(upper))
        layers.start()
        write(upper / "f", 123_456)
        import time

        deadline = time.monotonic() + 5
        while layers.usage("c") != disk_usage(upper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert layers.usage("c") == disk_usage(upper)
    finally:
        layers.close()
    assert layers.trees == {}


def test_parse_inotify_events() -> None:
    import struct

    raw = struct.pack("iIII", 3, 0x100, 0, 16) + b"name\0".ljust(16, b"\0") + struct.pack("iIII", 4, 0x8000, 0, 0)
    events = parse(raw)
    assert [(e.wd, e.mask, e.name) for e in events] == [(3, 0x100, "name"), (4, 0x8000, "")]


def test_store_usage_reuses_layer_sizes(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write(root / "content" / "blobs" / "sha256" / "aa", 10_000)
    write(root / "layers" / "l1" / "bin" / "x", 40_000)
    write(root / "layers" / ".tmp-unpacking" / "fs" / "y", 5000)
    store = StoreUsage(root, (root / "layers",))
    assert store.measure() == disk_usage(root)
    write(root / "layers" / "l2" / "z", 20_000)
    write(root / "content" / "blobs" / "sha256" / "bb", 3000)
    assert store.measure() == disk_usage(root)
    write(root / "layers" / "l1" / "bin" / "never", 8192)  # a layer never changes in place: not looked at again
    assert store.measure() != disk_usage(root)
    shutil.rmtree(root / "layers" / "l1")
    shutil.rmtree(root / "layers" / ".tmp-unpacking")
    assert store.measure() == disk_usage(root)


MOUNTINFO = """\
22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
40 22 0:38 / /var/lib rw shared:2 - xfs /dev/vdb1 rw
41 40 0:39 / /var/lib/pycri/containers/abc/rootfs rw - overlay overlay rw,lowerdir=x
42 22 0:40 / /mnt/with\\040space rw - tmpfs tmpfs rw
43 40 0:41 / /var/lib rw - tmpfs over rw
"""


def test_mount_of_the_deepest_and_latest(tmp_path: Path) -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert mounts[3].mountpoint == "/mnt/with space"
    assert mounts[0].major == 253
    assert mount_of("/etc/passwd", MOUNTINFO) == mounts[0]
    assert mount_of("/var/libx", MOUNTINFO) == mounts[0]
    found = mount_of("/var/lib/pycri/images", MOUNTINFO)
    assert found is not None
    assert found.source == "over"
    assert mount_of(str(tmp_path), None) is not None  # this host's own


def test_settled_totals_only_when_there_is_nothing_to_take_in(tmp_path: Path) -> None:
    layers = WritableLayers(verify_interval=3600, hot_seconds=0)
    try:
        upper = tmp_path / "upper"
        upper.mkdir()
        live = {"c": str(upper)}.keys()
        layers.track("c", str(upper))
        assert layers.settled_totals(live) == (0, 0)
        assert layers.settled_totals({}.keys()) is None  # a container to forget first
        write(upper / "f", 5000)
        assert layers.settled_totals(live) is None  # events queued
        layers.drain()  # the file is hot now (for 0 s)
        layers.drain()  # and cool
        assert layers.settled_totals(live) == disk_usage(upper)
    finally:
        layers.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts an overlay")
def test_overlay_reports_writes_probe(tmp_path: Path) -> None:
    found = fsusage.overlay_reports_writes(tmp_path / "probe")
    assert isinstance(found, bool)
    assert not (tmp_path / "probe").exists()
    assert str(tmp_path) not in Path("/proc/self/mountinfo").read_text()
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    if (major, minor) >= (6, 18):
        assert found  # what 6.18 does (older ones may not)
