"""pycri's pods and containers as NRI sees them: ``PodSandbox`` and ``Container`` messages.

Pure functions of a pod's record and a container's record with its OCI spec (the bundle's
``config.json``, a dict): labels, annotations, Linux namespaces, cgroup paths, pids,
mounts, hooks, resources, rlimits, user and state, as containerd's and CRI-O's NRI
domains fill them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycri.nri import api_pb2 as nri

# pycri's container states (pycri.containers.model.State values) -> NRI's.
_STATES = {
    "creating": nri.CONTAINER_UNKNOWN,
    "created": nri.CONTAINER_CREATED,
    "running": nri.CONTAINER_RUNNING,
    "exited": nri.CONTAINER_STOPPED,
    "removing": nri.CONTAINER_STOPPED,
    "unknown": nri.CONTAINER_UNKNOWN,
}


def _int64(value: Any) -> nri.OptionalInt64 | None:
    return nri.OptionalInt64(value=int(value)) if value is not None else None


def _uint64(value: Any) -> nri.OptionalUInt64 | None:
    return nri.OptionalUInt64(value=int(value)) if value is not None else None


def resources_from_oci(res: Mapping[str, Any] | None) -> nri.LinuxResources:
    """An OCI ``linux.resources`` object as NRI's ``LinuxResources``."""
    out = nri.LinuxResources()
    if not res:
        return out
    memory = res.get("memory") or {}
    if memory:
        out.memory.SetInParent()
        for key, field in (("limit", "limit"), ("reservation", "reservation"), ("swap", "swap"), ("kernel", "kernel")):
            value = _int64(memory.get(key))
            if value is not None:
                getattr(out.memory, field).CopyFrom(value)
        if memory.get("kernelTCP") is not None:
            out.memory.kernel_tcp.value = int(memory["kernelTCP"])
        if memory.get("swappiness") is not None:
            out.memory.swappiness.value = int(memory["swappiness"])
        if memory.get("disableOOMKiller") is not None:
            out.memory.disable_oom_killer.value = bool(memory["disableOOMKiller"])
    cpu = res.get("cpu") or {}
    if cpu:
        out.cpu.SetInParent()
        for key, field, wrap in (
            ("shares", "shares", _uint64),
            ("quota", "quota", _int64),
            ("period", "period", _uint64),
            ("realtimeRuntime", "realtime_runtime", _int64),
            ("realtimePeriod", "realtime_period", _uint64),
        ):
            wrapped: nri.OptionalInt64 | nri.OptionalUInt64 | None = wrap(cpu.get(key))
            if wrapped is not None:
                getattr(out.cpu, field).CopyFrom(wrapped)
        out.cpu.cpus = cpu.get("cpus", "")
        out.cpu.mems = cpu.get("mems", "")
    for limit in res.get("hugepageLimits") or []:
        out.hugepage_limits.add(page_size=limit.get("pageSize", ""), limit=int(limit.get("limit", 0)))
    out.unified.update(res.get("unified") or {})
    for rule in res.get("devices") or []:
        device = out.devices.add(allow=bool(rule.get("allow")), type=rule.get("type", ""), access=rule.get("access", ""))
        if rule.get("major") is not None:
            device.major.value = int(rule["major"])
        if rule.get("minor") is not None:
            device.minor.value = int(rule["minor"])
    pids = res.get("pids") or {}
    if pids.get("limit") is not None:
        out.pids.limit = int(pids["limit"])
    return out


def resources_from_cri(res: Any) -> nri.LinuxResources:
    """A CRI ``LinuxContainerResources`` message as NRI's ``LinuxResources``."""
    out = nri.LinuxResources()
    out.memory.SetInParent()
    out.cpu.SetInParent()
    if res.memory_limit_in_bytes:
        out.memory.limit.value = res.memory_limit_in_bytes
    if res.memory_swap_limit_in_bytes:
        out.memory.swap.value = res.memory_swap_limit_in_bytes
    if res.cpu_shares:
        out.cpu.shares.value = res.cpu_shares
    if res.cpu_quota:
        out.cpu.quota.value = res.cpu_quota
    if res.cpu_period:
        out.cpu.period.value = res.cpu_period
    out.cpu.cpus = res.cpuset_cpus
    out.cpu.mems = res.cpuset_mems
    for limit in res.hugepage_limits:
        out.hugepage_limits.add(page_size=limit.page_size, limit=limit.limit)
    out.unified.update(dict(res.unified))
    return out


