#!/usr/bin/env bash
# Refreshes the lock files from pyproject.toml's ranges: requirements/runtime.txt (what a node
# needs to run pycri) and requirements/dev.txt (that plus the development tools: what setup.sh,
# and so CI, installs). Every package is pinned with its hashes. pip-tools runs from a throw-away
# virtual environment, pinned here, so the result does not depend on what the machine has.
#
#   scripts/lock.sh                    keep every pin that still satisfies pyproject.toml
#   scripts/lock.sh --upgrade          move every package to its newest release
#   scripts/lock.sh --upgrade-package grpcio-tools   move one package (repeatable)
#
# After a change of grpcio-tools or mypy-protobuf, regenerate pycri/api (README, "The API").
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PIP_TOOLS_VERSION=7.7.0
tools=$(mktemp -d)
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/pip" install -q --disable-pip-version-check "pip-tools==$PIP_TOOLS_VERSION"
cd "$ROOT"
common=(--quiet --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links
	--resolver=backtracking --no-build-isolation "$@")
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tools/venv/bin/pip-compile" "${common[@]}" \
	--output-file requirements/runtime.txt pyproject.toml
CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$tools/venv/bin/pip-compile" "${common[@]}" --extra dev \
	--output-file requirements/dev.txt pyproject.toml
echo "requirements/runtime.txt and requirements/dev.txt written"
