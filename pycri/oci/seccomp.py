"""Seccomp profiles for ``linux.seccomp``: the runtime default, Localhost files, and the CRI choice between them.

``DEFAULT_PROFILE`` is Docker's default profile (moby ``profiles/seccomp/default.json``,
the list containerd's ``contrib/seccomp`` ``DefaultProfile`` also follows) kept in
moby's *template* format: an ``archMap`` for every architecture and syscall rules
with ``includes``/``excludes`` conditions on the host architecture, the kernel
version and the container's capabilities. ``default_profile`` specialises it the
way moby's ``setupSeccomp`` does and returns a plain OCI ``linux.seccomp`` object;
``load_localhost`` does the same for a profile file on the node (moby's format,
which is a superset of the OCI one, so plain OCI profiles load too); ``resolve``
picks one from a container's security context the way containerd's CRI plugin does.

Upstream choices reproduced on purpose (the profile is an allow list; everything
else fails with EPERM):

* ``clone`` is allowed only without namespace flags (``CLONE_NEWNS|NEWUTS|NEWIPC|
  NEWUSER|NEWPID|NEWNET|NEWCGROUP`` masked to 0) unless ``CAP_SYS_ADMIN``;
  ``clone3`` fails with ENOSYS instead (its flags live in memory seccomp cannot
  read), so glibc and other libcs fall back to ``clone``.
* ``socket`` is allowed for every address family except AF_ALG (38) and AF_VSOCK
  (40), written as three single-condition ranges because runc ORs repeated
  conditions on the same argument.
* ``personality`` only with PER_LINUX, PER_LINUX32, UNAME26 and their combinations
  and the 0xffffffff query.
* io_uring (``io_uring_setup/enter/register``) is not allowed: moby removed it
  from the default profile in 2023 (containerd did the same).
* ``ptrace``, ``process_vm_readv`` and ``process_vm_writev`` are allowed on kernels
  >= 4.8 (``minKernel``): from 4.8 on, seccomp is re-checked after a tracer
  changes a syscall, so ptrace no longer bypasses the filter, and ptrace itself
  stays subject to the kernel's usual permission checks (same uid, YAMA). Older
  kernels, and ``kcmp``/``pidfd_getfd``/``process_madvise`` everywhere, need
  ``CAP_SYS_PTRACE``.
* Never allowed without the matching capability: mount/umount2/unshare/setns/
  pivot-root-like new mount API (CAP_SYS_ADMIN), reboot (CAP_SYS_BOOT), module
  loading (CAP_SYS_MODULE), bpf (CAP_BPF or CAP_SYS_ADMIN), perf_event_open
  (CAP_PERFMON or CAP_SYS_ADMIN), syslog (CAP_SYSLOG or CAP_SYS_ADMIN), acct,
  clock_settime/settimeofday, iopl/ioperm, chroot, open_by_handle_at... And never
  at all: keyctl, add_key, request_key, kexec_load, swapon/swapoff, pivot_root,
  userfaultfd, io_uring, lookup of kernel symbols, etc.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import platform
import re
from collections.abc import Collection, Mapping
from typing import Any, TypeGuard

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument, NotFound

# -- the profile -----------------------------------------------------------------------------------

# CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
AF_ALG = 38
AF_VSOCK = 40


def _words(text: str) -> list[str]:
    return text.split()


# Syscalls every container may make (moby default.json, first rule), in upstream order.
ALWAYS_ALLOWED = _words(
    """
    accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
    clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
    clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2 dup3 epoll_create
    epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2
    execve execveat exit exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
    fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fork
    fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
    futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents getdents64
    getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid
    getpgrp getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32 getrlimit
    get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid gettimeofday getuid getuid32
    getxattr getxattrat inotify_add_watch inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy
    io_getevents io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill
    landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
    listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat lstat64 madvise
    map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat mknod mknodat mlock mlock2
    mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64
    mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall
    munmap name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
    pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv
    preadv2 prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
    readlink readlinkat readv recv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr
    removexattrat rename renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
    rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait rt_sigtimedwait_time64
    rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam sched_get_priority_max
    sched_get_priority_min sched_getscheduler sched_rr_get_interval sched_rr_get_interval_time64
    sched_setaffinity sched_setattr sched_setparam sched_setscheduler sched_yield seccomp select semctl semget
    semop semtimedop semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
    setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority setregid setregid32
    setresgid setresgid32 setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
    set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown
    sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs
    statfs64 statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time timer_create
    timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
    timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 times tkill truncate truncate64
    ugetrlimit umask uname unlink unlinkat uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice
    wait4 waitid waitpid write writev
