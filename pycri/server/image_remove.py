"""RemoveImage."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.images.service import ImageService


class ImageRemoveService:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def RemoveImage(self, request: api.RemoveImageRequest) -> api.RemoveImageResponse:
        if not request.image.image:
            raise InvalidArgument("image.image: an image reference or ID is required")
        await self.images.remove(request.image.image)  # an unknown image is already removed: success
        return api.RemoveImageResponse()
