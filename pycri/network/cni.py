"""CNI network configuration: finding and loading it, as libcni does.

Files in the conf dir ending in .conflist, .conf or .json are read in name
order; a .conf/.json holding a single plugin is wrapped into a list. The first
valid one is the default network. This module answers whether the network is
ready and writes pycri's default bridge network when there is none; running
the plugins is :mod:`pycri.network.cni_exec`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.errors import InvalidArgument
from pycri.host.checks import find_cni_plugin

EXTENSIONS = (".conflist", ".conf", ".json")
DEFAULT_NETWORK_NAME = "pycri"
DEFAULT_NETWORK_FILE = "10-pycri.conflist"
DEFAULT_BRIDGE = "pycri0"


class CNIConfigError(ValueError):
    pass


@dataclass(frozen=True)
class NetworkList:
    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    source: Path
    raw: dict[str, Any] = field(repr=False, hash=False, compare=False)

    @property
    def plugin_types(self) -> list[str]:
        return [str(p.get("type", "")) for p in self.plugins]


def parse(path: Path, text: str) -> NetworkList:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CNIConfigError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CNIConfigError(f"{path}: expected a JSON object")
    if path.suffix == ".conflist" or "plugins" in data:
        plugins = data.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            raise CNIConfigError(f"{path}: 'plugins' must be a non-empty list")
    else:
        plugins = [data]
    for i, plugin in enumerate(plugins):
        if not isinstance(plugin, dict) or not plugin.get("type"):
            raise CNIConfigError(f"{path}: plugins[{i}] has no 'type'")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise CNIConfigError(f"{path}: missing 'name'")
    return NetworkList(name=name, cni_version=str(data.get("cniVersion", "")), plugins=plugins, source=path, raw=data)


def load_networks(conf_dir: Path) -> tuple[list[NetworkList], list[str]]:
    """All valid networks in ``conf_dir`` (sorted by file name) and the errors of the invalid ones."""
    try:
        names = sorted(os.listdir(conf_dir))
    except FileNotFoundError:
        return [], [f"{conf_dir} does not exist"]
    networks: list[NetworkList] = []
    errors: list[str] = []
    for name in names:
        path = conf_dir / name
        if not name.endswith(EXTENSIONS) or not path.is_file():
            continue
        try:
            networks.append(parse(path, path.read_text()))
        except (OSError, CNIConfigError) as exc:
            errors.append(str(exc))
    return networks, errors


def subnets(network: NetworkList) -> list[str]:
    """The subnets the network's IPAM hands addresses from (host-local's ``subnet`` and ``ranges``)."""
    found: list[str] = []
    for plugin in network.plugins:
        ipam = plugin.get("ipam")
        if not isinstance(ipam, dict):
            continue
        if isinstance(ipam.get("subnet"), str):
            found.append(ipam["subnet"])
        for rangeset in ipam.get("ranges") or []:
            for entry in rangeset if isinstance(rangeset, list) else []:
                if isinstance(entry, dict) and isinstance(entry.get("subnet"), str):
                    found.append(entry["subnet"])
    return found


def readiness(conf_dir: Path, bin_dirs: list[str]) -> tuple[bool, str]:
    """Whether the default network can be set up; when not, why."""
    networks, errors = load_networks(conf_dir)
    if not networks:
        detail = "; ".join(errors) if errors else f"no network configuration in {conf_dir}"
        return False, f"cni config not loaded: {detail}"
    default = networks[0]
    missing = [t for t in default.plugin_types if find_cni_plugin(t, bin_dirs) is None]
    if missing:
        return (
            False,
            f"cni network {default.name!r} ({default.source}): plugins not found in {':'.join(bin_dirs)}: {', '.join(missing)}",
        )
    return True, f"cni network {default.name!r} from {default.source}"


def default_network(bridge: str, subnet: str) -> dict[str, Any]:
    """pycri's default network: a bridge (gateway on it, no masquerade), then portmap and bandwidth.

    host-local hands out ``subnet``. The bridge does not declare the
    ``ipRanges`` capability: host-local *prepends* runtime ranges to its own,
    so a pod CIDR would give each pod a second address. The default route
    only matters inside the pod.
    """
    if not bridge or len(bridge) > 15 or any(c in bridge for c in "/ \t\n:") or bridge in (".", ".."):
        raise InvalidArgument(f"invalid bridge name {bridge!r}: at most 15 characters, no '/', ':' or spaces")
    try:
        network = ipaddress.ip_network(subnet, strict=True)
    except ValueError as exc:
        raise InvalidArgument(f"invalid default subnet {subnet!r}: {exc}") from exc
    default_route = "0.0.0.0/0" if network.version == 4 else "::/0"
    return {
        "cniVersion": "1.0.0",
        "name": DEFAULT_NETWORK_NAME,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(network)}]],
                    "routes": [{"dst": default_route}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def _ensure_default_network(conf_dir: Path, subnet: str, bridge: str) -> Path | None:
    config = default_network(bridge, subnet)
    networks, _ = load_networks(conf_dir)
    path = conf_dir / DEFAULT_NETWORK_FILE
    if networks or os.path.lexists(path):
        # A network exists, or a (broken) file of that name does: never overwrite it.
        return None
    conf_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, json.dumps(config, indent=2) + "\n")
    return path


async def ensure_default_network(conf_dir: Path, subnet: str, bridge: str = DEFAULT_BRIDGE) -> Path | None:
    """Write ``<conf_dir>/10-pycri.conflist`` when ``conf_dir`` holds no loadable network; the path written, else None."""
    return await asyncio.to_thread(_ensure_default_network, Path(conf_dir), subnet, bridge)
