"""Image records: what pycri knows about each stored image, and finding one by name.

An image is identified by its config digest (``sha256:...``, the image ID).
It carries the tags and digests it is known by, the chain IDs of its
unpacked layers and the blobs it keeps in the content store. The index keeps
every record in memory (the state database is written first), so status and
list calls never touch the disk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pycri.images import reference
from pycri.images.manifest import user_of
from pycri.store import ImageRow


@dataclass
class ImageRecord:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    created_at: int
    config: dict[str, Any]
    chain_ids: list[str]
    blobs: list[str]
    manifest_digest: str = ""
    media_type: str = ""
    user_specified: str = ""
    runtime_handler: str = ""

    @property
    def user(self) -> tuple[int | None, str]:
        cfg = self.config.get("config") or {}
        return user_of(str(cfg.get("User") or "") if isinstance(cfg, dict) else "")

    def to_row(self) -> ImageRow:
        data = {
            "config": self.config,
            "chain_ids": self.chain_ids,
            "blobs": self.blobs,
            "manifest_digest": self.manifest_digest,
            "media_type": self.media_type,
            "user_specified": self.user_specified,
            "runtime_handler": self.runtime_handler,
        }
        return ImageRow(
            id=self.id,
            repo_tags=list(self.repo_tags),
            repo_digests=list(self.repo_digests),
            size=self.size,
            created_at=self.created_at,
            data=data,
        )

    @classmethod
    def from_row(cls, row: ImageRow) -> ImageRecord:
        d = row.data
        return cls(
            id=row.id,
            repo_tags=list(row.repo_tags),
            repo_digests=list(row.repo_digests),
            size=row.size,
            created_at=row.created_at,
            config=dict(d.get("config") or {}),
            chain_ids=list(d.get("chain_ids") or []),
            blobs=list(d.get("blobs") or []),
            manifest_digest=str(d.get("manifest_digest", "")),
            media_type=str(d.get("media_type", "")),
            user_specified=str(d.get("user_specified", "")),
            runtime_handler=str(d.get("runtime_handler", "")),
        )

    def verbose_info(self) -> str:
        """The JSON ``info`` of ImageStatus(verbose): the image config and where the image lives."""
        return json.dumps(
            {
                "imageSpec": self.config,
                "chainIDs": self.chain_ids,
                "manifestDigest": self.manifest_digest,
                "mediaType": self.media_type,
                "userSpecifiedImage": self.user_specified,
            }
        )


@dataclass
class ImageIndex:
    """Records by ID, and lookup by ID, ID prefix, tag or digest reference."""

    by_id: dict[str, ImageRecord] = field(default_factory=dict)

    def put(self, record: ImageRecord) -> None:
        self.by_id[record.id] = record

    def drop(self, image_id: str) -> None:
        self.by_id.pop(image_id, None)

    def all(self) -> list[ImageRecord]:
        return sorted(self.by_id.values(), key=lambda r: (r.created_at, r.id))

    def with_tag(self, tag: str) -> ImageRecord | None:
        for record in self.by_id.values():
            if tag in record.repo_tags:
                return record
        return None

    def find(self, text: str) -> ImageRecord | None:
        """The image ``text`` names: its ID (with or without ``sha256:``), a tag, a digest, or a unique ID prefix."""
        if not text:
            return None
        image_id = reference.looks_like_image_id(text)
        if image_id is not None and image_id in self.by_id:
            return self.by_id[image_id]
        try:
            ref = reference.parse(text)
        except reference.ReferenceError:
            ref = None
        if ref is not None:
            if ref.digest:
                wanted = f"{ref.name}@{ref.digest}"
                for record in self.by_id.values():
                    if wanted in record.repo_digests:
                        return record
            elif ref.tag:
                found = self.with_tag(f"{ref.name}:{ref.tag}")
                if found is not None:
                    return found
        prefix = text.removeprefix("sha256:")
        if prefix and all(c in "0123456789abcdef" for c in prefix):
            matches = [r for r in self.by_id.values() if r.id.removeprefix("sha256:").startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
        return None
