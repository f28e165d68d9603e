from __future__ import annotations

import re

import pytest

from pycri import errors
from pycri.streaming.tokens import RequestCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_is_good_once() -> None:
    cache: RequestCache[str] = RequestCache(clock=Clock())
    token = cache.insert("exec")
    assert re.fullmatch(r"[A-Za-z0-9_-]{11}", token)
    assert cache.consume(token) == "exec"
    assert cache.consume(token) is None
    assert cache.consume("unknown") is None


def test_tokens_are_distinct() -> None:
    cache: RequestCache[int] = RequestCache(clock=Clock())
    tokens = {cache.insert(i) for i in range(500)}
    assert len(tokens) == 500
    assert len(cache) == 500


def test_a_token_expires_after_its_ttl() -> None:
    clock = Clock()
    cache: RequestCache[str] = RequestCache(ttl=60, clock=clock)
    early, late = cache.insert("early"), None
    clock.now += 30
    late = cache.insert("late")
    clock.now += 30  # early is 60 s old: gone; late is 30 s old
    assert cache.consume(early) is None
    assert len(cache) == 1
    assert cache.consume(late) == "late"


def test_too_many_in_flight_is_resource_exhausted_until_some_expire() -> None:
    clock = Clock()
    cache: RequestCache[int] = RequestCache(ttl=60, max_in_flight=3, clock=clock)
    for i in range(3):
        cache.insert(i)
    with pytest.raises(errors.ResourceExhausted, match=r"in-flight streaming requests \(3\)"):
        cache.insert(4)
    clock.now += 61
    cache.insert(5)
    assert len(cache) == 1
