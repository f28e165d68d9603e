"""The containers pycri knows, shared by the services that need to look them up.

The container service owns the entries; the spec builder (a target container's PID namespace)
and the image store (the layers containers still use) only read them. Built first, so neither
needs the container service itself.
"""

from __future__ import annotations

from pycri import errors
from pycri.containers.model import Container


class ContainerRegistry:
    def __init__(self) -> None:
        self.containers: dict[str, Container] = {}
        self.removing: dict[str, Container] = {}  # removed, clean-up under way

    def find(self, id_or_prefix: str) -> Container | None:
        if not id_or_prefix:
            return None
        found = self.containers.get(id_or_prefix)
        if found is not None:
            return found
        matches = [c for i, c in self.containers.items() if i.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"container_id: prefix {id_or_prefix!r} matches {len(matches)} containers")
        return matches[0] if matches else None

    def get(self, id_or_prefix: str, field: str = "container_id") -> Container:
        if not id_or_prefix:
            raise errors.InvalidArgument(f"{field}: required")
        found = self.find(id_or_prefix)
        if found is None:
            raise errors.NotFound(f"container {id_or_prefix!r} not found")
        return found

    def chain_ids_in_use(self) -> set[str]:
        containers = [*self.containers.values(), *self.removing.values()]  # removing ones still mount their layers
        return {c for container in containers for c in container.all_chain_ids}
