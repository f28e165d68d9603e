"""Containers: CreateContainer, StartContainer, ContainerStatus, ExecSync, StopContainer,
RemoveContainer, ListContainers; and pycri's create+start against bare runc.

    python -m benchmarks.bench_containers [--count 30] [--containers 200] [--per-pod 50]
                                          [--list-count 200] [--runc-count 30]
                                          [--containerd unix:///run/containerd-ref/containerd.sock]

Needs the local registries of ../shared/tools/test-registry.sh (``seed``): both runtimes pull
registry.k8s.io/e2e-test-images/busybox:1.29-2 through the mirror on 127.0.0.1:5000, pycri with
the registries.conf that ``test-registry.sh registries-conf`` prints.

For each runtime (a temporary pycri daemon, then containerd when it answers), in one pod:

- ``--count`` containers running ``sh -c "sleep 3600"``, one at a time: CreateContainer and
  StartContainer each (and their sum per container), then ContainerStatus and ExecSync
  (``true``) round-robin over them (``--count`` calls each) and Version (the gRPC floor),
  StopContainer (timeout 0: the runtime sends SIGKILL at once; PID 1 of the container would
  ignore SIGTERM anyway) and RemoveContainer each;
- ``--containers`` containers created and started in pods of ``--per-pod``: ListContainers
  (all of them, and filtered to this run's running ones) timed over ``--list-count`` calls.

Then the floor under pycri's CreateContainer+StartContainer: ``runc create`` + ``runc start``
run directly (``--runc-count`` times, each container deleted with ``runc delete --force``), with
the spec pycri generated for one of its containers (its pod's namespace paths and bind mounts
removed, so it gets fresh namespaces) over an overlay of the image's layers from pycri's store,
in a runc state directory of its own.

Every pod and container carries the label ``pycri-bench=<token of this run>``; all of them are
stopped and removed at the end, also on errors and Ctrl-C, and the image is removed again when
the runtime did not have it before. The runc containers, the overlay mount, its cgroups and
temporary directories are removed too.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks.bench_images import registries_conf
from benchmarks.common import (
    FLOOR,
    BenchDaemon,
    Result,
    answers,
    containerd_endpoint,
    exit_on_sigterm,
    measure,
    report,
    summary,
    timed,
    unless_unimplemented,
)
from pycri.api import api_pb2 as api
from pycri.client import Client, ClientError, NotFoundError
from pycri.host import cgroups
from pycri.testing import DaemonProcess

IMAGE = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
COMMAND = ["sh", "-c", "sleep 3600"]
LABEL = "pycri-bench"
NAMESPACE = "pycri-bench"
PULL_TIMEOUT = 120.0
GOAL_MS = 10.0
RUNC = "/usr/sbin/runc"


class ContainerSuite:
    def __init__(self, label: str, client: Client, args: argparse.Namespace) -> None:
        self.label = label
        self.client = client
        self.args = args
        self.token = secrets.token_hex(4)
        self.serial = itertools.count()
        self.pods: dict[str, api.PodSandboxConfig] = {}
        self.containers: list[str] = []  # created by this suite and not removed yet
        self.results: list[Result] = []
        self.had_image = self.has_image()
        self.pulled = False
        self.spec: dict[str, Any] | None = None  # pycri's runtime spec of one container (verbose status)

    # helpers ---------------------------------------------------------------------------------

    def has_image(self) -> bool:
        return bool(self.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=IMAGE))).image.id)

    def run_pod(self) -> str:
        name = f"bench-{self.token}-{next(self.serial)}"
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace=NAMESPACE, uid=str(uuid.uuid4()), attempt=0),
            hostname=name,
            labels={LABEL: self.token},
        )
        pod_id = self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=config), timeout=60).pod_sandbox_id
        self.pods[pod_id] = config
        return pod_id

    def create(self, pod_id: str) -> str:
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=f"c-{next(self.serial)}", attempt=0),
            image=api.ImageSpec(image=IMAGE),
            command=COMMAND,
            labels={LABEL: self.token},
        )
        request = api.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=self.pods[pod_id])
        container_id = self.client.create_container(request, timeout=60).container_id
        self.containers.append(container_id)
        return container_id

    def start(self, container_id: str) -> None:
        self.client.start_container(api.StartContainerRequest(container_id=container_id), timeout=60)

    def stop(self, container_id: str) -> None:
        self.client.stop_container(api.StopContainerRequest(container_id=container_id, timeout=0), timeout=60)

    def remove(self, container_id: str) -> None:
        self.client.remove_container(api.RemoveContainerRequest(container_id=container_id), timeout=60)
        self.containers.remove(container_id)

    def exec_true(self, container_id: str) -> None:
        response = self.client.exec_sync(api.ExecSyncRequest(container_id=container_id, cmd=["true"], timeout=10), timeout=30)
        if response.exit_code != 0:
            raise RuntimeError(f"{self.label}: ExecSync true exited {response.exit_code}: {response.stderr!r}")

    def add(self, name: str, samples: list[float]) -> None:
        if samples:
            self.results.append(Result(name, samples))

    def create_and_start(self, pod_id: str, n: int) -> tuple[list[str], list[float], list[float]]:
        ids: list[str] = []
        creates: list[float] = []
        starts: list[float] = []
        for _ in range(n):
            start = time.perf_counter()
            container_id = self.create(pod_id)
            created = time.perf_counter()
            self.start(container_id)
            creates.append((created - start) * 1000)
            starts.append((time.perf_counter() - created) * 1000)
            ids.append(container_id)
        return ids, creates, starts

    def grab_spec(self, container_id: str) -> None:
        with contextlib.suppress(ClientError, ValueError, KeyError, TypeError):
            info = self.client.container_status(api.ContainerStatusRequest(container_id=container_id, verbose=True)).info
            spec = json.loads(info["info"])["runtimeSpec"]
            if isinstance(spec, dict):
                self.spec = spec

    # stages ----------------------------------------------------------------------------------

    def pull(self) -> None:
        self.pulled = True
        self.client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=IMAGE)), timeout=PULL_TIMEOUT)

    def lifecycle(self) -> None:
        pod_id = self.run_pod()
        warm, _, _ = self.create_and_start(pod_id, 2)  # first container of a pod / of the process
        self.grab_spec(warm[0])
        for container_id in warm:
            self.stop(container_id)
            self.remove(container_id)
        n = self.args.count
        ids, creates, starts = self.create_and_start(pod_id, n)
        self.add("CreateContainer", creates)
        self.add("StartContainer", starts)
        self.add("Create+StartContainer", [c + s for c, s in zip(creates, starts, strict=True)])
        status = itertools.cycle([api.ContainerStatusRequest(container_id=cid) for cid in ids])
        self.results.append(measure("ContainerStatus", lambda: self.client.container_status(next(status)), n, 5))
        self.results.append(measure(FLOOR, self.client.version, n, 5))
        targets = itertools.cycle(ids)
        self.results.append(measure("ExecSync true", lambda: self.exec_true(next(targets)), n, 3))
        self.add("StopContainer (timeout 0)", [timed(functools.partial(self.stop, cid)) for cid in ids])
        self.add("RemoveContainer", [timed(functools.partial(self.remove, cid)) for cid in ids])

    def many(self) -> None:
        n, per_pod = self.args.containers, max(1, self.args.per_pod)
        ids: list[str] = []
        while len(ids) < n:
            more, _, _ = self.create_and_start(self.run_pod(), min(per_pod, n - len(ids)))
            ids += more
        listing = api.ListContainersRequest()
        count = self.args.list_count
        got = len(self.client.list_containers(listing).containers)
        if got < n:
            raise RuntimeError(f"{self.label}: ListContainers shows {got} containers, {n} expected")
        self.results.append(measure(f"ListContainers ({n})", lambda: self.client.list_containers(listing), count, 10))
        running = api.ListContainersRequest(
            filter=api.ContainerFilter(
                state=api.ContainerStateValue(state=api.CONTAINER_RUNNING), label_selector={LABEL: self.token}
            )
        )
        self.results.append(measure(f"ListContainers ({n}, filter)", lambda: self.client.list_containers(running), count, 10))

    def run(self, between: contextlib.AbstractContextManager[object] | None = None) -> list[Result]:
        """All stages; ``between`` is entered after the lifecycle stage (image and pod still there)
        and left before the cleanup."""
        with contextlib.ExitStack() as stack:
            stack.callback(self.cleanup)
            if unless_unimplemented(self.label, "image pull", self.pull):
                unless_unimplemented(self.label, "container lifecycle", self.lifecycle)
                if between is not None:
                    stack.enter_context(between)
                if self.args.containers:
                    unless_unimplemented(self.label, f"{self.args.containers} containers", self.many)
        return self.results

    # cleanup ---------------------------------------------------------------------------------

    def labelled_containers(self) -> list[str]:
        selector = api.ListContainersRequest(filter=api.ContainerFilter(label_selector={LABEL: self.token}))
        return [c.id for c in self.client.list_containers(selector).containers]

    def labelled_pods(self) -> list[str]:
        selector = api.ListPodSandboxRequest(filter=api.PodSandboxFilter(label_selector={LABEL: self.token}))
        return [p.id for p in self.client.list_pod_sandbox(selector).items]

    def cleanup(self) -> None:
        """Remove every container and pod of this run (known, or found by its label), and the image
        when the runtime did not have it before and no other container uses it."""
        failures: list[str] = []
        containers = list(self.containers)
        with contextlib.suppress(ClientError):
            containers += [cid for cid in self.labelled_containers() if cid not in containers]
        for cid in containers:
            try:
                with contextlib.suppress(NotFoundError):
                    self.stop(cid)
                with contextlib.suppress(NotFoundError):
                    self.client.remove_container(api.RemoveContainerRequest(container_id=cid), timeout=60)
            except ClientError as exc:
                failures.append(f"container {cid[:13]}: {exc}")
        self.containers.clear()
        pods = list(self.pods)
        try:
            pods += [pod_id for pod_id in self.labelled_pods() if pod_id not in pods]
        except ClientError as exc:
            failures.append(f"ListPodSandbox: {exc}")
        for pod_id in pods:
            try:
                with contextlib.suppress(NotFoundError):
                    self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
                with contextlib.suppress(NotFoundError):
                    self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=60)
            except ClientError as exc:
                failures.append(f"pod {pod_id[:13]}: {exc}")
        try:
            self.remove_image()
        except ClientError as exc:
            failures.append(f"image {IMAGE}: {exc}")
        if failures:
            print(f"{self.label}: cleanup failed: {failures}")

    def remove_image(self) -> None:
        if self.had_image or not self.pulled or not self.has_image():
            return
        if self.client.list_containers(api.ListContainersRequest()).containers:
            print(f"{self.label}: other containers exist, so {IMAGE} stays")
            return
        with contextlib.suppress(NotFoundError):
            self.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=IMAGE)))


# bare runc ------------------------------------------------------------------------------------


class RuncBaseline(contextlib.AbstractContextManager["RuncBaseline"]):
    """An OCI bundle over the image's layers in pycri's store, and a runc state directory of its own.

    Entering mounts the overlay rootfs; leaving deletes every container of that state directory,
    unmounts and removes everything."""

    def __init__(self, spec: dict[str, Any], lower: list[Path], pod_dirs: tuple[str, ...]) -> None:
        self.token = secrets.token_hex(4)
        self.dir = Path(tempfile.mkdtemp(prefix="pycri-bench-runc-"))
        self.bundle = self.dir / "bundle"
        self.rootfs = self.bundle / "rootfs"
        self.state = self.dir / "state"
        self.log = self.dir / "runc.log"
        self.lower = lower
        self.spec = spec
        self.pod_dirs = pod_dirs  # a mount whose source lies below one of them is the pod's
        self.mounted = False
        self.cgroups: set[str] = set()

    def __enter__(self) -> RuncBaseline:
        try:
            for d in (self.rootfs, self.dir / "upper", self.dir / "work", self.state):
                d.mkdir(parents=True)
            options = f"lowerdir={':'.join(str(p) for p in self.lower)},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(self.rootfs)], check=True, capture_output=True
            )
            self.mounted = True
            (self.bundle / "config.json").write_text(json.dumps(self.rewrite(self.spec)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def rewrite(self, spec: dict[str, Any]) -> dict[str, Any]:
        spec = json.loads(json.dumps(spec))
        spec["root"] = {"path": str(self.rootfs), "readonly": False}
        spec.pop("hooks", None)
        spec.setdefault("process", {})["terminal"] = False
        spec["mounts"] = [
            m
            for m in spec.get("mounts", [])
            if not str(m.get("source", "")).startswith(self.pod_dirs) and m.get("type") != "bind"
        ]
        linux = spec.setdefault("linux", {})
        linux["namespaces"] = [{"type": ns["type"]} for ns in linux.get("namespaces", [])]
        linux.pop("cgroupsPath", None)  # set per container
        return spec

    def cgroups_path(self, cid: str) -> str:
        return f"/pycri-bench-runc/{cid}"

    def runc(self, *argv: str) -> None:
        # Not captured: the container's init inherits these descriptors and would hold a pipe open.
        done = subprocess.run(
            [RUNC, "--root", str(self.state), "--log", str(self.log), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"runc {' '.join(argv)} exited {done.returncode}:\n{tail}")

    def configure(self, cid: str) -> None:
        # the config names its cgroup: one per container, written before the (untimed) create
        config = json.loads((self.bundle / "config.json").read_text())
        config["linux"]["cgroupsPath"] = self.cgroups_path(cid)
        (self.bundle / "config.json").write_text(json.dumps(config))
        self.cgroups.add(self.cgroups_path(cid))

    def measure(self, count: int, warmup: int = 2) -> list[Result]:
        creates: list[float] = []
        starts: list[float] = []
        deletes: list[float] = []
        for i in range(warmup + count):
            cid = f"bench-{self.token}-{i}"
            self.configure(cid)
            create = timed(functools.partial(self.runc, "create", "--bundle", str(self.bundle), cid))
            start = timed(functools.partial(self.runc, "start", cid))
            delete = timed(functools.partial(self.runc, "delete", "--force", cid))
            if i >= warmup:
                creates.append(create)
                starts.append(start)
                deletes.append(delete)
        return [
            Result("runc create", creates),
            Result("runc start", starts),
            Result("runc create+start", [c + s for c, s in zip(creates, starts, strict=True)]),
            Result("runc delete --force", deletes),
        ]

    def __exit__(self, *exc: object) -> None:
        if self.state.is_dir():
            listed = subprocess.run([RUNC, "--root", str(self.state), "list", "-q"], capture_output=True, text=True)
            for cid in listed.stdout.split():
                subprocess.run([RUNC, "--root", str(self.state), "delete", "--force", cid], capture_output=True)
        self.remove_cgroups()
        if self.mounted:
            subprocess.run(["umount", str(self.rootfs)], check=False, capture_output=True)
            self.mounted = False
        with open("/proc/self/mountinfo") as f:
            still = [line.split()[4] for line in f if line.split()[4].startswith(str(self.dir))]
        if still:
            print(f"runc baseline: still mounted: {still}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def remove_cgroups(self) -> None:
        """runc delete removes a container's cgroups, but not their parent /pycri-bench-runc (and on
        a hybrid host not the unified one)."""
        found = cgroups.detect()
        hierarchies = [Path(p) for p in Path("/sys/fs/cgroup").iterdir() if p.is_dir() and not p.is_symlink()]
        if found.unified is not None:
            hierarchies.append(Path(found.unified))
        for root in set(hierarchies):
            for path in sorted(self.cgroups):
                with contextlib.suppress(OSError):
                    Path(root, path.lstrip("/")).rmdir()
            with contextlib.suppress(OSError):
                Path(root, "pycri-bench-runc").rmdir()


def runc_baseline(
    suite: ContainerSuite, daemon: DaemonProcess, results: list[Result]
) -> contextlib.AbstractContextManager[object]:
    """While the pycri suite holds the image: time bare runc with its container's spec (into ``results``)."""

    @contextlib.contextmanager
    def baseline() -> Any:
        if suite.spec is None:
            print("runc baseline skipped: no runtime spec from pycri's ContainerStatus(verbose)")
            yield
            return
        info = suite.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=IMAGE), verbose=True)).info
        chain_ids = json.loads(info["info"])["chainIDs"]
        layers = Path(daemon.cfg.root_dir) / "images" / "layers"
        lower = [layers / str(c).partition(":")[2] for c in reversed(chain_ids)]  # topmost first
        pod_dirs = (str(daemon.workdir), daemon.cfg.root_dir, daemon.cfg.state_dir)
        with RuncBaseline(suite.spec, lower, pod_dirs) as runc:
            results.extend(runc.measure(suite.args.runc_count))
        yield

    return baseline()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=30, help="containers created, started, stopped, removed one at a time")
    parser.add_argument("--containers", type=int, default=200, help="containers running while ListContainers is timed")
    parser.add_argument("--per-pod", type=int, default=50, help="containers per pod for --containers")
    parser.add_argument("--list-count", type=int, default=200, help="ListContainers calls")
    parser.add_argument("--runc-count", type=int, default=30, help="bare runc create+start+delete rounds")
    parser.add_argument("--containerd", help="containerd CRI endpoint to compare with")
    parser.add_argument("--log-level", default="info", help="pycri daemon log level (debug logs every RPC's time)")
    parser.add_argument("--keep-log", metavar="FILE", help="copy the pycri daemon's log there at the end")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    start = time.monotonic()

    baseline: list[Result] = []
    fd, conf = tempfile.mkstemp(prefix="pycri-bench-registries-", suffix=".conf")
    os.write(fd, registries_conf().encode())
    os.close(fd)
    try:
        daemon = BenchDaemon.temporary(images={"registries_conf": conf})
        daemon.log_level = args.log_level
        with daemon:
            try:
                with Client(daemon.socket, timeout=30) as client:
                    ours_suite = ContainerSuite("pycri", client, args)
                    ours = ours_suite.run(runc_baseline(ours_suite, daemon, baseline))
                left = daemon.leftovers()
                if left:
                    print(f"pycri left runtime state behind: {left}")
            finally:
                if args.keep_log:
                    shutil.copy(daemon.log_path, args.keep_log)
    finally:
        os.unlink(conf)

    endpoint = containerd_endpoint(args.containerd)
    theirs: list[Result] | None = None
    if endpoint:
        with Client(endpoint, timeout=30) as client:
            if answers(client, endpoint):
                theirs = ContainerSuite("containerd", client, args).run()

    print(f"{IMAGE} running {' '.join(COMMAND)!r}; {args.count} containers one at a time, {args.containers} at once")
    print(f"({args.per_pod} per pod); {args.list_count} ListContainers calls; blocking Python gRPC client over a unix socket")
    print(report(ours, theirs))
    print(summary(ours, theirs))
    if baseline:
        print(f"bare runc ({args.runc_count} rounds, pycri's spec with fresh namespaces, overlay of the image's layers):")
        print(report(baseline, []).splitlines()[0].replace("pycri p50", " runc p50"))
        print("\n".join(report(baseline, []).splitlines()[1:-1]))
        ours_cs = next((r for r in ours if r.name == "Create+StartContainer"), None)
        runc_cs = next(r for r in baseline if r.name == "runc create+start")
        if ours_cs is not None:
            gap = ours_cs.p50 - runc_cs.p50
            verdict = "met" if gap <= GOAL_MS else "missed"
            print(
                f"pycri CreateContainer+StartContainer p50 - bare runc create+start p50 = {gap:.1f} ms "
                f"(goal: within {GOAL_MS:.0f} ms; {verdict})"
            )
    print(f"total {time.monotonic() - start:.0f}s")
    return 0


def interrupted() -> int:
    print("interrupted; cleanup done (any container, pod or image it could not remove is named above)")
    return 130


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        raise SystemExit(interrupted()) from None
