"""Clean-ups that failed, retried in the background with a bounded exponential backoff.

When undoing something fails (a CNI DEL, a ``runc delete``, a busy cgroup or mount), the
services keep the object listed in a state kubelet removes again, and hand the clean-up to a
:class:`Retrier`: it runs it again after ``first`` seconds, then after twice as long each
time, never waiting more than ``cap`` seconds, until it succeeds or is cancelled. The daemon
keeps serving meanwhile; every failed attempt is logged with its reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

FIRST_DELAY = 1.0
MAX_DELAY = 60.0


class Retrier:
    def __init__(self, log: logging.Logger, first: float = FIRST_DELAY, cap: float = MAX_DELAY) -> None:
        self.log = log
        self.first = first
        self.cap = cap
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._waiting: set[str] = set()  # keys between attempts (cancelling them interrupts nothing)
        self._stopping: set[str] = set()

    def __contains__(self, key: object) -> bool:
        return key in self._tasks

    def schedule(self, key: str, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        """Retry ``attempt`` (which raises while the clean-up fails) until it succeeds; once per key."""
        if key not in self._tasks:
            self._tasks[key] = asyncio.create_task(self._loop(key, what, attempt), name=f"retry {what}")

    async def _loop(self, key: str, what: str, attempt: Callable[[], Awaitable[None]]) -> None:
        delay = self.first
        try:
            while key not in self._stopping:
                self._waiting.add(key)
                try:
                    await asyncio.sleep(delay)
                finally:
                    self._waiting.discard(key)
                try:
                    await attempt()
                except Exception as exc:
                    delay = min(delay * 2, self.cap)
                    self.log.warning("%s failed again: %s; next attempt in %gs", what, exc, delay)
                else:
                    self.log.info("%s done", what)
                    return
        finally:
            self._tasks.pop(key, None)
            self._stopping.discard(key)

    async def cancel(self, key: str) -> None:
        """Stop retrying ``key``: at once between attempts, else once the attempt under way ends."""
        task = self._tasks.get(key)
        if task is None:
            return
        self._stopping.add(key)
        if key in self._waiting:
            task.cancel()
        await asyncio.gather(asyncio.shield(task), return_exceptions=True)

    async def close(self) -> None:
        """Stop every retry (the daemon is stopping: recovery takes them up at the next start)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
