#!/usr/bin/env bash
# Installs pycri and starts it: under systemd when the machine runs systemd,
# otherwise as a background process logging to /var/log/pycri.log. Then shows
# it answering. Run as root. Idempotent: a running daemon is left as it is.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/scripts/setup.sh"
PYCRI=$VENV/bin/pycri
CONFIG=/etc/pycri/pycri.toml

if [[ ! -e $CONFIG ]]; then
	log "writing the default configuration to $CONFIG"
	mkdir -p "$(dirname "$CONFIG")"
	"$PYCRI" config default >"$CONFIG"
fi
if [[ ! -e /etc/crictl.yaml ]]; then
	log "pointing crictl at pycri (/etc/crictl.yaml)"
	printf 'runtime-endpoint: unix:///run/pycri/pycri.sock\nimage-endpoint: unix:///run/pycri/pycri.sock\ntimeout: 30\n' >/etc/crictl.yaml
fi

"$PYCRI" doctor || log "doctor found problems (above); pycri starts anyway and reports them in its status"

if "$PYCRI" version --timeout 2 >/dev/null 2>&1; then
	log "pycri is already running"
elif [[ -d /run/systemd/system ]]; then
	log "installing and starting pycri.service"
	sed "s|@PYCRI@|$PYCRI|" "$ROOT/contrib/systemd/pycri.service" >/etc/systemd/system/pycri.service
	systemctl daemon-reload
	systemctl enable --now pycri.service
else
	log "no systemd here: starting the daemon in the background (log: /var/log/pycri.log)"
	nohup setsid "$PYCRI" daemon >>/var/log/pycri.log 2>&1 </dev/null &
fi
for _ in $(seq 100); do
	"$PYCRI" version --timeout 1 >/dev/null 2>&1 && break
	sleep 0.1
done
"$PYCRI" version
"$PYCRI" info
echo
echo "A pod, run through pycri:"
"$VENV/bin/python" "$ROOT/scripts/demo_pod.py"
