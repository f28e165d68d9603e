"""The API's wire shape is pinned, and the committed generated code matches the .proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycri.api import admin_pb2, api_pb2, generate, wire

GOLDEN = Path(__file__).parent / "golden" / "api_wire.txt"


def test_wire_shape_matches_golden() -> None:
    assert wire.wire_shape() == GOLDEN.read_text(), (
        "runtime.v1 wire shape changed: if on purpose (a new upstream field), check it against upstream with "
        "`python -m pycri.api.wire UPSTREAM.proto` and refresh tests/unit/golden/api_wire.txt"
    )


def test_proto_source_compiles_to_the_same_shape() -> None:
    assert wire.compile_shape(generate.PROTO) == wire.wire_shape()


def test_generated_modules_are_up_to_date(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    for name in generate.GENERATED:
        assert (tmp_path / name).read_text() == (generate.API_DIR / name).read_text(), (
            f"pycri/api/{name} is stale: run `python -m pycri.api.generate`"
        )


def test_generate_covers_both_protos() -> None:
    assert set(generate.GENERATED) == {
        f"{stem}{suffix}" for stem in ("api", "admin") for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
    }


def test_admin_api_stands_alone() -> None:
    # pycri's own service: its own package, importing nothing, so runtime.v1's wire shape never depends on it.
    assert admin_pb2.DESCRIPTOR.package == "pycri.admin.v1"
    assert list(admin_pb2.DESCRIPTOR.dependencies) == []
    methods = admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods_by_name
    assert set(methods) == {"PullImage", "ImportImages"}
    assert methods["PullImage"].server_streaming
    assert not methods["ImportImages"].server_streaming


def test_services_and_rpc_count() -> None:
    services = api_pb2.DESCRIPTOR.services_by_name
    assert set(services) == {"RuntimeService", "ImageService"}
    assert api_pb2.DESCRIPTOR.package == "runtime.v1"
    assert len(services["RuntimeService"].methods) + len(services["ImageService"].methods) == 43


def test_shape_sees_a_changed_field_number(tmp_path: Path) -> None:
    changed = generate.PROTO.read_text().replace("string runtime_api_version = 4;", "string runtime_api_version = 5;")
    assert changed != generate.PROTO.read_text()
    other = tmp_path / "api.proto"
    other.write_text(changed)
    diff = wire.compile_shape(other)
    assert "runtime.v1.VersionResponse.runtime_api_version = 5" in diff
    assert diff != wire.wire_shape()


@pytest.mark.parametrize(
    ("message", "field", "number"),
    [
        ("Mount", "mount_options", 11),
        ("Mount", "image_sub_path", 10),
        ("RuntimeFeatures", "mount_options", 3),
        ("PodSandboxStatusResponse", "timestamp", 4),
    ],
)
def test_newest_upstream_fields_present(message: str, field: str, number: int) -> None:
    assert api_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_unknown_fields_are_ignored_and_missing_fields_default() -> None:
    # A newer client may send a field we do not know (number 99 here): it must parse.
    newer = api_pb2.VersionRequest(version="0.1.0").SerializeToString() + bytes([0x98, 0x06, 0x01])  # field 99, varint 1
    parsed = api_pb2.VersionRequest.FromString(newer)
    assert parsed.version == "0.1.0"
    # An older client leaves fields out: they read as their defaults.
    status = api_pb2.StatusRequest.FromString(b"")
    assert status.verbose is False