def resources_to_oci(res: nri.LinuxResources) -> dict[str, Any]:
    """NRI's ``LinuxResources`` as an OCI ``linux.resources`` object, with only what is set."""
    out: dict[str, Any] = {}
    if res.HasField("memory"):
        memory: dict[str, Any] = {}
        for field, key in (
            ("limit", "limit"),
            ("reservation", "reservation"),
            ("swap", "swap"),
            ("kernel", "kernel"),
            ("kernel_tcp", "kernelTCP"),
            ("swappiness", "swappiness"),
            ("disable_oom_killer", "disableOOMKiller"),
        ):
            if res.memory.HasField(field):  # type: ignore[arg-type]
                memory[key] = getattr(res.memory, field).value
        if memory:
            out["memory"] = memory
    if res.HasField("cpu"):
        cpu: dict[str, Any] = {}
        for field, key in (
            ("shares", "shares"),
            ("quota", "quota"),
            ("period", "period"),
            ("realtime_runtime", "realtimeRuntime"),
            ("realtime_period", "realtimePeriod"),
        ):
            if res.cpu.HasField(field):  # type: ignore[arg-type]
                cpu[key] = getattr(res.cpu, field).value
        if res.cpu.cpus:
            cpu["cpus"] = res.cpu.cpus
        if res.cpu.mems:
            cpu["mems"] = res.cpu.mems
        if cpu:
            out["cpu"] = cpu
    if res.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit} for h in res.hugepage_limits]
    if res.unified:
        out["unified"] = dict(res.unified)
    if res.devices:
        devices = []
        for d in res.devices:
            rule: dict[str, Any] = {"allow": d.allow, "access": d.access}
            if d.type:
                rule["type"] = d.type
            if d.HasField("major"):
                rule["major"] = d.major.value
            if d.HasField("minor"):
                rule["minor"] = d.minor.value
            devices.append(rule)
        out["devices"] = devices
    if res.HasField("pids"):
        out["pids"] = {"limit": res.pids.limit}
    return out


def _namespaces(spec_namespaces: list[dict[str, Any]]) -> list[nri.LinuxNamespace]:
    return [nri.LinuxNamespace(type=ns.get("type", ""), path=ns.get("path", "")) for ns in spec_namespaces]


def _hooks(hooks: Mapping[str, Any]) -> nri.Hooks:
    out = nri.Hooks()
    for key, field in (
        ("prestart", "prestart"),
        ("createRuntime", "create_runtime"),
        ("createContainer", "create_container"),
        ("startContainer", "start_container"),
        ("poststart", "poststart"),
        ("poststop", "poststop"),
    ):
        for hook in hooks.get(key) or []:
            added = getattr(out, field).add(path=hook.get("path", ""), args=hook.get("args", []), env=hook.get("env", []))
            if hook.get("timeout") is not None:
                added.timeout.value = int(hook["timeout"])
    return out


