"""The CNI execution protocol against fake plugins: small scripts that record their calls."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from pycri.errors import FailedPrecondition, InvalidArgument
from pycri.network import cni, cni_exec
from pycri.network.cni_exec import CNIError, CNIResult, PodNetworkRequest, ips_of

NETNS = "/proc/self/ns/net"  # a real namespace reference; the fake plugins never enter it

FAKE_PLUGIN = """#!{python}
import json, os, sys, time
NAME = {name!r}
DIR = {dir!r}
conf = json.loads(sys.stdin.read())
env = {{k: v for k, v in os.environ.items() if k.startswith("CNI_") or k == "PYCRI_TEST_MARK"}}
with open(os.path.join(DIR, "calls.jsonl"), "a") as f:
    f.write(json.dumps({{"plugin": NAME, "env": env, "stdin": conf}}) + "\\n")
with open(os.path.join(DIR, NAME + ".json")) as f:
    behaviour = json.load(f).get(env["CNI_COMMAND"], {{}})
time.sleep(behaviour.get("sleep", 0))
if "error" in behaviour:
    print(json.dumps(behaviour["error"]))
    sys.exit(1)
if "raw" in behaviour:
    sys.stdout.write(behaviour["raw"])
    sys.stderr.write(behaviour.get("stderr", ""))
    sys.exit(behaviour.get("exit", 0))
if env["CNI_COMMAND"] == "ADD":
    result = behaviour.get("result")
    if result is None:
        result = conf["prevResult"]
        result["interfaces"].append({{"name": NAME}})
    print(json.dumps(result))
