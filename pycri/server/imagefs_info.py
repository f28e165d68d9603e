"""ImageFsInfo."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.images.service import ImageService, Usage


def _usage(usage: Usage) -> api.FilesystemUsage:
    return api.FilesystemUsage(
        timestamp=usage.timestamp_ns,
        fs_id=api.FilesystemIdentifier(mountpoint=usage.mountpoint),
        used_bytes=api.UInt64Value(value=usage.used_bytes),
        inodes_used=api.UInt64Value(value=usage.inodes_used),
    )


class ImageFsInfoService:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def ImageFsInfo(self, request: api.ImageFsInfoRequest) -> api.ImageFsInfoResponse:
        image_fs, container_fs = await self.images.fs_usage()
        return api.ImageFsInfoResponse(image_filesystems=[_usage(image_fs)], container_filesystems=[_usage(container_fs)])
