from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import pytest

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument, NotFound
from pycri.oci import seccomp
from pycri.oci.spec import DEFAULT_CAPABILITIES

FIELD = "config.linux.security_context.seccomp"
CLONE_NS = 0x7E020000


def unconditionally_allowed(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def check_pure_oci(profile: dict[str, Any]) -> None:
    assert set(profile) <= {
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
    }
    for rule in profile["syscalls"]:
        assert set(rule) <= {"names", "action", "args", "errnoRet"}, rule
        for arg in rule.get("args", []):
            assert set(arg) <= {"index", "value", "valueTwo", "op"}


@pytest.fixture
def default() -> dict[str, Any]:
    return seccomp.default_profile(DEFAULT_CAPABILITIES)


def test_default_shape(default: dict[str, Any]) -> None:
    check_pure_oci(default)
    assert default["defaultAction"] == "SCMP_ACT_ERRNO"
    assert default["defaultErrnoRet"] == errno.EPERM
    assert len(seccomp.ALWAYS_ALLOWED) == len(set(seccomp.ALWAYS_ALLOWED)) > 350
    # The template itself is not modified by specialisation.
    assert "archMap" in seccomp.DEFAULT_PROFILE
    assert any("includes" in r for r in seccomp.DEFAULT_PROFILE["syscalls"])
    json.dumps(default)  # serialisable as config.json


@pytest.mark.parametrize(
    ("machine", "arches"),
    [
        ("x86_64", ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]),
        ("aarch64", ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]),
    ],
)
def test_architectures_follow_host(monkeypatch: pytest.MonkeyPatch, machine: str, arches: list[str]) -> None:
    monkeypatch.setattr("platform.machine", lambda: machine)
    profile = seccomp.default_profile(DEFAULT_CAPABILITIES)
    assert profile["architectures"] == arches
    allowed = unconditionally_allowed(profile)
    if machine == "x86_64":
        assert {"arch_prctl", "modify_ldt"} <= allowed
        assert "set_tls" not in allowed
    else:
        assert {"set_tls", "cacheflush", "arm_fadvise64_64"} <= allowed
        assert "arch_prctl" not in allowed


def test_default_allows_what_containers_need(default: dict[str, Any]) -> None:
    allowed = unconditionally_allowed(default)
    for name in (
        "read",
        "write",
        "openat",
        "execve",
        "execveat",
        "exit_group",
        "mmap",
        "futex",
        "rseq",
        "wait4",
        "vfork",
        "fork",
    ):
        assert name in allowed, name
    # chroot comes with the default CAP_SYS_CHROOT.
    assert "chroot" in allowed


def test_default_denies_dangerous_syscalls(default: dict[str, Any]) -> None:
    mentioned = {n for r in default["syscalls"] for n in r["names"]}
    for name in (
        "mount",
        "umount2",
        "unshare",
        "setns",
        "reboot",
        "kexec_load",
        "init_module",
        "finit_module",
        "keyctl",
        "add_key",
        "request_key",
        "bpf",
        "perf_event_open",
        "acct",
        "swapon",
        "pivot_root",
        "open_by_handle_at",
        "syslog",
        "clock_settime",
        "settimeofday",
        "kcmp",
        "pidfd_getfd",
        "io_uring_setup",
        "io_uring_enter",
        "userfaultfd",
        "iopl",
        "fsopen",
        "move_mount",
    ):
        assert name not in mentioned, name  # falls through to defaultAction: EPERM


def test_clone_without_namespaces_and_clone3_enosys(default: dict[str, Any]) -> None:
    (clone,) = rules_for(default, "clone")
    assert clone["action"] == "SCMP_ACT_ALLOW"
    assert clone["args"] == [{"index": 0, "value": CLONE_NS, "op": "SCMP_CMP_MASKED_EQ"}]
    (clone3,) = rules_for(default, "clone3")
    assert clone3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS}


