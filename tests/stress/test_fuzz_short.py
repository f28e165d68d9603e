"""The fuzz harness, short: 1000 hostile requests over every RPC, with a fixed seed."""

from __future__ import annotations

import pytest

from tests.stress import fuzz
from tests.stress.env import missing_requirements

MISSING = missing_requirements()


def test_every_rpc_is_fuzzed() -> None:
    """Both services, every RPC of the descriptor (43 today), streaming ones too."""
    rpcs = fuzz.rpcs()
    assert {r.service for r in rpcs} == {"runtime.v1.RuntimeService", "runtime.v1.ImageService"}
    assert len(rpcs) >= 43
    assert any(r.streaming for r in rpcs)


@pytest.mark.integration
@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
@pytest.mark.xfail(
    strict=False,
    reason=(
        "today's daemon lets hostile fields through to the runtime, CNI or the kernel (input validation is being done "
        "in wip/validation): ';', '=', newlines or NUL in pod name/namespace/uid, or 1 MiB of them (RunPodSandbox fails "
        "but its undo fails the same way: a half-made pod no list shows and nobody can remove, and the daemon no longer "
        "starts); run_as_user/run_as_group outside uint32 (INTERNAL from runc/crun); cgroup_parent of 64 KiB and more "
        "(RunPodSandbox hangs, conmon and the runtime stay behind forever), relative or with '..' (cgroups outside the "
        "pods' parent, and with crun directories in the host's /etc, /var/lib...); unknown stop_signal values (INTERNAL "
        "ValueError); over-long hostnames; out-of-range container resources (INTERNAL from runc/crun at start or update, "
        "crun then leaves the container's cgroups); log_directory anywhere (relative, /etc...) and log_path escaping it"
    ),
)
def test_hostile_requests_get_answers_not_internal_errors() -> None:
    report = fuzz.run(requests=1000, seed=1)
    print(report.format())
    assert report.ok, report.format()
