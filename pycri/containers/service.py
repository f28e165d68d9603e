"""Container lifecycle: create, start, stop, remove, status, list, exec, update, log reopen, recovery.

A container is created under conmon (which runs the OCI runtime's ``create``)
and started with the runtime's ``start``. pycri watches each running
container's pid with a pidfd; when it ends, the exit code comes from conmon's
exit file. While the daemon is down conmon keeps the container and records
its exit, which recovery picks up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal as signal_mod
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.config import Config
from pycri.containers import devices, image_volumes
from pycri.containers import rootfs as rootfs_mod
from pycri.containers.model import CRI_STATES, STEP_CREATED, STEP_DIR, STEP_ROOTFS, Container, State
from pycri.containers.registry import ContainerRegistry
from pycri.containers.specs import HOST
from pycri.host.tree import remove_tree
from pycri.images.records import ImageRecord
from pycri.images.service import ImageService
from pycri.nri import adjust as nri_adjust
from pycri.nri import api_pb2 as nri_api
from pycri.nri import convert as nri_convert
from pycri.oci import container_spec
from pycri.oci.interface import (
    AttachSession,
    ConmonError,
    ExecSession,
    RuntimeCommandError,
    RuntimeContainer,
    RuntimeImpl,
)
from pycri.procs import same_process, start_time, wait_pid
from pycri.retry import Retrier
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.sandboxes.registry import SandboxRegistry
from pycri.sandboxes.service import match_labels

if TYPE_CHECKING:
    from pycri.containers.nri import NRI

log = logging.getLogger("pycri.containers")

MAX_EXEC_OUTPUT = 16 * 1024 * 1024 - 64 * 1024  # leaves room in a 16 MiB gRPC message
EXIT_FILE_WAIT = 2.0
TERMINATION_MESSAGE_LIMIT = 4096
TERMINATION_PATH_ANNOTATION = "io.kubernetes.container.terminationMessagePath"
# A container whose end nobody recorded (it ran when the node rebooted, or its monitor vanished):
# what containerd reports (CRI-O reports the same code, with reason "Error").
UNKNOWN_EXIT_CODE = 255
UNKNOWN_EXIT_REASON = "Unknown"

# (container, sandbox, image config) -> (OCI spec, (uid, gid, supplemental groups))
SpecBuilder = Callable[[Container, Sandbox, dict[str, Any]], Awaitable[tuple[dict[str, Any], tuple[int, int, list[int]]]]]


def signal_name(value: str | int) -> str:
    """``SIGTERM`` from 15, "TERM", "SIGTERM" or "sigterm"."""
    if isinstance(value, int) or str(value).isdigit():
        return signal_mod.Signals(int(value)).name
    name = str(value).upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return signal_mod.Signals[name].name
    except KeyError:
        raise errors.InvalidArgument(f"stop signal {value!r} is not a signal") from None


def pod_log_path(log_directory: str, log_path: str) -> str:
    """The container's log file: ``log_path`` inside the pod's ``log_directory``, never outside it."""
    directory = os.path.normpath(log_directory)
    joined = os.path.normpath(os.path.join(directory, log_path))
    if not os.path.isabs(directory) or os.path.isabs(log_path):
        raise errors.InvalidArgument(f"config.log_path: {log_path!r} must be a relative path inside the pod's log_directory")
    if os.path.commonpath([directory, joined]) != directory or joined == directory:
        raise errors.InvalidArgument(f"config.log_path: {log_path!r} leaves the pod's log_directory {log_directory!r}")
    return joined


class ContainerService:
    def __init__(
        self,
        cfg: Config,
        store: Any,
        handlers: Mapping[str, RuntimeImpl],
        sandboxes: SandboxRegistry,
        images: ImageService,
        *,
        registry: ContainerRegistry,
        build_spec: SpecBuilder,
        retired_handler: Callable[[str, str, str], RuntimeImpl] | None = None,
        nri: NRI | None = None,
    ) -> None:
        self.cfg = cfg
        # NRI plugins' hooks (None, or disabled: no hooks); the containers whose StopContainer they were told of.
        self.nri = nri
        self._nri_stopped: set[str] = set()
        self._nri_updates: set[asyncio.Task[None]] = set()
        self.store = store
        self.handlers = handlers
        self.sandboxes = sandboxes
        self.images = images
        self.registry = registry
        self.build_spec = build_spec
        self.root = Path(cfg.root_dir) / "containers"
        self.containers: dict[str, Container] = registry.containers
        self._locks: dict[str, asyncio.Lock] = {}
        self._names = asyncio.Lock()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._removing: dict[str, Container] = registry.removing  # removed, clean-up under way
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._cleaning = asyncio.Lock()
        self._releases: dict[str, asyncio.Task[None]] = {}
        # (name, path, root) -> the handler of that name once the configuration has dropped it.
        self.retired_handler = retired_handler
        self._retired: dict[str, RuntimeImpl] = {}
        # Clean-ups that failed, retried in the background until they succeed.
        self.retrier = Retrier(log)

    # -- helpers ------------------------------------------------------------------------------

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def find(self, id_or_prefix: str) -> Container | None:
        return self.registry.find(id_or_prefix)

    def get(self, id_or_prefix: str, field: str = "container_id") -> Container:
        return self.registry.get(id_or_prefix, field)

    def runtime(self, container: Container) -> RuntimeImpl:
        """The container's handler: the configured one, or, once the configuration has dropped it, one
        rebuilt from the binary and state root its pod's record remembers."""
        configured = self.handlers.get(container.runtime_handler)
        if configured is not None:
            return configured
        name = container.runtime_handler
        sandbox = self.sandboxes.find(container.sandbox_id)
        if self.retired_handler is None or sandbox is None or not sandbox.runtime_path:
            raise errors.FailedPrecondition(
                f"container {container.id}: runtime handler {name!r} is no longer configured; add it back to manage it"
            )
        if name not in self._retired:
            self._retired[name] = self.retired_handler(name, sandbox.runtime_path, sandbox.runtime_root)
        return self._retired[name]

    def alive(self, container: Container) -> bool:
        """Whether the container's process still runs (its pid may name another process by now)."""
        return same_process(container.pid, container.pid_start)

    @staticmethod
    def in_runtime(container: Container) -> RuntimeContainer:
        """The container as its runtime knows it."""
        config = container.config
        return RuntimeContainer(
            id=container.id,
            bundle=container.bundle,
            persist_dir=container.persist_dir,
            log_path=container.log_path,
            terminal=config.tty,
            stdin=config.stdin,
            stdin_once=config.stdin_once,
        )

    async def _save(self, container: Container) -> None:
        await self.store.containers.put(container.to_row())

    # -- create / start -----------------------------------------------------------------------

    def _no_nri_sync(self) -> contextlib.AbstractAsyncContextManager[None]:
        """No NRI plugin joins (is synchronized) while a container is made or removed within."""
        return self.nri.no_sync() if self.nri is not None and self.nri.enabled else contextlib.nullcontext()

    async def create(self, sandbox_id: str, config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig) -> Container:
        async with self._no_nri_sync():
            container = await self._create(sandbox_id, config)
        if self.nri is not None:
            await self.nri.post_create_container(container)
        return container

    async def _create(self, sandbox_id: str, config: api.ContainerConfig) -> Container:
        sandbox = self.sandboxes.get(sandbox_id)
        if sandbox.state is not SandboxState.READY:
            raise errors.FailedPrecondition(f"pod sandbox {sandbox.id} is not ready")
        md = config.metadata
        if not md.name:
            raise errors.InvalidArgument("config.metadata.name: required")
        if not config.image.image:
            raise errors.InvalidArgument("config.image.image: required")
        image = self.images.find(config.image.image)
        if image is None:
            raise errors.NotFound(f"config.image.image: image {config.image.image!r} not found; pull it first")
        image_config = image.config.get("config") or {}
        volume_images = self._volume_images(config)
        stop_signal = "SIGTERM"
        if config.stop_signal:  # SIGNAL_SIGUSR1 -> SIGUSR1
            stop_signal = api.Signal.Name(config.stop_signal).removeprefix("SIGNAL_")
        elif image_config.get("StopSignal"):
            stop_signal = signal_name(image_config["StopSignal"])
        cid = secrets.token_hex(32)
        log_path = ""
        if config.log_path:
            if not sandbox.config.log_directory:
                raise errors.InvalidArgument("config.log_path: set, but the pod has no log_directory")
            log_path = pod_log_path(sandbox.config.log_directory, config.log_path)
        container = Container(
            id=cid,
            sandbox_id=sandbox.id,
            config=config,
            state=State.CREATING,
            created_at=time.time_ns(),
            runtime_handler=sandbox.runtime_handler,
            dir=self.root / cid,
            image_id=image.id,
            image_ref=image.repo_digests[0] if image.repo_digests else image.id,
            chain_ids=list(image.chain_ids),
            stop_signal=stop_signal,
            log_path=log_path,
            resources=json_format.MessageToDict(config.linux.resources, preserving_proto_field_name=True),
            image_volumes={
                str(i): {"image_id": v.id, "chain_ids": list(v.chain_ids), "source": ""} for i, v in volume_images.items()
            },
            # Recorded with the row, before they happen: their undo copes with them not having happened.
            steps=[STEP_DIR, STEP_ROOTFS],
        )
        # The same name may be taken again at once: wait for a removed namesake's row to go.
        namesakes = [
            c.id
            for c in self._removing.values()
            if c.sandbox_id == sandbox.id and (c.metadata.name, c.metadata.attempt) == (md.name, md.attempt)
        ]
        await self.wait_removed(namesakes)
        async with self._names:
            for other in self.containers.values():
                om = other.metadata
                if other.sandbox_id == sandbox.id and (om.name, om.attempt) == (md.name, md.attempt):
                    raise errors.AlreadyExists(
                        f"container name {md.name!r} (attempt {md.attempt}) is taken by {other.id} in this pod"
                    )
            try:
                await self.store.containers.insert(container.to_row())
            except sqlite3.IntegrityError as exc:
                raise errors.AlreadyExists(f"container {md.name!r}: {exc}") from None
            self.containers[cid] = container
        async with self.lock(cid):
            try:
                await self._build(container, sandbox, image_config)
            except BaseException as exc:
                log.warning("CreateContainer %s (%s) failed: %s; undoing", cid, md.name, exc)
                await asyncio.shield(self._undo_create(container))
                if isinstance(exc, OSError):
                    raise errors.Internal(f"creating container {md.name!r}: {exc}") from exc
                raise
        log.info("container %s (%s) created in pod %s", cid, md.name, sandbox.id)
        return container

    async def _undo_create(self, container: Container) -> None:
        """Undo a failed create; what cannot be undone now is cleaned up in the background, as after a removal."""
        try:
            await self._destroy(container)
        except Exception as exc:
            log.error(
                "container %s: undoing the failed CreateContainer failed: %s; retrying in the background", container.id, exc
            )
            await self._keep_removing(container)

    async def _build(self, container: Container, sandbox: Sandbox, image_config: dict[str, Any]) -> None:
        """The directory, rootfs, image volumes and OCI bundle; the runtime creates it at start."""
        await asyncio.to_thread(self._make_rootfs, container, sandbox)
        spec, user = await self.build_spec(container, sandbox, image_config)
        container.uid, container.gid, container.supplemental_groups = user
        if self.nri is not None:  # the container stays CREATING (unlisted) while plugins look at it
            reply = await self.nri.create_container(container, spec)
            if reply is not None:
                if reply.HasField("adjust"):
                    wanted = [(f"NRI adjustment CDI_devices[{i}]", d.name) for i, d in enumerate(reply.adjust.CDI_devices)]
                    edits = await asyncio.to_thread(devices.resolve_cdi, wanted, self.cfg.cdi_spec_dirs) if wanted else []
                    spec = nri_adjust.apply(spec, reply.adjust, edits)
                self._apply_nri_updates_later(container, list(reply.update))
        await asyncio.to_thread(self._write_bundle, container, spec)
        container.state = State.CREATED
        await self._save(container)

    async def _create_in_runtime(self, container: Container) -> None:
        """conmon runs the runtime's ``create``; the container's process then waits to be started."""
        runtime, rc = self.runtime(container), self.in_runtime(container)
        if STEP_CREATED in container.steps:
            # A start that failed, or a crash, left it half-made: start over.
            await runtime.delete(rc, force=True)
        else:
            container.steps.append(STEP_CREATED)
        # The intent, recorded before the runtime acts: after a crash from here on, recovery asks the
        # runtime whether the container runs (it must not be reported CREATED and started twice).
        container.start_requested_at = time.time_ns()
        await self._save(container)
        if container.log_path:
            await asyncio.to_thread(Path(container.log_path).parent.mkdir, parents=True, exist_ok=True)
        container.pid = await runtime.create(rc)
        container.pid_start = start_time(container.pid)

    def _make_rootfs(self, container: Container, sandbox: Sandbox) -> None:
        """The container's directory, its rootfs and its image volumes. Blocking."""
        container.dir.mkdir(parents=True, exist_ok=False)
        layers = [self.images.layers.path(c) for c in container.chain_ids]
        userns = sandbox.user_namespace
        rootfs_mod.mount_rootfs(layers, container.dir, sandbox.userns_path, userns.root if userns else None)
        if container.image_volumes:
            self._mount_image_volumes(container, sandbox.userns_path)

    def _volume_images(self, config: api.ContainerConfig) -> dict[int, ImageRecord]:
        """The images of the image volumes, which must be read-only and pulled already."""
        found = {}
        for i, mount in enumerate(config.mounts):
            if not (mount.HasField("image") and mount.image.image):
                continue
            container_spec.check_image_mount(mount, i)
            image = self.images.find(mount.image.image)
            if image is None:
                raise errors.NotFound(f"config.mounts[{i}].image: image {mount.image.image!r} not found; pull it first")
            found[i] = image
        return found

    def _mount_image_volumes(self, container: Container, userns_path: str) -> None:
        """Mount each image volume under ``volumes/`` and record the path to bind-mount. Blocking."""
        for key, volume in container.image_volumes.items():
            i = int(key)
            mount = container.config.mounts[i]
            target = container.dir / "volumes" / key
            layers = [self.images.layers.path(c) for c in volume["chain_ids"]]
            image_volumes.mount(layers, target, userns_path)
            what = f"config.mounts[{i}]"
            volume["source"] = image_volumes.source(target, mount.image_sub_path, what, mount.image.image)

    def _write_bundle(self, container: Container, spec: dict[str, Any]) -> None:
        container.bundle.mkdir(parents=True, exist_ok=True)
        spec["root"]["path"] = str(container.rootfs)
        (container.bundle / "config.json").write_text(json.dumps(spec))

    async def start(self, cid: str) -> None:
        container = self.get(cid)
        async with self.lock(container.id):
            if container.state is not State.CREATED:
                raise errors.FailedPrecondition(
                    f"container {container.id} is {container.state.value}, not created: only a created container can start"
                )
            if self.nri is not None:  # a plugin's refusal fails the start; the container stays CREATED
                await self.nri.start_container(container)
            try:
                await self._create_in_runtime(container)
                started = time.time_ns()  # before the start: a process that exits at once ends after it
                await self.runtime(container).start(self.in_runtime(container))
            except (ConmonError, RuntimeCommandError, OSError) as exc:
                await self._record_exit(container, start_failed=str(exc))
                raise errors.Internal(f"starting container {container.id}: {exc}") from exc
            container.state = State.RUNNING
            container.started_at = started
            container.start_requested_at = 0
            await self._save(container)
            self._watch(container)
        log.info("container %s started (pid %d)", container.id, container.pid)
        if self.nri is not None:
            await self.nri.post_start_container(container)

    # -- exits ------------------------------------------------------------------------------------

    def _watch(self, container: Container) -> None:
        if container.id not in self._watchers:
            self._watchers[container.id] = asyncio.create_task(self._wait_exit(container))

    async def _wait_exit(self, container: Container) -> None:
        try:
            await wait_pid(container.pid, None)
            async with self.lock(container.id):
                if container.state is State.RUNNING:
                    await self._record_exit(container)
        except Exception:
            log.exception("watching container %s failed", container.id)
        finally:
            self._watchers.pop(container.id, None)

    async def _record_exit(
        self, container: Container, start_failed: str = "", *, recovered: bool = False, wait: float | None = None
    ) -> None:
        """Read conmon's exit file (it lands a moment after the process ends) and mark the container exited.

        ``recovered``: found gone at recovery; with no exit code recorded, its end is unknown (255,
        reason ``Unknown``, as containerd reports a container whose task vanished).
        """
        if wait is None:
            ran = bool(container.pid) and not start_failed  # else there is no exit file to wait for
            wait = EXIT_FILE_WAIT if ran else 0
        status = await self.runtime(container).exit_status(self.in_runtime(container), wait=wait)
        code = status.code if not start_failed else None
        container.state = State.EXITED
        container.start_requested_at = 0
        # The exit file's time comes from the file system's coarse clock, a tick behind the one started_at
        # is read from: a process that ends at once may seem to end before it started.
        container.finished_at = max(status.finished_at, container.started_at)
        container.exit_code = code if code is not None else (128 + 9 if not start_failed else 128)
        if start_failed:
            container.reason, container.message = "StartError", start_failed
        elif code is None and recovered:
            container.exit_code, container.reason = UNKNOWN_EXIT_CODE, UNKNOWN_EXIT_REASON
        elif status.oom_killed:
            container.reason = "OOMKilled"
        else:
            container.reason = "Completed" if container.exit_code == 0 else "Error"
        if not start_failed:
            container.message = await asyncio.to_thread(self._termination_message, container)
        await self._save(container)
        self._release_runtime(container)
        log.info("container %s exited with %d (%s)", container.id, container.exit_code, container.reason)
        await self._nri_stop(container)

    async def _nri_stop(self, container: Container) -> None:
        """Tell NRI plugins the container has stopped, once; the updates of others they ask for follow."""
        if self.nri is not None and container.id not in self._nri_stopped:
            self._nri_stopped.add(container.id)
            self._apply_nri_updates_later(container, await self.nri.stop_container(container))

    def _apply_nri_updates_later(self, container: Container, updates: list[nri_api.ContainerUpdate]) -> None:
        """Plugins' updates of other containers, carried out without holding ``container``'s lock."""
        others = [u for u in updates if u.container_id != container.id]
        if others:
            task = asyncio.create_task(self._apply_nri_updates_logged(others))
            self._nri_updates.add(task)
            task.add_done_callback(self._nri_updates.discard)

    async def _apply_nri_updates_logged(self, updates: list[nri_api.ContainerUpdate]) -> None:
        failed = await self.apply_nri_updates(updates)
        if failed:
            log.warning("NRI: %d updates of other containers failed", len(failed))

    def _termination_message(self, container: Container) -> str:
        wanted = container.config.annotations.get(TERMINATION_PATH_ANNOTATION)
        for mount in container.config.mounts:
            if wanted and mount.container_path == wanted and mount.host_path:
                with contextlib.suppress(OSError), open(mount.host_path, "rb") as f:
                    return f.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
        return ""

    # -- stop / remove ------------------------------------------------------------------------------

    async def stop(self, cid: str, timeout: int) -> None:
        """Stop the container: its stop signal, then SIGKILL after ``timeout`` seconds.

        The wait runs without the container's lock, as containerd's does: a later StopContainer
        with a shorter timeout (kubelet shortens the grace period when a pod is force-deleted)
        sends SIGKILL at its own deadline instead of waiting out the first call's.
        """
        container = self.find(cid)
        if container is None:
            return  # already gone: success, as the API says
        async with self.lock(container.id):
            if container.state is not State.RUNNING or timeout <= 0:
                await self._stop(container, timeout)
                return
            pid = container.pid
            with contextlib.suppress(RuntimeCommandError):
                await self.runtime(container).kill(self.in_runtime(container), container.stop_signal)
        if await wait_pid(pid, timeout):
            async with self.lock(container.id):
                await self._finish(container)
            return
        log.info("container %s ignored %s for %ds: SIGKILL", container.id, container.stop_signal, timeout)
        async with self.lock(container.id):
            await self._stop(container, 0)

    async def _stop(self, container: Container, timeout: int) -> None:
        if container.state is not State.RUNNING:
            if container.state is State.CREATED:
                # Never started: nothing runs (or, after a failed start, only the runtime's waiting init).
                if STEP_CREATED in container.steps and container.pid:
                    with contextlib.suppress(RuntimeCommandError):
                        await self.runtime(container).kill(self.in_runtime(container), "KILL")
                    await wait_pid(container.pid, 10)
                await self._record_exit(container)
            return
        runtime, rc = self.runtime(container), self.in_runtime(container)
        if timeout > 0:
            with contextlib.suppress(RuntimeCommandError):
                await runtime.kill(rc, container.stop_signal)
            if await wait_pid(container.pid, timeout):
                await self._finish(container)
                return
            log.info("container %s ignored %s for %ds: SIGKILL", container.id, container.stop_signal, timeout)
        with contextlib.suppress(RuntimeCommandError):
            await runtime.kill(rc, "KILL", all_processes=True)
        if not await wait_pid(container.pid, 30):
            raise errors.Internal(f"container {container.id} (pid {container.pid}) did not exit after SIGKILL")
        await self._finish(container)

    async def _finish(self, container: Container) -> None:
        if container.state is State.RUNNING:
            await self._record_exit(container)

    async def remove(self, cid: str) -> None:
        """Stop the container and forget it at once; its clean-up finishes in the background.

        As containerd leaves snapshot removal to its garbage collector, the runtime state,
        mounts and files go after the answer: the container is recorded as REMOVING first,
        so a crash midway leaves recovery to finish the job.
        """
        container = self.find(cid)
        if container is None:
            return
        async with self._no_nri_sync(), self.lock(container.id):
            if container.id not in self.containers:
                return
            await self._stop(container, 0)
            if self.nri is not None:
                await self.nri.remove_container(container)
            self._nri_stopped.discard(container.id)
            container.state = State.REMOVING
            await self._save(container)
            self._forget(container)
            self._removing[container.id] = container
            self._cleanups[container.id] = asyncio.create_task(self._clean_up(container))
        log.info("container %s removed", container.id)

    async def _clean_up(self, container: Container) -> None:
        try:
            await self._clean_up_once(container)
        except Exception as exc:
            # Kept among the removing ones, so its layers stay in use (and its pod's removal waits).
            log.error("cleaning up removed container %s failed: %s; retrying in the background", container.id, exc)
            self._retry_clean_up(container)
        finally:
            self._cleanups.pop(container.id, None)

    async def _clean_up_once(self, container: Container) -> None:
        async with self._cleaning:  # one at a time: a burst of removals must not crowd out the answers
            if container.id in self._removing:
                await self._destroy(container)
                self._removing.pop(container.id, None)

    def _retry_clean_up(self, container: Container) -> None:
        self.retrier.schedule(
            container.id, f"cleaning up removed container {container.id}", lambda: self._clean_up_once(container)
        )

    async def _keep_removing(self, container: Container) -> None:
        """``container`` could not be cleaned up: no longer listed, recorded as being removed, retried."""
        self._forget(container)
        self._removing[container.id] = container
        container.state = State.REMOVING
        try:
            await self._save(container)
        except Exception as exc:
            log.error("container %s: cannot record it as being removed: %s", container.id, exc)
        self._retry_clean_up(container)

    async def wait_removed(self, ids: Iterable[str] | None = None) -> None:
        """Wait until the clean-up of removed containers (those of ``ids``, or all) is done."""
        tasks = [t for cid, t in self._cleanups.items() if ids is None or cid in ids]
        if tasks:
            await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)

    def _forget(self, container: Container) -> None:
        self.containers.pop(container.id, None)
        self._locks.pop(container.id, None)
        watcher = self._watchers.pop(container.id, None)
        if watcher is not None:
            watcher.cancel()

    async def _delete_from_runtime(self, container: Container) -> None:
        """Kill what is left of the container and have the runtime forget it (and its cgroups)."""
        runtime, rc = self.runtime(container), self.in_runtime(container)
        # An exited container whose process is gone needs no `runtime state` round trip.
        known_dead = container.state is State.EXITED and not self.alive(container)
        state = None if known_dead else await runtime.state(rc)
        if state is not None and state.status not in ("stopped",):
            with contextlib.suppress(RuntimeCommandError):
                await runtime.kill(rc, "KILL", all_processes=True)
            if state.pid:
                await wait_pid(state.pid, 10)
        await runtime.delete(rc, force=True)

    def _release_runtime(self, container: Container) -> None:
        """Once a container has exited, let the runtime forget it in the background (as containerd's
        shim deletes the task on exit): RemoveContainer then only has files to clean up."""
        if STEP_CREATED in container.steps and container.id not in self._releases:
            self._releases[container.id] = asyncio.create_task(self._released(container))

    async def _released(self, container: Container) -> None:
        try:
            async with self._cleaning:
                if STEP_CREATED not in container.steps or container.state is not State.EXITED:
                    return
                await self._delete_from_runtime(container)
                container.steps.remove(STEP_CREATED)
                if container.id in self.containers or container.id in self._removing:
                    await self._save(container)
        except Exception:
            log.exception("deleting exited container %s from its runtime failed; its removal retries", container.id)
        finally:
            self._releases.pop(container.id, None)

    async def _destroy(self, container: Container) -> None:
        release = self._releases.get(container.id)
        if release is not None:
            await asyncio.shield(release)
        if STEP_CREATED in container.steps:
            await self._delete_from_runtime(container)
        await self.runtime(container).remove_leftovers(self.in_runtime(container))
        if STEP_ROOTFS in container.steps:
            await asyncio.to_thread(rootfs_mod.unmount_rootfs, container.dir)
        if STEP_DIR in container.steps:
            await asyncio.to_thread(remove_tree, container.dir, True)
        await self.store.containers.delete(container.id)
        self._forget(container)

    # Hooks the sandbox service calls.
    async def stop_containers(self, sandbox_id: str) -> None:
        for container in [c for c in self.containers.values() if c.sandbox_id == sandbox_id]:
            async with self.lock(container.id):
                await self._stop(container, 0 if container.state is not State.RUNNING else 2)

    async def remove_containers(self, sandbox_id: str) -> None:
        """Remove the pod's containers and wait until they are cleaned up (the pod goes next).

        Raises while one of them is not: the pod's record must outlive theirs, and the pod's own
        clean-up waits for theirs. A clean-up that failed before is tried again here at once.
        """
        for container in [c for c in self.containers.values() if c.sandbox_id == sandbox_id]:
            await self.remove(container.id)
        await self.wait_removed([c.id for c in self._removing.values() if c.sandbox_id == sandbox_id])
        for container in [c for c in self._removing.values() if c.sandbox_id == sandbox_id]:
            await self.retrier.cancel(container.id)
            try:
                await self._clean_up_once(container)
            except Exception as exc:
                self._retry_clean_up(container)
                raise errors.Internal(
                    f"container {container.id} of pod sandbox {sandbox_id} is not cleaned up yet: {exc}; "
                    "the pod is removed once it is"
                ) from exc

    # -- queries --------------------------------------------------------------------------------

    def query(self, filt: api.ContainerFilter | None) -> Iterable[Container]:
        """The containers ``filt`` selects, oldest first (the filter read once, not per container)."""
        found = sorted((c for c in self.containers.values() if c.state is not State.CREATING), key=lambda c: c.created_at)
        if filt is None:
            return found
        prefix, pod_prefix = filt.id, filt.pod_sandbox_id
        state = filt.state.state if filt.HasField("state") else None
        selector = dict(filt.label_selector)
        return [
            c
            for c in found
            if (not prefix or c.id.startswith(prefix))
            and (not pod_prefix or c.sandbox_id.startswith(pod_prefix))
            and (state is None or CRI_STATES[c.state] == state)
            and (not selector or match_labels(c.labels, selector))
        ]

    # -- exec / update / logs ------------------------------------------------------------------------

    def _running(self, cid: str, cmd: list[str] | None = None) -> Container:
        container = self.get(cid)
        if cmd is not None and not cmd:
            raise errors.InvalidArgument("cmd: required")
        if container.state is not State.RUNNING:
            raise errors.FailedPrecondition(f"container {container.id} is not running")
        return container

    async def exec_sync(self, cid: str, cmd: list[str], timeout: int) -> tuple[bytes, bytes, int]:
        container = self._running(cid, cmd)
        result = await self.runtime(container).exec_sync(
            self.in_runtime(container), cmd, timeout=timeout, output_limit=MAX_EXEC_OUTPUT
        )
        return result.stdout, result.stderr, result.exit_code

    async def update_resources(self, cid: str, resources: api.LinuxContainerResources) -> None:
        container = self.get(cid)
        async with self.lock(container.id):
            if container.state not in (State.CREATED, State.RUNNING):
                raise errors.FailedPrecondition(f"container {container.id} is {container.state.value}: cannot update resources")
            oci_resources = container_spec.linux_resources(
                resources, swap_controller=HOST.swap, hugetlb_controller=HOST.hugetlb, what="linux"
            )
            if self.nri is not None:  # plugins may change the new resources (or refuse them) and update others
                updates = await self.nri.update_container(container, nri_convert.resources_from_oci(oci_resources))
                for update in updates:
                    if update.container_id == container.id:
                        oci_resources = nri_convert.resources_to_oci(update.linux.resources)
                self._apply_nri_updates_later(container, updates)
            await self._apply_resources(container, oci_resources)
            container.resources = json_format.MessageToDict(resources, preserving_proto_field_name=True)
            await self._save(container)
        if self.nri is not None:
            await self.nri.post_update_container(container)

    async def _apply_resources(self, container: Container, oci_resources: dict[str, Any]) -> None:
        """OCI ``linux.resources`` for a created or running container: to its bundle or through its runtime."""
        if STEP_CREATED not in container.steps:
            # Not in the runtime yet: the new limits go into the bundle it will be created from.
            await asyncio.to_thread(self._update_bundle_resources, container, oci_resources)
        else:
            try:
                await self.runtime(container).update_resources(self.in_runtime(container), oci_resources)
            except RuntimeCommandError as exc:
                raise errors.Internal(f"updating resources of {container.id}: {exc}") from exc

    async def evict_for_nri(self, evictions: list[nri_api.ContainerEviction]) -> None:
        """Stop the containers NRI plugins evict, as StopContainer with no grace period does; failures are logged."""
        for eviction in evictions:
            log.warning("NRI: evicting container %s: %s", eviction.container_id, eviction.reason or "(no reason given)")
            try:
                await self.stop(eviction.container_id, 0)
            except Exception as exc:
                log.error("NRI: evicting container %s failed: %s", eviction.container_id, exc)

    async def apply_nri_updates(self, updates: list[nri_api.ContainerUpdate]) -> list[nri_api.ContainerUpdate]:
        """Carry out NRI plugins' updates of containers' resources; returns those that failed.

        An update of a container that is gone, or not created or running, fails (and is
        logged); one marked ``ignore_failure`` is not reported.
        """
        failed = []
        for update in updates:
            container = self.find(update.container_id)
            try:
                if container is None:
                    raise errors.NotFound(f"container {update.container_id} not found")
                async with self.lock(container.id):
                    if container.state not in (State.CREATED, State.RUNNING):
                        raise errors.FailedPrecondition(f"container {container.id} is {container.state.value}")
                    oci_resources = nri_convert.resources_to_oci(update.linux.resources)
                    if oci_resources:
                        await self._apply_resources(container, oci_resources)
            except Exception as exc:
                log.warning("NRI update of container %s failed: %s", update.container_id, exc)
                if not update.ignore_failure:
                    failed.append(update)
        return failed

    @staticmethod
    def _update_bundle_resources(container: Container, oci_resources: dict[str, Any]) -> None:
        path = container.bundle / "config.json"
        spec = json.loads(path.read_text())
        linux = spec.setdefault("linux", {})
        current = linux.get("resources", {})
        linux["resources"] = {**current, **oci_resources, "devices": current.get("devices", [])}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(spec))
        os.replace(tmp, path)

    async def reopen_log(self, cid: str) -> None:
        container = self._running(cid)
        await self.runtime(container).reopen_log(self.in_runtime(container))

    # -- streams (for the streaming server) --------------------------------------------------------

    async def exec(self, cid: str, cmd: list[str], *, tty: bool, stdin: bool) -> ExecSession:
        """Start ``cmd`` in the running container with streams; the caller closes the session."""
        container = self._running(cid, cmd)
        return await self.runtime(container).exec(self.in_runtime(container), cmd, tty=tty, stdin=stdin)

    async def attach(self, cid: str) -> AttachSession:
        """Connect to the running container's own stdio; the caller closes the session."""
        container = self._running(cid)
        return await self.runtime(container).attach(self.in_runtime(container))

    # -- recovery -------------------------------------------------------------------------------------

    async def recover(self, *, rebooted: bool = False) -> None:
        """Load every container and bring its record in line with what became of it while pycri was down.

        Nothing here stops the daemon from starting: a container whose recovery fails is logged
        with the reason and kept listed in a state kubelet removes (EXITED or UNKNOWN); what could
        not be cleaned up is retried in the background. After a reboot (``rebooted``) nothing
        pycri started runs any more: every container that ran has EXITED.
        """
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        for row in await self.store.containers.all():
            try:
                container = Container.from_row(row)
            except Exception:
                log.exception("container %s: its record cannot be read; skipped", row.id)
                continue
            self.containers[container.id] = container
            try:
                await self._recover(container, rebooted)
            except Exception as exc:
                log.error("container %s: recovery failed: %s; its state is UNKNOWN", container.id, exc)
                in_doubt = container.state in (State.RUNNING, State.CREATING) or container.start_requested_at
                if container.id in self.containers and in_doubt:
                    container.state = State.UNKNOWN
                    with contextlib.suppress(Exception):
                        await self._save(container)
        known = set(self.containers) | set(self._removing)
        for name in await asyncio.to_thread(os.listdir, self.root):
            if name not in known:
                leftover = self.root / name
                try:
                    await asyncio.to_thread(rootfs_mod.unmount_rootfs, leftover)
                except Exception as exc:
                    log.error("leftover container directory %s kept: %s", leftover, exc)
                    continue
                await asyncio.to_thread(remove_tree, leftover, True)
        log.info("containers: %d recovered", len(self.containers))

    async def _recover(self, container: Container, rebooted: bool) -> None:
        if container.state is State.REMOVING:
            log.info("container %s was being cleaned up after its removal; finishing", container.id)
            self._forget(container)
            self._removing[container.id] = container
            try:
                await self._clean_up_once(container)
            except Exception as exc:
                log.error("container %s: finishing its clean-up failed: %s; retrying in the background", container.id, exc)
                self._retry_clean_up(container)
            return
        if container.state is State.CREATING or container.sandbox_id not in self.sandboxes:
            log.warning("container %s was half-made or lost its pod; cleaning it up", container.id)
            try:
                await self._destroy(container)
            except Exception as exc:
                log.error(
                    "container %s: cleaning it up failed: %s; listed UNKNOWN until its removal or a retry succeeds",
                    container.id,
                    exc,
                )
                container.state = State.UNKNOWN
                await self._save(container)
                self.retrier.schedule(
                    container.id, f"cleaning up half-made container {container.id}", lambda: self._retry_destroy(container)
                )
            return
        if rebooted:
            await self._after_reboot(container)
        elif container.start_requested_at:
            await self._recover_start(container)
        elif container.state is State.RUNNING:
            if self.alive(container):
                self._watch(container)
            else:
                await self._record_exit(container, recovered=True)
        elif container.state is State.EXITED:
            self._release_runtime(container)  # if pycri stopped before the runtime forgot it

    async def _retry_destroy(self, container: Container) -> None:
        async with self.lock(container.id):
            if container.id in self.containers:
                async with self._cleaning:
                    await self._destroy(container)

    async def _after_reboot(self, container: Container) -> None:
        """The node rebooted: every container has ended (with the code conmon recorded, if its exit file
        survived). One never started has too, as CRI-O reports it: its rootfs mount is gone with the
        boot, and so are its pod's namespaces."""
        container.pid = container.pid_start = 0  # from the previous boot: names nothing, or another process
        if container.state is State.EXITED:
            self._release_runtime(container)
        else:
            ran = container.state is not State.CREATED or container.start_requested_at
            log.warning("container %s: the node rebooted %s; EXITED", container.id, "while it ran" if ran else "before its start")
            await self._record_exit(container, recovered=True)  # reads what conmon recorded, without waiting
            if container.reason == UNKNOWN_EXIT_REASON:
                container.message = f"the node rebooted {'while the container ran' if ran else 'before the container started'}"
        await self._save(container)

    async def _recover_start(self, container: Container) -> None:
        """pycri stopped in the middle of StartContainer: ask the runtime how far it got (as containerd does)."""
        runtime, rc = self.runtime(container), self.in_runtime(container)
        current = await runtime.state(rc) if STEP_CREATED in container.steps else None  # raises: UNKNOWN
        requested, container.start_requested_at = container.start_requested_at, 0
        status = current.status if current is not None else ""
        log.warning("container %s was being started when pycri stopped; the runtime has it %s", container.id, status or "not")
        if current is not None and status in ("running", "paused"):
            container.state, container.started_at = State.RUNNING, requested
            container.pid, container.pid_start = current.pid, start_time(current.pid)
            await self._save(container)
            self._watch(container)
        elif status == "stopped":
            container.state, container.started_at = State.RUNNING, requested
            await self._record_exit(container, recovered=True, wait=EXIT_FILE_WAIT)
        else:
            # Created but never started, or not even created: it is CREATED, and not in the runtime.
            if status:
                await self._delete_from_runtime(container)
            if STEP_CREATED in container.steps:
                container.steps.remove(STEP_CREATED)
            container.pid = container.pid_start = 0
            await self._save(container)

    async def close(self) -> None:
        await asyncio.gather(*self._nri_updates, return_exceptions=True)
        await self.retrier.close()
        await asyncio.gather(*self._releases.values(), return_exceptions=True)
        await self.wait_removed()
        for task in list(self._watchers.values()):
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
