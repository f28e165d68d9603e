"""Asyncio CRI client: one typed coroutine per RPC of runtime.v1.

    async with AsyncClient("/run/pycri/pycri.sock") as client:
        version = await client.version()

Every method takes the request message (default: an empty one) and a
per-call ``timeout`` in seconds (default: the client's). Failures raise a
:class:`pycri.client.errors.ClientError` subclass chosen by gRPC status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TypeVar

import grpc
from google.protobuf.message import Message

from pycri.api import api_pb2 as api
from pycri.api import api_pb2_grpc
from pycri.client.common import CHANNEL_OPTIONS, DEFAULT_TIMEOUT, target
from pycri.client.errors import from_rpc_error

Req = TypeVar("Req", bound=Message)
Resp = TypeVar("Resp", bound=Message)


class AsyncClient:
    def __init__(
        self, socket: str = "/run/pycri/pycri.sock", *, timeout: float = DEFAULT_TIMEOUT, image_socket: str | None = None
    ) -> None:
        self.timeout = timeout
        self._channel = grpc.aio.insecure_channel(target(socket), options=CHANNEL_OPTIONS)
        self._image_channel = (
            grpc.aio.insecure_channel(target(image_socket), options=CHANNEL_OPTIONS) if image_socket else self._channel
        )
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._image = api_pb2_grpc.ImageServiceStub(self._image_channel)

    async def close(self) -> None:
        await self._channel.close(None)
        if self._image_channel is not self._channel:
            await self._image_channel.close(None)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _unary(
        self, call: grpc.aio.UnaryUnaryMultiCallable[Req, Resp], name: str, request: Req, timeout: float | None
    ) -> Resp:
        try:
            return await call(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(name, exc) from None

    async def _stream(
        self, call: grpc.aio.UnaryStreamMultiCallable[Req, Resp], name: str, request: Req, timeout: float | None
    ) -> AsyncIterator[Resp]:
        try:
            async for response in call(request, timeout=timeout if timeout is not None else self.timeout):
                yield response
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(name, exc) from None

    # RuntimeService

    async def version(self, request: api.VersionRequest | None = None, *, timeout: float | None = None) -> api.VersionResponse:
        return await self._unary(self._runtime.Version, "Version", request or api.VersionRequest(), timeout)

    async def run_pod_sandbox(
        self, request: api.RunPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.RunPodSandboxResponse:
        return await self._unary(self._runtime.RunPodSandbox, "RunPodSandbox", request or api.RunPodSandboxRequest(), timeout)

    async def stop_pod_sandbox(
        self, request: api.StopPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.StopPodSandboxResponse:
        return await self._unary(self._runtime.StopPodSandbox, "StopPodSandbox", request or api.StopPodSandboxRequest(), timeout)

    async def remove_pod_sandbox(
        self, request: api.RemovePodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.RemovePodSandboxResponse:
        return await self._unary(
            self._runtime.RemovePodSandbox, "RemovePodSandbox", request or api.RemovePodSandboxRequest(), timeout
        )

    async def pod_sandbox_status(
        self, request: api.PodSandboxStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.PodSandboxStatusResponse:
        return await self._unary(
            self._runtime.PodSandboxStatus, "PodSandboxStatus", request or api.PodSandboxStatusRequest(), timeout
        )

    async def list_pod_sandbox(
        self, request: api.ListPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxResponse:
        return await self._unary(self._runtime.ListPodSandbox, "ListPodSandbox", request or api.ListPodSandboxRequest(), timeout)

    def stream_pod_sandboxes(
        self, request: api.StreamPodSandboxesRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamPodSandboxesResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxes, "StreamPodSandboxes", request or api.StreamPodSandboxesRequest(), timeout
        )

    async def create_container(
        self, request: api.CreateContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.CreateContainerResponse:
        return await self._unary(
            self._runtime.CreateContainer, "CreateContainer", request or api.CreateContainerRequest(), timeout
        )

    async def start_container(
        self, request: api.StartContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.StartContainerResponse:
        return await self._unary(self._runtime.StartContainer, "StartContainer", request or api.StartContainerRequest(), timeout)

    async def stop_container(
        self, request: api.StopContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.StopContainerResponse:
        return await self._unary(self._runtime.StopContainer, "StopContainer", request or api.StopContainerRequest(), timeout)

    async def remove_container(
        self, request: api.RemoveContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.RemoveContainerResponse:
        return await self._unary(
            self._runtime.RemoveContainer, "RemoveContainer", request or api.RemoveContainerRequest(), timeout
        )

    async def list_containers(
        self, request: api.ListContainersRequest | None = None, *, timeout: float | None = None
    ) -> api.ListContainersResponse:
        return await self._unary(self._runtime.ListContainers, "ListContainers", request or api.ListContainersRequest(), timeout)

    def stream_containers(
        self, request: api.StreamContainersRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamContainersResponse]:
        return self._stream(self._runtime.StreamContainers, "StreamContainers", request or api.StreamContainersRequest(), timeout)

    async def container_status(
        self, request: api.ContainerStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.ContainerStatusResponse:
        return await self._unary(
            self._runtime.ContainerStatus, "ContainerStatus", request or api.ContainerStatusRequest(), timeout
        )

    async def update_container_resources(
        self, request: api.UpdateContainerResourcesRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdateContainerResourcesResponse:
        return await self._unary(
            self._runtime.UpdateContainerResources,
            "UpdateContainerResources",
            request or api.UpdateContainerResourcesRequest(),
            timeout,
        )

    async def reopen_container_log(
        self, request: api.ReopenContainerLogRequest | None = None, *, timeout: float | None = None
    ) -> api.ReopenContainerLogResponse:
        return await self._unary(
            self._runtime.ReopenContainerLog, "ReopenContainerLog", request or api.ReopenContainerLogRequest(), timeout
        )

    async def exec_sync(
        self, request: api.ExecSyncRequest | None = None, *, timeout: float | None = None
    ) -> api.ExecSyncResponse:
        return await self._unary(self._runtime.ExecSync, "ExecSync", request or api.ExecSyncRequest(), timeout)

    async def exec(self, request: api.ExecRequest | None = None, *, timeout: float | None = None) -> api.ExecResponse:
        return await self._unary(self._runtime.Exec, "Exec", request or api.ExecRequest(), timeout)

    async def attach(self, request: api.AttachRequest | None = None, *, timeout: float | None = None) -> api.AttachResponse:
        return await self._unary(self._runtime.Attach, "Attach", request or api.AttachRequest(), timeout)

    async def port_forward(
        self, request: api.PortForwardRequest | None = None, *, timeout: float | None = None
    ) -> api.PortForwardResponse:
        return await self._unary(self._runtime.PortForward, "PortForward", request or api.PortForwardRequest(), timeout)

    async def container_stats(
        self, request: api.ContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ContainerStatsResponse:
        return await self._unary(self._runtime.ContainerStats, "ContainerStats", request or api.ContainerStatsRequest(), timeout)

    async def list_container_stats(
        self, request: api.ListContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListContainerStatsResponse:
        return await self._unary(
            self._runtime.ListContainerStats, "ListContainerStats", request or api.ListContainerStatsRequest(), timeout
        )

    def stream_container_stats(
        self, request: api.StreamContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamContainerStatsResponse]:
        return self._stream(
            self._runtime.StreamContainerStats, "StreamContainerStats", request or api.StreamContainerStatsRequest(), timeout
        )

    async def pod_sandbox_stats(
        self, request: api.PodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.PodSandboxStatsResponse:
        return await self._unary(
            self._runtime.PodSandboxStats, "PodSandboxStats", request or api.PodSandboxStatsRequest(), timeout
        )

    async def list_pod_sandbox_stats(
        self, request: api.ListPodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxStatsResponse:
        return await self._unary(
            self._runtime.ListPodSandboxStats, "ListPodSandboxStats", request or api.ListPodSandboxStatsRequest(), timeout
        )

    def stream_pod_sandbox_stats(
        self, request: api.StreamPodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamPodSandboxStatsResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxStats, "StreamPodSandboxStats", request or api.StreamPodSandboxStatsRequest(), timeout
        )

    async def update_runtime_config(
        self, request: api.UpdateRuntimeConfigRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdateRuntimeConfigResponse:
        return await self._unary(
            self._runtime.UpdateRuntimeConfig, "UpdateRuntimeConfig", request or api.UpdateRuntimeConfigRequest(), timeout
        )

    async def status(self, request: api.StatusRequest | None = None, *, timeout: float | None = None) -> api.StatusResponse:
        return await self._unary(self._runtime.Status, "Status", request or api.StatusRequest(), timeout)

    async def checkpoint_container(
        self, request: api.CheckpointContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.CheckpointContainerResponse:
        return await self._unary(
            self._runtime.CheckpointContainer, "CheckpointContainer", request or api.CheckpointContainerRequest(), timeout
        )

    async def checkpoint_pod(
        self, request: api.CheckpointPodRequest | None = None, *, timeout: float | None = None
    ) -> api.CheckpointPodResponse:
        return await self._unary(self._runtime.CheckpointPod, "CheckpointPod", request or api.CheckpointPodRequest(), timeout)

    async def restore_pod(
        self, request: api.RestorePodRequest | None = None, *, timeout: float | None = None
    ) -> api.RestorePodResponse:
        return await self._unary(self._runtime.RestorePod, "RestorePod", request or api.RestorePodRequest(), timeout)

    def get_container_events(
        self, request: api.GetEventsRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.ContainerEventResponse]:
        return self._stream(self._runtime.GetContainerEvents, "GetContainerEvents", request or api.GetEventsRequest(), timeout)

    async def list_metric_descriptors(
        self, request: api.ListMetricDescriptorsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListMetricDescriptorsResponse:
        return await self._unary(
            self._runtime.ListMetricDescriptors, "ListMetricDescriptors", request or api.ListMetricDescriptorsRequest(), timeout
        )

    async def list_pod_sandbox_metrics(
        self, request: api.ListPodSandboxMetricsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxMetricsResponse:
        return await self._unary(
            self._runtime.ListPodSandboxMetrics, "ListPodSandboxMetrics", request or api.ListPodSandboxMetricsRequest(), timeout
        )

    def stream_pod_sandbox_metrics(
        self, request: api.StreamPodSandboxMetricsRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamPodSandboxMetricsResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxMetrics,
            "StreamPodSandboxMetrics",
            request or api.StreamPodSandboxMetricsRequest(),
            timeout,
        )

    async def runtime_config(
        self, request: api.RuntimeConfigRequest | None = None, *, timeout: float | None = None
    ) -> api.RuntimeConfigResponse:
        return await self._unary(self._runtime.RuntimeConfig, "RuntimeConfig", request or api.RuntimeConfigRequest(), timeout)

    async def update_pod_sandbox_resources(
        self, request: api.UpdatePodSandboxResourcesRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdatePodSandboxResourcesResponse:
        return await self._unary(
            self._runtime.UpdatePodSandboxResources,
            "UpdatePodSandboxResources",
            request or api.UpdatePodSandboxResourcesRequest(),
            timeout,
        )

    # ImageService

    async def list_images(
        self, request: api.ListImagesRequest | None = None, *, timeout: float | None = None
    ) -> api.ListImagesResponse:
        return await self._unary(self._image.ListImages, "ListImages", request or api.ListImagesRequest(), timeout)

    def stream_images(
        self, request: api.StreamImagesRequest | None = None, *, timeout: float | None = None
    ) -> AsyncIterator[api.StreamImagesResponse]:
        return self._stream(self._image.StreamImages, "StreamImages", request or api.StreamImagesRequest(), timeout)

    async def image_status(
        self, request: api.ImageStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.ImageStatusResponse:
        return await self._unary(self._image.ImageStatus, "ImageStatus", request or api.ImageStatusRequest(), timeout)

    async def pull_image(
        self, request: api.PullImageRequest | None = None, *, timeout: float | None = None
    ) -> api.PullImageResponse:
        return await self._unary(self._image.PullImage, "PullImage", request or api.PullImageRequest(), timeout)

    async def remove_image(
        self, request: api.RemoveImageRequest | None = None, *, timeout: float | None = None
    ) -> api.RemoveImageResponse:
        return await self._unary(self._image.RemoveImage, "RemoveImage", request or api.RemoveImageRequest(), timeout)

    async def image_fs_info(
        self, request: api.ImageFsInfoRequest | None = None, *, timeout: float | None = None
    ) -> api.ImageFsInfoResponse:
        return await self._unary(self._image.ImageFsInfo, "ImageFsInfo", request or api.ImageFsInfoRequest(), timeout)
