"""The pod sandboxes pycri knows: owned by the sandbox service, read by the container service."""

from __future__ import annotations

from pycri import errors
from pycri.sandboxes.model import Sandbox


class SandboxRegistry:
    def __init__(self) -> None:
        self.sandboxes: dict[str, Sandbox] = {}

    def __contains__(self, sandbox_id: object) -> bool:
        return sandbox_id in self.sandboxes

    def find(self, id_or_prefix: str) -> Sandbox | None:
        """A sandbox by its ID or a unique prefix of it."""
        if not id_or_prefix:
            return None
        found = self.sandboxes.get(id_or_prefix)
        if found is not None:
            return found
        matches = [s for i, s in self.sandboxes.items() if i.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"pod_sandbox_id: prefix {id_or_prefix!r} matches {len(matches)} sandboxes")
        return matches[0] if matches else None

    def get(self, id_or_prefix: str) -> Sandbox:
        if not id_or_prefix:
            raise errors.InvalidArgument("pod_sandbox_id: required")
        found = self.find(id_or_prefix)
        if found is None:
            raise errors.NotFound(f"pod sandbox {id_or_prefix!r} not found")
        return found
