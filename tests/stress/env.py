"""A throw-away daemon for the stress harnesses, with what its pods need and nothing shared.

``StressEnv`` starts a local registry, pushes the busybox test image to it, and starts a
``DaemonProcess`` on temporary directories that has pulled the image. The daemon's CNI network is
written by us before it starts: pycri's default network (a bridge of its own and a free /24)
without ``portmap`` (so no request can touch the host's iptables) and with host-local's
``dataDir`` inside the daemon's directory, so that every IP reservation of its pods is in one
place. Every pod the harnesses run gets ``cgroup_parent`` = ``/pycri-<tag>-<hex>``, so the
cgroups of its pods and containers are all below one directory of each hierarchy.

``close()`` removes everything, leak or not: call ``probes.find_leaks`` before it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

import pycri
from pycri.api import api_pb2 as api
from pycri.client import Client
from pycri.network import cni
from pycri.testing import DaemonProcess
from tests.integration.test_sandbox_failures import (
    CATATONIT,
    CNI_BIN_DIRS,
    CONMON,
    CRUN,
    PLUGINS,
    RUNC,
    free_subnet,
    processes_mentioning,
    sh,
)
from tests.support import busybox
from tests.support.registry import REGISTRY_BINARY, LocalRegistry

# Requests that name a registry which is not on loopback go to this dead proxy and fail at once.
DEAD_PROXY = "http://127.0.0.1:9"
PROXY_ENV = {
    "HTTP_PROXY": DEAD_PROXY,
    "HTTPS_PROXY": DEAD_PROXY,
    "ALL_PROXY": DEAD_PROXY,
    "http_proxy": DEAD_PROXY,
    "https_proxy": DEAD_PROXY,
    "all_proxy": DEAD_PROXY,
    "NO_PROXY": "127.0.0.1,localhost,::1",
    "no_proxy": "127.0.0.1,localhost,::1",
}
IMAGE_TAG = "stress"
HEX_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])")


def missing_requirements() -> str | None:
    """Why the harnesses cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for path in (RUNC, CRUN, CONMON, CATATONIT, REGISTRY_BINARY):
        if not os.access(path, os.X_OK):
            return f"{path} missing"
    if not busybox.available():
        return f"{busybox.BUSYBOX} missing (busybox-static)"
    if any(shutil.which(p, path=os.pathsep.join(CNI_BIN_DIRS)) is None for p in PLUGINS):
        return "containernetworking-plugins missing"
    if shutil.which("ip") is None:
        return "iproute2 missing"
    return None


