"""NRI's and ttrpc's wire shapes are pinned; the .proto sources compile to what is committed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycri.api import generate, wire
from pycri.nri import api_pb2, ttrpc_pb2

GOLDEN = Path(__file__).parent / "golden"


def test_nri_wire_shape_matches_golden() -> None:
    # tests/unit/golden/nri_api_wire.txt was checked against containerd/nri's pkg/api/api.proto
    # with `wire.compile_shape`: identical. Refresh it only after comparing with upstream again.
    assert wire.module_shape(api_pb2.DESCRIPTOR) == (GOLDEN / "nri_api_wire.txt").read_text()


def test_ttrpc_wire_shape_matches_golden() -> None:
    assert wire.module_shape(ttrpc_pb2.DESCRIPTOR) == (GOLDEN / "ttrpc_wire.txt").read_text()


@pytest.mark.parametrize(("proto", "module"), [(generate.NRI_PROTO, api_pb2), (generate.TTRPC_PROTO, ttrpc_pb2)])
def test_proto_sources_compile_to_the_committed_shape(proto: Path, module: object) -> None:
    assert wire.compile_shape(proto) == wire.module_shape(module.DESCRIPTOR)  # type: ignore[attr-defined]


def test_nri_services_and_package() -> None:
    assert api_pb2.DESCRIPTOR.package == "nri.pkg.api.v1alpha1"
    services = api_pb2.DESCRIPTOR.services_by_name
    assert set(services["Runtime"].methods_by_name) == {"RegisterPlugin", "UpdateContainers"}
    assert set(services["Plugin"].methods_by_name) == {
        "Configure",
        "Synchronize",
        "Shutdown",
        "RunPodSandbox",
        "UpdatePodSandbox",
        "PostUpdatePodSandbox",
        "StopPodSandbox",
        "RemovePodSandbox",
        "CreateContainer",
        "PostCreateContainer",
        "StartContainer",
        "PostStartContainer",
        "UpdateContainer",
        "PostUpdateContainer",
        "StopContainer",
        "RemoveContainer",
        "StateChange",
        "ValidateContainerAdjustment",
    }
    assert list(api_pb2.DESCRIPTOR.dependencies) == []


def test_ttrpc_envelope_field_numbers() -> None:
    request = ttrpc_pb2.Request.DESCRIPTOR.fields_by_name
    assert [(name, request[name].number) for name in ("service", "method", "payload", "timeout_nano", "metadata")] == [
        ("service", 1),
        ("method", 2),
        ("payload", 3),
        ("timeout_nano", 4),
        ("metadata", 5),
    ]
    # Response.status is google.rpc.Status on the wire: code 1, message 2, details 3.
    status = ttrpc_pb2.Status.DESCRIPTOR.fields_by_name
    assert (status["code"].number, status["message"].number, status["details"].number) == (1, 2, 3)
    assert ttrpc_pb2.Response.DESCRIPTOR.fields_by_name["status"].number == 1


def test_known_bytes_of_a_ttrpc_request_and_response() -> None:
    # What Go's ttrpc client sends for Configure with a 2 s deadline, field by field.
    request = ttrpc_pb2.Request(service="s", method="m", payload=b"\x01", timeout_nano=2_000_000_000)
    assert request.SerializeToString() == b"\n\x01s\x12\x01m\x1a\x01\x01 \x80\xa8\xd6\xb9\x07"
    failed = ttrpc_pb2.Response(status=ttrpc_pb2.Status(code=12, message="method X"))
    assert failed.SerializeToString() == b"\n\x0c\x08\x0c\x12\x08method X"
