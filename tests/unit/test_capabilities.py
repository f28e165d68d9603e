from __future__ import annotations

from pathlib import Path

import pytest

from pycri.errors import FailedPrecondition, InvalidArgument
from pycri.oci import capabilities as caps
from pycri.oci.spec import DEFAULT_CAPABILITIES

FIELD = "config.linux.security_context.capabilities"


def ordered(names: set[str] | list[str]) -> list[str]:
    return [c for c in caps.ALL_CAPABILITIES if c in set(names)]


def test_known_capabilities_in_kernel_order() -> None:
    assert caps.KNOWN_CAPABILITIES[0] == "CAP_CHOWN"
    assert caps.KNOWN_CAPABILITIES[12] == "CAP_NET_ADMIN"
    assert caps.KNOWN_CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert caps.KNOWN_CAPABILITIES[39] == "CAP_BPF"
    assert caps.KNOWN_CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(set(caps.KNOWN_CAPABILITIES)) == 41


def test_all_capabilities_bounded_by_kernel(tmp_path: Path) -> None:
    last = int(Path(caps.CAP_LAST_CAP_PATH).read_text())
    assert caps.KNOWN_CAPABILITIES[: last + 1] == caps.ALL_CAPABILITIES
    old = tmp_path / "cap_last_cap"
    old.write_text("37\n")
    assert caps.kernel_capabilities(str(old))[-1] == "CAP_AUDIT_READ"
    assert caps.kernel_capabilities(str(tmp_path / "missing")) == caps.KNOWN_CAPABILITIES


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NET_ADMIN", "CAP_NET_ADMIN"),
        ("net_admin", "CAP_NET_ADMIN"),
        ("CAP_NET_ADMIN", "CAP_NET_ADMIN"),
        ("cap_sys_admin", "CAP_SYS_ADMIN"),
        ("ALL", "ALL"),
        ("all", "ALL"),
    ],
)
def test_normalize(name: str, expected: str) -> None:
    assert caps.normalize(name, FIELD) == expected


@pytest.mark.parametrize("name", ["", "CAP_", "NET_ADMINN", "CAP_ALL", "SUPERPOWER"])
def test_normalize_unknown(name: str) -> None:
    with pytest.raises(InvalidArgument, match=FIELD) as info:
        caps.normalize(name, FIELD)
    assert repr(name) in info.value.message


def resolve(
    add: list[str] | None = None,
    drop: list[str] | None = None,
    ambient: list[str] | None = None,
    *,
    privileged: bool = False,
    root: bool = True,
) -> dict[str, list[str]]:
    return caps.resolve(add or [], drop or [], ambient or [], privileged=privileged, run_as_root=root, field=FIELD)


def test_defaults() -> None:
    out = resolve()
    assert set(out) == {"bounding", "effective", "permitted", "inheritable", "ambient"}
    assert out["bounding"] == out["effective"] == out["permitted"] == ordered(DEFAULT_CAPABILITIES)
    assert out["inheritable"] == out["ambient"] == []


def test_add_and_drop() -> None:
    out = resolve(add=["NET_ADMIN", "sys_time", "CAP_NET_ADMIN"], drop=["chown", "MKNOD"])
    expected = ordered([*DEFAULT_CAPABILITIES, "CAP_NET_ADMIN", "CAP_SYS_TIME"])
    expected.remove("CAP_CHOWN")
    expected.remove("CAP_MKNOD")
    assert out["bounding"] == out["effective"] == out["permitted"] == expected
    assert out["bounding"].index("CAP_NET_ADMIN") < out["bounding"].index("CAP_SYS_TIME")  # kernel order


def test_add_all_then_drop() -> None:
    out = resolve(add=["ALL"], drop=["CHOWN"])
    held = caps.current_bounding()
    assert out["bounding"] == [c for c in caps.ALL_CAPABILITIES if c in held and c != "CAP_CHOWN"]


def test_drop_all_then_add() -> None:
    out = resolve(add=["NET_BIND_SERVICE"], drop=["ALL"])
    assert out["bounding"] == out["effective"] == out["permitted"] == ["CAP_NET_BIND_SERVICE"]
    assert resolve(drop=["all"])["bounding"] == []
    # Both ALL: add ALL, drop ALL, then the individual adds.
    assert resolve(add=["ALL", "KILL"], drop=["ALL"])["bounding"] == ["CAP_KILL"]


def test_privileged_gets_everything() -> None:
    out = resolve(drop=["ALL"], privileged=True)
    held = caps.current_bounding()
    assert out["bounding"] == out["effective"] == out["permitted"] == [c for c in caps.ALL_CAPABILITIES if c in held]
    assert "CAP_SYS_ADMIN" in out["effective"]


def test_all_means_all_this_process_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(caps, "current_bounding", lambda: set(DEFAULT_CAPABILITIES) | {"CAP_SYS_ADMIN"})
    assert resolve(privileged=True)["bounding"] == ordered([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    assert resolve(add=["ALL"])["bounding"] == ordered([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    with pytest.raises(FailedPrecondition, match=r"CAP_SYS_RESOURCE requested, but pycri does not hold it itself"):
        resolve(add=["SYS_RESOURCE"])


def test_status_parsing(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapBnd:\t0000000000000005\n")
    assert caps.current_bounding(str(status)) == {"CAP_CHOWN", "CAP_DAC_READ_SEARCH"}


def test_non_root_user() -> None:
    out = resolve(add=["NET_ADMIN"], root=False)
    assert out["bounding"] == ordered([*DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"])
    assert out["effective"] == out["permitted"] == out["inheritable"] == out["ambient"] == []


def test_non_root_user_with_ambient() -> None:
    out = resolve(drop=["ALL"], ambient=["net_bind_service", "NET_RAW"], root=False)
    both = ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE"]
    assert ordered(both) == ["CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    for key in ("bounding", "effective", "permitted", "inheritable", "ambient"):
        assert out[key] == ordered(both), key


def test_root_with_ambient() -> None:
    out = resolve(ambient=["NET_ADMIN"])
    assert out["ambient"] == out["inheritable"] == ["CAP_NET_ADMIN"]
    assert out["effective"] == ordered([*DEFAULT_CAPABILITIES, "CAP_NET_ADMIN"])


@pytest.mark.parametrize(
    ("add", "drop", "ambient", "which"),
    [
        (["NOPE"], [], [], "add_capabilities"),
        ([], ["NOPE"], [], "drop_capabilities"),
        ([], [], ["NOPE"], "add_ambient_capabilities"),
        ([], [], ["ALL"], "add_ambient_capabilities"),
    ],
)
def test_invalid(add: list[str], drop: list[str], ambient: list[str], which: str) -> None:
    with pytest.raises(InvalidArgument, match=f"{FIELD}.{which}"):
        resolve(add, drop, ambient)