"""
)


def _allow(names: list[str], **extra: Any) -> dict[str, Any]:
    return {"names": names, "action": "SCMP_ACT_ALLOW", **extra}


def _arg(index: int, value: int, op: str) -> dict[str, Any]:
    return {"index": index, "value": value, "op": op}


def _caps(*caps: str) -> dict[str, list[str]]:
    return {"caps": list(caps)}


DEFAULT_PROFILE: dict[str, Any] = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": errno.EPERM,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        {"architecture": "SCMP_ARCH_MIPS64", "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64N32"]},
        {"architecture": "SCMP_ARCH_MIPS64N32", "subArchitectures": ["SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64"]},
        {"architecture": "SCMP_ARCH_MIPSEL64", "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64N32"]},
        {"architecture": "SCMP_ARCH_MIPSEL64N32", "subArchitectures": ["SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64"]},
        {"architecture": "SCMP_ARCH_S390X", "subArchitectures": ["SCMP_ARCH_S390"]},
        {"architecture": "SCMP_ARCH_RISCV64", "subArchitectures": None},
        {"architecture": "SCMP_ARCH_LOONGARCH64", "subArchitectures": None},
    ],
    "syscalls": [
        _allow(ALWAYS_ALLOWED),
        _allow(["process_vm_readv", "process_vm_writev", "ptrace"], includes={"minKernel": "4.8"}),
        # Every address family but AF_ALG and AF_VSOCK (see the module docstring).
        _allow(["socket"], args=[_arg(0, AF_ALG, "SCMP_CMP_LT")]),
        _allow(["socket"], args=[_arg(0, AF_ALG + 1, "SCMP_CMP_EQ")]),
        _allow(["socket"], args=[_arg(0, AF_VSOCK, "SCMP_CMP_GT")]),
        # PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
        *(_allow(["personality"], args=[_arg(0, value, "SCMP_CMP_EQ")]) for value in (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)),
        _allow(["sync_file_range2", "swapcontext"], includes={"arches": ["ppc64le"]}),
        _allow(
            ["arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"],
            includes={"arches": ["arm", "arm64"]},
        ),
        _allow(["arch_prctl"], includes={"arches": ["amd64", "x32"]}),
        _allow(["modify_ldt"], includes={"arches": ["amd64", "x32", "x86"]}),
        _allow(["s390_pci_mmio_read", "s390_pci_mmio_write", "s390_runtime_instr"], includes={"arches": ["s390", "s390x"]}),
        _allow(["riscv_flush_icache"], includes={"arches": ["riscv64"]}),
        _allow(["open_by_handle_at"], includes=_caps("CAP_DAC_READ_SEARCH")),
        _allow(
            [
                "bpf",
                "clone",
                "clone3",
                "fanotify_init",
                "fsconfig",
                "fsmount",
                "fsopen",
                "fspick",
                "lookup_dcookie",
                "lsm_get_self_attr",
                "lsm_list_modules",
                "lsm_set_self_attr",
                "mount",
                "mount_setattr",
                "move_mount",
                "open_tree",
                "perf_event_open",
                "quotactl",
                "quotactl_fd",
                "setdomainname",
                "sethostname",
                "setns",
                "syslog",
                "umount",
                "umount2",
                "unshare",
            ],
            includes=_caps("CAP_SYS_ADMIN"),
        ),
        _allow(
            ["clone"],
            args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
            excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]},
        ),
        _allow(
            ["clone"],
            args=[_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ")],
            comment="s390 parameter ordering for clone is different",
            includes={"arches": ["s390", "s390x"]},
            excludes=_caps("CAP_SYS_ADMIN"),
        ),
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS, "excludes": _caps("CAP_SYS_ADMIN")},
        _allow(["reboot"], includes=_caps("CAP_SYS_BOOT")),
        _allow(["chroot"], includes=_caps("CAP_SYS_CHROOT")),
        _allow(["delete_module", "init_module", "finit_module"], includes=_caps("CAP_SYS_MODULE")),
        _allow(["acct"], includes=_caps("CAP_SYS_PACCT")),
        _allow(
            ["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"],
            includes=_caps("CAP_SYS_PTRACE"),
        ),
        _allow(["iopl", "ioperm"], includes=_caps("CAP_SYS_RAWIO")),
        _allow(["settimeofday", "stime", "clock_settime", "clock_settime64"], includes=_caps("CAP_SYS_TIME")),
        _allow(["vhangup"], includes=_caps("CAP_SYS_TTY_CONFIG")),
        _allow(["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"], includes=_caps("CAP_SYS_NICE")),
        _allow(["syslog"], includes=_caps("CAP_SYSLOG")),
        _allow(["bpf"], includes=_caps("CAP_BPF")),
        _allow(["perf_event_open"], includes=_caps("CAP_PERFMON")),
    ],
}

# -- vocabulary ------------------------------------------------------------------------------------

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"}
)
ARCHITECTURES = frozenset(
    {
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_LOONGARCH64",
    }
)
FLAGS = frozenset(
    {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    }
)

# platform.machine() -> libseccomp's native arch name (what includes/excludes "arches" use).
_MACHINE_TO_NATIVE = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i486": "x86",
    "i586": "x86",
    "i686": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "ppc64": "ppc64",
    "s390x": "s390x",
    "s390": "s390",
    "riscv64": "riscv64",
    "mips64": "mips64",
    "loongarch64": "loong64",
}
# libseccomp's native arch name -> the archMap entry to use.
_NATIVE_TO_SECCOMP = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "loong64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}

MAX_PROFILE_BYTES = 4 << 20
_PROFILE_NAME_PREFIX = "localhost/"


def native_arch(machine: str | None = None) -> str:
    """libseccomp's name for the host's architecture ("amd64", "arm64", ...)."""
    machine = (machine or platform.machine()).lower()
    if machine.startswith("arm") and machine not in _MACHINE_TO_NATIVE:
        return "arm"
    return _MACHINE_TO_NATIVE.get(machine, machine)


@functools.cache
def kernel_version() -> tuple[int, int]:
    """The running kernel's (version, major revision), e.g. (6, 1) for "6.1.0-18-amd64"; (0, 0) if unparsable."""
    return _parse_kernel_version(platform.release()) or (0, 0)


