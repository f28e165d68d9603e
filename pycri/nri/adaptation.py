"""NRI in the runtime: the plugin socket, registered plugins, and one method per lifecycle hook.

This is containerd/nri's ``pkg/adaptation`` (adaptation.go) for pycri's services. The
services build NRI's ``PodSandbox`` and ``Container`` messages and call the hooks; plugins
are called one after the other in (index, name) order, each only for the events it
subscribed to, with ``plugin_request_timeout`` each::

    nri = Adaptation(Options(socket_path=...), sync=sync_fn, update=update_fn)
    await nri.start()                                  # listen on the socket
    await nri.run_pod_sandbox(pod)                     # raises NRIError when a plugin fails it
    reply = await nri.create_container(pod, ctr)       # merged ContainerAdjustment + updates
    updates = await nri.update_container(pod, ctr, resources)
    updates = await nri.stop_container(pod, ctr)
    await nri.stop()

``sync(callback)`` is how a newly registered plugin learns the runtime's state: the runtime
takes whatever lock keeps its pods and containers still, calls ``await callback(pods,
containers)``, and applies the container updates the plugin asked for, which the callback
returns. ``update(updates)`` applies updates a plugin asks for on its own (UpdateContainers)
and returns those that failed. ``block_plugin_sync()`` keeps plugins from being synchronized
(and so from joining) while the runtime does something that must not interleave with it.

Hooks are serialized, as upstream serializes them under one lock: a plugin sees events in
the order they happen, and joins the call order between two events.

Pre-installed plugins: ``start()`` runs every executable ``NN-name`` in ``plugin_path``
(upstream's ``/opt/nri/plugins``), as upstream does, with one end of a socket pair as its
connection: the environment holds only ``NRI_PLUGIN_NAME``, ``NRI_PLUGIN_IDX`` and
``NRI_PLUGIN_SOCKET`` (the descriptor's number; upstream makes it 3, pycri passes the
descriptor under its own number, which plugins read from the variable). A launched plugin
that fails to register is killed; ``stop()`` kills them all.

Not here (yet): WebAssembly and built-in plugins,
``Shutdown`` calls on stop (upstream does not send them either), and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from google.protobuf.message import Message

from pycri import __version__
from pycri.nri import api_pb2 as nri
from pycri.nri import events
from pycri.nri.owners import ConflictError
from pycri.nri.plugin import EvictFn, NRIError, Plugin, UpdateFn
from pycri.nri.result import Result

log = logging.getLogger("pycri.nri")

M = TypeVar("M", bound=Message)

SyncCallback = Callable[[Sequence[nri.PodSandbox], Sequence[nri.Container]], Awaitable[list[nri.ContainerUpdate]]]
SyncFn = Callable[[SyncCallback], Awaitable[None]]


@dataclass(frozen=True)
class Options:
    socket_path: str = events.DEFAULT_SOCKET_PATH
    runtime_name: str = "pycri"
    runtime_version: str = __version__
    plugin_registration_timeout: float = events.DEFAULT_REGISTRATION_TIMEOUT  # seconds
    plugin_request_timeout: float = events.DEFAULT_REQUEST_TIMEOUT  # seconds
    # Drop-in configuration: "<dir>/<index>-<name>.conf", else "<dir>/<name>.conf" (upstream's /etc/nri/conf.d).
    plugin_config_dir: str | None = None
    nri_version: str = ""  # the NRI API version the runtime claims in ConfigureRequest
    plugin_path: str | None = None  # pre-installed plugins ("NN-name" executables) to launch at start


@dataclass(frozen=True)
class PluginInfo:
    index: str
    name: str
    events: int = field(compare=False)


def find_plugins(directory: str) -> list[tuple[str, str, str]]:
    """The pre-installed plugins in ``directory`` as (path, index, name), in name order. Blocking."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        log.debug("NRI: no plugin directory %s", directory)
        return []
    except OSError as exc:
        log.error("NRI: cannot read the plugin directory %s: %s", directory, exc)
        return []
    found = []
    for entry in names:
        path = os.path.join(directory, entry)
        index, _, name = entry.partition("-")
        try:
            events.check_plugin_index(index)
            events.check_plugin_name(name)
        except ValueError as exc:
            log.warning("NRI: %s is not a plugin (NN-name): %s; skipped", path, exc)
            continue
        if not os.path.isfile(path) or not os.access(path, os.X_OK):
            log.warning("NRI: %s is not an executable file; skipped", path)
            continue
        found.append((path, index, name))
    return found


