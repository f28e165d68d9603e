"""Pod user namespaces: the ID mappings kubelet asks for, checked and put in spec form. Pure.

A pod with ``userns_options.mode == POD`` gets one user namespace shared by
its infra container and all its containers; its root is an unprivileged host
ID. Like containerd, pycri takes exactly one UID and one GID mapping, each
starting at container ID 0 (kubelet sends one 64Ki range per pod). NODE is
the host's user namespace (no mappings allowed); CONTAINER and TARGET are
not meaningful for user namespaces and are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pycri import errors
from pycri.api import api_pb2 as api

MAX_HOST_ID = 2**32 - 1  # IDs are 32-bit; (uid_t)-1 is never valid


@dataclass(frozen=True)
class IDMapping:
    container_id: int
    host_id: int
    size: int

    def to_spec(self) -> dict[str, int]:
        return {"containerID": self.container_id, "hostID": self.host_id, "size": self.size}

    def line(self) -> str:
        """The line for /proc/<pid>/uid_map or gid_map."""
        return f"{self.container_id} {self.host_id} {self.size}\n"

    def to_host(self, container_id: int) -> int | None:
        if self.container_id <= container_id < self.container_id + self.size:
            return self.host_id + container_id - self.container_id
        return None


@dataclass(frozen=True)
class UserNamespace:
    """A pod's user namespace: its UID and GID mappings (one each)."""

    uid: IDMapping
    gid: IDMapping

    def to_spec(self) -> dict[str, Any]:
        return {"uidMappings": [self.uid.to_spec()], "gidMappings": [self.gid.to_spec()]}

    @property
    def root(self) -> tuple[int, int]:
        """The host UID and GID of the namespace's root."""
        return self.uid.host_id, self.gid.host_id


def _mapping(mappings: Any, what: str) -> IDMapping:
    if len(mappings) != 1:
        raise errors.InvalidArgument(
            f"{what}: exactly one mapping is supported, got {len(mappings)} (kubelet sends one range per pod)"
        )
    m = mappings[0]
    if m.container_id != 0:
        raise errors.InvalidArgument(
            f"{what}[0].container_id: container ID 0 is not mapped (the mapping starts at {m.container_id})"
        )
    if m.length == 0:
        raise errors.InvalidArgument(f"{what}[0].length: must be at least 1")
    if m.host_id == 0:
        raise errors.InvalidArgument(f"{what}[0].host_id: mapping to host ID 0 would give the pod the host's root")
    if m.host_id + m.length - 1 >= MAX_HOST_ID:
        raise errors.InvalidArgument(f"{what}[0]: host IDs {m.host_id}..{m.host_id + m.length - 1} exceed {MAX_HOST_ID - 1}")
    return IDMapping(m.container_id, m.host_id, m.length)


def from_options(options: api.NamespaceOption, what: str) -> UserNamespace | None:
    """The pod's user namespace from its namespace options; None for the host's (NODE or not set)."""
    if not options.HasField("userns_options"):
        return None
    userns = options.userns_options
    what = f"{what}.userns_options"
    if userns.mode == api.NODE:
        if userns.uids or userns.gids:
            raise errors.InvalidArgument(f"{what}: mappings are only for mode POD, not NODE")
        return None
    if userns.mode != api.POD:
        raise errors.InvalidArgument(
            f"{what}.mode: {api.NamespaceMode.Name(userns.mode)} is not supported: a user namespace is the pod's (POD) "
            "or the node's (NODE)"
        )
    found = UserNamespace(_mapping(userns.uids, f"{what}.uids"), _mapping(userns.gids, f"{what}.gids"))
    shared = [n for n in ("network", "pid", "ipc") if getattr(options, n) == api.NODE]
    if shared:
        raise errors.InvalidArgument(f"{what}: a pod user namespace cannot be combined with the node's {', '.join(shared)}")
    return found
