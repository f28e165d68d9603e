#!/usr/bin/env bash
# The full check of pycri: installs what is needed, then lint, types and every test.
# Integration tests start real daemons (and later real containers): run as root.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
echo "== ruff" && "$VENV/bin/ruff" check . && "$VENV/bin/ruff" format --check .
echo "== mypy --strict" && "$VENV/bin/mypy"
echo "== pytest" && exec "$VENV/bin/pytest" -q "$@"
