"""runc and crun under conmon: the implementation of :class:`pycri.oci.interface.RuntimeImpl`.

runc and crun share a command line; crun differs only in how it is launched on a cgroup v1
hybrid host (``pycri.oci.hybrid``: ``path`` is then the generated launcher) and in what
``pycri.oci.features`` finds when it probes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal as signal_mod
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri import errors
from pycri.config import Config, RuntimeHandlerConfig
from pycri.oci import conmon, hybrid, streams
from pycri.oci.interface import (
    ContainerState,
    ExecResult,
    ExitStatus,
    Probe,
    RuntimeCommandError,
    RuntimeContainer,
)
from pycri.procs import read_pid, wait_pid

PROBE_TIMEOUT = 10.0
COMMAND_TIMEOUT = 60.0
REOPEN_WAIT = 5.0
CONMON_EXIT_WAIT = 10.0  # for conmon to exit once its container is deleted
DEFAULT_STATE_DIR = Path("/run/pycri")


@dataclass
class OCIRuntime:
    """One runtime handler: a runc-compatible binary and its state root, run under conmon."""

    name: str
    path: str
    root: str
    conmon: str = "/usr/bin/conmon"
    exit_dir: Path = DEFAULT_STATE_DIR / "exits"  # conmon's exit files, one per container ID
    socket_dir: Path = DEFAULT_STATE_DIR / "sockets"  # conmon's links to bundles, for short socket paths
    conmon_log_level: str = "error"
    _probe_cache: dict[tuple[int, int], Probe] = field(default_factory=dict, repr=False)
    _features: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, name: str, cfg: RuntimeHandlerConfig, config: Config | None = None) -> OCIRuntime:
        if config is None:
            return cls(name=name, path=cfg.path, root=cfg.root)
        state_dir = Path(config.state_dir)
        return cls(
            name=name,
            path=cfg.path,
            root=cfg.root,
            conmon=config.conmon,
            exit_dir=state_dir / "exits",
            socket_dir=state_dir / "sockets",
        )

    # -- running the binary ----------------------------------------------------------------------

    async def _run(self, *args: str, timeout: float = PROBE_TIMEOUT, stdin: bytes | None = None) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            self.path,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out, err

    async def _command(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> bytes:
        try:
            rc, out, err = await self._run("--root", self.root, *args, timeout=timeout)
        except TimeoutError:
            raise RuntimeCommandError(f"{self.name} {args[0]}: timed out after {timeout:.0f}s") from None
        if rc != 0:
            text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise RuntimeCommandError(f"{self.name} {' '.join(args[:1])} failed: {last_error(text)}")
        return out

    def command_line(self, *args: str) -> list[str]:
        """The command line of ``<runtime> --root <root> args...``."""
        return [self.path, "--root", self.root, *args]

    # -- the handler itself ----------------------------------------------------------------------

    async def probe(self) -> Probe:
        """Check the binary exists and answers ``--version``; cached while the file is unchanged."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return Probe(False, "", f"{self.name}: {self.path}: {exc.strerror}")
        if not os.access(self.path, os.X_OK):
            return Probe(False, "", f"{self.name}: {self.path} is not executable")
        key = (st.st_ino, st.st_mtime_ns)
        cached = self._probe_cache.get(key)
        if cached is not None:
            return cached
        try:
            rc, out, err = await self._run("--version")
        except (OSError, TimeoutError) as exc:
            result = Probe(False, "", f"{self.name}: {self.path} --version failed: {exc}")
        else:
            text = out.decode(errors="replace").strip()
            if rc != 0:
                result = Probe(
                    False, "", f"{self.name}: {self.path} --version exited {rc}: {err.decode(errors='replace').strip()}"
                )
            else:
                result = Probe(True, text.splitlines()[0] if text else "")
        self._probe_cache.clear()
        self._probe_cache[key] = result
        return result

    async def features(self) -> dict[str, Any]:
        """The runtime's ``features`` JSON (OCI runtime-spec features document); {} if unsupported."""
        if self._features is None:
            try:
                rc, out, _ = await self._run("features")
                self._features = json.loads(out) if rc == 0 else {}
            except (OSError, TimeoutError, ValueError):
                self._features = {}
        return self._features

    # -- lifecycle -------------------------------------------------------------------------------

    async def create(self, c: RuntimeContainer) -> int:
        """conmon runs ``<runtime> create``; returns the container's pid, waiting to be started."""
        for directory in (self.exit_dir, self.socket_dir, c.persist_dir):
            await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        args = conmon.conmon_args(self.conmon, self.path, self.root, c, self.exit_dir, self.socket_dir, self.conmon_log_level)
        return await conmon.run(args, c)

    async def start(self, c: RuntimeContainer) -> None:
        await self._command("start", c.id)

    async def state(self, c: RuntimeContainer) -> ContainerState | None:
        """The container's state, or None when the runtime does not know it."""
        try:
            out = await self._command("state", c.id)
        except RuntimeCommandError as exc:
            if "does not exist" in str(exc) or "not exist" in str(exc) or "No such file" in str(exc):
                return None
            raise
        doc = json.loads(out)
        return ContainerState(
            id=c.id, status=str(doc.get("status", "")), pid=int(doc.get("pid") or 0), bundle=str(doc.get("bundle", ""))
        )

    async def kill(self, c: RuntimeContainer, signal: str, *, all_processes: bool = False) -> None:
        await self._command("kill", *(["--all"] if all_processes else []), c.id, signal)

    async def delete(self, c: RuntimeContainer, *, force: bool = False) -> None:
        """Delete the container from the runtime; a container the runtime does not know is already deleted."""
        try:
            await self._command("delete", *(["--force"] if force else []), c.id)
        except RuntimeCommandError as exc:
            if "does not exist" not in str(exc) and "not exist" not in str(exc):
                raise
        # Through the hybrid-host launcher the runtime cannot see, so not remove, its unified cgroup.
        await asyncio.to_thread(hybrid.remove_unified_leftover, _cgroups_path(c))

    async def exit_status(self, c: RuntimeContainer, *, wait: float) -> ExitStatus:
        deadline = time.monotonic() + wait
        pause = 0.001  # conmon writes the file a moment after reaping: look soon, then less often
        code = conmon.read_exit_code(self.exit_dir, c.id)  # one small read on tmpfs
        while code is None and time.monotonic() < deadline:
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.02)
            code = conmon.read_exit_code(self.exit_dir, c.id)
        try:
            finished = (await asyncio.to_thread(os.stat, conmon.exit_file(self.exit_dir, c.id))).st_mtime_ns
        except FileNotFoundError:
            finished = time.time_ns()
        oom = any(await asyncio.to_thread(lambda: [(d / "oom").exists() for d in (c.persist_dir, c.bundle)]))
        return ExitStatus(code=code, finished_at=finished, oom_killed=oom)

    async def remove_leftovers(self, c: RuntimeContainer) -> None:
        # conmon writes the exit file when it notices the container's end, a moment after the process
        # is gone: removed before conmon has exited, the file would be written again after.
        pid = await asyncio.to_thread(conmon.monitor_pid, c)
        if pid and not await wait_pid(pid, CONMON_EXIT_WAIT):
            with contextlib.suppress(ProcessLookupError):  # its container is deleted: nothing left for it to do
                os.kill(pid, signal_mod.SIGKILL)
            await wait_pid(pid, CONMON_EXIT_WAIT)
        for leftover in (conmon.exit_file(self.exit_dir, c.id), self.socket_dir / c.id):
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(leftover.unlink)

    # -- operations on a running container ---------------------------------------------------------

    def _exec_process_file(self, c: RuntimeContainer, cmd: list[str], token: str, *, terminal: bool) -> Path:
        """Write the process of an exec: the container's own (user, groups, capabilities, env, cwd,
        no_new_privs) with ``cmd``; runc's exec would inherit those, crun's would not. Blocking."""
        spec = json.loads((c.bundle / "config.json").read_text())
        process = dict(spec["process"])
        process["args"] = list(cmd)
        process["terminal"] = terminal
        process.pop("consoleSize", None)
        target = c.bundle.parent / f"exec-{token}.json"
        target.write_text(json.dumps(process))
        return target

    async def exec_sync(self, c: RuntimeContainer, cmd: list[str], *, timeout: int, output_limit: int) -> ExecResult:
        """Run ``cmd`` in the container; ``timeout`` 0 waits as long as it runs (kubelet's meaning).

        Whatever ends the wait early, the timeout or the caller's cancellation (the client gave
        up on its ExecSync), kills the command itself and then the runtime's exec process: nothing
        it started is left running in the container.
        """
        token = secrets.token_hex(4)
        pid_file = c.bundle.parent / f"exec-{token}.pid"
        process_file = await asyncio.to_thread(self._exec_process_file, c, cmd, token, terminal=False)
        proc: asyncio.subprocess.Process | None = None
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.command_line("exec", "--process", str(process_file), "--pid-file", str(pid_file), c.id),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            assert proc.stdout is not None
            assert proc.stderr is not None
            budget = [output_limit]

            async def drain(stream: asyncio.StreamReader) -> bytes:
                kept = bytearray()
                while chunk := await stream.read(65536):
                    take = min(len(chunk), budget[0])
                    kept += chunk[:take]
                    budget[0] -= take
                return bytes(kept)

            readers = asyncio.gather(drain(proc.stdout), drain(proc.stderr), proc.wait())
            try:
                out, err, code = await asyncio.wait_for(asyncio.shield(readers), timeout if timeout > 0 else None)
            except TimeoutError:
                await asyncio.shield(self._kill_exec(proc, pid_file, readers))
                raise errors.DeadlineExceeded(f"command {cmd[0]!r} in container {c.id} timed out after {timeout}s") from None
            except BaseException:  # cancelled: the caller is gone, and so must be what it started
                await asyncio.shield(self._kill_exec(proc, pid_file, readers))
                raise
        except BaseException:
            if proc is not None and proc.returncode is None:  # cancelled while starting
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.shield(proc.wait())
            raise
        finally:
            for leftover in (pid_file, process_file):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return ExecResult(out, err, int(code))

    @staticmethod
    async def _kill_exec(proc: asyncio.subprocess.Process, pid_file: Path, readers: asyncio.Future[Any]) -> None:
        """Kill an exec'd command, then let the runtime's exec process reap it and exit.

        Killing the runtime's process first would orphan the command in the container (as a zombie,
        or running on). Its pid comes from ``--pid-file``, which the runtime writes once the command
        runs: a kill that comes before waits for the file a little.
        """
        deadline = time.monotonic() + 5
        while True:
            pid = await asyncio.to_thread(read_pid, pid_file)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_mod.SIGKILL)
                break
            if proc.returncode is not None or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        try:
            await asyncio.wait_for(asyncio.shield(readers), 5)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        except Exception:  # the readers' own failure: the processes are what matters here
            pass

    async def update_resources(self, c: RuntimeContainer, resources: dict[str, Any]) -> None:
        args = ("--root", self.root, "update", "--resources", "-", c.id)
        try:
            rc, _, err = await self._run(*args, timeout=COMMAND_TIMEOUT, stdin=json.dumps(resources).encode())
        except TimeoutError:
            raise RuntimeCommandError(f"{self.name} update: timed out after {COMMAND_TIMEOUT:.0f}s") from None
        if rc != 0:
            raise RuntimeCommandError(err.decode(errors="replace").strip())

    async def reopen_log(self, c: RuntimeContainer) -> None:
        """Have conmon reopen the container's log file (after kubelet rotated it).

        A container without a log path has nothing to reopen: conmon writes its output to
        ``/dev/null`` then, and a reopen would have it rename a fresh file over the host's
        ``/dev/null``. Nothing is asked of conmon.
        """
        if not c.log_path:
            return
        try:
            await asyncio.to_thread(conmon.write_ctl, c, conmon.ctl_line(conmon.CTL_REOPEN_LOG))
        except OSError as exc:
            raise errors.Internal(f"asking conmon of {c.id} to reopen its log: {exc}") from exc
        # conmon handles the request on its own loop: answer once the (new) log file is there.
        deadline = time.monotonic() + REOPEN_WAIT
        while not await asyncio.to_thread(os.path.exists, c.log_path):
            if time.monotonic() > deadline:
                raise errors.Internal(f"conmon of {c.id} did not reopen {c.log_path} within {REOPEN_WAIT:.0f}s")
            await asyncio.sleep(0.01)

    async def exec(
        self, c: RuntimeContainer, cmd: list[str], *, tty: bool, stdin: bool, width: int = 0, height: int = 0
    ) -> streams.ExecProcess:
        current = await self.state(c)
        if current is None or current.status != "running":
            raise errors.FailedPrecondition(f"container {c.id} is not running")
        token = secrets.token_hex(4)
        pid_file = c.bundle.parent / f"exec-{token}.pid"
        process_file = await asyncio.to_thread(self._exec_process_file, c, cmd, token, terminal=tty)
        argv = self.command_line("exec", "--process", str(process_file), "--pid-file", str(pid_file), c.id)
        try:
            return await streams.start_exec(
                argv,
                tty=tty,
                stdin=stdin,
                width=width,
                height=height,
                pid_file=pid_file,
                leftovers=[pid_file, process_file],
                container_pid=current.pid,
            )
        except BaseException:
            await asyncio.to_thread(process_file.unlink, True)
            raise

    async def attach(self, c: RuntimeContainer) -> streams.AttachConnection:
        try:
            return await streams.AttachConnection.connect(self.socket_dir, c)
        except OSError as exc:
            raise errors.FailedPrecondition(f"cannot attach to container {c.id} (is it running?): {exc}") from exc

    # -- checkpoint / restore (not built yet) ------------------------------------------------------

    async def checkpoint(self, c: RuntimeContainer, image_path: Path, *, leave_running: bool) -> None:
        raise errors.Unimplemented(f"{self.name}: pycri does not checkpoint containers yet")

    async def restore(self, c: RuntimeContainer, image_path: Path) -> int:
        raise errors.Unimplemented(f"{self.name}: pycri does not restore containers yet")


