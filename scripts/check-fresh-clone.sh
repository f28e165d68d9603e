#!/usr/bin/env bash
# Proves the committed tree installs and works on a machine that has nothing of ours: clones
# HEAD into a temporary directory, installs into a brand-new virtual environment from the lock
# file (scripts/setup.sh), runs the unit tests there, builds the sdist and the wheel, and installs
# the wheel into a second clean environment (runtime lock only) where `pycri --version` and
# `pycri config default` must work. CI runs it after scripts/test.sh; it tests what is committed,
# not the work tree. Needs the Debian packages setup.sh installs (it installs them if missing).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/pycri-fresh-clone.XXXXXX)
trap 'rm -rf "$work"' EXIT
say() { echo "== fresh clone: $*"; }

say "cloning $(git -C "$ROOT" rev-parse --short HEAD) into $work/src"
git clone -q --no-hardlinks "$ROOT" "$work/src"
say "installing from requirements/dev.txt into a new virtual environment"
PYCRI_VENV=$work/venv bash "$work/src/scripts/setup.sh"
say "unit tests"
(cd "$work/src" && "$work/venv/bin/pytest" -q -p no:cacheprovider tests/unit)

say "building the sdist and the wheel"
"$work/venv/bin/python" -m build -q --no-isolation --outdir "$work/dist" "$work/src" >/dev/null
wheel=$(ls "$work"/dist/pycri-*.whl)
sdist=$(ls "$work"/dist/pycri-*.tar.gz)
"$work/venv/bin/python" - "$wheel" "$sdist" <<'PY'
import sys, tarfile, zipfile
wheel = set(zipfile.ZipFile(sys.argv[1]).namelist())
sdist = {name.split("/", 1)[1] for name in tarfile.open(sys.argv[2]).getnames() if "/" in name}
wanted = ["pycri/api/api.proto", "pycri/api/admin.proto", "pycri/api/api_pb2.py", "pycri/api/api_pb2_grpc.py",
          "pycri/api/api_pb2.pyi", "pycri/nri/api.proto", "pycri/nri/api_pb2.py", "pycri/nri/api_pb2.pyi",
          "pycri/py.typed"]
missing = [f"{kind} lacks {m}" for kind, names in (("wheel", wheel), ("sdist", sdist)) for m in wanted if m not in names]
sys.exit("\n".join(missing) or None)
PY
say "installing $(basename "$wheel") into a clean environment (requirements/runtime.txt)"
python3 -m venv "$work/node"
"$work/node/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$work/src/requirements/runtime.txt"
"$work/node/bin/pip" install -q --disable-pip-version-check --no-deps "$wheel"
"$work/node/bin/pip" check
(cd / && "$work/node/bin/pycri" --version)
(cd / && "$work/node/bin/pycri" config default >"$work/default.toml")
grep -q '^socket = ' "$work/default.toml" || { echo "pycri config default printed no socket key" >&2; exit 1; }
(cd / && "$work/node/bin/python" -c 'from pycri.api import api_pb2, api_pb2_grpc; assert len(api_pb2.DESCRIPTOR.services_by_name) == 2')
say "ok"
