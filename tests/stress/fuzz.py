"""Hostile requests over every RPC of runtime.v1 (both services), sent as raw bytes.

    python -m tests.stress.fuzz [--requests 10000] [--seed N] [--only METHOD] [--findings FILE]

The RPCs come from ``pycri.api.api_pb2.DESCRIPTOR``; each request is sent as bytes on a generic
gRPC channel (``unary_unary``/``unary_stream`` without serializers), one at a time, and is one of:

* ``random``: random bytes (now and then more than the server's 16 MiB limit);
* ``truncated`` / ``bitflip``: a valid request of the RPC, cut short or with a few bits flipped;
* ``hostile``: a valid request (a pod config, a container config for a real pod and the pulled
  image, a real container ID...) with one to three fields set to hostile values: 1 MiB strings,
  NUL bytes, control characters, invalid UTF-8 (in ``bytes`` fields, and in ``string`` fields,
  which the wire format forbids), ``..`` traversal and absolute paths outside the daemon in
  path fields (log_directory, log_path, host_path, cgroup_parent...), 10k map entries or list
  elements, extreme and negative numbers, unknown enum values;
* ``chaos``: an empty request with many fields set at random, hostile or not; ``unknown``: a
  valid request with fields the schema does not have.

Each answer's code is counted. INTERNAL or UNKNOWN is a finding (the method, what was hostile
and the message are printed; when the request names a pod or container an earlier request
made, that request too), so is a call that takes over 10 s (a hang), a daemon that exits (a
crash: it is restarted and the run goes on), and a RunPodSandbox or CreateContainer that fails
yet leaves its pod or container directory behind (half-made).

Every path a hostile request names carries the run's ID (``pycri-hostile-<run>-<n>``). The top
levels of /, /tmp, /etc, /var, /var/lib, /var/log, /run, /root, /var/tmp, /dev/shm and the
daemon's own directories, and every cgroup hierarchy seven levels deep, are listed before and
after. A new entry that names the run (its marker, the daemon's directory or the run's cgroup
parent, give or take three characters, as bit-flipped requests name bit-flipped paths; also
below the entry) is a write outside the daemon's directories, and so is anything in the
daemon's working directory, an empty directory of its own (relative paths land there); each is
printed with the request that first named it, and removed afterwards. Missing bind-mount
sources made as directories are printed apart: pycri makes them on purpose, as containerd
does. Other new entries are printed as unattributed (other tests share the machine).

Pods and containers the requests create are removed every 250 requests, and two anchor pods
with containers made again; at the end everything is removed, the daemon is stopped (exit 0),
started again and must serve (Version, a pod with a container and an exec), and nothing may be
left (``probes``). Registries other than loopback are unreachable: the daemon runs with a dead
proxy in its environment, and port mappings touch nothing (its network has no portmap).

The exit code is 1 on any INTERNAL/UNKNOWN answer, hang, crash, half-made object, pod that
cannot be removed, write outside, daemon that does not serve after the restart, or leak.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import os
import random
import re
import secrets
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import message_factory, text_format
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError
from tests.stress.env import StressEnv, daemon_environment, missing_requirements
from tests.stress.probes import find_leaks, format_leaks

HANG = 10.0
SWEEP_EVERY = 250
MAX_REQUEST = 8 * 1024 * 1024  # hostile requests stay below the server's 16 MiB limit...
OVERSIZE = 17 * 1024 * 1024  # ...except the few random ones meant to exceed it
MIB = 1024 * 1024
FAILURE_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}
# Printed, not failures: a daemon that was up answering these is worth a look.
UNUSUAL_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.DATA_LOSS,
}
# The container the anchors run: exits on every catchable signal a hostile stop_signal may pick.
TRAPS = "HUP INT QUIT ILL TRAP ABRT BUS FPE USR1 SEGV USR2 PIPE ALRM TERM STKFLT CHLD CONT TSTP TTIN TTOU URG XCPU XFSZ VTALRM PROF WINCH IO PWR SYS"  # noqa: E501
LOOP = ["/bin/sh", "-c", f"trap 'exit 0' {TRAPS}; while :; do sleep 1; done"]
PATHLIKE = re.compile(r"(path|dir|directory|location|cgroup_parent|working_dir|file)$")
# RPCs that build things get more requests than those that only read.
WEIGHTS = {
    "RunPodSandbox": 3,
    "CreateContainer": 4,
    "StartContainer": 3,
    "ExecSync": 2,
    "UpdateContainerResources": 2,
    "PullImage": 2,
}
MARK_TEXT = "pycri-hostile-"  # in every path a hostile request names (the run's ID follows)
# What the daemon itself makes in its directories (not hostile paths).
OWN_NAMES = {"fuzz", "runc", "crun", "exits", "sockets", "bin", "pods", "containers", "images", "logs", "cni", "run", "root"}
OWN_NAMES |= {
    "state.db",
    "state.db-wal",
    "state.db-shm",
    "state.db-journal",
    "pycri.sock",
    "pycri.lock",
    "daemon.log",
    "pycri.toml",
}
WATCHED = ["/", "/tmp", "/etc", "/var", "/var/lib", "/var/log", "/run", "/root", "/var/tmp", "/dev/shm"]


@dataclass(frozen=True)
class Rpc:
    service: str
    name: str
    path: str
    request: type[Message]
    streaming: bool


def rpcs() -> list[Rpc]:
    """Every RPC of both runtime.v1 services, from the API's descriptor."""
    found = []
    for service in api.DESCRIPTOR.services_by_name.values():
        for method in service.methods:
            found.append(_rpc(service.full_name, method))
    return found


def _rpc(service: str, method: MethodDescriptor) -> Rpc:
    cls: type[Message] = message_factory.GetMessageClass(method.input_type)
    return Rpc(service, method.name, f"/{service}/{method.name}", cls, method.server_streaming)


