"""Content-addressed blob store: ``blobs/sha256/<hex>``, written through ``ingest/``.

A blob is streamed into a temporary file in ``ingest/`` while its digest is
computed, checked against the expected digest and size, fsynced and renamed
into place: a blob under its digest is always complete and correct. Two
callers wanting the same missing blob share one download. Disk writes run in
worker threads, batched to about a megabyte per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from pycri.host.tree import remove_tree

WRITE_BATCH = 1 << 20


class ContentError(RuntimeError):
    """A blob that did not arrive whole and correct; the message names it."""


class _Abandoned(Exception):
    """The caller downloading a blob was cancelled; whoever waited for it downloads it instead."""


def _hex(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not hexpart or any(c not in "0123456789abcdef" for c in hexpart):
        raise ContentError(f"invalid digest {digest!r}")
    return hexpart


class ContentStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.ingest_dir = root / "ingest"
        self._inflight: dict[str, asyncio.Future[Path]] = {}

    def prepare(self) -> None:
        """Create the directories and drop half-written ingests of an earlier run (sync: start-up)."""
        for algorithm in ("sha256", "sha512"):
            (self.blobs / algorithm).mkdir(parents=True, exist_ok=True)
        remove_tree(self.ingest_dir, ignore_errors=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.blobs / digest.partition(":")[0] / _hex(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def read(self, digest: str) -> bytes:
        return self.path(digest).read_bytes()

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def digests(self) -> set[str]:
        found: set[str] = set()
        for algorithm in ("sha256", "sha512"):
            directory = self.blobs / algorithm
            if directory.is_dir():
                found.update(f"{algorithm}:{name}" for name in os.listdir(directory))
        return found

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def in_flight(self) -> set[str]:
        return set(self._inflight)

    async def ensure(self, digest: str, size: int, fetch: Callable[[], AsyncIterator[bytes]], what: str = "blob") -> Path:
        """The blob's path, downloading it with ``fetch`` unless it is here or already coming."""
        target = self.path(digest)
        if await asyncio.to_thread(target.is_file):
            return target
        while (pending := self._inflight.get(digest)) is not None:
            try:
                return await asyncio.shield(pending)
            except _Abandoned:
                continue  # its downloader was cancelled, not the download's fault: take it over
        future: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        self._inflight[digest] = future
        try:
            path = await self.write(digest, size, fetch(), what)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else _Abandoned(digest))
                future.exception()  # mark retrieved: a lone downloader has nobody waiting
            raise
        else:
            future.set_result(path)
            return path
        finally:
            del self._inflight[digest]

    async def write(self, digest: str, size: int, chunks: AsyncIterator[bytes], what: str = "blob") -> Path:
        """Stream ``chunks`` into the store under ``digest``, verifying size and digest."""
        algorithm = digest.partition(":")[0]
        expected = _hex(digest)
        hasher = hashlib.new(algorithm)
        # Not in a thread: a cancellation while a thread creates the file would leak it (and its fd).
        fd, tmp_name = tempfile.mkstemp(dir=self.ingest_dir, prefix=expected[:12] + "-")
        tmp = Path(tmp_name)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                batch: list[bytes] = []
                pending = 0

                def flush(parts: list[bytes]) -> None:
                    for part in parts:
                        hasher.update(part)
                        out.write(part)

                async for chunk in chunks:
                    written += len(chunk)
                    if size >= 0 and written > size:
                        raise ContentError(f"{what} {digest}: more data than its declared size {size}")
                    batch.append(chunk)
                    pending += len(chunk)
                    if pending >= WRITE_BATCH:
                        await asyncio.to_thread(flush, batch)
                        batch, pending = [], 0
                await asyncio.to_thread(flush, batch)

                def sync() -> None:
                    out.flush()
                    os.fsync(out.fileno())

                await asyncio.to_thread(sync)
            if size >= 0 and written != size:
                raise ContentError(f"{what} {digest}: truncated: got {written} of {size} bytes")
            actual = hasher.hexdigest()
            if actual != expected:
                raise ContentError(f"{what} {digest}: digest mismatch: content is {algorithm}:{actual}")
            target = self.path(digest)
            await asyncio.to_thread(os.replace, tmp, target)
            return target
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.shield(asyncio.to_thread(tmp.unlink))

    async def put_bytes(self, digest: str, data: bytes, what: str = "blob") -> Path:
        async def once() -> AsyncIterator[bytes]:
            yield data

        return await self.write(digest, len(data), once(), what)
