"""Unpacked layers, one directory per chain ID, ready to be overlayfs lower dirs.

``layers/<chain hex>`` exists only when complete: a layer is unpacked into
``layers/.tmp-*``, its uncompressed digest checked against the image config's
diff ID, then renamed into place. A failed or cancelled unpack leaves nothing.
Two pulls needing the same chain ID share one unpack. Unpacking runs in the
store's own ``UNPACK_THREADS`` threads, so that a large pull never takes the
threads every other blocking call of the daemon runs in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycri import errors
from pycri.host.tree import remove_tree
from pycri.images import unpack

log = logging.getLogger("pycri.images")

UNPACK_THREADS = 2


class LayerError(RuntimeError):
    pass


class _Abandoned(Exception):
    """The caller unpacking a layer was cancelled before it finished; a waiter takes over."""


def _hex(chain_id: str) -> str:
    return chain_id.partition(":")[2]


class LayerStore:
    def __init__(self, root: Path, *, limits: unpack.Limits | None = None) -> None:
        self.root = root
        self.limits = limits or unpack.Limits()
        self._inflight: dict[str, asyncio.Future[Path]] = {}
        self._threads: ThreadPoolExecutor | None = None
        self._closed = False

    async def close(self) -> None:
        """Take no more unpacks: queued ones are cancelled, running ones finish (a thread cannot be stopped)."""
        self._closed = True
        threads, self._threads = self._threads, None
        if threads is not None:
            threads.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(threads.shutdown)

    def _pool(self) -> ThreadPoolExecutor:
        if self._closed:
            raise errors.Unavailable("images: the layer store is closed (pycri is stopping)")
        if self._threads is None:
            self._threads = ThreadPoolExecutor(max_workers=UNPACK_THREADS, thread_name_prefix="pycri-unpack")
        return self._threads

    def prepare(self) -> None:
        """Create the directory and drop unpacks interrupted by a crash (sync: start-up).

        A leftover that cannot be removed is logged and left for the next start: it never stops this one.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(self.root):
            if name.startswith(".tmp-"):
                self._remove(self.root / name)

    @staticmethod
    def _remove(path: Path) -> None:
        try:
            failures = remove_tree(path, ignore_errors=True)
        except Exception as exc:
            log.warning("cannot remove %s: %s", path, exc)
            return
        if failures:
            log.warning("cannot remove all of %s (%d failures), first: %s", path, len(failures), failures[0])

    def path(self, chain_id: str) -> Path:
        return self.root / _hex(chain_id)

    def has(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def chain_ids(self) -> set[str]:
        return {f"sha256:{name}" for name in os.listdir(self.root) if not name.startswith(".")}

    def in_flight(self) -> set[str]:
        return set(self._inflight)

    def delete(self, chain_id: str) -> None:
        """Remove a layer: renamed aside first, so a half-deleted layer never looks complete."""
        target = self.path(chain_id)
        if not target.is_dir():
            return
        doomed = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-rm-"))
        os.replace(target, doomed / "layer")
        self._remove(doomed)

    def _unpack(self, chain_id: str, diff_id: str, blob: Path, media_type: str) -> Path:
        target = self.path(chain_id)
        if target.is_dir():
            return target
        work = Path(tempfile.mkdtemp(dir=self.root, prefix=".tmp-"))
        try:
            dest = work / "fs"
            dest.mkdir()
            with open(blob, "rb") as raw:
                reader = unpack.DigestingReader(unpack.open_layer(raw, media_type))
                try:
                    unpack.unpack_layer(reader, dest, limits=self.limits)
                except MemoryError:
                    raise unpack.UnpackLimitError("out of memory unpacking the layer") from None
                while reader.read(1 << 20):
                    pass
            actual = "sha256:" + reader.hexdigest()
            if actual != diff_id:
                raise LayerError(f"layer {blob.name}: uncompressed digest {actual} does not match the config's diff ID {diff_id}")
            os.chmod(dest, 0o755)
            try:
                os.replace(dest, target)
            except OSError:
                if not target.is_dir():  # someone else finished it first: fine
                    raise
            return target
        finally:
            self._remove(work)

    async def ensure(self, chain_id: str, diff_id: str, blob: Path, media_type: str) -> Path:
        while (pending := self._inflight.get(chain_id)) is not None:
            try:
                return await asyncio.shield(pending)
            except _Abandoned:
                continue
        loop = asyncio.get_running_loop()
        threads = self._pool()
        future: asyncio.Future[Path] = loop.create_future()
        self._inflight[chain_id] = future
        work = loop.run_in_executor(threads, self._unpack, chain_id, diff_id, blob, media_type)
        try:
            try:
                path = await asyncio.shield(work)
            except asyncio.CancelledError:
                # A thread cannot be interrupted: let it finish, so that the caller's clean-up
                # (which removes layers no image uses) sees every layer this pull produced,
                # and whoever else waits for this layer gets it.
                while not work.done():
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.shield(work)
                if not work.cancelled() and work.exception() is None and not future.done():
                    future.set_result(work.result())
                raise
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc if isinstance(exc, Exception) else _Abandoned(chain_id))
                future.exception()
            raise
        else:
            future.set_result(path)
            return path
        finally:
            del self._inflight[chain_id]
