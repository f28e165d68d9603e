"""The pycri daemon: start-up, serving, graceful shutdown.

Start-up order: take the daemon lock (one daemon per state dir), run the host
checks, open the state database, build the domain, then bind the sockets
(mode 0660) and serve. SIGTERM/SIGINT stop accepting new calls, let in-flight
calls finish (up to ``SHUTDOWN_GRACE``) and close the database.

SIGHUP rereads the configuration file and registries.conf, as CRI-O does: the keys of
``config.RELOADABLE`` (log level, registries.conf and auth file, CNI directory) take effect
at once, each change logged; other changed keys are logged as waiting for a restart. A file
that does not load changes nothing: the error is logged and the running values stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc

import pycri
from pycri import config as config_mod
from pycri import errors, logs
from pycri.config import Config
from pycri.containers.nri import NRI
from pycri.containers.registry import ContainerRegistry
from pycri.containers.service import ContainerService
from pycri.containers.specs import SpecFactory
from pycri.containers.streaming import StreamingBackend
from pycri.host import boot, checks
from pycri.images.service import ImageService
from pycri.network.pod import CNIPodNetwork
from pycri.node import Node
from pycri.nri import api_pb2 as nri_api
from pycri.oci import handlers_from_config, retired_handler
from pycri.oci.features import HandlerFeatures
from pycri.sandboxes.registry import SandboxRegistry
from pycri.sandboxes.service import SandboxService
from pycri.server.admin import AdminService, admin_handler
from pycri.server.app import build_server
from pycri.server.container_create import ContainerCreateService
from pycri.server.container_exec import ContainerExecService
from pycri.server.container_stats import ContainerStatsService
from pycri.server.container_status import ContainerStatusService
from pycri.server.container_stop import ContainerStopService
from pycri.server.image_pull import ImagePullService
from pycri.server.image_remove import ImageRemoveService
from pycri.server.image_status import ImageStatusService
from pycri.server.imagefs_info import ImageFsInfoService
from pycri.server.metrics import MetricsService
from pycri.server.runtime_info import RuntimeInfoService
from pycri.server.sandbox_run import SandboxRunService
from pycri.server.sandbox_stats import SandboxStatsService
from pycri.server.sandbox_status import SandboxStatusService
from pycri.server.sandbox_stop import SandboxStopService
from pycri.server.streaming import StreamingService
from pycri.stats.service import StatsService
from pycri.store import Store
from pycri.streaming.server import StreamingServer

log = logging.getLogger("pycri.daemon")

SHUTDOWN_GRACE = 30.0
SOCKET_MODE = 0o660


def sd_notify(state: str) -> None:
    """Tell systemd about start-up and shutdown (``Type=notify``); a no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(state.encode())
        except OSError as exc:
            log.warning("cannot notify systemd (%s): %s", address, exc)


class DaemonError(RuntimeError):
    """The daemon cannot start; the message says why."""


def socket_in_use(path: Path) -> bool:
    """True if a live process accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                return False
            raise
        return True


def prepare_socket(path: Path) -> None:
    """Refuse a socket a live daemon holds; remove a stale one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    if path.exists() or path.is_symlink():
        if socket_in_use(path):
            raise DaemonError(f"{path}: another daemon is serving on this socket")
        log.info("removing stale socket %s", path)
        path.unlink()


