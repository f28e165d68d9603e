"""pycri.images.layers: unpack into layers/<chain hex>, diff ID checks, sharing, clean-up."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import os
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from pycri import config, errors
from pycri.host.tree import remove_tree
from pycri.images import layers as layers_mod
from pycri.images import unpack
from pycri.images.layers import LayerError, LayerStore
from pycri.images.service import ImageService
from pycri.images.unpack import UnpackError
from pycri.store import Store
from tests.support import trees
from tests.support.trees import deep_tree

TAR = "application/vnd.oci.image.layer.v1.tar"
TAR_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

CHAIN = "sha256:" + "c" * 64
OTHER_CHAIN = "sha256:" + "d" * 64


def tar_bytes(files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in dirs:
            ti = tarfile.TarInfo(name)
            ti.type = tarfile.DIRTYPE
            ti.mode = 0o755
            ti.mtime = 1_600_000_000
            tf.addfile(ti)
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1_600_000_000
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def diff_id(tar: bytes) -> str:
    return "sha256:" + hashlib.sha256(tar).hexdigest()


LAYER_TAR = tar_bytes({"etc/hello": b"hello\n", "bin/tool": b"#!/bin/sh\n"}, dirs=("etc", "bin"))
LAYER_DIFF = diff_id(LAYER_TAR)


def write_blob(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / "blobs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[LayerStore]:
    s = LayerStore(tmp_path / "layers")
    s.prepare()
    yield s
    await s.close()
    trees.empty(tmp_path)


def names(store: LayerStore) -> list[str]:
    return sorted(os.listdir(store.root))


def tmp_leftovers(store: LayerStore) -> list[str]:
    return [n for n in names(store) if n.startswith(".tmp-")]


class BlockingUnpack:
    """Wraps unpack.unpack_layer: counts calls, and holds each in its thread until ``release`` is set."""

    def __init__(self, real: Callable[..., unpack.UnpackStats], block: bool) -> None:
        self.real = real
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: set[str] = set()
        self.running = 0
        self.most = 0  # unpacks running at once
        self._lock = threading.Lock()
        if not block:
            self.release.set()

    def __call__(self, stream: unpack.Readable, dest: Path, **kwargs: Any) -> unpack.UnpackStats:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
        self.entered.set()
        try:
            self.release.wait(10)
            return self.real(stream, dest, **kwargs)
        finally:
            with self._lock:
                self.running -= 1


def patch_unpack(monkeypatch: pytest.MonkeyPatch, *, block: bool) -> BlockingUnpack:
    wrapper = BlockingUnpack(unpack.unpack_layer, block)
    monkeypatch.setattr(unpack, "unpack_layer", wrapper)
    return wrapper


# -- prepare / listing --------------------------------------------------------------------------------


def test_prepare_creates_the_root(tmp_path: Path) -> None:
    s = LayerStore(tmp_path / "a" / "layers")
    s.prepare()
    assert s.root.is_dir()
    assert s.chain_ids() == set()


def test_prepare_removes_tmp_leftovers_only(store: LayerStore) -> None:
    (store.root / ".tmp-abc" / "fs" / "etc").mkdir(parents=True)
    (store.root / ".tmp-abc" / "fs" / "etc" / "f").write_bytes(b"x")
    (store.root / ".tmp-rm-xyz" / "layer").mkdir(parents=True)
    (store.root / ("e" * 64)).mkdir()
    (store.root / ".keep").mkdir()
    store.prepare()
    assert names(store) == [".keep", "e" * 64]


def test_prepare_removes_leftovers_deeper_than_the_recursion_limit(store: LayerStore) -> None:
    deep_tree(store.root / ".tmp-deep")
    deep_tree(store.root / ".tmp-rm-deep")
    store.prepare()
    assert names(store) == []


def test_prepare_logs_a_leftover_it_cannot_remove_and_carries_on(
    store: LayerStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in (".tmp-a", ".tmp-b", ".tmp-c"):
        (store.root / name / "fs").mkdir(parents=True)

    def failing(path: str | os.PathLike[str], ignore_errors: bool = False, **kw: Any) -> list[OSError]:
        if Path(path).name == ".tmp-a":
            raise RuntimeError("boom")
        if Path(path).name == ".tmp-b":
            return [PermissionError(1, "Operation not permitted", f"{path}/fs")]
        return remove_tree(path, ignore_errors, **kw)

    monkeypatch.setattr(layers_mod, "remove_tree", failing)
    store.prepare()
    assert names(store) == [".tmp-a", ".tmp-b"]
    assert ".tmp-a: boom" in caplog.text
    assert "Operation not permitted: '" in caplog.text
    assert ".tmp-b/fs'" in caplog.text


def test_chain_ids_lists_layers_not_hidden_entries(store: LayerStore) -> None:
    (store.root / ("a" * 64)).mkdir()
    (store.root / ("b" * 64)).mkdir()
    (store.root / ".tmp-123").mkdir()
    assert store.chain_ids() == {"sha256:" + "a" * 64, "sha256:" + "b" * 64}
    assert store.has("sha256:" + "a" * 64)
    assert not store.has(CHAIN)


def test_path(store: LayerStore) -> None:
    assert store.path(CHAIN) == store.root / ("c" * 64)


# -- ensure -------------------------------------------------------------------------------------------


async def test_ensure_unpacks_a_tar_layer(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    path = await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)
    assert path == store.root / ("c" * 64)
    assert (path / "etc" / "hello").read_bytes() == b"hello\n"
    assert (path / "bin" / "tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert store.has(CHAIN)
    assert store.chain_ids() == {CHAIN}
    assert tmp_leftovers(store) == []
    assert store.in_flight() == set()
    assert blob.read_bytes() == LAYER_TAR  # the blob is left alone


@pytest.mark.parametrize("media_type", [TAR_GZIP, DOCKER_GZIP])
async def test_ensure_unpacks_a_gzip_layer_checking_the_uncompressed_digest(
    store: LayerStore, tmp_path: Path, media_type: str
) -> None:
    blob = write_blob(tmp_path, "l1.gz", gzip.compress(LAYER_TAR))
    path = await store.ensure(CHAIN, LAYER_DIFF, blob, media_type)
    assert (path / "etc" / "hello").read_bytes() == b"hello\n"
    assert tmp_leftovers(store) == []


async def test_ensure_counts_the_padding_after_the_tar_in_the_diff_id(store: LayerStore, tmp_path: Path) -> None:
    padded = LAYER_TAR + b"\0" * 10240
    blob = write_blob(tmp_path, "padded", gzip.compress(padded))
    await store.ensure(CHAIN, diff_id(padded), blob, TAR_GZIP)
    assert store.has(CHAIN)


async def test_ensure_wrong_diff_id(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1.gz", gzip.compress(LAYER_TAR))
    wrong = "sha256:" + "0" * 64
    with pytest.raises(LayerError) as info:
        await store.ensure(CHAIN, wrong, blob, TAR_GZIP)
    assert str(info.value) == f"layer l1.gz: uncompressed digest {LAYER_DIFF} does not match the config's diff ID {wrong}"
    assert not store.has(CHAIN)
    assert names(store) == []
    assert store.in_flight() == set()


async def test_ensure_diff_id_of_the_compressed_bytes_is_wrong(store: LayerStore, tmp_path: Path) -> None:
    compressed = gzip.compress(LAYER_TAR)
    blob = write_blob(tmp_path, "l1.gz", compressed)
    with pytest.raises(LayerError, match="does not match the config's diff ID"):
        await store.ensure(CHAIN, diff_id(compressed), blob, TAR_GZIP)
    assert names(store) == []


async def test_ensure_corrupt_layer(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "bad.gz", gzip.compress(LAYER_TAR)[:-30])
    with pytest.raises(UnpackError):
        await store.ensure(CHAIN, LAYER_DIFF, blob, TAR_GZIP)
    assert names(store) == []
    assert store.in_flight() == set()


async def test_a_failed_unpack_of_a_deep_tree_leaves_nothing(store: LayerStore, tmp_path: Path) -> None:
    deep = tar_bytes({"d/" * 2000 + "f": b"x"})  # 2000 levels: a 4 KiB path
    with tarfile.open(fileobj=io.BytesIO(deep)) as tf:
        end = tf.getmembers()[0].offset_data + 512
    blob = write_blob(tmp_path, "deep", deep[:end])  # no end-of-archive marker
    with pytest.raises(UnpackError, match="truncated"):
        await store.ensure(CHAIN, diff_id(deep), blob, TAR)
    assert names(store) == []


async def test_ensure_applies_the_stores_limits(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "layers", limits=unpack.Limits(max_entries=3))
    store.prepare()
    blob = write_blob(tmp_path, "l1", LAYER_TAR)  # four entries
    with pytest.raises(unpack.UnpackLimitError, match=r"^layer has more than 3 entries \(images.max_layer_entries\)$"):
        await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)
    assert names(store) == []


def test_the_image_service_gives_its_layer_store_the_configured_limits(tmp_path: Path) -> None:
    cfg = config.from_dict({"root_dir": str(tmp_path), "images": {"max_layer_unpacked_bytes": 1000, "max_layer_entries": 7}})
    service = ImageService(cfg, cast(Store, None))
    assert service.layers.limits == unpack.Limits(max_bytes=1000, max_entries=7)


async def test_ensure_unsupported_media_type(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    with pytest.raises(UnpackError, match="unsupported layer media type"):
        await store.ensure(CHAIN, LAYER_DIFF, blob, "application/octet-stream")
    assert names(store) == []


async def test_ensure_after_a_failure_works(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    with pytest.raises(LayerError):
        await store.ensure(CHAIN, "sha256:" + "0" * 64, blob, TAR)
    assert (await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)).is_dir()


async def test_ensure_an_existing_layer_does_not_unpack(
    store: LayerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)
    counter = patch_unpack(monkeypatch, block=False)
    blob.unlink()  # not even opened
    assert await store.ensure(CHAIN, LAYER_DIFF, blob, TAR) == store.path(CHAIN)
    assert counter.calls == 0


async def test_concurrent_ensure_of_one_chain_unpacks_once(
    store: LayerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = patch_unpack(monkeypatch, block=True)
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    tasks = [asyncio.create_task(store.ensure(CHAIN, LAYER_DIFF, blob, TAR)) for _ in range(4)]
    await asyncio.to_thread(counter.entered.wait, 10)
    await asyncio.sleep(0.01)
    assert store.in_flight() == {CHAIN}
    counter.release.set()
    paths = await asyncio.gather(*tasks)
    assert paths == [store.path(CHAIN)] * 4
    assert counter.calls == 1
    assert names(store) == ["c" * 64]
    assert store.in_flight() == set()


async def test_concurrent_ensure_shares_the_failure(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    wrong = "sha256:" + "0" * 64
    results = await asyncio.gather(*(store.ensure(CHAIN, wrong, blob, TAR) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, LayerError) for r in results)
    assert names(store) == []


async def test_different_chains_unpack_separately(store: LayerStore, tmp_path: Path) -> None:
    second_tar = tar_bytes({"other": b"2"})
    a = write_blob(tmp_path, "a", LAYER_TAR)
    b = write_blob(tmp_path, "b", second_tar)
    pa, pb = await asyncio.gather(store.ensure(CHAIN, LAYER_DIFF, a, TAR), store.ensure(OTHER_CHAIN, diff_id(second_tar), b, TAR))
    assert (pa / "etc" / "hello").is_file()
    assert (pb / "other").read_bytes() == b"2"
    assert store.chain_ids() == {CHAIN, OTHER_CHAIN}


async def test_cancelled_ensure_lets_the_unpack_finish(
    store: LayerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = patch_unpack(monkeypatch, block=True)
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    task = asyncio.create_task(store.ensure(CHAIN, LAYER_DIFF, blob, TAR))
    await asyncio.to_thread(counter.entered.wait, 10)
    task.cancel()
    await asyncio.sleep(0.01)
    assert not task.done()  # still waiting for its thread
    counter.release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.has(CHAIN)  # complete: the caller's clean-up can see it
    assert tmp_leftovers(store) == []
    assert store.in_flight() == set()


async def test_a_waiter_gets_the_layer_when_the_first_caller_is_cancelled(
    store: LayerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = patch_unpack(monkeypatch, block=True)
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    leader = asyncio.create_task(store.ensure(CHAIN, LAYER_DIFF, blob, TAR))
    follower = asyncio.create_task(store.ensure(CHAIN, LAYER_DIFF, blob, TAR))
    await asyncio.to_thread(counter.entered.wait, 10)
    leader.cancel()
    counter.release.set()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert store.has(CHAIN)
    assert await follower == store.path(CHAIN)


# -- the unpack threads ---------------------------------------------------------------------------------


async def test_unpacks_run_in_their_own_threads_not_in_the_default_pool(
    store: LayerStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = patch_unpack(monkeypatch, block=True)
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    many = (os.cpu_count() or 1) + 8  # more than asyncio's default pool has threads
    chains = [f"sha256:{i:064x}" for i in range(many)]
    tasks = [asyncio.create_task(store.ensure(chain, LAYER_DIFF, blob, TAR)) for chain in chains]
    try:
        for _ in range(500):
            if counter.calls:
                break
            await asyncio.sleep(0.01)
        # Every unpack is blocked, yet other blocking work of the daemon still gets a thread.
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "ran"), 5) == "ran"
        assert counter.running == 2
    finally:
        counter.release.set()
        await asyncio.gather(*tasks)
    assert counter.calls == many
    assert counter.most == 2
    assert all(name.startswith("pycri-unpack") for name in counter.threads)
    assert store.chain_ids() == set(chains)


async def test_a_closed_store_takes_no_more_unpacks(tmp_path: Path) -> None:
    store = LayerStore(tmp_path / "layers")
    store.prepare()
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)
    await store.close()
    with pytest.raises(errors.Unavailable, match="the layer store is closed"):
        await store.ensure(OTHER_CHAIN, LAYER_DIFF, blob, TAR)
    assert store.has(CHAIN)
    await store.close()  # twice is fine


# -- delete -------------------------------------------------------------------------------------------


async def test_delete(store: LayerStore, tmp_path: Path) -> None:
    blob = write_blob(tmp_path, "l1", LAYER_TAR)
    await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)
    (store.root / ("e" * 64)).mkdir()
    store.delete(CHAIN)
    assert not store.has(CHAIN)
    assert names(store) == ["e" * 64]  # no .tmp-rm-* left behind
    store.delete(CHAIN)  # already gone: no error
    assert store.chain_ids() == {"sha256:" + "e" * 64}
    assert (await store.ensure(CHAIN, LAYER_DIFF, blob, TAR)).is_dir()  # can come back