@dataclass
class Case:
    rpc: Rpc
    payload: bytes
    strategy: str
    fields: list[str] = field(default_factory=list)
    text: str = ""  # the request as text (long values shortened), when it parses

    def describe(self) -> str:
        what = "; ".join(self.fields) if self.fields else f"{len(self.payload)} bytes"
        return f"{self.rpc.name} [{self.strategy}: {what}]"

    def kept(self) -> Case:
        """This case for a finding: a request over 64 KiB is not kept (its text is)."""
        if len(self.payload) <= 64 * 1024:
            return self
        fields = self.fields or [f"{len(self.payload)} bytes"]
        return Case(self.rpc, b"", self.strategy, fields, self.text)


@dataclass
class Outcome:
    code: grpc.StatusCode
    details: str
    elapsed: float
    response: bytes = b""


@dataclass
class Finding:
    kind: str  # "internal", "hang", "crash", "written outside"
    case: Case | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "detail": self.detail}
        if self.case is not None:
            doc |= {
                "method": self.case.rpc.path,
                "strategy": self.case.strategy,
                "fields": self.case.fields,
                "request_text": self.case.text,
            }
            if self.case.payload:
                doc["request_base64"] = base64.b64encode(self.case.payload).decode()
        return doc


@dataclass
class Report:
    requests: int
    seed: int
    seconds: float = 0.0
    codes: Counter[str] = field(default_factory=Counter)
    by_method: dict[str, Counter[str]] = field(default_factory=dict)
    strategies: Counter[str] = field(default_factory=Counter)
    internal: list[Finding] = field(default_factory=list)
    hangs: list[Finding] = field(default_factory=list)
    crashes: list[Finding] = field(default_factory=list)
    written_outside: list[str] = field(default_factory=list)
    written_inside: list[str] = field(default_factory=list)  # into the daemon's own state, outside the pods' log dirs
    unattributed: list[str] = field(default_factory=list)
    expected_waits: list[Finding] = field(default_factory=list)
    unusual: list[Finding] = field(default_factory=list)
    unremovable: list[str] = field(default_factory=list)  # pods the sweeps could not remove
    half_made: list[Finding] = field(default_factory=list)  # failed creates that left their pod or container
    origins: dict[str, str] = field(default_factory=dict)  # hostile path marker -> the request that named it
    bind_sources: list[str] = field(default_factory=list)  # host_path directories made for bind mounts (by design)
    leaks: dict[str, list[str]] = field(default_factory=dict)
    sweeps: int = 0
    created: Counter[str] = field(default_factory=Counter)
    daemon_exit_code: int | None = None
    served_after_restart: str = "not tried"
    harness_error: str = ""

    @property
    def ok(self) -> bool:
        return (
            not (self.internal or self.hangs or self.crashes or self.written_outside or self.written_inside)
            and not (self.unremovable or self.half_made or self.leaks or self.harness_error)
            and self.daemon_exit_code == 0
            and self.served_after_restart == "yes"
        )

    def format(self, examples: int = 3) -> str:
        lines = [
            f"fuzz: {sum(self.codes.values())} requests over {len(self.by_method)} RPCs, seed {self.seed}, {self.seconds:.0f} s",
            "  answers by code: " + ", ".join(f"{c} {n}" for c, n in self.codes.most_common()),
            "  requests by kind: " + ", ".join(f"{s} {n}" for s, n in self.strategies.most_common()),
            "  created by requests (removed by the sweeps): "
            + (", ".join(f"{k} {n}" for k, n in self.created.items()) or "none"),
        ]
        groups: dict[tuple[str, str], list[Finding]] = {}
        for finding in self.internal:
            assert finding.case is not None
            groups.setdefault((finding.case.rpc.name, normalized(finding.detail)), []).append(finding)
        lines.append(f"  INTERNAL/UNKNOWN answers: {len(self.internal)} ({len(groups)} distinct)")
        for (method, _), found in sorted(groups.items(), key=lambda item: -len(item[1])):
            lines.append(f"    {method} x{len(found)}: {found[0].detail[:400]}")
            for finding in found[:examples]:
                assert finding.case is not None
                lines.append(f"      e.g. {finding.case.describe()[:300]}")
        for title, findings in (("hangs (> 10 s)", self.hangs), ("crashes", self.crashes)):
            lines.append(f"  {title}: {len(findings)}")
            for finding in findings[:20]:
                where = finding.case.describe()[:300] if finding.case is not None else ""
                lines.append(f"    {where}: {finding.detail[:600]}")
        if self.unusual:
            lines.append(f"  other answers worth a look (not failures): {len(self.unusual)}")
            for finding in self.unusual[:10]:
                assert finding.case is not None
                lines.append(f"    {finding.case.describe()[:300]}: {finding.detail[:300]}")
        if self.expected_waits:
            lines.append(f"  calls that waited as asked (StopContainer with a timeout over 10 s): {len(self.expected_waits)}")
        files = [p for p in self.written_outside if " (cgroup)" not in p]
        cgroups = Counter(
            re.sub(r"^/sys/fs/cgroup/[^/]+", "", p.replace(" (cgroup)", "")) for p in self.written_outside if p not in files
        )
        lines.append(f"  files and directories written outside the daemon's directories: {len(files)}")
        lines += [f"    {item!r}" if not item.isprintable() else f"    {item}" for item in files[:30]]
        lines.append(f"  cgroups made outside the pods' cgroup parent: {len(cgroups)} (directories in every hierarchy)")
        lines += [
            f"    {path!r} (in {n} hierarchies)" if not path.isprintable() else f"    {path} (in {n} hierarchies)"
            for path, n in sorted(cgroups.items())[:40]
        ]
        if self.bind_sources:
            lines.append(
                f"  bind-mount sources made as directories (by design, as containerd; not failures): {len(self.bind_sources)}"
            )
            lines += [f"    {item}" for item in self.bind_sources[:10]]
        lines.append(f"  files written into the daemon's own directories by hostile paths: {len(self.written_inside)}")
        lines += [f"    {item}" for item in self.written_inside[:30]]
        if self.unattributed:
            lines.append(f"  new entries without the run's marker (other processes on this machine?): {len(self.unattributed)}")
            lines += [f"    {item}" for item in self.unattributed[:10]]
        lines.append(f"  failed RunPodSandbox/CreateContainer that left their pod or container behind: {len(self.half_made)}")
        for finding in self.half_made[:20]:
            assert finding.case is not None
            lines.append(f"    {finding.case.describe()[:300]}: {finding.detail[:400]}")
        lines.append(f"  pods no Stop/RemovePodSandbox could remove: {len(self.unremovable)}")
        lines += [f"    {item[:400]}" for item in self.unremovable[:10]]
        lines.append(f"  daemon exit code on SIGTERM: {self.daemon_exit_code}")
        lines.append(f"  restarted and served afterwards: {self.served_after_restart}")
        lines.append("  leaks by kind:\n" + format_leaks(self.leaks) if self.leaks else "  leaks: none")
        if self.harness_error:
            lines.append(f"  harness error: {self.harness_error}")
        lines.append("RESULT: " + ("PASS" if self.ok else "FAIL"))
        return "\n".join(lines)


