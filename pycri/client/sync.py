"""Blocking CRI client: one typed method per RPC of runtime.v1.

    with Client("/run/pycri/pycri.sock") as client:
        print(client.version().runtime_version)

Same methods and errors as :class:`pycri.client.aio.AsyncClient`, for scripts
and tools that do not run an event loop.
"""

from __future__ import annotations

from collections.abc import Iterator
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


class Client:
    def __init__(
        self, socket: str = "/run/pycri/pycri.sock", *, timeout: float = DEFAULT_TIMEOUT, image_socket: str | None = None
    ) -> None:
        self.timeout = timeout
        self._channel = grpc.insecure_channel(target(socket), options=CHANNEL_OPTIONS)
        self._image_channel = (
            grpc.insecure_channel(target(image_socket), options=CHANNEL_OPTIONS) if image_socket else self._channel
        )
        self._runtime = api_pb2_grpc.RuntimeServiceStub(self._channel)
        self._image = api_pb2_grpc.ImageServiceStub(self._image_channel)

    def close(self) -> None:
        self._channel.close()
        if self._image_channel is not self._channel:
            self._image_channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _unary(self, call: grpc.UnaryUnaryMultiCallable[Req, Resp], name: str, request: Req, timeout: float | None) -> Resp:
        try:
            return call(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(name, exc) from None

    def _stream(
        self, call: grpc.UnaryStreamMultiCallable[Req, Resp], name: str, request: Req, timeout: float | None
    ) -> Iterator[Resp]:
        try:
            yield from call(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(name, exc) from None

    # RuntimeService

    def version(self, request: api.VersionRequest | None = None, *, timeout: float | None = None) -> api.VersionResponse:
        return self._unary(self._runtime.Version, "Version", request or api.VersionRequest(), timeout)

    def run_pod_sandbox(
        self, request: api.RunPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.RunPodSandboxResponse:
        return self._unary(self._runtime.RunPodSandbox, "RunPodSandbox", request or api.RunPodSandboxRequest(), timeout)

    def stop_pod_sandbox(
        self, request: api.StopPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.StopPodSandboxResponse:
        return self._unary(self._runtime.StopPodSandbox, "StopPodSandbox", request or api.StopPodSandboxRequest(), timeout)

    def remove_pod_sandbox(
        self, request: api.RemovePodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.RemovePodSandboxResponse:
        return self._unary(self._runtime.RemovePodSandbox, "RemovePodSandbox", request or api.RemovePodSandboxRequest(), timeout)

    def pod_sandbox_status(
        self, request: api.PodSandboxStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.PodSandboxStatusResponse:
        return self._unary(self._runtime.PodSandboxStatus, "PodSandboxStatus", request or api.PodSandboxStatusRequest(), timeout)

    def list_pod_sandbox(
        self, request: api.ListPodSandboxRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxResponse:
        return self._unary(self._runtime.ListPodSandbox, "ListPodSandbox", request or api.ListPodSandboxRequest(), timeout)

    def stream_pod_sandboxes(
        self, request: api.StreamPodSandboxesRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamPodSandboxesResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxes, "StreamPodSandboxes", request or api.StreamPodSandboxesRequest(), timeout
        )

    def create_container(
        self, request: api.CreateContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.CreateContainerResponse:
        return self._unary(self._runtime.CreateContainer, "CreateContainer", request or api.CreateContainerRequest(), timeout)

    def start_container(
        self, request: api.StartContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.StartContainerResponse:
        return self._unary(self._runtime.StartContainer, "StartContainer", request or api.StartContainerRequest(), timeout)

    def stop_container(
        self, request: api.StopContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.StopContainerResponse:
        return self._unary(self._runtime.StopContainer, "StopContainer", request or api.StopContainerRequest(), timeout)

    def remove_container(
        self, request: api.RemoveContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.RemoveContainerResponse:
        return self._unary(self._runtime.RemoveContainer, "RemoveContainer", request or api.RemoveContainerRequest(), timeout)

    def list_containers(
        self, request: api.ListContainersRequest | None = None, *, timeout: float | None = None
    ) -> api.ListContainersResponse:
        return self._unary(self._runtime.ListContainers, "ListContainers", request or api.ListContainersRequest(), timeout)

    def stream_containers(
        self, request: api.StreamContainersRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamContainersResponse]:
        return self._stream(self._runtime.StreamContainers, "StreamContainers", request or api.StreamContainersRequest(), timeout)

    def container_status(
        self, request: api.ContainerStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.ContainerStatusResponse:
        return self._unary(self._runtime.ContainerStatus, "ContainerStatus", request or api.ContainerStatusRequest(), timeout)

    def update_container_resources(
        self, request: api.UpdateContainerResourcesRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdateContainerResourcesResponse:
        return self._unary(
            self._runtime.UpdateContainerResources,
            "UpdateContainerResources",
            request or api.UpdateContainerResourcesRequest(),
            timeout,
        )

    def reopen_container_log(
        self, request: api.ReopenContainerLogRequest | None = None, *, timeout: float | None = None
    ) -> api.ReopenContainerLogResponse:
        return self._unary(
            self._runtime.ReopenContainerLog, "ReopenContainerLog", request or api.ReopenContainerLogRequest(), timeout
        )

    def exec_sync(self, request: api.ExecSyncRequest | None = None, *, timeout: float | None = None) -> api.ExecSyncResponse:
        return self._unary(self._runtime.ExecSync, "ExecSync", request or api.ExecSyncRequest(), timeout)

    def exec(self, request: api.ExecRequest | None = None, *, timeout: float | None = None) -> api.ExecResponse:
        return self._unary(self._runtime.Exec, "Exec", request or api.ExecRequest(), timeout)

    def attach(self, request: api.AttachRequest | None = None, *, timeout: float | None = None) -> api.AttachResponse:
        return self._unary(self._runtime.Attach, "Attach", request or api.AttachRequest(), timeout)

    def port_forward(
        self, request: api.PortForwardRequest | None = None, *, timeout: float | None = None
    ) -> api.PortForwardResponse:
        return self._unary(self._runtime.PortForward, "PortForward", request or api.PortForwardRequest(), timeout)

    def container_stats(
        self, request: api.ContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ContainerStatsResponse:
        return self._unary(self._runtime.ContainerStats, "ContainerStats", request or api.ContainerStatsRequest(), timeout)

    def list_container_stats(
        self, request: api.ListContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListContainerStatsResponse:
        return self._unary(
            self._runtime.ListContainerStats, "ListContainerStats", request or api.ListContainerStatsRequest(), timeout
        )

    def stream_container_stats(
        self, request: api.StreamContainerStatsRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamContainerStatsResponse]:
        return self._stream(
            self._runtime.StreamContainerStats, "StreamContainerStats", request or api.StreamContainerStatsRequest(), timeout
        )

    def pod_sandbox_stats(
        self, request: api.PodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.PodSandboxStatsResponse:
        return self._unary(self._runtime.PodSandboxStats, "PodSandboxStats", request or api.PodSandboxStatsRequest(), timeout)

    def list_pod_sandbox_stats(
        self, request: api.ListPodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxStatsResponse:
        return self._unary(
            self._runtime.ListPodSandboxStats, "ListPodSandboxStats", request or api.ListPodSandboxStatsRequest(), timeout
        )

    def stream_pod_sandbox_stats(
        self, request: api.StreamPodSandboxStatsRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamPodSandboxStatsResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxStats, "StreamPodSandboxStats", request or api.StreamPodSandboxStatsRequest(), timeout
        )

    def update_runtime_config(
        self, request: api.UpdateRuntimeConfigRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdateRuntimeConfigResponse:
        return self._unary(
            self._runtime.UpdateRuntimeConfig, "UpdateRuntimeConfig", request or api.UpdateRuntimeConfigRequest(), timeout
        )

    def status(self, request: api.StatusRequest | None = None, *, timeout: float | None = None) -> api.StatusResponse:
        return self._unary(self._runtime.Status, "Status", request or api.StatusRequest(), timeout)

    def checkpoint_container(
        self, request: api.CheckpointContainerRequest | None = None, *, timeout: float | None = None
    ) -> api.CheckpointContainerResponse:
        return self._unary(
            self._runtime.CheckpointContainer, "CheckpointContainer", request or api.CheckpointContainerRequest(), timeout
        )

    def checkpoint_pod(
        self, request: api.CheckpointPodRequest | None = None, *, timeout: float | None = None
    ) -> api.CheckpointPodResponse:
        return self._unary(self._runtime.CheckpointPod, "CheckpointPod", request or api.CheckpointPodRequest(), timeout)

    def restore_pod(
        self, request: api.RestorePodRequest | None = None, *, timeout: float | None = None
    ) -> api.RestorePodResponse:
        return self._unary(self._runtime.RestorePod, "RestorePod", request or api.RestorePodRequest(), timeout)

    def get_container_events(
        self, request: api.GetEventsRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.ContainerEventResponse]:
        return self._stream(self._runtime.GetContainerEvents, "GetContainerEvents", request or api.GetEventsRequest(), timeout)

    def list_metric_descriptors(
        self, request: api.ListMetricDescriptorsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListMetricDescriptorsResponse:
        return self._unary(
            self._runtime.ListMetricDescriptors, "ListMetricDescriptors", request or api.ListMetricDescriptorsRequest(), timeout
        )

    def list_pod_sandbox_metrics(
        self, request: api.ListPodSandboxMetricsRequest | None = None, *, timeout: float | None = None
    ) -> api.ListPodSandboxMetricsResponse:
        return self._unary(
            self._runtime.ListPodSandboxMetrics, "ListPodSandboxMetrics", request or api.ListPodSandboxMetricsRequest(), timeout
        )

    def stream_pod_sandbox_metrics(
        self, request: api.StreamPodSandboxMetricsRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamPodSandboxMetricsResponse]:
        return self._stream(
            self._runtime.StreamPodSandboxMetrics,
            "StreamPodSandboxMetrics",
            request or api.StreamPodSandboxMetricsRequest(),
            timeout,
        )

    def runtime_config(
        self, request: api.RuntimeConfigRequest | None = None, *, timeout: float | None = None
    ) -> api.RuntimeConfigResponse:
        return self._unary(self._runtime.RuntimeConfig, "RuntimeConfig", request or api.RuntimeConfigRequest(), timeout)

    def update_pod_sandbox_resources(
        self, request: api.UpdatePodSandboxResourcesRequest | None = None, *, timeout: float | None = None
    ) -> api.UpdatePodSandboxResourcesResponse:
        return self._unary(
            self._runtime.UpdatePodSandboxResources,
            "UpdatePodSandboxResources",
            request or api.UpdatePodSandboxResourcesRequest(),
            timeout,
        )

    # ImageService

    def list_images(
        self, request: api.ListImagesRequest | None = None, *, timeout: float | None = None
    ) -> api.ListImagesResponse:
        return self._unary(self._image.ListImages, "ListImages", request or api.ListImagesRequest(), timeout)

    def stream_images(
        self, request: api.StreamImagesRequest | None = None, *, timeout: float | None = None
    ) -> Iterator[api.StreamImagesResponse]:
        return self._stream(self._image.StreamImages, "StreamImages", request or api.StreamImagesRequest(), timeout)

    def image_status(
        self, request: api.ImageStatusRequest | None = None, *, timeout: float | None = None
    ) -> api.ImageStatusResponse:
        return self._unary(self._image.ImageStatus, "ImageStatus", request or api.ImageStatusRequest(), timeout)

    def pull_image(self, request: api.PullImageRequest | None = None, *, timeout: float | None = None) -> api.PullImageResponse:
        return self._unary(self._image.PullImage, "PullImage", request or api.PullImageRequest(), timeout)

    def remove_image(
        self, request: api.RemoveImageRequest | None = None, *, timeout: float | None = None
    ) -> api.RemoveImageResponse:
        return self._unary(self._image.RemoveImage, "RemoveImage", request or api.RemoveImageRequest(), timeout)

    def image_fs_info(
        self, request: api.ImageFsInfoRequest | None = None, *, timeout: float | None = None
    ) -> api.ImageFsInfoResponse:
        return self._unary(self._image.ImageFsInfo, "ImageFsInfo", request or api.ImageFsInfoRequest(), timeout)
