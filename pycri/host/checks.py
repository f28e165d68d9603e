"""Host prerequisites, checked by ``pycri doctor`` and at daemon start.

Each check returns a :class:`Check` with what was found and, when it fails, how
to fix it. ``FATAL`` checks stop the daemon; ``ERROR`` ones make a feature
unavailable (the daemon reports it in Status); ``WARN`` ones are degradations.
Besides the prerequisites, the node's picture: cgroup driver against kubelet's,
free space and inodes for kubelet's eviction thresholds, the CNI network pods
will get, and other CRI runtimes' sockets kubelet could be pointed at instead.
"""

from __future__ import annotations

import enum
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pycri.config import Config
from pycri.host import cgroups

NAMESPACES = ("mnt", "uts", "ipc", "pid", "net", "user", "cgroup")
# kubeadm's and most distributions' place for kubelet's KubeletConfiguration.
KUBELET_CONFIGS = (Path("/var/lib/kubelet/config.yaml"), Path("/etc/kubernetes/kubelet.conf.yaml"))
# Other CRI runtimes' default sockets.
OTHER_RUNTIMES = (
    ("containerd", Path("/run/containerd/containerd.sock")),
    ("CRI-O", Path("/run/crio/crio.sock")),
    ("cri-dockerd", Path("/run/cri-dockerd.sock")),
)
# kubelet's default hard eviction thresholds: nodefs.available<10%, imagefs.available<15%, nodefs.inodesFree<5%.
EVICTION_SPACE, EVICTION_INODES = 0.15, 0.05
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
CAP_SYS_RESOURCE = 24


class Severity(enum.Enum):
    OK = "ok"
    WARN = "warn"
    ERROR = "error"
    FATAL = "fatal"


@dataclass(frozen=True)
class Check:
    name: str
    severity: Severity
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.severity is Severity.OK

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data


def _ok(name: str, detail: str) -> Check:
    return Check(name, Severity.OK, detail)


def check_namespaces(proc: Path = Path("/proc/self/ns")) -> Check:
    missing = [ns for ns in NAMESPACES if not (proc / ns).exists()]
    if missing:
        return Check(
            "kernel namespaces",
            Severity.FATAL,
            f"missing: {', '.join(missing)}",
            "use a kernel built with CONFIG_NAMESPACES and all namespace types",
        )
    return _ok("kernel namespaces", ", ".join(NAMESPACES))


def check_overlayfs(filesystems: Path = Path("/proc/filesystems")) -> Check:
    text = filesystems.read_text() if filesystems.exists() else ""
    if any(line.split()[-1:] == ["overlay"] for line in text.splitlines()):
        return _ok("overlayfs", "overlay filesystem available")
    return Check(
        "overlayfs", Severity.ERROR, "overlay is not in /proc/filesystems", "modprobe overlay (and add it to /etc/modules-load.d)"
    )


def check_cgroups(mounts: Path = Path("/proc/self/mounts")) -> Check:
    found = cgroups.detect(mounts)
    if found.layout is cgroups.Layout.NONE:
        return Check("cgroups", Severity.FATAL, "no cgroup filesystem mounted", "mount cgroup2 on /sys/fs/cgroup")
    if found.layout is cgroups.Layout.V2:
        return _ok("cgroups", f"v2 (unified) at {found.unified}")
    needed = {"cpu", "memory", "pids", "cpuset"} - set(found.v1)
    detail = f"{found.layout.value}: v1 controllers {', '.join(sorted(found.v1))}"
    if found.unified:
        detail += f"; unified v2 at {found.unified}"
    if needed:
        return Check(
            "cgroups",
            Severity.ERROR,
            detail + f"; missing {', '.join(sorted(needed))}",
            "mount the missing v1 controllers or boot with cgroup v2",
        )
    return _ok("cgroups", detail)


def check_binary(name: str, path: str, fix: str, severity: Severity = Severity.ERROR) -> Check:
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return _ok(name, path)
    return Check(name, severity, f"{path} not found or not executable", fix)


