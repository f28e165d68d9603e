"""Client of OCI distribution registries (the Docker Registry HTTP API v2).

Resolves references through the endpoints registries.conf gives (mirrors
first, then the registry itself), answers authentication challenges (Basic,
and Bearer tokens fetched from the realm and cached per scope), and streams
blobs. Insecure endpoints, and loopback registries as Docker treats them, are
tried over HTTPS without certificate checks first and fall back to plain HTTP.
The protocol details (challenges, token requests, credentials) live in the
sans-IO ``auth`` module; this one only moves bytes with httpx.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

from pycri import errors
from pycri.images import auth
from pycri.images.manifest import ACCEPT, MAX_MANIFEST_BYTES
from pycri.images.reference import Reference
from pycri.images.registries_conf import Endpoint, RegistriesConf

log = logging.getLogger("pycri.registry")

CHUNK = 256 * 1024


class RegistryError(errors.CRIError):
    """A registry answered with an error, or could not be reached."""

    code = errors.Code.UNAVAILABLE


class ManifestNotFound(RegistryError):
    code = errors.Code.NOT_FOUND


class RegistryAuthError(RegistryError):
    code = errors.Code.UNAUTHENTICATED


class RegistryDenied(RegistryError):
    code = errors.Code.PERMISSION_DENIED


@dataclass(frozen=True)
class Fetched:
    data: bytes
    media_type: str
    digest_header: str


async def read_at_most(response: httpx.Response, limit: int, *, raw: bool = False) -> bytes | None:
    """The body of a streamed ``response``, or None, read no further, once it is over ``limit`` bytes.

    ``raw`` keeps the bytes as sent (a manifest's digest is over those), else they are decoded
    (Content-Encoding); either way a body declaring more than ``limit`` bytes is not read at all.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in response.aiter_raw() if raw else response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class RegistryClient:
    def __init__(
        self,
        registries: RegistriesConf,
        docker_config: auth.DockerConfig | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.registries = registries
        self.docker_config = docker_config
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        t = httpx.Timeout(timeout, connect=10.0)
        self._http = httpx.AsyncClient(timeout=t, limits=limits, follow_redirects=True)
        self._unverified = httpx.AsyncClient(timeout=t, limits=limits, follow_redirects=True, verify=False)
        self._tokens = auth.TokenCache()
        self._scheme: dict[str, str] = {}  # insecure host -> the scheme that worked
        self._authorization: dict[tuple[str, str, str], str] = {}  # (host, repository, account) -> header

    async def close(self) -> None:
        await self._http.aclose()
        await self._unverified.aclose()

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        return self.registries.endpoints(ref)

    def credentials(
        self, endpoint: Endpoint, given: auth.Credentials | None, server_address: str = ""
    ) -> auth.Credentials | None:
        """The request's credentials where they apply to this host, else the auth file's."""
        if given is not None and (
            not server_address or auth.normalize_host(server_address) in (endpoint.host, endpoint.reference.domain)
        ):
            return given
        if self.docker_config is not None:
            return self.docker_config.lookup(endpoint.host, endpoint.repository)
        return None

    # -- transport -----------------------------------------------------------------------------

    def _insecure(self, endpoint: Endpoint) -> bool:
        return endpoint.insecure or is_loopback(endpoint.host)

    async def _send(self, endpoint: Endpoint, method: str, path: str, headers: dict[str, str], stream: bool) -> httpx.Response:
        schemes = ["https"]
        if self._insecure(endpoint):
            known = self._scheme.get(endpoint.host)
            schemes = [known] if known else ["https", "http"]
        last: Exception | None = None
        for scheme in schemes:
            client = self._unverified if scheme == "https" and self._insecure(endpoint) else self._http
            request = client.build_request(method, f"{scheme}://{endpoint.host}{path}", headers=headers)
            try:
                response = await client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                last = exc
                continue
            except httpx.TimeoutException as exc:
                raise RegistryError(f"{endpoint.host}: {method} {path} timed out") from exc
            if self._insecure(endpoint):
                self._scheme[endpoint.host] = scheme
            return response
        raise RegistryError(f"{endpoint.host}: cannot connect: {last}")

    async def _authorize(self, endpoint: Endpoint, response: httpx.Response, creds: auth.Credentials | None) -> str:
        """An Authorization header answering the 401 ``response``'s challenge."""
        header = response.headers.get("www-authenticate", "")
        try:
            challenges = auth.parse_www_authenticate(header)
        except auth.AuthError as exc:
            raise RegistryAuthError(f"{endpoint.host}: unreadable authentication challenge: {exc}") from None
        schemes = {c.scheme: c for c in challenges}
        if creds is not None and creds.registry_token:
            return auth.bearer_header(creds.registry_token)
        if "bearer" in schemes:
            request = auth.token_request(schemes["bearer"], auth.scope_for(endpoint.repository), creds)
            cached = self._tokens.get(request.key, time.monotonic())
            if cached is not None:
                return auth.bearer_header(cached.token)
            server = request.url.split("?")[0]
            sent = self._http.build_request(request.method, request.url, headers=request.headers, content=request.body)
            try:
                reply = await self._http.send(sent, stream=True)
            except httpx.HTTPError as exc:
                raise RegistryAuthError(f"{endpoint.host}: token server {server} unreachable: {exc}") from exc
            try:
                if reply.status_code in (401, 403):
                    raise RegistryAuthError(f"{endpoint.host}: token server refused the credentials ({reply.status_code})")
                if reply.status_code != 200:
                    raise RegistryAuthError(f"{endpoint.host}: token server answered {reply.status_code}")
                body = await read_at_most(reply, auth.MAX_TOKEN_RESPONSE_BYTES)
            except httpx.HTTPError as exc:
                raise RegistryAuthError(f"{endpoint.host}: reading the answer of token server {server}: {exc}") from exc
            finally:
                await reply.aclose()
            if body is None:
                raise RegistryAuthError(
                    f"{endpoint.host}: the token server's answer is over {auth.MAX_TOKEN_RESPONSE_BYTES} bytes"
                )
            try:
                token = auth.parse_token_response(body)
            except auth.AuthError as exc:
                raise RegistryAuthError(f"{endpoint.host}: {exc}") from None
            self._tokens.put(request.key, token, time.monotonic())
            return auth.bearer_header(token.token)
        if "basic" in schemes:
            if creds is None or not creds.username:
                raise RegistryAuthError(f"{endpoint.host}: the registry requires credentials (Basic) and none were given")
            return auth.basic_header(creds)
        raise RegistryAuthError(f"{endpoint.host}: unsupported authentication challenge {header[:200]!r}")

    async def _request(
        self,
        endpoint: Endpoint,
        method: str,
        path: str,
        creds: auth.Credentials | None,
        headers: dict[str, str],
        *,
        stream: bool = False,
    ) -> httpx.Response:
        key = (endpoint.host, endpoint.repository, auth.credentials_fingerprint(creds))
        sent = dict(headers)
        if key in self._authorization:
            sent["Authorization"] = self._authorization[key]
        response = await self._send(endpoint, method, path, sent, stream)
        if response.status_code == 401:
            await response.aclose()
            authorization = await self._authorize(endpoint, response, creds)
            sent["Authorization"] = authorization
            response = await self._send(endpoint, method, path, sent, stream)
            if response.status_code == 401:
                await response.aclose()
                raise RegistryAuthError(f"{endpoint.host}: authentication failed for {endpoint.repository}")
            self._authorization[key] = authorization
        if response.status_code == 403:
            await response.aclose()
            raise RegistryDenied(f"{endpoint.host}: access to {endpoint.repository} denied")
        return response

    # -- API -----------------------------------------------------------------------------------

    async def manifest(self, endpoint: Endpoint, reference: str, creds: auth.Credentials | None) -> Fetched:
        """GET a manifest or index by tag or digest."""
        path = f"/v2/{endpoint.repository}/manifests/{reference}"
        response = await self._request(endpoint, "GET", path, creds, {"Accept": ACCEPT}, stream=True)
        try:
            if response.status_code == 404:
                sep = "@" if ":" in reference else ":"
                raise ManifestNotFound(f"{endpoint.host}/{endpoint.repository}{sep}{reference}: manifest unknown")
            if response.status_code != 200:
                raise RegistryError(f"{endpoint.host}: GET {path} answered {response.status_code}")
            body = await read_at_most(response, MAX_MANIFEST_BYTES, raw=True)
            if body is None:
                raise RegistryError(f"{endpoint.host}: manifest {reference} is over {MAX_MANIFEST_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise RegistryError(f"{endpoint.host}: reading manifest {reference}: {exc}") from exc
        finally:
            await response.aclose()
        return Fetched(body, response.headers.get("content-type", ""), response.headers.get("docker-content-digest", ""))

    async def blob(self, endpoint: Endpoint, digest: str, creds: auth.Credentials | None) -> AsyncIterator[bytes]:
        """Stream a blob; the caller verifies size and digest."""
        path = f"/v2/{endpoint.repository}/blobs/{digest}"
        response = await self._request(endpoint, "GET", path, creds, {}, stream=True)
        try:
            if response.status_code == 404:
                raise ManifestNotFound(f"{endpoint.host}/{endpoint.repository}: blob {digest} unknown")
            if response.status_code != 200:
                raise RegistryError(f"{endpoint.host}: GET {path} answered {response.status_code}")
            async for chunk in response.aiter_raw(CHUNK):
                yield chunk
        except httpx.HTTPError as exc:
            raise RegistryError(f"{endpoint.host}: reading blob {digest}: {exc}") from exc
        finally:
            await response.aclose()
