"""pycri.admin.v1 Admin: PullImage with streamed progress, ImportImages.

pycri's own API for the ``pycri`` command, served on the main socket only (see
:func:`admin_handler`). It cannot go through :func:`pycri.server.rpc.service_handler`
with the CRI families: its ``PullImage`` has the name of runtime.v1's, and its messages
live in ``admin_pb2``; so :func:`admin_handler` builds its handler table itself, with the
same interceptors (logging, domain errors mapped to gRPC codes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from pycri.api import admin_pb2 as admin
from pycri.errors import InvalidArgument
from pycri.images import auth, importer
from pycri.images.records import ImageRecord
from pycri.images.service import ImageService
from pycri.server.rpc import service_handler

ADMIN_SERVICE = admin.DESCRIPTOR.services_by_name["Admin"]

PROGRESS_INTERVAL = 0.1  # seconds between two progress messages about one blob (the last one always goes)

Event = tuple[str, str, int, int]  # (what, digest, done, total), as pycri.images.pull.Progress gets them


class AdminService:
    def __init__(self, images: ImageService) -> None:
        self.images = images

    async def PullImage(self, request: admin.PullImageRequest) -> AsyncIterator[admin.PullProgress]:
        if not request.image:
            raise InvalidArgument("image: an image reference is required")
        try:
            creds = auth.credentials_from_auth_config(username=request.username, password=request.password, auth=request.auth)
        except auth.AuthError as exc:
            raise InvalidArgument(f"auth: {exc}") from None
        queue: asyncio.Queue[Event | None] = asyncio.Queue()

        def progress(what: str, digest: str, done: int, total: int) -> None:
            queue.put_nowait((what, digest, done, total))

        async def pull() -> ImageRecord:
            try:
                return await self.images.pull(request.image, creds, server_address=request.server_address, progress=progress)
            finally:
                queue.put_nowait(None)  # wakes the loop below, success or not

        task = asyncio.create_task(pull())
        sent: dict[str, float] = {}  # digest -> when its last message went
        held: dict[str, Event] = {}  # digest -> its newest event not sent yet
        try:
            while (event := await queue.get()) is not None:
                what, digest, done, total = event
                now = time.monotonic()
                if done >= total or digest not in sent or now - sent[digest] >= PROGRESS_INTERVAL:
                    held.pop(digest, None)
                    sent[digest] = now
                    yield admin.PullProgress(kind=what, digest=digest, done_bytes=done, total_bytes=total)
                else:
                    held[digest] = event
            record = await task  # raises the pull's error
            for what, digest, done, total in held.values():  # never complete, as the pull succeeded: rare
                yield admin.PullProgress(kind=what, digest=digest, done_bytes=done, total_bytes=total)
            yield admin.PullProgress(image_id=record.id, done=True)
        finally:
            if not task.done():  # the client went away: stop the pull
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

    async def ImportImages(self, request: admin.ImportRequest) -> admin.ImportResponse:
        if not request.path:
            raise InvalidArgument("path: the path of an image archive is required")
        path = Path(request.path)
        if not path.is_absolute():
            raise InvalidArgument(f"path: {request.path!r} is not absolute (the daemon resolves no relative paths)")
        records = await importer.import_archive(self.images, path)
        return admin.ImportResponse(images=[admin.ImportedImage(id=r.id, repo_tags=r.repo_tags) for r in records])


def admin_handler(family: AdminService) -> grpc.GenericRpcHandler[Any, Any]:
    """The gRPC handler of the Admin service, for ``build_server(..., extra_handlers=[...])``."""
    return service_handler(ADMIN_SERVICE, [family])
