"""ContainerStatus, ListContainers and StreamContainers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from google.protobuf import json_format

from pycri.api import api_pb2 as api
from pycri.containers.model import CRI_STATES, Container, State
from pycri.containers.service import ContainerService
from pycri.server.rpc import Encoded, ListedCache, encoded, pages


def stop_signal_value(name: str) -> api.Signal.ValueType:
    """CRI's enum for a signal name: SIGTERM -> SIGNAL_SIGTERM."""
    try:
        return api.Signal.Value("SIGNAL_" + name)
    except ValueError:
        return api.Signal.Value("SIGNAL_RUNTIME_DEFAULT")


def to_status(container: Container, repo_tag: str = "") -> api.ContainerStatus:
    """The container's status; its ``image`` names ``repo_tag`` (the image's first tag) when there is one.

    As containerd's ``ContainerStatus``: kubelet sends the image ID in the config and shows the status's
    image as the container's image, so the status names the image by its tag while the image has one,
    and by what the config said otherwise. ``image_ref`` is the image's repo digest (its ID without
    one) and ``image_id`` its ID, as containerd has them.
    """
    config = container.config
    status = api.ContainerStatus(
        id=container.id,
        metadata=config.metadata,
        state=CRI_STATES[container.state],
        created_at=container.created_at,
        started_at=container.started_at,
        finished_at=container.finished_at,
        exit_code=container.exit_code,
        image=api.ImageSpec(
            image=repo_tag or config.image.image,
            annotations=config.image.annotations,
            user_specified_image=config.image.user_specified_image,
            runtime_handler=config.image.runtime_handler,
        ),
        image_ref=container.image_ref,
        reason=container.reason,
        message=container.message,
        labels=config.labels,
        annotations=config.annotations,
        mounts=_mounts(container),
        log_path=container.log_path,
        image_id=container.image_id,
        stop_signal=stop_signal_value(container.stop_signal),
    )
    status.resources.linux.CopyFrom(json_format.ParseDict(container.resources, api.LinuxContainerResources()))
    status.user.linux.uid = container.uid
    status.user.linux.gid = container.gid
    status.user.linux.supplemental_groups.extend(container.supplemental_groups)
    return status


def _mounts(container: Container) -> list[api.Mount]:
    """The requested mounts; an image volume's also names the image it mounted (``image.image_ref``)."""
    if not container.image_volumes:
        return list(container.config.mounts)
    mounts = []
    for i, mount in enumerate(container.config.mounts):
        volume = container.image_volumes.get(str(i))
        if volume is not None:
            copy = api.Mount()  # the stored config stays as kubelet sent it
            copy.CopyFrom(mount)
            copy.image.image_ref = volume["image_id"]
            mount = copy
        mounts.append(mount)
    return mounts


def to_listed(container: Container) -> api.Container:
    config = container.config
    return api.Container(
        id=container.id,
        pod_sandbox_id=container.sandbox_id,
        metadata=config.metadata,
        image=api.ImageSpec(image=config.image.image, annotations=config.image.annotations),
        image_ref=container.image_ref,
        state=CRI_STATES[container.state],
        created_at=container.created_at,
        labels=config.labels,
        annotations=config.annotations,
        image_id=container.image_id,
    )


def verbose_info(container: Container) -> str:
    try:
        spec = json.loads((container.bundle / "config.json").read_text())
    except (OSError, ValueError):
        spec = None
    return json.dumps(
        {
            "pid": container.pid,
            "sandboxID": container.sandbox_id,
            "runtimeHandler": container.runtime_handler,
            "rootfs": str(container.rootfs),
            "privileged": container.config.linux.security_context.privileged,
            "config": json_format.MessageToDict(container.config, preserving_proto_field_name=True),
            "runtimeSpec": spec,
        }
    )


class ContainerStatusService:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self._listed: ListedCache[State] = ListedCache(to_listed)

    def _list(self, filt: api.ContainerFilter | None) -> list[bytes]:
        out = [self._listed.get(c.id, c.state, c) for c in self.containers.query(filt)]
        everything = self.containers.containers
        self._listed.prune(len(everything), lambda: {(c.id, c.state) for c in everything.values()})
        return out

    async def ContainerStatus(self, request: api.ContainerStatusRequest) -> api.ContainerStatusResponse:
        container = self.containers.get(request.container_id)
        image = self.containers.images.find(container.image_id)
        repo_tag = image.repo_tags[0] if image is not None and image.repo_tags else ""
        response = api.ContainerStatusResponse(status=to_status(container, repo_tag))
        if request.verbose:
            response.info["info"] = verbose_info(container)
        return response

    async def ListContainers(self, request: api.ListContainersRequest) -> Encoded:
        """A ListContainersResponse, joined from the containers' cached encodings (field 1)."""
        filt = request.filter if request.HasField("filter") else None
        return encoded(self._list(filt))

    async def StreamContainers(self, request: api.StreamContainersRequest) -> AsyncIterator[Encoded]:
        """StreamContainersResponse pages (their containers are field 1 as well)."""
        filt = request.filter if request.HasField("filter") else None
        for page in pages(self._list(filt)):
            yield encoded(page)
