"""The runtime's handle on one connected NRI plugin (containerd/nri ``pkg/adaptation/plugin.go``).

A :class:`Plugin` owns the plugin's socket through a :class:`~pycri.nri.channel.Channel`: it
serves the ``Runtime`` service to the plugin (``RegisterPlugin``, ``UpdateContainers``) and
calls the plugin's ``Plugin`` service. :meth:`Plugin.start` waits for the registration (at
most the registration timeout) and configures the plugin; :meth:`Plugin.synchronize` sends
the runtime's pods and containers; :meth:`Plugin.call` relays one lifecycle event the plugin
subscribed to.

Failures, as upstream: a plugin that does not answer within the request timeout, closes its
connection or breaks the protocol is disconnected and skipped (the event goes on without it:
``call`` returns None). A plugin that answers an error fails the operation
(:class:`NRIError`). A plugin that does not implement a dedicated event method (older
plugins) gets the event through ``StateChange`` instead, where upstream does that.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from google.protobuf.message import Message

from pycri import errors
from pycri.nri import api_pb2 as nri
from pycri.nri import events, ttrpc
from pycri.nri.channel import Channel, Method
from pycri.nri.mux import PLUGIN_SERVICE_CONN, RUNTIME_SERVICE_CONN

log = logging.getLogger("pycri.nri")

M = TypeVar("M", bound=Message)

UpdateFn = Callable[[list[nri.ContainerUpdate]], Awaitable[list[nri.ContainerUpdate]]]
EvictFn = Callable[[list[nri.ContainerEviction]], Awaitable[None]]

# The Plugin service's method for each event.
EVENT_METHODS: dict[int, str] = {
    nri.RUN_POD_SANDBOX: "RunPodSandbox",
    nri.UPDATE_POD_SANDBOX: "UpdatePodSandbox",
    nri.POST_UPDATE_POD_SANDBOX: "PostUpdatePodSandbox",
    nri.STOP_POD_SANDBOX: "StopPodSandbox",
    nri.REMOVE_POD_SANDBOX: "RemovePodSandbox",
    nri.CREATE_CONTAINER: "CreateContainer",
    nri.POST_CREATE_CONTAINER: "PostCreateContainer",
    nri.START_CONTAINER: "StartContainer",
    nri.POST_START_CONTAINER: "PostStartContainer",
    nri.UPDATE_CONTAINER: "UpdateContainer",
    nri.POST_UPDATE_CONTAINER: "PostUpdateContainer",
    nri.STOP_CONTAINER: "StopContainer",
    nri.REMOVE_CONTAINER: "RemoveContainer",
}
# Events an older plugin may only know as StateChange (upstream's plugin_type.go).
STATE_CHANGE_FALLBACK = frozenset(
    {
        nri.RUN_POD_SANDBOX,
        nri.POST_UPDATE_POD_SANDBOX,
        nri.STOP_POD_SANDBOX,
        nri.REMOVE_POD_SANDBOX,
        nri.POST_CREATE_CONTAINER,
        nri.START_CONTAINER,
        nri.POST_START_CONTAINER,
        nri.POST_UPDATE_CONTAINER,
        nri.REMOVE_CONTAINER,
    }
)
MIN_OBJECTS_PER_SYNC = 8


class NRIError(errors.FailedPrecondition):
    """A plugin refused or failed an operation, or plugins' adjustments conflict."""


def is_fatal(error: ttrpc.RpcError) -> bool:
    """Errors after which a plugin is disconnected rather than believed (upstream's ``isFatalError``)."""
    return isinstance(error, ttrpc.ConnectionClosed | ttrpc.DeadlineExceeded | ttrpc.ProtocolViolation)


