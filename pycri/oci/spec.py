"""OCI runtime spec (config.json) generation: pure functions, no I/O.

``base_spec`` is what every pycri container starts from (the defaults runc's
``spec`` and containerd give: standard mounts, masked and read-only paths,
default capabilities and rlimits); ``infra_spec`` turns it into the pod's
infra container, which holds the pod's namespaces with ``catatonit -P``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

OCI_VERSION = "1.0.2-dev"

DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

DEFAULT_MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]

DEFAULT_READONLY_PATHS = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
]

# Sysctls a pod may set: those of the namespaces it owns.
NAMESPACED_SYSCTL_PREFIXES = {"net.": "network", "fs.mqueue.": "ipc", "kernel.shm": "ipc", "kernel.msg": "ipc"}
NAMESPACED_SYSCTLS = {"kernel.sem": "ipc"}


def default_mounts(shm_path: str | None) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
    ]
    if shm_path:
        mounts.append(
            {"destination": "/dev/shm", "type": "bind", "source": shm_path, "options": ["rbind", "nosuid", "noexec", "nodev"]}
        )
    else:
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            }
        )
    return mounts


DEFAULT_NOFILE = 1048576


def base_spec(nofile: int = DEFAULT_NOFILE) -> dict[str, Any]:
    """The common starting spec; ``nofile`` is RLIMIT_NOFILE (callers clamp it to what the host allows)."""
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPABILITIES),
                "effective": list(DEFAULT_CAPABILITIES),
                "permitted": list(DEFAULT_CAPABILITIES),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": False,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "",
        "mounts": [],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
        },
    }


@dataclass
class Namespaces:
    """Which namespaces to create (path "") or join (a /proc/<pid>/ns/* or netns path); absent ones are the host's."""

    entries: dict[str, str] = field(default_factory=dict)

    def to_spec(self) -> list[dict[str, str]]:
        order = ["pid", "network", "ipc", "uts", "mount", "cgroup", "user"]
        return [{"type": t, **({"path": self.entries[t]} if self.entries[t] else {})} for t in order if t in self.entries]


def sysctl_errors(sysctls: dict[str, str], host_network: bool, host_ipc: bool) -> list[str]:
    """Why each sysctl cannot be set in this pod (empty when all can)."""
    problems = []
    for name in sorted(sysctls):
        namespace = NAMESPACED_SYSCTLS.get(name)
        if namespace is None:
            namespace = next((ns for prefix, ns in NAMESPACED_SYSCTL_PREFIXES.items() if name.startswith(prefix)), None)
        if namespace is None:
            problems.append(f"{name}: not a namespaced sysctl; it would change the whole node")
        elif namespace == "network" and host_network:
            problems.append(f"{name}: a network sysctl needs the pod's own network namespace (hostNetwork is set)")
        elif namespace == "ipc" and host_ipc:
            problems.append(f"{name}: an IPC sysctl needs the pod's own IPC namespace (hostIPC is set)")
    return problems


@dataclass
class InfraOptions:
    infra_command: list[str]
    hostname: str
    namespaces: Namespaces
    cgroups_path: str
    sysctls: dict[str, str] = field(default_factory=dict)
    oom_score_adj: int | None = None
    uid: int = 65535
    gid: int = 65535
    readonly_rootfs: bool = True
    resources: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    shm_path: str | None = None
    nofile: int = DEFAULT_NOFILE
    id_mappings: dict[str, Any] = field(default_factory=dict)  # uidMappings/gidMappings of a pod user namespace


def infra_spec(opts: InfraOptions) -> dict[str, Any]:
    """The infra container: runs the host's infra binary, bind-mounted read-only, as its only process."""
    spec = base_spec(opts.nofile)
    binary = opts.infra_command[0]
    target = "/" + binary.rsplit("/", 1)[-1]
    process = spec["process"]
    process["args"] = [target, *opts.infra_command[1:]]
    process["user"] = {"uid": opts.uid, "gid": opts.gid}
    process["noNewPrivileges"] = True
    process["capabilities"] = {"bounding": [], "effective": [], "permitted": []}
    if opts.oom_score_adj is not None:
        process["oomScoreAdj"] = opts.oom_score_adj
    spec["root"] = {"path": "rootfs", "readonly": opts.readonly_rootfs}
    spec["hostname"] = opts.hostname if "uts" in opts.namespaces.entries else ""
    spec["mounts"] = [
        *default_mounts(opts.shm_path),
        {"destination": target, "type": "bind", "source": binary, "options": ["rbind", "ro", "nosuid", "nodev"]},
    ]
    linux = spec["linux"]
    linux["namespaces"] = opts.namespaces.to_spec()
    linux["cgroupsPath"] = opts.cgroups_path
    linux.update(copy.deepcopy(opts.id_mappings))
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    if opts.resources:
        linux["resources"] = copy.deepcopy(opts.resources) | {"devices": linux["resources"]["devices"]}
    spec["annotations"] = dict(opts.annotations)
    return spec
