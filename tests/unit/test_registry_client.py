"""pycri.images.registry.RegistryClient over a mock transport: what it reads of a registry's and a token server's answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest

from pycri.images import auth
from pycri.images.manifest import MAX_MANIFEST_BYTES
from pycri.images.reference import parse
from pycri.images.registries_conf import Endpoint, RegistriesConf
from pycri.images.registry import RegistryAuthError, RegistryClient, RegistryError

HOST = "registry.example.com"
REALM = "https://auth.example.com/token"
MiB = 1 << 20


@dataclass
class Endless:
    """A body of ``total`` bytes sent 64 KiB at a time, counting what was taken."""

    total: int
    piece: bytes = b" " * (64 * 1024)
    sent: int = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.sent < self.total:
            self.sent += len(self.piece)
            yield self.piece


async def streamed(data: bytes) -> AsyncIterator[bytes]:
    yield data  # as from the network: a bytes body would count as read already


def client_with(handler: Callable[[httpx.Request], httpx.Response]) -> RegistryClient:
    client = RegistryClient(RegistriesConf())
    transport = httpx.MockTransport(handler)
    client._http = httpx.AsyncClient(transport=transport)
    client._unverified = httpx.AsyncClient(transport=transport)
    return client


def endpoint() -> Endpoint:
    ref = parse(f"{HOST}/library/app:1")
    return Endpoint(HOST, ref.repository, False, False, ref)


def challenged(token_answer: Callable[[], httpx.Response]) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "auth.example.com":
            return token_answer()
        if request.headers.get("authorization") == "Bearer t0k3n":
            return httpx.Response(200, content=streamed(b"{}"), headers={"content-type": "application/json"})
        return httpx.Response(401, headers={"www-authenticate": f'Bearer realm="{REALM}",service="registry"'})

    return handler


async def test_a_token_answer_is_read() -> None:
    client = client_with(challenged(lambda: httpx.Response(200, json={"token": "t0k3n"})))
    try:
        fetched = await client.manifest(endpoint(), "1", None)
    finally:
        await client.close()
    assert fetched.data == b"{}"


async def test_an_endless_token_answer_is_cut_at_the_limit() -> None:
    body = Endless(64 * MiB)
    client = client_with(challenged(lambda: httpx.Response(200, content=body)))
    try:
        with pytest.raises(RegistryAuthError) as info:
            await client.manifest(endpoint(), "1", None)
    finally:
        await client.close()
    assert info.value.message == f"{HOST}: the token server's answer is over {auth.MAX_TOKEN_RESPONSE_BYTES} bytes"
    assert body.sent <= auth.MAX_TOKEN_RESPONSE_BYTES + 2 * len(body.piece)


async def test_a_token_answer_declared_too_long_is_not_read() -> None:
    body = Endless(64 * MiB)
    headers = {"content-length": str(64 * MiB)}
    client = client_with(challenged(lambda: httpx.Response(200, content=body, headers=headers)))
    try:
        with pytest.raises(RegistryAuthError, match="the token server's answer is over 1048576 bytes"):
            await client.manifest(endpoint(), "1", None)
    finally:
        await client.close()
    assert body.sent <= len(body.piece)


async def test_a_manifest_declared_too_long_is_not_read() -> None:
    body = Endless(64 * MiB)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-length": str(64 * MiB)})

    client = client_with(handler)
    try:
        with pytest.raises(RegistryError, match=rf"^{HOST}: manifest 1 is over {MAX_MANIFEST_BYTES} bytes$"):
            await client.manifest(endpoint(), "1", None)
    finally:
        await client.close()
    assert body.sent <= len(body.piece)


def test_parse_token_response_refuses_an_oversized_answer() -> None:
    body = json.dumps({"token": "t", "padding": "x" * auth.MAX_TOKEN_RESPONSE_BYTES}).encode()
    with pytest.raises(auth.AuthError, match=r"^token response is over 1048576 bytes$"):
        auth.parse_token_response(body)
