"""Gathering what the pure spec builder needs: the user from the image's files, devices, seccomp.

Everything that touches the disk runs in a worker thread; ``build_spec`` then
hands a ``SpecInput`` to ``pycri.oci.container_spec.build``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.containers import devices, users
from pycri.containers.model import Container, State
from pycri.host import cgroups, checks, idmap
from pycri.oci import capabilities, cdi, container_spec, seccomp
from pycri.sandboxes.model import Sandbox

UserTriple = tuple[int, int, list[int]]


@dataclass(frozen=True)
class HostFacts:
    """What the spec depends on about this host, read once."""

    layout: cgroups.Layout
    unified_options: tuple[str, ...]
    swap: bool
    hugetlb: bool

    @classmethod
    def read(cls) -> HostFacts:
        found = cgroups.detect()
        options: tuple[str, ...] = ()
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/mounts").read_text().splitlines():
                parts = line.split()
                if len(parts) > 3 and parts[2] == "cgroup2":
                    options = tuple(o for o in parts[3].split(",") if o in ("nsdelegate", "memory_recursiveprot"))
        unified = found.unified
        if found.layout is cgroups.Layout.V2 and unified is not None:
            swap = Path(unified, "memory.swap.max").exists() or any(Path(unified).glob("*/memory.swap.max"))
            hugetlb = "hugetlb" in Path(unified, "cgroup.controllers").read_text()
        else:
            memory = found.v1.get("memory")
            swap = memory is not None and Path(memory, "memory.memsw.limit_in_bytes").exists()
            hugetlb = "hugetlb" in found.v1
        return cls(found.layout, options, swap, hugetlb)


HOST = HostFacts.read()


def _bind_mounts(config: api.ContainerConfig) -> Iterator[tuple[int, api.Mount]]:
    for i, mount in enumerate(config.mounts):
        if mount.host_path and not (mount.HasField("image") and mount.image.image):
            yield i, mount


def prepare_mount_sources(config: api.ContainerConfig) -> None:
    """Bind-mount sources must exist: a missing host path becomes a plain directory, as with containerd
    and CRI-O, and only an absolute path without '..' (pycri.server.validate refuses the others first)."""
    for i, mount in _bind_mounts(config):
        if not os.path.isabs(mount.host_path):
            raise errors.InvalidArgument(f"config.mounts[{i}].host_path: {mount.host_path!r} must be absolute")
        if ".." in mount.host_path.split("/"):
            raise errors.InvalidArgument(f"config.mounts[{i}].host_path: {mount.host_path!r} must not contain '..'")
        if not os.path.lexists(mount.host_path):
            os.makedirs(mount.host_path, exist_ok=True)


def idmapped_bind_sources(config: api.ContainerConfig, into: Path, userns_path: str) -> dict[int, str]:
    """ID-mapped clones of the bind-mount sources under ``into`` (a pod with its own user namespace).

    kubelet's volumes then belong to the pod's root as they belong to the host's;
    a file system that cannot be ID-mapped is an error naming the mount.
    """
    sources: dict[int, str] = {}
    for i, mount in _bind_mounts(config):
        target = into / str(i)
        into.mkdir(exist_ok=True)
        try:
            idmap.clone(mount.host_path, str(target), userns_path)
        except OSError as exc:
            raise errors.FailedPrecondition(
                f"config.mounts[{i}].host_path: {mount.host_path} cannot be ID-mapped for the pod's user namespace: {exc}"
            ) from exc
        sources[i] = str(target)
    return sources


@dataclass
class Gathered:
    """What ``SpecFactory._gather`` found on the disk and the host: ``SpecInput`` fields."""

    user: container_spec.ResolvedUser
    seccomp: dict[str, Any] | None
    devices: list[tuple[container_spec.HostDevice, str, str]]
    privileged_devices: list[container_spec.HostDevice]
    cdi: list[cdi.Edits]
    bind_sources: dict[int, str]
    nofile: int
    min_oom_score_adj: int
    node_hostname: str


class SpecFactory:
    def __init__(
        self,
        find_container: Callable[[str], Container | None],
        supports_rro: Callable[[str], Awaitable[bool]],
        cdi_spec_dirs: Sequence[str] = (),
    ) -> None:
        self.find_container = find_container
        self.supports_rro = supports_rro  # handler name -> whether its runtime has the "rro" mount option
        self.cdi_spec_dirs = list(cdi_spec_dirs)

    def _target_pid(self, config: api.ContainerConfig) -> int:
        options = config.linux.security_context.namespace_options
        if options.pid != api.TARGET:
            return 0
        target = self.find_container(options.target_id)
        if target is None or target.state is not State.RUNNING:
            raise errors.NotFound(
                f"config.linux.security_context.namespace_options.target_id: container {options.target_id!r} is not running"
            )
        return target.pid

    @staticmethod
    def _gather(container: Container, sandbox: Sandbox, image_config: dict[str, Any], cdi_dirs: Sequence[str]) -> Gathered:
        """Everything the spec needs from the disk and the host, in one worker-thread hop. Blocking."""
        config = container.config
        security = config.linux.security_context
        privileged = security.privileged
        rootfs = str(container.rootfs)
        user = users.resolve_user(rootfs, str(image_config.get("User") or ""), security)
        caps = capabilities.resolve(
            security.capabilities.add_capabilities,
            security.capabilities.drop_capabilities,
            security.capabilities.add_ambient_capabilities,
            privileged=privileged,
            run_as_root=user.uid == 0,
            field="config.linux.security_context.capabilities",
        )
        profile = security.seccomp if security.HasField("seccomp") else None
        prepare_mount_sources(config)
        return Gathered(
            user=user,
            seccomp=seccomp.resolve(
                profile,
                security.seccomp_profile_path,
                caps.get("bounding", []),
                privileged=privileged,
                field="config.linux.security_context.seccomp",
            ),
            devices=devices.resolve_devices(config.devices),
            privileged_devices=devices.all_host_devices() if privileged else [],
            cdi=devices.cdi_edits(config, cdi_dirs),
            bind_sources=(
                idmapped_bind_sources(config, container.dir / "binds", sandbox.userns_path) if sandbox.userns_path else {}
            ),
            nofile=checks.max_nofile(container_spec.DEFAULT_NOFILE),
            min_oom_score_adj=checks.clamp_oom_score_adj(-1000),
            node_hostname=socket.gethostname(),
        )

    async def __call__(
        self, container: Container, sandbox: Sandbox, image_config: dict[str, Any]
    ) -> tuple[dict[str, Any], UserTriple]:
        config = container.config
        if config.linux.security_context.privileged and not sandbox.config.linux.security_context.privileged:
            raise errors.InvalidArgument("config.linux.security_context.privileged: the pod sandbox is not privileged")
        target_pid = self._target_pid(config)
        supports_rro = await self.supports_rro(container.runtime_handler)
        found = await asyncio.to_thread(self._gather, container, sandbox, image_config, self.cdi_spec_dirs)
        spec_input = container_spec.SpecInput(
            container_id=container.id,
            config=config,
            sandbox=container_spec.SandboxInfo(
                id=sandbox.id,
                infra_pid=sandbox.infra_pid,
                netns=sandbox.netns,
                pod_dir=str(sandbox.pod_dir),
                host_network=sandbox.host_network,
                host_ipc=sandbox.host_ipc,
                host_pid=sandbox.host_pid,
                cgroup_parent=sandbox.config.linux.cgroup_parent,
                config=sandbox.config,
                userns_path=sandbox.userns_path,
                userns=sandbox.user_namespace,
            ),
            image_config=image_config,
            rootfs=str(container.rootfs),
            image_mounts={int(i): str(v["source"]) for i, v in container.image_volumes.items() if v.get("source")},
            target_pid=target_pid,
            supports_rro=supports_rro,
            log_path=container.log_path,
            cgroup_v2=HOST.layout is cgroups.Layout.V2,
            host_cgroup_options=HOST.unified_options,
            swap_controller=HOST.swap,
            hugetlb_controller=HOST.hugetlb,
            apparmor_available=False,
            user=found.user,
            seccomp=found.seccomp,
            devices=found.devices,
            privileged_devices=found.privileged_devices,
            cdi=found.cdi,
            bind_sources=found.bind_sources,
            nofile=found.nofile,
            min_oom_score_adj=found.min_oom_score_adj,
            node_hostname=found.node_hostname,
        )
        spec = container_spec.build(spec_input)
        uid, gid, groups = users.effective_user(found.user)
        return spec, (uid, gid, list(groups))
