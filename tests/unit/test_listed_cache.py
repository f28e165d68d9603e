"""pycri.server.rpc: list answers joined from cached element encodings, and the cache's upkeep."""

from __future__ import annotations

import pytest
from google.protobuf.message import Message

from pycri.api import api_pb2 as api
from pycri.server.rpc import ListedCache, encoded, pages, repeated_element


def listed(name: str) -> api.Container:
    return api.Container(id=name, labels={"app": name}, annotations={"a": "b" * 200})


@pytest.mark.parametrize(
    ("response", "field"),
    [
        (api.ListContainersResponse, "containers"),
        (api.StreamContainersResponse, "containers"),
        (api.ListPodSandboxResponse, "items"),
        (api.StreamPodSandboxesResponse, "pod_sandboxes"),
    ],
)
def test_joined_elements_are_the_response(response: type[Message], field: str) -> None:
    """What the list RPCs send is byte for byte what protobuf makes of the same response."""
    item_type = api.Container if "Container" in response.__name__ else api.PodSandbox
    items = [item_type(id=f"id-{i}" * (i + 1), labels={"k": "v" * i}) for i in range(130)]  # lengths past one varint byte
    expected = response(**{field: items})
    assert response.DESCRIPTOR.fields_by_name[field].number == 1
    assert bytes(encoded(repeated_element(m) for m in items)) == expected.SerializeToString()
    assert response.FromString(encoded(repeated_element(m) for m in items)) == expected
    assert encoded([]) == b""


def test_reused_while_the_state_holds_and_rebuilt_after() -> None:
    built: list[str] = []

    def build(obj: str) -> api.Container:
        built.append(obj)
        return listed(obj.upper())

    cache: ListedCache[str] = ListedCache(build)
    assert api.ListContainersResponse.FromString(cache.get("a", "running", "x")).containers[0].id == "X"
    assert cache.get("a", "running", "changed") == repeated_element(listed("X"))  # same state: kept
    assert cache.get("a", "exited", "y") == repeated_element(listed("Y"))
    assert built == ["x", "y"]


def test_pruned_only_when_outgrown() -> None:
    cache: ListedCache[str] = ListedCache(listed)
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
    assert cache.get("id-0", "s", "rebuilt") == repeated_element(listed("0"))
    assert cache.get("id-1", "s", "rebuilt") == repeated_element(listed("rebuilt"))


def test_pages() -> None:
    assert [list(p) for p in pages([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    assert list(pages([], 2)) == []
