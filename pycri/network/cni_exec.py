"""Running CNI plugins: the execution protocol of the CNI spec (https://www.cni.dev/docs/spec/).

Each plugin of a network list is an executable found by its ``type`` in the
bin dirs. It gets its parameters in the environment (``CNI_COMMAND``,
``CNI_CONTAINERID``, ``CNI_NETNS``, ``CNI_IFNAME``, ``CNI_ARGS``, ``CNI_PATH``)
and its configuration on stdin: the plugin's own object plus the list's
``name`` and ``cniVersion``, the previous plugin's result as ``prevResult``
(ADD chaining; on DEL the stored result of the ADD, from version 0.4.0), and
``runtimeConfig`` holding the runtime's values for the capabilities the plugin
declares in its ``capabilities`` map (``portMappings``, ``bandwidth``,
``ipRanges``). It answers with a result (ADD) or an error object, both JSON on
stdout.

Results are kept as the JSON objects the plugins printed (:meth:`CNIResult.to_dict`),
so a caller can store the result of :func:`add` and hand it back to
:func:`delete` after a daemon restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.errors import FailedPrecondition, Internal, InvalidArgument
from pycri.host.checks import find_cni_plugin
from pycri.network import netns
from pycri.network.cni import NetworkList

DEFAULT_TIMEOUT = 60.0
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LOOPBACK_CONFIG: dict[str, Any] = {"cniVersion": "1.0.0", "name": "pycri-loopback", "type": "loopback"}
_OUTPUT_LIMIT = 2000


class CNIError(Internal):
    """A plugin failed (error object, bad output, timeout) or a list operation did."""

    def __init__(
        self,
        message: str,
        *,
        network: str = "",
        plugin: str = "",
        command: str = "",
        plugin_code: int | None = None,
        msg: str = "",
        details: str = "",
    ) -> None:
        super().__init__(message)
        self.network = network
        self.plugin = plugin
        self.command = command
        self.plugin_code = plugin_code  # the error object's "code" (``code`` is the gRPC one)
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------- results


def version_tuple(version: str) -> tuple[int, ...]:
    """``"0.4.0"`` -> ``(0, 4, 0)``; an empty or unparsable version counts as 0.1.0, as libcni does."""
    try:
        parts = tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0, 1, 0)
    return parts if parts else (0, 1, 0)


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str = ""
    sandbox: str = ""


@dataclass(frozen=True)
class IPConfig:
    address: str  # with prefix length, "10.88.0.5/16"
    gateway: str | None = None
    interface: int | None = None  # index into CNIResult.interfaces

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version


@dataclass(frozen=True)
class Route:
    dst: str
    gw: str | None = None


@dataclass(frozen=True)
class DNS:
    nameservers: list[str] = field(default_factory=list)
    domain: str = ""
    search: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)


def _strings(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{what} must be a list of strings")
    return list(value)


def _opt_str(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string")
    return value


def _address(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a CIDR address string")
    try:
        ipaddress.ip_interface(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    return value


def _routes(value: Any, what: str) -> list[Route]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} must be a list")
    routes = []
    for i, r in enumerate(value):
        if not isinstance(r, dict) or not isinstance(r.get("dst"), str):
            raise ValueError(f"{what}[{i}] needs a 'dst'")
        routes.append(Route(dst=r["dst"], gw=_opt_str(r.get("gw"), f"{what}[{i}].gw")))
    return routes


def _dns(value: Any) -> DNS:
    if value is None:
        return DNS()
    if not isinstance(value, dict):
        raise ValueError("'dns' must be an object")
    return DNS(
        nameservers=_strings(value.get("nameservers"), "dns.nameservers"),
        domain=_opt_str(value.get("domain"), "dns.domain") or "",
        search=_strings(value.get("search"), "dns.search"),
        options=_strings(value.get("options"), "dns.options"),
    )


@dataclass(frozen=True)
class CNIResult:
    """A parsed plugin result (versions 0.1.0 to 1.0.0); ``raw`` is the JSON object as printed."""

    cni_version: str
    interfaces: list[Interface]
    ips: list[IPConfig]
    routes: list[Route]
    dns: DNS
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, data: Any) -> CNIResult:
        """Parse a result object; ``ValueError`` says what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError("a CNI result must be a JSON object")
        version = data.get("cniVersion", "")
        if not isinstance(version, str):
            raise ValueError("'cniVersion' must be a string")
        if version_tuple(version) < (0, 3, 0) or "ip4" in data or "ip6" in data:
            return cls._from_legacy(data, version)
        interfaces = []
        raw_ifaces = data.get("interfaces")
        raw_ifaces = [] if raw_ifaces is None else raw_ifaces
        if not isinstance(raw_ifaces, list):
            raise ValueError("'interfaces' must be a list")
        for i, iface in enumerate(raw_ifaces):
            if not isinstance(iface, dict) or not isinstance(iface.get("name"), str):
                raise ValueError(f"interfaces[{i}] needs a 'name'")
            interfaces.append(
                Interface(
                    name=iface["name"],
                    mac=_opt_str(iface.get("mac"), f"interfaces[{i}].mac") or "",
                    sandbox=_opt_str(iface.get("sandbox"), f"interfaces[{i}].sandbox") or "",
                )
            )
        ips = []
        raw_ips = data.get("ips")
        raw_ips = [] if raw_ips is None else raw_ips
        if not isinstance(raw_ips, list):
            raise ValueError("'ips' must be a list")
        for i, entry in enumerate(raw_ips):
            if not isinstance(entry, dict):
                raise ValueError(f"ips[{i}] must be an object")
            index = entry.get("interface")
            if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
                raise ValueError(f"ips[{i}].interface must be an interface index")
            ips.append(
                IPConfig(
                    address=_address(entry.get("address"), f"ips[{i}].address"),
                    gateway=_opt_str(entry.get("gateway"), f"ips[{i}].gateway"),
                    interface=index,
                )
            )
        return cls(
            cni_version=version,
            interfaces=interfaces,
            ips=ips,
            routes=_routes(data.get("routes"), "routes"),
            dns=_dns(data.get("dns")),
            raw=copy.deepcopy(data),
        )

    @classmethod
    def _from_legacy(cls, data: dict[str, Any], version: str) -> CNIResult:
        ips: list[IPConfig] = []
        routes: list[Route] = []
        for key in ("ip4", "ip6"):
            block = data.get(key)
            if block is None:
                continue
            if not isinstance(block, dict):
                raise ValueError(f"{key!r} must be an object")
            ips.append(
                IPConfig(address=_address(block.get("ip"), f"{key}.ip"), gateway=_opt_str(block.get("gateway"), f"{key}.gateway"))
            )
            routes.extend(_routes(block.get("routes"), f"{key}.routes"))
        return cls(cni_version=version, interfaces=[], ips=ips, routes=routes, dns=_dns(data.get("dns")), raw=copy.deepcopy(data))

    def to_dict(self) -> dict[str, Any]:
        """The result as the plugin printed it: JSON-serialisable, fit to store and pass back as ``prevResult``."""
        return copy.deepcopy(self.raw)