def find_cni_plugin(plugin: str, bin_dirs: Iterable[str]) -> str | None:
    for directory in bin_dirs:
        candidate = os.path.join(directory, plugin)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def check_cni_plugins(bin_dirs: list[str]) -> Check:
    missing = [p for p in CNI_PLUGINS if find_cni_plugin(p, bin_dirs) is None]
    if missing:
        return Check(
            "CNI plugins",
            Severity.ERROR,
            f"not found in {':'.join(bin_dirs)}: {', '.join(missing)}",
            "apt-get install containernetworking-plugins",
        )
    return _ok("CNI plugins", ", ".join(CNI_PLUGINS))


def check_writable_dir(name: str, path: str) -> Check:
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".pycri-doctor-"):
            pass
    except OSError as exc:
        return Check(name, Severity.FATAL, f"{path}: {exc.strerror}", f"run as root, or set {name} to a writable directory")
    return _ok(name, f"{path} writable")


def has_capability(cap: int, status: Path = Path("/proc/self/status")) -> bool:
    for line in status.read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> cap & 1)
    return False


def check_sys_resource() -> Check:
    if has_capability(CAP_SYS_RESOURCE):
        return _ok("CAP_SYS_RESOURCE", "negative oom_score_adj can be set")
    return Check(
        "CAP_SYS_RESOURCE",
        Severity.WARN,
        "missing: oom_score_adj below the daemon's own is clamped to it",
        "run pycri with CAP_SYS_RESOURCE to honour negative oom_score_adj",
    )


