"""Pod networking with the real CNI plugins of containernetworking-plugins (root only).

Each test builds its own bridge (``pycri-t<hex>``) on a random private /24 of
10.250.0.0/16, without masquerading, and talks only to network namespaces it
created. Everything made here is removed again: namespaces, bridge, veths,
ifb devices, host-local allocations; no iptables chain names the container.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import random
import secrets
import shutil
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycri.errors import AlreadyExists
from pycri.network import cni, cni_exec, netns

BIN_DIRS = ["/usr/lib/cni"]
PLUGINS = ("bridge", "host-local", "loopback", "portmap", "bandwidth")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(
        any(not os.access(f"{BIN_DIRS[0]}/{p}", os.X_OK) for p in PLUGINS), reason="containernetworking-plugins missing"
    ),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 missing"),
]


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name).returncode == 0


def links() -> set[str]:
    out = sh("ip", "-o", "link", "show").stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line}


def iptables_mentions(text: str) -> list[str]:
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            found += [line for line in sh(tool).stdout.splitlines() if text in line]
    return found


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def icmp_ping(address: str, timeout: float = 2.0) -> bool:
    """One ICMP echo to ``address`` (ping -c1 -W2, without needing iputils-ping)."""
    ident, seq, payload = os.getpid() & 0xFFFF, 1, b"pycri-cni-test"
    header = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    packet = struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, seq) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
        s.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, (source, _) = s.recvfrom(2048)
            except TimeoutError:
                return False
            ihl = (data[0] & 0x0F) * 4
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl : ihl + 8])
            if source == address and kind == 0 and rid == ident and rseq == seq:
                return True
    return False


def ipam_holders(data_dir: Path, container_id: str) -> list[Path]:
    if not data_dir.exists():
        return []
    return [p for p in data_dir.rglob("*") if p.is_file() and container_id in p.read_text(errors="replace")]


@dataclass
class Bed:
    suffix: str
    bridge: str
    ns_name: str
    container_id: str
    subnet: ipaddress.IPv4Network
    pod_cidr: ipaddress.IPv4Network
    data_dir: Path
    conf_path: Path

    def conflist(self, *extra: dict[str, object]) -> cni.NetworkList:
        doc = {
            "cniVersion": "1.0.0",
            "name": f"pycri-test-{self.suffix}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "capabilities": {"ipRanges": True},
                    # host-local prepends runtimeConfig.ipRanges to its own ranges (one IP per range
                    # set): a network taking the pod CIDR must not list the same family itself.
                    "ipam": {"type": "host-local", "ranges": [], "dataDir": str(self.data_dir)},
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "bandwidth", "capabilities": {"bandwidth": True}},
                *extra,
            ],
        }
        text = json.dumps(doc, indent=2)
        self.conf_path.write_text(text)
        return cni.parse(self.conf_path, text)

    def request(self, **kwargs: object) -> cni_exec.PodNetworkRequest:
        return cni_exec.PodNetworkRequest(
            container_id=self.container_id,
            netns=str(netns.NETNS_DIR / self.ns_name),
            pod_name="web",
            pod_namespace="pycri-test",
            pod_uid=str(uuid.uuid4()),
            pod_cidr=str(self.pod_cidr),
            **kwargs,  # type: ignore[arg-type]
        )


def free_subnet() -> ipaddress.IPv4Network:
    routes = sh("ip", "-o", "route", "show").stdout + sh("ip", "-o", "addr", "show").stdout
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.250.{random.randrange(256)}.0/24")
        if f"10.250.{subnet.network_address.packed[2]}." not in routes:
            return subnet
    raise AssertionError("no free /24 in 10.250.0.0/16")


@pytest.fixture
async def testnet(tmp_path: Path) -> AsyncIterator[Bed]:
    suffix = secrets.token_hex(2)
    subnet = free_subnet()
    net = Bed(
        suffix=suffix,
        bridge=f"pycri-t{suffix}",
        ns_name=f"pycri-test-{suffix}",
        container_id=f"pycritest{secrets.token_hex(12)}",
        subnet=subnet,
        pod_cidr=next(subnet.subnets(new_prefix=25)),
        data_dir=tmp_path / "ipam",
        conf_path=tmp_path / "test.conflist",
    )
    forward = await asyncio.to_thread(IP_FORWARD.read_text)  # the bridge plugin turns forwarding on (isGateway)
    before = links()
    try:
        yield net
    finally:
        if net.conf_path.exists():  # best effort: a failed test may have left an attachment
            network = cni.parse(net.conf_path, net.conf_path.read_text())
            try:
                await cni_exec.delete(network, net.request(), BIN_DIRS)
            except Exception as exc:
                print(f"cleanup: {exc}")
        await netns.delete(net.ns_name)
        if link_exists(net.bridge):
            sh("ip", "link", "del", net.bridge)
        for name in links() - before:
            if name.startswith(("veth", "bwp")):
                sh("ip", "link", "del", name)
        await asyncio.to_thread(IP_FORWARD.write_text, forward)
        assert not link_exists(net.bridge)
        assert not (netns.NETNS_DIR / net.ns_name).exists()
        assert links() <= before
        assert iptables_mentions(net.container_id) == []


async def test_pod_network_lifecycle(testnet: Bed) -> None:
    ns = await netns.create(testnet.ns_name)
    assert ns == netns.NETNS_DIR / testnet.ns_name
    assert netns.exists(ns)
    with pytest.raises(AlreadyExists):
        await netns.create(testnet.ns_name)
    lo = await netns.run_in(testnet.ns_name, "ip", "-o", "link", "show", "lo")
    assert "state DOWN" in lo.stdout  # a fresh namespace has nothing up

    loop_result = await cni_exec.loopback_up(ns, BIN_DIRS, container_id=testnet.container_id)
    assert "127.0.0.1" in cni_exec.ips_of(loop_result, "lo")
    lo = await netns.run_in(testnet.ns_name, "ip", "-o", "link", "show", "lo")
    assert ",UP," in lo.stdout or "<LOOPBACK,UP" in lo.stdout

    network = testnet.conflist()
    bandwidth = {"ingressRate": 8_000_000, "ingressBurst": 800_000, "egressRate": 8_000_000, "egressBurst": 800_000}
    req = testnet.request(bandwidth=bandwidth)
    result = await cni_exec.add(network, req, BIN_DIRS)
    stored = json.dumps(result.to_dict())  # what the runtime keeps for DEL

    ips = cni_exec.ips_of(result)
    assert len(ips) == 1
    pod_ip = ipaddress.ip_address(ips[0])
    assert pod_ip in testnet.pod_cidr, "the ipRanges capability (pod CIDR) picks the range"
    gateway = result.ips[0].gateway
    assert gateway is not None
    assert ipaddress.ip_address(gateway) in testnet.pod_cidr
    eth0 = await netns.run_in(testnet.ns_name, "ip", "-o", "addr", "show", "dev", "eth0")
    assert f"inet {pod_ip}/" in eth0.stdout
    host_ifaces = [i.name for i in result.interfaces if not i.sandbox and i.name != testnet.bridge]
    veth = [n for n in host_ifaces if n.startswith("veth")]
    ifb = [n for n in host_ifaces if n.startswith("bwp")]  # bandwidth's egress mirror device
    assert len(veth) == 1, host_ifaces
    assert len(ifb) == 1, host_ifaces
    assert all(link_exists(n) for n in host_ifaces)
    qdiscs = sh("tc", "qdisc", "show", "dev", veth[0]).stdout
    assert "tbf" in qdiscs, qdiscs  # bandwidth shapes the pod's ingress on the host veth

    assert await asyncio.to_thread(icmp_ping, str(pod_ip)), "host -> bridge -> pod"
    if shutil.which("ping"):
        assert sh("ping", "-c1", "-W2", str(pod_ip)).returncode == 0

    await cni_exec.delete(network, req, BIN_DIRS, json.loads(stored))
    await cni_exec.delete(network, req, BIN_DIRS, json.loads(stored))  # idempotent
    assert not any(link_exists(n) for n in host_ifaces)
    assert ipam_holders(testnet.data_dir, testnet.container_id) == []
    eth0 = await netns.run_in(testnet.ns_name, "ip", "-o", "link", "show", "dev", "eth0", check=False)
    assert eth0.returncode != 0

    # Attach again, then lose the namespace first (as after a node reboot): DEL still cleans up.
    again = await cni_exec.add(network, req, BIN_DIRS)
    assert ipam_holders(testnet.data_dir, testnet.container_id)
    await netns.delete(ns)
    await netns.delete(ns)  # idempotent
    assert not netns.exists(ns)
    assert not ns.exists()
    await cni_exec.delete(network, req, BIN_DIRS, again.to_dict())
    await cni_exec.delete(network, req, BIN_DIRS, again.to_dict())
    await cni_exec.loopback_down(ns, BIN_DIRS, container_id=testnet.container_id)
    assert ipam_holders(testnet.data_dir, testnet.container_id) == []

    assert sh("ip", "link", "del", testnet.bridge).returncode == 0
    assert not link_exists(testnet.bridge)
    assert not [line for line in sh("ip", "netns", "list").stdout.splitlines() if testnet.ns_name in line]
    assert iptables_mentions(testnet.container_id) == []


async def test_failed_add_releases_what_earlier_plugins_took(testnet: Bed, tmp_path: Path) -> None:
    fake_dir = tmp_path / "bin"
    fake_dir.mkdir()
    failing = fake_dir / "pycri-fail"
    error = json.dumps({"cniVersion": "1.0.0", "code": 999, "msg": "refused", "details": "test"})
    failing.write_text(f"#!/bin/sh\ncat >/dev/null\nif [ \"$CNI_COMMAND\" = ADD ]; then echo '{error}'; exit 1; fi\n")
    failing.chmod(0o755)
    await netns.create(testnet.ns_name)
    network = testnet.conflist({"type": "pycri-fail"})
    req = testnet.request()
    with pytest.raises(cni_exec.CNIError) as err:
        await cni_exec.add(network, req, [str(fake_dir), *BIN_DIRS])
    assert err.value.plugin == "pycri-fail"
    assert err.value.msg == "refused"
    assert "refused" in err.value.message
    assert network.name in err.value.message
    assert ipam_holders(testnet.data_dir, testnet.container_id) == []
    eth0 = await netns.run_in(testnet.ns_name, "ip", "link", "show", "dev", "eth0", check=False)
    assert eth0.returncode != 0, "the bridge plugin's DEL removed the pod's veth"


async def test_netns_delete_handles_missing_and_stale(testnet: Bed) -> None:
    await netns.delete(testnet.ns_name)  # never existed: fine
    stale = netns.NETNS_DIR / testnet.ns_name
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_text("")  # a file whose bind mount is gone
    assert not netns.exists(stale)
    await netns.delete(stale)
    assert not stale.exists()
    ns = await netns.create(testnet.ns_name)
    out = await netns.run_in(testnet.ns_name, "ip", "-o", "link", "show")
    assert [line.split(":")[1].strip() for line in out.stdout.splitlines()] == ["lo"]
    await netns.delete(str(ns))
    assert not ns.exists()
