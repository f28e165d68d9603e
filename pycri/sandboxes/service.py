"""Pod sandbox lifecycle: run, stop, remove, status, list, and recovery after a restart.

RunPodSandbox is a sequence of steps (pod dir and files, /dev/shm, network
namespace and CNI, infra container), each recorded in the state database
before the next starts. Any failure, or a cancelled call, undoes the steps
taken in reverse, so nothing is left half-made; after a crash the same
record tells recovery what to undo. Stop and remove are idempotent, also for
unknown IDs, as kubelet expects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.config import Config
from pycri.host import checks, mounts
from pycri.host import userns as host_userns
from pycri.host.tree import remove_tree
from pycri.oci import userns
from pycri.oci.interface import ConmonError, RuntimeCommandError, RuntimeContainer, RuntimeImpl
from pycri.oci.spec import InfraOptions, Namespaces, infra_spec, sysctl_errors
from pycri.procs import same_process, start_time, wait_pid
from pycri.retry import Retrier
from pycri.sandboxes import files
from pycri.sandboxes.model import (
    STEP_DIR,
    STEP_INFRA,
    STEP_NETNS,
    STEP_NETWORK,
    STEP_SHM,
    STEP_USERNS,
    Sandbox,
    State,
)
from pycri.sandboxes.registry import SandboxRegistry
from pycri.store import Store

if TYPE_CHECKING:
    from pycri.containers.nri import NRI

log = logging.getLogger("pycri.sandboxes")

SHM_SIZE = 64 * 1024 * 1024
INFRA_OOM_SCORE_ADJ = -998
STOP_WAIT = 10.0


class PodNetwork(Protocol):
    """Network set-up for pods (pycri.network.pod implements it with CNI)."""

    async def plan(self, sandbox: Sandbox) -> None:
        """Choose ``netns``, ``network_name`` and ``network_result`` (the config); create nothing."""

    async def setup(self, sandbox: Sandbox) -> None:
        """Create the planned ``netns`` and attach it; fill ``ips`` and ``network_result``."""

    async def teardown(self, sandbox: Sandbox) -> None:
        """Detach and delete the network namespace; idempotent, also when the netns is gone."""


class ContainerHooks(Protocol):
    async def stop_containers(self, sandbox_id: str) -> None: ...

    async def remove_containers(self, sandbox_id: str) -> None: ...


class NoContainers:
    async def stop_containers(self, sandbox_id: str) -> None:
        return None

    async def remove_containers(self, sandbox_id: str) -> None:
        return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def match_labels(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Whether ``labels`` has every key of ``selector`` with its value (a C-level subset test on dicts)."""
    return selector.items() <= labels.items()