@contextlib.contextmanager
def daemon_environment(*, proxy: bool) -> Iterator[None]:
    """Daemons started inside run the pycri these harnesses import (whatever their working directory) and,
    with ``proxy``, see ``PROXY_ENV``: only loopback registries can be reached."""
    repo = str(Path(pycri.__file__).resolve().parent.parent)
    python_path = os.pathsep.join([repo, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])
    wanted = {"PYTHONPATH": python_path} | (PROXY_ENV if proxy else {})
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class StressEnv:
    def __init__(self, tag: str, *, log_level: str = "debug") -> None:
        self.tag = tag
        self.run_id = secrets.token_hex(3)
        self.cgroup_parent = f"/pycri-{tag}-{self.run_id}"
        self.network_name = f"pycri-{tag}-{self.run_id}"
        self.log_level = log_level
        self.registry = LocalRegistry()
        self.daemon: DaemonProcess | None = None
        self.image = ""
        # Every pod and container ID a harness saw (the probes also read the daemon's log).
        self.known_ids: set[str] = set()

    # -- set-up ------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self.registry.start()
        self.image = busybox.push_busybox(self.registry, IMAGE_TAG)
        daemon = DaemonProcess.temporary(cni={"default_subnet": str(free_subnet())})
        daemon.log_level = self.log_level
        self.daemon = daemon
        conf_dir = Path(daemon.cfg.cni.conf_dir)
        conf_dir.mkdir(parents=True, exist_ok=True)
        network = cni.default_network(daemon.cfg.cni.default_bridge, daemon.cfg.cni.default_subnet)
        network["name"] = self.network_name
        network["plugins"] = [p for p in network["plugins"] if p["type"] != "portmap"]
        network["plugins"][0]["ipam"]["dataDir"] = str(self.ipam_dir)
        (conf_dir / "10-stress.conflist").write_text(json.dumps(network, indent=2))
        daemon.start(timeout=60)
        with Client(daemon.socket, timeout=120) as client:
            client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=self.image)))

    @property
    def d(self) -> DaemonProcess:
        assert self.daemon is not None, "the daemon was not started"
        return self.daemon

    @property
    def workdir(self) -> Path:
        return self.d.workdir

    @property
    def ipam_dir(self) -> Path:
        """host-local's dataDir: one file per reserved IP in ``<dir>/<network name>/``."""
        return self.d.workdir / "cni" / "ipam"

    @property
    def bridge(self) -> str:
        return self.d.cfg.cni.default_bridge

    # -- the daemon ----------------------------------------------------------------------------------

    def alive(self) -> bool:
        return self.d.proc is not None and self.d.proc.poll() is None

    def kill(self) -> None:
        self.d.kill()

    def restart(self, timeout: float = 60.0) -> None:
        """Start the daemon again on the same directories (after a kill or a crash)."""
        if self.d.proc is not None:
            self.d.kill()
        self.d.start(timeout=timeout)

    def log(self) -> str:
        return self.d.log()

    # -- pods -----------------------------------------------------------------------------------------

    def pod_config(self, name: str, namespace: str, *, log_dir: Path | None = None) -> api.PodSandboxConfig:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=namespace, uid=f"{name}-{secrets.token_hex(4)}"),
            hostname=name[:63],
            log_directory=str(log_dir if log_dir is not None else self.d.workdir / "logs" / name),
            labels={"pycri-stress": self.run_id},
        )
        config.linux.cgroup_parent = self.cgroup_parent
        return config

    def container_config(self, name: str, command: list[str]) -> api.ContainerConfig:
        return api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=self.image),
            command=command,
            log_path=f"{name}.log",
            labels={"pycri-stress": self.run_id},
        )

    # -- clean-up -------------------------------------------------------------------------------------

    def cgroup_dirs(self) -> list[str]:
        """Our cgroup parent in every hierarchy (not its contents)."""
        return glob.glob(f"/sys/fs/cgroup/*{self.cgroup_parent}") + glob.glob(f"/sys/fs/cgroup{self.cgroup_parent}")

    def close(self) -> None:
        """Stop the daemon and remove everything it and its pods may have left; never raises for a leftover."""
        daemon = self.daemon
        try:
            if daemon is not None:
                with contextlib.suppress(Exception):
                    daemon.stop()
                self._force_clean(daemon)
        finally:
            self.registry.stop()

    def _force_clean(self, daemon: DaemonProcess) -> None:
        with contextlib.suppress(Exception):
            daemon.force_clean()
        for text in (str(daemon.workdir), self.cgroup_parent):
            for pid, _ in processes_mentioning(text):
                if pid != os.getpid():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        for cid in self.known_ids | ids_in(daemon.log()):
            if os.path.lexists(f"/run/netns/pycri-{cid[:16]}"):
                sh("ip", "netns", "delete", f"pycri-{cid[:16]}")
        time.sleep(0.2)  # killed processes leave their cgroups
        for top in self.cgroup_dirs():
            for dirpath, _, _ in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
                with contextlib.suppress(OSError):
                    os.rmdir(dirpath)
        sh("ip", "link", "delete", daemon.cfg.cni.default_bridge)
        shutil.rmtree(daemon.workdir, ignore_errors=True)


def ids_in(text: str) -> set[str]:
    """The 64-hex-digit IDs (pods, containers, images) in ``text``."""
    return set(HEX_ID.findall(text))


__all__ = ["DEAD_PROXY", "PROXY_ENV", "StressEnv", "daemon_environment", "ids_in", "missing_requirements"]
