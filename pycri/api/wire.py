"""The wire shape of the CRI API as plain text, for comparing two definitions.

``wire_shape()`` lists every service, method, message, field (number, type,
label, type name, oneof, packed/deprecated options) and enum value of
``runtime.v1``, one per line and sorted, ignoring comments and field order in
the source. Two .proto files with the same shape are interchangeable on the
wire. ``python -m pycri.api.wire UPSTREAM.proto`` compiles another api.proto
(for example upstream's kubernetes/cri-api one) and prints the differences from
ours; it exits 1 when there are any.
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import FileDescriptor

from pycri.api import api_pb2


def _field_line(prefix: str, f: descriptor_pb2.FieldDescriptorProto) -> str:
    label = descriptor_pb2.FieldDescriptorProto.Label.Name(f.label)
    ftype = descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)
    extra = []
    if f.HasField("oneof_index"):
        extra.append(f"oneof={f.oneof_index}")
    if f.proto3_optional:
        extra.append("proto3_optional")
    if f.options.HasField("packed"):
        extra.append(f"packed={f.options.packed}")
    if f.options.deprecated:
        extra.append("deprecated")
    return f"{prefix}.{f.name} = {f.number} {label} {ftype} {f.type_name} {' '.join(extra)}".rstrip()


def _message_lines(prefix: str, m: descriptor_pb2.DescriptorProto) -> list[str]:
    name = f"{prefix}.{m.name}"
    lines = [f"message {name}"]
    lines += [f"oneof {name}#{i} {o.name}" for i, o in enumerate(m.oneof_decl)]
    lines += [_field_line(name, f) for f in m.field]
    if m.options.map_entry:
        lines.append(f"map_entry {name}")
    for nested in m.nested_type:
        lines += _message_lines(name, nested)
    for enum in m.enum_type:
        lines += _enum_lines(name, enum)
    return lines


def _enum_lines(prefix: str, e: descriptor_pb2.EnumDescriptorProto) -> list[str]:
    name = f"{prefix}.{e.name}"
    return [f"enum {name}"] + [f"{name}.{v.name} = {v.number}" for v in e.value]


def shape_of(fdp: descriptor_pb2.FileDescriptorProto) -> str:
    """The wire shape of one compiled .proto file."""
    pkg = fdp.package
    lines = [f"package {pkg}", f"syntax {fdp.syntax or 'proto2'}"]
    for m in fdp.message_type:
        lines += _message_lines(pkg, m)
    for e in fdp.enum_type:
        lines += _enum_lines(pkg, e)
    for s in fdp.service:
        lines.append(f"service {pkg}.{s.name}")
        for meth in s.method:
            kind = ("stream " if meth.client_streaming else "") + meth.input_type
            out = ("stream " if meth.server_streaming else "") + meth.output_type
            lines.append(f"rpc {pkg}.{s.name}.{meth.name}({kind}) returns ({out})")
    return "\n".join(sorted(lines)) + "\n"


def module_shape(file: FileDescriptor) -> str:
    """The wire shape of a compiled .proto's descriptor (a ``*_pb2`` module's ``DESCRIPTOR``)."""
    fdp = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(fdp)
    return shape_of(fdp)


def wire_shape() -> str:
    """The wire shape of pycri's own compiled api.proto."""
    return module_shape(api_pb2.DESCRIPTOR)


def compile_shape(proto: Path) -> str:
    """Compile another api.proto with grpcio-tools and return its wire shape."""
    from grpc_tools import protoc  # dev-only dependency

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        rc = protoc.main(
            [
                "protoc",
                f"--proto_path={proto.resolve().parent}",
                f"--proto_path={Path(protoc.__file__).parent / '_proto'}",  # google/protobuf/*.proto
                f"--descriptor_set_out={out}",
                str(proto.resolve()),
            ]
        )
        if rc != 0:
            raise RuntimeError(f"protoc could not compile {proto}")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return shape_of(fds.file[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare another api.proto's wire shape with pycri's.")
    parser.add_argument("proto", type=Path, nargs="?", help="the .proto to compare (omit to print ours)")
    args = parser.parse_args(argv)
    ours = wire_shape()
    if args.proto is None:
        sys.stdout.write(ours)
        return 0
    theirs = compile_shape(args.proto)
    diff = list(difflib.unified_diff(theirs.splitlines(), ours.splitlines(), str(args.proto), "pycri", lineterm=""))
    for line in diff:
        print(line)
    if not diff:
        print(f"identical wire shape: {len(ours.splitlines())} lines")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