def ips_of(result: CNIResult | Mapping[str, Any], ifname: str = "eth0") -> list[str]:
    """The pod IPs (no prefix length) on the container interface ``ifname``: IPv4 before IPv6, in result order.

    IPs without an interface index, or results listing no interfaces, count
    for the pod. When the result has interfaces in a sandbox, only those are
    considered (a host-side interface may share the name).
    """
    parsed = result if isinstance(result, CNIResult) else CNIResult.from_dict(dict(result))
    sandboxed = any(i.sandbox for i in parsed.interfaces)
    wanted = {index for index, iface in enumerate(parsed.interfaces) if iface.name == ifname and (iface.sandbox or not sandboxed)}
    chosen = [ip for ip in parsed.ips if ip.interface is None or not parsed.interfaces or ip.interface in wanted]
    chosen.sort(key=lambda ip: ip.version)  # stable: keeps the plugin's order within a family
    return [ip.ip for ip in chosen]


# ---------------------------------------------------------------- requests


@dataclass
class PodNetworkRequest:
    """What the runtime tells the plugins about one pod attachment."""

    container_id: str
    netns: str  # path of the network namespace, /run/netns/<name>
    ifname: str = "eth0"
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: str = ""
    # portmap's portMappings capability: {"hostPort", "containerPort", "protocol", "hostIP"}
    port_mappings: list[dict[str, Any]] = field(default_factory=list)
    # bandwidth's capability: {"ingressRate", "ingressBurst", "egressRate", "egressBurst"} in bits(/s)
    bandwidth: dict[str, int] | None = None
    # kubelet's pod CIDR (comma-separated for dual stack), as the ipRanges capability
    pod_cidr: str = ""
    extra_args: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not self.container_id or any(c in self.container_id for c in "/;= \t\n"):
            raise InvalidArgument(f"invalid CNI container id {self.container_id!r}")
        if not self.ifname or len(self.ifname) > 15 or "/" in self.ifname or self.ifname in (".", ".."):
            raise InvalidArgument(f"invalid interface name {self.ifname!r}")
        for key, value in self.cni_arg_pairs():
            if not key or any(c in key + value for c in ";=\n"):
                raise InvalidArgument(f"CNI_ARGS entry {key}={value!r} may not hold ';', '=' or newlines")
        for cidr in self.pod_cidrs():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise InvalidArgument(f"invalid pod CIDR {cidr!r}: {exc}") from exc

    def cni_arg_pairs(self) -> list[tuple[str, str]]:
        pairs = [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", self.pod_namespace),
            ("K8S_POD_NAME", self.pod_name),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id),
            ("K8S_POD_UID", self.pod_uid),
        ]
        known = {k for k, _ in pairs}
        pairs.extend((k, v) for k, v in self.extra_args.items() if k not in known)
        return pairs

    def cni_args(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.cni_arg_pairs())

    def pod_cidrs(self) -> list[str]:
        return [c.strip() for c in self.pod_cidr.split(",") if c.strip()]

    def capability_args(self) -> dict[str, Any]:
        """Runtime values by capability name; only the ones that have a value."""
        caps: dict[str, Any] = {}
        if self.port_mappings:
            caps["portMappings"] = [_port_mapping(m) for m in self.port_mappings]
        if self.bandwidth:
            caps["bandwidth"] = dict(self.bandwidth)
        cidrs = self.pod_cidrs()
        if cidrs:
            caps["ipRanges"] = [[{"subnet": c}] for c in cidrs]
        return caps


