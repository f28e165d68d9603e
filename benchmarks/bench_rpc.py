"""Round trips of the RPCs that need no containers: Version and Status.

    python -m benchmarks.bench_rpc [--count 5000] [--containerd unix:///run/containerd-ref/containerd.sock]

Starts a pycri daemon on a temporary socket (log level info, as in production)
and times calls from the blocking Python client, p50/p99 over ``--count``
calls. When containerd answers on the given endpoint (default: the reference
one of ../shared/tools/containerd-reference.sh, if running) the same calls go
to it with the same client, and the ratios are printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks.common import Result, containerd_endpoint, measure, report
from pycri.api import api_pb2 as api
from pycri.client import Client, UnimplementedError
from pycri.testing import DaemonProcess


def run_suite(socket: str, count: int) -> list[Result]:
    with Client(socket, timeout=10) as client:
        version = api.VersionRequest(version="0.1.0")
        status = api.StatusRequest()
        calls: list[tuple[str, Callable[[], object]]] = [
            ("Version", lambda: client.version(version)),
            ("Status", lambda: client.status(status)),
            ("RuntimeConfig", lambda: client.runtime_config()),
        ]
        results = []
        for name, call in calls:
            try:
                results.append(measure(name, call, count))
            except UnimplementedError:
                print(f"{socket}: {name} is not implemented there; skipped")
        return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    args = parser.parse_args(argv)
    daemon = DaemonProcess.temporary()
    daemon.log_level = "info"
    with daemon:
        ours = run_suite(daemon.socket, args.count)
    endpoint = containerd_endpoint(args.containerd)
    theirs = run_suite(endpoint, args.count) if endpoint else None
    print(f"{args.count} calls each, blocking Python gRPC client over a unix socket")
    print(report(ours, theirs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
