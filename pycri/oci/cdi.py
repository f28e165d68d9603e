"""Container Device Interface (CDI): device specs read, checked, resolved and applied to an OCI spec. Pure.

A CDI spec (JSON or YAML, written by a device vendor's tooling into the spec
directories) names a kind ``vendor.com/class`` and devices, each with the
edits that make it usable in a container: device nodes, environment, mounts,
hooks, additional groups. A container asks for devices by fully qualified name
(``vendor.com/class=name``) in ``ContainerConfig.CDI_devices`` or, from older
kubelets' device plugins, in ``cdi.k8s.io/...`` annotations. Following the
CDI specification (and its Go implementation that containerd and CRI-O use),
a spec's own top-level edits apply whenever one of its devices is used, and a
spec directory later in the list overrides an earlier one.

The caller does the I/O: it reads the files (``load``) and fills in device
node numbers from the host (a node may give only its path).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycri import errors

ANNOTATION_PREFIX = "cdi.k8s.io/"
HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
_VENDOR = r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?"
_CLASS = r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?"
_DEVICE = r"[A-Za-z0-9](?:[A-Za-z0-9_.:-]*[A-Za-z0-9])?"
KIND = re.compile(rf"^({_VENDOR})/({_CLASS})$")
QUALIFIED = re.compile(rf"^({_VENDOR})/({_CLASS})=({_DEVICE})$")
DEVICE_NAME = re.compile(rf"^{_DEVICE}$")


class SpecError(ValueError):
    """A spec file that does not follow the CDI specification."""


@dataclass(frozen=True)
class DeviceNode:
    path: str  # in the container
    host_path: str = ""  # on the host (default: ``path``)
    type: str = ""  # c, b or p; "" to take from the host
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    permissions: str = ""  # cgroup access, default "rwm"
    uid: int | None = None
    gid: int | None = None

    @property
    def complete(self) -> bool:
        return bool(self.type) and (self.type == "p" or (self.major is not None and self.minor is not None))


@dataclass(frozen=True)
class Edits:
    env: tuple[str, ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[dict[str, Any], ...] = ()
    hooks: tuple[tuple[str, dict[str, Any]], ...] = ()  # (hook name, OCI hook)
    additional_gids: tuple[int, ...] = ()
    intel_rdt: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.env or self.device_nodes or self.mounts or self.hooks or self.additional_gids or self.intel_rdt)


@dataclass(frozen=True)
class Spec:
    kind: str
    source: str  # the file it came from
    edits: Edits  # applied when any of its devices is used
    devices: Mapping[str, Edits]


# -- parsing -------------------------------------------------------------------------------------


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{what}: must be a list of strings")
    return tuple(value)


def _int(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"{what}: must be a non-negative integer")
    return value


def _absolute(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise SpecError(f"{what}: must be an absolute path, got {value!r}")
    return posixpath.normpath(value)


def _node(doc: Any, what: str) -> DeviceNode:
    if not isinstance(doc, dict):
        raise SpecError(f"{what}: must be an object")
    kind = doc.get("type") or ""
    if kind not in ("", "c", "b", "p", "u"):
        raise SpecError(f"{what}.type: {kind!r} is not c, b, u or p")
    permissions = doc.get("permissions") or ""
    if not isinstance(permissions, str) or not set(permissions) <= set("rwm"):
        raise SpecError(f"{what}.permissions: {permissions!r} may only contain r, w and m")
    return DeviceNode(
        path=_absolute(doc.get("path"), f"{what}.path"),
        host_path=_absolute(doc["hostPath"], f"{what}.hostPath") if doc.get("hostPath") else "",
        type="c" if kind == "u" else kind,
        major=_int(doc.get("major"), f"{what}.major"),
        minor=_int(doc.get("minor"), f"{what}.minor"),
        file_mode=_int(doc.get("fileMode"), f"{what}.fileMode"),
        permissions=permissions,
        uid=_int(doc.get("uid"), f"{what}.uid"),
        gid=_int(doc.get("gid"), f"{what}.gid"),
    )


def _mount(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise SpecError(f"{what}: must be an object")
    if not isinstance(doc.get("hostPath"), str) or not doc["hostPath"]:
        raise SpecError(f"{what}.hostPath: required")
    mount: dict[str, Any] = {
        "destination": _absolute(doc.get("containerPath"), f"{what}.containerPath"),
        "source": doc["hostPath"],
        "options": list(_strings(doc.get("options"), f"{what}.options")),
    }
    if doc.get("type"):
        mount["type"] = str(doc["type"])
    return mount


def _hook(doc: Any, what: str) -> tuple[str, dict[str, Any]]:
    if not isinstance(doc, dict):
        raise SpecError(f"{what}: must be an object")
    name = doc.get("hookName")
    if name not in HOOK_NAMES:
        raise SpecError(f"{what}.hookName: {name!r} is not one of {', '.join(HOOK_NAMES)}")
    hook: dict[str, Any] = {"path": _absolute(doc.get("path"), f"{what}.path")}
    args = _strings(doc.get("args"), f"{what}.args")
    env = _strings(doc.get("env"), f"{what}.env")
    if args:
        hook["args"] = list(args)
    if env:
        hook["env"] = list(env)
    timeout = _int(doc.get("timeout"), f"{what}.timeout")
    if timeout is not None:
        hook["timeout"] = timeout
    return str(name), hook


def _edits(doc: Any, what: str) -> Edits:
    if doc is None:
        return Edits()
    if not isinstance(doc, dict):
        raise SpecError(f"{what}: must be an object")
    env = _strings(doc.get("env"), f"{what}.env")
    for i, entry in enumerate(env):
        if "=" not in entry or entry.startswith("="):
            raise SpecError(f"{what}.env[{i}]: {entry!r} is not NAME=value")
    rdt = doc.get("intelRdt") or {}
    if not isinstance(rdt, dict):
        raise SpecError(f"{what}.intelRdt: must be an object")
    gids = [_int(g, f"{what}.additionalGids[{i}]") for i, g in enumerate(doc.get("additionalGids") or [])]
    return Edits(
        env=env,
        device_nodes=tuple(_node(n, f"{what}.deviceNodes[{i}]") for i, n in enumerate(doc.get("deviceNodes") or [])),
        mounts=tuple(_mount(m, f"{what}.mounts[{i}]") for i, m in enumerate(doc.get("mounts") or [])),
        hooks=tuple(_hook(h, f"{what}.hooks[{i}]") for i, h in enumerate(doc.get("hooks") or [])),
        additional_gids=tuple(g for g in gids if g is not None),
        intel_rdt=_intel_rdt(rdt),
    )


def _intel_rdt(doc: dict[str, Any]) -> dict[str, Any]:
    names = {"closID": "closID", "l3CacheSchema": "l3CacheSchema", "memBWSchema": "memBwSchema", "schemata": "schemata"}
    found = {oci: doc[cdi] for cdi, oci in names.items() if doc.get(cdi)}
    if doc.get("enableMonitoring"):
        found["enableMonitoring"] = True
    return found


def parse(doc: Any, source: str) -> Spec:
    """One spec document (already decoded from JSON or YAML)."""
    if not isinstance(doc, dict):
        raise SpecError(f"{source}: not a CDI spec (expected an object)")
    if not isinstance(doc.get("cdiVersion"), str) or not doc["cdiVersion"]:
        raise SpecError(f"{source}: cdiVersion: required")
    kind = doc.get("kind")
    if not isinstance(kind, str) or not KIND.match(kind):
        raise SpecError(f"{source}: kind: {kind!r} is not vendor.com/class")
    devices: dict[str, Edits] = {}
    entries = doc.get("devices")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{source}: devices: at least one device is required")
    for i, entry in enumerate(entries):
        what = f"{source}: devices[{i}]"
        if not isinstance(entry, dict):
            raise SpecError(f"{what}: must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not DEVICE_NAME.match(name):
            raise SpecError(f"{what}.name: {name!r} is not a valid device name")
        if name in devices:
            raise SpecError(f"{what}.name: {name!r} is defined twice")
        edits = _edits(entry.get("containerEdits"), f"{what}.containerEdits")
        if edits.empty:
            raise SpecError(f"{what}.containerEdits: a device must edit the container")
        devices[name] = edits
    return Spec(kind=kind, source=source, edits=_edits(doc.get("containerEdits"), f"{source}: containerEdits"), devices=devices)


# -- the registry ----------------------------------------------------------------------------------


@dataclass
class Registry:
    """The devices of every spec found, by qualified name; ``problems`` lists the files that were skipped."""

    devices: dict[str, tuple[Spec, Edits]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, by_dir: Iterable[Iterable[tuple[str, Any]]]) -> Registry:
        """From (source, decoded document) pairs, one group per spec directory, lowest priority first.

        A directory's device overrides an earlier directory's; the same device twice in one
        directory is a conflict, and neither definition is used.
        """
        registry = cls()
        for group in by_dir:
            found: dict[str, tuple[Spec, Edits]] = {}
            conflicts: set[str] = set()
            for source, doc in group:
                try:
                    spec = parse(doc, source)
                except SpecError as exc:
                    registry.problems.append(str(exc))
                    continue
                for name, edits in spec.devices.items():
                    qualified = f"{spec.kind}={name}"
                    if qualified in found:
                        conflicts.add(qualified)
                        registry.problems.append(f"{source}: {qualified} is also defined in {found[qualified][0].source}")
                    found[qualified] = (spec, edits)
            for qualified in conflicts:
                found.pop(qualified, None)
                registry.devices.pop(qualified, None)
            registry.devices.update(found)
        return registry

    def resolve(self, requested: list[tuple[str, str]]) -> list[Edits]:
        """The edits for the (field, qualified name) requests: each device's, and once each spec's own."""
        result: list[Edits] = []
        specs_seen: set[int] = set()
        for what, name in requested:
            if not QUALIFIED.match(name):
                raise errors.InvalidArgument(f"{what}: {name!r} is not a CDI device name (vendor.com/class=name)")
            found = self.devices.get(name)
            if found is None:
                detail = f"; skipped spec files: {'; '.join(self.problems)}" if self.problems else ""
                raise errors.NotFound(f"{what}: CDI device {name!r} is not defined by any CDI spec{detail}")
            spec, edits = found
            if id(spec) not in specs_seen:
                specs_seen.add(id(spec))
                if not spec.edits.empty:
                    result.append(spec.edits)
            result.append(edits)
        return result


def requested(cdi_devices: Iterable[str], annotations: Mapping[str, str]) -> list[tuple[str, str]]:
    """The devices a container asks for, as (field, name), first request first, each once."""
    wanted: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, name in enumerate(cdi_devices):
        if name not in seen:
            seen.add(name)
            wanted.append((f"config.CDI_devices[{i}].name", name))
    for key in sorted(annotations):
        if key.startswith(ANNOTATION_PREFIX):
            for name in (n.strip() for n in annotations[key].split(",")):
                if name and name not in seen:
                    seen.add(name)
                    wanted.append((f"config.annotations[{key}]", name))
    return wanted


# -- applying ----------------------------------------------------------------------------------------


def _set_env(env: list[str], entry: str) -> None:
    key = entry.split("=", 1)[0]
    for i, existing in enumerate(env):
        if existing.split("=", 1)[0] == key:
            env[i] = entry
            return
    env.append(entry)


def apply(spec: dict[str, Any], edits: list[Edits]) -> None:
    """Apply resolved ``edits`` (device nodes complete) to the OCI ``spec``, in order."""
    process = spec["process"]
    linux = spec["linux"]
    for edit in edits:
        for entry in edit.env:
            _set_env(process.setdefault("env", []), entry)
        for node in edit.device_nodes:
            if not node.complete:
                raise ValueError(f"CDI device node {node.path} was not completed from the host")
            device: dict[str, Any] = {"path": node.path, "type": node.type}
            if node.type != "p":
                device.update(major=node.major, minor=node.minor)
            for key, value in (("fileMode", node.file_mode), ("uid", node.uid), ("gid", node.gid)):
                if value is not None:
                    device[key] = value
            devices = [d for d in linux.get("devices", []) if d["path"] != node.path]
            linux["devices"] = [*devices, device]
            if node.type != "p":
                rule = {"allow": True, "type": node.type, "major": node.major, "minor": node.minor}
                linux["resources"].setdefault("devices", []).append(rule | {"access": node.permissions or "rwm"})
        for mount in edit.mounts:
            spec["mounts"] = [m for m in spec["mounts"] if m["destination"] != mount["destination"]]
            spec["mounts"].append(dict(mount))
        for name, hook in edit.hooks:
            spec.setdefault("hooks", {}).setdefault(name, []).append(dict(hook))
        if edit.additional_gids:
            user = process.setdefault("user", {})
            gids = user.setdefault("additionalGids", [])
            gids.extend(g for g in edit.additional_gids if g not in gids)
        if edit.intel_rdt:
            linux["intelRdt"] = dict(edit.intel_rdt)
    if any(edit.mounts for edit in edits):
        # As the CDI library does: parents before what lies below them (a stable sort by depth).
        spec["mounts"].sort(key=lambda m: posixpath.normpath(m["destination"]).count("/"))
