"""pycri.server.rpc.ListedCache: listed messages reused while an object's state holds, pruned lazily."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.server.rpc import ListedCache, pages


def listed(name: str) -> api.Container:
    return api.Container(id=name)


def test_reused_while_the_state_holds_and_rebuilt_after() -> None:
    built: list[str] = []

    def build(obj: str) -> api.Container:
        built.append(obj)
        return listed(obj.upper())

    cache: ListedCache[str, api.Container] = ListedCache(build)
    assert cache.get("a", "running", "x").id == "X"
    assert cache.get("a", "running", "changed").id == "X"  # same state: the listed message is kept
    assert cache.get("a", "exited", "y").id == "Y"
    assert built == ["x", "y"]


def test_pruned_only_when_outgrown() -> None:
    cache: ListedCache[str, api.Container] = ListedCache(listed)
    calls = []

    def live() -> set[tuple[str, str]]:
        calls.append(1)
        return {("id-0", "s")}

    for i in range(20):
        cache.get(f"id-{i}", "s", str(i))
    cache.prune(10, live)  # 20 entries for 10 objects: not yet worth a sweep
    assert calls == []
    for i in range(20, 40):
        cache.get(f"id-{i}", "s", str(i))
    cache.prune(10, live)
    assert calls == [1]
    assert cache.get("id-0", "s", "rebuilt").id == "0"
    assert cache.get("id-1", "s", "rebuilt").id == "rebuilt"


def test_pages() -> None:
    assert [list(p) for p in pages([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(pages([], 2)) == []
