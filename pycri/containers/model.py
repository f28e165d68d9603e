"""The container record: what pycri keeps about each container, in memory and in the state database."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.api import api_pb2 as api
from pycri.store import ContainerRow


class State(enum.Enum):
    CREATING = "creating"  # CreateContainer under way (or interrupted by a crash)
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"
    REMOVING = "removing"  # removed for kubelet; its runtime state, mounts and files still being cleaned up


CRI_STATES = {
    State.CREATED: api.CONTAINER_CREATED,
    State.RUNNING: api.CONTAINER_RUNNING,
    State.EXITED: api.CONTAINER_EXITED,
    State.UNKNOWN: api.CONTAINER_UNKNOWN,
    State.CREATING: api.CONTAINER_UNKNOWN,
    State.REMOVING: api.CONTAINER_UNKNOWN,
}

STEP_DIR = "dir"
STEP_ROOTFS = "rootfs"
STEP_CREATED = "created"


@dataclass
class Container:
    id: str
    sandbox_id: str
    config: api.ContainerConfig
    state: State
    created_at: int
    runtime_handler: str
    dir: Path  # <root_dir>/containers/<id>: upper, work, rootfs, bundle
    image_id: str
    image_ref: str
    chain_ids: list[str]
    stop_signal: str = "SIGTERM"
    steps: list[str] = field(default_factory=list)
    log_path: str = ""
    pid: int = 0
    pid_start: int = 0  # the process's start time (pycri.procs.start_time): the pid is ours while it matches
    # StartContainer under way since then (ns): set before the runtime starts the container, cleared once
    # the outcome is recorded, so recovery after a crash in between asks the runtime how it went.
    start_requested_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    uid: int = 0
    gid: int = 0
    supplemental_groups: list[int] = field(default_factory=list)
    resources: dict[str, Any] = field(default_factory=dict)  # LinuxContainerResources as JSON
    # Image volumes by mount index: {"image_id", "chain_ids", "source"} (the host path bind-mounted).
    image_volumes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.dir / "rootfs"

    @property
    def persist_dir(self) -> Path:
        return self.dir / "conmon"

    @property
    def all_chain_ids(self) -> list[str]:
        """The layers the container uses: its image's and its image volumes'."""
        return [*self.chain_ids, *(c for v in self.image_volumes.values() for c in v["chain_ids"])]

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        """The config's labels as a dict (they never change): quick to filter on."""
        return dict(self.config.labels)

    @property
    def metadata(self) -> api.ContainerMetadata:
        return self.config.metadata

    def to_row(self) -> ContainerRow:
        return ContainerRow(
            id=self.id,
            sandbox_id=self.sandbox_id,
            name=self.metadata.name,
            attempt=self.metadata.attempt,
            state=self.state.value,
            created_at=self.created_at,
            config=self.config.SerializeToString(),
            data={
                "runtime_handler": self.runtime_handler,
                "dir": str(self.dir),
                "image_id": self.image_id,
                "image_ref": self.image_ref,
                "chain_ids": self.chain_ids,
                "stop_signal": self.stop_signal,
                "steps": self.steps,
                "log_path": self.log_path,
                "pid": self.pid,
                "pid_start": self.pid_start,
                "start_requested_at": self.start_requested_at,
                "started_at": self.started_at,
                "finished_at": self.finished_at,
                "exit_code": self.exit_code,
                "reason": self.reason,
                "message": self.message,
                "uid": self.uid,
                "gid": self.gid,
                "supplemental_groups": self.supplemental_groups,
                "resources": self.resources,
                "image_volumes": self.image_volumes,
            },
        )

    @classmethod
    def from_row(cls, row: ContainerRow) -> Container:
        d = row.data
        return cls(
            id=row.id,
            sandbox_id=row.sandbox_id,
            config=api.ContainerConfig.FromString(row.config),
            state=State(row.state),
            created_at=row.created_at,
            runtime_handler=str(d["runtime_handler"]),
            dir=Path(d["dir"]),
            image_id=str(d.get("image_id", "")),
            image_ref=str(d.get("image_ref", "")),
            chain_ids=list(d.get("chain_ids", [])),
            stop_signal=str(d.get("stop_signal", "SIGTERM")),
            steps=list(d.get("steps", [])),
            log_path=str(d.get("log_path", "")),
            pid=int(d.get("pid", 0)),
            pid_start=int(d.get("pid_start", 0)),
            start_requested_at=int(d.get("start_requested_at", 0)),
            started_at=int(d.get("started_at", 0)),
            finished_at=int(d.get("finished_at", 0)),
            exit_code=int(d.get("exit_code", 0)),
            reason=str(d.get("reason", "")),
            message=str(d.get("message", "")),
            uid=int(d.get("uid", 0)),
            gid=int(d.get("gid", 0)),
            supplemental_groups=list(d.get("supplemental_groups", [])),
            resources=dict(d.get("resources", {})),
            image_volumes=dict(d.get("image_volumes", {})),
        )
