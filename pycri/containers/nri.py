"""NRI for pycri's services: the pods and containers as NRI messages, and plugin synchronization.

:class:`NRI` is built by the daemon before the services (they get it in their constructors);
with ``[nri] enable = false`` it has no :class:`~pycri.nri.adaptation.Adaptation` and every
method returns at once. The daemon starts it after recovery, so a plugin that connects is
synchronized with every pod and container recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from pycri.config import Config, parse_duration
from pycri.containers.model import Container
from pycri.containers.model import State as ContainerState
from pycri.containers.registry import ContainerRegistry
from pycri.nri import api_pb2 as nri
from pycri.nri import convert
from pycri.nri.adaptation import Adaptation, Options, PluginInfo, SyncCallback
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.sandboxes.registry import SandboxRegistry

log = logging.getLogger("pycri.nri")

UpdateFn = Callable[[list[nri.ContainerUpdate]], Awaitable[list[nri.ContainerUpdate]]]


def pod_message(sandbox: Sandbox) -> nri.PodSandbox:
    return convert.pod_sandbox(
        sandbox_id=sandbox.id,
        config=sandbox.config,
        runtime_handler=sandbox.runtime_handler,
        cgroups_path=sandbox.cgroups_path,
        netns=sandbox.netns,
        pid=sandbox.infra_pid,
        ips=list(sandbox.ips),
    )


def read_spec(container: Container) -> dict[str, Any] | None:
    """The container's OCI spec from its bundle (None when there is none yet). Blocking."""
    try:
        spec: dict[str, Any] = json.loads((container.bundle / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return spec


def container_message(container: Container, spec: dict[str, Any] | None) -> nri.Container:
    return convert.container(
        container_id=container.id,
        sandbox_id=container.sandbox_id,
        config=container.config,
        state=container.state.value,
        spec=spec,
        pid=container.pid if container.state is ContainerState.RUNNING else 0,
        created_at=container.created_at,
        started_at=container.started_at,
        finished_at=container.finished_at,
        exit_code=container.exit_code,
        reason=container.reason,
        message=container.message,
        image_name=container.config.image.image,
        image_id=container.image_id,
    )


class NRI:
    """The services' way to NRI: ``adaptation`` is None when NRI is disabled."""

    def __init__(self, cfg: Config, pods: SandboxRegistry, containers: ContainerRegistry, *, update: UpdateFn) -> None:
        self.cfg = cfg
        self.pods = pods
        self.containers = containers
        self._update = update
        self.adaptation: Adaptation | None = None
        if cfg.nri.enable:
            options = Options(
                socket_path=cfg.nri.socket,
                plugin_registration_timeout=parse_duration(cfg.nri.plugin_registration_timeout),
                plugin_request_timeout=parse_duration(cfg.nri.plugin_request_timeout),
                plugin_config_dir=cfg.nri.plugin_config_path,
            )
            self.adaptation = Adaptation(options, sync=self._sync, update=self._update)

    @property
    def enabled(self) -> bool:
        return self.adaptation is not None

    def plugins(self) -> list[PluginInfo]:
        return self.adaptation.plugins if self.adaptation is not None else []

    async def start(self) -> None:
        if self.adaptation is not None:
            await self.adaptation.start()

    async def stop(self) -> None:
        if self.adaptation is not None:
            await self.adaptation.stop()

    @contextlib.asynccontextmanager
    async def no_sync(self) -> AsyncIterator[None]:
        """No plugin is synchronized while a pod or container is made or removed within."""
        if self.adaptation is None:
            yield
            return
        async with self.adaptation.block_plugin_sync():
            yield

    async def _sync(self, callback: SyncCallback) -> None:
        pods = [
            pod_message(s)
            for s in sorted(self.pods.sandboxes.values(), key=lambda s: s.created_at)
            if s.state is not SandboxState.CREATING and not s.name_released
        ]
        listed = sorted(
            (c for c in self.containers.containers.values() if c.state is not ContainerState.CREATING),
            key=lambda c: c.created_at,
        )
        specs = await asyncio.to_thread(lambda: [read_spec(c) for c in listed])
        containers = [container_message(c, spec) for c, spec in zip(listed, specs, strict=True)]
        updates = await callback(pods, containers)
        if updates:
            failed = await self._update(updates)
            if failed:
                log.warning("NRI: %d container updates asked for at synchronization failed", len(failed))
