"""Everything a client sends, checked before anything is recorded or run.

One table-driven walk over a request (:func:`check`): every string is free of NUL bytes and
no longer than its bound, every ``bytes`` field that stands for text is UTF-8 without NUL,
every enum value is one the API defines, every number listed in ``INTS`` is within its range,
every repeated field and map within its count, every map within its total size, and the
fields with a shape of their own (paths, host names, addresses, cgroup names) have it. A
request that breaks a rule is INVALID_ARGUMENT naming the field, as
``config.metadata.name: 1048576 bytes, at most 253`` (the offending value is never echoed
whole).

Rules are keyed ``"<Message>.<field>"`` by the short name of the message that holds the field,
so ``LinuxContainerResources.cpu_shares`` applies wherever the resources appear (a container's
config, UpdateContainerResources, a pod's resources and overhead); a field of a wrapper message
(``Int64Value.value``) is keyed through the field that holds it
(``LinuxContainerSecurityContext.run_as_user.value``).

The bounds admit everything Kubernetes accepts (pod names are DNS subdomains of at most 253
characters, namespaces and container names DNS labels of 63, label keys 63 with a 253-character
prefix, values 63 (kubelet's own labels carry the pod's name, so 253), annotations 256 KiB in
total) and keep everything within what the kernel takes: an argument or environment string
within ``MAX_ARG_STRLEN``, a whole command line and environment well within ``ARG_MAX``, path
components within ``NAME_MAX`` and paths within ``PATH_MAX``, a host name within
``HOST_NAME_MAX``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument

KiB = 1024
MiB = 1024 * KiB

MAX_ID = 2**32 - 2  # uid_t/gid_t: (uid_t)-1 means "no change" to the kernel
MAX_ARG_STRLEN = 128 * KiB - 1  # one argument or environment string (the kernel's limit, less its NUL)
MAX_ARGV_BYTES = 1 * MiB  # a command line and its environment together (ARG_MAX is 2 MiB or more)
MAX_ARGS = 8192  # arguments, or environment variables
NAME_MAX = 255
PATH_MAX = 4095
HOST_NAME_MAX = 64
MAX_TIMEOUT = 2**31 - 1  # seconds: StopContainer's and ExecSync's timeouts
MAX_CFS_QUOTA = 2**44 - 1  # microseconds: the kernel refuses a larger CFS quota
DEFAULT_STRING = 4096  # a string field no rule names
DEFAULT_REPEATED = 4096  # the elements of a repeated field no rule names


Check = Callable[[str, str], None]  # (path, value): raises InvalidArgument naming the path


@dataclass(frozen=True)
class Str:
    """A string (or UTF-8 ``bytes``) of at most ``max`` bytes, with an optional ``shape`` check."""

    max: int = DEFAULT_STRING
    shape: Check | None = None


@dataclass(frozen=True)
class Int:
    """An integer within ``lo..hi``, or one of ``also``."""

    lo: int
    hi: int
    also: tuple[int, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class Map:
    """A map<string, string>: keys and values by their rules, at most ``count`` entries and ``total`` bytes."""

    key: Str
    value: Str
    count: int
    total: int


@dataclass(frozen=True)
class Argv:
    """Repeated strings run as a command line: each within MAX_ARG_STRLEN, all within ``count`` and ``total``."""

    count: int = MAX_ARGS
    total: int = MAX_ARGV_BYTES


def _short(value: str, limit: int = 64) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "...")


def fail(path: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"{path}: {problem}")


# -- shapes ------------------------------------------------------------------------------------------


def _components(path: str, value: str, *, dots: bool = False) -> None:
    for part in value.split("/"):
        if not dots and part in (".", ".."):
            raise fail(path, f"{_short(value)} must not contain '.' or '..' components")
        if len(part.encode()) > NAME_MAX:
            raise fail(path, f"a component of {_short(value)} is longer than {NAME_MAX} bytes")


def absolute_path(path: str, value: str) -> None:
    """An absolute path without '.' or '..' components (a host path: nothing may climb out of it)."""
    if not value.startswith("/"):
        raise fail(path, f"{_short(value)} must be an absolute path")
    _components(path, value)


def relative_path(path: str, value: str) -> None:
    """A relative path that stays below where it is joined: no leading '/', no '.' or '..' components."""
    if value.startswith("/"):
        raise fail(path, f"{_short(value)} must be a relative path (it is joined to the pod's log_directory)")
    _components(path, value)


def any_path(path: str, value: str) -> None:
    """A path whose components fit NAME_MAX (the container's own paths: the runtime resolves them in the rootfs)."""
    _components(path, value, dots=True)


def cgroup_parent(path: str, value: str) -> None:
    """A cgroup path: no '.' or '..' components (it must not climb out of the cgroup tree), names within NAME_MAX."""
    _components(path, value)


_HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


def hostname(path: str, value: str) -> None:
    """A host name: dot-separated labels of letters, digits, '-' and '_' (it goes into /etc/hosts)."""
    if not _HOSTNAME.fullmatch(value):
        raise fail(path, f"{_short(value)} is not a host name (dot-separated labels of letters, digits, '-' and '_')")
    if any(len(label) > 63 for label in value.split(".")):
        raise fail(path, f"{_short(value)}: a label of a host name has at most 63 characters")


def ip_address(path: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise fail(path, f"{_short(value)} is not an IP address") from None


def one_word(path: str, value: str) -> None:
    """A resolv.conf word: no white space (a new line would add lines of its own)."""
    if not value or any(c.isspace() for c in value):
        raise fail(path, f"{_short(value)} must be one word, without white space")


def cni_arg(path: str, value: str) -> None:
    """A value that goes into CNI_ARGS (``K=V;K=V``) and logs: no ';', '=' or control characters."""
    bad = next((c for c in value if c in ";=" or ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise fail(path, f"{_short(value)} must not contain {bad!r}")


def file_name(path: str, value: str) -> None:
    """A cgroup file name (``unified`` keys): no '/', not '.' or '..'."""
    if not value or "/" in value or value in (".", ".."):
        raise fail(path, f"{_short(value)} is not a cgroup file name")


_CPUSET = re.compile(r"[0-9,\- ]*")
_PAGE_SIZE = re.compile(r"[0-9]+[KMGTkmgt]?i?[Bb]?")


def cpuset(path: str, value: str) -> None:
    if not _CPUSET.fullmatch(value):
        raise fail(path, f"{_short(value)} is not a CPU or memory node list (as 0-3,6)")


def page_size(path: str, value: str) -> None:
    if not _PAGE_SIZE.fullmatch(value):
        raise fail(path, f"{_short(value)} is not a huge page size (as 2MB or 1GB)")


def env_name(path: str, value: str) -> None:
    if "=" in value:
        raise fail(path, f"{_short(value)}: an environment variable's name cannot contain '='")


# -- the tables ----------------------------------------------------------------------------------------

NAME = Str(253, cni_arg)
LABELS = Map(key=Str(317), value=Str(1024), count=4096, total=512 * KiB)
ANNOTATIONS = Map(key=Str(1024), value=Str(512 * KiB), count=4096, total=512 * KiB)
ID = Str(256)
HOST_PATH = Str(PATH_MAX, absolute_path)
CONTAINER_PATH = Str(PATH_MAX, any_path)
PROFILE_PATH = Str(PATH_MAX)
IDS = Int(0, MAX_ID, hint="a uid or gid")
IDMAPS = 340  # the kernel's limit on the lines of a uid_map or gid_map

STRINGS: dict[str, Str] = {
    # pods
    "PodSandboxMetadata.name": NAME,
    "PodSandboxMetadata.namespace": NAME,
    "PodSandboxMetadata.uid": NAME,
    "PodSandboxConfig.hostname": Str(253, hostname),
    "PodSandboxConfig.log_directory": Str(2048, absolute_path),
    "DNSConfig.servers": Str(64, ip_address),
    "DNSConfig.searches": Str(253, one_word),
    "DNSConfig.options": Str(256, one_word),
    "PortMapping.host_ip": Str(64, ip_address),
    "LinuxPodSandboxConfig.cgroup_parent": Str(1024, cgroup_parent),
    "RunPodSandboxRequest.runtime_handler": Str(256),
    "NamespaceOption.target_id": ID,
    # containers
    "ContainerMetadata.name": NAME,
    "ImageSpec.image": Str(2048),
    "ImageSpec.user_specified_image": Str(2048),
    "ImageSpec.runtime_handler": Str(256),
    "ImageSpec.image_ref": Str(2048),
    "ContainerConfig.working_dir": CONTAINER_PATH,
    "ContainerConfig.log_path": Str(1024, relative_path),
    "KeyValue.key": Str(MAX_ARG_STRLEN, env_name),
    "KeyValue.value": Str(MAX_ARG_STRLEN),
    "Mount.container_path": CONTAINER_PATH,
    "Mount.host_path": HOST_PATH,
    "Mount.image_sub_path": CONTAINER_PATH,
    "Mount.mount_options": Str(256),
    "Device.container_path": CONTAINER_PATH,
    "Device.host_path": HOST_PATH,
    "Device.permissions": Str(3),
    "CDIDevice.name": Str(1024),
    "Capability.add_capabilities": Str(64),
    "Capability.drop_capabilities": Str(64),
    "Capability.add_ambient_capabilities": Str(64),
    "LinuxContainerSecurityContext.masked_paths": CONTAINER_PATH,
    "LinuxContainerSecurityContext.readonly_paths": CONTAINER_PATH,
    "LinuxContainerSecurityContext.run_as_username": Str(256),
    "LinuxContainerSecurityContext.apparmor_profile": PROFILE_PATH,
    "LinuxContainerSecurityContext.seccomp_profile_path": PROFILE_PATH,
    "LinuxSandboxSecurityContext.seccomp_profile_path": PROFILE_PATH,
    "SecurityProfile.localhost_ref": PROFILE_PATH,
    "SELinuxOption.user": Str(256),
    "SELinuxOption.role": Str(256),
    "SELinuxOption.type": Str(256),
    "SELinuxOption.level": Str(256),
    "LinuxContainerResources.cpuset_cpus": Str(4096, cpuset),
    "LinuxContainerResources.cpuset_mems": Str(4096, cpuset),
    "HugepageLimit.page_size": Str(32, page_size),
    # ids and filters
    "CreateContainerRequest.pod_sandbox_id": ID,
    "UpdatePodSandboxResourcesRequest.pod_sandbox_id": ID,
    "PortForwardRequest.pod_sandbox_id": ID,
    "ContainerFilter.id": ID,
    "ContainerFilter.pod_sandbox_id": ID,
    "PodSandboxFilter.id": ID,
    "ContainerStatsFilter.id": ID,
    "ContainerStatsFilter.pod_sandbox_id": ID,
    "PodSandboxStatsFilter.id": ID,
    "ExecSyncRequest.container_id": ID,
    "ExecRequest.container_id": ID,
    "AttachRequest.container_id": ID,
    "StopContainerRequest.container_id": ID,
    "UpdateContainerResourcesRequest.container_id": ID,
    "ReopenContainerLogRequest.container_id": ID,
    "NetworkConfig.pod_cidr": Str(1024),
    # registry credentials: tokens can be long
    "AuthConfig.password": Str(64 * KiB),
    "AuthConfig.auth": Str(64 * KiB),
    "AuthConfig.identity_token": Str(64 * KiB),
    "AuthConfig.registry_token": Str(64 * KiB),
}

INTS: dict[str, Int] = {
    "PortMapping.container_port": Int(1, 65535, hint="a port"),
    "PortMapping.host_port": Int(0, 65535, hint="a port (0: none)"),
    "PortForwardRequest.port": Int(1, 65535, hint="a TCP port"),
    "LinuxSandboxSecurityContext.run_as_user.value": IDS,
    "LinuxSandboxSecurityContext.run_as_group.value": IDS,
    "LinuxSandboxSecurityContext.supplemental_groups": IDS,
    "LinuxContainerSecurityContext.run_as_user.value": IDS,
    "LinuxContainerSecurityContext.run_as_group.value": IDS,
    "LinuxContainerSecurityContext.supplemental_groups": IDS,
    "LinuxContainerResources.cpu_period": Int(1000, 1_000_000, also=(0,), hint="microseconds (0: the default)"),
    "LinuxContainerResources.cpu_quota": Int(1000, MAX_CFS_QUOTA, also=(0, -1), hint="microseconds (0: none, -1: unlimited)"),
    "LinuxContainerResources.cpu_shares": Int(2, 262144, also=(0,), hint="CPU shares (0: the default)"),
    "LinuxContainerResources.memory_limit_in_bytes": Int(0, 2**63 - 1, hint="bytes (0: none)"),
    "LinuxContainerResources.memory_swap_limit_in_bytes": Int(0, 2**63 - 1, also=(-1,), hint="bytes (0: none, -1: unlimited)"),
    "LinuxContainerResources.oom_score_adj": Int(-1000, 1000, hint="an OOM score adjustment"),
    "ExecSyncRequest.timeout": Int(0, MAX_TIMEOUT, hint="seconds (0: no timeout)"),
    "StopContainerRequest.timeout": Int(0, MAX_TIMEOUT, hint="seconds"),
}

REPEATED: dict[str, int] = {
    "DNSConfig.servers": 32,
    "DNSConfig.searches": 32,
    "DNSConfig.options": 32,
    "PodSandboxConfig.port_mappings": 4096,
    "LinuxSandboxSecurityContext.supplemental_groups": 65536,
    "LinuxContainerSecurityContext.supplemental_groups": 65536,
    "UserNamespace.uids": IDMAPS,
    "UserNamespace.gids": IDMAPS,
    "Mount.uidMappings": IDMAPS,
    "Mount.gidMappings": IDMAPS,
    "Mount.mount_options": 64,
    "ContainerConfig.mounts": 1024,
    "ContainerConfig.devices": 1024,
    "ContainerConfig.CDI_devices": 1024,
    "ContainerConfig.envs": MAX_ARGS,
    "Capability.add_capabilities": 256,
    "Capability.drop_capabilities": 256,
    "Capability.add_ambient_capabilities": 256,
    "LinuxContainerSecurityContext.masked_paths": 1024,
    "LinuxContainerSecurityContext.readonly_paths": 1024,
    "LinuxContainerResources.hugepage_limits": 64,
    "PortForwardRequest.port": 1024,
}

MAPS: dict[str, Map] = {
    "PodSandboxConfig.labels": LABELS,
    "ContainerConfig.labels": LABELS,
    "ContainerFilter.label_selector": LABELS,
    "PodSandboxFilter.label_selector": LABELS,
    "ContainerStatsFilter.label_selector": LABELS,
    "PodSandboxStatsFilter.label_selector": LABELS,
    "PodSandboxConfig.annotations": ANNOTATIONS,
    "ContainerConfig.annotations": ANNOTATIONS,
    "ImageSpec.annotations": ANNOTATIONS,
    "UpdateContainerResourcesRequest.annotations": ANNOTATIONS,
    "LinuxPodSandboxConfig.sysctls": Map(key=Str(256), value=Str(4096), count=1024, total=256 * KiB),
    "LinuxContainerResources.unified": Map(key=Str(NAME_MAX, file_name), value=Str(4096), count=256, total=256 * KiB),
}

ARGV: dict[str, Argv] = {
    "ContainerConfig.command": Argv(),
    "ContainerConfig.args": Argv(),
    "ExecSyncRequest.cmd": Argv(),
    "ExecRequest.cmd": Argv(),
}


# -- the walk ------------------------------------------------------------------------------------------


def _text(path: str, value: str | bytes, rule: Str) -> int:
    """Check one string against ``rule``; returns its length in bytes."""
    if isinstance(value, bytes):
        raw = value
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise fail(path, f"not valid UTF-8 (byte {exc.start})") from None
    else:
        text = value
        raw = value.encode("utf-8", "surrogatepass")
    if len(raw) > rule.max:
        raise fail(path, f"{len(raw)} bytes, at most {rule.max}")
    if "\0" in text:
        raise fail(path, "contains a NUL byte")
    if rule.shape is not None:
        rule.shape(path, text)
    return len(raw)


def _int(path: str, value: int, rule: Int | None) -> None:
    if rule is None or rule.lo <= value <= rule.hi or value in rule.also:
        return
    also = "".join(f" or {v}" for v in rule.also)
    hint = f" ({rule.hint})" if rule.hint else ""
    raise fail(path, f"{value} is outside {rule.lo}..{rule.hi}{also}{hint}")


def _enum(path: str, field: FieldDescriptor, value: int) -> None:
    enum = field.enum_type
    assert enum is not None
    if value not in enum.values_by_number:
        raise fail(path, f"{value} is not a {enum.name} value")


def _scalar(path: str, field: FieldDescriptor, key: str, via: str, value: object) -> int:
    """Check one scalar; returns its size in bytes for a string (0 otherwise)."""
    if field.type == FieldDescriptor.TYPE_STRING or field.type == FieldDescriptor.TYPE_BYTES:
        assert isinstance(value, (str, bytes))
        return _text(path, value, STRINGS.get(key) or STRINGS.get(via) or Str())
    if field.type == FieldDescriptor.TYPE_ENUM:
        assert isinstance(value, int)
        _enum(path, field, value)
    elif field.type != FieldDescriptor.TYPE_BOOL and isinstance(value, int):
        _int(path, value, INTS.get(key) or INTS.get(via))
    return 0


def _map(path: str, key: str, entries: dict[str, str]) -> None:
    rule = MAPS.get(key) or Map(key=Str(), value=Str(), count=DEFAULT_REPEATED, total=1 * MiB)
    if len(entries) > rule.count:
        raise fail(path, f"{len(entries)} entries, at most {rule.count}")
    total = 0
    for k, v in entries.items():
        total += _text(f"{path}: key {_short(k, 40)}", k, rule.key)
        total += _text(f"{path}[{_short(k, 40)}]", v, rule.value)
    if total > rule.total:
        raise fail(path, f"{total} bytes in all, at most {rule.total}")


def _argv(path: str, values: Iterable[str], rule: Argv) -> None:
    items = list(values)
    if len(items) > rule.count:
        raise fail(path, f"{len(items)} arguments, at most {rule.count}")
    total = 0
    for i, item in enumerate(items):
        total += _text(f"{path}[{i}]", item, Str(MAX_ARG_STRLEN)) + 1
    if total > rule.total:
        raise fail(path, f"{total} bytes in all, at most {rule.total}")


def _walk(message: Message, prefix: str, via: str) -> None:
    """Check ``message`` (at ``prefix``, reached through the field keyed ``via``)."""
    descriptor = message.DESCRIPTOR
    for field, value in message.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        key = f"{descriptor.name}.{field.name}"
        field_via = f"{via}.{field.name}" if via else key
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _map(path, key, dict(value))
            continue
        if field.is_repeated:
            if key in ARGV:
                _argv(path, value, ARGV[key])
                continue
            limit = REPEATED.get(key, DEFAULT_REPEATED)
            if len(value) > limit:
                raise fail(path, f"{len(value)} elements, at most {limit}")
            for i, item in enumerate(value):
                if field.message_type is not None:
                    _walk(item, f"{path}[{i}]", key)
                else:
                    _scalar(f"{path}[{i}]", field, key, field_via, item)
            continue
        if field.message_type is not None:
            _walk(value, path, key)
        else:
            _scalar(path, field, key, field_via, value)


def check(request: Message) -> None:
    """Raise InvalidArgument naming the first field of ``request`` that breaks a rule."""
    _walk(request, "", "")
    config = getattr(request, "config", None)
    if isinstance(config, api.ContainerConfig):
        _check_process(config)
    elif isinstance(config, api.PodSandboxConfig):
        _check_uts_hostname(config)


def _check_uts_hostname(config: api.PodSandboxConfig) -> None:
    """A pod with its own UTS namespace has its host name set by the kernel: at most HOST_NAME_MAX bytes.
    (On the node's network a longer name, as an FQDN from ``--hostname-override``, only goes into files.)"""
    if config.linux.security_context.namespace_options.network == api.NODE:
        return
    if len(config.hostname.encode()) > HOST_NAME_MAX:
        raise fail(
            "config.hostname", f"{len(config.hostname.encode())} bytes, at most {HOST_NAME_MAX} for a pod with its own network"
        )


def _check_process(config: api.ContainerConfig) -> None:
    """A container's command, arguments and environment must fit one exec together."""
    total = sum(len(a.encode()) + 1 for a in (*config.command, *config.args))
    total += sum(len(kv.key.encode()) + len(kv.value) + 2 for kv in config.envs)
    if total > MAX_ARGV_BYTES:
        raise fail("config", f"command, args and envs take {total} bytes together, at most {MAX_ARGV_BYTES}")
