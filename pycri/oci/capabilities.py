"""Linux capabilities for ``process.capabilities``: names, validation, and the CRI add/drop/ambient rules.

``resolve`` follows containerd's CRI plugin (``WithCapabilities``: "ALL" in add
starts from every capability, "ALL" in drop from none, then the individual adds,
then the individual drops; a privileged container gets every capability) and
Docker for non-root users (effective and permitted start empty, as after an
``execve`` by a non-root user), plus CRI's ``add_ambient_capabilities`` the way
CRI-O applies them: an ambient capability is also put in the inheritable,
permitted, effective and bounding sets, since the kernel only keeps ambient
capabilities that are both permitted and inheritable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pycri.errors import FailedPrecondition, InvalidArgument
from pycri.oci.spec import DEFAULT_CAPABILITIES

# Every capability Linux defines, in kernel (bit number) order: CAP_CHOWN is 0.
KNOWN_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
_BIT = {name: bit for bit, name in enumerate(KNOWN_CAPABILITIES)}

CAP_LAST_CAP_PATH = "/proc/sys/kernel/cap_last_cap"


def kernel_capabilities(cap_last_cap_path: str = CAP_LAST_CAP_PATH) -> list[str]:
    """The capabilities the running kernel knows (all of ``KNOWN_CAPABILITIES`` if it cannot tell)."""
    try:
        with open(cap_last_cap_path) as f:
            last = int(f.read().strip())
    except (OSError, ValueError):
        return list(KNOWN_CAPABILITIES)
    return KNOWN_CAPABILITIES[: max(0, last + 1)]


# Read once: what "ALL" and privileged mean on this node.
ALL_CAPABILITIES: list[str] = kernel_capabilities()


def normalize(name: str, field: str) -> str:
    """ "NET_ADMIN", "net_admin", "CAP_NET_ADMIN" -> "CAP_NET_ADMIN"; "ALL" (any case) -> "ALL"; else InvalidArgument."""
    upper = name.strip().upper()
    if upper == "ALL":
        return "ALL"
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in _BIT:
        raise InvalidArgument(f"{field}: unknown capability {name!r}")
    return full


def _ordered(caps: Iterable[str]) -> list[str]:
    """Kernel order, no duplicates, only what this kernel knows (runc would ignore the others anyway)."""
    present = set(caps)
    return [c for c in ALL_CAPABILITIES if c in present]


def current_bounding(status: str = "/proc/self/status") -> set[str]:
    """The capabilities in this process's bounding set: the most any container can get."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapBnd:"):
                    mask = int(line.split()[1], 16)
                    return {name for bit, name in enumerate(KNOWN_CAPABILITIES) if mask >> bit & 1}
    except OSError:
        pass
    return set(ALL_CAPABILITIES)


def resolve(
    add: Sequence[str],
    drop: Sequence[str],
    ambient: Sequence[str],
    *,
    privileged: bool,
    run_as_root: bool,
    field: str,
) -> dict[str, list[str]]:
    """The OCI ``process.capabilities`` object (bounding, effective, permitted, inheritable, ambient).

    ``add``/``drop``/``ambient`` are the CRI ``Capability`` lists (names with or
    without ``CAP_``, any case, "ALL"); ``field`` names that message in errors
    (e.g. "config.linux.security_context.capabilities"). ``run_as_root`` is
    whether the process runs as uid 0: otherwise effective and permitted hold
    only the ambient capabilities. "ALL" is not accepted in ``ambient``.
    """
    added = [normalize(c, f"{field}.add_capabilities") for c in add]
    dropped = [normalize(c, f"{field}.drop_capabilities") for c in drop]
    ambient_caps = [normalize(c, f"{field}.add_ambient_capabilities") for c in ambient]
    if "ALL" in ambient_caps:
        raise InvalidArgument(f"{field}.add_ambient_capabilities: 'ALL' cannot be ambient; list the capabilities")

    # "All" means all this process has, as containerd's privileged containers get: a runtime
    # cannot grant what it lacks itself (this host's root has no CAP_SYS_RESOURCE, say).
    everything = current_bounding()
    if privileged:
        caps = set(everything)
    else:
        caps = set(DEFAULT_CAPABILITIES)
        if "ALL" in added:
            caps = set(everything)
        if "ALL" in dropped:
            caps = set()
        caps.update(c for c in added if c != "ALL")
        caps.difference_update(dropped)

    ambient_set = set(ambient_caps)
    missing = sorted((caps | ambient_set) - everything)
    if missing:
        raise FailedPrecondition(
            f"{field}: {', '.join(missing)} requested, but pycri does not hold "
            f"{'it' if len(missing) == 1 else 'them'} itself and cannot grant {'it' if len(missing) == 1 else 'them'}"
        )
    bounding = caps | ambient_set
    granted = (caps if run_as_root else set()) | ambient_set
    return {
        "bounding": _ordered(bounding),
        "effective": _ordered(granted),
        "permitted": _ordered(granted),
        "inheritable": _ordered(ambient_set),
        "ambient": _ordered(ambient_set),
    }
