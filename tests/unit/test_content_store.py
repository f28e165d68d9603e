"""pycri.images.content: verified writes, shared downloads, cancellation, clean-up."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from pycri.images import content
from pycri.images.content import ContentError, ContentStore

DATA = b"hello, content store\n" * 100
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
HEX = DIGEST.removeprefix("sha256:")


def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    async def gen() -> AsyncIterator[bytes]:
        for part in parts:
            await asyncio.sleep(0)
            yield part

    return gen()


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture
def store(tmp_path: Path) -> ContentStore:
    s = ContentStore(tmp_path / "content")
    s.prepare()
    return s


def leftovers(store: ContentStore) -> tuple[list[str], list[str]]:
    """(files in ingest/, files in blobs/sha256 and blobs/sha512)."""
    blobs = sorted(os.listdir(store.blobs / "sha256")) + sorted(os.listdir(store.blobs / "sha512"))
    return sorted(os.listdir(store.ingest_dir)), blobs


class CountingFetch:
    """A ``fetch`` for ensure(): counts calls; each stream optionally waits for ``gate`` after its first chunk."""

    def __init__(self, data: bytes, gate: asyncio.Event | None = None) -> None:
        self.data = data
        self.gate = gate
        self.calls = 0
        self.started = asyncio.Event()

    def __call__(self) -> AsyncIterator[bytes]:
        self.calls += 1
        return self._stream()

    async def _stream(self) -> AsyncIterator[bytes]:
        half = len(self.data) // 2
        yield self.data[:half]
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        yield self.data[half:]


class WatchedInflight(dict[str, "asyncio.Future[Path]"]):
    """``ContentStore._inflight`` that reports each caller that found a download already under way."""

    def __init__(self) -> None:
        super().__init__()
        self.joined = 0
        self.changed = asyncio.Event()

    def get(self, key: str, default: asyncio.Future[Path] | None = None) -> asyncio.Future[Path] | None:  # type: ignore[override]
        found = super().get(key, default)
        if found is not None:
            self.joined += 1
            self.changed.set()
        return found

    async def wait_joined(self, count: int) -> None:
        while self.joined < count:
            self.changed.clear()
            await self.changed.wait()


def watch(store: ContentStore) -> WatchedInflight:
    watched = WatchedInflight()
    store._inflight = watched
    return watched


# -- layout -------------------------------------------------------------------------------------------


def test_prepare_creates_the_layout(tmp_path: Path) -> None:
    s = ContentStore(tmp_path / "c")
    assert s.digests() == set()  # nothing yet, not even directories
    s.prepare()
    assert (tmp_path / "c" / "blobs" / "sha256").is_dir()
    assert (tmp_path / "c" / "blobs" / "sha512").is_dir()
    assert (tmp_path / "c" / "ingest").is_dir()


def test_prepare_removes_stale_ingest_files_and_keeps_blobs(store: ContentStore) -> None:
    (store.ingest_dir / "abcdef-123").write_bytes(b"half")
    (store.ingest_dir / "subdir").mkdir()
    (store.ingest_dir / "subdir" / "x").write_bytes(b"x")
    blob = store.path(DIGEST)
    blob.write_bytes(DATA)
    store.prepare()
    assert os.listdir(store.ingest_dir) == []
    assert blob.read_bytes() == DATA


def test_path_and_invalid_digests(store: ContentStore) -> None:
    assert store.path(DIGEST) == store.blobs / "sha256" / HEX
    assert store.path("sha512:" + "a" * 128) == store.blobs / "sha512" / ("a" * 128)
    for bad in ("md5:" + "a" * 32, "sha256:", "sha256:ABC", "sha256:../../etc/passwd", "nodigest"):
        with pytest.raises(ContentError, match="invalid digest"):
            store.path(bad)


# -- write --------------------------------------------------------------------------------------------


async def test_write_stores_a_verified_blob(store: ContentStore) -> None:
    path = await store.write(DIGEST, len(DATA), chunks(*pieces(DATA, 7)))
    assert path == store.blobs / "sha256" / HEX
    assert path.read_bytes() == DATA
    assert store.has(DIGEST)
    assert store.read(DIGEST) == DATA
    with store.open(DIGEST) as f:
        assert f.read() == DATA
    assert leftovers(store) == ([], [HEX])


async def test_write_batches_across_many_chunks(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(content, "WRITE_BATCH", 64)
    data = os.urandom(10_000)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = await store.write(digest, len(data), chunks(*pieces(data, 33)))
    assert path.read_bytes() == data


async def test_write_sha512(store: ContentStore) -> None:
    digest = "sha512:" + hashlib.sha512(DATA).hexdigest()
    path = await store.write(digest, len(DATA), chunks(DATA))
    assert path.parent == store.blobs / "sha512"
    assert store.digests() == {digest}


async def test_write_empty_blob(store: ContentStore) -> None:
    digest = "sha256:" + hashlib.sha256(b"").hexdigest()
    assert (await store.write(digest, 0, chunks())).read_bytes() == b""


async def test_write_unknown_size(store: ContentStore) -> None:
    assert (await store.write(DIGEST, -1, chunks(DATA[:10], DATA[10:]))).read_bytes() == DATA


async def test_put_bytes(store: ContentStore) -> None:
    assert (await store.put_bytes(DIGEST, DATA, "manifest")).read_bytes() == DATA


async def test_write_too_long(store: ContentStore) -> None:
    with pytest.raises(ContentError) as info:
        await store.write(DIGEST, len(DATA) - 1, chunks(DATA[:5], DATA[5:]), "layer")
    assert str(info.value) == f"layer {DIGEST}: more data than its declared size {len(DATA) - 1}"
    assert leftovers(store) == ([], [])


async def test_write_truncated(store: ContentStore) -> None:
    with pytest.raises(ContentError) as info:
        await store.write(DIGEST, len(DATA), chunks(DATA[:100]), "config")
    assert str(info.value) == f"config {DIGEST}: truncated: got 100 of {len(DATA)} bytes"
    assert leftovers(store) == ([], [])


async def test_write_wrong_digest(store: ContentStore) -> None:
    other = DATA.replace(b"hello", b"HELLO")
    actual = hashlib.sha256(other).hexdigest()
    with pytest.raises(ContentError) as info:
        await store.write(DIGEST, len(other), chunks(other))
    assert str(info.value) == f"blob {DIGEST}: digest mismatch: content is sha256:{actual}"
    assert leftovers(store) == ([], [])
    assert not store.has(DIGEST)


async def test_write_invalid_digest_creates_nothing(store: ContentStore) -> None:
    with pytest.raises(ContentError, match=r"^invalid digest 'sha256:xyz'$"):
        await store.write("sha256:xyz", 3, chunks(b"abc"))
    assert leftovers(store) == ([], [])


async def test_write_stream_failure_leaves_nothing(store: ContentStore) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield DATA[:10]
        raise ConnectionResetError("peer went away")

    with pytest.raises(ConnectionResetError):
        await store.write(DIGEST, len(DATA), failing())
    assert leftovers(store) == ([], [])


async def test_write_replaces_nothing_on_failure(store: ContentStore) -> None:
    """A failed second write of a blob that is already there keeps the good copy."""
    await store.put_bytes(DIGEST, DATA)
    with pytest.raises(ContentError):
        await store.write(DIGEST, len(DATA), chunks(b"x" * len(DATA)))
    assert store.read(DIGEST) == DATA
    assert leftovers(store) == ([], [HEX])


# -- ensure -------------------------------------------------------------------------------------------


async def test_ensure_downloads_a_missing_blob(store: ContentStore) -> None:
    fetch = CountingFetch(DATA)
    assert await store.ensure(DIGEST, len(DATA), fetch, "layer") == store.path(DIGEST)
    assert fetch.calls == 1
    assert store.read(DIGEST) == DATA
    assert store.in_flight() == set()


async def test_ensure_does_not_fetch_a_blob_that_is_here(store: ContentStore) -> None:
    await store.put_bytes(DIGEST, DATA)

    def fetch() -> AsyncIterator[bytes]:
        raise AssertionError("fetch must not be called")

    assert await store.ensure(DIGEST, len(DATA), fetch) == store.path(DIGEST)


async def test_ensure_concurrent_callers_share_one_download(store: ContentStore) -> None:
    watched = watch(store)
    gate = asyncio.Event()
    fetch = CountingFetch(DATA, gate)
    tasks = [asyncio.create_task(store.ensure(DIGEST, len(DATA), fetch)) for _ in range(3)]
    await fetch.started.wait()
    await asyncio.wait_for(watched.wait_joined(2), 10)
    assert store.in_flight() == {DIGEST}
    gate.set()
    paths = await asyncio.gather(*tasks)
    assert paths == [store.path(DIGEST)] * 3
    assert fetch.calls == 1
    assert store.read(DIGEST) == DATA
    assert store.in_flight() == set()
    assert leftovers(store) == ([], [HEX])


async def test_ensure_concurrent_callers_all_see_the_failure(store: ContentStore) -> None:
    watched = watch(store)
    gate = asyncio.Event()
    fetch = CountingFetch(b"not the data", gate)
    tasks = [asyncio.create_task(store.ensure(DIGEST, len(b"not the data"), fetch, "layer")) for _ in range(2)]
    await fetch.started.wait()
    await asyncio.wait_for(watched.wait_joined(1), 10)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert fetch.calls == 1
    for result in results:
        assert isinstance(result, ContentError)
        assert f"layer {DIGEST}: digest mismatch" in str(result)
    assert store.in_flight() == set()
    assert leftovers(store) == ([], [])


async def test_ensure_after_a_failure_downloads_again(store: ContentStore) -> None:
    with pytest.raises(ContentError):
        await store.ensure(DIGEST, len(DATA), CountingFetch(b"x" * len(DATA)))
    fetch = CountingFetch(DATA)
    assert (await store.ensure(DIGEST, len(DATA), fetch)).read_bytes() == DATA
    assert fetch.calls == 1


async def test_cancelled_download_leaves_nothing_and_a_later_ensure_works(store: ContentStore) -> None:
    reached = asyncio.Event()
    never = asyncio.Event()

    async def stalled() -> AsyncIterator[bytes]:
        yield DATA[:50]
        reached.set()
        await never.wait()
        yield DATA[50:]

    task = asyncio.create_task(store.ensure(DIGEST, len(DATA), stalled))
    await reached.wait()
    assert store.in_flight() == {DIGEST}
    assert len(os.listdir(store.ingest_dir)) == 1  # the download is under way
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert leftovers(store) == ([], [])
    assert store.in_flight() == set()
    assert not store.has(DIGEST)

    fetch = CountingFetch(DATA)
    assert (await store.ensure(DIGEST, len(DATA), fetch)).read_bytes() == DATA
    assert fetch.calls == 1
    assert leftovers(store) == ([], [HEX])


async def test_a_waiter_survives_the_cancellation_of_the_downloader(store: ContentStore) -> None:
    watched = watch(store)
    gate = asyncio.Event()
    first = CountingFetch(DATA, gate)
    leader = asyncio.create_task(store.ensure(DIGEST, len(DATA), first))
    await first.started.wait()
    follower = asyncio.create_task(store.ensure(DIGEST, len(DATA), CountingFetch(DATA)))
    await asyncio.wait_for(watched.wait_joined(1), 10)
    leader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert (await follower).read_bytes() == DATA


async def test_cancelling_a_waiter_does_not_stop_the_download(store: ContentStore) -> None:
    watched = watch(store)
    gate = asyncio.Event()
    fetch = CountingFetch(DATA, gate)
    leader = asyncio.create_task(store.ensure(DIGEST, len(DATA), fetch))
    await fetch.started.wait()
    follower = asyncio.create_task(store.ensure(DIGEST, len(DATA), fetch))
    await asyncio.wait_for(watched.wait_joined(1), 10)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    gate.set()
    assert (await leader).read_bytes() == DATA
    assert fetch.calls == 1


async def test_cancel_while_creating_the_temp_file_leaves_nothing(store: ContentStore, monkeypatch: pytest.MonkeyPatch) -> None:
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()
    real_mkstemp: Callable[..., tuple[int, str]] = tempfile.mkstemp

    def slow_mkstemp(*args: str, **kwargs: str) -> tuple[int, str]:
        entered.set()
        release.wait(10)
        try:
            return real_mkstemp(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(tempfile, "mkstemp", slow_mkstemp)
    task = asyncio.create_task(store.write(DIGEST, len(DATA), chunks(DATA)))
    await asyncio.to_thread(entered.wait, 10)
    task.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(finished.wait, 10)
    await asyncio.sleep(0.05)  # let any clean-up scheduled on the loop run
    assert leftovers(store) == ([], [])


# -- digests / delete ---------------------------------------------------------------------------------


async def test_digests_and_delete(store: ContentStore) -> None:
    other = b"other"
    other_digest = "sha256:" + hashlib.sha256(other).hexdigest()
    big_digest = "sha512:" + hashlib.sha512(other).hexdigest()
    await store.put_bytes(DIGEST, DATA)
    await store.put_bytes(other_digest, other)
    await store.put_bytes(big_digest, other)
    assert store.digests() == {DIGEST, other_digest, big_digest}

    store.delete(DIGEST)
    assert not store.has(DIGEST)
    assert store.digests() == {other_digest, big_digest}
    store.delete(DIGEST)  # already gone: no error
    store.delete(big_digest)
    assert store.digests() == {other_digest}
    assert store.read(other_digest) == other
