"""The image store as a whole: pull, find, list, remove, disk usage.

Layout under ``<root_dir>/images``: ``content/`` (blobs by digest), ``layers/``
(unpacked layers by chain ID). Records live in the state database and in
memory. Changes to records and garbage collection happen under one lock; a
blob or layer is deleted only when no image record, running pull or container
(``in_use``: the container registry's answer) needs it.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycri import errors
from pycri.config import Config, ImagesConfig
from pycri.images import auth, reference, registries_conf
from pycri.images.content import ContentStore
from pycri.images.layers import LayerStore
from pycri.images.pull import Claims, Progress, Pulled, Puller
from pycri.images.records import ImageIndex, ImageRecord
from pycri.images.registry import RegistryClient
from pycri.images.unpack import Limits
from pycri.store import Store

log = logging.getLogger("pycri.images")


class ImageService:
    def __init__(self, cfg: Config, store: Store, in_use: Callable[[], set[str]] = set) -> None:
        self.cfg = cfg
        self.store = store
        self.root = Path(cfg.root_dir) / "images"
        self.container_root = Path(cfg.root_dir) / "containers"
        self.content = ContentStore(self.root / "content")
        self.layers = LayerStore(
            self.root / "layers",
            limits=Limits(max_bytes=cfg.images.max_layer_unpacked_bytes, max_entries=cfg.images.max_layer_entries),
        )
        self.index = ImageIndex()
        self.claims = Claims()
        self.in_use = in_use  # the chain IDs containers use (pycri.containers.registry)
        self._lock = asyncio.Lock()
        self._registry: RegistryClient | None = None
        self._pinned: set[str] = set()
        # Called after anything that may change what the store holds (pycri.stats measures it again).
        self.on_change: list[Callable[[], None]] = []

    def _changed(self) -> None:
        for callback in self.on_change:
            callback()

    def _read_registries(self, cfg: ImagesConfig) -> tuple[registries_conf.RegistriesConf, auth.DockerConfig | None]:
        conf = registries_conf.load(cfg.registries_conf)
        docker = auth.DockerConfig.load(cfg.auth_file) if cfg.auth_file else None
        return conf, docker

    async def start(self) -> None:
        def prepare() -> tuple[registries_conf.RegistriesConf, auth.DockerConfig | None]:
            self.content.prepare()
            self.layers.prepare()
            self.container_root.mkdir(parents=True, exist_ok=True)
            return self._read_registries(self.cfg.images)

        try:
            conf, docker = await asyncio.to_thread(prepare)
        except (registries_conf.RegistriesConfError, auth.AuthError) as exc:
            raise errors.FailedPrecondition(f"images: {exc}") from exc
        for warning in conf.warnings:
            log.warning("%s", warning)
        self._registry = RegistryClient(conf, docker)
        for row in await self.store.images.all():
            self.index.put(ImageRecord.from_row(row))
        self._pinned = {self._normalize(p) for p in self.cfg.images.pinned}
        log.info("images: %d in the store", len(self.index.by_id))
        await self.gc()  # leftovers of pulls a crash interrupted

    async def check_registries(self, cfg: ImagesConfig) -> Callable[[], None]:
        """Read the registries.conf and auth file ``cfg`` names (SIGHUP); returns the function that puts
        them in use, so that a caller can check everything before changing anything. Raises
        FailedPrecondition naming the file when one is invalid: the files in use stay in use."""
        try:
            conf, docker = await asyncio.to_thread(self._read_registries, cfg)
        except (registries_conf.RegistriesConfError, auth.AuthError) as exc:
            raise errors.FailedPrecondition(f"images: {exc}") from exc

        def use() -> None:
            for warning in conf.warnings:
                log.warning("%s", warning)
            if self._registry is not None:  # pulls under way keep their endpoints; the next ones use these
                self._registry.registries = conf
                self._registry.docker_config = docker

        return use

    async def close(self) -> None:
        if self._registry is not None:
            await self._registry.close()
        await self.layers.close()

    @staticmethod
    def _normalize(text: str) -> str:
        image_id = reference.looks_like_image_id(text)
        if image_id:
            return image_id
        try:
            return str(reference.parse(text))
        except reference.ReferenceError:
            return text

    def pinned(self, record: ImageRecord) -> bool:
        if not self._pinned:
            return False
        return bool(self._pinned & ({record.id} | set(record.repo_tags) | set(record.repo_digests)))

    # -- queries --------------------------------------------------------------------------------

    def find(self, text: str) -> ImageRecord | None:
        return self.index.find(text)

    def list(self, filter_text: str = "") -> list[ImageRecord]:
        if filter_text:
            found = self.index.find(filter_text)
            return [found] if found else []
        return self.index.all()

    # -- changes --------------------------------------------------------------------------------

    async def pull(
        self,
        image: str,
        creds: auth.Credentials | None = None,
        *,
        server_address: str = "",
        runtime_handler: str = "",
        user_specified: str = "",
        progress: Progress | None = None,
    ) -> ImageRecord:
        try:
            ref = reference.parse(image)
        except reference.ReferenceError as exc:
            raise errors.InvalidArgument(f"image.image: {exc}") from None
        if self._registry is None:
            raise errors.Unavailable("the image service is not started")
        puller = Puller(self._registry, self.content, self.layers, self.claims, self.cfg.images.max_concurrent_downloads)
        started = time.monotonic()
        try:
            pulled = await puller.pull(ref, creds, server_address, progress)
        except registries_conf.RegistriesConfError as exc:
            raise errors.FailedPrecondition(f"image.image: {exc}") from None
        except BaseException:
            await asyncio.shield(self.gc())
            raise
        try:
            record = await self._record(ref, image, pulled, runtime_handler, user_specified)
        finally:
            self.claims.release(pulled.claimed)
        log.info("pulled %s as %s in %.2fs", image, record.id, time.monotonic() - started)
        self._changed()
        return record

    async def _record(
        self, ref: reference.Reference, image: str, pulled: Pulled, runtime_handler: str, user_specified: str
    ) -> ImageRecord:
        tag = f"{ref.name}:{ref.tag}" if ref.tag and not ref.digest else None
        repo_digest = f"{ref.name}@{pulled.top_digest}"
        async with self._lock:
            record = self.index.by_id.get(pulled.config_digest)
            if record is None:
                record = ImageRecord(
                    id=pulled.config_digest,
                    repo_tags=[],
                    repo_digests=[],
                    size=pulled.size,
                    created_at=time.time_ns(),
                    config=pulled.config.raw,
                    chain_ids=pulled.chain_ids,
                    blobs=pulled.blobs,
                    manifest_digest=pulled.manifest_digest,
                    media_type=pulled.media_type,
                )
            else:
                record.blobs = sorted(set(record.blobs) | set(pulled.blobs))
            record.user_specified = user_specified or image
            record.runtime_handler = runtime_handler
            if repo_digest not in record.repo_digests:
                record.repo_digests.append(repo_digest)
            if tag is not None:
                await self._move_tag(tag, record)
            await self.store.images.put(record.to_row())
            self.index.put(record)
        return record

    async def _move_tag(self, tag: str, to: ImageRecord) -> None:
        """Give ``tag`` to ``to``, taking it from whichever image had it (lock held)."""
        previous = self.index.with_tag(tag)
        if previous is not None and previous is not to:
            previous.repo_tags.remove(tag)
            await self.store.images.put(previous.to_row())
            log.info("tag %s moved from %s to %s", tag, previous.id, to.id)
        if tag not in to.repo_tags:
            to.repo_tags.append(tag)

    async def add_record(
        self,
        *,
        config_digest: str,
        config: dict[str, Any],
        chain_ids: builtins.list[str],
        blobs: builtins.list[str],
        size: int,
        manifest_digest: str,
        media_type: str,
        names: builtins.list[str],
    ) -> ImageRecord:
        """Record an image whose blobs and layers are already stored (an import), tagged with ``names``.

        ``names`` are normalised ``name:tag`` strings; a tag another image had moves here.
        The caller keeps the blobs and layers claimed until this returns.
        """
        async with self._lock:
            record = self.index.by_id.get(config_digest)
            if record is None:
                record = ImageRecord(
                    id=config_digest,
                    repo_tags=[],
                    repo_digests=[],
                    size=size,
                    created_at=time.time_ns(),
                    config=config,
                    chain_ids=chain_ids,
                    blobs=blobs,
                    manifest_digest=manifest_digest,
                    media_type=media_type,
                )
            else:
                record.blobs = sorted(set(record.blobs) | set(blobs))
            for name in names:
                await self._move_tag(name, record)
            await self.store.images.put(record.to_row())
            self.index.put(record)
        log.info("recorded image %s (%s)", record.id, ", ".join(names) or "untagged")
        self._changed()
        return record

    async def remove(self, text: str) -> ImageRecord | None:
        """Remove the image ``text`` names with all its tags; None when there was none."""
        async with self._lock:
            record = self.index.find(text)
            if record is None:
                return None
            await self.store.images.delete(record.id)
            self.index.drop(record.id)
        log.info("removed image %s (%s)", record.id, ", ".join(record.repo_tags) or "untagged")
        await self.gc()
        return record

    async def gc(self) -> None:
        """Delete blobs and layers that no image, pull or container needs."""
        async with self._lock:
            keep_blobs = {b for r in self.index.by_id.values() for b in r.blobs}
            keep_layers = {c for r in self.index.by_id.values() for c in r.chain_ids} | self.in_use()
            claims = self.claims
            inflight_blobs = self.content.in_flight()
            inflight_layers = self.layers.in_flight()

            def sweep() -> tuple[int, int]:
                blobs = [d for d in self.content.digests() if d not in keep_blobs and d not in claims and d not in inflight_blobs]
                chains = [
                    c for c in self.layers.chain_ids() if c not in keep_layers and c not in claims and c not in inflight_layers
                ]
                for digest in blobs:
                    self.content.delete(digest)
                for chain in chains:
                    self.layers.delete(chain)
                return len(blobs), len(chains)

            blobs, chains = await asyncio.to_thread(sweep)
        if blobs or chains:
            log.info("garbage collection removed %d blobs and %d layers", blobs, chains)
            self._changed()
