"""Regenerate the Python modules of ``pycri/api/api.proto`` and ``pycri/api/admin.proto``.

Run ``python -m pycri.api.generate`` from anywhere; it writes ``api_pb2.py``,
``api_pb2_grpc.py``, ``admin_pb2.py``, ``admin_pb2_grpc.py`` and their ``.pyi``
stubs (mypy-protobuf) beside the .proto files.
``--out DIR`` writes them elsewhere (the tests use that to check that the
committed modules are up to date). Needs the ``dev`` extra (grpcio-tools,
mypy-protobuf).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

API_DIR = Path(__file__).resolve().parent
ROOT = API_DIR.parent.parent
PROTO = API_DIR / "api.proto"  # runtime.v1, the CRI
ADMIN_PROTO = API_DIR / "admin.proto"  # pycri.admin.v1, pycri's own
PROTOS = (PROTO, ADMIN_PROTO)
GENERATED = tuple(
    f"{proto.stem}{suffix}" for proto in PROTOS for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")
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
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in GENERATED:
            target = out / name
            shutil.copyfile(Path(tmp) / "pycri" / "api" / name, target)
            written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=API_DIR, help="directory to write to")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
