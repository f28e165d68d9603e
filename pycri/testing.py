"""Run a pycri daemon in a child process: for tests, benchmarks and tools.

    with DaemonProcess.temporary() as daemon:
        with Client(daemon.socket) as client:
            client.version()

``temporary()`` gives the daemon its own root, state dir and socket under a
fresh temporary directory, so it shares nothing with a system daemon.
"""

from __future__ import annotations

import os
import random
import secrets
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
from pycri.host.tree import remove_tree


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
        workdir.chmod(0o711)  # as /var/lib and /run: pods with their own user namespace reach their files
        data: dict[str, Any] = {
            "root_dir": str(workdir / "root"),
            "state_dir": str(workdir / "run"),
            "socket": str(workdir / "run" / "pycri.sock"),
            "runtimes": {
                "runc": {"path": "/usr/sbin/runc", "root": str(workdir / "run" / "runc")},
                "crun": {"path": "/usr/bin/crun", "root": str(workdir / "run" / "crun")},
            },
            # Its own bridge and /24, so test daemons never share a network (deleted on exit).
            "cni": {
                "conf_dir": str(workdir / "cni" / "net.d"),
                "default_bridge": f"pycri-t{secrets.token_hex(3)}",
                "default_subnet": f"10.{random.randint(200, 249)}.{random.randint(0, 255)}.0/24",
            },
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

    def leftovers(self) -> list[str]:
        """Runtime state this daemon's pods and containers left: containers its OCI runtimes still
        know, mounts below its directories, network namespaces its pods created."""
        found = []
        for name, handler in self.cfg.runtimes.items():
            if not os.path.isdir(handler.root):
                continue
            listed = subprocess.run([handler.path, "--root", handler.root, "list", "-q"], capture_output=True, text=True)
            found += [f"{name} container {cid}" for cid in listed.stdout.split()]
        roots = (str(self.workdir), self.cfg.root_dir, self.cfg.state_dir)
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f if line.split()[4].startswith(roots)]
        pods = Path(self.cfg.state_dir) / "pods"
        ids = {p.name[:16] for p in pods.iterdir()} if pods.is_dir() else set()
        found += [f"netns {n}" for n in os.listdir("/run/netns") if n.startswith("pycri-") and n[6:] in ids] if ids else []
        return found

    def force_clean(self) -> None:
        """Remove what :meth:`leftovers` finds (after a failed test), so one failure does not poison the machine."""
        for handler in self.cfg.runtimes.values():
            if os.path.isdir(handler.root):
                listed = subprocess.run([handler.path, "--root", handler.root, "list", "-q"], capture_output=True, text=True)
                for cid in listed.stdout.split():
                    subprocess.run([handler.path, "--root", handler.root, "delete", "--force", cid], capture_output=True)
        pods = Path(self.cfg.state_dir) / "pods"
        for pod in pods.iterdir() if pods.is_dir() else []:
            subprocess.run(["ip", "netns", "delete", f"pycri-{pod.name[:16]}"], capture_output=True)
        # Every mount below the daemon's directories (pod shm, container rootfs), deepest first.
        for entry in sorted((e for e in self.leftovers() if e.startswith("mount ")), key=len, reverse=True):
            subprocess.run(["umount", "-l", entry.removeprefix("mount ")], capture_output=True)

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
        left = self.leftovers()
        if left:
            self.force_clean()
        if self._cleanup:
            remove_tree(self.workdir, ignore_errors=True)
            if self.cfg.cni.default_bridge.startswith("pycri-t"):
                subprocess.run(["ip", "link", "delete", self.cfg.cni.default_bridge], capture_output=True)
        if left and et is None:
            raise AssertionError("the daemon left runtime state behind: " + ", ".join(left))


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