def kubelet_cgroup_driver(path: Path) -> str | None:
    """``cgroupDriver`` of a KubeletConfiguration file ("cgroupfs", kubelet's default, when unset); None without one."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    return str(doc.get("cgroupDriver") or "cgroupfs")


def check_cgroup_driver(
    cfg: Config,
    kubelet_configs: Iterable[Path] = KUBELET_CONFIGS,
    mounts: Path = Path("/proc/self/mounts"),
    systemd_dir: Path = Path("/run/systemd/system"),
) -> Check:
    layout = cgroups.detect(mounts).layout.value
    systemd = systemd_dir.is_dir()
    detail = f"pycri uses {cfg.cgroup_driver} on cgroup {layout}" + (" (systemd is PID 1)" if systemd else " (no systemd)")
    for path in kubelet_configs:
        wanted = kubelet_cgroup_driver(path)
        if wanted is None:
            continue
        if wanted != cfg.cgroup_driver:
            return Check(
                "cgroup driver",
                Severity.ERROR,
                f"{detail}; kubelet ({path}) expects {wanted}",
                f"set cgroupDriver: {cfg.cgroup_driver} in {path}, then restart kubelet",
            )
        return _ok("cgroup driver", f"{detail}; kubelet ({path}) agrees")
    return _ok(
        "cgroup driver",
        f"{detail}; no kubelet configuration found: give kubelet cgroupDriver: {cfg.cgroup_driver} "
        "(newer kubelets ask the runtime through RuntimeConfig)",
    )


def check_free_space(path: str) -> Check:
    existing = Path(path)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        st = os.statvfs(existing)
    except OSError as exc:
        return Check("free space", Severity.WARN, f"{path}: {exc.strerror}", "check that the file system is mounted")
    space = st.f_bavail / st.f_blocks if st.f_blocks else 1.0
    inodes = st.f_favail / st.f_files if st.f_files else 1.0  # 0 files: a file system without an inode limit
    detail = f"{path}: {st.f_bavail * st.f_frsize / 2**30:.1f} GiB free ({space:.0%}), " + (
        f"{st.f_favail} inodes free ({inodes:.0%})" if st.f_files else "no inode limit"
    )
    if space < EVICTION_SPACE or inodes < EVICTION_INODES:
        return Check(
            "free space",
            Severity.WARN,
            detail + "; kubelet evicts pods and removes images below 15% space or 5% inodes",
            f"free space on the file system of {path}, or move root_dir to a larger one",
        )
    return _ok("free space", detail)


def check_cni_network(cfg: Config) -> Check:
    from pycri.network import cni  # it imports this module

    networks, problems = cni.load_networks(Path(cfg.cni.conf_dir))
    if not networks:
        detail = f"no network in {cfg.cni.conf_dir}" + (f" ({'; '.join(problems)})" if problems else "")
        return _ok(
            "CNI network",
            f"{detail}: pycri writes {cni.DEFAULT_NETWORK_FILE} at start "
            f"(bridge {cfg.cni.default_bridge}, subnet {cfg.cni.default_subnet})",
        )
    default = networks[0]
    subnets = ", ".join(cni.subnets(default)) or "from the pod CIDR kubelet sends"
    detail = f"{default.name!r} from {default.source}: {' → '.join(default.plugin_types)}; subnet {subnets}"
    missing = [p for p in default.plugin_types if find_cni_plugin(p, cfg.cni.bin_dirs) is None]
    if missing:
        return Check(
            "CNI network",
            Severity.ERROR,
            f"{detail}; plugins not found in {':'.join(cfg.cni.bin_dirs)}: {', '.join(missing)}",
            "install the plugins (apt-get install containernetworking-plugins) or add their directory to cni.bin_dirs",
        )
    return _ok("CNI network", detail)


def check_other_runtimes(cfg: Config, candidates: Iterable[tuple[str, Path]] = OTHER_RUNTIMES) -> Check:
    import socket

    serving = []
    for name, path in candidates:
        if not path.exists() or str(path) == cfg.socket:
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(str(path))
            except OSError:
                continue
        serving.append(f"{name} ({path})")
    if serving:
        return Check(
            "other CRI runtimes",
            Severity.WARN,
            f"also serving on this node: {', '.join(serving)}",
            f"point kubelet at pycri: --container-runtime-endpoint unix://{cfg.socket}",
        )
    return _ok("other CRI runtimes", "none serving")


def run_all(cfg: Config) -> list[Check]:
    checks = [
        check_namespaces(),
        check_overlayfs(),
        check_cgroups(),
        check_writable_dir("root_dir", cfg.root_dir),
        check_writable_dir("state_dir", cfg.state_dir),
        check_writable_dir("socket directory", str(Path(cfg.socket).parent)),
    ]
    for name, handler in cfg.runtimes.items():
        severity = Severity.ERROR if name == cfg.default_runtime else Severity.WARN
        checks.append(check_binary(f"runtime {name}", handler.path, f"apt-get install {Path(handler.path).name}", severity))
    checks.append(check_binary("conmon", cfg.conmon, "apt-get install conmon"))
    checks.append(check_binary("infra process", cfg.infra_command[0], "apt-get install catatonit"))
    checks.append(check_cni_plugins(cfg.cni.bin_dirs))
    criu = shutil.which("criu") or "/usr/sbin/criu"
    checks.append(check_binary("criu", criu, "apt-get install criu (needed for checkpoints only)", Severity.WARN))
    checks.append(check_sys_resource())
    checks.append(check_cgroup_driver(cfg))
    checks.append(check_free_space(cfg.root_dir))
    checks.append(check_cni_network(cfg))
    checks.append(check_other_runtimes(cfg))
    return checks


def max_nofile(wanted: int) -> int:
    """RLIMIT_NOFILE a container can get: ``wanted``, or this process's hard limit when it cannot raise it."""
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or has_capability(CAP_SYS_RESOURCE):
        return wanted
    return min(wanted, hard)


def own_oom_score_adj() -> int:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def clamp_oom_score_adj(wanted: int) -> int:
    """An oom_score_adj the runtime can set: without CAP_SYS_RESOURCE it cannot go below the daemon's own."""
    if wanted >= 0 or has_capability(CAP_SYS_RESOURCE):
        return wanted
    return max(wanted, own_oom_score_adj())
