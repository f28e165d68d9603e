"""Host device nodes for containers: the request's devices and, for privileged containers, all of /dev.

Blocking (stats the host's device nodes): call in a thread. The walk follows
containerd's pkg/oci getDevices: a directory's device nodes are taken
recursively, without following symbolic links inside it, and skipping
pts, shm, fd, mqueue, .lxc, .lxd-mounts, .udev and console.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import stat
from collections.abc import Sequence
from typing import Any

import yaml

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.oci import cdi
from pycri.oci.container_spec import HostDevice

__all__ = ["all_host_devices", "cdi_edits", "device_from_stat", "host_device", "load_cdi", "resolve_devices"]

SKIPPED_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
SKIPPED_FILES = frozenset({"console"})


def device_from_stat(path: str, st: os.stat_result) -> HostDevice | None:
    """The device ``st`` describes, or None when it is not a char, block or FIFO node."""
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return HostDevice(
        path=path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
    )


def host_device(path: str, field: str = "") -> HostDevice:
    """The device node at ``path`` (symbolic links followed to the real node)."""
    what = f"{field}: " if field else ""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise errors.InvalidArgument(f"{what}{path}: no such device") from None
    except OSError as exc:
        raise errors.InvalidArgument(f"{what}{path}: {exc.strerror}") from None
    device = device_from_stat(path, st)
    if device is None:
        raise errors.InvalidArgument(f"{what}{path}: not a device node")
    return device


def _walk(directory: str) -> list[HostDevice]:
    """Every char and block device below ``directory`` (FIFOs, symbolic links and other files skipped)."""
    found: list[HostDevice] = []
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return found
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in SKIPPED_DIRS:
                    found.extend(_walk(entry.path))
                continue
            if entry.name in SKIPPED_FILES or entry.is_symlink():
                continue
            st = entry.stat(follow_symlinks=False)
        except (FileNotFoundError, PermissionError):
            continue  # gone meanwhile, or not ours to see
        device = device_from_stat(entry.path, st)
        if device is not None and device.type != "p":
            found.append(device)
    return found


def _check_permissions(permissions: str, what: str) -> str:
    permissions = permissions or "rwm"
    if not set(permissions) <= set("rwm"):
        raise errors.InvalidArgument(f"{what}: {permissions!r} may only contain r, w and m")
    return "".join(c for c in "rwm" if c in permissions)


def resolve_devices(devices: Sequence[api.Device], field: str = "config.devices") -> list[tuple[HostDevice, str, str]]:
    """Each requested device as (host node, path in the container, cgroup permissions).

    A ``host_path`` that is a directory gives all device nodes below it, each under
    ``container_path`` at the same relative path. An empty ``container_path`` is the host path.
    """
    result: list[tuple[HostDevice, str, str]] = []
    for i, device in enumerate(devices):
        what = f"{field}[{i}]"
        if not device.host_path:
            raise errors.InvalidArgument(f"{what}.host_path: required")
        if not device.host_path.startswith("/"):
            raise errors.InvalidArgument(f"{what}.host_path: {device.host_path!r} must be absolute")
        container_path = device.container_path or device.host_path
        if not container_path.startswith("/"):
            raise errors.InvalidArgument(f"{what}.container_path: {container_path!r} must be absolute")
        container_path = posixpath.normpath(container_path)
        permissions = _check_permissions(device.permissions, f"{what}.permissions")
        real = os.path.realpath(device.host_path)
        if os.path.isdir(real):
            for dev in _walk(real):
                relative = os.path.relpath(dev.path, real)
                result.append((dev, posixpath.join(container_path, relative), permissions))
            continue
        result.append((host_device(real, f"{what}.host_path"), container_path, permissions))
    return result


def all_host_devices(root: str = "/dev") -> list[HostDevice]:
    """Every device node of the host, for a privileged container (containerd's HostDevices)."""
    return _walk(root)


# -- CDI ----------------------------------------------------------------------------------------------

CDI_SUFFIXES = (".json", ".yaml", ".yml")
CDI_MAX_SPEC = 4 * 1024 * 1024  # bytes a spec file may have


def _decode(path: str) -> Any:
    with open(path, "rb") as f:
        raw = f.read(CDI_MAX_SPEC + 1)
    if len(raw) > CDI_MAX_SPEC:
        raise ValueError("larger than 4 MiB")
    if path.endswith(".json"):
        return json.loads(raw)
    return yaml.safe_load(raw)  # YAML 1.1; JSON is YAML too


def load_cdi(dirs: Sequence[str]) -> cdi.Registry:
    """Every CDI spec in ``dirs`` (lowest priority first); unreadable files become the registry's problems."""
    groups: list[list[tuple[str, Any]]] = []
    problems: list[str] = []
    for directory in dirs:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append(f"{directory}: {exc.strerror}")
            continue
        group = []
        for name in names:
            path = os.path.join(directory, name)
            if not name.endswith(CDI_SUFFIXES) or not os.path.isfile(path):
                continue
            try:
                group.append((path, _decode(path)))
            except (OSError, ValueError, yaml.YAMLError) as exc:
                problems.append(f"{path}: cannot be read: {str(exc).splitlines()[0]}")
        groups.append(group)
    registry = cdi.Registry.build(groups)
    registry.problems[:0] = problems
    return registry


def complete_node(node: cdi.DeviceNode, what: str) -> cdi.DeviceNode:
    """Fill in what a CDI device node leaves to the host: its type, numbers and mode."""
    host_path = node.host_path or node.path
    if node.complete and node.file_mode is not None:
        return node
    try:
        st = os.stat(host_path)
    except OSError as exc:
        raise errors.FailedPrecondition(f"{what}: CDI device node {host_path}: {exc.strerror}") from None
    found = device_from_stat(host_path, st)
    if found is None:
        raise errors.FailedPrecondition(f"{what}: CDI device node {host_path} is not a device node")
    if node.type and node.type != found.type:
        raise errors.FailedPrecondition(f"{what}: CDI device node {host_path} is type {found.type}, the spec says {node.type}")
    return dataclasses.replace(
        node,
        type=node.type or found.type,
        major=node.major if node.major is not None else found.major,
        minor=node.minor if node.minor is not None else found.minor,
        file_mode=node.file_mode if node.file_mode is not None else found.file_mode,
    )


def cdi_edits(config: api.ContainerConfig, dirs: Sequence[str]) -> list[cdi.Edits]:
    """The edits of the CDI devices ``config`` asks for, device nodes completed from the host."""
    return resolve_cdi(cdi.requested([d.name for d in config.CDI_devices], config.annotations), dirs)


def resolve_cdi(wanted: list[tuple[str, str]], dirs: Sequence[str]) -> list[cdi.Edits]:
    """The edits of the (field, qualified name) CDI devices ``wanted``, device nodes completed from the host."""
    if not wanted:
        return []
    if not dirs:
        raise errors.FailedPrecondition(f"{wanted[0][0]}: CDI is turned off on this node (cdi_spec_dirs is empty)")
    edits = load_cdi(dirs).resolve(wanted)
    what = ", ".join(name for _, name in wanted)
    return [dataclasses.replace(e, device_nodes=tuple(complete_node(n, what) for n in e.device_nodes)) for e in edits]
