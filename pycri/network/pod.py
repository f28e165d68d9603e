"""A pod's network: its namespace, loopback, and the default CNI network.

The CNI configuration used for ADD is stored with the sandbox, so DEL after a
restart (or after the conf dir changed) runs against exactly what was set up.
Port mappings go to plugins as the ``portMappings`` capability, bandwidth
annotations as ``bandwidth``, kubelet's pod CIDR as ``ipRanges``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from pathlib import Path
from typing import Any, Protocol

from pycri.api import api_pb2 as api
from pycri.config import Config
from pycri.errors import FailedPrecondition, InvalidArgument
from pycri.network import cni, cni_exec, netns

log = logging.getLogger("pycri.network")

INGRESS_ANNOTATION = "kubernetes.io/ingress-bandwidth"
EGRESS_ANNOTATION = "kubernetes.io/egress-bandwidth"
MAX_BURST = 2**31 - 1  # as kubelet's dockershim and containerd pass it

_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([kKMGTPE]i?|m)?$")
_FACTORS = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_quantity(text: str, what: str) -> int:
    """A Kubernetes resource quantity (``10M``, ``1Gi``, ``500k``) as an integer."""
    match = _QUANTITY.match(text.strip())
    if not match:
        raise InvalidArgument(f"{what}: {text!r} is not a quantity")
    return math.ceil(float(match.group(1)) * _FACTORS[match.group(2)])


def bandwidth(annotations: Any) -> dict[str, int] | None:
    caps: dict[str, int] = {}
    if INGRESS_ANNOTATION in annotations:
        caps["ingressRate"] = parse_quantity(annotations[INGRESS_ANNOTATION], f"config.annotations[{INGRESS_ANNOTATION}]")
        caps["ingressBurst"] = MAX_BURST
    if EGRESS_ANNOTATION in annotations:
        caps["egressRate"] = parse_quantity(annotations[EGRESS_ANNOTATION], f"config.annotations[{EGRESS_ANNOTATION}]")
        caps["egressBurst"] = MAX_BURST
    return caps or None


_PROTOCOLS = {api.TCP: "tcp", api.UDP: "udp", api.SCTP: "sctp"}


def port_mappings(config: api.PodSandboxConfig) -> list[dict[str, Any]]:
    return [
        {
            "hostPort": m.host_port,
            "containerPort": m.container_port,
            "protocol": _PROTOCOLS.get(m.protocol, "tcp"),
            "hostIP": m.host_ip,
        }
        for m in config.port_mappings
        if m.host_port > 0
    ]


class Attachment(Protocol):
    """What the network needs of a pod sandbox (pycri.sandboxes.model.Sandbox fits)."""

    id: str
    config: api.PodSandboxConfig
    netns: str
    ips: list[str]
    network_name: str
    network_result: dict[str, Any] | None
    userns_path: str  # a pinned user namespace to own the netns ("" for the host's)


class CNIPodNetwork:
    def __init__(self, cfg: Config, pod_cidr: Any) -> None:
        self.cfg = cfg
        self.bin_dirs = cfg.cni.bin_dirs
        self._pod_cidr = pod_cidr  # a callable giving the current pod CIDR

    async def prepare(self) -> None:
        """Write the default network when the conf dir has none, so a fresh node runs pods."""
        written = await cni.ensure_default_network(
            Path(self.cfg.cni.conf_dir), self.cfg.cni.default_subnet, self.cfg.cni.default_bridge
        )
        if written is not None:
            log.info("no CNI network was configured: wrote %s (bridge, %s)", written, self.cfg.cni.default_subnet)

    def _request(self, sandbox: Attachment) -> cni_exec.PodNetworkRequest:
        config = sandbox.config
        return cni_exec.PodNetworkRequest(
            container_id=sandbox.id,
            netns=sandbox.netns,
            pod_name=config.metadata.name,
            pod_namespace=config.metadata.namespace,
            pod_uid=config.metadata.uid,
            port_mappings=port_mappings(config),
            bandwidth=bandwidth(config.annotations),
            pod_cidr=self._pod_cidr(),
        )

    async def plan(self, sandbox: Attachment) -> None:
        """Choose the netns path and the network before anything exists, so a crash can be undone."""
        networks, problems = await asyncio.to_thread(cni.load_networks, Path(self.cfg.cni.conf_dir))
        if not networks:
            detail = "; ".join(problems) or "none found"
            raise FailedPrecondition(f"pod network: no CNI network in {self.cfg.cni.conf_dir}: {detail}")
        network = networks[0]
        self._request(sandbox)  # validates annotations before anything is created
        sandbox.netns = str(netns.path_of(f"pycri-{sandbox.id[:16]}"))
        sandbox.network_name = network.name
        sandbox.network_result = {"conflist": network.raw, "result": None}

    async def setup(self, sandbox: Attachment) -> None:
        """Create the planned netns and attach it (``plan`` ran, and its result was recorded)."""
        await netns.create(Path(sandbox.netns).name, userns=sandbox.userns_path)
        stored = sandbox.network_result or {}
        network = cni.parse(Path(f"<planned config of {sandbox.id}>.conflist"), json.dumps(stored["conflist"]))
        await cni_exec.loopback_up(sandbox.netns, self.bin_dirs, container_id=sandbox.id)
        result = await cni_exec.add(network, self._request(sandbox), self.bin_dirs)
        sandbox.network_result = {"conflist": network.raw, "result": result.to_dict()}
        sandbox.ips = cni_exec.ips_of(result)

    async def teardown(self, sandbox: Attachment) -> None:
        if not sandbox.netns:
            return
        stored = sandbox.network_result or {}
        conflist = stored.get("conflist")
        if conflist:
            network = cni.parse(Path(f"<stored config of {sandbox.id}>.conflist"), json.dumps(conflist))
            await cni_exec.delete(network, self._request(sandbox), self.bin_dirs, stored.get("result"))
        await cni_exec.loopback_down(sandbox.netns, self.bin_dirs, container_id=sandbox.id)
        await netns.delete(sandbox.netns)
