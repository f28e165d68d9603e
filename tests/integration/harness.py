"""The pods-and-containers harness of the container integration tests.

``h`` (in conftest.py) gives each test a ``Harness`` on its module's shared daemon, which has
pulled the module's ``IMAGES`` (or a plain busybox image); the harness removes every pod the test
made and then checks that the daemon knows no container any more and left no runtime state behind.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pycri.api import api_pb2 as api
from pycri.client import Client
from pycri.testing import DaemonProcess

SLEEP = ("/bin/sleep", "1000")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)) (stdout|stderr) ([FP]) (.*)$")


def wait_for(what: str, check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """``check()``'s first truthy value; fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def proc_status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict (host view)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def parse_log(path: str | Path) -> list[tuple[str, str, str, str]]:
    """The CRI log file as (timestamp, stream, tag, text); every line must match the format."""
    entries = []
    for line in Path(path).read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, f"not a CRI log line: {line!r}"
        entries.append((match[1], match[2], match[3], match[4]))
    return entries


def mounted_below(prefix: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(str(prefix))]


@dataclass
class Pod:
    id: str
    config: api.PodSandboxConfig
    info: dict[str, Any]
    ip: str


class Harness:
    """Pods and containers of one test on one daemon; ``cleanup`` removes every pod it made."""

    def __init__(self, client: Client, daemon: DaemonProcess, refs: dict[str, str], tmp_path: Path) -> None:
        self.client = client
        self.daemon = daemon
        self.refs = refs
        self.tmp = tmp_path
        self.pods: list[str] = []

    # pods
    def pod(
        self,
        name: str,
        *,
        privileged: bool = False,
        pid: api.NamespaceMode.ValueType = api.POD,
        handler: str = "",
        userns: api.UserNamespace | None = None,
    ) -> Pod:
        config = api.PodSandboxConfig(
            metadata=api.PodSandboxMetadata(name=name, namespace="containers", uid=f"uid-{name}"),
            hostname=f"{name}-host",
            log_directory=str(self.tmp / "logs" / name),
            labels={"pod": name},
        )
        config.linux.security_context.privileged = privileged
        config.linux.security_context.namespace_options.pid = pid
        if userns is not None:
            config.linux.security_context.namespace_options.userns_options.CopyFrom(userns)
        pod_id = self.client.run_pod_sandbox(api.RunPodSandboxRequest(config=config, runtime_handler=handler)).pod_sandbox_id
        self.pods.append(pod_id)
        response = self.client.pod_sandbox_status(api.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
        return Pod(pod_id, config, json.loads(response.info["info"]), response.status.network.ip)

    # containers
    def config(
        self,
        name: str,
        command: Sequence[str] = SLEEP,
        *,
        image: str = "plain",
        args: Sequence[str] = (),
        security: api.LinuxContainerSecurityContext | None = None,
        resources: api.LinuxContainerResources | None = None,
        **fields: Any,
    ) -> api.ContainerConfig:
        config = api.ContainerConfig(
            metadata=api.ContainerMetadata(name=name),
            image=api.ImageSpec(image=self.refs[image]),
            command=list(command),
            args=list(args),
            log_path=f"{name}.log",
            **fields,
        )
        if security is not None:
            config.linux.security_context.CopyFrom(security)
        if resources is not None:
            config.linux.resources.CopyFrom(resources)
        return config

    def create(self, pod: Pod, config: api.ContainerConfig) -> str:
        request = api.CreateContainerRequest(pod_sandbox_id=pod.id, config=config, sandbox_config=pod.config)
        return self.client.create_container(request).container_id

    def container(self, pod: Pod, name: str, command: Sequence[str] = SLEEP, *, start: bool = True, **kw: Any) -> str:
        cid = self.create(pod, self.config(name, command, **kw))
        if start:
            self.start(cid)
        return cid

    def start(self, cid: str) -> None:
        self.client.start_container(api.StartContainerRequest(container_id=cid))

    def stop(self, cid: str, timeout: int = 0) -> None:
        self.client.stop_container(api.StopContainerRequest(container_id=cid, timeout=timeout))

    def remove(self, cid: str) -> None:
        self.client.remove_container(api.RemoveContainerRequest(container_id=cid))

    def status(self, cid: str) -> api.ContainerStatus:
        return self.client.container_status(api.ContainerStatusRequest(container_id=cid)).status

    def info(self, cid: str) -> dict[str, Any]:
        response = self.client.container_status(api.ContainerStatusRequest(container_id=cid, verbose=True))
        info: dict[str, Any] = json.loads(response.info["info"])
        return info

    def pid(self, cid: str) -> int:
        return int(self.info(cid)["pid"])

    def exec(self, cid: str, *cmd: str, timeout: int = 10) -> api.ExecSyncResponse:
        return self.client.exec_sync(api.ExecSyncRequest(container_id=cid, cmd=list(cmd), timeout=timeout))

    def sh(self, cid: str, script: str) -> str:
        """Run ``sh -c script`` in the container; it must succeed; returns its stdout."""
        result = self.exec(cid, "/bin/sh", "-c", script)
        assert result.exit_code == 0, f"{script!r} exited {result.exit_code}: {result.stderr.decode()}"
        return result.stdout.decode()

    def fails(self, cid: str, script: str) -> str:
        """Run ``sh -c script``; it must fail; returns its stderr."""
        result = self.exec(cid, "/bin/sh", "-c", script)
        assert result.exit_code != 0, f"{script!r} succeeded: {result.stdout.decode()}"
        return result.stderr.decode()

    def wait_state(self, cid: str, state: api.ContainerState.ValueType, timeout: float = 10.0) -> api.ContainerStatus:
        status: api.ContainerStatus = wait_for(
            f"container {cid[:12]} to be {api.ContainerState.Name(state)}",
            lambda: (s := self.status(cid)).state == state and s,
            timeout,
        )
        return status

    def wait_exited(self, cid: str, timeout: float = 10.0) -> api.ContainerStatus:
        return self.wait_state(cid, api.CONTAINER_EXITED, timeout)

    def log_path(self, cid: str) -> str:
        return self.status(cid).log_path

    def stdout(self, cid: str) -> list[str]:
        """The container's stdout lines (full lines only)."""
        path = self.log_path(cid)
        if not os.path.exists(path):
            return []
        return [text for _, stream, tag, text in parse_log(path) if stream == "stdout" and tag == "F"]

    def wait_log(self, cid: str, text: str, timeout: float = 10.0) -> list[str]:
        lines: list[str] = wait_for(
            f"{text!r} in the log of {cid[:12]}", lambda: text in self.stdout(cid) and self.stdout(cid), timeout
        )
        return lines

    def list(self, filt: api.ContainerFilter | None = None) -> set[str]:
        request = api.ListContainersRequest(filter=filt) if filt is not None else api.ListContainersRequest()
        return {c.id for c in self.client.list_containers(request).containers}

    def cleanup(self) -> None:
        for pod_id in self.pods:
            self.client.stop_pod_sandbox(api.StopPodSandboxRequest(pod_sandbox_id=pod_id))
            self.client.remove_pod_sandbox(api.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        self.pods.clear()


def bind(
    host: Path, container: str, *, readonly: bool = False, propagation: api.MountPropagation.ValueType = api.PROPAGATION_PRIVATE
) -> api.Mount:
    return api.Mount(container_path=container, host_path=str(host), readonly=readonly, propagation=propagation)