def normalized(detail: str) -> str:
    """A message with IDs, numbers and paths blurred, to group findings."""
    detail = re.sub(r"[0-9a-f]{12,64}", "<id>", detail)
    detail = re.sub(r"/[^\s:'\"]+", "<path>", detail)
    return re.sub(r"\d+", "<n>", detail)[:200]


# -- hostile values ------------------------------------------------------------------------------------


class Values:
    """Plausible and hostile field values for one run (paths carry the run's marker)."""

    def __init__(self, rng: random.Random, marker: str, fuzz_dir: Path, daemon_dirs: list[str]) -> None:
        self.rng = rng
        self.marker = marker
        self.fuzz_dir = fuzz_dir
        self.daemon_dirs = daemon_dirs
        self.count = 0
        self.placeholders: dict[str, bytes] = {}

    def mark(self) -> str:
        self.count += 1
        return f"{self.marker}-{self.count}"

    def path(self) -> tuple[str, str]:
        """A hostile path: traversal out of where it is joined, absolute outside, or into the daemon's directories."""
        rng, mark = self.rng, self.mark()
        choices = [
            ("traversal", "../" * rng.randint(1, 16) + rng.choice(["", "tmp/", "etc/", "run/", "var/lib/"]) + mark),
            ("absolute outside", rng.choice(["/tmp", "/etc", "/run", "/var/lib", "/var/log", "/root"]) + f"/{mark}"),
            ("traversal absolute", f"{self.fuzz_dir}/" + "../" * rng.randint(2, 12) + rng.choice(["etc/", "tmp/", ""]) + mark),
            ("daemon dir", f"{rng.choice(self.daemon_dirs)}/{mark}"),
            ("dot", rng.choice([".", "..", "/", "//", "./", "/.."])),
            ("nested traversal", f"a/../../{mark}/../../../{mark}"),
            ("relative", f"{mark}/x"),
        ]
        return rng.choice(choices)

    def string(self, name: str) -> tuple[str, str]:
        rng = self.rng
        if PATHLIKE.search(name) and rng.random() < 0.6:
            return self.path()
        choices: list[tuple[str, Any]] = [
            ("1 MiB", lambda: "A" * MIB),
            ("64 KiB", lambda: "é" * (32 * 1024)),
            ("NUL", lambda: f"a\x00b{self.mark()}"),
            ("only NUL", lambda: "\x00"),
            ("control", lambda: "\x1b[31m\x07\x08\r\n\t"),
            ("newline", lambda: f"x\nInjected: {self.mark()}\n"),
            ("shell", lambda: f"$(touch /tmp/{self.mark()}); `id` | tee /tmp/{self.mark()}"),
            ("format", lambda: "%s%s%n%x{0}{}%(x)s"),
            ("unicode", lambda: "\u202e\U0001f600\ufeff\u0000\ud7ff"),
            ("long component", lambda: "a" * 5000),
            ("empty", lambda: ""),
            ("space", lambda: " "),
            ("dash", lambda: "--help"),
            ("path", lambda: self.path()[1]),
            ("invalid UTF-8", lambda: self.placeholder()),
            ("number", lambda: rng.choice(["-1", "18446744073709551616", "1e400", "NaN", "0x10"])),
            ("id-like", lambda: secrets.token_hex(32) + rng.choice(["", "/../x", "\x00", " "])),
        ]
        kind, make = rng.choice(choices)
        return kind, make()

    def placeholder(self) -> str:
        """A unique ASCII string replaced by invalid UTF-8 of the same length once serialized."""
        token = "QZ" + secrets.token_hex(6).upper() + "ZQ"
        self.placeholders[token] = b"\xff\xfe\xc3\x28" + b"\xa0\xa1" * ((len(token) - 4) // 2)
        return token

    def bytes_(self) -> tuple[str, bytes]:
        rng = self.rng
        kind, value = rng.choice(
            [
                ("invalid UTF-8", b"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1"),
                ("NUL", b"\x00" * 16),
                ("1 MiB", b"\xff" * MIB),
                ("random", rng.randbytes(rng.randint(1, 256))),
            ]
        )
        return kind, value

    def number(self, fd: FieldDescriptor) -> tuple[str, Any]:
        rng = self.rng
        t = fd.type
        if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return "float", rng.choice([math.nan, math.inf, -math.inf, 1e308, -0.0, -1.0])
        if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
            return "uint32", rng.choice([0, 1, 2**31, 2**32 - 1])
        if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
            return "uint64", rng.choice([0, 2**63, 2**64 - 1])
        if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
            return "int32", rng.choice([-(2**31), -1, 0, 2**31 - 1, -4096])
        return "int64", rng.choice([-(2**63), -1, 0, 2**63 - 1, 2**53 + 1, -(10**12)])

    def enum(self, fd: Any) -> tuple[str, int]:
        rng = self.rng
        if rng.random() < 0.6:
            return "unknown enum", rng.choice([99, -1, 2**31 - 1, -(2**31), 1000])
        return "enum", rng.choice([v.number for v in fd.enum_type.values])


# -- requests ---------------------------------------------------------------------------------------------


def field_paths(descriptor: Any, depth: int = 5) -> list[tuple[FieldDescriptor, ...]]:
    """Every field reachable from ``descriptor`` (through messages and lists of them), up to ``depth`` deep."""
    found: list[tuple[FieldDescriptor, ...]] = []
    for fd in descriptor.fields:
        found.append((fd,))
        if fd.type == FieldDescriptor.TYPE_MESSAGE and not is_map(fd) and depth > 1:
            found += [(fd, *rest) for rest in field_paths(fd.message_type, depth - 1)]
    return found


def is_map(fd: Any) -> bool:
    return bool(fd.type == FieldDescriptor.TYPE_MESSAGE and fd.message_type.GetOptions().map_entry)


def is_repeated(fd: FieldDescriptor) -> bool:
    return bool(fd.is_repeated)


def path_name(path: tuple[FieldDescriptor, ...]) -> str:
    return ".".join(
        fd.name + ("[0]" if is_repeated(fd) and not is_map(fd) and i < len(path) - 1 else "") for i, fd in enumerate(path)
    )


@dataclass
class Pools:
    """Real objects of the daemon, so that hostile requests reach past "not found"."""

    pods: dict[str, api.PodSandboxConfig] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)  # id -> pod id
    fresh: list[str] = field(default_factory=list)  # containers created by requests, not started yet
    anchors: set[str] = field(default_factory=set)
    made_by: dict[str, str] = field(default_factory=dict)  # pods and containers requests made: id -> the request


