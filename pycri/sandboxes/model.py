"""The pod sandbox record: what pycri keeps about each pod, in memory and in the state database."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.api import api_pb2 as api
from pycri.oci import userns
from pycri.oci.userns import UserNamespace
from pycri.store import SandboxRow


class State(enum.Enum):
    CREATING = "creating"  # RunPodSandbox under way (or interrupted by a crash)
    READY = "ready"
    NOTREADY = "notready"


# Steps RunPodSandbox has completed, in order; undone in reverse.
STEP_DIR = "dir"
STEP_USERNS = "userns"
STEP_SHM = "shm"
STEP_NETNS = "netns"
STEP_NETWORK = "network"
STEP_INFRA = "infra"


@dataclass
class Sandbox:
    id: str
    config: api.PodSandboxConfig
    state: State
    created_at: int
    runtime_handler: str
    pod_dir: Path
    steps: list[str] = field(default_factory=list)
    netns: str = ""
    ips: list[str] = field(default_factory=list)
    network_name: str = ""
    network_result: dict[str, Any] | None = None
    infra_pid: int = 0
    infra_pid_start: int = 0  # the infra process's start time (pycri.procs.start_time): the pid is ours while it matches
    cgroups_path: str = ""
    network_torn_down: bool = False
    userns_path: str = ""  # the pinned user namespace of a pod with its own ("" for the host's)
    # The handler's binary and state root when the pod was made: its containers can be managed even once
    # the handler has left the configuration.
    runtime_path: str = ""
    runtime_root: str = ""
    # Left over from a failed RunPodSandbox that could not all be undone: listed (NOTREADY) until it is
    # removed, but its name may be taken again at once.
    name_released: bool = False

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        """The config's labels as a dict (they never change): quick to filter on."""
        return dict(self.config.labels)

    @property
    def metadata(self) -> api.PodSandboxMetadata:
        return self.config.metadata

    @property
    def namespace_options(self) -> api.NamespaceOption:
        return self.config.linux.security_context.namespace_options

    @property
    def host_network(self) -> bool:
        return self.namespace_options.network == api.NODE

    @property
    def host_ipc(self) -> bool:
        return self.namespace_options.ipc == api.NODE

    @property
    def host_pid(self) -> bool:
        return self.namespace_options.pid == api.NODE

    @property
    def user_namespace(self) -> UserNamespace | None:
        """The pod's user namespace mappings (None: the host's); the config was checked at RunPodSandbox."""
        return userns.from_options(self.namespace_options, "config.linux.security_context.namespace_options")

    @property
    def infra_bundle(self) -> Path:
        return self.pod_dir / "infra"

    @property
    def shm_path(self) -> Path:
        return self.pod_dir / "shm"

    def to_row(self) -> SandboxRow:
        md = self.metadata
        return SandboxRow(
            id=self.id,
            name=md.name,
            namespace=md.namespace,
            uid=md.uid,
            attempt=md.attempt,
            state=self.state.value,
            runtime_handler=self.runtime_handler,
            created_at=self.created_at,
            config=self.config.SerializeToString(),
            name_released=int(self.name_released),
            data={
                "pod_dir": str(self.pod_dir),
                "steps": self.steps,
                "netns": self.netns,
                "ips": self.ips,
                "network_name": self.network_name,
                "network_result": self.network_result,
                "infra_pid": self.infra_pid,
                "infra_pid_start": self.infra_pid_start,
                "cgroups_path": self.cgroups_path,
                "network_torn_down": self.network_torn_down,
                "userns_path": self.userns_path,
                "runtime_path": self.runtime_path,
                "runtime_root": self.runtime_root,
            },
        )

    @classmethod
    def from_row(cls, row: SandboxRow) -> Sandbox:
        d = row.data
        return cls(
            id=row.id,
            config=api.PodSandboxConfig.FromString(row.config),
            state=State(row.state),
            created_at=row.created_at,
            runtime_handler=row.runtime_handler,
            pod_dir=Path(d["pod_dir"]),
            steps=list(d.get("steps", [])),
            netns=str(d.get("netns", "")),
            ips=list(d.get("ips", [])),
            network_name=str(d.get("network_name", "")),
            network_result=d.get("network_result"),
            infra_pid=int(d.get("infra_pid", 0)),
            infra_pid_start=int(d.get("infra_pid_start", 0)),
            cgroups_path=str(d.get("cgroups_path", "")),
            network_torn_down=bool(d.get("network_torn_down", False)),
            userns_path=str(d.get("userns_path", "")),
            runtime_path=str(d.get("runtime_path", "")),
            runtime_root=str(d.get("runtime_root", "")),
            name_released=bool(row.name_released),
        )
