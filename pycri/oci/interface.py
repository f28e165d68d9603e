"""The OCI runtime interface: everything the pod and container code asks of a runtime handler.

Like CRI-O's ``internal/oci`` ``RuntimeImpl``: one object per handler owns the OCI binary
(runc, crun) and conmon, and the services only sequence steps and record state; they never
spell a runtime command line or a conmon argument. ``pycri.oci.runtime.OCIRuntime`` is the
implementation for runc-compatible binaries under conmon.

A runtime names a container by a :class:`RuntimeContainer`: its ID and where its bundle and
conmon's files are. Failures of the binary raise :class:`RuntimeCommandError`, conmon's
:class:`ConmonError`; what the caller asked for wrongly raises a :mod:`pycri.errors` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

StreamName = Literal["stdout", "stderr"]


class RuntimeCommandError(RuntimeError):
    """An OCI runtime command failed; the message has its stderr."""


class ConmonError(RuntimeError):
    """conmon or the runtime it ran failed to create the container."""


@dataclass(frozen=True)
class Probe:
    ok: bool
    version: str
    message: str = ""


@dataclass(frozen=True)
class ContainerState:
    """What ``runtime state`` reports: status is creating, created, running, paused or stopped."""

    id: str
    status: str
    pid: int
    bundle: str


@dataclass(frozen=True)
class RuntimeContainer:
    """What a runtime needs to know of one container (a pod's infra container too)."""

    id: str
    bundle: Path  # holds config.json; conmon makes its ctl FIFO and attach socket here
    persist_dir: Path  # conmon's pid files and OOM marker
    log_path: str = ""  # the CRI log file ("": none)
    terminal: bool = False
    stdin: bool = False
    stdin_once: bool = False


@dataclass(frozen=True)
class ExitStatus:
    """How a container's process ended, as conmon recorded it."""

    code: int | None  # None: conmon recorded no exit code (it was not asked to wait, or it never saw one)
    finished_at: int  # ns since the epoch: when conmon recorded it (now, when it did not)
    oom_killed: bool


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


class ExecSession(Protocol):
    """A command running in a container (``RuntimeImpl.exec``), for an asyncio caller.

    With a terminal, everything the command writes arrives as ``stdout``; without, ``stdout``
    and ``stderr`` arrive apart. The session ends when the command or the container ends.
    :meth:`close` (and :meth:`kill`) leave nothing behind: the command in the container and
    the runtime process that runs it are gone when they return.
    """

    @property
    def tty(self) -> bool: ...

    async def read(self) -> tuple[StreamName, bytes] | None:
        """The next output, or None once all output has been read."""

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the command's stdin (the session must have stdin)."""

    async def close_stdin(self) -> None:
        """The command reads end-of-file (with a terminal: the terminal's EOF character, ^D)."""

    async def resize(self, width: int, height: int) -> None:
        """Resize the command's terminal (nothing without one)."""

    async def wait(self) -> int:
        """The command's exit code (128 + N when it, or the runtime, was killed by signal N)."""

    async def kill(self) -> None:
        """Kill the command (and its runtime process); returns once both are gone."""

    async def close(self) -> None:
        """Kill what still runs and release the session's files and descriptors."""


class AttachSession(Protocol):
    """A connection to a running container's own stdio through conmon (``RuntimeImpl.attach``)."""

    async def read(self) -> tuple[StreamName, bytes] | None:
        """The container's next output, or None once conmon has closed the connection."""

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the container's stdin (conmon drops it unless the container has stdin)."""

    async def close_stdin(self) -> None:
        """Send no more input: conmon closes the container's stdin if it was created ``stdin_once``."""

    async def resize(self, width: int, height: int) -> None:
        """Resize the container's terminal (through conmon's control FIFO; nothing without one)."""

    async def close(self) -> None:
        """Detach; for a ``stdin_once`` container conmon then closes its stdin."""


class RuntimeImpl(Protocol):
    """One runtime handler: the lifecycle of containers under conmon, exec, and streams."""

    name: str

    async def probe(self) -> Probe:
        """Whether the binary works (``--version``)."""

    async def features(self) -> dict[str, Any]:
        """The runtime's OCI features document ({} when it has none)."""

    # -- lifecycle ---------------------------------------------------------------------------

    async def create(self, c: RuntimeContainer) -> int:
        """Have conmon run the runtime's ``create``; the container's pid, waiting to be started."""

    async def start(self, c: RuntimeContainer) -> None: ...

    async def state(self, c: RuntimeContainer) -> ContainerState | None:
        """The runtime's view of the container, None when it does not know it."""

    async def kill(self, c: RuntimeContainer, signal: str, *, all_processes: bool = False) -> None: ...

    async def delete(self, c: RuntimeContainer, *, force: bool = False) -> None:
        """Forget the container (and its cgroups); one the runtime does not know is deleted already."""

    async def exit_status(self, c: RuntimeContainer, *, wait: float) -> ExitStatus:
        """What conmon recorded of the container's end, waiting up to ``wait`` s for its exit code
        (with ``wait`` <= 0, only one already recorded)."""

    async def remove_leftovers(self, c: RuntimeContainer) -> None:
        """Remove what conmon leaves of a deleted container outside its bundle (exit file, socket link)."""

    # -- operations on a running container -----------------------------------------------------

    async def exec_sync(self, c: RuntimeContainer, cmd: list[str], *, timeout: int, output_limit: int) -> ExecResult:
        """Run ``cmd`` as the container's process runs; raises ``errors.DeadlineExceeded`` after ``timeout`` s (0: none).

        A timeout, or the call being cancelled, kills the command (and the runtime's exec process)."""

    async def update_resources(self, c: RuntimeContainer, resources: dict[str, Any]) -> None:
        """Apply OCI ``linux.resources`` to the created or running container."""

    async def reopen_log(self, c: RuntimeContainer) -> None:
        """Have conmon reopen the container's log file; returns once the file exists. Without a log path
        (conmon writes to /dev/null) there is nothing to reopen: nothing is done."""

    async def exec(
        self, c: RuntimeContainer, cmd: list[str], *, tty: bool, stdin: bool, width: int = 0, height: int = 0
    ) -> ExecSession:
        """Start ``cmd`` as the container's process runs (as ``exec_sync``), with streams: a
        terminal of ``width`` x ``height`` with ``tty``, pipes without."""

    async def attach(self, c: RuntimeContainer) -> AttachSession:
        """Connect to the running container's own stdio through conmon."""

    # -- checkpoint / restore ------------------------------------------------------------------

    async def checkpoint(self, c: RuntimeContainer, image_path: Path, *, leave_running: bool) -> None:
        """Not implemented yet: raises ``errors.Unimplemented``."""

    async def restore(self, c: RuntimeContainer, image_path: Path) -> int:
        """Not implemented yet: raises ``errors.Unimplemented``."""