class SandboxService:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        handlers: Mapping[str, RuntimeImpl],
        network: PodNetwork,
        *,
        registry: SandboxRegistry | None = None,
        containers: ContainerHooks | None = None,
        userns_supported: Callable[[str], Awaitable[bool]] | None = None,
        retired_handler: Callable[[str, str, str], RuntimeImpl] | None = None,
        nri: NRI | None = None,
    ) -> None:
        self.cfg = cfg
        # NRI plugins' hooks (None, or disabled: no hooks); the pods whose StopPodSandbox they were told of.
        self.nri = nri
        self._nri_stopped: set[str] = set()
        self.store = store
        self.handlers = handlers
        self.network = network
        self.registry = registry if registry is not None else SandboxRegistry()
        self.containers: ContainerHooks = containers if containers is not None else NoContainers()
        self.pods_dir = Path(cfg.state_dir) / "pods"
        self.sandboxes: dict[str, Sandbox] = self.registry.sandboxes
        self._locks: dict[str, asyncio.Lock] = {}
        self._names = asyncio.Lock()
        # Whether a handler may run pods with their own user namespace (None: none may).
        self.userns_supported = userns_supported
        # Failure injection for tests: called with each step's name before it runs.
        self.before_step: Callable[[str], None] | None = None
        # (name, path, root) -> the handler of that name once the configuration has dropped it.
        self.retired_handler = retired_handler
        self._retired: dict[str, RuntimeImpl] = {}
        # Clean-ups that failed, retried in the background until they succeed (or the pod is removed).
        self.retrier = Retrier(log)

    async def close(self) -> None:
        await self.retrier.close()

    # -- helpers ------------------------------------------------------------------------------

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks.setdefault(sandbox_id, asyncio.Lock())

    def find(self, id_or_prefix: str) -> Sandbox | None:
        """A sandbox by its ID or a unique prefix of it."""
        return self.registry.find(id_or_prefix)

    def get(self, id_or_prefix: str) -> Sandbox:
        return self.registry.get(id_or_prefix)

    @staticmethod
    def infra(sandbox: Sandbox) -> RuntimeContainer:
        """The pod's infra container, as its runtime knows it."""
        return RuntimeContainer(
            id=sandbox.id,
            bundle=sandbox.infra_bundle,
            persist_dir=sandbox.pod_dir / "infra-conmon",
            log_path=str(sandbox.pod_dir / "infra.log"),
        )

    def handler(self, name: str) -> RuntimeImpl:
        """A configured handler, for a new pod."""
        runtime = self.handlers.get(name or self.cfg.default_runtime)
        if runtime is None:
            raise errors.InvalidArgument(f"runtime_handler: unknown handler {name!r} (known: {', '.join(self.handlers)})")
        return runtime

    def runtime_of(self, sandbox: Sandbox) -> RuntimeImpl:
        """The handler of an existing pod: the configured one, or, once the configuration has dropped it,
        one rebuilt from the binary and state root the pod's record remembers."""
        configured = self.handlers.get(sandbox.runtime_handler)
        if configured is not None:
            return configured
        name = sandbox.runtime_handler
        if self.retired_handler is None or not sandbox.runtime_path:
            raise errors.FailedPrecondition(
                f"pod sandbox {sandbox.id}: runtime handler {name!r} is no longer configured; add it back to manage the pod"
            )
        if name not in self._retired:
            log.warning(
                "runtime handler %r is no longer configured; its pods use %s (root %s)",
                name,
                sandbox.runtime_path,
                sandbox.runtime_root,
            )
            self._retired[name] = self.retired_handler(name, sandbox.runtime_path, sandbox.runtime_root)
        return self._retired[name]

    async def _save(self, sandbox: Sandbox) -> None:
        await self.store.sandboxes.put(sandbox.to_row())

    def _step(self, name: str) -> None:
        if self.before_step is not None:
            self.before_step(name)

    # -- run ------------------------------------------------------------------------------------

    def _validate(self, config: api.PodSandboxConfig, runtime_handler: str) -> userns.UserNamespace | None:
        """Checks the request; returns the pod's own user namespace, if it asks for one."""
        md = config.metadata
        for field_name in ("name", "namespace", "uid"):
            if not getattr(md, field_name):
                raise errors.InvalidArgument(f"config.metadata.{field_name}: required")
        self.handler(runtime_handler)
        options = config.linux.security_context.namespace_options
        if options.network == api.TARGET or options.ipc == api.TARGET:
            raise errors.InvalidArgument("config.linux.security_context.namespace_options: TARGET is only valid for pid")
        if options.pid == api.TARGET:
            raise errors.InvalidArgument(
                "config.linux.security_context.namespace_options.pid: TARGET is for containers, not pods"
            )
        own_userns = userns.from_options(options, "config.linux.security_context.namespace_options")
        problems = sysctl_errors(dict(config.linux.sysctls), options.network == api.NODE, options.ipc == api.NODE)
        if problems:
            raise errors.InvalidArgument("config.linux.sysctls: " + "; ".join(problems))
        for i, mapping in enumerate(config.port_mappings):
            if not 0 < mapping.container_port < 65536 or not 0 <= mapping.host_port < 65536:
                raise errors.InvalidArgument(f"config.port_mappings[{i}]: ports must be within 1..65535")
        return own_userns

    def _no_nri_sync(self) -> contextlib.AbstractAsyncContextManager[None]:
        """No NRI plugin joins (is synchronized) while a pod is made or removed within."""
        return self.nri.no_sync() if self.nri is not None and self.nri.enabled else contextlib.nullcontext()

    async def run(self, config: api.PodSandboxConfig, runtime_handler: str) -> Sandbox:
        async with self._no_nri_sync():
            return await self._run(config, runtime_handler)

    async def _run(self, config: api.PodSandboxConfig, runtime_handler: str) -> Sandbox:
        if self._validate(config, runtime_handler) is not None:
            handler = runtime_handler or self.cfg.default_runtime
            if self.userns_supported is None or not await self.userns_supported(handler):
                raise errors.FailedPrecondition(
                    "config.linux.security_context.namespace_options.userns_options: this node cannot run pods with "
                    "their own user namespace (pycri's log says why: ID-mapped mounts, kernel or directory modes)"
                )
        sandbox_id = secrets.token_hex(32)
        sandbox = Sandbox(
            id=sandbox_id,
            config=config,
            state=State.CREATING,
            created_at=time.time_ns(),
            runtime_handler=runtime_handler or self.cfg.default_runtime,
            pod_dir=self.pods_dir / sandbox_id,
        )
        handler_config = self.cfg.runtimes.get(sandbox.runtime_handler)
        if handler_config is not None:
            sandbox.runtime_path, sandbox.runtime_root = handler_config.path, handler_config.root
        md = config.metadata
        async with self._names:
            for other in self.sandboxes.values():
                if other.name_released:
                    continue
                om = other.metadata
                if (om.name, om.namespace, om.uid, om.attempt) == (md.name, md.namespace, md.uid, md.attempt):
                    raise errors.AlreadyExists(
                        f"pod sandbox name {md.name!r} (namespace {md.namespace!r}, uid {md.uid!r}, attempt {md.attempt}) "
                        f"is taken by {other.id}"
                    )
            try:
                await self.store.sandboxes.insert(sandbox.to_row())
            except sqlite3.IntegrityError as exc:
                raise errors.AlreadyExists(f"pod sandbox {md.name!r} in {md.namespace!r} exists: {exc}") from None
            self.sandboxes[sandbox_id] = sandbox
        async with self.lock(sandbox_id):
            try:
                await self._build(sandbox)
            except BaseException as exc:
                log.warning("RunPodSandbox %s (%s/%s) failed: %s; undoing", sandbox_id, md.namespace, md.name, exc)
                await asyncio.shield(self._undo_run(sandbox))
                if isinstance(exc, (errors.CRIError, asyncio.CancelledError)):
                    raise
                if isinstance(exc, (ConmonError, RuntimeCommandError)):
                    raise errors.Internal(f"infra container of pod {md.namespace}/{md.name}: {exc}") from exc
                raise
        log.info("pod %s/%s running as %s (%s)", md.namespace, md.name, sandbox_id, ", ".join(sandbox.ips) or "host network")
        return sandbox

    async def _undo_run(self, sandbox: Sandbox) -> None:
        """Undo a failed run; what cannot be undone now is kept listed NOTREADY, without its name."""
        try:
            await self._destroy(sandbox)
        except Exception as exc:
            md = sandbox.metadata
            log.error(
                "pod sandbox %s (%s/%s): undoing the failed RunPodSandbox failed: %s; "
                "listed NOTREADY (its name released) until its removal or a retry succeeds",
                sandbox.id,
                md.namespace,
                md.name,
                exc,
            )
            await self._keep_leftover(sandbox)

    async def _keep_leftover(self, sandbox: Sandbox) -> None:
        """``sandbox`` could not be undone: list it NOTREADY for kubelet to remove, free its name, and
        retry the undo in the background."""
        sandbox.state = State.NOTREADY
        sandbox.name_released = True
        try:
            await self._save(sandbox)
        except Exception as exc:  # the row keeps CREATING: recovery undoes it again
            log.error("pod sandbox %s: cannot record it as left over: %s", sandbox.id, exc)
        self.retrier.schedule(
            sandbox.id, f"pod sandbox {sandbox.id}: undoing what is left of it", lambda: self._retry_undo(sandbox)
        )

    async def _retry_undo(self, sandbox: Sandbox) -> None:
        async with self.lock(sandbox.id):
            if sandbox.id in self.sandboxes:
                await self._destroy(sandbox)

    async def _build(self, sandbox: Sandbox) -> None:
        config = sandbox.config
        self._step(STEP_DIR)
        await asyncio.to_thread(self._write_pod_dir, sandbox)
        sandbox.steps.append(STEP_DIR)
        await self._save(sandbox)

        # Each step is recorded before it runs (its undo copes with it not having happened),
        # so neither a failure nor a crash nor a cancellation midway leaves it behind.
        if sandbox.user_namespace is not None:
            self._step(STEP_USERNS)
            sandbox.userns_path = str(sandbox.pod_dir / "userns")
            sandbox.steps.append(STEP_USERNS)
            await self._save(sandbox)
            await host_userns.pin(Path(sandbox.userns_path), sandbox.user_namespace)

        if not sandbox.host_ipc:
            self._step(STEP_SHM)
            sandbox.steps.append(STEP_SHM)
            await self._save(sandbox)
            await asyncio.to_thread(self._mount_shm, sandbox)

        if not sandbox.host_network:
            self._step(STEP_NETNS)
            await self.network.plan(sandbox)
            sandbox.steps.append(STEP_NETNS)
            await self._save(sandbox)
            await self.network.setup(sandbox)
            sandbox.steps.append(STEP_NETWORK)
            await self._save(sandbox)
            self._step(STEP_NETWORK)
        await asyncio.to_thread(self._write_hosts, sandbox)

        self._step(STEP_INFRA)
        runtime = self.handler(sandbox.runtime_handler)
        parent = config.linux.cgroup_parent.rstrip("/") or "/pycri"
        sandbox.cgroups_path = f"{parent}/pycri-{sandbox.id}"
        spec = infra_spec(self._infra_options(sandbox))
        await asyncio.to_thread(self._write_bundle, sandbox, spec)
        sandbox.steps.append(STEP_INFRA)
        await self._save(sandbox)
        infra = self.infra(sandbox)
        sandbox.infra_pid = await runtime.create(infra)
        sandbox.infra_pid_start = start_time(sandbox.infra_pid)
        await runtime.start(infra)
        if self.nri is not None:  # the pod stays CREATING (unlisted) while plugins look at it; a refusal undoes it
            await self.nri.run_pod_sandbox(sandbox)
        sandbox.state = State.READY
        await self._save(sandbox)

    def _infra_options(self, sandbox: Sandbox) -> InfraOptions:
        config = sandbox.config
        ns: dict[str, str] = {"mount": ""}
        if not sandbox.host_network:
            ns["network"] = sandbox.netns
            ns["uts"] = ""
        if not sandbox.host_ipc:
            ns["ipc"] = ""
        if not sandbox.host_pid:
            ns["pid"] = ""
        sc = config.linux.security_context
        mappings = sandbox.user_namespace
        uid = sc.run_as_user.value if sc.HasField("run_as_user") else 65535
        gid = sc.run_as_group.value if sc.HasField("run_as_group") else 65535
        if mappings is not None:
            ns["user"] = sandbox.userns_path
            # The infra process needs no identity of its own: in a short mapping it runs as the pod's root.
            if mappings.uid.to_host(uid) is None or mappings.gid.to_host(gid) is None:
                uid = gid = 0
        return InfraOptions(
            infra_command=self.cfg.infra_command,
            hostname=config.hostname,
            namespaces=Namespaces(ns),
            cgroups_path=sandbox.cgroups_path,
            sysctls=dict(config.linux.sysctls),
            oom_score_adj=checks.clamp_oom_score_adj(INFRA_OOM_SCORE_ADJ),
            uid=uid,
            gid=gid,
            nofile=checks.max_nofile(1024),
            annotations={"io.kubernetes.cri.sandbox-id": sandbox.id, "io.kubernetes.cri.container-type": "sandbox"},
            shm_path=str(sandbox.shm_path) if not sandbox.host_ipc else "/dev/shm",
            id_mappings=mappings.to_spec() if mappings is not None else {},
        )

    def _write_pod_dir(self, sandbox: Sandbox) -> None:
        config = sandbox.config
        sandbox.pod_dir.mkdir(parents=True, exist_ok=False, mode=0o711)
        hostname = config.hostname or socket.gethostname()
        (sandbox.pod_dir / "hostname").write_text(files.hostname_file(hostname))
        dns = config.dns_config
        if dns.servers or dns.searches or dns.options:
            resolv = files.resolv_conf(dns.servers, dns.searches, dns.options)
        else:
            resolv = _read("/etc/resolv.conf")
        (sandbox.pod_dir / "resolv.conf").write_text(resolv)
        if config.log_directory:
            Path(config.log_directory).mkdir(parents=True, exist_ok=True)

    def _write_hosts(self, sandbox: Sandbox) -> None:
        hostname = sandbox.config.hostname or socket.gethostname()
        host_hosts = _read("/etc/hosts") if sandbox.host_network else None
        (sandbox.pod_dir / "hosts").write_text(files.hosts_file(hostname, sandbox.ips, host_hosts))

    def _mount_shm(self, sandbox: Sandbox) -> None:
        sandbox.shm_path.mkdir(exist_ok=True)
        flags = mounts.MS_NOSUID | mounts.MS_NODEV | mounts.MS_NOEXEC
        mounts.mount("shm", str(sandbox.shm_path), "tmpfs", flags, f"mode=1777,size={SHM_SIZE}")

    def _write_bundle(self, sandbox: Sandbox, spec: dict[str, Any]) -> None:
        bundle = sandbox.infra_bundle
        (bundle / "rootfs").mkdir(parents=True, exist_ok=True)
        mappings = sandbox.user_namespace
        if mappings is not None:  # the runtime makes its mount points there as the pod's root
            os.chown(bundle / "rootfs", *mappings.root)
        (bundle / "config.json").write_text(json.dumps(spec))

    @staticmethod
    def _remove_pod_dir(path: Path) -> None:
        """Delete a pod directory, after unmounting what is mounted in it (shm, the user namespace)."""
        remaining = mounts.unmount_below(str(path))
        if remaining:
            raise errors.Internal(f"cannot remove {path}: still mounted: {', '.join(remaining)}")
        remove_tree(path, ignore_errors=True)

    # -- stop / remove --------------------------------------------------------------------------

    def infra_alive(self, sandbox: Sandbox) -> bool:
        """Whether the infra process pycri started still runs (its pid may name another process by now)."""
        return same_process(sandbox.infra_pid, sandbox.infra_pid_start)

    async def _kill_infra(self, sandbox: Sandbox) -> None:
        if sandbox.state is State.NOTREADY and not self.infra_alive(sandbox):
            return  # already dead: no `runtime state` round trip
        runtime, infra = self.runtime_of(sandbox), self.infra(sandbox)
        current = await runtime.state(infra)
        if current is None or current.status == "stopped":
            return
        with contextlib.suppress(RuntimeCommandError):
            await runtime.kill(infra, "KILL", all_processes=False)
        pid = current.pid or sandbox.infra_pid
        if pid and not await wait_pid(pid, STOP_WAIT):
            raise errors.Internal(f"infra process {pid} of pod sandbox {sandbox.id} did not exit after SIGKILL")

    async def stop(self, id_or_prefix: str) -> None:
        sandbox = self.find(id_or_prefix)
        if sandbox is None:
            return  # already gone: success, as kubelet expects
        async with self.lock(sandbox.id):
            await self.containers.stop_containers(sandbox.id)
            await self._nri_stop(sandbox)
            if STEP_INFRA in sandbox.steps:
                await self._kill_infra(sandbox)
            if not sandbox.network_torn_down and STEP_NETNS in sandbox.steps:
                await self.network.teardown(sandbox)
                sandbox.network_torn_down = True
            if sandbox.state is not State.NOTREADY:
                sandbox.state = State.NOTREADY
                log.info("pod %s/%s (%s) stopped", sandbox.metadata.namespace, sandbox.metadata.name, sandbox.id)
            await self._save(sandbox)

    async def remove(self, id_or_prefix: str) -> None:
        """Remove the pod's containers, then undo the pod's steps and forget it.

        Ordered: the pod's own steps are undone only once every container of it is gone (its record
        included, which refers to the pod's). A removal that fails part-way leaves what remains
        recorded, and succeeds when retried.
        """
        sandbox = self.find(id_or_prefix)
        if sandbox is None:
            return
        async with self._no_nri_sync():
            await self.containers.remove_containers(sandbox.id)  # raises while any of them is not cleaned up
            async with self.lock(sandbox.id):
                if sandbox.id not in self.sandboxes:
                    return  # removed meanwhile
                await self._nri_stop(sandbox)
                if self.nri is not None:
                    await self.nri.remove_pod_sandbox(sandbox)
                await self._destroy(sandbox)
                self._nri_stopped.discard(sandbox.id)
        log.info("pod %s/%s (%s) removed", sandbox.metadata.namespace, sandbox.metadata.name, sandbox.id)

    async def _nri_stop(self, sandbox: Sandbox) -> None:
        """Tell NRI plugins the pod stops, once: its containers are stopped, its infra container still runs."""
        if self.nri is not None and sandbox.id not in self._nri_stopped:
            self._nri_stopped.add(sandbox.id)
            await self.nri.stop_pod_sandbox(sandbox)

    async def _destroy(self, sandbox: Sandbox) -> None:
        """Undo every step ``sandbox`` records, in reverse, then forget it. Safe to repeat after a failure."""
        if STEP_INFRA in sandbox.steps:
            runtime = self.runtime_of(sandbox)
            await self._kill_infra(sandbox)
            await runtime.delete(self.infra(sandbox), force=True)
            await runtime.remove_leftovers(self.infra(sandbox))
        if STEP_NETNS in sandbox.steps and not sandbox.network_torn_down:
            await self.network.teardown(sandbox)
            sandbox.network_torn_down = True
            await self._save(sandbox)  # a retry after a later step failed does not run the CNI DEL again
        if STEP_SHM in sandbox.steps:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(mounts.unmount, str(sandbox.shm_path))
        if STEP_USERNS in sandbox.steps:
            await asyncio.to_thread(host_userns.release, Path(sandbox.userns_path))
        if STEP_DIR in sandbox.steps or sandbox.pod_dir.exists():
            await asyncio.to_thread(self._remove_pod_dir, sandbox.pod_dir)
        try:
            await self.store.sandboxes.delete(sandbox.id)
        except sqlite3.IntegrityError as exc:  # a container's record still refers to it (removal removes those first)
            raise errors.Internal(f"pod sandbox {sandbox.id}: its containers' records remain: {exc}") from exc
        self.sandboxes.pop(sandbox.id, None)
        self._locks.pop(sandbox.id, None)

    async def update_resources(
        self, id_or_prefix: str, resources: api.LinuxContainerResources | None, overhead: api.LinuxContainerResources | None
    ) -> None:
        """Record the pod-level resources kubelet has applied to the pod cgroup (after a resize)."""
        sandbox = self.get(id_or_prefix)
        async with self.lock(sandbox.id):
            if self.nri is not None:
                await self.nri.update_pod_sandbox(sandbox, overhead, resources)
            if resources is not None:
                sandbox.config.linux.resources.CopyFrom(resources)
            if overhead is not None:
                sandbox.config.linux.overhead.CopyFrom(overhead)
            await self._save(sandbox)
            if self.nri is not None:
                await self.nri.post_update_pod_sandbox(sandbox)

    # -- queries ----------------------------------------------------------------------------------

    def list(self, filt: api.PodSandboxFilter | None) -> Iterable[Sandbox]:
        """The sandboxes ``filt`` selects, oldest first (the filter read once, not per sandbox)."""
        found = sorted((s for s in self.sandboxes.values() if s.state is not State.CREATING), key=lambda s: s.created_at)
        if filt is None:
            return found
        prefix = filt.id
        state = filt.state.state if filt.HasField("state") else None
        selector = dict(filt.label_selector)
        return [
            s
            for s in found
            if (not prefix or s.id.startswith(prefix))
            and (state is None or cri_state(s) == state)
            and (not selector or match_labels(s.labels, selector))
        ]

    async def refresh(self, sandbox: Sandbox) -> None:
        """A READY sandbox whose infra process died is NOTREADY."""
        if sandbox.state is State.READY and not self.infra_alive(sandbox):
            sandbox.state = State.NOTREADY
            await self._save(sandbox)
            log.warning("pod sandbox %s: infra process %d is gone; NOTREADY", sandbox.id, sandbox.infra_pid)

    # -- recovery -------------------------------------------------------------------------------

    async def recover(self, *, rebooted: bool = False) -> None:
        """Load every sandbox; clean up half-made ones; mark those whose infra died NOTREADY.

        Nothing here stops the daemon from starting: a pod whose recovery fails (a failed CNI DEL,
        ``runc delete``, a handler no longer configured...) is logged with the reason and kept
        listed NOTREADY, for kubelet to remove; what could not be cleaned up is retried in the
        background. After a reboot (``rebooted``) no infra process is left: every pod is NOTREADY.
        """
        await asyncio.to_thread(self.pods_dir.mkdir, parents=True, exist_ok=True)
        for row in await self.store.sandboxes.all():
            try:
                sandbox = Sandbox.from_row(row)
            except Exception:
                log.exception("pod sandbox %s: its record cannot be read; skipped", row.id)
                continue
            self.sandboxes[sandbox.id] = sandbox
            try:
                await self._recover(sandbox, rebooted)
            except Exception as exc:
                log.error("pod sandbox %s: recovery failed: %s; NOTREADY", sandbox.id, exc)
                if sandbox.state is State.READY:
                    sandbox.state = State.NOTREADY
                    with contextlib.suppress(Exception):
                        await self._save(sandbox)
        # Pod directories no record knows of are leftovers of a crash before the first write.
        known = set(self.sandboxes)
        for name in await asyncio.to_thread(os.listdir, self.pods_dir):
            if name not in known:
                try:
                    await asyncio.to_thread(self._remove_pod_dir, self.pods_dir / name)
                except Exception as exc:
                    log.error("leftover pod directory %s kept: %s", self.pods_dir / name, exc)
        log.info("sandboxes: %d recovered", len(self.sandboxes))

    async def _recover(self, sandbox: Sandbox, rebooted: bool) -> None:
        if sandbox.state is State.CREATING:
            log.warning("pod sandbox %s was being created when pycri stopped; cleaning it up", sandbox.id)
            try:
                await self._destroy(sandbox)
            except Exception as exc:
                log.error(
                    "pod sandbox %s: cleaning it up failed: %s; listed NOTREADY until its removal or a retry succeeds",
                    sandbox.id,
                    exc,
                )
                await self._keep_leftover(sandbox)
            return
        if sandbox.name_released:  # left over from a failed run: its undo goes on
            await self._keep_leftover(sandbox)
            return
        if rebooted:
            # Its pid and start time belong to the previous boot: they name nothing, or another process.
            sandbox.infra_pid = sandbox.infra_pid_start = 0
            if sandbox.state is State.READY:
                sandbox.state = State.NOTREADY
                log.warning("pod sandbox %s: the node rebooted; NOTREADY", sandbox.id)
            await self._save(sandbox)
            return
        if sandbox.state is State.READY and not await self._infra_running(sandbox):
            sandbox.state = State.NOTREADY
            await self._save(sandbox)
            log.warning("pod sandbox %s: infra container is not running; NOTREADY", sandbox.id)

    async def _infra_running(self, sandbox: Sandbox) -> bool:
        """Whether the runtime runs the infra container pycri started (when it cannot say, whether its process lives)."""
        if STEP_INFRA not in sandbox.steps:
            return False
        runtime = self.runtime_of(sandbox)  # a handler that cannot be had: the pod cannot be managed, NOTREADY
        try:
            current = await runtime.state(self.infra(sandbox))
        except Exception as exc:
            alive = self.infra_alive(sandbox)
            log.warning(
                "pod sandbox %s: the runtime cannot tell its state (%s); its infra process is %s",
                sandbox.id,
                exc,
                "alive" if alive else "gone",
            )
            return alive
        return (
            current is not None and current.status == "running" and current.pid == sandbox.infra_pid and self.infra_alive(sandbox)
        )


def cri_state(sandbox: Sandbox) -> api.PodSandboxState.ValueType:
    return api.SANDBOX_READY if sandbox.state is State.READY else api.SANDBOX_NOTREADY
