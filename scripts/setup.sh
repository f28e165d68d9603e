#!/usr/bin/env bash
# Installs what pycri needs on Debian 12: the runtime's Debian packages and a
# virtual environment (.venv) with pycri and its development tools. Idempotent.
# Sourced by start.sh and test.sh; run it alone to only install.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PYCRI_VENV:-$ROOT/.venv}

# Runtime: OCI runtimes, the per-container monitor, the pod infra process,
# CNI plugins, checkpoints. Tests: docker-registry (a local registry).
PACKAGES=(runc crun conmon catatonit containernetworking-plugins criu iproute2 iptables iputils-ping busybox-static docker-registry python3-venv)

log() { echo "pycri setup: $*" >&2; }

missing=()
for pkg in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
	[[ $(id -u) == 0 ]] || { log "installing ${missing[*]} needs root"; exit 1; }
	log "installing Debian packages: ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The docker-registry package starts a system registry on :5000; the tests run their own.
	if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
		systemctl disable --now docker-registry >/dev/null 2>&1 || true
	fi
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x $VENV/bin/python ]]; then
	log "creating virtual environment $VENV"
	"$PYTHON" -m venv "$VENV"
fi
# Exactly the locked versions (requirements/dev.txt, every package pinned with its hashes; see
# scripts/lock.sh), then pycri itself, editable, with nothing more resolved. The marker holds the
# lock's and pyproject.toml's checksum, so a changed lock reinstalls on the next run.
stamp=$(cat "$ROOT/requirements/dev.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)
if [[ $(cat "$VENV/.pycri-installed" 2>/dev/null) != "$stamp" ]] \
	|| ! "$VENV/bin/python" -c 'import pycri, grpc_tools, pytest, mypy' 2>/dev/null; then
	log "installing the locked dependencies (requirements/dev.txt) and pycri into $VENV"
	"$VENV/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$ROOT/requirements/dev.txt"
	"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$ROOT"
	echo "$stamp" >"$VENV/.pycri-installed"
fi
