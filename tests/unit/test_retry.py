"""pycri.retry: failed clean-ups retried in the background with a bounded exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pycri.retry import Retrier

log = logging.getLogger("test.retry")


async def test_retries_with_a_doubling_bounded_delay_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    retrier = Retrier(log, first=0.01, cap=0.04)
    times: list[float] = []
    done = asyncio.Event()

    async def attempt() -> None:
        times.append(time.monotonic())
        if len(times) < 5:
            raise RuntimeError(f"busy {len(times)}")
        done.set()

    start = time.monotonic()
    retrier.schedule("x", "cleaning up x", attempt)
    retrier.schedule("x", "cleaning up x", attempt)  # once per key
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.01)
    assert "x" not in retrier
    gaps = [b - a for a, b in zip([start, *times], times, strict=False)]
    assert len(times) == 5
    assert [round(g, 2) >= d for g, d in zip(gaps, (0.01, 0.02, 0.04, 0.04), strict=False)] == [True] * 4
    assert "cleaning up x failed again: busy 1; next attempt in 0.02s" in caplog.text
    assert "cleaning up x done" in caplog.text


async def test_cancel_between_attempts_and_during_one() -> None:
    retrier = Retrier(log, first=3600)
    retrier.schedule("idle", "idle", asyncio.sleep)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.wait_for(retrier.cancel("idle"), 1)
    assert "idle" not in retrier

    retrier = Retrier(log, first=0)
    running, release = asyncio.Event(), asyncio.Event()
    finished: list[bool] = []

    async def slow() -> None:
        running.set()
        await release.wait()
        finished.append(True)
        raise RuntimeError("still failing")

    retrier.schedule("busy", "busy", slow)
    await running.wait()
    cancelling = asyncio.create_task(retrier.cancel("busy"))
    await asyncio.sleep(0.01)
    assert not cancelling.done(), "the attempt under way is not interrupted"
    release.set()
    await asyncio.wait_for(cancelling, 1)
    assert finished == [True]
    assert "busy" not in retrier


async def test_close_stops_everything() -> None:
    retrier = Retrier(log, first=3600)
    for key in "abc":
        retrier.schedule(key, key, asyncio.sleep)  # type: ignore[arg-type]
    await asyncio.wait_for(retrier.close(), 1)
    assert not any(k in retrier for k in "abc")
