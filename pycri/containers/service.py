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
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from pycri import conmon, errors, oci
from pycri.api import api_pb2 as api
from pycri.config import Config
from pycri.containers import image_volumes
from pycri.containers import rootfs as rootfs_mod
from pycri.containers.model import CRI_STATES, STEP_CREATED, STEP_DIR, STEP_ROOTFS, Container, State
from pycri.containers.specs import HOST
from pycri.host.tree import remove_tree
from pycri.images.records import ImageRecord
from pycri.images.service import ImageService
from pycri.oci import container_spec, hybrid
from pycri.sandboxes.model import Sandbox
from pycri.sandboxes.model import State as SandboxState
from pycri.sandboxes.service import SandboxService, match_labels

log = logging.getLogger("pycri.containers")

MAX_EXEC_OUTPUT = 16 * 1024 * 1024 - 64 * 1024  # leaves room in a 16 MiB gRPC message
EXIT_FILE_WAIT = 2.0
REOPEN_WAIT = 5.0
TERMINATION_MESSAGE_LIMIT = 4096
TERMINATION_PATH_ANNOTATION = "io.kubernetes.container.terminationMessagePath"

SpecBuilder = Callable[[Container, Sandbox, dict[str, Any]], Any]


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


class ContainerService:
    def __init__(
        self, cfg: Config, store: Any, handlers: dict[str, oci.OCIRuntime], sandboxes: SandboxService, images: ImageService
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.handlers = handlers
        self.sandboxes = sandboxes
        self.images = images
        self.root = Path(cfg.root_dir) / "containers"
        self.exit_dir = Path(cfg.state_dir) / "exits"
        self.sockets_dir = Path(cfg.state_dir) / "sockets"
        self.containers: dict[str, Container] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._names = asyncio.Lock()
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._removing: dict[str, Container] = {}  # removed, clean-up under way
        self._cleanups: dict[str, asyncio.Task[None]] = {}
        self._cleaning = asyncio.Lock()
        self._releases: dict[str, asyncio.Task[None]] = {}
        self.build_spec: SpecBuilder | None = None  # set by the daemon: (container, sandbox, image config) -> spec dict
        sandboxes.containers = self
        images.in_use = self.chain_ids_in_use

    # -- helpers ------------------------------------------------------------------------------

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def chain_ids_in_use(self) -> set[str]:
        containers = [*self.containers.values(), *self._removing.values()]  # removing ones still mount their layers
        return {c for container in containers for c in container.all_chain_ids}

    def find(self, id_or_prefix: str) -> Container | None:
        if not id_or_prefix:
            return None
        found = self.containers.get(id_or_prefix)
        if found is not None:
            return found
        matches = [c for i, c in self.containers.items() if i.startswith(id_or_prefix)]
        if len(matches) > 1:
            raise errors.InvalidArgument(f"container_id: prefix {id_or_prefix!r} matches {len(matches)} containers")
        return matches[0] if matches else None

    def get(self, id_or_prefix: str, field: str = "container_id") -> Container:
        if not id_or_prefix:
            raise errors.InvalidArgument(f"{field}: required")
        found = self.find(id_or_prefix)
        if found is None:
            raise errors.NotFound(f"container {id_or_prefix!r} not found")
        return found

    @staticmethod
    def _cgroups_path(container: Container) -> str:
        try:
            spec = json.loads((container.bundle / "config.json").read_text())
        except (OSError, ValueError):
            return ""
        return str(spec.get("linux", {}).get("cgroupsPath", ""))

    def runtime(self, container: Container) -> oci.OCIRuntime:
        return self.handlers[container.runtime_handler]

    async def _save(self, container: Container) -> None:
        await self.store.containers.put(container.to_row())

    # -- create / start -----------------------------------------------------------------------

    async def create(self, sandbox_id: str, config: api.ContainerConfig, sandbox_config: api.PodSandboxConfig) -> Container:
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
            log_path = os.path.join(sandbox.config.log_directory, config.log_path)
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
                await asyncio.shield(self._destroy(container))
                if isinstance(exc, OSError):
                    raise errors.Internal(f"creating container {md.name!r}: {exc}") from exc
                raise
        log.info("container %s (%s) created in pod %s", cid, md.name, sandbox.id)
        return container

    async def _build(self, container: Container, sandbox: Sandbox, image_config: dict[str, Any]) -> None:
        """The directory, rootfs, image volumes and OCI bundle; the runtime creates it at start."""
        await asyncio.to_thread(self._make_rootfs, container, sandbox)
        if self.build_spec is None:
            raise errors.Unavailable("container spec generation is not set up")
        spec, user = await self.build_spec(container, sandbox, image_config)
        container.uid, container.gid, container.supplemental_groups = user
        await asyncio.to_thread(self._write_bundle, container, spec)
        container.state = State.CREATED
        await self._save(container)

    async def _create_in_runtime(self, container: Container) -> None:
        """conmon runs the runtime's ``create``; the container's process then waits to be started."""
        if STEP_CREATED in container.steps:
            # A start that failed, or a crash, left it half-made: start over.
            await oci.delete(self.runtime(container), container.id, force=True)
        else:
            container.steps.append(STEP_CREATED)
            await self._save(container)
        if container.log_path:
            await asyncio.to_thread(Path(container.log_path).parent.mkdir, parents=True, exist_ok=True)
        cspec = conmon.ConmonSpec(
            cid=container.id,
            bundle=container.bundle,
            log_path=f"k8s-file:{container.log_path}" if container.log_path else "k8s-file:/dev/null",
            exit_dir=self.exit_dir,
            socket_dir=self.sockets_dir,
            persist_dir=container.persist_dir,
            terminal=container.config.tty,
            stdin=container.config.stdin,
            stdin_once=container.config.stdin_once,
        )
        container.pid = await conmon.create(self.cfg.conmon, self.runtime(container), cspec)

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
            try:
                await self._create_in_runtime(container)
                started = time.time_ns()  # before the start: a process that exits at once ends after it
                await oci.start(self.runtime(container), container.id)
            except (conmon.ConmonError, oci.RuntimeCommandError, OSError) as exc:
                await self._record_exit(container, start_failed=str(exc))
                raise errors.Internal(f"starting container {container.id}: {exc}") from exc
            container.state = State.RUNNING
            container.started_at = started
            await self._save(container)
            self._watch(container)
        log.info("container %s started (pid %d)", container.id, container.pid)

    # -- exits ------------------------------------------------------------------------------------

    def _watch(self, container: Container) -> None:
        if container.id not in self._watchers:
            self._watchers[container.id] = asyncio.create_task(self._wait_exit(container))

    async def _wait_exit(self, container: Container) -> None:
        try:
            await conmon.wait_pid(container.pid, None)
            async with self.lock(container.id):
                if container.state is State.RUNNING:
                    await self._record_exit(container)
        except Exception:
            log.exception("watching container %s failed", container.id)
        finally:
            self._watchers.pop(container.id, None)

    async def _record_exit(self, container: Container, start_failed: str = "") -> None:
        """Read conmon's exit file (it lands a moment after the process ends) and mark the container exited."""
        code: int | None = None
        deadline = time.monotonic() + EXIT_FILE_WAIT
        pause = 0.001  # conmon writes the file a moment after reaping: look soon, then less often
        ran = bool(container.pid) and not start_failed  # else there is no exit file to wait for
        while code is None and time.monotonic() < deadline and ran:
            code = conmon.read_exit_code(self.exit_dir, container.id)  # one small read on tmpfs
            if code is None:
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)
        exit_path = conmon.exit_file(self.exit_dir, container.id)
        try:
            finished = (await asyncio.to_thread(os.stat, exit_path)).st_mtime_ns
        except FileNotFoundError:
            finished = time.time_ns()
        oom = any(await asyncio.to_thread(lambda: [(d / "oom").exists() for d in (container.persist_dir, container.bundle)]))
        container.state = State.EXITED
        container.finished_at = finished
        container.exit_code = code if code is not None else (128 + 9 if not start_failed else 128)
        if start_failed:
            container.reason, container.message = "StartError", start_failed
        elif oom:
            container.reason = "OOMKilled"
        else:
            container.reason = "Completed" if container.exit_code == 0 else "Error"
        if not start_failed:
            container.message = await asyncio.to_thread(self._termination_message, container)
        await self._save(container)
        self._release_runtime(container)
        log.info("container %s exited with %d (%s)", container.id, container.exit_code, container.reason)

    def _termination_message(self, container: Container) -> str:
        wanted = container.config.annotations.get(TERMINATION_PATH_ANNOTATION)
        for mount in container.config.mounts:
            if wanted and mount.container_path == wanted and mount.host_path:
                with contextlib.suppress(OSError), open(mount.host_path, "rb") as f:
                    return f.read(TERMINATION_MESSAGE_LIMIT).decode(errors="replace")
        return ""

    # -- stop / remove ------------------------------------------------------------------------------

    async def stop(self, cid: str, timeout: int) -> None:
        container = self.find(cid)
        if container is None:
            return  # already gone: success, as the API says
        async with self.lock(container.id):
            await self._stop(container, timeout)

    async def _stop(self, container: Container, timeout: int) -> None:
        if container.state is not State.RUNNING:
            if container.state is State.CREATED:
                # Never started: nothing runs (or, after a failed start, only the runtime's waiting init).
                if STEP_CREATED in container.steps and container.pid:
                    with contextlib.suppress(oci.RuntimeCommandError):
                        await oci.kill(self.runtime(container), container.id, "KILL")
                    await conmon.wait_pid(container.pid, 10)
                await self._record_exit(container)
            return
        runtime = self.runtime(container)
        if timeout > 0:
            with contextlib.suppress(oci.RuntimeCommandError):
                await oci.kill(runtime, container.id, container.stop_signal)
            if await conmon.wait_pid(container.pid, timeout):
                await self._finish(container)
                return
            log.info("container %s ignored %s for %ds: SIGKILL", container.id, container.stop_signal, timeout)
        with contextlib.suppress(oci.RuntimeCommandError):
            await oci.kill(runtime, container.id, "KILL", all_processes=True)
        if not await conmon.wait_pid(container.pid, 30):
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
        async with self.lock(container.id):
            if container.id not in self.containers:
                return
            await self._stop(container, 0)
            container.state = State.REMOVING
            await self._save(container)
            self._forget(container)
            self._removing[container.id] = container
            self._cleanups[container.id] = asyncio.create_task(self._clean_up(container))
        log.info("container %s removed", container.id)

    async def _clean_up(self, container: Container) -> None:
        try:
            async with self._cleaning:  # one at a time: a burst of removals must not crowd out the answers
                await self._destroy(container)
            self._removing.pop(container.id, None)
        except Exception:
            # Kept among the removing ones, so its layers stay in use; recovery retries it.
            log.exception("cleaning up removed container %s failed; recovery retries it", container.id)
        finally:
            self._cleanups.pop(container.id, None)

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
        runtime = self.runtime(container)
        # An exited container whose process is gone needs no `runtime state` round trip.
        known_dead = container.state is State.EXITED and not conmon.pid_alive(container.pid)
        state = None if known_dead else await oci.state(runtime, container.id)
        if state is not None and state.status not in ("stopped",):
            with contextlib.suppress(oci.RuntimeCommandError):
                await oci.kill(runtime, container.id, "KILL", all_processes=True)
            if state.pid:
                await conmon.wait_pid(state.pid, 10)
        await oci.delete(runtime, container.id, force=True)
        await asyncio.to_thread(hybrid.remove_unified_leftover, self._cgroups_path(container))

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
        for leftover in (conmon.exit_file(self.exit_dir, container.id), self.sockets_dir / container.id):
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(leftover.unlink)
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
        """Remove the pod's containers and wait until they are cleaned up (the pod goes next)."""
        for container in [c for c in self.containers.values() if c.sandbox_id == sandbox_id]:
            await self.remove(container.id)
        await self.wait_removed([c.id for c in self._removing.values() if c.sandbox_id == sandbox_id])

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

    async def exec_sync(self, cid: str, cmd: list[str], timeout: int) -> tuple[bytes, bytes, int]:
        container = self.get(cid)
        if not cmd:
            raise errors.InvalidArgument("cmd: required")
        if container.state is not State.RUNNING:
            raise errors.FailedPrecondition(f"container {container.id} is not running")
        runtime = self.runtime(container)
        token = secrets.token_hex(4)
        pid_file = container.dir / f"exec-{token}.pid"
        process_file = container.dir / f"exec-{token}.json"
        # The command runs as the container's own process does (user, groups, capabilities, env,
        # cwd, no_new_privs): runc's exec would inherit those, crun's would not.
        await asyncio.to_thread(self._write_exec_process, container, cmd, process_file)
        proc = await asyncio.create_subprocess_exec(
            runtime.path,
            "--root",
            runtime.root,
            "exec",
            "--process",
            str(process_file),
            "--pid-file",
            str(pid_file),
            container.id,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        budget = [MAX_EXEC_OUTPUT]

        async def drain(stream: asyncio.StreamReader) -> bytes:
            kept = bytearray()
            while chunk := await stream.read(65536):
                take = min(len(chunk), budget[0])
                kept += chunk[:take]
                budget[0] -= take
            return bytes(kept)

        readers = asyncio.gather(drain(proc.stdout), drain(proc.stderr), proc.wait())
        try:
            out, err, code = await asyncio.wait_for(asyncio.shield(readers), timeout if timeout > 0 else None)
        except TimeoutError:
            # Kill the command itself and let the runtime's exec process reap it and exit; killing
            # that one first would orphan the command as a zombie in the container.
            pid = await asyncio.to_thread(conmon.read_pid, pid_file)
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal_mod.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(readers), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            raise errors.DeadlineExceeded(f"command {cmd[0]!r} in container {container.id} timed out after {timeout}s") from None
        finally:
            for leftover in (pid_file, process_file):
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
        return out, err, int(code)

    @staticmethod
    def _write_exec_process(container: Container, cmd: list[str], target: Path) -> None:
        spec = json.loads((container.bundle / "config.json").read_text())
        process = dict(spec["process"])
        process["args"] = list(cmd)
        process["terminal"] = False
        process.pop("consoleSize", None)
        target.write_text(json.dumps(process))

    async def update_resources(self, cid: str, resources: api.LinuxContainerResources) -> None:
        container = self.get(cid)
        async with self.lock(container.id):
            if container.state not in (State.CREATED, State.RUNNING):
                raise errors.FailedPrecondition(f"container {container.id} is {container.state.value}: cannot update resources")
            oci_resources = container_spec.linux_resources(
                resources, swap_controller=HOST.swap, hugetlb_controller=HOST.hugetlb, what="linux"
            )
            if STEP_CREATED not in container.steps:
                # Not in the runtime yet: the new limits go into the bundle it will be created from.
                await asyncio.to_thread(self._update_bundle_resources, container, oci_resources)
                container.resources = json_format.MessageToDict(resources, preserving_proto_field_name=True)
                await self._save(container)
                return
            runtime = self.runtime(container)
            proc = await asyncio.create_subprocess_exec(
                runtime.path,
                "--root",
                runtime.root,
                "update",
                "--resources",
                "-",
                container.id,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await proc.communicate(json.dumps(oci_resources).encode())
            if proc.returncode != 0:
                raise errors.Internal(f"updating resources of {container.id}: {err.decode(errors='replace').strip()}")
            container.resources = json_format.MessageToDict(resources, preserving_proto_field_name=True)
            await self._save(container)

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
        container = self.get(cid)
        if container.state is not State.RUNNING:
            raise errors.FailedPrecondition(f"container {container.id} is not running")
        ctl = container.bundle / "ctl"

        def write() -> None:
            fd = os.open(ctl, os.O_WRONLY | os.O_NONBLOCK)
            try:
                os.write(fd, b"2 0 0\n")  # conmon's control message: reopen the log file
            finally:
                os.close(fd)

        try:
            await asyncio.to_thread(write)
        except OSError as exc:
            raise errors.Internal(f"asking conmon of {container.id} to reopen its log: {exc}") from exc
        # conmon handles the request on its own loop: answer once the (new) log file is there.
        if container.log_path:
            deadline = time.monotonic() + REOPEN_WAIT
            while not await asyncio.to_thread(os.path.exists, container.log_path):
                if time.monotonic() > deadline:
                    raise errors.Internal(
                        f"conmon of {container.id} did not reopen {container.log_path} within {REOPEN_WAIT:.0f}s"
                    )
                await asyncio.sleep(0.01)

    # -- recovery -------------------------------------------------------------------------------------

    async def recover(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        for row in await self.store.containers.all():
            container = Container.from_row(row)
            self.containers[container.id] = container
            if container.state is State.REMOVING:
                log.info("container %s was being cleaned up after its removal; finishing", container.id)
                await self._destroy(container)
                continue
            if container.state is State.CREATING or container.sandbox_id not in self.sandboxes.sandboxes:
                log.warning("container %s was half-made or lost its pod; cleaning it up", container.id)
                await self._destroy(container)
                continue
            if container.state is State.RUNNING:
                if conmon.pid_alive(container.pid):
                    self._watch(container)
                else:
                    await self._record_exit(container)
            elif container.state is State.EXITED:
                self._release_runtime(container)  # if pycri stopped before the runtime forgot it
        known = set(self.containers)
        for name in await asyncio.to_thread(os.listdir, self.root):
            if name not in known:
                leftover = self.root / name
                try:
                    await asyncio.to_thread(rootfs_mod.unmount_rootfs, leftover)
                except OSError as exc:
                    log.error("leftover container directory %s kept: %s", leftover, exc)
                    continue
                await asyncio.to_thread(remove_tree, leftover, True)
        log.info("containers: %d recovered", len(self.containers))

    async def close(self) -> None:
        await asyncio.gather(*self._releases.values(), return_exceptions=True)
        await self.wait_removed()
        for task in list(self._watchers.values()):
            task.cancel()
        await asyncio.gather(*self._watchers.values(), return_exceptions=True)
