"""Pulling one image: resolve, choose the platform, fetch and verify every blob, unpack.

Each endpoint registries.conf gives is tried in turn (mirrors first); a mirror
that lacks the image or cannot be reached is passed over. Every manifest,
config and layer is checked against its digest (and size) before it is used,
layers are downloaded ``concurrency`` at a time and unpacked as they arrive,
and layers already unpacked are not downloaded again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from pycri import errors
from pycri.images import manifest as mf
from pycri.images.auth import Credentials
from pycri.images.content import ContentError, ContentStore
from pycri.images.layers import LayerError, LayerStore
from pycri.images.reference import Reference
from pycri.images.registries_conf import Endpoint
from pycri.images.registry import ManifestNotFound, RegistryClient, RegistryError
from pycri.images.unpack import UnpackError, UnpackLimitError

log = logging.getLogger("pycri.pull")

Progress = Callable[[str, str, int, int], None]  # (what, digest, done bytes, total bytes)


@dataclass(frozen=True)
class Pulled:
    config_digest: str
    config: mf.ImageConfig
    top_digest: str  # what the reference resolved to: the index or the manifest
    manifest_digest: str  # the platform's manifest
    media_type: str
    chain_ids: list[str]
    blobs: list[str]
    size: int

    @property
    def claimed(self) -> list[str]:
        """What the pull claimed for itself; the caller releases it once the image is recorded."""
        return self.blobs + self.chain_ids


def _read_at_most(path: Path, limit: int) -> bytes:
    """The file's first ``limit + 1`` bytes: enough to tell it is over ``limit``, never more."""
    with open(path, "rb") as f:
        return f.read(limit + 1)


