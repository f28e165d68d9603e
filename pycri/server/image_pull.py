"""PullImage."""

from __future__ import annotations

from pycri.api import api_pb2 as api
from pycri.errors import InvalidArgument
from pycri.images import auth
from pycri.images.service import ImageService


def credentials(config: api.AuthConfig) -> auth.Credentials | None:
    try:
        return auth.credentials_from_auth_config(
            username=config.username,
            password=config.password,
            auth=config.auth,
            identity_token=config.identity_token,
            registry_token=config.registry_token,
        )
    except auth.AuthError as exc:
        raise InvalidArgument(f"auth.auth: {exc}") from None


class ImagePullService:
    def __init__(self, images: ImageService, handlers: list[str]) -> None:
        self.images = images
        self.handlers = handlers

    async def PullImage(self, request: api.PullImageRequest) -> api.PullImageResponse:
        spec = request.image
        if not spec.image:
            raise InvalidArgument("image.image: an image reference is required")
        if spec.runtime_handler and spec.runtime_handler not in self.handlers:
            raise InvalidArgument(
                f"image.runtime_handler: unknown runtime handler {spec.runtime_handler!r} (known: {', '.join(self.handlers)})"
            )
        record = await self.images.pull(
            spec.image,
            credentials(request.auth),
            server_address=request.auth.server_address,
            runtime_handler=spec.runtime_handler,
            user_specified=spec.user_specified_image,
        )
        return api.PullImageResponse(image_ref=record.id)