class Generator:
    def __init__(self, rng: random.Random, values: Values, env: StressEnv, pools: Pools) -> None:
        self.rng = rng
        self.values = values
        self.env = env
        self.pools = pools
        self.paths: dict[str, list[tuple[FieldDescriptor, ...]]] = {}
        self.counter = 0

    def case(self, rpc: Rpc) -> Case:
        rng = self.rng
        roll = rng.random()
        if roll < 0.12:
            size = OVERSIZE if rng.random() < 0.01 else rng.choice([0, 1, 2, 7, 64, 512, 4096, 65536])
            return Case(rpc, rng.randbytes(size), "random")
        base = self.base(rpc)
        raw = base.SerializeToString()
        if roll < 0.22:
            cut = rng.randint(0, max(0, len(raw) - 1))
            return self.finish(Case(rpc, raw[:cut], "truncated", [f"{cut} of {len(raw)} bytes"]))
        if roll < 0.35 and raw:
            data = bytearray(raw)
            flips = rng.randint(1, 8)
            for _ in range(flips):
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            return self.finish(Case(rpc, bytes(data), "bitflip", [f"{flips} bits of {len(raw)} bytes"]))
        if roll < 0.40:
            return self.finish(Case(rpc, raw + unknown_fields(rng), "unknown", ["fields 900+ the schema lacks"]))
        if roll < 0.50:
            message = rpc.request()
            fields = [self.mutate(message, hostile=rng.random() < 0.5) for _ in range(rng.randint(3, 15))]
            return self.finish(self.encode(rpc, message, "chaos", fields))
        fields = [self.mutate(base, hostile=True) for _ in range(rng.choice([1, 1, 1, 2, 3]))]
        return self.finish(self.encode(rpc, base, "hostile", fields))

    def finish(self, case: Case) -> Case:
        with contextlib.suppress(Exception):
            case.text = short_text(case.rpc.request.FromString(case.payload))
        return case

    def encode(self, rpc: Rpc, message: Message, strategy: str, fields: list[str]) -> Case:
        raw = message.SerializeToString()
        if len(raw) > MAX_REQUEST:  # several big values at once: keep it under the server's limit
            return self.encode(rpc, self.base(rpc), strategy, [*fields, "(too big: sent the valid request)"])
        for token, invalid in self.values.placeholders.items():
            raw = raw.replace(token.encode(), invalid)
        case = Case(rpc, raw, strategy, fields)
        case.text = short_text(message)
        self.values.placeholders.clear()
        return case

    # -- valid requests -------------------------------------------------------------------------------------

    def pod_id(self) -> str:
        pods = list(self.pools.pods)
        return self.rng.choice(pods) if pods and self.rng.random() < 0.9 else secrets.token_hex(32)

    def container_id(self, fresh: bool = False) -> str:
        if fresh and self.pools.fresh and self.rng.random() < 0.8:
            return self.pools.fresh.pop()
        ids = list(self.pools.containers)
        return self.rng.choice(ids) if ids and self.rng.random() < 0.9 else secrets.token_hex(32)

    def pod_config(self) -> api.PodSandboxConfig:
        self.counter += 1
        name = f"fz-{self.counter}"
        config = self.env.pod_config(name, "fuzz", log_dir=self.values.fuzz_dir / name)
        config.labels["fuzz"] = "yes"
        config.annotations["fuzz"] = "yes"
        return config

    def container_config(self) -> api.ContainerConfig:
        self.counter += 1
        config = self.env.container_config(f"fz-{self.counter}", LOOP)
        config.envs.add(key="FUZZ", value=b"1")
        config.mounts.add(container_path="/mnt/fuzz", host_path=str(self.values.fuzz_dir), readonly=True)
        return config

    def base(self, rpc: Rpc) -> Message:
        """A request of ``rpc`` that a well-behaved kubelet could send, about real objects."""
        rng, name = self.rng, rpc.name
        m: Any = rpc.request()
        if name == "RunPodSandbox":
            m.config.CopyFrom(self.pod_config())
            m.runtime_handler = rng.choice(["", "runc", "crun"])
        elif name == "CreateContainer":
            pod_id = self.pod_id()
            m.pod_sandbox_id = pod_id
            m.config.CopyFrom(self.container_config())
            m.sandbox_config.CopyFrom(self.pools.pods.get(pod_id) or self.pod_config())
        elif name == "StartContainer":
            m.container_id = self.container_id(fresh=True)
        elif name == "StopContainer":
            m.container_id = self.container_id()
            m.timeout = rng.randint(0, 2)
        elif name == "ExecSync":
            m.container_id = self.container_id()
            m.cmd.extend(["/bin/echo", "fuzz"])
            m.timeout = 5
        elif name in ("Exec", "Attach"):
            m.container_id = self.container_id()
            if name == "Exec":
                m.cmd.extend(["/bin/echo", "fuzz"])
            m.stdout = True
            m.tty = rng.random() < 0.5
            m.stderr = not m.tty
        elif name == "PortForward":
            m.pod_sandbox_id = self.pod_id()
            m.port.append(80)
        elif name == "UpdateContainerResources":
            m.container_id = self.container_id()
            m.linux.cpu_shares = 512
            m.linux.memory_limit_in_bytes = 256 * MIB
        elif name == "UpdatePodSandboxResources":
            m.pod_sandbox_id = self.pod_id()
            m.resources.cpu_shares = 512
        elif name == "UpdateRuntimeConfig":
            m.runtime_config.network_config.pod_cidr = "10.244.0.0/16"
        elif name in ("PullImage", "ImageStatus", "RemoveImage"):
            m.image.image = self.env.image if rng.random() < 0.7 else f"{self.env.registry.host}/fuzz/{self.values.mark()}:x"
        elif name in ("Status", "PodSandboxStatus", "ContainerStatus"):
            m.verbose = rng.random() < 0.5
        elif name == "CheckpointContainer":
            m.container_id = self.container_id()
            m.location = str(self.values.fuzz_dir / f"{self.values.mark()}.tar")
        for fd in m.DESCRIPTOR.fields:  # the IDs every other request names
            if fd.name == "pod_sandbox_id" and fd.type == FieldDescriptor.TYPE_STRING and not getattr(m, fd.name):
                setattr(m, fd.name, self.pod_id())
            if fd.name == "container_id" and fd.type == FieldDescriptor.TYPE_STRING and not getattr(m, fd.name):
                setattr(m, fd.name, self.container_id())
        return m  # type: ignore[no-any-return]

    # -- hostile fields ---------------------------------------------------------------------------------------

    def mutate(self, message: Message, *, hostile: bool) -> str:
        """Set one field (anywhere in ``message``) to a hostile value; returns what it did."""
        full = message.DESCRIPTOR.full_name
        if full not in self.paths:
            self.paths[full] = field_paths(message.DESCRIPTOR)
        paths = self.paths[full]
        if not paths:
            return "(no fields)"
        weights = [3.0 if PATHLIKE.search(p[-1].name) or p[-1].name.endswith("_id") else 1.0 for p in paths]
        path = self.rng.choices(paths, weights)[0]
        target: Any = message
        for fd in path[:-1]:
            container = getattr(target, fd.name)
            if is_repeated(fd):
                target = container[0] if len(container) and self.rng.random() < 0.7 else container.add()
            else:
                target = container
        leaf = path[-1]
        try:
            what = self.set_leaf(target, leaf, hostile)
        except (ValueError, TypeError, OverflowError) as exc:
            what = f"(refused by protobuf: {exc})"
        return f"{path_name(path)}={what}"

    def set_leaf(self, target: Any, fd: Any, hostile: bool) -> str:
        rng, values = self.rng, self.values
        if is_map(fd):
            entries = getattr(target, fd.name)
            value_fd = fd.message_type.fields_by_name["value"]
            if value_fd.type != FieldDescriptor.TYPE_STRING:
                entries.get_or_create(values.mark())
                return "map entry"
            if rng.random() < 0.4:
                for i in range(10_000):
                    entries[f"k{i}-{'x' * rng.randint(0, 20)}"] = "v" * rng.randint(0, 20)
                return "10k entries"
            kind_k, key = values.string("key")
            kind_v, value = values.string(fd.name)
            entries[key] = value
            return f"entry key {kind_k}, value {kind_v}"
        if is_repeated(fd):
            items = getattr(target, fd.name)
            if fd.type == FieldDescriptor.TYPE_MESSAGE:
                count = 10_000 if rng.random() < 0.2 else 1
                for _ in range(count):
                    items.add()
                return f"{count} empty elements"
            if rng.random() < 0.2:
                one = self.scalar(fd, hostile)[1]
                if isinstance(one, (str, bytes)) and len(one) > 64:
                    one = one[:64]
                items.extend([one] * 10_000)
                return "10k elements"
            kind, value = self.scalar(fd, hostile)
            items.append(value)
            return f"element {kind}"
        if fd.type == FieldDescriptor.TYPE_MESSAGE:
            getattr(target, fd.name).SetInParent()
            return "empty message"
        kind, value = self.scalar(fd, hostile)
        setattr(target, fd.name, value)
        return kind

    def scalar(self, fd: FieldDescriptor, hostile: bool) -> tuple[str, Any]:
        values, rng = self.values, self.rng
        if fd.type == FieldDescriptor.TYPE_STRING:
            if not hostile and rng.random() < 0.5:
                return "plausible", rng.choice(["a", "fuzz", self.env.image, "/tmp", "default", self.pod_id()])
            return values.string(fd.name)
        if fd.type == FieldDescriptor.TYPE_BYTES:
            return values.bytes_()
        if fd.type == FieldDescriptor.TYPE_BOOL:
            return "bool", rng.random() < 0.5
        if fd.type == FieldDescriptor.TYPE_ENUM:
            return values.enum(fd)
        if not hostile and rng.random() < 0.5:
            return "small", rng.randint(0, 100)
        return values.number(fd)


