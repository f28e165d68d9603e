"""Run a pycri daemon in a child process: for tests, benchmarks and tools.

    with DaemonProcess.temporary() as daemon:
        with Client(daemon.socket) as client:
            client.version()

``temporary()`` gives the daemon its own root, state dir and socket under a
fresh temporary directory, so it shares nothing with a system daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pycri import config as config_mod


class DaemonProcess:
    def __init__(self, cfg: config_mod.Config, workdir: Path, *, log_level: str = "debug", cleanup: bool = False) -> None:
        self.cfg = cfg
        self.workdir = workdir
        self.config_path = workdir / "pycri.toml"
        self.log_path = workdir / "daemon.log"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self._cleanup = cleanup

    @classmethod
    def temporary(cls, **overrides: Any) -> DaemonProcess:
        """A daemon whose paths all live in a new temporary directory; ``overrides`` are config keys."""
        workdir = Path(tempfile.mkdtemp(prefix="pycri-test-"))
        data: dict[str, Any] = {
            "root_dir": str(workdir / "root"),
            "state_dir": str(workdir / "run"),
            "socket": str(workdir / "run" / "pycri.sock"),
            "runtimes": {
                "runc": {"path": "/usr/sbin/runc", "root": str(workdir / "run" / "runc")},
                "crun": {"path": "/usr/bin/crun", "root": str(workdir / "run" / "crun")},
            },
            "cni": {"conf_dir": str(workdir / "cni" / "net.d")},
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = data[key] | value
            else:
                data[key] = value
        return cls(config_mod.from_dict(data), workdir, cleanup=True)

    @property
    def socket(self) -> str:
        return self.cfg.socket

    @property
    def endpoint(self) -> str:
        return f"unix://{self.cfg.socket}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 20.0) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(config_mod.render(self.cfg))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pycri", "--config", str(self.config_path), "daemon", "--log-level", self.log_level],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pycri daemon exited with {self.proc.returncode}:\n{self.log()}")
            if _accepts(self.cfg.socket) and (not self.cfg.image_socket or _accepts(self.cfg.image_socket)):
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"pycri daemon did not listen on {self.cfg.socket} within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Signal the daemon and wait for it; returns its exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def __enter__(self) -> DaemonProcess:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        if self._cleanup:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _accepts(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
        except OSError:
            return False
        return True


__all__ = ["DaemonProcess"]
