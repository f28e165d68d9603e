"""Show a running pycri at work: run a pod, show its state and IP, ping it, remove it.

.venv/bin/python scripts/demo_pod.py [--socket /run/pycri/pycri.sock] [--keep]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--socket", default="/run/pycri/pycri.sock")
    parser.add_argument("--keep", action="store_true", help="leave the pod running")
    args = parser.parse_args()
    config = api.PodSandboxConfig(
        metadata=api.PodSandboxMetadata(name="pycri-demo", namespace="default", uid=f"demo-{int(time.time())}"),
        hostname="pycri-demo",
        labels={"app": "pycri-demo"},
    )
    with Client(args.socket, timeout=60) as cri:
        started = time.monotonic()
        try:
            pod_id = cri.run_pod_sandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
        except ClientError as exc:
            print(f"demo: RunPodSandbox failed: {exc}", file=sys.stderr)
            return 1
        elapsed = (time.monotonic() - started) * 1000
        response = cri.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
        status, info = response.status, json.loads(response.info["info"])
        print(f"pod {pod_id[:13]} {api.PodSandboxState.Name(status.state)} in {elapsed:.0f} ms")
        print(f"  ip {status.network.ip}, infra pid {info['pid']} ({' '.join(info['runtimeSpec']['process']['args'])})")
        if status.network.ip:
            ping = subprocess.run(["ping", "-c1", "-W2", status.network.ip], capture_output=True, text=True)
            print("  ping: " + (ping.stdout.strip().splitlines()[-2] if ping.returncode == 0 else "no answer"))
        if not args.keep:
            cri.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            cri.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
            print("  stopped and removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