def test_socket_and_personality_conditions(default: dict[str, Any]) -> None:
    sockets = rules_for(default, "socket")
    assert [r["args"] for r in sockets] == [
        [{"index": 0, "value": 38, "op": "SCMP_CMP_LT"}],
        [{"index": 0, "value": 39, "op": "SCMP_CMP_EQ"}],
        [{"index": 0, "value": 40, "op": "SCMP_CMP_GT"}],
    ]
    values = sorted(r["args"][0]["value"] for r in rules_for(default, "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_ptrace_follows_upstream_kernel_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "kernel_version", lambda: (6, 1))
    assert "ptrace" in unconditionally_allowed(seccomp.default_profile(DEFAULT_CAPABILITIES))
    monkeypatch.setattr(seccomp, "kernel_version", lambda: (4, 4))
    old = unconditionally_allowed(seccomp.default_profile(DEFAULT_CAPABILITIES))
    assert "ptrace" not in old
    assert "process_vm_readv" not in old
    assert "ptrace" in unconditionally_allowed(seccomp.default_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_PTRACE"]))


def test_sys_admin_unlocks_mount_and_namespaces() -> None:
    profile = seccomp.default_profile([*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"])
    allowed = unconditionally_allowed(profile)
    assert {"mount", "umount2", "unshare", "setns", "clone", "clone3", "bpf", "perf_event_open", "syslog"} <= allowed
    # The conditional clone and the clone3 ENOSYS rules are excluded with CAP_SYS_ADMIN.
    assert all(not r.get("args") for r in rules_for(profile, "clone"))
    assert all(r["action"] == "SCMP_ACT_ALLOW" for r in rules_for(profile, "clone3"))


@pytest.mark.parametrize(
    ("cap", "unlocked"),
    [
        ("CAP_SYS_PTRACE", {"kcmp", "pidfd_getfd", "process_madvise"}),  # ptrace: see the kernel-gate test
        ("CAP_SYS_MODULE", {"init_module", "finit_module", "delete_module"}),
        ("CAP_SYS_BOOT", {"reboot"}),
        ("CAP_SYS_TIME", {"settimeofday", "clock_settime"}),
        ("CAP_SYS_NICE", {"mbind", "set_mempolicy"}),
        ("CAP_SYS_PACCT", {"acct"}),
        ("CAP_SYS_RAWIO", {"iopl", "ioperm"}),
        ("CAP_DAC_READ_SEARCH", {"open_by_handle_at"}),
        ("CAP_BPF", {"bpf"}),
        ("CAP_PERFMON", {"perf_event_open"}),
        ("CAP_SYSLOG", {"syslog"}),
        ("CAP_SYS_TTY_CONFIG", {"vhangup"}),
    ],
)
def test_capability_blocks(cap: str, unlocked: set[str]) -> None:
    before = unconditionally_allowed(seccomp.default_profile(DEFAULT_CAPABILITIES))
    after = unconditionally_allowed(seccomp.default_profile([*DEFAULT_CAPABILITIES, cap]))
    assert not unlocked & before
    assert unlocked <= after
    assert "mount" not in after


def test_chroot_needs_sys_chroot() -> None:
    caps = [c for c in DEFAULT_CAPABILITIES if c != "CAP_SYS_CHROOT"]
    assert "chroot" not in unconditionally_allowed(seccomp.default_profile(caps))


# -- Localhost profiles ------------------------------------------------------------------------------

MOBY_STYLE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW", "comment": "basics"},
        {"name": "getpid", "action": "SCMP_ACT_ALLOW"},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13, "excludes": {"caps": ["CAP_FOWNER"]}},
        {"names": ["uname"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "99.0"}},
    ],
}

OCI_STYLE = {
    "defaultAction": "SCMP_ACT_LOG",
    "architectures": ["SCMP_ARCH_X86_64"],
    "flags": ["SECCOMP_FILTER_FLAG_LOG"],
    "syscalls": [
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        },
        {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
    ],
}


def write(tmp_path: Path, doc: object, name: str = "profile.json") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def test_load_moby_style(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    path = write(tmp_path, MOBY_STYLE)
    plain = seccomp.load_localhost(path)
    check_pure_oci(plain)
    assert plain["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert plain["defaultErrnoRet"] == 1
    assert plain["syscalls"] == [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["chmod"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
    ]
    with_caps = seccomp.load_localhost(path, ["CAP_SYS_ADMIN", "CAP_FOWNER"])
    assert [r["names"] for r in with_caps["syscalls"]] == [["read", "write", "exit_group"], ["getpid"], ["mount"]]


def test_load_oci_style(tmp_path: Path) -> None:
    profile = seccomp.load_localhost(write(tmp_path, OCI_STYLE))
    check_pure_oci(profile)
    assert profile == {
        "defaultAction": "SCMP_ACT_LOG",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS"},
        ],
    }


def test_load_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.json")
    with pytest.raises(NotFound, match=r"nope\.json"):
        seccomp.load_localhost(path)


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "JSON object"),
        ({"syscalls": []}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_NOPE"}, "defaultAction"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "ALLOW"}]}, r"syscalls\[0\]\.action"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": [], "action": "SCMP_ACT_ALLOW"}]}, r"syscalls\[0\]\.names"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": "read", "action": "SCMP_ACT_ALLOW"}]}, "list of strings"),
        (
            {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ALLOW"}]},
            "both 'name' and 'names'",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}
                ],
            },
            r"args\[0\]\.index",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "EQ"}]}],
            },
            r"args\[0\]\.op",
        ),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4"}}],
            },
            "minKernel",
        ),
        ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}, "unknown architecture"),
        (
            {
                "defaultAction": "SCMP_ACT_ERRNO",
                "architectures": ["SCMP_ARCH_X86_64"],
                "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": None}],
            },
            "both 'architectures' and 'archMap'",
        ),
        ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1}, "defaultErrnoRet"),
        ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_NOPE"]}, "unknown flag"),
    ],
)
def test_load_invalid(tmp_path: Path, doc: object, problem: str) -> None:
    path = write(tmp_path, doc)
    with pytest.raises(InvalidArgument, match=problem) as info:
        seccomp.load_localhost(path)
    assert path in info.value.message


