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
EvictFn = Callable[[list[nri.ContainerEviction]], Awaitable[None]]


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

    def __init__(
        self, cfg: Config, pods: SandboxRegistry, containers: ContainerRegistry, *, update: UpdateFn, evict: EvictFn
    ) -> None:
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
                plugin_path=cfg.nri.plugin_path,
            )
            self.adaptation = Adaptation(options, sync=self._sync, update=self._update, evict=evict)

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

    # -- hooks: each returns at once when NRI is disabled or no plugin is connected ------------------
    #
    # Those whose failure fails the CRI call raise NRIError (run a pod, create, start or update a
    # container); the others (after the fact: post-create, post-start, post-update, stop, remove)
    # log a failure and go on, as containerd does.

    def _active(self) -> Adaptation | None:
        if self.adaptation is None or not self.adaptation.plugins:
            return None
        return self.adaptation

    def _pod_of(self, container: Container) -> nri.PodSandbox:
        sandbox = self.pods.sandboxes.get(container.sandbox_id)
        return pod_message(sandbox) if sandbox is not None else nri.PodSandbox(id=container.sandbox_id)

    async def _container_of(self, container: Container, spec: dict[str, Any] | None = None) -> nri.Container:
        if spec is None:
            spec = await asyncio.to_thread(read_spec, container)
        return container_message(container, spec)

    async def run_pod_sandbox(self, sandbox: Sandbox) -> None:
        if (nri_ := self._active()) is not None:
            await nri_.run_pod_sandbox(pod_message(sandbox))

    async def update_pod_sandbox(self, sandbox: Sandbox, overhead: Any, resources: Any) -> None:
        if (nri_ := self._active()) is not None:
            await nri_.update_pod_sandbox(
                pod_message(sandbox),
                convert.resources_from_cri(overhead) if overhead is not None else None,
                convert.resources_from_cri(resources) if resources is not None else None,
            )

    async def post_update_pod_sandbox(self, sandbox: Sandbox) -> None:
        if (nri_ := self._active()) is not None:
            await self._logged("PostUpdatePodSandbox", sandbox.id, nri_.post_update_pod_sandbox(pod_message(sandbox)))

    async def stop_pod_sandbox(self, sandbox: Sandbox) -> None:
        if (nri_ := self._active()) is not None:
            await self._logged("StopPodSandbox", sandbox.id, nri_.stop_pod_sandbox(pod_message(sandbox)))

    async def remove_pod_sandbox(self, sandbox: Sandbox) -> None:
        if (nri_ := self._active()) is not None:
            await self._logged("RemovePodSandbox", sandbox.id, nri_.remove_pod_sandbox(pod_message(sandbox)))

    async def create_container(self, container: Container, spec: dict[str, Any]) -> nri.CreateContainerResponse | None:
        """The plugins' adjustment of the new container (whose spec is ``spec``) and their updates of others."""
        if (nri_ := self._active()) is None:
            return None
        return await nri_.create_container(self._pod_of(container), container_message(container, spec))

    async def post_create_container(self, container: Container) -> None:
        if (nri_ := self._active()) is not None:
            message = await self._container_of(container)
            await self._logged("PostCreateContainer", container.id, nri_.post_create_container(self._pod_of(container), message))

    async def start_container(self, container: Container) -> None:
        if (nri_ := self._active()) is not None:
            await nri_.start_container(self._pod_of(container), await self._container_of(container))

    async def post_start_container(self, container: Container) -> None:
        if (nri_ := self._active()) is not None:
            message = await self._container_of(container)
            await self._logged("PostStartContainer", container.id, nri_.post_start_container(self._pod_of(container), message))

    async def update_container(self, container: Container, resources: nri.LinuxResources) -> list[nri.ContainerUpdate]:
        if (nri_ := self._active()) is None:
            return []
        return await nri_.update_container(self._pod_of(container), await self._container_of(container), resources)

    async def post_update_container(self, container: Container) -> None:
        if (nri_ := self._active()) is not None:
            message = await self._container_of(container)
            await self._logged("PostUpdateContainer", container.id, nri_.post_update_container(self._pod_of(container), message))

    async def stop_container(self, container: Container) -> list[nri.ContainerUpdate]:
        if (nri_ := self._active()) is None:
            return []
        message = await self._container_of(container)
        try:
            return await nri_.stop_container(self._pod_of(container), message)
        except Exception as exc:
            log.error("NRI StopContainer of %s failed: %s", container.id, exc)
            return []

    async def remove_container(self, container: Container) -> None:
        if (nri_ := self._active()) is not None:
            message = await self._container_of(container)
            await self._logged("RemoveContainer", container.id, nri_.remove_container(self._pod_of(container), message))

    @staticmethod
    async def _logged(event: str, target: str, call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:
            log.error("NRI %s of %s failed: %s", event, target, exc)

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