def unknown_fields(rng: random.Random) -> bytes:
    """Fields numbered 900+: a varint, a length-delimited blob and a fixed64."""
    out = bytearray()
    for number, wire in ((900 + rng.randint(0, 99), 0), (1000 + rng.randint(0, 99), 2), (5000, 1)):
        out += _varint(number << 3 | wire)
        if wire == 0:
            out += _varint(rng.randrange(1 << 63))
        elif wire == 2:
            blob = rng.randbytes(rng.randint(0, 300))
            out += _varint(len(blob)) + blob
        else:
            out += rng.randbytes(8)
    return bytes(out)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def short_text(message: Message, limit: int = 1500) -> str:
    """The request in text format, long values shortened."""
    text = text_format.MessageToString(message, as_one_line=True, as_utf8=True)
    text = re.sub(r"(.)\1{63,}", lambda m: f"{m.group(1)!r}*{len(m.group(0))}", text)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


# -- the file system outside ---------------------------------------------------------------------------------


def listing(env: StressEnv, cwd: Path) -> set[str]:
    """Top-level entries of the watched places, the daemon's directories and its working directory."""
    places = [*WATCHED, str(cwd)]
    cfg = env.d.cfg
    places += [str(env.d.workdir), cfg.root_dir, cfg.state_dir, str(env.d.workdir / "fuzz")]
    found = set()
    for place in places:
        with contextlib.suppress(OSError):
            found |= {os.path.join(place, name) for name in os.listdir(place)}
    return found


