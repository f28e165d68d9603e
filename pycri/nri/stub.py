"""The plugin side of NRI (containerd/nri ``pkg/stub``), on pycri's own transport.

Subclass :class:`PluginBase`, override the hooks the plugin handles, and run it with a
:class:`Stub`::

    class Tagger(PluginBase):
        async def create_container(self, pod, container):
            return nri.ContainerAdjustment(annotations={"tagged": "yes"}), []

    stub = Stub(Tagger(), name="tagger", index="10")
    await stub.connect("/var/run/nri/nri.sock")   # registers; returns once configured
    await stub.wait_closed()

As upstream's stub does, the plugin subscribes to the events whose hooks its class overrides
(``configure`` may narrow that, never widen it), answers the methods it does not handle with
empty results, collects a synchronization split over several messages before calling
``synchronize`` once, and turns an exception raised by ``validate_container_adjustment`` into
a rejection with the exception's text as the reason. Hooks may raise
:class:`~pycri.nri.ttrpc.RpcError` for a chosen status; any other exception answers ``UNKNOWN``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from pycri.nri import api_pb2 as nri
from pycri.nri import events, ttrpc
from pycri.nri.channel import Channel, Method
from pycri.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN
from pycri.nri.plugin import STATE_CHANGE_FALLBACK

log = logging.getLogger("pycri.nri.stub")

Updates = list[nri.ContainerUpdate]


class PluginBase:
    """Hooks of an NRI plugin; override those it handles."""

    async def configure(self, config: str, runtime_name: str, runtime_version: str) -> int:
        """The events to subscribe to (0: every event this class handles)."""
        return 0

    async def synchronize(self, pods: Sequence[nri.PodSandbox], containers: Sequence[nri.Container]) -> Updates:
        return []

    async def shutdown(self) -> None:
        return None

    async def run_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        return None

    async def update_pod_sandbox(self, pod: nri.PodSandbox, overhead: nri.LinuxResources, resources: nri.LinuxResources) -> None:
        return None

    async def post_update_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        return None

    async def stop_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        return None

    async def remove_pod_sandbox(self, pod: nri.PodSandbox) -> None:
        return None

    async def create_container(
        self, pod: nri.PodSandbox, container: nri.Container
    ) -> tuple[nri.ContainerAdjustment | None, Updates]:
        return None, []

    async def post_create_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        return None

    async def start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        return None

    async def post_start_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        return None

    async def update_container(self, pod: nri.PodSandbox, container: nri.Container, resources: nri.LinuxResources) -> Updates:
        return []

    async def post_update_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        return None

    async def stop_container(self, pod: nri.PodSandbox, container: nri.Container) -> Updates:
        return []

    async def remove_container(self, pod: nri.PodSandbox, container: nri.Container) -> None:
        return None

    async def validate_container_adjustment(self, request: nri.ValidateContainerAdjustmentRequest) -> None:
        """Raise to reject the adjustment (the exception's text is the reason)."""
        return None


HOOK_EVENTS: dict[str, int] = {
    "run_pod_sandbox": nri.RUN_POD_SANDBOX,
    "update_pod_sandbox": nri.UPDATE_POD_SANDBOX,
    "post_update_pod_sandbox": nri.POST_UPDATE_POD_SANDBOX,
    "stop_pod_sandbox": nri.STOP_POD_SANDBOX,
    "remove_pod_sandbox": nri.REMOVE_POD_SANDBOX,
    "create_container": nri.CREATE_CONTAINER,
    "post_create_container": nri.POST_CREATE_CONTAINER,
    "start_container": nri.START_CONTAINER,
    "post_start_container": nri.POST_START_CONTAINER,
    "update_container": nri.UPDATE_CONTAINER,
    "post_update_container": nri.POST_UPDATE_CONTAINER,
    "stop_container": nri.STOP_CONTAINER,
    "remove_container": nri.REMOVE_CONTAINER,
    "validate_container_adjustment": nri.VALIDATE_CONTAINER_ADJUSTMENT,
}


def handled_events(plugin: PluginBase) -> int:
    """The mask of events whose hooks ``plugin``'s class overrides."""
    return events.event_mask(
        event for hook, event in HOOK_EVENTS.items() if getattr(type(plugin), hook) is not getattr(PluginBase, hook)
    )


class Stub:
    """Connects a :class:`PluginBase` to a runtime: registration, then serving its hooks."""

    def __init__(
        self, plugin: PluginBase, *, name: str, index: str, registration_timeout: float = events.DEFAULT_REGISTRATION_TIMEOUT
    ) -> None:
        events.check_plugin_name(name)
        events.check_plugin_index(index)
        self.plugin = plugin
        self.name = name
        self.index = index
        self.events = handled_events(plugin)
        self.registration_timeout = registration_timeout
        self.request_timeout = events.DEFAULT_REQUEST_TIMEOUT  # as the runtime says in Configure
        self.runtime_name = ""
        self.runtime_version = ""
        self.channel: Channel | None = None
        self._configured: asyncio.Future[None] | None = None
        self._sync_pods: list[nri.PodSandbox] = []
        self._sync_containers: list[nri.Container] = []

    @property
    def full_name(self) -> str:
        return f"{self.index}-{self.name}"

    async def connect(self, path: str) -> None:
        """Connect to the runtime's NRI socket at ``path``, register, and wait to be configured."""
        reader, writer = await asyncio.open_unix_connection(path)
        await self.start(reader, writer)

    async def connect_inherited(self, fd: int) -> None:
        """Register over the socket a runtime handed this plugin when it launched it (``NRI_PLUGIN_SOCKET``)."""
        reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))
        await self.start(reader, writer)

    async def start(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Register over an already connected socket, and wait to be configured.

        Raises :class:`~pycri.nri.ttrpc.RpcError` when the runtime refuses the registration or
        configuration fails; the socket is then closed.
        """
        self._configured = asyncio.get_running_loop().create_future()
        plugin_methods: dict[str, Method] = {
            "Configure": Method(nri.ConfigureRequest, self._configure),
            "Synchronize": Method(nri.SynchronizeRequest, self._synchronize),
            "Shutdown": Method(nri.Empty, self._shutdown),
            "StateChange": Method(nri.StateChangeEvent, self._state_change),
            "ValidateContainerAdjustment": Method(nri.ValidateContainerAdjustmentRequest, self._validate),
        }
        for event, method in _EVENT_METHODS.items():
            plugin_methods[method] = Method(_REQUEST_TYPES[method], self._hook_handler(event))
        self.channel = Channel(
            reader,
            writer,
            client_conn=RUNTIME_SERVICE_CONN,
            server_conn=PLUGIN_SERVICE_CONN,
            services={events.PLUGIN_SERVICE: plugin_methods},
            name=f"nri stub {self.full_name}",
        )
        self.channel.start()
        try:
            request = nri.RegisterPluginRequest(plugin_name=self.name, plugin_idx=self.index)
            await self.channel.call(
                events.RUNTIME_SERVICE, "RegisterPlugin", request, nri.Empty, timeout=self.registration_timeout
            )
            closed = asyncio.ensure_future(self.channel.wait_closed())
            try:
                await asyncio.wait({self._configured, closed}, return_when="FIRST_COMPLETED")
            finally:
                closed.cancel()
            if not self._configured.done():
                raise ttrpc.ConnectionClosed()
            self._configured.result()
        except BaseException:
            self.channel.close()
            raise

    async def wait_closed(self) -> None:
        if self.channel is not None:
            await self.channel.wait_closed()

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()

    async def update_containers(
        self,
        updates: Sequence[nri.ContainerUpdate],
        *,
        evict: Sequence[nri.ContainerEviction] = (),
        timeout: float | None = None,
    ) -> Updates:
        """Ask the runtime to update (and evict) containers on the plugin's own initiative; the updates that failed."""
        if self.channel is None:
            raise ttrpc.ConnectionClosed("not connected")
        reply = await self.channel.call(
            events.RUNTIME_SERVICE,
            "UpdateContainers",
            nri.UpdateContainersRequest(update=updates, evict=evict),
            nri.UpdateContainersResponse,
            timeout=timeout if timeout is not None else self.request_timeout,
        )
        return list(reply.failed)

    # -- the Plugin service ---------------------------------------------------------------------

    async def _configure(self, request: nri.ConfigureRequest) -> nri.ConfigureResponse:
        self.runtime_name, self.runtime_version = request.runtime_name, request.runtime_version
        if request.request_timeout > 0:
            self.request_timeout = request.request_timeout / 1000
        try:
            mask = await self.plugin.configure(request.config, request.runtime_name, request.runtime_version) or self.events
            if extra := mask & ~self.events:
                raise ttrpc.RpcError(
                    ttrpc.Code.UNKNOWN, f"internal error: unhandled events {events.pretty_mask(extra)} (0x{extra:x})"
                )
        except BaseException as exc:
            if self._configured is not None and not self._configured.done():
                self._configured.set_exception(
                    exc if isinstance(exc, ttrpc.RpcError) else ttrpc.RpcError(ttrpc.Code.UNKNOWN, str(exc))
                )
            raise
        if self._configured is not None and not self._configured.done():
            self._configured.set_result(None)
        return nri.ConfigureResponse(events=mask)

    async def _synchronize(self, request: nri.SynchronizeRequest) -> nri.SynchronizeResponse:
        self._sync_pods += request.pods
        self._sync_containers += request.containers
        if request.more:
            return nri.SynchronizeResponse(more=True)
        pods, containers = self._sync_pods, self._sync_containers
        self._sync_pods, self._sync_containers = [], []
        return nri.SynchronizeResponse(update=await self.plugin.synchronize(pods, containers), more=False)

    async def _shutdown(self, request: nri.Empty) -> nri.Empty:
        await self.plugin.shutdown()
        return nri.Empty()

    async def _state_change(self, change: nri.StateChangeEvent) -> nri.Empty:
        hook = next((hook for hook, event in HOOK_EVENTS.items() if event == change.event), None)
        if hook is not None and change.event in STATE_CHANGE_FALLBACK:
            await _call_hook(self.plugin, hook, change)
        return nri.Empty()

    async def _validate(self, request: nri.ValidateContainerAdjustmentRequest) -> nri.ValidateContainerAdjustmentResponse:
        try:
            await self.plugin.validate_container_adjustment(request)
        except Exception as exc:
            return nri.ValidateContainerAdjustmentResponse(reject=True, reason=str(exc))
        return nri.ValidateContainerAdjustmentResponse()

    def _hook_handler(self, event: int) -> Any:
        hook = next(hook for hook, e in HOOK_EVENTS.items() if e == event)
        response_type = _RESPONSE_TYPES[_EVENT_METHODS[event]]

        async def handle(request: Message) -> Message:
            result = await _call_hook(self.plugin, hook, request)
            response = response_type()
            if event == nri.CREATE_CONTAINER:
                adjust, updates = result
                if adjust is not None:
                    response.adjust.CopyFrom(adjust)  # type: ignore[attr-defined]
                response.update.extend(updates)  # type: ignore[attr-defined]
            elif event in (nri.UPDATE_CONTAINER, nri.STOP_CONTAINER):
                response.update.extend(result)  # type: ignore[attr-defined]
            return response

        return handle


async def _call_hook(plugin: PluginBase, hook: str, request: Any) -> Any:
    if hook.endswith("pod_sandbox"):
        if hook == "update_pod_sandbox":
            return await plugin.update_pod_sandbox(request.pod, request.overhead_linux_resources, request.linux_resources)
        return await getattr(plugin, hook)(request.pod)
    if hook == "update_container":
        return await plugin.update_container(request.pod, request.container, request.linux_resources)
    return await getattr(plugin, hook)(request.pod, request.container)


_EVENT_METHODS: dict[int, str] = {event: "".join(part.title() for part in hook.split("_")) for hook, event in HOOK_EVENTS.items()}
del _EVENT_METHODS[nri.VALIDATE_CONTAINER_ADJUSTMENT]
_REQUEST_TYPES: dict[str, type[Message]] = {method: getattr(nri, f"{method}Request") for method in _EVENT_METHODS.values()}
_RESPONSE_TYPES: dict[str, type[Message]] = {method: getattr(nri, f"{method}Response") for method in _EVENT_METHODS.values()}
