"""The current boot's identity: the kernel's random boot ID, new at every boot.

pycri records it in the state database. A database whose boot ID differs from the running
kernel's outlived a reboot: the processes, mounts and network namespaces it records are gone
(``/run`` did not survive), and any pid it names may now be another process.
"""

from __future__ import annotations

from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
META_KEY = "boot_id"


def boot_id(path: Path = BOOT_ID) -> str:
    """This boot's ID ("" when the kernel does not say, as in some sandboxes: no reboot is then ever seen)."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""