class Plugin:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        update_fn: UpdateFn,
        evict_fn: EvictFn | None = None,
        request_timeout: float,
    ) -> None:
        self.name = ""
        self.index = ""
        self.events = 0
        self.request_timeout = request_timeout
        self.update_fn = update_fn
        self.evict_fn = evict_fn
        self._registered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._warned: set[int] = set()
        self.channel = Channel(
            reader,
            writer,
            client_conn=PLUGIN_SERVICE_CONN,
            server_conn=RUNTIME_SERVICE_CONN,
            services={
                events.RUNTIME_SERVICE: {
                    "RegisterPlugin": Method(nri.RegisterPluginRequest, self._register_plugin),
                    "UpdateContainers": Method(nri.UpdateContainersRequest, self._update_containers),
                }
            },
            name="nri plugin (registering)",
        )

    @property
    def full_name(self) -> str:
        """``INDEX-NAME``, as plugins are named in logs, errors and ownership records."""
        return f"{self.index}-{self.name}"

    @property
    def closed(self) -> bool:
        return self.channel.closed

    def close(self) -> None:
        self.channel.close()

    def subscribed(self, event: int) -> bool:
        return events.is_set(self.events, event)

    # -- the Runtime service, served to the plugin ----------------------------------------------

    async def _register_plugin(self, request: nri.RegisterPluginRequest) -> nri.Empty:
        try:
            events.check_plugin_name(request.plugin_name)
            events.check_plugin_index(request.plugin_idx)
        except ValueError as exc:
            if not self._registered.done():
                self._registered.set_exception(NRIError(f"plugin registered with {exc}"))
            raise ttrpc.RpcError(ttrpc.Code.UNKNOWN, str(exc)) from None
        if self._registered.done():
            raise ttrpc.RpcError(ttrpc.Code.FAILED_PRECONDITION, "plugin already registered")
        self.name, self.index = request.plugin_name, request.plugin_idx
        self.channel.name = f"nri plugin {self.full_name}"
        log.info("NRI plugin %s registered (NRI version %s)", self.full_name, request.NRI_version or "unknown")
        self._registered.set_result(None)
        return nri.Empty()

    async def _update_containers(self, request: nri.UpdateContainersRequest) -> nri.UpdateContainersResponse:
        log.info("NRI plugin %s requested container updates", self.full_name)
        failed = await self.update_fn(list(request.update)) if request.update else []
        if request.evict:
            if self.evict_fn is None:
                log.warning("NRI plugin %s asked for evictions, which this runtime does not carry out", self.full_name)
            else:
                await self.evict_fn(list(request.evict))
        return nri.UpdateContainersResponse(failed=failed)

    # -- registration and configuration ---------------------------------------------------------

    async def start(
        self,
        *,
        runtime_name: str,
        runtime_version: str,
        registration_timeout: float,
        config_for: Callable[[str, str], str],
        nri_version: str = "",
    ) -> None:
        """Wait for the plugin to register, then configure it; :class:`NRIError` (and closed) on failure."""
        self.channel.start()
        closed = asyncio.ensure_future(self.channel.wait_closed())
        try:
            done, _ = await asyncio.wait({self._registered, closed}, timeout=registration_timeout, return_when="FIRST_COMPLETED")
        finally:
            closed.cancel()
        if self._registered not in done:
            self.close()
            if not done:
                raise NRIError("plugin registration timed out")
            raise NRIError("failed to register plugin, connection closed")
        try:
            self._registered.result()
        except NRIError:
            self.close()
            raise
        request = nri.ConfigureRequest(
            config=config_for(self.index, self.name),
            runtime_name=runtime_name,
            runtime_version=runtime_version,
            registration_timeout=int(registration_timeout * 1000),
            request_timeout=int(self.request_timeout * 1000),
            NRI_version=nri_version,
        )
        try:
            reply = await self.channel.call(
                events.PLUGIN_SERVICE, "Configure", request, nri.ConfigureResponse, timeout=self.request_timeout
            )
        except ttrpc.RpcError as exc:
            self.close()
            raise NRIError(f"failed to configure plugin {self.full_name}: {exc}") from exc
        mask = reply.events or events.VALID_EVENTS
        if extra := mask & ~events.VALID_EVENTS:
            self.close()
            raise NRIError(f"invalid plugin events: 0x{extra:x}")
        self.events = mask
        log.info("NRI plugin %s subscribed to %s", self.full_name, events.pretty_mask(mask))

    # -- synchronization ------------------------------------------------------------------------

    async def synchronize(self, pods: Sequence[nri.PodSandbox], containers: Sequence[nri.Container]) -> list[nri.ContainerUpdate]:
        """Send the runtime's state, in chunks when it is too large for one message; the plugin's updates.

        The plugin is closed on any failure, and the error raised.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        pods_per, ctrs_per = len(pods), len(containers)
        while True:
            request = nri.SynchronizeRequest(
                pods=pods[:pods_per], containers=containers[:ctrs_per], more=len(pods) > pods_per or len(containers) > ctrs_per
            )
            try:
                reply = await self.channel.call(
                    events.PLUGIN_SERVICE,
                    "Synchronize",
                    request,
                    nri.SynchronizeResponse,
                    timeout=max(deadline - loop.time(), 0.0),
                )
            except ttrpc.OversizedMessage as exc:
                try:
                    pods_per, ctrs_per = smaller_sync_chunks(pods_per, ctrs_per, exc)
                except NRIError:
                    self.close()
                    raise
                log.debug("NRI plugin %s: synchronization too large, retrying in smaller chunks", self.full_name)
                continue
            except ttrpc.RpcError as exc:
                self.close()
                raise NRIError(f"failed to synchronize plugin {self.full_name}: {exc}") from exc
            if not request.more:
                return list(reply.update)
            if reply.update or reply.more != request.more:
                self.close()
                raise NRIError("plugin does not handle split sync requests")
            pods, containers = pods[pods_per:], containers[ctrs_per:]
            pods_per, ctrs_per = min(pods_per, len(pods)), min(ctrs_per, len(containers))

    # -- events ---------------------------------------------------------------------------------

    async def call(self, event: int, request: Message, response_type: type[M]) -> M | None:
        """Relay ``event`` if the plugin subscribed to it. None when it did not, or was disconnected."""
        if self.closed or not self.subscribed(event):
            return None
        method = EVENT_METHODS[event]
        try:
            try:
                return await self.channel.call(
                    events.PLUGIN_SERVICE, method, request, response_type, timeout=self.request_timeout
                )
            except ttrpc.RpcError as exc:
                if exc.code != ttrpc.Code.UNIMPLEMENTED or event not in STATE_CHANGE_FALLBACK:
                    raise
            await self._state_change(event, request)
            return response_type()
        except ttrpc.RpcError as exc:
            if is_fatal(exc):
                log.error("closing NRI plugin %s, failed to handle %s request: %s", self.full_name, method, exc)
                self.close()
                return None
            raise NRIError(f"NRI plugin {self.full_name} failed to handle {method}: {exc.message}") from exc

    async def _state_change(self, event: int, request: Message) -> None:
        if event not in self._warned:
            self._warned.add(event)
            log.warning("NRI plugin %s uses the deprecated StateChange instead of %s", self.full_name, EVENT_METHODS[event])
        change = nri.StateChangeEvent(event=event)  # type: ignore[arg-type]
        change.pod.CopyFrom(getattr(request, "pod"))  # noqa: B009 - every relayed request has a pod
        if request.DESCRIPTOR.fields_by_name.get("container") is not None:
            change.container.CopyFrom(getattr(request, "container"))  # noqa: B009
        await self.channel.call(events.PLUGIN_SERVICE, "StateChange", change, nri.Empty, timeout=self.request_timeout)

    async def validate(self, request: nri.ValidateContainerAdjustmentRequest) -> None:
        """Ask a validator plugin; :class:`NRIError` if it rejects the adjustment or fails."""
        if self.closed or not self.subscribed(nri.VALIDATE_CONTAINER_ADJUSTMENT):
            return
        try:
            reply = await self.channel.call(
                events.PLUGIN_SERVICE,
                "ValidateContainerAdjustment",
                request,
                nri.ValidateContainerAdjustmentResponse,
                timeout=self.request_timeout,
            )
        except ttrpc.RpcError as exc:
            if is_fatal(exc):
                log.error("closing NRI plugin %s, failed to validate: %s", self.full_name, exc)
                self.close()
            raise NRIError(f"validator plugin {self.full_name} failed: {exc}") from exc
        if reply.reject:
            reason = reply.reason or "unknown rejection reason"
            raise NRIError(f'validator "{self.full_name}" rejected container adjustment, reason: {reason}')


def smaller_sync_chunks(pods: int, containers: int, error: ttrpc.OversizedMessage) -> tuple[int, int]:
    """How many pods and containers to send per message after ``error`` (upstream's ``recalcObjsPerSyncMsg``)."""
    if pods + containers <= MIN_OBJECTS_PER_SYNC or error.length <= error.maximum:
        raise NRIError("failed to synchronize plugin with split messages")
    factor = min(error.maximum / error.length, 0.9)
    pods, containers = int(pods * factor), int(containers * factor)
    if pods + containers < MIN_OBJECTS_PER_SYNC:
        pods = containers = MIN_OBJECTS_PER_SYNC // 2
    return pods, containers