def test_load_unreadable_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cannot read"):
        seccomp.load_localhost(str(tmp_path))  # a directory


# -- resolve -------------------------------------------------------------------------------------------


def sp(kind: int, ref: str = "") -> api.SecurityProfile:
    return api.SecurityProfile(profile_type=kind, localhost_ref=ref)  # type: ignore[arg-type]


def resolve(profile: api.SecurityProfile | None, legacy: str = "", *, privileged: bool = False) -> dict[str, Any] | None:
    return seccomp.resolve(profile, legacy, DEFAULT_CAPABILITIES, privileged=privileged, field=FIELD)


def test_resolve_profiles(tmp_path: Path, default: dict[str, Any]) -> None:
    assert resolve(sp(api.SecurityProfile.RuntimeDefault)) == default
    assert resolve(api.SecurityProfile()) == default  # an empty message is RuntimeDefault
    assert resolve(sp(api.SecurityProfile.Unconfined)) is None
    path = write(tmp_path, OCI_STYLE)
    assert resolve(sp(api.SecurityProfile.Localhost, path)) == seccomp.load_localhost(path)
    assert resolve(sp(api.SecurityProfile.Localhost, "localhost/" + path)) == seccomp.load_localhost(path)
    # The profile wins over the deprecated path.
    assert resolve(sp(api.SecurityProfile.Unconfined), "runtime/default") is None


def test_resolve_profile_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=FIELD) as info:
        resolve(sp(api.SecurityProfile.Localhost))
    assert "localhost_ref" in info.value.message
    with pytest.raises(InvalidArgument, match="localhost_ref may only be set"):
        resolve(sp(api.SecurityProfile.RuntimeDefault, "/x.json"))
    with pytest.raises(InvalidArgument, match="absolute path"):
        resolve(sp(api.SecurityProfile.Localhost, "profiles/x.json"))
    missing = str(tmp_path / "missing.json")
    with pytest.raises(NotFound, match=FIELD) as nf:
        resolve(sp(api.SecurityProfile.Localhost, missing))
    assert missing in nf.value.message
    with pytest.raises(InvalidArgument, match=FIELD):
        resolve(sp(api.SecurityProfile.Localhost, write(tmp_path, "{")))


def test_resolve_legacy_paths(tmp_path: Path, default: dict[str, Any]) -> None:
    assert resolve(None, "") is None
    assert resolve(None, "unconfined") is None
    assert resolve(None, "runtime/default") == default
    assert resolve(None, "docker/default") == default
    path = write(tmp_path, MOBY_STYLE)
    assert resolve(None, "localhost/" + path) == seccomp.load_localhost(path, DEFAULT_CAPABILITIES)
    legacy_field = "config.linux.security_context.seccomp_profile_path"
    for bad in ("runtime/other", "/abs/path.json", "localhost/relative.json"):
        with pytest.raises(InvalidArgument, match=legacy_field):
            resolve(None, bad)
    with pytest.raises(NotFound, match=legacy_field):
        resolve(None, "localhost/" + os.path.join(str(tmp_path), "gone.json"))


def test_privileged_never_gets_seccomp(tmp_path: Path) -> None:
    assert resolve(sp(api.SecurityProfile.RuntimeDefault), privileged=True) is None
    assert resolve(sp(api.SecurityProfile.Localhost, str(tmp_path / "missing.json")), privileged=True) is None
    assert resolve(None, "runtime/default", privileged=True) is None


def test_resolve_uses_capabilities() -> None:
    profile = seccomp.resolve(
        sp(api.SecurityProfile.RuntimeDefault), "", [*DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN"], privileged=False, field=FIELD
    )
    assert profile is not None
    assert "mount" in unconditionally_allowed(profile)
