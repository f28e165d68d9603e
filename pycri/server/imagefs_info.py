"""ImageFsInfo: the image store and the containers' writable layers, each with the mount it is on.

Answered from the stats service's accounting (no walk per call). When both live on one
file system both report the same mount point, so kubelet does not take the image
file system for a split one.
"""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.stats import cri
from pycri.stats.service import StatsService


class ImageFsInfoService:
    def __init__(self, stats: StatsService) -> None:
        self.stats = stats

    async def ImageFsInfo(self, request: api.ImageFsInfoRequest) -> api.ImageFsInfoResponse:
        image_fs, container_fs = await self.stats.filesystems()
        return api.ImageFsInfoResponse(
            image_filesystems=[cri.filesystem_usage(image_fs)], container_filesystems=[cri.filesystem_usage(container_fs)]
        )
