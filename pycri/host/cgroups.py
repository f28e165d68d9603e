"""Which cgroup layout the host has: v1, v2 (unified) or hybrid."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class Layout(enum.Enum):
    V1 = "v1"
    V2 = "v2"
    HYBRID = "hybrid"
    NONE = "none"


@dataclass(frozen=True)
class CgroupMounts:
    layout: Layout
    unified: str | None  # mountpoint of the cgroup2 hierarchy, if any
    v1: dict[str, str]  # controller -> mountpoint of the v1 hierarchies


def parse_mounts(text: str, root: str = "/sys/fs/cgroup") -> CgroupMounts:
    """Read /proc/self/mounts text and classify the cgroup layout."""
    unified: str | None = None
    v1: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        mountpoint, fstype, options = parts[1], parts[2], parts[3]
        if fstype == "cgroup2":
            unified = mountpoint
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt in ("rw", "ro", "relatime", "nosuid", "nodev", "noexec") or opt.startswith("release_agent"):
                    continue
                v1[opt.removeprefix("name=")] = mountpoint
    if unified == root:
        layout = Layout.V2
    elif v1 and unified is not None:
        layout = Layout.HYBRID
    elif v1:
        layout = Layout.V1
    elif unified is not None:
        layout = Layout.V2
    else:
        layout = Layout.NONE
    return CgroupMounts(layout=layout, unified=unified, v1=v1)


def detect(mounts_file: Path = Path("/proc/self/mounts")) -> CgroupMounts:
    return parse_mounts(mounts_file.read_text())
