"""CNI network configuration: finding and loading it, as libcni does.

Files in the conf dir ending in .conflist, .conf or .json are read in name
order; a .conf/.json holding a single plugin is wrapped into a list. The first
valid one is the default network. Plugin invocation comes with the sandbox
issue; this module already answers whether the network is ready.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.host.checks import find_cni_plugin

EXTENSIONS = (".conflist", ".conf", ".json")


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
