"""Regenerate the Python modules of pycri's .proto files.

Run ``python -m pycri.api.generate`` from anywhere. For ``pycri/api/api.proto`` and
``pycri/api/admin.proto`` (gRPC services) it writes ``*_pb2.py``, ``*_pb2_grpc.py`` and
their ``.pyi`` stubs (mypy-protobuf); for NRI's ``pycri/nri/api.proto`` and
``pycri/nri/ttrpc.proto`` (carried by ttrpc, not gRPC) only ``*_pb2.py`` and ``.pyi``.
Each lands beside its .proto file. ``GENERATED`` names them relative to the ``pycri``
package directory (``api/api_pb2.py``, ``nri/ttrpc_pb2.pyi``, ...).
``--out DIR`` writes that tree under DIR instead; ``--check`` regenerates into a temporary
directory and lists how the committed modules differ (exit 1 if they do). Needs the
``dev`` extra (grpcio-tools, mypy-protobuf), at the versions of requirements/dev.txt.

What the check compares is what the modules mean: each ``_pb2.py``'s file descriptor
(parsed, not its bytes), and every other line of every generated file, with the
generator's version stamps (``GRPC_GENERATED_VERSION``, the protobuf gencode version)
and the descriptor's byte offsets masked. Those stamps follow the generator release;
tests/unit/test_api_wire.py checks them against the lock file and pyproject's bounds
instead, so a new patch release of a tool can never turn the check red by itself.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
PKG_DIR = API_DIR.parent  # pycri/
ROOT = PKG_DIR.parent
PROTO = API_DIR / "api.proto"  # runtime.v1, the CRI
ADMIN_PROTO = API_DIR / "admin.proto"  # pycri.admin.v1, pycri's own
NRI_PROTO = PKG_DIR / "nri" / "api.proto"  # nri.pkg.api.v1alpha1, containerd's NRI
TTRPC_PROTO = PKG_DIR / "nri" / "ttrpc.proto"  # ttrpc's Request/Response envelope
_GRPC = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
_MESSAGES = ("_pb2.py", "_pb2.pyi")
TARGETS = ((PROTO, _GRPC), (ADMIN_PROTO, _GRPC), (NRI_PROTO, _MESSAGES), (TTRPC_PROTO, _MESSAGES))
PROTOS = tuple(proto for proto, _ in TARGETS)
GENERATED = tuple(
    str(proto.parent.relative_to(PKG_DIR) / f"{proto.stem}{suffix}") for proto, suffixes in TARGETS for suffix in suffixes
)


def generate(out: Path) -> list[Path]:
    """Compile the .proto files into ``out``; returns the files written."""
    from grpc_tools import protoc  # dev-only dependency

    bindir = Path(sys.executable).parent
    plugins = [
        f"--plugin=protoc-gen-{name}={shutil.which('protoc-gen-' + name, path=str(bindir)) or 'protoc-gen-' + name}"
        for name in ("mypy", "mypy_grpc")
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            *plugins,
            f"--proto_path={ROOT}",
            f"--proto_path={Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *(str(proto.relative_to(ROOT)) for proto in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError("protoc failed on " + ", ".join(str(proto) for proto in PROTOS))
        written = []
        for name in GENERATED:
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / "pycri" / name, target)
            written.append(target)
        return written


_STAMPS = (
    (re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M), "GRPC_GENERATED_VERSION = <version>"),
    (re.compile(r"^# Protobuf Python Version: .*$", re.M), "# Protobuf Python Version: <version>"),
    (
        re.compile(r"(ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,)\s*\d+,\s*\d+,\s*\d+,"),
        r"\1 <version>,",
    ),
    (re.compile(r"^(_globals\[.*\]\._serialized_(?:start|end))=\d+$", re.M), r"\1=<offset>"),
    (re.compile(r"AddSerializedFile\(b'.*'\)$", re.M), "AddSerializedFile(<descriptor>)"),
)


def serialized_descriptor(source: str) -> bytes:
    """The serialized FileDescriptorProto a generated ``_pb2.py`` registers."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "AddSerializedFile":
            value = ast.literal_eval(node.args[0])
            if isinstance(value, bytes):
                return value
    raise ValueError("no AddSerializedFile(b'...') call in the module")


def masked(source: str) -> str:
    """``source`` with the generator's version stamps and descriptor bytes replaced by placeholders."""
    for pattern, replacement in _STAMPS:
        source = pattern.sub(replacement, source)
    return source


def differences(fresh_dir: Path, committed_dir: Path = PKG_DIR) -> list[str]:
    """How the committed generated files differ in meaning from freshly generated ones; [] when they match."""
    from google.protobuf import descriptor_pb2

    found = []
    for name in GENERATED:
        fresh, committed = (fresh_dir / name).read_text(), (committed_dir / name).read_text()
        if name.endswith("_pb2.py"):
            a, b = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
            a.ParseFromString(serialized_descriptor(fresh))
            b.ParseFromString(serialized_descriptor(committed))
            if a != b:
                found.append(f"{name}: the file descriptor differs from its .proto's")
        if masked(fresh) != masked(committed):
            found.append(f"{name}: the generated code differs")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PKG_DIR, help="package directory to write the tree under")
    parser.add_argument("--check", action="store_true", help="only compare the committed modules with fresh ones")
    args = parser.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            generate(Path(tmp))
            found = differences(Path(tmp))
        for line in found:
            print(f"stale: {line}; run `python -m pycri.api.generate`")
        return 1 if found else 0
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
