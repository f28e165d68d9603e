"""Which plugin set which field of which container: NRI's conflict detection (``pkg/api/owners.go``).

Every adjustment or update a plugin makes claims a field of a container: a simple field (the
memory limit, the args, the cgroups path) or one entry of a compound one (the annotation
``k``, the mount at ``/data``, the environment variable ``X``), keyed by the ``Field`` enum of
``api.proto``. A second claim of the same field or entry is a conflict, even by the plugin
that made the first, and fails the whole operation: ``plugins "b" and "a" both tried to set
Env X``. A plugin that removes an entry (a "-"-marked key) leaves it marked as cleared by
itself, so it may set it again in the same answer, but no other plugin may. Hooks are the
exception: every plugin may add some and all of them are recorded as owners ("a,b").
"""

from __future__ import annotations

import json

from pycri.nri import api_pb2 as nri


class ConflictError(Exception):
    """Two plugins (or one plugin twice) set the same field of a container."""


def go_quote(text: str) -> str:
    """Go's ``%q`` of a name, near enough: double quotes, backslash escapes."""
    return json.dumps(text, ensure_ascii=False)


def is_marked_for_removal(key: str) -> tuple[str, bool]:
    """``("k", True)`` for ``"-k"``, ``(key, False)`` otherwise."""
    if key.startswith("-"):
        return key[1:], True
    return key, False


def mark_for_removal(key: str) -> str:
    return "-" + key


class Owners:
    """The owners of adjusted fields, per container ID."""

    def __init__(self) -> None:
        self._simple: dict[str, dict[int, str]] = {}
        self._compound: dict[str, dict[int, dict[str, str]]] = {}

    def _conflict(self, other: str, plugin: str, field: int, key: str | None) -> None:
        clearer, cleared = is_marked_for_removal(other)
        if cleared:
            if clearer == plugin:
                return
            other = clearer
        what = nri.Field.Name(field) + (f" {key}" if key is not None else "")  # type: ignore[arg-type]
        raise ConflictError(f"plugins {go_quote(plugin)} and {go_quote(other)} both tried to set {what}")

    def claim(self, container_id: str, field: int, plugin: str) -> None:
        """Claim a simple field; :class:`ConflictError` if another claim stands."""
        owners = self._simple.setdefault(container_id, {})
        if (other := owners.get(field)) is not None:
            self._conflict(other, plugin, field, None)
        owners[field] = plugin

    def claim_entry(self, container_id: str, field: int, key: str, plugin: str) -> None:
        """Claim one entry of a compound field; :class:`ConflictError` if another claim stands."""
        owners = self._compound.setdefault(container_id, {}).setdefault(field, {})
        if (other := owners.get(key)) is not None:
            self._conflict(other, plugin, field, key)
        owners[key] = plugin

    def clear(self, container_id: str, field: int, plugin: str) -> None:
        """Mark a simple field as removed by ``plugin`` (which may then set it again)."""
        self._simple.setdefault(container_id, {})[field] = mark_for_removal(plugin)

    def clear_entry(self, container_id: str, field: int, key: str, plugin: str) -> None:
        self._compound.setdefault(container_id, {}).setdefault(field, {})[key] = mark_for_removal(plugin)

    def accumulate(self, container_id: str, field: int, plugin: str) -> None:
        """Add ``plugin`` to the owners of a field every plugin may add to (OCI hooks)."""
        owners = self._simple.setdefault(container_id, {})
        owners[field] = f"{owners[field]},{plugin}" if field in owners else plugin

    def owner(self, container_id: str, field: int, key: str | None = None) -> str | None:
        if key is None:
            return self._simple.get(container_id, {}).get(field)
        return self._compound.get(container_id, {}).get(field, {}).get(key)

    def to_proto(self) -> nri.OwningPlugins:
        """The ``OwningPlugins`` message validator plugins receive."""
        message = nri.OwningPlugins()
        for container_id in sorted(self._simple.keys() | self._compound.keys()):
            fields = message.owners[container_id]
            for field, plugin in self._simple.get(container_id, {}).items():
                fields.simple[field] = plugin
            for field, entries in self._compound.get(container_id, {}).items():
                compound = fields.compound[field]
                for key, plugin in entries.items():
                    compound.owners[key] = plugin
        return message
