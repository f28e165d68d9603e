"""The stats service: one place that samples pods and containers and accounts for disk usage.

- CPU, memory, processes: read from the cgroups at each call (a few small files per
  cgroup, all of a call's in one worker-thread hop), CPU rates from the samples kept
  by a :class:`~pycri.stats.sampler.RateKeeper`.
- Network: each pod's interfaces from its infra process's ``/proc/<pid>/net/dev``.
- Writable layers: :class:`~pycri.stats.fsusage.WritableLayers`, kept current from
  inotify events by a background thread; a call only takes in the events queued.
- Image store: measured again when the image service reports a change (and once a
  minute, in case), reusing the size of every layer seen before.

Nothing here imports grpc; ``pycri.stats.cri`` turns the samples into CRI messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from pycri.config import Config
from pycri.containers.model import Container, State
from pycri.containers.registry import ContainerRegistry
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.registry import SandboxRegistry
from pycri.stats.cgroups import HostCgroups, Style, detect_host
from pycri.stats.fsusage import StoreUsage, WritableLayers, mount_of, overlay_reports_writes
from pycri.stats.sampler import (
    ContainerSample,
    FsInfo,
    FsUsage,
    PodMetrics,
    PodSample,
    RateKeeper,
    Sampler,
)

log = logging.getLogger("pycri.stats")

SYNC_INTERVAL = 30.0  # seconds between background passes (forget removed containers, re-measure images)
IMAGES_INTERVAL = 60.0


class StatsService:
    def __init__(
        self,
        cfg: Config,
        containers: ContainerRegistry,
        sandboxes: SandboxRegistry,
        *,
        host: HostCgroups | None = None,
        layers: WritableLayers | None = None,
    ) -> None:
        self.containers = containers
        self.sandboxes = sandboxes
        self.images_root = Path(cfg.root_dir) / "images"
        self.containers_root = Path(cfg.root_dir) / "containers"
        self.probe_dir = Path(cfg.state_dir) / "stats-probe"
        self._styles = {name: Style.of(handler.path) for name, handler in cfg.runtimes.items()}
        default = cfg.runtimes.get(cfg.default_runtime)
        self._default_style = Style.of(default.path) if default is not None else Style.RUNC
        self._host = host
        self.sampler: Sampler | None = None
        self.layers = layers if layers is not None else WritableLayers()
        self.store = StoreUsage(self.images_root, (self.images_root / "layers",))
        self.rates = RateKeeper()
        self._image_usage: tuple[int, int] = (0, 0)
        self._mountpoints = ("", "")
        self._images_dirty = True
        self._images_task: asyncio.Task[None] | None = None
        self._ready: asyncio.Task[None] | None = None
        self._periodic: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Find the cgroups, start the accounting thread, and track the containers there are (in the background)."""
        host = self._host if self._host is not None else await asyncio.to_thread(detect_host)
        self.sampler = Sampler(host, self._styles, self._default_style)
        if await asyncio.to_thread(overlay_reports_writes, self.probe_dir):
            self.layers.hot_seconds = 0  # the events say it all: no file needs watching closely
        self.layers.start()
        live = self._live_layers()
        self._ready = asyncio.create_task(self._track(live))
        self.images_changed()
        self._periodic = asyncio.create_task(self._every())
        log.info(
            "stats: cgroups %s; accounting for %d writable layers (overlayfs %s writes on upper dirs)",
            host.layout.value,
            len(live),
            "reports" if self.layers.hot_seconds <= 0 else "does not report",
        )

    async def _track(self, live: dict[str, str]) -> None:
        try:
            await asyncio.to_thread(self.layers.sync, live)
        except Exception:  # the calls then track each container they meet
            log.exception("stats: scanning the writable layers failed")

    async def close(self) -> None:
        for task in (self._periodic, self._images_task, self._ready):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await asyncio.to_thread(self.layers.close)

    async def _every(self) -> None:
        last_images = time.monotonic()
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            try:
                await asyncio.to_thread(self.layers.sync, self._live_layers())
                live = set(self.containers.containers) | {f"pod:{i}" for i in self.sandboxes.sandboxes}
                self.rates.forget(live)
                if self.sampler is not None:
                    self.sampler.forget(live)
                if time.monotonic() - last_images >= IMAGES_INTERVAL:
                    last_images = time.monotonic()
                    self.images_changed()
            except Exception:
                log.exception("stats: background pass failed; going on")

    async def _started(self) -> Sampler:
        if self.sampler is None:
            raise RuntimeError("the stats service is not started")
        if self._ready is not None and not self._ready.done():
            await asyncio.shield(self._ready)
        return self.sampler

    def _live_layers(self) -> dict[str, str]:
        return {c.id: str(c.dir / "upper") for c in self.containers.containers.values()}

    # -- images ---------------------------------------------------------------------------------------

    def images_changed(self) -> None:
        """The image store changed (a pull, an import, a removal): measure it again, in the background."""
        self._images_dirty = True
        if self._images_task is None or self._images_task.done():
            self._images_task = asyncio.get_running_loop().create_task(self._measure_images())

    async def _measure_images(self) -> None:
        while self._images_dirty:
            self._images_dirty = False

            def measure() -> tuple[tuple[int, int], tuple[str, str]]:
                usage = self.store.measure()
                image_mount, container_mount = mount_of(self.images_root), mount_of(self.containers_root)
                return usage, (
                    image_mount.mountpoint if image_mount else str(self.images_root),
                    container_mount.mountpoint if container_mount else str(self.containers_root),
                )

            try:
                self._image_usage, self._mountpoints = await asyncio.to_thread(measure)
            except Exception:  # the last measurement stays; the next change measures again
                log.exception("stats: measuring the image store failed")

    async def filesystems(self) -> tuple[FsUsage, FsUsage]:
        """The image store and the writable layers: used bytes and inodes, and the mount each is on."""
        await self._started()
        while self._images_task is not None and not self._images_task.done():
            await asyncio.shield(self._images_task)
        settled = self.layers.settled_totals(self.containers.containers.keys())  # nothing to take in: no thread
        if settled is None:
            live = self._live_layers()

            def layers() -> tuple[int, int]:
                self.layers.sync(live)
                self.layers.drain()
                return self.layers.totals()

            settled = await asyncio.to_thread(layers)
        used, inodes = settled
        now = time.time_ns()
        image_mount, container_mount = self._mountpoints
        image_bytes, image_inodes = self._image_usage
        return FsUsage(now, image_mount, image_bytes, image_inodes), FsUsage(now, container_mount, used, inodes)

    # -- samples --------------------------------------------------------------------------------------

    def _layer(self, container: Container, now: int) -> FsUsage:
        upper = str(container.dir / "upper")
        used, inodes = self.layers.usage(container.id) or (0, 0)
        return FsUsage(now, upper, used, inodes)

    def _take_in(self, containers: Sequence[Container]) -> None:
        """In the worker thread: the events queued so far, and any container not tracked yet."""
        for c in containers:
            if c.id not in self.layers.trees:
                self.layers.track(c.id, str(c.dir / "upper"))
        self.layers.drain()

    def _rate(self, key: str, timestamp_ns: int, cpu_ns: int | None) -> int | None:
        return self.rates.rate(key, timestamp_ns, cpu_ns) if cpu_ns is not None else None

    def _with_rate(self, sample: ContainerSample) -> ContainerSample:
        if sample.usage is None:
            return sample
        rate = self._rate(sample.container.id, sample.timestamp_ns, sample.usage.cpu_usage_ns)
        return dataclasses.replace(sample, nano_cores=rate)

    async def container_samples(self, containers: Sequence[Container]) -> list[ContainerSample]:
        sampler = await self._started()

        def sample() -> list[ContainerSample]:
            self._take_in(containers)
            now = time.time_ns()
            return [sampler.container(c, now, self._layer(c, now)) for c in containers]

        return [self._with_rate(s) for s in await asyncio.to_thread(sample)]

    def _members(self, sandboxes: Sequence[Sandbox]) -> dict[str, list[Container]]:
        wanted: dict[str, list[Container]] = {s.id: [] for s in sandboxes}
        for c in sorted(self.containers.containers.values(), key=lambda c: c.created_at):
            if c.sandbox_id in wanted and c.state is not State.CREATING:
                wanted[c.sandbox_id].append(c)
        return wanted

    async def pod_samples(self, sandboxes: Sequence[Sandbox]) -> list[PodSample]:
        sampler = await self._started()
        members = self._members(sandboxes)

        def sample() -> list[PodSample]:
            self._take_in([c for cs in members.values() for c in cs])
            now = time.time_ns()
            return [sampler.pod(s, now, [(c, self._layer(c, now)) for c in members[s.id]]) for s in sandboxes]

        samples = await asyncio.to_thread(sample)
        return [
            dataclasses.replace(
                pod,
                containers=[self._with_rate(c) for c in pod.containers],
                nano_cores=self._rate(f"pod:{pod.sandbox.id}", pod.timestamp_ns, pod.usage.cpu_usage_ns if pod.usage else None),
            )
            for pod in samples
        ]

    async def pod_metrics(self, sandboxes: Sequence[Sandbox]) -> list[PodMetrics]:
        sampler = await self._started()
        members = self._members(sandboxes)
        root = self.containers_root

        def sample() -> list[PodMetrics]:
            self._take_in([c for cs in members.values() for c in cs])
            now = time.time_ns()
            fs = file_system(root)
            return [sampler.pod_metrics(s, now, [(c, self._layer(c, now)) for c in members[s.id]], fs) for s in sandboxes]

        return await asyncio.to_thread(sample)


def file_system(path: Path) -> FsInfo | None:
    """Capacity and inodes of the file system holding ``path``, and its device."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    mount = mount_of(path)
    device = mount.source if mount is not None else ""
    return FsInfo(device, st.f_blocks * st.f_frsize, st.f_files, st.f_ffree)