@contextlib.contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o711)
    fd = os.open(state_dir / "pycri.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonError(f"{state_dir}: another pycri daemon is running with this state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def streaming_tls(cfg: Config) -> ssl.SSLContext | None:
    """The streaming server's TLS context, when the configuration names a certificate."""
    if not cfg.streaming.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cfg.streaming.tls_cert_file, cfg.streaming.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise DaemonError(f"streaming.tls_cert_file/tls_key_file: cannot load: {exc}") from exc
    return context


class Daemon:
    def __init__(
        self, cfg: Config, load: Callable[[], Config] | None = None, *, boot_id: Callable[[], str] = boot.boot_id
    ) -> None:
        self.cfg = cfg
        self._load = load  # rereads the configuration (SIGHUP); None: nothing to reread
        self._boot_id = boot_id  # this boot's ID: a different one in the database means the node rebooted
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self.store: Store | None = None
        self.images: ImageService | None = None
        self.sandboxes: SandboxService | None = None
        self.containers: ContainerService | None = None
        self.nri: NRI | None = None
        self.stats: StatsService | None = None
        self.servers: list[grpc.aio.Server] = []
        self.streaming: StreamingServer | None = None
        self.bound: list[Path] = []
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def _bind(self, server: grpc.aio.Server, path: Path) -> None:
        prepare_socket(path)
        old = os.umask(0o117)
        try:
            server.add_insecure_port(f"unix:{path}")
            await server.start()
        finally:
            os.umask(old)
        self.bound.append(path)
        os.chmod(path, SOCKET_MODE)
        log.info("serving on unix://%s", path)

    async def start(self) -> None:
        cfg = self.cfg
        results = await asyncio.to_thread(checks.run_all, cfg)
        for check in results:
            if check.severity is checks.Severity.OK:
                log.debug("host check %s: %s", check.name, check.detail)
            else:
                log.warning("host check %s: %s (fix: %s)", check.name, check.detail, check.fix)
        fatal = [c for c in results if c.severity is checks.Severity.FATAL]
        if fatal:
            raise DaemonError("; ".join(f"{c.name}: {c.detail}" for c in fatal))
        await asyncio.to_thread(Path(cfg.root_dir).mkdir, parents=True, exist_ok=True, mode=0o711)
        self.store = await Store.open(cfg.database)
        handlers = await asyncio.to_thread(handlers_from_config, cfg, Path(cfg.state_dir) / "bin")
        features = HandlerFeatures(handlers, cfg.infra_command[0], "/pycri", cfg.root_dir, (cfg.root_dir, cfg.state_dir))
        # The services, each given what it uses: the registries of pods and containers come
        # first, so that the image store (layers in use), the spec builder (target containers),
        # NRI (plugin synchronization) and the container service (pods) can look them up
        # without the services that own them.
        pods, containers = SandboxRegistry(), ContainerRegistry()

        async def nri_updates(updates: list[nri_api.ContainerUpdate]) -> list[nri_api.ContainerUpdate]:
            # Plugins' updates of containers, carried out by the container service (built below;
            # NRI starts, and so calls this, only once every service is).
            assert self.containers is not None
            return await self.containers.apply_nri_updates(updates)

        async def nri_evictions(evictions: list[nri_api.ContainerEviction]) -> None:
            assert self.containers is not None
            await self.containers.evict_for_nri(evictions)

        self.nri = NRI(cfg, pods, containers, update=nri_updates, evict=nri_evictions)
        node = Node(cfg, self.store, handlers, features, nri_plugins=self.nri.plugins if self.nri.enabled else None)
        await node.load()
        self.images = ImageService(cfg, self.store, in_use=containers.chain_ids_in_use)
        build_spec = SpecFactory(containers.find, features.recursive_read_only, cfg.cdi_spec_dirs)
        retired = functools.partial(retired_handler, cfg)
        self.containers = ContainerService(
            cfg,
            self.store,
            handlers,
            pods,
            self.images,
            registry=containers,
            build_spec=build_spec,
            retired_handler=retired,
            nri=self.nri,
        )
        network = CNIPodNetwork(cfg, lambda: node.pod_cidr)
        await network.prepare()
        self.sandboxes = SandboxService(
            cfg,
            self.store,
            handlers,
            network,
            registry=pods,
            containers=self.containers,
            userns_supported=features.user_namespaces,
            retired_handler=retired,
            nri=self.nri,
        )
        # Order matters: pods, then their containers, are recovered before the image store
        # starts, because its garbage collection keeps the layers containers still use.
        # Recovery never stops the start: what fails is logged, listed for kubelet to remove,
        # and retried in the background.
        recorded, current = await self.store.get_meta(boot.META_KEY), self._boot_id()
        rebooted = bool(recorded and current and recorded != current)
        if rebooted:
            log.warning(
                "the node rebooted since pycri last ran (boot %s, now %s): nothing it started runs any more", recorded, current
            )
        await self.sandboxes.recover(rebooted=rebooted)
        await self.containers.recover(rebooted=rebooted)
        if current and current != recorded:
            await self.store.set_meta(boot.META_KEY, current)  # once recovery is done: a crash in it redoes it
        await self.images.start()
        await self.nri.start()  # after recovery: plugins are synchronized with every pod and container
        self.stats = StatsService(cfg, containers, pods)
        self.images.on_change.append(self.stats.images_changed)
        await self.stats.start()
        self.streaming = StreamingServer(
            StreamingBackend(self.containers, self.sandboxes), cfg.streaming.address, cfg.streaming.port, streaming_tls(cfg)
        )
        await self.streaming.start()
        families: list[object] = [
            StreamingService(self.streaming, self.containers, self.sandboxes),
            RuntimeInfoService(node),
            ContainerCreateService(self.containers),
            ContainerStopService(self.containers),
            ContainerStatusService(self.containers),
            ContainerExecService(self.containers),
            ContainerStatsService(self.containers, self.stats),
            SandboxRunService(self.sandboxes),
            SandboxStopService(self.sandboxes),
            SandboxStatusService(self.sandboxes),
            SandboxStatsService(self.sandboxes, self.stats),
            MetricsService(self.sandboxes, self.stats),
            ImagePullService(self.images, list(cfg.runtimes)),
            ImageStatusService(self.images),
            ImageRemoveService(self.images),
            ImageFsInfoService(self.stats),
        ]
        main = build_server(families, extra_handlers=[admin_handler(AdminService(self.images))])
        self.servers.append(main)
        await self._bind(main, Path(cfg.socket))
        if cfg.image_socket:
            images = build_server(families, images_only=True)
            self.servers.append(images)
            await self._bind(images, Path(cfg.image_socket))

    async def stop(self) -> None:
        log.info("shutting down: finishing in-flight calls (up to %.0fs)", SHUTDOWN_GRACE)
        await asyncio.gather(*(s.stop(SHUTDOWN_GRACE) for s in self.servers))
        if self.streaming is not None:
            await self.streaming.stop()
        if self.nri is not None:
            await self.nri.stop()
        for path in self.bound:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if self.stats is not None:
            await self.stats.close()
        if self.containers is not None:
            await self.containers.close()
        if self.sandboxes is not None:
            await self.sandboxes.close()
        if self.images is not None:
            await self.images.close()
        if self.store is not None:
            await self.store.close()
        log.info("stopped")

    def request_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> None:
        """Reread the configuration and registries.conf; apply what may change while running."""
        if self._load is None:
            log.warning("reload: this daemon has no configuration file to reread")
            return
        async with self._reload_lock:
            try:
                new = await asyncio.to_thread(self._load)
                use_registries = await self.images.check_registries(new.images) if self.images is not None else None
            except (config_mod.ConfigError, errors.CRIError) as exc:
                log.error("reload failed, the running configuration stays in force: %s", exc)
                return
            applied, later = config_mod.apply_reloadable(self.cfg, new)
            logs.set_level(self.cfg.log_level)
            if use_registries is not None:
                use_registries()
            for key, old, value in applied:
                log.info("reload: %s: %s -> %s", key, json.dumps(old), json.dumps(value))
            log.info("reload: registries from %s in use", self.cfg.images.registries_conf)
            for key in later:
                log.warning("reload: %s changed; it takes effect when the daemon restarts", key)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.start()
            log.info("pycri %s ready", pycri.__version__)
            sd_notify("READY=1")
            await self._stop.wait()
        finally:
            sd_notify("STOPPING=1")
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)


def run(cfg: Config, load: Callable[[], Config] | None = None) -> None:
    """Serve until SIGTERM/SIGINT; ``load`` rereads the configuration on SIGHUP."""
    with daemon_lock(Path(cfg.state_dir)):
        asyncio.run(Daemon(cfg, load).run())
