"""NRI's event masks, plugin names and indices, and its defaults (containerd/nri ``pkg/api``)."""

from __future__ import annotations

from collections.abc import Iterable

from pycri.nri import api_pb2 as nri

DEFAULT_SOCKET_PATH = "/var/run/nri/nri.sock"
DEFAULT_REGISTRATION_TIMEOUT = 5.0  # seconds
DEFAULT_REQUEST_TIMEOUT = 2.0

RUNTIME_SERVICE = "nri.pkg.api.v1alpha1.Runtime"
PLUGIN_SERVICE = "nri.pkg.api.v1alpha1.Plugin"

# Each Event n is bit (n-1) of a mask; every event from RUN_POD_SANDBOX to the one before LAST.
VALID_EVENTS = (1 << (nri.LAST - 1)) - 1

PRETTY_NAMES = {
    nri.RUN_POD_SANDBOX: "RunPodSandbox",
    nri.UPDATE_POD_SANDBOX: "UpdatePodSandbox",
    nri.POST_UPDATE_POD_SANDBOX: "PostUpdatePodSandbox",
    nri.STOP_POD_SANDBOX: "StopPodSandbox",
    nri.REMOVE_POD_SANDBOX: "RemovePodSandbox",
    nri.CREATE_CONTAINER: "CreateContainer",
    nri.POST_CREATE_CONTAINER: "PostCreateContainer",
    nri.START_CONTAINER: "StartContainer",
    nri.POST_START_CONTAINER: "PostStartContainer",
    nri.UPDATE_CONTAINER: "UpdateContainer",
    nri.POST_UPDATE_CONTAINER: "PostUpdateContainer",
    nri.STOP_CONTAINER: "StopContainer",
    nri.REMOVE_CONTAINER: "RemoveContainer",
    nri.VALIDATE_CONTAINER_ADJUSTMENT: "ValidateContainerAdjustment",
}


def event_bit(event: int) -> int:
    return 1 << (event - 1)


def event_mask(events: Iterable[int]) -> int:
    mask = 0
    for event in events:
        mask |= event_bit(event)
    return mask


def is_set(mask: int, event: int) -> bool:
    return bool(mask & event_bit(event))


def pretty_mask(mask: int) -> str:
    """Upstream's ``EventMask.PrettyString``: "RunPodSandbox,CreateContainer,unknown(0x8000)"."""
    names = []
    for event in range(nri.UNKNOWN + 1, nri.LAST + 1):
        if is_set(mask, event):
            names.append(PRETTY_NAMES.get(event, f"unknown({event})"))  # type: ignore[call-overload]
            mask &= ~event_bit(event)
    if mask:
        names.append(f"unknown(0x{mask:x})")
    return ",".join(names)


def check_plugin_name(name: str) -> None:
    """A plugin name is non-empty and of ``[a-zA-Z0-9_.+-]``; ValueError otherwise."""
    if not name:
        raise ValueError("invalid plugin name: name is empty")
    for char in name:
        if not (char.isascii() and (char.isalnum() or char in "-_.+")):
            raise ValueError(f"invalid plugin name {name!r}: contains invalid character {char!r}")


def check_plugin_index(index: str) -> None:
    """A plugin index is exactly two decimal digits; ValueError otherwise."""
    if len(index) != 2:
        raise ValueError(f"invalid plugin index {index!r}, must be 2 digits")
    if not all("0" <= char <= "9" for char in index):
        raise ValueError(f"invalid plugin index {index!r} (not [0-9][0-9])")