def _cgroups_path(c: RuntimeContainer) -> str:
    try:
        spec = json.loads((c.bundle / "config.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(spec.get("linux", {}).get("cgroupsPath", ""))


def last_error(text: str) -> str:
    """runc/crun errors: the JSON log line's msg, or the last line of plain text."""
    for line in reversed(text.splitlines()):
        line = line.strip()
        if not line:
            continue
        if line.startswith("{"):
            try:
                msg = json.loads(line).get("msg")
            except ValueError:
                msg = None
            if msg:
                return str(msg)
        return line
    return "(no output)"


def handlers_from_config(cfg: Config, launchers: Path | None = None) -> dict[str, OCIRuntime]:
    """The configured handlers; with ``launchers``, host work-arounds (pycri.oci.hybrid) may apply."""
    handlers = {name: OCIRuntime.from_config(name, h, cfg) for name, h in cfg.runtimes.items()}
    if launchers is not None:
        for handler in handlers.values():
            handler.path = hybrid.launcher_for(handler.path, launchers / handler.name)
    return handlers


def retired_handler(cfg: Config, name: str, path: str, root: str) -> OCIRuntime:
    """A handler the configuration no longer has, rebuilt from the binary and state root a pod's
    record remembers, so that its pods and containers can still be stopped and removed."""
    handler = OCIRuntime.from_config(name, RuntimeHandlerConfig(path=path, root=root), cfg)
    handler.path = hybrid.launcher_for(path, Path(cfg.state_dir) / "bin" / name)  # as handlers_from_config
    return handler
