"""OCI runtime handlers (runc, crun): one small interface, one class per binary.

Only what the foundation needs lives here yet: probing that the binary works
(``--version``) and reading its ``features`` document. The container issue adds
create/start/kill/delete/exec/update on the same class.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.config import Config, RuntimeHandlerConfig

PROBE_TIMEOUT = 10.0


@dataclass(frozen=True)
class Probe:
    ok: bool
    version: str
    message: str = ""


@dataclass
class OCIRuntime:
    """One runtime handler: a runc-compatible binary and its state root."""

    name: str
    path: str
    root: str
    _probe_cache: dict[tuple[int, int], Probe] = field(default_factory=dict, repr=False)
    _features: dict[str, Any] | None = field(default=None, repr=False)

    @classmethod
    def from_config(cls, name: str, cfg: RuntimeHandlerConfig) -> OCIRuntime:
        return cls(name=name, path=cfg.path, root=cfg.root)

    async def _run(self, *args: str, timeout: float = PROBE_TIMEOUT) -> tuple[int, bytes, bytes]:
        proc = await asyncio.create_subprocess_exec(
            self.path, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        return proc.returncode, out, err

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


def handlers_from_config(cfg: Config, launchers: Path | None = None) -> dict[str, OCIRuntime]:
    """The configured handlers; with ``launchers``, host work-arounds (pycri.oci.hybrid) may apply."""
    handlers = {name: OCIRuntime.from_config(name, h) for name, h in cfg.runtimes.items()}
    if launchers is not None:
        from pycri.oci import hybrid

        for handler in handlers.values():
            handler.path = hybrid.launcher_for(handler.path, launchers / handler.name)
    return handlers


class RuntimeCommandError(RuntimeError):
    """An OCI runtime command failed; the message has its stderr."""


@dataclass(frozen=True)
class ContainerState:
    """What ``runtime state`` reports: status is creating, created, running, paused or stopped."""

    id: str
    status: str
    pid: int
    bundle: str


async def _command(rt: OCIRuntime, *args: str, timeout: float = 60.0) -> bytes:
    try:
        rc, out, err = await rt._run("--root", rt.root, *args, timeout=timeout)
    except TimeoutError:
        raise RuntimeCommandError(f"{rt.name} {args[0]}: timed out after {timeout:.0f}s") from None
    if rc != 0:
        text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
        raise RuntimeCommandError(f"{rt.name} {' '.join(args[:1])} failed: {_last_error(text)}")
    return out


def _last_error(text: str) -> str:
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


async def state(rt: OCIRuntime, cid: str) -> ContainerState | None:
    """The container's state, or None when the runtime does not know it."""
    try:
        out = await _command(rt, "state", cid)
    except RuntimeCommandError as exc:
        if "does not exist" in str(exc) or "not exist" in str(exc) or "No such file" in str(exc):
            return None
        raise
    doc = json.loads(out)
    return ContainerState(
        id=cid, status=str(doc.get("status", "")), pid=int(doc.get("pid") or 0), bundle=str(doc.get("bundle", ""))
    )


async def start(rt: OCIRuntime, cid: str) -> None:
    await _command(rt, "start", cid)


async def kill(rt: OCIRuntime, cid: str, signal: str, *, all_processes: bool = False) -> None:
    args = ["kill", *(["--all"] if all_processes else []), cid, signal]
    await _command(rt, *args)


async def delete(rt: OCIRuntime, cid: str, *, force: bool = False) -> None:
    """Delete the container from the runtime; a container the runtime does not know is already deleted."""
    try:
        await _command(rt, "delete", *(["--force"] if force else []), cid)
    except RuntimeCommandError as exc:
        if "does not exist" not in str(exc) and "not exist" not in str(exc):
            raise