# -- the run ---------------------------------------------------------------------------------------------------


class Fuzz:
    def __init__(self, env: StressEnv, *, requests: int, seed: int, only: str = "") -> None:
        self.env = env
        self.requests = requests
        self.rng = random.Random(seed)
        self.report = Report(requests=requests, seed=seed)
        self.marker = f"{MARK_TEXT}{env.run_id}"
        self.fuzz_dir = env.d.workdir / "fuzz"
        self.fuzz_dir.mkdir(exist_ok=True)
        cfg = env.d.cfg
        self.values = Values(self.rng, self.marker, self.fuzz_dir, [cfg.root_dir, cfg.state_dir, str(env.d.workdir)])
        self.pools = Pools()
        self.marks = re.compile(re.escape(self.marker).encode() + rb"-\d+")
        self.generator = Generator(self.rng, self.values, env, self.pools)
        self.rpcs = [r for r in rpcs() if not only or r.name == only]
        if not self.rpcs:
            raise ValueError(f"no RPC named {only!r}")
        self.channel = self.connect()

    def connect(self) -> grpc.Channel:
        options = [("grpc.max_send_message_length", 64 * MIB), ("grpc.max_receive_message_length", 64 * MIB)]
        return grpc.insecure_channel(f"unix:{self.env.d.socket}", options=options)

    def send(self, case: Case) -> Outcome:
        started = time.monotonic()
        try:
            if case.rpc.streaming:
                stream = self.channel.unary_stream(case.rpc.path, request_serializer=None, response_deserializer=None)
                chunks = list(stream(case.payload, timeout=HANG))
                response = b"".join(chunks)
            else:
                call = self.channel.unary_unary(case.rpc.path, request_serializer=None, response_deserializer=None)
                response = call(case.payload, timeout=HANG)
        except grpc.RpcError as exc:
            code = exc.code()
            return Outcome(code, exc.details() or "", time.monotonic() - started)
        return Outcome(grpc.StatusCode.OK, "", time.monotonic() - started, response)

    def run(self) -> Report:
        self.make_anchors()
        for i in range(self.requests):
            if i and i % SWEEP_EVERY == 0:
                self.sweep()
                self.make_anchors()
            rpc = self.rng.choices(self.rpcs, [WEIGHTS.get(r.name, 1) for r in self.rpcs])[0]
            case = self.generator.case(rpc)
            dirs = self.object_dirs() if rpc.name in ("RunPodSandbox", "CreateContainer") else None
            outcome = self.send(case)
            self.record(case, outcome)
            if dirs is not None and outcome.code is not grpc.StatusCode.OK:
                left = sorted(self.object_dirs() - dirs)
                if left:  # a failed create must undo itself before it answers
                    detail = f"{outcome.code.name}: {outcome.details[:300]}; left behind: {', '.join(left)}"
                    self.report.half_made.append(Finding("half-made", case.kept(), detail))
            if not self.env.alive():
                self.crashed(case)
            elif outcome.code is grpc.StatusCode.UNAVAILABLE and not self.serving():
                self.report.crashes.append(Finding("crash", case, "the daemon stopped answering (alive, no Version); restarted"))
                self.restart()
        self.sweep()
        return self.report

    def object_dirs(self) -> set[str]:
        """The pod and container directories of the daemon."""
        found = set()
        for place in (Path(self.env.d.cfg.state_dir) / "pods", Path(self.env.d.cfg.root_dir) / "containers"):
            with contextlib.suppress(OSError):
                found |= {str(place / name) for name in os.listdir(place)}
        return found

    def record(self, case: Case, outcome: Outcome) -> None:
        code = outcome.code.name
        for mark in set(self.marks.findall(case.payload)):  # the request that introduced a hostile path (later ones copy it)
            self.report.origins.setdefault(mark.decode(), f"{case.describe()[:200]} -> {code}")
        self.report.codes[code] += 1
        self.report.strategies[case.strategy] += 1
        self.report.by_method.setdefault(case.rpc.name, Counter())[code] += 1
        if outcome.elapsed >= HANG - 0.05:
            if case.rpc.name == "StopContainer" and stop_timeout(case) > HANG:
                self.report.expected_waits.append(Finding("wait", case.kept(), f"{code} after {outcome.elapsed:.1f} s"))
            else:
                detail = f"{code} after {outcome.elapsed:.1f} s: {outcome.details}"
                self.report.hangs.append(Finding("hang", case.kept(), detail))
        elif outcome.code in FAILURE_CODES:
            detail = f"{code}: {outcome.details}"
            makers = [how for made, how in self.pools.made_by.items() if made.encode() in case.payload]
            if makers:  # the hostile part may be in the request that made the object this one names
                case = Case(
                    case.rpc, case.payload, case.strategy, [*case.fields, f"(it names an object made by {makers[0]})"], case.text
                )
            self.report.internal.append(Finding("internal", case.kept(), detail))
        elif outcome.code in UNUSUAL_CODES:
            detail = f"{code} after {outcome.elapsed:.2f} s: {outcome.details}"
            self.report.unusual.append(Finding("unusual", case.kept(), detail))
        if outcome.code is grpc.StatusCode.OK:
            self.note_created(case, outcome.response)

    def note_created(self, case: Case, response: bytes) -> None:
        """Pods and containers a request made join the pools (hostile configs get started, stopped, exec'd...)."""
        if case.rpc.name == "RunPodSandbox":
            pod_id = api.RunPodSandboxResponse.FromString(response).pod_sandbox_id
            self.pools.pods[pod_id] = api.RunPodSandboxRequest.FromString(case.payload).config
            self.pools.made_by[pod_id] = case.describe()[:300]
            self.env.known_ids.add(pod_id)
            self.report.created["pods"] += 1
        elif case.rpc.name == "CreateContainer":
            container_id = api.CreateContainerResponse.FromString(response).container_id
            self.pools.containers[container_id] = api.CreateContainerRequest.FromString(case.payload).pod_sandbox_id
            self.pools.made_by[container_id] = case.describe()[:300]
            self.pools.fresh.append(container_id)
            self.env.known_ids.add(container_id)
            self.report.created["containers"] += 1

    def crashed(self, case: Case) -> None:
        proc = self.env.d.proc
        code = proc.returncode if proc is not None else None
        tail = "\n".join(self.env.log().splitlines()[-20:])
        self.report.crashes.append(Finding("crash", case, f"daemon exited with {code}; log tail:\n{tail}"))
        self.restart()

    def serving(self) -> bool:
        with contextlib.suppress(ClientError), Client(self.env.d.socket, timeout=5) as client:
            client.version()
            return True
        return False

    def restart(self) -> None:
        self.channel.close()
        self.env.restart()
        self.channel = self.connect()

    # -- real objects ------------------------------------------------------------------------------------------

    def client(self) -> Client:
        return Client(self.env.d.socket, timeout=60)

    def make_anchors(self) -> None:
        """Two pods (runc, crun), each with a running container; one more container created, not started."""
        with self.client() as client:
            if not any(self.env.image in i.repo_tags for i in client.list_images().images):
                client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=self.env.image)))
            for handler in ("runc", "crun"):
                config = self.generator.pod_config()
                pod_id = client.run_pod_sandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
                self.pools.pods[pod_id] = config
                self.pools.anchors.add(pod_id)
                self.env.known_ids.add(pod_id)
                for start in (True, handler == "runc"):
                    request = api.CreateContainerRequest(
                        pod_sandbox_id=pod_id, config=self.generator.container_config(), sandbox_config=config
                    )
                    container_id = client.create_container(request).container_id
                    self.pools.containers[container_id] = pod_id
                    self.env.known_ids.add(container_id)
                    if start:
                        client.start_container(api.StartContainerRequest(container_id=container_id))
                    else:
                        break

    def sweep(self) -> None:
        """Remove every pod and container (what requests made, and the anchors)."""
        self.report.sweeps += 1
        with self.client() as client:
            for attempt in range(3):
                pods = client.list_pod_sandbox().items
                containers = client.list_containers().containers
                self.env.known_ids.update(p.id for p in pods)
                self.env.known_ids.update(c.id for c in containers)
                if not pods and not containers:
                    break
                for pod in pods:
                    try:
                        client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
                        client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod.id), timeout=60)
                    except ClientError as exc:
                        if attempt == 2 and not any(pod.id in u for u in self.report.unremovable):
                            self.report.unremovable.append(f"pod {pod.id} ({pod.metadata.name!r}): {exc}")
                for container in containers:  # their pods are gone: no container may be left
                    with contextlib.suppress(ClientError):
                        client.remove_container(api.RemoveContainerRequest(container_id=container.id))
        self.pools.pods.clear()
        self.pools.containers.clear()
        self.pools.fresh.clear()
        self.pools.anchors.clear()


