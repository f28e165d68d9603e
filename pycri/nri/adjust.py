"""NRI plugins' ``ContainerAdjustment`` applied to an OCI spec (a dict): a pure function.

As containerd/nri's ``pkg/runtime-tools/generate`` does it: a key, destination, path or type
prefixed with ``-`` removes what it names (``api.MarkForRemoval``); annotations, environment
variables, mounts (by destination), devices (by path), rlimits (by type), sysctls and
namespaces (by type) replace what they name, else are added; hooks are appended; resources set
only the values the adjustment carries; ``args`` replaces the command line (a first empty
argument is ``UpdateArgs``' marker). Mounts end up ordered by the depth of their destination,
so a mount is never hidden by a later one of its parent. What pycri cannot apply (a seccomp
policy, network devices, a scheduler, RDT, a memory policy, a block I/O or RDT class) is refused with
:class:`AdjustmentError` rather than silently dropped.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from pycri import errors
from pycri.nri import api_pb2 as nri
from pycri.nri import convert
from pycri.oci import cdi


class AdjustmentError(errors.FailedPrecondition):
    """An adjustment pycri cannot apply."""


def _removal(key: str) -> tuple[str, bool]:
    return (key[1:], True) if key.startswith("-") else (key, False)


def _depth(destination: str) -> int:
    return len([part for part in os.path.normpath(destination).split("/") if part])


def _set_env(env: list[str], name: str, value: str | None) -> list[str]:
    """``env`` with ``name`` set to ``value`` where it was (else at the end), or removed when ``value`` is None."""
    out: list[str] = []
    placed = value is None
    for entry in env:
        if entry.split("=", 1)[0] != name:
            out.append(entry)
        elif not placed:
            out.append(f"{name}={value}")
            placed = True
    if not placed:
        out.append(f"{name}={value}")
    return out


_IOPRIO_CLASSES = {
    nri.IOPRIO_CLASS_RT: "IOPRIO_CLASS_RT",
    nri.IOPRIO_CLASS_BE: "IOPRIO_CLASS_BE",
    nri.IOPRIO_CLASS_IDLE: "IOPRIO_CLASS_IDLE",
}


def _refuse_unsupported(adjust: nri.ContainerAdjustment) -> None:
    linux = adjust.linux
    unsupported = [
        name
        for name, present in (
            ("linux.seccomp_policy", linux.HasField("seccomp_policy")),
            ("linux.net_devices", bool(linux.net_devices)),
            ("linux.scheduler", linux.HasField("scheduler")),
            ("linux.rdt", linux.HasField("rdt")),
            ("linux.memory_policy", linux.HasField("memory_policy")),
            ("linux.resources.blockio_class", linux.resources.HasField("blockio_class")),
            ("linux.resources.rdt_class", linux.resources.HasField("rdt_class")),
        )
        if present
    ]
    if unsupported:
        raise AdjustmentError(f"NRI adjustment: pycri cannot apply {', '.join(unsupported)}")


def _merge_resources(current: dict[str, Any], adjust: nri.LinuxResources) -> dict[str, Any]:
    out = copy.deepcopy(current)
    update = convert.resources_to_oci(adjust)
    for key in ("memory", "cpu", "pids"):
        if key in update:
            out[key] = {**out.get(key, {}), **update[key]}
    if "hugepageLimits" in update:
        by_size = {h["pageSize"]: h for h in out.get("hugepageLimits", [])}
        by_size.update({h["pageSize"]: h for h in update["hugepageLimits"]})
        out["hugepageLimits"] = list(by_size.values())
    if "unified" in update:
        out["unified"] = {**out.get("unified", {}), **update["unified"]}
    if "devices" in update:
        out["devices"] = [*out.get("devices", []), *update["devices"]]
    return out


def apply(spec: dict[str, Any], adjust: nri.ContainerAdjustment, cdi_edits: Sequence[cdi.Edits] = ()) -> dict[str, Any]:
    """A copy of ``spec`` with ``adjust`` applied; ``cdi_edits`` are the resolved edits of ``adjust.CDI_devices``."""
    _refuse_unsupported(adjust)
    out = copy.deepcopy(spec)
    process = out.setdefault("process", {})
    linux = out.setdefault("linux", {})

    if adjust.annotations:
        annotations = out.setdefault("annotations", {})
        for key, value in adjust.annotations.items():
            name, remove = _removal(key)
            if remove:
                annotations.pop(name, None)
            else:
                annotations[name] = value

    if adjust.mounts:
        mounts = list(out.get("mounts", []))
        for mount in adjust.mounts:
            destination, remove = _removal(mount.destination)
            mounts = [m for m in mounts if os.path.normpath(m.get("destination", "")) != os.path.normpath(destination)]
            if not remove:
                entry: dict[str, Any] = {"destination": destination, "type": mount.type, "source": mount.source}
                if mount.options:
                    entry["options"] = list(mount.options)
                mounts.append(entry)
        out["mounts"] = sorted(mounts, key=lambda m: _depth(m.get("destination", "")))

    if adjust.env:
        env = list(process.get("env", []))
        for kv in adjust.env:
            name, remove = _removal(kv.key)
            env = _set_env(env, name, None if remove else kv.value)
        process["env"] = env

    if adjust.HasField("hooks"):
        for key, entries in convert.hooks_to_oci(adjust.hooks).items():
            out.setdefault("hooks", {}).setdefault(key, []).extend(entries)

    if adjust.rlimits:
        rlimits = list(process.get("rlimits", []))
        for rlimit in adjust.rlimits:
            rlimits = [r for r in rlimits if r.get("type") != rlimit.type]
            rlimits.append({"type": rlimit.type, "hard": rlimit.hard, "soft": rlimit.soft})
        process["rlimits"] = rlimits

    if adjust.args:
        args = list(adjust.args)
        if args and args[0] == "":
            args = args[1:]
        if args:
            process["args"] = args

    adj = adjust.linux
    resources = dict(linux.get("resources", {}))
    for device in adj.devices:
        path, remove = _removal(device.path)
        linux["devices"] = [d for d in linux.get("devices", []) if d.get("path") != path]
        if remove:
            continue
        entry = {"path": path, "type": device.type, "major": device.major, "minor": device.minor}
        if device.HasField("file_mode"):
            entry["fileMode"] = device.file_mode.value
        if device.HasField("uid"):
            entry["uid"] = device.uid.value
        if device.HasField("gid"):
            entry["gid"] = device.gid.value
        linux["devices"].append(entry)
        access = "rwm" if device.type != "p" else "rw"
        rule = {"allow": True, "type": device.type, "major": device.major, "minor": device.minor, "access": access}
        resources["devices"] = [*resources.get("devices", []), rule]
    if adj.HasField("resources"):
        resources = _merge_resources(resources, adj.resources)
    if resources:
        linux["resources"] = resources
    if adj.cgroups_path:
        linux["cgroupsPath"] = adj.cgroups_path
    if adj.HasField("oom_score_adj"):
        process["oomScoreAdj"] = adj.oom_score_adj.value
    if adj.HasField("io_priority"):
        klass = getattr(adj.io_priority, "class")
        if klass == nri.IOPRIO_CLASS_NONE:
            process.pop("ioPriority", None)
        else:
            process["ioPriority"] = {"class": _IOPRIO_CLASSES[klass], "priority": adj.io_priority.priority}
    for key, value in adj.sysctl.items():
        name, remove = _removal(key)
        sysctl = linux.setdefault("sysctl", {})
        if remove:
            sysctl.pop(name, None)
        else:
            sysctl[name] = value
    for namespace in adj.namespaces:
        kind, remove = _removal(namespace.type)
        namespaces = [n for n in linux.get("namespaces", []) if n.get("type") != kind]
        if not remove:
            namespaces.append({"type": kind, **({"path": namespace.path} if namespace.path else {})})
        linux["namespaces"] = namespaces

    if cdi_edits:
        cdi.apply(out, list(cdi_edits))
    return out
