"""Merging the answers of several plugins into one, as NRI's ``pkg/adaptation/result.go`` does.

Plugins are asked in order, and each sees the container as the plugins before it left it:
:class:`Result` applies each answer to the request the next plugin gets (the container being
created, or the resources being set) and to the merged answer the runtime gets, and records
who set what (:class:`~pycri.nri.owners.Owners`), so that two plugins setting the same thing
fail the operation with :class:`~pycri.nri.owners.ConflictError`.

Merged, with upstream's ownership rules, for a container being created (``ContainerAdjustment``):
annotations, mounts, environment, args, OCI hooks, rlimits and CDI devices; under ``linux``:
devices, resources (memory and CPU fields, hugepage limits, device cgroup rules, unified
cgroup v2 entries, blockio and RDT classes, pids limit), cgroups path, OOM score adjustment,
I/O priority, seccomp policy, namespaces, sysctls, network devices, scheduler, RDT and memory
policy. Updates of other containers (``ContainerUpdate``, from CreateContainer,
UpdateContainer and StopContainer answers) merge their resources likewise. A "-" before a
key removes the entry (annotations, mounts, devices, environment, namespaces, sysctls,
network devices); args starting with "" replace earlier plugins' args.

Upstream quirks kept: a removal ("-" key) no later plugin undoes reaches the merged
adjustment for annotations, mounts, sysctls and network devices only; removed environment
variables and devices only drop from what later plugins see. Evictions requested in answers
are not collected (upstream's ``result`` drops them). Deviations: the pids limit of an
update is read from the update (upstream reads it from the container's current resources, so
an update never changes it), and an empty RDT entry is not added to adjustments that have
none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from typing import Any

from google.protobuf.message import Message

from pycri.nri import api_pb2 as nri
from pycri.nri.owners import ConflictError, Owners, go_quote, is_marked_for_removal, mark_for_removal

_MEMORY = (
    ("limit", nri.MemLimit),
    ("reservation", nri.MemReservation),
    ("swap", nri.MemSwapLimit),
    ("kernel", nri.MemKernelLimit),
    ("kernel_tcp", nri.MemTCPLimit),
    ("swappiness", nri.MemSwappiness),
    ("disable_oom_killer", nri.MemDisableOomKiller),
    ("use_hierarchy", nri.MemUseHierarchy),
)
_CPU = (
    ("shares", nri.CPUShares),
    ("quota", nri.CPUQuota),
    ("period", nri.CPUPeriod),
    ("realtime_runtime", nri.CPURealtimeRuntime),
    ("realtime_period", nri.CPURealtimePeriod),
)
_CPUSET = (("cpus", nri.CPUSetCPUs), ("mems", nri.CPUSetMems))
_HOOK_STAGES = ("prestart", "poststart", "poststop", "create_runtime", "create_container", "start_container")
_RDT = (("clos_id", nri.RdtClosID), ("schemata", nri.RdtSchemata), ("enable_monitoring", nri.RdtEnableMonitoring))
_WHOLE_FIELDS = {
    "oom_score_adj": nri.OomScoreAdj,
    "io_priority": nri.IoPriority,
    "seccomp_policy": nri.SeccompPolicy,
    "scheduler": nri.LinuxSched,
    "memory_policy": nri.MemoryPolicy,
}


def _replace(field: Any, items: Iterable[Message]) -> None:
    """Make a repeated message field hold copies of ``items`` (which may be its own elements)."""
    copies = []
    for item in items:
        copy = type(item)()
        copy.CopyFrom(item)
        copies.append(copy)
    del field[:]
    field.extend(copies)


def _copy(message: Message) -> Any:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _empty_resources(resources: nri.LinuxResources) -> None:
    # Go's result starts from LinuxResources{Memory: {}, Cpu: {}}: both present even when empty.
    resources.memory.SetInParent()
    resources.cpu.SetInParent()


class Result:
    """The merged answer to one CreateContainer, UpdateContainer or StopContainer round."""

    def __init__(
        self,
        create: nri.CreateContainerRequest | None = None,
        update: nri.UpdateContainerRequest | None = None,
    ) -> None:
        self.create = create
        self.update = update
        self.owners = Owners()
        self.adjust = nri.ContainerAdjustment()
        self._updates: dict[str, nri.ContainerUpdate] = {}
        self._order: list[str] = []  # containers updated, in the order plugins first asked
        if create is not None:
            container = create.container
            container.hooks.SetInParent()
            _empty_resources(container.linux.resources)
            self.adjust.hooks.SetInParent()
            _empty_resources(self.adjust.linux.resources)
        if update is not None:
            _empty_resources(update.linux_resources)

    @property
    def _id(self) -> str:
        assert self.create is not None
        return self.create.container.id

    # -- answers ---------------------------------------------------------------------------------

    def apply_create(self, reply: nri.CreateContainerResponse, plugin: str) -> None:
        if reply.HasField("adjust"):
            self._adjust(reply.adjust, plugin)
        self.apply_updates(reply.update, plugin)

    def apply_updates(self, updates: Sequence[nri.ContainerUpdate], plugin: str) -> None:
        for requested in updates:
            merged = self._container_update(requested, plugin)
            try:
                self._update_resources(merged, requested, plugin)
            except ConflictError:
                if not requested.ignore_failure:
                    raise

    def create_response(self) -> nri.CreateContainerResponse:
        return nri.CreateContainerResponse(adjust=self.adjust, update=self._other_updates())

    def update_response(self) -> list[nri.ContainerUpdate]:
        """Updates of other containers, then (if a plugin changed it) the container being updated."""
        updates = self._other_updates()
        if self.update is not None and (target := self._updates.get(self.update.container.id)) is not None:
            updates.append(_copy(target))
        return updates

    def stop_response(self) -> list[nri.ContainerUpdate]:
        return self._other_updates()

    def _other_updates(self) -> list[nri.ContainerUpdate]:
        target = self.update.container.id if self.update is not None else None
        return [_copy(self._updates[cid]) for cid in self._order if cid != target]

    # -- adjustments of the container being created -------------------------------------------

    def _adjust(self, adjust: nri.ContainerAdjustment, plugin: str) -> None:
        self._keyed_map(
            adjust.annotations, self.create_container.annotations, self.adjust.annotations, nri.Annotations, plugin, ""
        )
        self._mounts(adjust.mounts, plugin)
        self._env(adjust.env, plugin)
        self._args(list(adjust.args), plugin)
        self._hooks(adjust.hooks, plugin)
        if adjust.HasField("linux"):
            self._linux(adjust.linux, plugin)
        for rlimit in adjust.rlimits:
            self.owners.claim_entry(self._id, nri.Rlimits, rlimit.type, plugin)
            self.create_container.rlimits.append(rlimit)
            self.adjust.rlimits.append(rlimit)
        for device in adjust.CDI_devices:
            # CDI references are only ever added, and only once: the runtime resolves them.
            self.owners.claim_entry(self._id, nri.CdiDevices, device.name, plugin)
            self.adjust.CDI_devices.append(device)

    @property
    def create_container(self) -> nri.Container:
        assert self.create is not None
        return self.create.container

    def _linux(self, linux: nri.LinuxContainerAdjustment, plugin: str) -> None:
        container, reply = self.create_container.linux, self.adjust.linux
        self._devices(linux.devices, plugin)
        if linux.HasField("resources"):
            self._resources(linux.resources, plugin)
        if linux.cgroups_path:
            self.owners.claim(self._id, nri.CgroupsPath, plugin)
            container.cgroups_path = reply.cgroups_path = linux.cgroups_path
        for name in ("oom_score_adj", "io_priority", "seccomp_policy"):
            self._whole(linux, name, plugin, on_container=True)
        self._namespaces(linux.namespaces, plugin)
        self._keyed_map(linux.sysctl, container.sysctl, reply.sysctl, nri.Sysctl, plugin, "")
        self._keyed_map(linux.net_devices, container.net_devices, reply.net_devices, nri.LinuxNetDevices, plugin, None)
        self._whole(linux, "scheduler", plugin, on_container=True)
        if linux.HasField("rdt"):
            self._rdt(linux.rdt, plugin)
        self._whole(linux, "memory_policy", plugin, on_container=False)  # upstream leaves the container's alone

    def _whole(self, linux: nri.LinuxContainerAdjustment, name: str, plugin: str, *, on_container: bool) -> None:
        """A field set as a whole: the OOM score adjustment, I/O priority, seccomp policy, scheduler, memory policy."""
        if not linux.HasField(name):  # type: ignore[arg-type]
            return
        self.owners.claim(self._id, _WHOLE_FIELDS[name], plugin)
        getattr(self.adjust.linux, name).CopyFrom(getattr(linux, name))
        if on_container:
            getattr(self.create_container.linux, name).CopyFrom(getattr(linux, name))

    def _keyed_map(
        self,
        changes: Mapping[str, Any],
        container: MutableMapping[str, Any],
        reply: MutableMapping[str, Any],
        field: int,
        plugin: str,
        removed_value: Any,
    ) -> None:
        """Annotations, sysctls, network devices: "-k" removes k; setting k claims it."""
        if not changes:
            return
        removed = {key for key, marked in map(is_marked_for_removal, changes) if marked}
        for key, value in changes.items():
            if key.startswith("-"):
                continue
            if key in removed:
                self.owners.clear_entry(self._id, field, key, plugin)
                container.pop(key, None)
                self._set(reply, mark_for_removal(key), removed_value)
            self.owners.claim_entry(self._id, field, key, plugin)
            self._set(container, key, value)
            self._set(reply, key, value)
            removed.discard(key)
        for key in removed:
            self._set(reply, mark_for_removal(key), removed_value)

    @staticmethod
    def _set(mapping: MutableMapping[str, Any], key: str, value: Any) -> None:
        if isinstance(value, Message):
            mapping[key].CopyFrom(value)  # a message map: entries are set by copying
        elif value is None:
            mapping[key].Clear()  # Go's nil value in a message map travels as an empty message
        else:
            mapping[key] = value

    def _mounts(self, mounts: Sequence[nri.Mount], plugin: str) -> None:
        if not mounts:
            return
        added = [m for m in mounts if not m.destination.startswith("-")]
        modified = {m.destination for m in added}
        removed = {is_marked_for_removal(m.destination)[0]: m for m in mounts if m.destination.startswith("-")}
        kept = []
        for mount in self.adjust.mounts:
            if mount.destination in removed:
                self.owners.clear_entry(self._id, nri.Mounts, mount.destination, plugin)
            else:
                kept.append(mount)
        _replace(self.adjust.mounts, kept)
        container = self.create_container
        _replace(
            container.mounts, [m for m in container.mounts if m.destination not in removed and m.destination not in modified]
        )
        for mount in added:
            self.owners.claim_entry(self._id, nri.Mounts, mount.destination, plugin)
            self.adjust.mounts.append(mount)
        for key, mount in removed.items():
            if key not in modified:
                self.adjust.mounts.append(mount)
        container.mounts.extend(added)

    def _devices(self, devices: Sequence[nri.LinuxDevice], plugin: str) -> None:
        if not devices:
            return
        added = [d for d in devices if not d.path.startswith("-")]
        modified = {d.path for d in added}
        removed = {is_marked_for_removal(d.path)[0] for d in devices if d.path.startswith("-")}
        kept = []
        for device in self.adjust.linux.devices:
            if device.path in removed:
                self.owners.clear_entry(self._id, nri.Devices, device.path, plugin)
            else:
                kept.append(device)
        _replace(self.adjust.linux.devices, kept)
        container = self.create_container.linux
        _replace(container.devices, [d for d in container.devices if d.path not in removed | modified])
        for device in added:
            self.owners.claim_entry(self._id, nri.Devices, device.path, plugin)
            self.adjust.linux.devices.append(device)
        container.devices.extend(added)

    def _env(self, env: Sequence[nri.KeyValue], plugin: str) -> None:
        if not env:
            return
        added = [e for e in env if not e.key.startswith("-")]
        modified = {e.key for e in added}
        removed = {e.key[1:] for e in env if e.key.startswith("-")}
        kept = []
        for var in self.adjust.env:
            if var.key in removed:
                self.owners.clear_entry(self._id, nri.Env, var.key, plugin)
            else:
                kept.append(var)
        _replace(self.adjust.env, kept)
        container = self.create_container
        remaining = [e for e in container.env if e.partition("=")[0] not in removed | modified]
        del container.env[:]
        container.env.extend(remaining)
        for var in added:
            self.owners.claim_entry(self._id, nri.Env, var.key, plugin)
            self.adjust.env.append(var)
        container.env.extend(f"{var.key}={var.value}" for var in added)

    def _args(self, args: list[str], plugin: str) -> None:
        if not args:
            return
        if args[0] == "":
            self.owners.clear(self._id, nri.Args, plugin)
            args = args[1:]
        self.owners.claim(self._id, nri.Args, plugin)
        del self.adjust.args[:]
        self.adjust.args.extend(args)
        del self.create_container.args[:]
        self.create_container.args.extend(args)

    def _hooks(self, hooks: nri.Hooks, plugin: str) -> None:
        claim = False
        for stage in _HOOK_STAGES:
            if added := getattr(hooks, stage):
                getattr(self.adjust.hooks, stage).extend(added)
                getattr(self.create_container.hooks, stage).extend(added)
                claim = True
        if claim:
            self.owners.accumulate(self._id, nri.OciHooks, plugin)

    def _namespaces(self, namespaces: Sequence[nri.LinuxNamespace], plugin: str) -> None:
        if not namespaces:
            return
        container = self.create_container.linux
        by_type = {n.type: _copy(n) for n in container.namespaces}
        for namespace in namespaces:
            key, marked = is_marked_for_removal(namespace.type)
            self.owners.claim_entry(self._id, nri.Namespace, key, plugin)
            if marked:
                by_type.pop(key, None)
            else:
                by_type[key] = namespace
            self.adjust.linux.namespaces.append(namespace)
        _replace(container.namespaces, by_type.values())

    def _rdt(self, rdt: nri.LinuxRdt, plugin: str) -> None:
        reply = self.adjust.linux.rdt
        if rdt.remove:
            for field in (nri.RdtClosID, nri.RdtSchemata, nri.RdtEnableMonitoring):
                self.owners.clear(self._id, field, plugin)
            reply.Clear()
            reply.remove = True
        for name, field in (
            ("clos_id", nri.RdtClosID),
            ("schemata", nri.RdtSchemata),
            ("enable_monitoring", nri.RdtEnableMonitoring),
        ):
            if rdt.HasField(name):  # type: ignore[arg-type]
                self.owners.claim(self._id, field, plugin)
                getattr(reply, name).CopyFrom(getattr(rdt, name))
                reply.remove = False
        reply.SetInParent()

    def _resources(self, resources: nri.LinuxResources, plugin: str) -> None:
        container = self.create_container.linux.resources
        reply = self.adjust.linux.resources
        self._resource_fields(self._id, resources, (container, reply), plugin)
        for rule in resources.devices:
            container.devices.append(rule)
            reply.devices.append(rule)

    # -- resources, for adjustments and updates alike -----------------------------------------

    def _resource_fields(
        self, cid: str, resources: nri.LinuxResources, targets: Sequence[nri.LinuxResources], plugin: str
    ) -> None:
        for name, field in _MEMORY:
            if resources.memory.HasField(name):  # type: ignore[arg-type]
                self.owners.claim(cid, field, plugin)
                for target in targets:
                    getattr(target.memory, name).CopyFrom(getattr(resources.memory, name))
        for name, field in _CPU:
            if resources.cpu.HasField(name):  # type: ignore[arg-type]
                self.owners.claim(cid, field, plugin)
                for target in targets:
                    getattr(target.cpu, name).CopyFrom(getattr(resources.cpu, name))
        for name, field in _CPUSET:
            if value := getattr(resources.cpu, name):
                self.owners.claim(cid, field, plugin)
                for target in targets:
                    setattr(target.cpu, name, value)
        for limit in resources.hugepage_limits:
            self.owners.claim_entry(cid, nri.HugepageLimits, limit.page_size, plugin)
            for target in targets:
                target.hugepage_limits.append(limit)
        for key, value in resources.unified.items():
            self.owners.claim_entry(cid, nri.CgroupsUnified, key, plugin)
            for target in targets:
                target.unified[key] = value
        for name, field in (("blockio_class", nri.BlockioClass), ("rdt_class", nri.RdtClass)):
            if resources.HasField(name):  # type: ignore[arg-type]
                self.owners.claim(cid, field, plugin)
                for target in targets:
                    getattr(target, name).CopyFrom(getattr(resources, name))
        if resources.HasField("pids"):
            self.owners.claim(cid, nri.PidsLimit, plugin)
            for target in targets:
                target.pids.CopyFrom(resources.pids)

    def _container_update(self, requested: nri.ContainerUpdate, plugin: str) -> nri.ContainerUpdate:
        cid = requested.container_id
        if self.create is not None and self.create.container.id == cid:
            raise ConflictError(f"plugin {go_quote(plugin)} asked update of {go_quote(cid)} during creation")
        if (merged := self._updates.get(cid)) is not None:
            merged.ignore_failure = merged.ignore_failure and requested.ignore_failure
            return merged
        merged = nri.ContainerUpdate(container_id=cid, ignore_failure=requested.ignore_failure)
        _empty_resources(merged.linux.resources)
        self._updates[cid] = merged
        self._order.append(cid)
        return merged

    def _update_resources(self, merged: nri.ContainerUpdate, requested: nri.ContainerUpdate, plugin: str) -> None:
        if not requested.HasField("linux") or not requested.linux.HasField("resources"):
            return
        cid = requested.container_id
        is_target = self.update is not None and self.update.container.id == cid
        # Work on a copy: an update that conflicts (and is allowed to fail) changes nothing.
        resources: nri.LinuxResources = _copy(
            self.update.linux_resources if is_target and self.update else merged.linux.resources
        )
        self._resource_fields(cid, requested.linux.resources, (resources,), plugin)
        merged.linux.resources.CopyFrom(resources)
        if is_target and self.update is not None:
            self.update.linux_resources.CopyFrom(resources)