class _SyncGate:
    """Many holders of ``blocked()``, or one synchronizing plugin, never both (upstream's sync RWMutex)."""

    def __init__(self) -> None:
        self._blockers = 0
        self._syncing = False
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def blocked(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._syncing)
            self._blockers += 1
        try:
            yield
        finally:
            async with self._changed:
                self._blockers -= 1
                self._changed.notify_all()

    @contextlib.asynccontextmanager
    async def syncing(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: not self._syncing and self._blockers == 0)
            self._syncing = True
        try:
            yield
        finally:
            async with self._changed:
                self._syncing = False
                self._changed.notify_all()


class Adaptation:
    def __init__(self, options: Options, *, sync: SyncFn, update: UpdateFn, evict: EvictFn | None = None) -> None:
        self.options = options
        self._sync = sync
        self._update = update
        self._evict = evict  # stops the containers plugins evict (UpdateContainers); None: evictions are logged only
        self._plugins: list[Plugin] = []
        self._lock = asyncio.Lock()
        self._gate = _SyncGate()
        self._server: asyncio.AbstractServer | None = None
        self._connecting: set[asyncio.Task[object]] = set()
        self._launched: list[asyncio.subprocess.Process] = []

    # -- plugins --------------------------------------------------------------------------------

    @property
    def plugins(self) -> list[PluginInfo]:
        """The registered plugins still connected, in call order."""
        return [PluginInfo(p.index, p.name, p.events) for p in self._plugins if not p.closed]

    def block_plugin_sync(self) -> contextlib.AbstractAsyncContextManager[None]:
        """``async with nri.block_plugin_sync():`` no plugin is synchronized (joins) meanwhile."""
        return self._gate.blocked()

    def _config_for(self, index: str, name: str) -> str:
        if self.options.plugin_config_dir is None:
            return ""
        for candidate in (f"{index}-{name}.conf", f"{name}.conf"):
            try:
                return (Path(self.options.plugin_config_dir) / candidate).read_text()
            except FileNotFoundError:
                continue
        return ""

    async def add_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Plugin | None:
        """Take a plugin's connected socket through registration, configuration and synchronization.

        Returns the plugin once it is in the call order; None (and the socket closed) when any
        step failed, which is logged.
        """
        plugin = Plugin(
            reader, writer, update_fn=self._update, evict_fn=self._evict, request_timeout=self.options.plugin_request_timeout
        )
        try:
            await plugin.start(
                runtime_name=self.options.runtime_name,
                runtime_version=self.options.runtime_version,
                registration_timeout=self.options.plugin_registration_timeout,
                config_for=self._config_for,
                nri_version=self.options.nri_version,
            )
            async with self._gate.syncing():
                await self._sync(plugin.synchronize)
                if plugin.closed:
                    raise NRIError("connection closed during synchronization")
                async with self._lock:
                    self._prune()  # a plugin of the same name that went away is not listed twice
                    self._plugins.append(plugin)
                    self._plugins.sort(key=lambda p: (p.index, p.name))
        except Exception as exc:
            log.error("NRI plugin %s not added: %s", plugin.full_name if plugin.name else "(unregistered)", exc)
            plugin.close()
            return None
        log.info("NRI plugin %s connected and synchronized; call order: %s", plugin.full_name, self._order())
        return plugin

    def _order(self) -> str:
        return ", ".join(p.full_name for p in self._plugins) or "(none)"

    def _prune(self) -> None:
        closed = [p for p in self._plugins if p.closed]
        if closed:
            self._plugins = [p for p in self._plugins if not p.closed]
            log.info("NRI plugins gone: %s; call order: %s", ", ".join(p.full_name for p in closed), self._order())

    # -- the socket -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on ``socket_path`` (replacing a stale socket file) for plugins to connect."""
        path = self.options.socket_path
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._server = await asyncio.start_unix_server(self._accepted, path=path)
        os.chmod(path, 0o600)
        log.info("NRI: listening for plugins on %s", path)
        if self.options.plugin_path:
            await self._launch_all(self.options.plugin_path)

    async def _launch_all(self, directory: str) -> None:
        for path, index, name in await asyncio.to_thread(find_plugins, directory):
            await self._launch(path, index, name)

    async def _launch(self, path: str, index: str, name: str) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {"NRI_PLUGIN_NAME": name, "NRI_PLUGIN_IDX": index, "NRI_PLUGIN_SOCKET": str(theirs.fileno())}
            process = await asyncio.create_subprocess_exec(
                path, env=env, pass_fds=(theirs.fileno(),), stdin=asyncio.subprocess.DEVNULL, cwd="/"
            )
        except OSError as exc:
            log.error("NRI: cannot launch plugin %s: %s", path, exc)
            ours.close()
            return
        finally:
            theirs.close()
        self._launched.append(process)
        log.info("NRI: launched plugin %s (pid %d)", path, process.pid)
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        task = asyncio.get_running_loop().create_task(self._connect_launched(process, path, reader, writer))
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    async def _connect_launched(
        self, process: asyncio.subprocess.Process, path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if await self.add_connection(reader, writer) is None:
            log.error("NRI: launched plugin %s did not join; killing it", path)
            await self._kill(process)

    async def _kill(self, process: asyncio.subprocess.Process) -> None:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        await process.wait()
        if process in self._launched:
            self._launched.remove(process)

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connecting.add(task)
        try:
            await self.add_connection(reader, writer)
        finally:
            self._connecting.discard(task)

    async def stop(self) -> None:
        """Stop listening, remove the socket, and disconnect every plugin."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.options.socket_path)
            self._server = None
        for task in list(self._connecting):
            task.cancel()
        async with self._lock:
            for plugin in self._plugins:
                plugin.close()
            self._plugins = []
        for process in list(self._launched):
            await self._kill(process)

    # -- hooks ----------------------------------------------------------------------------------

    async def _relay(self, event: int, request: Message, response_type: type[M]) -> None:
        async with self._lock:
            self._prune()
            for plugin in list(self._plugins):
                await plugin.call(event, request, response_type)
            self._prune()

    async def run_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._relay(nri.RUN_POD_SANDBOX, nri.RunPodSandboxRequest(pod=pod), nri.RunPodSandboxResponse)

    async def update_pod_sandbox(
        self, pod: nri.PodSandbox, overhead: nri.LinuxResources | None = None, resources: nri.LinuxResources | None = None
    ) -> None:
        request = nri.UpdatePodSandboxRequest(pod=pod, overhead_linux_resources=overhead, linux_resources=resources)
        await self._relay(nri.UPDATE_POD_SANDBOX, request, nri.UpdatePodSandboxResponse)

    async def post_update_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._relay(nri.POST_UPDATE_POD_SANDBOX, nri.PostUpdatePodSandboxRequest(pod=pod), nri.PostUpdatePodSandboxResponse)

    async def stop_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._relay(nri.STOP_POD_SANDBOX, nri.StopPodSandboxRequest(pod=pod), nri.StopPodSandboxResponse)

    async def remove_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        await self._relay(nri.REMOVE_POD_SANDBOX, nri.RemovePodSandboxRequest(pod=pod), nri.RemovePodSandboxResponse)

    async def create_container(self, pod: nri.PodSandbox, container: nri.Container) -> nri.CreateContainerResponse:
        """Every subscribed plugin's adjustment of the new container and updates of others, merged.

        Each plugin sees the container as adjusted by the plugins before it. Raises
        :class:`NRIError` when a plugin fails, two plugins set the same thing, or a validator
        plugin rejects the result.
        """
        request = nri.CreateContainerRequest(pod=pod, container=container)
        result = Result(create=request)
        async with self._lock:
            self._prune()
            validators = [p for p in self._plugins if p.subscribed(nri.VALIDATE_CONTAINER_ADJUSTMENT)]
            validation = nri.ValidateContainerAdjustmentRequest(pod=pod, container=container) if validators else None
            for plugin in list(self._plugins):
                if validation is not None:
                    validation.plugins.add(name=plugin.name, index=plugin.index)
                reply = await plugin.call(nri.CREATE_CONTAINER, request, nri.CreateContainerResponse)
                if reply is not None:
                    try:
                        result.apply_create(reply, plugin.full_name)
                    except ConflictError as exc:
                        raise NRIError(str(exc)) from None
            response = result.create_response()
            if validation is not None:
                validation.adjust.CopyFrom(response.adjust)
                validation.update.extend(response.update)
                validation.owners.CopyFrom(result.owners.to_proto())
                outcomes = await asyncio.gather(*(v.validate(validation) for v in validators), return_exceptions=True)
                self._prune()
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
            self._prune()
        return response

    async def post_create_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        request = nri.PostCreateContainerRequest(pod=pod, container=container)
        await self._relay(nri.POST_CREATE_CONTAINER, request, nri.PostCreateContainerResponse)

    async def start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        await self._relay(
            nri.START_CONTAINER, nri.StartContainerRequest(pod=pod, container=container), nri.StartContainerResponse
        )

    async def post_start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        request = nri.PostStartContainerRequest(pod=pod, container=container)
        await self._relay(nri.POST_START_CONTAINER, request, nri.PostStartContainerResponse)

    async def update_container(
        self, pod: nri.PodSandbox, container: nri.Container, resources: nri.LinuxResources
    ) -> list[nri.ContainerUpdate]:
        """Plugins' changes to an update of ``container``'s resources, and their updates of others.

        The list holds the updates of other containers first, then, if a plugin changed it, the
        update of ``container`` itself with the full resulting resources.
        """
        request = nri.UpdateContainerRequest(pod=pod, container=container, linux_resources=resources)
        result = Result(update=request)
        await self._collect_updates(nri.UPDATE_CONTAINER, request, nri.UpdateContainerResponse, result)
        return result.update_response()

    async def post_update_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        request = nri.PostUpdateContainerRequest(pod=pod, container=container)
        await self._relay(nri.POST_UPDATE_CONTAINER, request, nri.PostUpdateContainerResponse)

    async def stop_container(self, pod: nri.PodSandbox, container: nri.Container) -> list[nri.ContainerUpdate]:
        """Tell plugins ``container`` is stopping; the updates of other containers they ask for, merged."""
        request = nri.StopContainerRequest(pod=pod, container=container)
        result = Result()
        await self._collect_updates(nri.STOP_CONTAINER, request, nri.StopContainerResponse, result)
        return result.stop_response()

    async def _collect_updates(
        self,
        event: int,
        request: Message,
        response_type: type[nri.UpdateContainerResponse] | type[nri.StopContainerResponse],
        result: Result,
    ) -> None:
        async with self._lock:
            self._prune()
            for plugin in list(self._plugins):
                reply = await plugin.call(event, request, response_type)
                if reply is not None:
                    try:
                        result.apply_updates(reply.update, plugin.full_name)
                    except ConflictError as exc:
                        raise NRIError(str(exc)) from None
            self._prune()

    async def remove_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        request = nri.RemoveContainerRequest(pod=pod, container=container)
        await self._relay(nri.REMOVE_CONTAINER, request, nri.RemoveContainerResponse)
