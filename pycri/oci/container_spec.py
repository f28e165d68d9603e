"""The OCI runtime spec (config.json) of a CRI container: pure functions, no I/O.

The caller gathers everything that needs the disk or the host (the user from
the image's /etc/passwd, device nodes, the seccomp profile, host limits) into
a ``SpecInput``; ``build`` turns it into the spec. The behaviour follows
containerd's CRI plugin (internal/cri/server/container_create*.go and
internal/cri/opts/spec_*.go) unless a comment says otherwise:

* process args: Kubernetes' command/args over the image's Entrypoint/Cmd;
* env: default PATH, TERM for a TTY, HOSTNAME, the image's Env, then the
  request's envs, a later value of a key replacing an earlier one in place;
* mounts: the standard ones, the pod's /etc/hostname, /etc/hosts,
  /etc/resolv.conf and /dev/shm, then kubelet's mounts, which win at the same
  destination; kubelet's and the pod's bind mounts are ordered by depth so a
  parent is mounted before what lies below it;
* the container joins the infra container's network, IPC, UTS and (for pod
  PID mode) PID namespaces, and gets its own mount and (cgroup v2,
  unprivileged) cgroup namespaces;
* masked and read-only paths are exactly the request's lists (kubelet sends
  the defaults unless procMount is Unmasked); none when privileged.

Request errors are ``errors.InvalidArgument`` naming the field.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.oci import capabilities
from pycri.oci import cdi as cdi_mod
from pycri.oci.spec import DEFAULT_NOFILE, Namespaces, base_spec, default_mounts
from pycri.oci.userns import IDMapping, UserNamespace

__all__ = [
    "ALLOWED_DEVICE_RULES",
    "DEFAULT_NOFILE",
    "DEFAULT_PATH_ENV",
    "HostDevice",
    "ResolvedUser",
    "SandboxInfo",
    "SpecInput",
    "build",
    "cgroups_path",
    "check_image_mount",
    "environment",
    "process_args",
]

DEFAULT_PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

SC_FIELD = "config.linux.security_context"
NS_FIELD = f"{SC_FIELD}.namespace_options"

# Annotations containerd puts on every container (internal/cri/annotations).
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
CONTAINER_NAME = "io.kubernetes.cri.container-name"
IMAGE_NAME = "io.kubernetes.cri.image-name"
LOG_PATH = "io.pycri.container.log-path"

MAX_ID = 2**31 - 1  # runc's limit on uids and gids

# Device cgroup rules every container gets: runc's specconv.AllowedDevices (which
# runc also adds itself; listed here so every runtime sees the same rules).
ALLOWED_DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": True, "type": "c", "access": "m"},  # mknod of any char device
    {"allow": True, "type": "b", "access": "m"},  # mknod of any block device
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},  # /dev/full
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},  # /dev/pts/*
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},  # /dev/ptmx
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},  # /dev/net/tun
]

# Options kubelet's Mount.mount_options may not carry: the structured fields decide them.
RESERVED_MOUNT_OPTIONS = frozenset(
    {"ro", "rw", "rro", "private", "rprivate", "slave", "rslave", "shared", "rshared", "unbindable", "runbindable"}
)

PROPAGATION_OPTIONS = {
    api.PROPAGATION_PRIVATE: "rprivate",
    api.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass
class SandboxInfo:
    """What a container needs to know about its pod."""

    id: str
    infra_pid: int
    netns: str
    pod_dir: str
    host_network: bool
    host_ipc: bool
    host_pid: bool
    cgroup_parent: str
    config: api.PodSandboxConfig
    userns_path: str = ""  # the pod's pinned user namespace ("" for the host's)
    userns: UserNamespace | None = None  # its mappings


@dataclass
class ResolvedUser:
    """The process identity: ``additional_gids`` never contains ``gid`` (see ``pycri.containers.users``)."""

    uid: int
    gid: int
    additional_gids: list[int] = field(default_factory=list)
    username: str = ""


@dataclass
class HostDevice:
    """A device node on the host: ``type`` is 'c' (char), 'b' (block) or 'p' (FIFO)."""

    path: str
    type: str
    major: int
    minor: int
    file_mode: int
    uid: int
    gid: int


@dataclass
class SpecInput:
    container_id: str
    config: api.ContainerConfig
    sandbox: SandboxInfo
    image_config: dict[str, Any]  # the "config" object of the OCI image config
    rootfs: str
    user: ResolvedUser
    seccomp: dict[str, Any] | None
    devices: list[tuple[HostDevice, str, str]]  # (host device, container path, cgroup permissions)
    privileged_devices: list[HostDevice]  # every host device, for a privileged container
    image_mounts: dict[int, str]  # mounts[i] (an image volume) -> host path to bind, image_sub_path resolved inside it
    bind_sources: dict[int, str] = field(default_factory=dict)  # mounts[i] -> its ID-mapped clone (user namespace)
    cdi: list[cdi_mod.Edits] = field(default_factory=list)  # the requested CDI devices' edits, applied last
    target_pid: int = 0  # the target container's pid, for PID namespace mode TARGET
    nofile: int = DEFAULT_NOFILE
    min_oom_score_adj: int = -1000  # the lowest oom_score_adj pycri may give (clamp_oom_score_adj)
    supports_rro: bool = False  # the runtime handler knows the "rro" mount option
    log_path: str = ""
    apparmor_available: bool = False
    apparmor_default_profile: str = ""  # the profile for RuntimeDefault when AppArmor is available
    node_hostname: str = ""  # HOSTNAME when the pod has none (host network)
    cgroup_v2: bool = True  # unprivileged containers get a cgroup namespace on v2 only
    swap_controller: bool = True  # memory.swap limits can be set
    hugetlb_controller: bool = True  # hugepage limits can be set (skipped otherwise, as containerd's default)
    # Options of the host's cgroup2 mount a container without a cgroup namespace must repeat when it
    # mounts cgroup2 (the mount options are the superblock's): "nsdelegate", "memory_recursiveprot".
    host_cgroup_options: tuple[str, ...] = ()


# -- process -------------------------------------------------------------------------------------


def _strings(value: Any) -> list[str]:
    if not value:
        return []
    return [str(v) for v in value]


def process_args(config: api.ContainerConfig, image_config: Mapping[str, Any]) -> list[str]:
    """Kubernetes' rules: ``command`` replaces the image's Entrypoint and ``args`` its Cmd.

    A command without args runs alone (the image's Cmd belongs to its Entrypoint and is dropped).
    """
    command, args = list(config.command), list(config.args)
    if not command:
        entrypoint = _strings(image_config.get("Entrypoint"))
        if entrypoint == [""]:  # `ENTRYPOINT [""]` clears it, as in Docker
            entrypoint = []
        command = entrypoint
        if not args:
            args = _strings(image_config.get("Cmd"))
    result = command + args
    if not result:
        raise errors.InvalidArgument("config.command: no command given and the image has none")
    return result


def _merge_env(into: list[str], entries: Iterable[str]) -> list[str]:
    """containerd's replaceOrAppendEnvValues: replace a key in place, else append; "KEY" alone unsets it.

    Unlike containerd, a key appended earlier is also replaced (containerd would keep both,
    and runc then takes the last), so the result has each key once.
    """
    result: list[str | None] = list(into)
    index = {e.partition("=")[0]: i for i, e in enumerate(into)}
    for entry in entries:
        key, sep, _ = entry.partition("=")
        if not key:
            continue
        if not sep:
            if key in index:
                result[index.pop(key)] = None
            continue
        if key in index:
            result[index[key]] = entry
        else:
            index[key] = len(result)
            result.append(entry)
    return [e for e in result if e is not None]


def environment(config: api.ContainerConfig, image_config: Mapping[str, Any], hostname: str = "") -> list[str]:
    """The process environment: PATH, TERM (with a TTY), HOSTNAME, the image's Env, the request's envs."""
    env = [DEFAULT_PATH_ENV]
    if config.tty:
        env.append("TERM=xterm")
    if hostname:
        env.append(f"HOSTNAME={hostname}")
    overrides = _strings(image_config.get("Env"))
    for i, kv in enumerate(config.envs):
        if not kv.key or "=" in kv.key:
            raise errors.InvalidArgument(f"config.envs[{i}].key: {kv.key!r} is not a variable name")
        overrides.append(f"{kv.key}={kv.value.decode('utf-8', 'surrogateescape')}")
    return _merge_env(env, overrides)


def _cwd(config: api.ContainerConfig, image_config: Mapping[str, Any]) -> str:
    if config.working_dir:
        if not config.working_dir.startswith("/"):
            raise errors.InvalidArgument(f"config.working_dir: {config.working_dir!r} must be an absolute path")
        return config.working_dir
    image_dir = str(image_config.get("WorkingDir") or "")
    return posixpath.join("/", image_dir) if image_dir else "/"


def _apparmor(security: api.LinuxContainerSecurityContext, inp: SpecInput) -> str | None:
    """The AppArmor profile to set, if any (containerd's GenerateApparmorSpecOpts)."""
    what = f"{SC_FIELD}.apparmor"
    profile: tuple[int, str] | None = None
    if security.HasField("apparmor"):
        profile = (security.apparmor.profile_type, security.apparmor.localhost_ref)
    elif security.apparmor_profile:
        what = f"{SC_FIELD}.apparmor_profile"
        name = security.apparmor_profile
        if name in ("runtime/default", "docker/default"):
            profile = (api.SecurityProfile.RuntimeDefault, "")
        elif name == "unconfined":
            profile = (api.SecurityProfile.Unconfined, "")
        elif name.startswith("localhost/"):
            profile = (api.SecurityProfile.Localhost, name.removeprefix("localhost/"))
        else:
            raise errors.InvalidArgument(f"{what}: invalid profile {name!r}")
    if not inp.apparmor_available:
        if profile is not None and profile[0] != api.SecurityProfile.Unconfined:
            raise errors.InvalidArgument(
                f"{what}: AppArmor is not available on this host; only an Unconfined profile can be honoured"
            )
        return None
    kind, ref = profile if profile is not None else (api.SecurityProfile.RuntimeDefault, "")
    if kind != api.SecurityProfile.Localhost and ref:
        raise errors.InvalidArgument(f"{what}: localhost_ref is only for profile type Localhost")
    if kind == api.SecurityProfile.Unconfined:
        return None
    if kind == api.SecurityProfile.RuntimeDefault:
        if security.privileged or not inp.apparmor_default_profile:
            return None
        return inp.apparmor_default_profile
    if kind == api.SecurityProfile.Localhost:
        name = ref.removeprefix("localhost/")
        if not name:
            raise errors.InvalidArgument(f"{what}: profile type Localhost needs a localhost_ref")
        return name
    raise errors.InvalidArgument(f"{what}: unknown profile type {kind}")


def _check_id(value: int, what: str) -> int:
    if not 0 <= value <= MAX_ID:
        raise errors.InvalidArgument(f"{what}: {value} is outside 0..{MAX_ID}")
    return value


def _process(inp: SpecInput, spec_process: dict[str, Any], hostname: str) -> None:
    config, security = inp.config, inp.config.linux.security_context
    privileged = security.privileged
    user = inp.user
    _check_id(user.uid, "user id")
    _check_id(user.gid, "group id")
    spec_process["args"] = process_args(config, inp.image_config)
    spec_process["env"] = environment(config, inp.image_config, hostname)
    spec_process["cwd"] = _cwd(config, inp.image_config)
    spec_process["terminal"] = bool(config.tty)
    process_user: dict[str, Any] = {"uid": user.uid, "gid": user.gid}
    # The primary group first, then the others: leaving it out would let a "deny this group"
    # permission be bypassed (CVE-2023-25173; containerd, CRI-O and moby all include it).
    extra = [user.gid, *sorted({_check_id(g, "supplemental group") for g in user.additional_gids} - {user.gid})]
    if extra:
        process_user["additionalGids"] = extra
    spec_process["user"] = process_user
    userns = inp.sandbox.userns
    if userns is not None:
        _check_mapped(user.uid, userns.uid, f"{SC_FIELD}.run_as_user (uid {user.uid})")
        for g in extra or [user.gid]:
            _check_mapped(g, userns.gid, f"{SC_FIELD} (gid {g})")
    caps = security.capabilities
    spec_process["capabilities"] = capabilities.resolve(
        caps.add_capabilities,
        caps.drop_capabilities,
        caps.add_ambient_capabilities,
        privileged=privileged,
        run_as_root=user.uid == 0,
        field=f"{SC_FIELD}.capabilities",
    )
    spec_process["noNewPrivileges"] = bool(security.no_new_privs) and not privileged
    wanted = config.linux.resources.oom_score_adj
    spec_process["oomScoreAdj"] = min(max(wanted, inp.min_oom_score_adj), 1000)
    spec_process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": inp.nofile, "soft": inp.nofile}]
    apparmor = _apparmor(security, inp)
    if apparmor:
        spec_process["apparmorProfile"] = apparmor


def _check_mapped(value: int, mapping: IDMapping, what: str) -> None:
    if mapping.to_host(value) is None:
        last = mapping.container_id + mapping.size - 1
        raise errors.InvalidArgument(f"{what}: not mapped in the pod's user namespace ({mapping.container_id}..{last})")


# -- mounts ----------------------------------------------------------------------------------------


def _depth(path: str) -> int:
    return posixpath.normpath(path).count("/")


def _clean(path: str) -> str:
    cleaned = posixpath.normpath(path)
    return "/" + cleaned.lstrip("/") if cleaned.startswith("/") else cleaned


def _bind_options(mount: api.Mount, i: int, inp: SpecInput) -> tuple[list[str], str]:
    """Options of kubelet's mount ``i`` and the propagation it needs of the rootfs ("" for none)."""
    what = f"config.mounts[{i}]"
    propagation = PROPAGATION_OPTIONS.get(mount.propagation)
    if propagation is None:
        raise errors.InvalidArgument(f"{what}.propagation: unknown mode {mount.propagation}")
    options = ["rbind", propagation]
    if mount.readonly:
        if mount.recursive_read_only:
            if not inp.supports_rro:
                raise errors.InvalidArgument(
                    f"{what}.recursive_read_only: the runtime handler does not support recursive read-only mounts"
                )
            if mount.propagation != api.PROPAGATION_PRIVATE:
                raise errors.InvalidArgument(
                    f"{what}.recursive_read_only: a recursive read-only mount needs private propagation, "
                    f"not {api.MountPropagation.Name(mount.propagation)}"
                )
            options.append("rro")
        else:
            options.append("ro")
    else:
        if mount.recursive_read_only:
            raise errors.InvalidArgument(f"{what}.recursive_read_only: needs readonly (it conflicts with a read-write mount)")
        options.append("rw")
    for j, option in enumerate(mount.mount_options):
        if not option or "," in option:
            raise errors.InvalidArgument(f"{what}.mount_options[{j}]: {option!r} is not a mount option")
        if option in RESERVED_MOUNT_OPTIONS:
            raise errors.InvalidArgument(
                f"{what}.mount_options[{j}]: {option!r} contradicts the mount's readonly/propagation fields; set those instead"
            )
        options.append(option)
    rootfs = {api.PROPAGATION_HOST_TO_CONTAINER: "rslave", api.PROPAGATION_BIDIRECTIONAL: "rshared"}
    return options, rootfs.get(mount.propagation, "")


def check_image_mount(mount: api.Mount, i: int) -> None:
    """An image volume is read-only, and its sub path relative and without '..'."""
    what = f"config.mounts[{i}]"
    if not mount.readonly:
        raise errors.InvalidArgument(f"{what}.readonly: an image volume is always read-only")
    sub = mount.image_sub_path
    if sub and (sub.startswith("/") or ".." in sub.split("/")):
        raise errors.InvalidArgument(f"{what}.image_sub_path: {sub!r} must be a relative path inside the image, without '..'")


def _image_source(mount: api.Mount, i: int, inp: SpecInput) -> str:
    check_image_mount(mount, i)
    what = f"config.mounts[{i}]"
    source = inp.image_mounts.get(i)
    if not source:
        raise errors.InvalidArgument(f"{what}.image: image {mount.image.image!r} is not mounted")
    return source


def _container_mounts(inp: SpecInput) -> tuple[list[dict[str, Any]], set[str], str]:
    """kubelet's mounts as OCI mounts, their destinations and the rootfs propagation they need."""
    mounts: list[dict[str, Any]] = []
    rootfs_propagation = ""
    for i, mount in enumerate(inp.config.mounts):
        what = f"config.mounts[{i}]"
        if not mount.container_path:
            raise errors.InvalidArgument(f"{what}.container_path: required")
        if not mount.container_path.startswith("/"):
            raise errors.InvalidArgument(f"{what}.container_path: {mount.container_path!r} must be absolute")
        destination = _clean(mount.container_path)
        if destination == "/":
            raise errors.InvalidArgument(f"{what}.container_path: cannot mount over the root filesystem")
        _check_mount_mappings(mount, what, inp.sandbox.userns)
        # selinux_relabel is accepted and ignored: pycri runs without SELinux labels.
        if mount.HasField("image") and mount.image.image:
            source = _image_source(mount, i, inp)
        else:
            if not mount.host_path:
                raise errors.InvalidArgument(f"{what}.host_path: required")
            if not mount.host_path.startswith("/"):
                raise errors.InvalidArgument(f"{what}.host_path: {mount.host_path!r} must be absolute")
            source = inp.bind_sources.get(i, mount.host_path)
        options, needs = _bind_options(mount, i, inp)
        if needs == "rshared" or (needs == "rslave" and rootfs_propagation != "rshared"):
            rootfs_propagation = needs
        mounts.append({"destination": destination, "type": "bind", "source": source, "options": options})
    return mounts, {m["destination"] for m in mounts}, rootfs_propagation


def _check_mount_mappings(mount: api.Mount, what: str, userns: UserNamespace | None) -> None:
    """A mount's own ID mappings: in a pod user namespace, the pod's (the default); elsewhere, none."""
    for name, given, pod in (
        ("uidMappings", mount.uidMappings, userns.uid if userns else None),
        ("gidMappings", mount.gidMappings, userns.gid if userns else None),
    ):
        if not given:
            continue
        if pod is None:
            raise errors.InvalidArgument(f"{what}.{name}: ID-mapped mounts need a pod with its own user namespace")
        wanted = [IDMapping(m.container_id, m.host_id, m.length) for m in given]
        if wanted != [pod]:
            raise errors.InvalidArgument(f"{what}.{name}: only the pod's own mapping ({pod.line().strip()}) is supported")


def _pod_mounts(inp: SpecInput, taken: set[str]) -> list[dict[str, Any]]:
    """The pod's /etc/hostname, /etc/hosts and /etc/resolv.conf, unless kubelet mounts its own."""
    mode = "ro" if inp.config.linux.security_context.readonly_rootfs else "rw"
    mounts = []
    for name in ("hostname", "hosts", "resolv.conf"):
        destination = f"/etc/{name}"
        if destination in taken:
            continue
        source = posixpath.join(inp.sandbox.pod_dir, name)
        mounts.append({"destination": destination, "type": "bind", "source": source, "options": ["rbind", "rprivate", mode]})
    return mounts


def _standard_mounts(inp: SpecInput, taken: set[str], cgroupns: bool) -> list[dict[str, Any]]:
    """spec.default_mounts with the pod's /dev/shm, less those kubelet replaces (all of /dev if it mounts /dev)."""
    shm = "/dev/shm" if inp.sandbox.host_ipc else posixpath.join(inp.sandbox.pod_dir, "shm")
    privileged = inp.config.linux.security_context.privileged
    result = []
    for mount in default_mounts(shm):
        destination = mount["destination"]
        if destination in taken or ("/dev" in taken and destination.startswith("/dev/")):
            continue
        if mount["type"] in ("sysfs", "cgroup") and privileged:
            mount["options"] = ["rw" if o == "ro" else o for o in mount["options"]]
        if mount["type"] == "cgroup" and not cgroupns:
            mount["options"] = mount["options"] + [o for o in inp.host_cgroup_options if o not in mount["options"]]
        result.append(mount)
    return result


# -- namespaces ------------------------------------------------------------------------------------


def _namespaces(inp: SpecInput, cgroupns: bool) -> Namespaces:
    sandbox = inp.sandbox
    options = inp.config.linux.security_context.namespace_options
    if options.network == api.TARGET or options.ipc == api.TARGET:
        raise errors.InvalidArgument(f"{NS_FIELD}: TARGET is only valid for pid")
    _check_userns(options, sandbox.userns)
    if sandbox.infra_pid <= 0:
        raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} has no running infra container")
    proc = f"/proc/{sandbox.infra_pid}/ns"
    # Network, IPC and UTS are always the pod's (containerd ignores the container's own modes for them).
    entries: dict[str, str] = {}
    if not sandbox.host_network:
        entries["network"] = sandbox.netns or f"{proc}/net"
        entries["uts"] = f"{proc}/uts"
    if not sandbox.host_ipc:
        entries["ipc"] = f"{proc}/ipc"
    if options.pid == api.CONTAINER:
        entries["pid"] = ""
    elif options.pid == api.TARGET:
        if inp.target_pid <= 0:
            raise errors.InvalidArgument(f"{NS_FIELD}.target_id: the target container {options.target_id!r} is not running")
        entries["pid"] = f"/proc/{inp.target_pid}/ns/pid"
    elif not sandbox.host_pid:
        # POD, and NODE in a pod without host PID: containerd joins the pod's namespace for both.
        entries["pid"] = f"{proc}/pid"
    entries["mount"] = ""
    if cgroupns:
        entries["cgroup"] = ""
    if sandbox.userns is not None:
        entries["user"] = sandbox.userns_path or f"{proc}/user"
    return Namespaces(entries)


def _check_userns(options: api.NamespaceOption, pod: UserNamespace | None) -> None:
    """A container shares its pod's user namespace: what kubelet sends must say the same."""
    if not options.HasField("userns_options"):
        return
    userns = options.userns_options
    what = f"{NS_FIELD}.userns_options"
    if userns.mode not in (api.POD, api.NODE):
        raise errors.InvalidArgument(f"{what}.mode: must be POD or NODE")
    if pod is None:
        if userns.mode == api.POD:
            raise errors.InvalidArgument(f"{what}.mode: POD, but the pod sandbox has no user namespace of its own")
        return
    if userns.mode == api.NODE:
        raise errors.InvalidArgument(f"{what}.mode: NODE, but the pod sandbox has its own user namespace")
    for name, given, own in (("uids", userns.uids, pod.uid), ("gids", userns.gids, pod.gid)):
        if given and [IDMapping(m.container_id, m.host_id, m.length) for m in given] != [own]:
            raise errors.InvalidArgument(f"{what}.{name}: differ from the pod's ({own.line().strip()})")


# -- resources and devices -------------------------------------------------------------------------


def _resources(inp: SpecInput) -> dict[str, Any]:
    return linux_resources(
        inp.config.linux.resources, swap_controller=inp.swap_controller, hugetlb_controller=inp.hugetlb_controller
    )


def linux_resources(
    r: api.LinuxContainerResources,
    *,
    swap_controller: bool = True,
    hugetlb_controller: bool = True,
    what: str = "config.linux.resources",
) -> dict[str, Any]:
    """CRI LinuxContainerResources as OCI ``linux.resources`` (without device rules): for create and update."""
    resources: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if r.cpu_shares < 0 or r.cpu_period < 0:
        name = "cpu_shares" if r.cpu_shares < 0 else "cpu_period"
        raise errors.InvalidArgument(f"{what}.{name}: must not be negative")
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        resources["cpu"] = cpu
    memory: dict[str, Any] = {}
    if r.memory_limit_in_bytes < 0:
        raise errors.InvalidArgument(f"{what}.memory_limit_in_bytes: must not be negative")
    if r.memory_limit_in_bytes:
        memory["limit"] = r.memory_limit_in_bytes
        # containerd: memory+swap equal to memory, so the container does not swap unless asked to.
        if not r.memory_swap_limit_in_bytes and swap_controller:
            memory["swap"] = r.memory_limit_in_bytes
    if r.memory_swap_limit_in_bytes and swap_controller:
        memory["swap"] = r.memory_swap_limit_in_bytes
    if memory:
        resources["memory"] = memory
    if r.hugepage_limits and hugetlb_controller:
        limits = []
        for i, hp in enumerate(r.hugepage_limits):
            if not hp.page_size:
                raise errors.InvalidArgument(f"{what}.hugepage_limits[{i}].page_size: required")
            limits.append({"pageSize": hp.page_size, "limit": hp.limit})
        resources["hugepageLimits"] = limits
    if r.unified:
        resources["unified"] = dict(r.unified)
    return resources


def _check_access(access: str, what: str) -> str:
    access = access or "rwm"
    if not set(access) <= set("rwm"):
        raise errors.InvalidArgument(f"{what}: permissions {access!r} may only contain r, w and m")
    return "".join(c for c in "rwm" if c in access)


def _device(dev: HostDevice, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "type": dev.type,
        "major": dev.major,
        "minor": dev.minor,
        "fileMode": dev.file_mode,
        "uid": dev.uid,
        "gid": dev.gid,
    }


def _devices(inp: SpecInput) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and linux.resources.devices."""
    privileged = inp.config.linux.security_context.privileged
    devices: list[dict[str, Any]] = []
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}, *(dict(r) for r in ALLOWED_DEVICE_RULES)]
    for dev, container_path, permissions in inp.devices:
        if not container_path.startswith("/"):
            raise errors.InvalidArgument(f"config.devices: container path {container_path!r} must be absolute")
        if dev.type not in ("c", "b", "p"):
            raise errors.InvalidArgument(f"config.devices: {dev.path} has unknown device type {dev.type!r}")
        access = _check_access(permissions, f"config.devices ({dev.path})")
        devices.append(_device(dev, posixpath.normpath(container_path)))
        if dev.type != "p":  # FIFOs are not subject to the device cgroup
            rules.append({"allow": True, "type": dev.type, "major": dev.major, "minor": dev.minor, "access": access})
    if privileged:
        present = {d["path"] for d in devices}
        devices.extend(_device(dev, dev.path) for dev in inp.privileged_devices if dev.path not in present)
        rules = [{"allow": True, "access": "rwm"}]
    return devices, rules


# -- the spec ----------------------------------------------------------------------------------------


def cgroups_path(sandbox: SandboxInfo, container_id: str) -> str:
    """The container's cgroup: beside the infra container's, under the pod's cgroup parent."""
    parent = sandbox.cgroup_parent.rstrip("/") or "/pycri"
    return f"{parent}/pycri-{container_id}"


def _annotations(inp: SpecInput) -> dict[str, str]:
    config, md = inp.config, inp.sandbox.config.metadata
    annotations = dict(config.annotations)
    annotations.update(
        {
            SANDBOX_ID: inp.sandbox.id,
            SANDBOX_NAMESPACE: md.namespace,
            SANDBOX_UID: md.uid,
            SANDBOX_NAME: md.name,
            CONTAINER_NAME: config.metadata.name,
            IMAGE_NAME: config.image.user_specified_image or config.image.image,
            CONTAINER_TYPE: "container",
        }
    )
    if inp.log_path:
        annotations[LOG_PATH] = inp.log_path
    return annotations


def _paths(paths: Iterable[str], what: str) -> list[str]:
    result = []
    for i, path in enumerate(paths):
        if not path.startswith("/"):
            raise errors.InvalidArgument(f"{what}[{i}]: {path!r} must be absolute")
        result.append(path)
    return result


def build(inp: SpecInput) -> dict[str, Any]:
    """The container's config.json."""
    config = inp.config
    security = config.linux.security_context
    privileged = security.privileged
    if privileged and not inp.sandbox.config.linux.security_context.privileged:
        raise errors.InvalidArgument(f"{SC_FIELD}.privileged: the pod sandbox is not privileged")
    if not inp.rootfs.startswith("/"):
        raise errors.InvalidArgument(f"rootfs {inp.rootfs!r} must be an absolute path")

    spec = base_spec(inp.nofile)
    pod_hostname = inp.sandbox.config.hostname
    _process(inp, spec["process"], pod_hostname or inp.node_hostname)
    spec["root"] = {"path": inp.rootfs, "readonly": bool(security.readonly_rootfs)}
    if pod_hostname and not inp.sandbox.host_network:
        spec["hostname"] = pod_hostname
    else:
        del spec["hostname"]

    cgroupns = inp.cgroup_v2 and not privileged
    linux = spec["linux"]
    user_mounts, taken, rootfs_propagation = _container_mounts(inp)
    binds = [*user_mounts, *_pod_mounts(inp, taken)]
    binds.sort(key=lambda m: _depth(m["destination"]))  # stable: parents before children
    taken |= {m["destination"] for m in binds}
    spec["mounts"] = [*_standard_mounts(inp, taken, cgroupns), *binds]
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation

    linux["namespaces"] = _namespaces(inp, cgroupns).to_spec()
    linux["cgroupsPath"] = cgroups_path(inp.sandbox, inp.container_id)
    if inp.sandbox.userns is not None:
        linux.update(inp.sandbox.userns.to_spec())
    devices, rules = _devices(inp)
    linux["resources"] = {**_resources(inp), "devices": rules}
    if devices:
        linux["devices"] = devices
    if privileged:
        linux["maskedPaths"] = []
        linux["readonlyPaths"] = []
    else:
        linux["maskedPaths"] = _paths(security.masked_paths, f"{SC_FIELD}.masked_paths")
        linux["readonlyPaths"] = _paths(security.readonly_paths, f"{SC_FIELD}.readonly_paths")
    if inp.seccomp is not None:
        linux["seccomp"] = inp.seccomp
    spec["annotations"] = _annotations(inp)
    if inp.cdi:
        cdi_mod.apply(spec, inp.cdi)
    return spec