"""

RESULT_1_0 = {
    "cniVersion": "1.0.0",
    "interfaces": [
        {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
        {"name": "veth1234", "mac": "aa:bb:cc:00:00:02"},
        {"name": "eth0", "mac": "aa:bb:cc:00:00:03", "sandbox": NETNS},
    ],
    "ips": [
        {"address": "fd00:10::5/64", "gateway": "fd00:10::1", "interface": 2},
        {"address": "10.88.0.5/16", "gateway": "10.88.0.1", "interface": 2},
        {"address": "10.88.0.1/16", "interface": 0},
    ],
    "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0", "gw": "fd00:10::1"}],
    "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]},
}


class Plugins:
    def __init__(self, root: Path) -> None:
        self.dir = root / "bin"
        self.dir.mkdir()

    @property
    def bin_dirs(self) -> list[str]:
        return [str(self.dir), "/nonexistent/cni"]

    def add(self, name: str, **behaviour: dict[str, Any]) -> None:
        path = self.dir / name
        path.write_text(FAKE_PLUGIN.format(python=sys.executable, name=name, dir=str(self.dir)))
        path.chmod(0o755)
        (self.dir / f"{name}.json").write_text(json.dumps(behaviour))

    def calls(self) -> list[dict[str, Any]]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]

    def sequence(self) -> list[tuple[str, str]]:
        return [(c["env"]["CNI_COMMAND"], c["plugin"]) for c in self.calls()]

    def reset(self) -> None:
        (self.dir / "calls.jsonl").unlink(missing_ok=True)


@pytest.fixture
def plugins(tmp_path: Path) -> Plugins:
    return Plugins(tmp_path)


def network(*plugins: dict[str, Any], version: str = "1.0.0", name: str = "testnet") -> cni.NetworkList:
    doc = {"cniVersion": version, "name": name, "plugins": list(plugins)}
    return cni.parse(Path("/etc/cni/net.d/10-test.conflist"), json.dumps(doc))


def request(**kwargs: Any) -> PodNetworkRequest:
    base: dict[str, Any] = {
        "container_id": "abc123",
        "netns": NETNS,
        "pod_name": "web-0",
        "pod_namespace": "shop",
        "pod_uid": "7f0e-11",
    }
    base.update(kwargs)
    return PodNetworkRequest(**base)


def cni_args(env: dict[str, str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in env["CNI_ARGS"].split(";"))


# ---------------------------------------------------------------- ADD


async def test_add_environment_stdin_and_chaining(plugins: Plugins, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNI_STALE", "from-the-daemon")
    monkeypatch.setenv("PYCRI_TEST_MARK", "inherited")
    plugins.add("first", ADD={"result": RESULT_1_0})
    plugins.add("second")
    plugins.add("third")
    net = network(
        {"type": "first", "bridge": "cni0"},
        {"type": "second", "capabilities": {"portMappings": True, "bandwidth": True}},
        {"type": "third", "capabilities": {"ipRanges": True, "portMappings": False}, "runtimeConfig": {"keep": 1}},
    )
    mappings = [{"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": "127.0.0.1"}]
    bandwidth = {"ingressRate": 1_000_000, "ingressBurst": 100_000, "egressRate": 2_000_000, "egressBurst": 200_000}
    req = request(port_mappings=mappings, bandwidth=bandwidth, pod_cidr="10.1.2.0/24,fd00:1::/64", extra_args={"FOO": "bar"})

    result = await cni_exec.add(net, req, plugins.bin_dirs)

    calls = plugins.calls()
    assert [c["plugin"] for c in calls] == ["first", "second", "third"]
    for call in calls:
        env = call["env"]
        assert env["CNI_COMMAND"] == "ADD"
        assert env["CNI_CONTAINERID"] == "abc123"
        assert env["CNI_NETNS"] == NETNS
        assert env["CNI_IFNAME"] == "eth0"
        assert env["CNI_PATH"] == f"{plugins.dir}:/nonexistent/cni"
        assert "CNI_STALE" not in env
        assert env["PYCRI_TEST_MARK"] == "inherited"
        assert cni_args(env) == {
            "IgnoreUnknown": "1",
            "K8S_POD_NAMESPACE": "shop",
            "K8S_POD_NAME": "web-0",
            "K8S_POD_INFRA_CONTAINER_ID": "abc123",
            "K8S_POD_UID": "7f0e-11",
            "FOO": "bar",
        }
        assert call["stdin"]["name"] == "testnet"
        assert call["stdin"]["cniVersion"] == "1.0.0"
    first, second, third = (c["stdin"] for c in calls)
    assert first == {"type": "first", "bridge": "cni0", "name": "testnet", "cniVersion": "1.0.0"}
    assert second["prevResult"] == RESULT_1_0
    assert second["runtimeConfig"] == {
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}],
        "bandwidth": bandwidth,
    }
    assert third["prevResult"]["interfaces"][-1] == {"name": "second"}
    assert third["runtimeConfig"] == {"keep": 1, "ipRanges": [[{"subnet": "10.1.2.0/24"}], [{"subnet": "fd00:1::/64"}]]}
    assert third["capabilities"] == {"ipRanges": True, "portMappings": False}

    assert [i.name for i in result.interfaces] == ["cni0", "veth1234", "eth0", "second", "third"]
    assert ips_of(result) == ["10.88.0.5", "fd00:10::5"]
    stored = json.loads(json.dumps(result.to_dict()))
    assert stored["interfaces"][-1] == {"name": "third"}
    assert CNIResult.from_dict(stored) == result


async def test_runtime_config_only_for_values_given(plugins: Plugins) -> None:
    plugins.add("only", ADD={"result": RESULT_1_0})
    net = network({"type": "only", "capabilities": {"portMappings": True, "bandwidth": True, "ipRanges": True}})
    await cni_exec.add(net, request(), plugins.bin_dirs)
    assert "runtimeConfig" not in plugins.calls()[0]["stdin"]
    assert "prevResult" not in plugins.calls()[0]["stdin"]


async def test_failure_rolls_back_what_was_added(plugins: Plugins) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    plugins.add("b")
    plugins.add("c", ADD={"error": {"cniVersion": "1.0.0", "code": 7, "msg": "no more ports", "details": "range full"}})
    plugins.add("d")
    net = network({"type": "a"}, {"type": "b"}, {"type": "c"}, {"type": "d"}, name="podnet")

    with pytest.raises(CNIError) as err:
        await cni_exec.add(net, request(), plugins.bin_dirs)

    assert plugins.sequence() == [("ADD", "a"), ("ADD", "b"), ("ADD", "c"), ("DEL", "c"), ("DEL", "b"), ("DEL", "a")]
    exc = err.value
    assert (exc.plugin, exc.network, exc.command) == ("c", "podnet", "ADD")
    assert (exc.msg, exc.details, exc.plugin_code) == ("no more ports", "range full", 7)
    for text in ("'c'", "'podnet'", "no more ports", "range full"):
        assert text in exc.message
    dels = [c["stdin"] for c in plugins.calls() if c["env"]["CNI_COMMAND"] == "DEL"]
    assert all(d["prevResult"]["interfaces"][-1] == {"name": "b"} for d in dels)


async def test_failed_rollback_is_reported_too(plugins: Plugins) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0}, DEL={"error": {"code": 11, "msg": "cannot release"}})
    plugins.add("b", ADD={"error": {"code": 11, "msg": "cannot attach"}})
    with pytest.raises(CNIError) as err:
        await cni_exec.add(network({"type": "a"}, {"type": "b"}), request(), plugins.bin_dirs)
    assert plugins.sequence() == [("ADD", "a"), ("ADD", "b"), ("DEL", "b"), ("DEL", "a")]
    assert err.value.plugin == "b"
    assert "cannot attach" in err.value.message
    assert "cleaning up also failed" in err.value.message
    assert "cannot release" in err.value.message


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [
        ({"raw": "this is not json"}, "invalid result"),
        ({"raw": '["a", "list"]'}, "invalid result"),
        ({"raw": '{"cniVersion": "1.0.0", "ips": [{"address": "not-an-ip"}]}'}, "ips[0].address"),
        ({"raw": "", "exit": 0}, "invalid result"),
        ({"raw": "panic: runtime error", "stderr": "goroutine 1 [running]", "exit": 2}, "goroutine 1"),
    ],
)
async def test_garbage_output(plugins: Plugins, behaviour: dict[str, Any], expected: str) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    plugins.add("junk", ADD=behaviour)
    with pytest.raises(CNIError) as err:
        await cni_exec.add(network({"type": "a"}, {"type": "junk"}), request(), plugins.bin_dirs)
    assert expected in err.value.message
    assert err.value.plugin == "junk"
    assert plugins.sequence()[-2:] == [("DEL", "junk"), ("DEL", "a")]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_timeout_kills_the_plugin_and_its_children(plugins: Plugins) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    slow = plugins.dir / "slow"
    slow.write_text(
        "#!/bin/sh\n"
        'if [ "$CNI_COMMAND" = DEL ]; then echo del >> "$0.del"; exit 0; fi\n'
        'sleep 60 & echo "$$ $!" > "$0.pids"\n'
        "wait\n"
    )
    slow.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(CNIError) as err:
        await cni_exec.add(network({"type": "a"}, {"type": "slow"}), request(), plugins.bin_dirs, timeout=0.5)
    assert time.monotonic() - started < 10
    assert "no answer after 0.5s" in err.value.message
    assert err.value.plugin == "slow"
    pids = [int(p) for p in (plugins.dir / "slow.pids").read_text().split()]
    for _ in range(100):  # killed at once; reaping an orphan may take a moment
        if not any(_alive(p) for p in pids):
            break
        await asyncio.sleep(0.05)
    assert not any(_alive(p) for p in pids)
    assert (plugins.dir / "slow.del").read_text() == "del\n"
    assert plugins.sequence() == [("ADD", "a"), ("DEL", "a")]


async def test_missing_plugin_fails_before_running_anything(plugins: Plugins) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    with pytest.raises(FailedPrecondition, match="'nope' not found"):
        await cni_exec.add(network({"type": "a"}, {"type": "nope"}), request(), plugins.bin_dirs)
    assert plugins.calls() == []


async def test_add_needs_a_live_namespace(plugins: Plugins, tmp_path: Path) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    for path in (str(tmp_path / "gone"), str(plain)):
        with pytest.raises(FailedPrecondition, match="does not exist"):
            await cni_exec.add(network({"type": "a"}), request(netns=path), plugins.bin_dirs)
    assert plugins.calls() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"container_id": ""},
        {"container_id": "a;b"},
        {"ifname": "a-very-long-interface-name"},
        {"pod_name": "x;IgnoreUnknown=0"},
        {"extra_args": {"K": "a=b"}},
        {"pod_cidr": "10.1.2.0/33"},
    ],
)
async def test_invalid_requests(plugins: Plugins, kwargs: dict[str, Any]) -> None:
    plugins.add("a", ADD={"result": RESULT_1_0})
    with pytest.raises(InvalidArgument):
        await cni_exec.add(network({"type": "a"}), request(**kwargs), plugins.bin_dirs)
    assert plugins.calls() == []


# ---------------------------------------------------------------- DEL


async def test_delete_in_reverse_order_with_stored_result(plugins: Plugins) -> None:
    for name in ("a", "b", "c"):
        plugins.add(name)
    net = network({"type": "a"}, {"type": "b", "capabilities": {"portMappings": True}}, {"type": "c"})
    mappings = [{"hostPort": 80, "containerPort": 8080, "protocol": "udp"}]
    await cni_exec.delete(net, request(port_mappings=mappings), plugins.bin_dirs, RESULT_1_0)
    await cni_exec.delete(net, request(port_mappings=mappings), plugins.bin_dirs, RESULT_1_0)  # idempotent
    assert plugins.sequence() == [("DEL", "c"), ("DEL", "b"), ("DEL", "a")] * 2
    for call in plugins.calls():
        assert call["env"]["CNI_NETNS"] == NETNS
        assert call["stdin"]["prevResult"] == RESULT_1_0
    assert plugins.calls()[1]["stdin"]["runtimeConfig"] == {"portMappings": mappings}


async def test_delete_after_the_namespace_is_gone(plugins: Plugins, tmp_path: Path) -> None:
    plugins.add("a")
    stale = tmp_path / "stale"  # a file whose bind mount went away is no namespace either
    stale.write_text("")
    for path in (str(tmp_path / "gone"), str(stale), ""):
        plugins.reset()
        await cni_exec.delete(network({"type": "a"}), request(netns=path), plugins.bin_dirs, None)
        (call,) = plugins.calls()
        assert call["env"]["CNI_NETNS"] == ""
        assert "prevResult" not in call["stdin"]


async def test_delete_tries_every_plugin_then_raises(plugins: Plugins) -> None:
    plugins.add("a")
    plugins.add("b", DEL={"error": {"code": 11, "msg": "busy", "details": "try later"}})
    plugins.add("c")
    net = network({"type": "a"}, {"type": "b"}, {"type": "missing"}, {"type": "c"}, name="podnet")
    with pytest.raises(CNIError) as err:
        await cni_exec.delete(net, request(), plugins.bin_dirs, RESULT_1_0)
    assert plugins.sequence() == [("DEL", "c"), ("DEL", "b"), ("DEL", "a")]
    assert "busy (try later)" in err.value.message
    assert "'missing' not found" in err.value.message
    assert err.value.network == "podnet"
    assert err.value.command == "DEL"


async def test_delete_passes_prev_result_from_0_4_0_only(plugins: Plugins) -> None:
    plugins.add("a")
    await cni_exec.delete(network({"type": "a"}, version="0.3.1"), request(), plugins.bin_dirs, RESULT_1_0)
    await cni_exec.delete(network({"type": "a"}, version="0.4.0"), request(), plugins.bin_dirs, RESULT_1_0)
    old, new = (c["stdin"] for c in plugins.calls())
    assert "prevResult" not in old
    assert new["prevResult"] == RESULT_1_0


# ---------------------------------------------------------------- loopback


async def test_loopback_up_and_down(plugins: Plugins) -> None:
    lo = {"cniVersion": "1.0.0", "interfaces": [{"name": "lo", "sandbox": NETNS}], "ips": []}
    lo["ips"] = [{"address": "127.0.0.1/8", "interface": 0}, {"address": "::1/128", "interface": 0}]
    plugins.add("loopback", ADD={"result": lo})
    result = await cni_exec.loopback_up(NETNS, plugins.bin_dirs, container_id="abc123")
    assert ips_of(result, "lo") == ["127.0.0.1", "::1"]
    await cni_exec.loopback_down("/run/netns/pycri-surely-absent", plugins.bin_dirs)
    up, down = plugins.calls()
    assert up["stdin"] == {"cniVersion": "1.0.0", "name": "pycri-loopback", "type": "loopback"}
    assert (up["env"]["CNI_IFNAME"], up["env"]["CNI_CONTAINERID"], up["env"]["CNI_COMMAND"]) == ("lo", "abc123", "ADD")
    assert (down["env"]["CNI_NETNS"], down["env"]["CNI_CONTAINERID"]) == ("", "pycri-surely-absent")


# ---------------------------------------------------------------- results


def test_ips_of_1_0_0() -> None:
    assert ips_of(RESULT_1_0) == ["10.88.0.5", "fd00:10::5"]
    assert ips_of(RESULT_1_0, "cni0") == []  # host-side interfaces are not the pod's
    assert ips_of(RESULT_1_0, "net1") == []
    parsed = CNIResult.from_dict(RESULT_1_0)
    assert parsed.ips[1].gateway == "10.88.0.1"
    assert parsed.ips[1].interface == 2
    assert parsed.routes[0].gw is None
    assert parsed.routes[1].gw == "fd00:10::1"
    assert parsed.dns.nameservers == ["10.96.0.10"]
    assert parsed.dns.search == ["svc.cluster.local"]
    assert parsed.interfaces[2].sandbox == NETNS


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_ips_of_0_3_and_0_4(version: str) -> None:
    result = {
        "cniVersion": version,
        "interfaces": [{"name": "br0"}, {"name": "eth0", "sandbox": "/run/netns/x"}, {"name": "net1", "sandbox": "/x"}],
        "ips": [
            {"version": "6", "address": "2001:db8::2/64", "interface": 1},
            {"version": "4", "address": "10.1.0.2/24", "gateway": "10.1.0.1", "interface": 1},
            {"version": "4", "address": "10.1.0.3/24", "interface": 1},
            {"version": "4", "address": "192.168.5.2/24", "interface": 2},
        ],
    }
    assert ips_of(result) == ["10.1.0.2", "10.1.0.3", "2001:db8::2"]
    assert ips_of(result, "net1") == ["192.168.5.2"]


def test_ips_of_without_interfaces_or_indexes() -> None:
    assert ips_of({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.2.0.9/16"}]}) == ["10.2.0.9"]
    partial = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "sandbox": "/x"}],
        "ips": [{"address": "10.2.0.9/16"}, {"address": "10.3.0.9/16", "interface": 0}],
    }
    assert ips_of(partial) == ["10.2.0.9", "10.3.0.9"]
    # A plugin that does not fill in sandbox: match by name alone.
    unsandboxed = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "x"}, {"name": "eth0"}],
        "ips": [{"address": "10.4.0.2/24", "interface": 1}],
    }
    assert ips_of(unsandboxed) == ["10.4.0.2"]


def test_ips_of_legacy_0_2_0() -> None:
    result = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.9.0.4/16", "gateway": "10.9.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::4/64"},
        "dns": {},
    }
    assert ips_of(result) == ["10.9.0.4", "fd00::4"]
    parsed = CNIResult.from_dict(result)
    assert parsed.routes == [cni_exec.Route(dst="0.0.0.0/0")]
    assert parsed.to_dict() == result


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"cniVersion": 1},
        {"cniVersion": "1.0.0", "ips": {}},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": -1}]},
        {"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/24", "interface": True}]},
        {"cniVersion": "1.0.0", "interfaces": [{"mac": "x"}]},
        {"cniVersion": "1.0.0", "routes": [{"gw": "10.0.0.1"}]},
        {"cniVersion": "1.0.0", "dns": {"nameservers": "8.8.8.8"}},
        {"cniVersion": "0.2.0", "ip4": {"ip": "nonsense"}},
    ],
)
def test_invalid_results(bad: Any) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies with the field
        CNIResult.from_dict(bad)


def test_result_is_a_copy() -> None:
    raw = json.loads(json.dumps(RESULT_1_0))
    parsed = CNIResult.from_dict(raw)
    raw["ips"].clear()
    out = parsed.to_dict()
    out["interfaces"].clear()
    assert parsed.to_dict() == RESULT_1_0


# ---------------------------------------------------------------- default network


async def test_default_network_written_once(tmp_path: Path) -> None:
    conf_dir = tmp_path / "net.d"
    path = await cni.ensure_default_network(conf_dir, "10.88.0.0/16")
    assert path == conf_dir / "10-pycri.conflist"
    assert os.listdir(conf_dir) == ["10-pycri.conflist"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o644
    loaded = cni.parse(path, path.read_text())
    assert loaded.name == "pycri"
    assert loaded.cni_version == "1.0.0"
    assert loaded.plugin_types == ["bridge", "portmap", "bandwidth"]
    bridge, portmap, bandwidth = loaded.plugins
    assert bridge["bridge"] == "pycri0"
    assert (bridge["isGateway"], bridge["ipMasq"], bridge["hairpinMode"]) == (True, False, True)
    assert bridge["ipam"] == {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}
    assert "capabilities" not in bridge
    assert portmap["capabilities"] == {"portMappings": True}
    assert bandwidth["capabilities"] == {"bandwidth": True}
    assert "masq" not in path.read_text().lower().replace('"ipmasq": false', "")
    assert cni.readiness(conf_dir, ["/usr/lib/cni"])[0] == os.access("/usr/lib/cni/bandwidth", os.X_OK)

    before = path.read_text()
    assert await cni.ensure_default_network(conf_dir, "10.99.0.0/16", bridge="other0") is None
    assert path.read_text() == before


async def test_default_network_not_over_an_existing_one(tmp_path: Path) -> None:
    (tmp_path / "05-mine.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "mine", "type": "ptp"}))
    assert await cni.ensure_default_network(tmp_path, "10.88.0.0/16") is None
    assert os.listdir(tmp_path) == ["05-mine.conf"]


async def test_default_network_ipv6_and_bad_input(tmp_path: Path) -> None:
    doc = cni.default_network("br-v6", "fd00:88::/64")
    assert doc["plugins"][0]["ipam"]["routes"] == [{"dst": "::/0"}]
    with pytest.raises(InvalidArgument, match="subnet"):
        await cni.ensure_default_network(tmp_path, "10.88.0.1/16")
    with pytest.raises(InvalidArgument, match="bridge"):
        cni.default_network("a-much-too-long-bridge", "10.88.0.0/16")
    assert os.listdir(tmp_path) == []