def hooks_to_oci(hooks: nri.Hooks) -> dict[str, list[dict[str, Any]]]:
    """NRI's ``Hooks`` as the OCI ``hooks`` object (only the stages that have some)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, field in (
        ("prestart", "prestart"),
        ("createRuntime", "create_runtime"),
        ("createContainer", "create_container"),
        ("startContainer", "start_container"),
        ("poststart", "poststart"),
        ("poststop", "poststop"),
    ):
        for hook in getattr(hooks, field):
            entry: dict[str, Any] = {"path": hook.path}
            if hook.args:
                entry["args"] = list(hook.args)
            if hook.env:
                entry["env"] = list(hook.env)
            if hook.HasField("timeout"):
                entry["timeout"] = hook.timeout.value
            out.setdefault(key, []).append(entry)
    return out


def pod_sandbox(
    *,
    sandbox_id: str,
    config: Any,
    runtime_handler: str,
    cgroups_path: str,
    netns: str,
    pid: int,
    ips: list[str],
) -> nri.PodSandbox:
    """A pod as NRI's ``PodSandbox``: ``config`` is its CRI ``PodSandboxConfig``."""
    md = config.metadata
    pod = nri.PodSandbox(
        id=sandbox_id,
        name=md.name,
        uid=md.uid,
        namespace=md.namespace,
        labels=dict(config.labels),
        annotations=dict(config.annotations),
        runtime_handler=runtime_handler,
        pid=pid,
        ips=ips,
    )
    linux = pod.linux
    linux.SetInParent()
    linux.cgroup_parent = config.linux.cgroup_parent
    linux.cgroups_path = cgroups_path
    options = config.linux.security_context.namespace_options
    namespaces = []
    if netns:
        namespaces.append(nri.LinuxNamespace(type="network", path=netns))
    if pid and options.ipc != 2:  # NODE == 2
        namespaces.append(nri.LinuxNamespace(type="ipc", path=f"/proc/{pid}/ns/ipc"))
    if pid and options.network != 2:
        namespaces.append(nri.LinuxNamespace(type="uts", path=f"/proc/{pid}/ns/uts"))
    linux.namespaces.extend(namespaces)
    if config.linux.HasField("resources"):
        linux.pod_resources.CopyFrom(resources_from_cri(config.linux.resources))
    if config.linux.HasField("overhead"):
        linux.pod_overhead.CopyFrom(resources_from_cri(config.linux.overhead))
    return pod


def container(
    *,
    container_id: str,
    sandbox_id: str,
    config: Any,
    state: str,
    spec: Mapping[str, Any] | None,
    pid: int = 0,
    created_at: int = 0,
    started_at: int = 0,
    finished_at: int = 0,
    exit_code: int = 0,
    reason: str = "",
    message: str = "",
    image_name: str = "",
    image_id: str = "",
) -> nri.Container:
    """A container as NRI's ``Container``: ``config`` is its CRI ``ContainerConfig``, ``spec`` its OCI spec."""
    spec = spec or {}
    process = spec.get("process") or {}
    linux_spec = spec.get("linux") or {}
    out = nri.Container(
        id=container_id,
        pod_sandbox_id=sandbox_id,
        name=config.metadata.name,
        state=_STATES.get(state, nri.CONTAINER_UNKNOWN),
        labels=dict(config.labels),
        annotations=dict(spec.get("annotations") or config.annotations),
        args=list(process.get("args") or []),
        env=list(process.get("env") or []),
        pid=pid,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        exit_code=exit_code,
        status_reason=reason,
        status_message=message,
    )
    for mount in spec.get("mounts") or []:
        out.mounts.add(
            destination=mount.get("destination", ""),
            type=mount.get("type", ""),
            source=mount.get("source", ""),
            options=mount.get("options") or [],
        )
    if spec.get("hooks"):
        out.hooks.CopyFrom(_hooks(spec["hooks"]))
    linux = out.linux
    linux.SetInParent()
    linux.namespaces.extend(_namespaces(linux_spec.get("namespaces") or []))
    for device in linux_spec.get("devices") or []:
        added = linux.devices.add(
            path=device.get("path", ""),
            type=device.get("type", ""),
            major=int(device.get("major", 0)),
            minor=int(device.get("minor", 0)),
        )
        if device.get("fileMode") is not None:
            added.file_mode.value = int(device["fileMode"])
        if device.get("uid") is not None:
            added.uid.value = int(device["uid"])
        if device.get("gid") is not None:
            added.gid.value = int(device["gid"])
    linux.resources.CopyFrom(resources_from_oci(linux_spec.get("resources")))
    if process.get("oomScoreAdj") is not None:
        linux.oom_score_adj.value = int(process["oomScoreAdj"])
    linux.cgroups_path = linux_spec.get("cgroupsPath", "")
    linux.sysctl.update(linux_spec.get("sysctl") or {})
    for rlimit in process.get("rlimits") or []:
        out.rlimits.add(type=rlimit.get("type", ""), hard=int(rlimit.get("hard", 0)), soft=int(rlimit.get("soft", 0)))
    user = process.get("user") or {}
    if user:
        out.user.uid = int(user.get("uid", 0))
        out.user.gid = int(user.get("gid", 0))
        out.user.additional_gids.extend(int(g) for g in user.get("additionalGids") or [])
    for device in config.CDI_devices:
        out.CDI_devices.add(name=device.name)
    if image_name or image_id:
        out.image.name = image_name
        out.image.digest = image_id
    return out