class Claims:
    """Blobs and layers that pulls under way are using: garbage collection leaves them alone."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, keys: list[str]) -> None:
        for key in keys:
            self._counts[key] = self._counts.get(key, 0) + 1

    def release(self, keys: list[str]) -> None:
        for key in keys:
            left = self._counts.get(key, 0) - 1
            if left > 0:
                self._counts[key] = left
            else:
                self._counts.pop(key, None)

    def __contains__(self, key: object) -> bool:
        return key in self._counts


class Puller:
    def __init__(
        self, registry: RegistryClient, content: ContentStore, layers: LayerStore, claims: Claims, concurrency: int
    ) -> None:
        self.registry = registry
        self.content = content
        self.layers = layers
        self.claims = claims
        self.concurrency = concurrency

    async def pull(
        self, ref: Reference, creds: Credentials | None, server_address: str = "", progress: Progress | None = None
    ) -> Pulled:
        endpoints = self.registry.endpoints(ref)
        failures: list[errors.CRIError] = []
        tried: list[str] = []  # each failure with the role of its endpoint: "mirror HOST: ..." or "registry HOST: ..."
        for endpoint in endpoints:
            endpoint_creds = self.registry.credentials(endpoint, creds, server_address)
            try:
                return await self._pull_from(endpoint, ref, endpoint_creds, progress)
            except (ManifestNotFound, RegistryError) as exc:
                failures.append(exc)
                tried.append(f"{'mirror' if endpoint.mirror else 'registry'} {exc.message}")
                if not endpoint.mirror:
                    break
                log.info("mirror %s failed for %s: %s; trying the next endpoint", endpoint.host, ref, exc)
        detail = "; ".join(tried)
        if all(isinstance(f, ManifestNotFound) for f in failures):
            raise errors.NotFound(f"pulling {ref}: image not found: {detail}")
        # The most telling failure decides the code (auth over unreachable over not found).
        worst = max(failures, key=lambda f: (not isinstance(f, ManifestNotFound), f.code is not errors.Code.UNAVAILABLE))
        raise type(worst)(f"pulling {ref}: {detail}")

    async def _pull_from(
        self, endpoint: Endpoint, ref: Reference, creds: Credentials | None, progress: Progress | None
    ) -> Pulled:
        target = endpoint.reference.digest or endpoint.reference.tag or "latest"
        top = await self.registry.manifest(endpoint, target, creds)
        top_digest = ref.digest or mf.sha256_digest(top.data)
        try:
            if ref.digest:
                mf.verify(top.data, ref.digest, f"manifest {ref}")
            media_type = mf.detect_media_type(top.data, top.media_type)
            kept = [(top_digest, top.data)]
            if media_type in mf.INDEX_TYPES:
                index = mf.parse_index(top.data, media_type)
                chosen = mf.select_platform(index)
                if chosen.media_type in mf.INDEX_TYPES:
                    raise mf.ManifestError(f"{ref}: nested indexes are not supported")
                child = await self.registry.manifest(endpoint, chosen.digest, creds)
                mf.verify(child.data, chosen.digest, f"manifest {chosen.digest} of {ref}")
                if len(child.data) != chosen.size:
                    raise mf.ManifestError(f"manifest {chosen.digest} of {ref}: size {len(child.data)}, index says {chosen.size}")
                manifest = mf.parse_manifest(child.data, chosen.media_type)
                manifest_digest = chosen.digest
                kept.append((chosen.digest, child.data))
            else:
                manifest = mf.parse_manifest(top.data, media_type)
                manifest_digest = top_digest
        except mf.ManifestError as exc:
            raise errors.DataLoss(f"pulling {ref} from {endpoint.host}: {exc}") from None

        blobs = [d for d, _ in kept] + [manifest.config.digest] + [layer.digest for layer in manifest.layers]
        self.claims.add(blobs)
        chains: list[str] = []
        try:
            for digest, data in kept:
                if not await asyncio.to_thread(self.content.has, digest):
                    await self.content.put_bytes(digest, data, "manifest")
            if manifest.config.size > mf.MAX_CONFIG_BYTES:
                raise errors.ResourceExhausted(
                    f"pulling {ref}: image config {manifest.config.digest} is {manifest.config.size} bytes, "
                    f"over the {mf.MAX_CONFIG_BYTES}-byte limit"
                )
            config_path = await self._blob(endpoint, manifest.config, creds, "config", progress)
            config_bytes = await asyncio.to_thread(_read_at_most, config_path, mf.MAX_CONFIG_BYTES)
            try:
                config = mf.parse_config(config_bytes)
            except mf.ManifestError as exc:
                raise errors.DataLoss(f"pulling {ref}: {exc}") from None
            if len(config.diff_ids) != len(manifest.layers):
                raise errors.DataLoss(
                    f"pulling {ref}: {len(manifest.layers)} layers in the manifest, {len(config.diff_ids)} diff IDs in the config"
                )
            chains = mf.chain_ids(config.diff_ids)
            self.claims.add(chains)
            await self._layers(endpoint, manifest, config, chains, creds, progress)
        except BaseException:
            self.claims.release(blobs + chains)
            raise
        size = sum(len(data) for _, data in kept) + manifest.config.size + sum(layer.size for layer in manifest.layers)
        return Pulled(
            config_digest=manifest.config.digest,
            config=config,
            top_digest=top_digest,
            manifest_digest=manifest_digest,
            media_type=manifest.media_type,
            chain_ids=chains,
            blobs=blobs,
            size=size,
        )

    async def _blob(
        self, endpoint: Endpoint, desc: mf.Descriptor, creds: Credentials | None, what: str, progress: Progress | None
    ) -> Path:
        async def fetch() -> AsyncIterator[bytes]:
            done = 0
            async for chunk in self.registry.blob(endpoint, desc.digest, creds):
                done += len(chunk)
                if progress is not None:
                    progress(what, desc.digest, done, desc.size)
                yield chunk

        try:
            return await self.content.ensure(desc.digest, desc.size, fetch, what)
        except ContentError as exc:
            raise errors.DataLoss(f"{endpoint.host}/{endpoint.repository}: {exc}") from None

    async def _layers(
        self,
        endpoint: Endpoint,
        manifest: mf.Manifest,
        config: mf.ImageConfig,
        chains: list[str],
        creds: Credentials | None,
        progress: Progress | None,
    ) -> None:
        gate = asyncio.Semaphore(self.concurrency)

        async def one(layer: mf.Descriptor, diff_id: str, chain: str) -> None:
            if await asyncio.to_thread(self.layers.has, chain):
                if progress is not None:
                    progress("layer", layer.digest, layer.size, layer.size)
                return
            async with gate:
                blob = await self._blob(endpoint, layer, creds, "layer", progress)
            try:
                await self.layers.ensure(chain, diff_id, blob, layer.media_type)
            except UnpackLimitError as exc:
                raise errors.ResourceExhausted(f"layer {layer.digest}: {exc}") from None
            except (LayerError, UnpackError) as exc:
                raise errors.DataLoss(f"layer {layer.digest}: {exc}") from None

        tasks = [
            asyncio.create_task(one(layer, d, c)) for layer, d, c in zip(manifest.layers, config.diff_ids, chains, strict=True)
        ]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
