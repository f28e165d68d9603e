"""ImageStatus, ListImages and StreamImages: reading the image store."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pycri.api import api_pb2 as api
from pycri.images.records import ImageRecord
from pycri.images.service import ImageService
from pycri.server.rpc import pages


def to_cri_image(images: ImageService, record: ImageRecord) -> api.Image:
    uid, username = record.user
    image = api.Image(
        id=record.id,
        repo_tags=record.repo_tags,
        repo_digests=record.repo_digests,
        size=record.size,
        username=username,
        pinned=images.pinned(record),
        spec=api.ImageSpec(image=record.id, user_specified_image=record.user_specified, runtime_handler=record.runtime_handler),
    )
    if uid is not None:
        image.uid.value = uid
    return image


class ImageStatusService:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def ImageStatus(self, request: api.ImageStatusRequest) -> api.ImageStatusResponse:
        record = self.images.find(request.image.image)
        if record is None:
            return api.ImageStatusResponse()  # unknown image: empty answer, as kubelet expects
        response = api.ImageStatusResponse(image=to_cri_image(self.images, record))
        if request.verbose:
            response.info["info"] = record.verbose_info()
        return response

    async def ListImages(self, request: api.ListImagesRequest) -> api.ListImagesResponse:
        records = self.images.list(request.filter.image.image)
        return api.ListImagesResponse(images=[to_cri_image(self.images, r) for r in records])

    async def StreamImages(self, request: api.StreamImagesRequest) -> AsyncIterator[api.StreamImagesResponse]:
        for page in pages(self.images.list(request.filter.image.image)):
            yield api.StreamImagesResponse(images=[to_cri_image(self.images, r) for r in page])