def stop_timeout(case: Case) -> int:
    try:
        return int(api.StopContainerRequest.FromString(case.payload).timeout)
    except Exception:
        return 0


def serves(env: StressEnv) -> str:
    """After a restart: Version, the lists, and a pod with a container that runs an exec; "yes" or why not."""
    pod_id = ""
    try:
        with Client(env.d.socket, timeout=60) as client:
            try:
                client.version()
                left = [p.id for p in client.list_pod_sandbox().items] + [c.id for c in client.list_containers().containers]
                if left:
                    return f"no: pods or containers listed after the final sweep: {left}"
                client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=env.image)))  # requests may have removed it
                config = env.pod_config("after-fuzz", "fuzz")
                pod_id = client.run_pod_sandbox(api.RunPodSandboxRequest(config=config)).pod_sandbox_id
                env.known_ids.add(pod_id)
                container = env.container_config("c", LOOP)
                request = api.CreateContainerRequest(pod_sandbox_id=pod_id, config=container, sandbox_config=config)
                container_id = client.create_container(request).container_id
                env.known_ids.add(container_id)
                client.start_container(api.StartContainerRequest(container_id=container_id))
                exec_sync = api.ExecSyncRequest(container_id=container_id, cmd=["/bin/echo", "ok"], timeout=10)
                result = client.exec_sync(exec_sync)
                if result.stdout != b"ok\n":
                    return f"no: exec answered {result.stdout!r} {result.stderr!r}"
            finally:
                if pod_id:
                    client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
                    client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    except ClientError as exc:
        return f"no: {exc}"
    return "yes"


