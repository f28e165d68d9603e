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

    async def supports_mount_option(self, option: str) -> bool:
        return option in (await self.features()).get("mountOptions", [])


def handlers_from_config(cfg: Config) -> dict[str, OCIRuntime]:
    return {name: OCIRuntime.from_config(name, h) for name, h in cfg.runtimes.items()}