def _parse_kernel_version(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


# -- conversion (moby's setupSeccomp) --------------------------------------------------------------


class _ProfileError(Exception):
    """A problem with a profile document; callers wrap it into InvalidArgument naming the source."""


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _string_list(value: object, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _ProfileError(f"{where}: must be a list of strings")
    return list(value)


def _filter_matches(
    cond: object, where: str, *, include: bool, arch: str, caps: Collection[str], kernel: tuple[int, int]
) -> bool:
    """Whether an ``includes`` (all conditions hold) or ``excludes`` (any condition holds) filter fires."""
    if cond is None:
        return include
    if not isinstance(cond, dict):
        raise _ProfileError(f"{where}: must be an object")
    arches = _string_list(cond.get("arches"), f"{where}.arches")
    cap_list = _string_list(cond.get("caps"), f"{where}.caps")
    min_kernel_raw = cond.get("minKernel")
    min_kernel: tuple[int, int] | None = None
    if min_kernel_raw not in (None, ""):
        parsed = (
            _parse_kernel_version(min_kernel_raw)
            if isinstance(min_kernel_raw, str) and re.fullmatch(r"\d+\.\d+", min_kernel_raw)
            else None
        )
        if parsed is None or parsed == (0, 0):
            raise _ProfileError(f'{where}.minKernel: invalid kernel version {min_kernel_raw!r}, expected "<kernel>.<major>"')
        min_kernel = parsed
    if include:
        if arches and arch not in arches:
            return False
        if any(c not in caps for c in cap_list):
            return False
        return not (min_kernel is not None and kernel < min_kernel)
    if arches and arch in arches:
        return True
    if any(c in caps for c in cap_list):
        return True
    return min_kernel is not None and kernel >= min_kernel


def _convert_arg(raw: object, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _ProfileError(f"{where}: must be an object")
    index, value, value_two, op = raw.get("index"), raw.get("value", 0), raw.get("valueTwo", 0), raw.get("op")
    if not _is_int(index) or not 0 <= index <= 5:
        raise _ProfileError(f"{where}.index: must be an integer from 0 to 5, not {index!r}")
    for key, number in (("value", value), ("valueTwo", value_two)):
        if not _is_int(number) or not 0 <= number < 1 << 64:
            raise _ProfileError(f"{where}.{key}: must be an unsigned 64-bit integer, not {number!r}")
    if op not in OPERATORS:
        raise _ProfileError(f"{where}.op: unknown operator {op!r} (one of {', '.join(sorted(OPERATORS))})")
    arg: dict[str, Any] = {"index": index, "value": value}
    if value_two:
        arg["valueTwo"] = value_two
    arg["op"] = op
    return arg


def _check_errno(value: object, where: str) -> int:
    if not _is_int(value) or not 0 <= value <= 0xFFFF:
        raise _ProfileError(f"{where}: must be an errno number, not {value!r}")
    return value


def _convert_rule(raw: object, where: str, *, arch: str, caps: Collection[str], kernel: tuple[int, int]) -> dict[str, Any] | None:
    """One syscall rule in OCI form, or None when its conditions leave it out of this container's profile."""
    if not isinstance(raw, dict):
        raise _ProfileError(f"{where}: must be an object")
    name, names = raw.get("name"), raw.get("names")
    if name not in (None, ""):
        if names:
            raise _ProfileError(f"{where}: both 'name' and 'names' are set; use 'names'")
        if not isinstance(name, str):
            raise _ProfileError(f"{where}.name: must be a string")
        names = [name]
    names = _string_list(names, f"{where}.names")
    if not names or not all(names):
        raise _ProfileError(f"{where}.names: must list at least one syscall name, without empty names")
    action = raw.get("action")
    if action not in ACTIONS:
        raise _ProfileError(f"{where}.action: unknown action {action!r} (one of {', '.join(sorted(ACTIONS))})")
    args_raw = raw.get("args") or []
    if not isinstance(args_raw, list):
        raise _ProfileError(f"{where}.args: must be a list")
    args = [_convert_arg(a, f"{where}.args[{i}]") for i, a in enumerate(args_raw)]
    rule: dict[str, Any] = {"names": names, "action": action}
    if raw.get("errnoRet") is not None:
        rule["errnoRet"] = _check_errno(raw["errnoRet"], f"{where}.errnoRet")
    if args:
        rule["args"] = args
    # Validate both filters before deciding, so a bad condition is reported whatever the host.
    excluded = _filter_matches(raw.get("excludes"), f"{where}.excludes", include=False, arch=arch, caps=caps, kernel=kernel)
    included = _filter_matches(raw.get("includes"), f"{where}.includes", include=True, arch=arch, caps=caps, kernel=kernel)
    return rule if included and not excluded else None


def _architectures(doc: Mapping[str, Any], arch: str) -> list[str]:
    plain, arch_map = doc.get("architectures"), doc.get("archMap")
    if plain and arch_map:
        raise _ProfileError("both 'architectures' and 'archMap' are set; use one")
    if arch_map:
        if not isinstance(arch_map, list):
            raise _ProfileError("archMap: must be a list")
        wanted = _NATIVE_TO_SECCOMP.get(arch)
        chosen: list[str] = []
        for i, entry in enumerate(arch_map):
            if not isinstance(entry, dict) or not isinstance(entry.get("architecture"), str):
                raise _ProfileError(f"archMap[{i}]: must be an object with an 'architecture'")
            subs = _string_list(entry.get("subArchitectures"), f"archMap[{i}].subArchitectures")
            for a in (entry["architecture"], *subs):
                if a not in ARCHITECTURES:
                    raise _ProfileError(f"archMap[{i}]: unknown architecture {a!r}")
            if not chosen and entry["architecture"] == wanted:
                chosen = [entry["architecture"], *subs]
        return chosen
    archs = _string_list(plain, "architectures")
    for a in archs:
        if a not in ARCHITECTURES:
            raise _ProfileError(f"architectures: unknown architecture {a!r}")
    return archs


def _convert(
    doc: object, caps: Collection[str], *, arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A moby-format (or plain OCI) profile document -> the OCI ``linux.seccomp`` object for this host and caps."""
    if not isinstance(doc, dict):
        raise _ProfileError("the profile must be a JSON object")
    arch = arch or native_arch()
    kernel = kernel or kernel_version()
    default_action = doc.get("defaultAction")
    if default_action not in ACTIONS:
        raise _ProfileError(f"defaultAction: unknown or missing action {default_action!r} (one of {', '.join(sorted(ACTIONS))})")
    out: dict[str, Any] = {"defaultAction": default_action}
    if doc.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = _check_errno(doc["defaultErrnoRet"], "defaultErrnoRet")
    architectures = _architectures(doc, arch)
    if architectures:
        out["architectures"] = architectures
    flags = _string_list(doc.get("flags"), "flags")
    for f in flags:
        if f not in FLAGS:
            raise _ProfileError(f"flags: unknown flag {f!r}")
    if flags:
        out["flags"] = flags
    for key in ("listenerPath", "listenerMetadata"):
        value = doc.get(key)
        if value not in (None, ""):
            if not isinstance(value, str):
                raise _ProfileError(f"{key}: must be a string")
            out[key] = value
    rules_raw = doc.get("syscalls") or []
    if not isinstance(rules_raw, list):
        raise _ProfileError("syscalls: must be a list")
    rules = []
    for i, raw in enumerate(rules_raw):
        rule = _convert_rule(raw, f"syscalls[{i}]", arch=arch, caps=caps, kernel=kernel)
        if rule is not None:
            rules.append(rule)
    out["syscalls"] = rules
    return out


# -- public API ------------------------------------------------------------------------------------


def default_profile(capabilities: Collection[str]) -> dict[str, Any]:
    """``DEFAULT_PROFILE`` for a container with these capabilities (OCI names, e.g. "CAP_SYS_ADMIN").

    Pass the bounding set, as moby and containerd do: a rule ``includes`` a
    capability when it is in the set and is ``excludes``d when it is. The
    architectures and arch/kernel conditions follow the host.
    """
    return _convert(DEFAULT_PROFILE, frozenset(capabilities))


def load_localhost(path: str, capabilities: Collection[str] = ()) -> dict[str, Any]:
    """Read a Localhost profile file and return it as an OCI ``linux.seccomp`` object.

    The file is moby's format (``archMap``, ``names``/``name``, ``includes``/
    ``excludes``, ``comment``) or plain OCI (``architectures``, ``flags``...);
    conditional rules are evaluated for this host and ``capabilities``.
    Missing file -> NotFound naming the path; unreadable, bad JSON or bad fields ->
    InvalidArgument naming the path and the field.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"seccomp profile {path} not found") from None
    except OSError as exc:
        raise InvalidArgument(f"seccomp profile {path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidArgument(f"seccomp profile {path}: larger than {MAX_PROFILE_BYTES} bytes")
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"seccomp profile {path}: not valid JSON: {exc}") from None
    try:
        return _convert(doc, frozenset(capabilities))
    except _ProfileError as exc:
        raise InvalidArgument(f"seccomp profile {path}: {exc}") from None


def _load_for(path: str, capabilities: Collection[str], field: str) -> dict[str, Any]:
    if not os.path.isabs(path):
        raise InvalidArgument(f"{field}: a Localhost seccomp profile must be an absolute path on the node, not {path!r}")
    try:
        return load_localhost(path, capabilities)
    except NotFound as exc:
        raise NotFound(f"{field}: {exc.message}") from None
    except InvalidArgument as exc:
        raise InvalidArgument(f"{field}: {exc.message}") from None


def _legacy_field(field: str) -> str:
    parent, dot, _ = field.rpartition(".")
    return f"{parent}{dot}seccomp_profile_path"


def resolve(
    profile: api.SecurityProfile | None,
    legacy_path: str,
    capabilities: Collection[str],
    *,
    privileged: bool,
    field: str,
) -> dict[str, Any] | None:
    """The container's ``linux.seccomp`` object, or None to run it without seccomp.

    ``profile`` is the security context's ``seccomp`` message, or None when the
    field is absent (the caller checks ``HasField``: an empty message means
    RuntimeDefault). ``legacy_path`` is the deprecated ``seccomp_profile_path``,
    used only when ``profile`` is None. ``capabilities`` is the container's
    bounding set; ``field`` names ``profile`` in errors (the legacy field's name
    is derived from it: its sibling ``seccomp_profile_path``).

    Like containerd (and as Kubernetes documents), a privileged container never
    gets a seccomp filter, even when a profile was requested; the request is not
    validated either. Neither field set -> no filter (containerd's default
    ``unset_seccomp_profile = ""``; kubelet always sends ``seccomp``).
    """
    if privileged:
        return None
    if profile is not None:
        kind, ref = profile.profile_type, profile.localhost_ref
        if kind != api.SecurityProfile.Localhost and ref:
            raise InvalidArgument(f"{field}: localhost_ref may only be set when profile_type is Localhost")
        if kind == api.SecurityProfile.RuntimeDefault:
            return default_profile(capabilities)
        if kind == api.SecurityProfile.Unconfined:
            return None
        if kind == api.SecurityProfile.Localhost:
            path = ref.removeprefix(_PROFILE_NAME_PREFIX)
            if not path:
                raise InvalidArgument(f"{field}: profile_type Localhost needs localhost_ref, the profile's path on the node")
            return _load_for(path, capabilities, f"{field}.localhost_ref")
        raise InvalidArgument(f"{field}: unknown profile_type {kind}")
    legacy_field = _legacy_field(field)
    if legacy_path in ("", "unconfined"):
        return None
    if legacy_path in ("runtime/default", "docker/default"):
        return default_profile(capabilities)
    if legacy_path.startswith(_PROFILE_NAME_PREFIX):
        return _load_for(legacy_path.removeprefix(_PROFILE_NAME_PREFIX), capabilities, legacy_field)
    raise InvalidArgument(
        f"{legacy_field}: invalid seccomp profile {legacy_path!r}: use 'runtime/default', 'docker/default',"
        " 'unconfined' or 'localhost/<absolute path>'"
    )