def run(*, requests: int = 10_000, seed: int | None = None, only: str = "", findings: str = "") -> Report:
    """The whole run: set-up, the requests, clean-up, restart, the checks outside and inside the daemon.

    The daemon runs in an empty working directory of its own: a relative path a request gets
    accepted shows there.
    """
    seed = seed if seed is not None else random.randrange(1 << 30)
    report = Report(requests=requests, seed=seed)
    started = time.monotonic()
    cwd, previous = Path(tempfile.mkdtemp(prefix="pycri-fuzz-cwd-")), os.getcwd()
    os.chdir(cwd)
    try:
        with daemon_environment(proxy=True), StressEnv("fuzz") as env:
            before, cgroups_before = listing(env, cwd), cgroup_tree()
            report = _fuzz(env, report, requests=requests, seed=seed, only=only)
            report.leaks = _final_checks(env, report)
            own_cgroups = tuple(f"{d}/" for d in env.cgroup_dirs())  # the pods' parent: probed for leaks, removed by close()
            new = listing(env, cwd) - before
            new_cgroups = {c for c in cgroup_tree() - cgroups_before if not f"{c}/".startswith(own_cgroups)}
            workdir, fuzz_dir, in_cwd = str(env.d.workdir) + "/", str(env.d.workdir / "fuzz") + "/", str(cwd) + "/"
            names = (f"pycri-fuzz-{env.run_id}", f"{MARK_TEXT}{env.run_id}", env.d.workdir.name, cwd.name)
            made = {p for p in new if not p.startswith(workdir) and (p.startswith(in_cwd) or names_us(p, names))}
            made_cgroups = with_new_ancestors({c for c in new_cgroups if names_us(c, names, walk=False)}, new_cgroups)
            written = [origin(p, report.origins) for p in sorted(made)]
            written += [origin(f"{c} (cgroup)", report.origins) for c in sorted(made_cgroups)]
            # A missing bind-mount source becomes a directory, as containerd does it (pycri.containers.specs).
            report.bind_sources = [p for p in written if re.search(r"<- CreateContainer \[[^]]*mounts\[0\]\.host_path=", p)]
            report.written_outside = [p for p in written if p not in report.bind_sources]
            inside = [
                p for p in new if p.startswith(workdir) and not p.startswith(fuzz_dir) and os.path.basename(p) not in OWN_NAMES
            ]
            report.written_inside = [origin(p, report.origins) for p in sorted(inside)]
            # (New cgroups of others, and /tmp, are not listed: other tests on this machine make hundreds.)
            report.unattributed = sorted(p for p in new - made if not p.startswith(("/tmp/", workdir)))
            remove_ours(made | made_cgroups)
    finally:
        os.chdir(previous)
        shutil.rmtree(cwd, ignore_errors=True)
    report.seconds = time.monotonic() - started
    if findings:
        with open(findings, "w") as out:
            for finding in [*report.internal, *report.hangs, *report.crashes, *report.half_made]:
                out.write(json.dumps(finding.to_json()) + "\n")
    return report


def _fuzz(env: StressEnv, report: Report, *, requests: int, seed: int, only: str) -> Report:
    fuzz: Fuzz | None = None
    try:
        fuzz = Fuzz(env, requests=requests, seed=seed, only=only)
        return fuzz.run()
    except Exception as exc:  # reported; the checks and the clean-up still run
        report = fuzz.report if fuzz is not None else report
        report.harness_error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        if fuzz is not None:
            with contextlib.suppress(Exception):
                fuzz.sweep()
        return report
    finally:
        if fuzz is not None:
            fuzz.channel.close()


def _final_checks(env: StressEnv, report: Report) -> dict[str, list[str]]:
    """Graceful stop, leak probes, restart and serve, stop, leak probes again; the leaks."""
    if env.alive():
        report.daemon_exit_code = env.d.stop()
    leaks = find_leaks(env)
    try:
        env.d.start(timeout=60)
        report.served_after_restart = serves(env)
    except RuntimeError as exc:  # its message holds the whole log: keep the first line and the end
        lines = str(exc).splitlines()
        report.served_after_restart = "no: " + "\n".join([lines[0], "  ...", *(f"  {line}" for line in lines[-25:])])
    if env.alive():
        env.d.stop()
    for kind, items in find_leaks(env).items():
        leaks.setdefault(kind, []).extend(i for i in items if i not in leaks.get(kind, []))
    return leaks


def cgroup_tree(depth: int = 7) -> set[str]:
    """Every cgroup directory of every hierarchy, ``depth`` levels deep."""
    found = set()
    for top in [e.path for e in os.scandir("/sys/fs/cgroup") if e.is_dir()]:
        base = top.count("/")
        for dirpath, dirnames, _ in os.walk(top):
            found.add(dirpath)
            if dirpath.count("/") - base >= depth:
                dirnames[:] = []
    return found


def origin(path: str, origins: dict[str, str]) -> str:
    """``path`` with the request that named it, when a marker in it says."""
    found = re.search(rf"{MARK_TEXT}[0-9a-f]+-\d+", path)
    return f"{path}  <- {origins[found.group(0)]}" if found and found.group(0) in origins else path


def cgroup_mounts() -> list[str]:
    """Mount points of cgroup file systems (a directory below one is a cgroup; /sys/fs/cgroup itself is a tmpfs)."""
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[2] in ("cgroup", "cgroup2")]


def names_us(path: str, names: tuple[str, ...], *, walk: bool = True, limit: int = 200) -> bool:
    """Whether a component of ``path`` (or, with ``walk``, of something below it) is one of ``names`` with up to
    three characters changed: bit-flipped requests name bit-flipped paths."""
    components = path.split("/")
    if walk and os.path.isdir(path) and not os.path.islink(path):
        for _, dirnames, filenames in os.walk(path):
            components += dirnames + filenames
            if len(components) > limit:
                break
    return any(near(component, name) for component in components for name in names)


def near(text: str, name: str, changes: int = 3) -> bool:
    """Whether ``text`` holds ``name`` with at most ``changes`` characters replaced."""
    if name in text:
        return True
    n = len(name)
    return any(sum(a != b for a, b in zip(text[i : i + n], name, strict=True)) <= changes for i in range(len(text) - n + 1))


def with_new_ancestors(named: set[str], new: set[str]) -> set[str]:
    """``named`` and those of ``new`` that are their ancestors (made on the way to them)."""
    return named | {p for p in new if any(n.startswith(p + "/") for n in named)}


def remove_ours(paths: Iterable[str]) -> None:
    """Remove what hostile requests made outside the daemon, deepest first (cgroups only when empty)."""
    cgroupfs = cgroup_mounts()
    for path in sorted(paths, key=len, reverse=True):
        if any(path.startswith(m + "/") for m in cgroupfs):
            with contextlib.suppress(OSError):
                os.rmdir(path)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.stress.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="how many requests (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    parser.add_argument("--only", default="", metavar="METHOD", help="fuzz one RPC only (e.g. CreateContainer)")
    parser.add_argument("--findings", default="", metavar="FILE", help="write each finding as a JSON line, with the request")
    args = parser.parse_args(argv)
    why = missing_requirements()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    report = run(requests=args.requests, seed=args.seed, only=args.only, findings=args.findings)
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