def _port_mapping(mapping: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(mapping)
    if isinstance(out.get("protocol"), str):
        out["protocol"] = out["protocol"].lower()
    if not out.get("hostIP"):
        out.pop("hostIP", None)
    return out


def plugin_config(
    network: NetworkList, plugin: Mapping[str, Any], req: PodNetworkRequest, prev_result: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The stdin of one plugin: its config with the list's name and version, prevResult and runtimeConfig."""
    conf: dict[str, Any] = copy.deepcopy(dict(plugin))
    conf["name"] = network.name
    conf["cniVersion"] = network.cni_version
    if prev_result is not None:
        conf["prevResult"] = copy.deepcopy(dict(prev_result))
    else:
        conf.pop("prevResult", None)
    declared = conf.get("capabilities")
    if isinstance(declared, dict):
        values = req.capability_args()
        runtime = {cap: values[cap] for cap, on in declared.items() if on is True and cap in values}
        if runtime:
            existing = conf.get("runtimeConfig")
            conf["runtimeConfig"] = {**(existing if isinstance(existing, dict) else {}), **runtime}
    return conf


# ---------------------------------------------------------------- execution


def _environment(command: str, req: PodNetworkRequest, netns_path: str, bin_dirs: Sequence[str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(
        CNI_COMMAND=command,
        CNI_CONTAINERID=req.container_id,
        CNI_NETNS=netns_path,
        CNI_IFNAME=req.ifname,
        CNI_ARGS=req.cni_args(),
        CNI_PATH=":".join(bin_dirs),
    )
    return env


def _clip(data: bytes) -> str:
    text = data.decode(errors="replace").strip()
    return text if len(text) <= _OUTPUT_LIMIT else text[:_OUTPUT_LIMIT] + "..."


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The plugin leads its own session: kill it with whatever it started (iptables, ipam plugins).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def _exec(
    binary: str, command: str, config: dict[str, Any], env: dict[str, str], timeout: float, *, network: str, plugin: str
) -> bytes:
    """Run one plugin; its stdout when it succeeds, else a CNIError with the plugin's error object."""
    where = f"cni {command} of network {network!r}: plugin {plugin!r} ({binary})"
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as exc:
        raise CNIError(f"{where}: cannot run: {exc}", network=network, plugin=plugin, command=command) from exc
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(json.dumps(config).encode()), timeout)
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        raise CNIError(
            f"{where}: no answer after {timeout:g}s, killed", network=network, plugin=plugin, command=command
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode == 0:
        return stdout
    try:
        error = json.loads(stdout)
    except ValueError:
        error = None
    if isinstance(error, dict) and ("msg" in error or "code" in error):
        msg = str(error.get("msg", ""))
        details = str(error.get("details", "") or "")
        code = error.get("code")
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        text = f"{where}: {msg or 'failed'}"
        if details:
            text += f" ({details})"
        if code is not None:
            text += f" [code {code}]"
        raise CNIError(text, network=network, plugin=plugin, command=command, plugin_code=code, msg=msg, details=details)
    output = "; ".join(part for part in (_clip(stdout), _clip(stderr)) if part) or "no output"
    raise CNIError(
        f"{where}: exit status {proc.returncode}: {output}", network=network, plugin=plugin, command=command, msg=output
    )


def _binary(plugin: Mapping[str, Any], bin_dirs: Sequence[str], network: str) -> str:
    kind = str(plugin.get("type", ""))
    found = find_cni_plugin(kind, bin_dirs) if kind and "/" not in kind else None
    if found is None:
        raise FailedPrecondition(f"cni network {network!r}: plugin {kind!r} not found in {':'.join(bin_dirs)}")
    return found


async def _add_one(
    network: NetworkList,
    plugin: Mapping[str, Any],
    req: PodNetworkRequest,
    bin_dirs: Sequence[str],
    prev: dict[str, Any] | None,
    timeout: float,
) -> CNIResult:
    kind = str(plugin.get("type", ""))
    binary = _binary(plugin, bin_dirs, network.name)
    env = _environment("ADD", req, req.netns, bin_dirs)
    out = await _exec(binary, "ADD", plugin_config(network, plugin, req, prev), env, timeout, network=network.name, plugin=kind)
    try:
        return CNIResult.from_dict(json.loads(out))
    except ValueError as exc:
        raise CNIError(
            f"cni ADD of network {network.name!r}: plugin {kind!r} ({binary}) printed an invalid result: {exc}: {_clip(out)!r}",
            network=network.name,
            plugin=kind,
            command="ADD",
            msg=str(exc),
        ) from exc


async def _del_all(
    network: NetworkList,
    plugins: Sequence[Mapping[str, Any]],
    req: PodNetworkRequest,
    bin_dirs: Sequence[str],
    prev_result: Mapping[str, Any] | None,
    timeout: float,
) -> list[str]:
    """DEL each plugin in reverse order; the errors, after trying them all."""
    present = bool(req.netns) and await asyncio.to_thread(netns.exists, req.netns)
    netns_path = req.netns if present else ""
    prev = dict(prev_result) if prev_result is not None and version_tuple(network.cni_version) >= (0, 4, 0) else None
    errors: list[str] = []
    for plugin in reversed(plugins):
        kind = str(plugin.get("type", ""))
        try:
            binary = _binary(plugin, bin_dirs, network.name)
            env = _environment("DEL", req, netns_path, bin_dirs)
            await _exec(binary, "DEL", plugin_config(network, plugin, req, prev), env, timeout, network=network.name, plugin=kind)
        except (CNIError, FailedPrecondition) as exc:
            errors.append(exc.message)
    return errors


async def add(
    network: NetworkList, req: PodNetworkRequest, bin_dirs: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT
) -> CNIResult:
    """Attach the pod to ``network``: ADD each plugin in order, chaining results; the last plugin's result.

    When a plugin fails, the plugins run so far, the failing one included (DEL
    is idempotent and cleans up what a failed ADD left half done), get DEL in
    reverse order before the error is raised.
    """
    req.validate()
    if not await asyncio.to_thread(netns.exists, req.netns):
        raise FailedPrecondition(f"network namespace {req.netns!r} does not exist")
    for plugin in network.plugins:
        _binary(plugin, bin_dirs, network.name)
    prev: CNIResult | None = None
    for i, plugin in enumerate(network.plugins):
        try:
            prev = await _add_one(network, plugin, req, bin_dirs, prev.to_dict() if prev else None, timeout)
        except (CNIError, FailedPrecondition) as exc:
            rollback = await _del_all(network, network.plugins[: i + 1], req, bin_dirs, prev.to_dict() if prev else None, timeout)
            message = exc.message
            if rollback:
                message += "; cleaning up also failed: " + "; ".join(rollback)
            raise CNIError(
                message,
                network=network.name,
                plugin=str(plugin.get("type", "")),
                command="ADD",
                plugin_code=exc.plugin_code if isinstance(exc, CNIError) else None,
                msg=exc.msg if isinstance(exc, CNIError) else exc.message,
                details=exc.details if isinstance(exc, CNIError) else "",
            ) from exc
    if prev is None:
        raise CNIError(f"cni network {network.name!r} has no plugins", network=network.name, command="ADD")
    return prev


async def delete(
    network: NetworkList,
    req: PodNetworkRequest,
    bin_dirs: Sequence[str],
    prev_result: Mapping[str, Any] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """Detach the pod: DEL each plugin in reverse order. Idempotent; works after the netns is gone.

    ``prev_result`` is the stored result of :func:`add` (passed as
    ``prevResult`` from version 0.4.0). Every plugin is tried; the errors are
    raised together afterwards.
    """
    req.validate()
    errors = await _del_all(network, network.plugins, req, bin_dirs, prev_result, timeout)
    if errors:
        raise CNIError("; ".join(errors), network=network.name, command="DEL")


def _loopback_network() -> NetworkList:
    return NetworkList(
        name=LOOPBACK_CONFIG["name"],
        cni_version=LOOPBACK_CONFIG["cniVersion"],
        plugins=[dict(LOOPBACK_CONFIG)],
        source=Path("<pycri>"),
        raw=dict(LOOPBACK_CONFIG),
    )


def _loopback_request(netns_path: str | os.PathLike[str], container_id: str) -> PodNetworkRequest:
    path = os.fspath(netns_path)
    return PodNetworkRequest(container_id=container_id or Path(path).name or "pycri", netns=path, ifname="lo")


async def loopback_up(
    netns_path: str | os.PathLike[str],
    bin_dirs: Sequence[str],
    *,
    container_id: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> CNIResult:
    """Bring ``lo`` up in the namespace with the ``loopback`` plugin (container id defaults to the netns name)."""
    return await add(_loopback_network(), _loopback_request(netns_path, container_id), bin_dirs, timeout=timeout)


async def loopback_down(
    netns_path: str | os.PathLike[str],
    bin_dirs: Sequence[str],
    *,
    container_id: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> None:
    """DEL of the ``loopback`` plugin; fine when the namespace is gone."""
    await delete(_loopback_network(), _loopback_request(netns_path, container_id), bin_dirs, timeout=timeout)
