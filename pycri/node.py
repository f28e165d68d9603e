"""Node-wide runtime state: readiness conditions, handler features, pod CIDR.

``RuntimeReady`` is true when the default OCI runtime answers ``--version`` and
conmon is installed; ``NetworkReady`` when the default CNI network loads and
all of its plugins are found. Both come from real checks, redone when the last
result is over a second old (the runtime probe is also cached while its binary
is unchanged).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pycri.config import Config
from pycri.errors import InvalidArgument
from pycri.host import checks
from pycri.network import cni
from pycri.nri.adaptation import PluginInfo
from pycri.nri.events import pretty_mask
from pycri.oci import OCIRuntime
from pycri.oci.features import HandlerFeatures
from pycri.store import Store

log = logging.getLogger("pycri.node")

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"
POD_CIDR_KEY = "pod_cidr"
CONDITIONS_TTL = 1.0  # seconds a computed set of conditions is served before being checked again


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True)
class HandlerReport:
    name: str
    recursive_read_only_mounts: bool
    user_namespaces: bool


class Node:
    def __init__(
        self,
        cfg: Config,
        store: Store,
        handlers: dict[str, OCIRuntime],
        features: HandlerFeatures,
        *,
        nri_plugins: Callable[[], list[PluginInfo]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.nri_plugins = nri_plugins  # the connected NRI plugins; None: NRI is disabled
        self.store = store
        self.handlers = handlers
        self.features = features
        self.pod_cidr = ""
        self._conditions: list[Condition] | None = None
        self._conditions_at = 0.0
        self._refresh = asyncio.Lock()

    async def load(self) -> None:
        self.pod_cidr = await self.store.get_meta(POD_CIDR_KEY) or ""

    async def set_pod_cidr(self, cidr: str) -> None:
        """Store the pod CIDR kubelet sends (UpdateRuntimeConfig); CNI gets it on pod set-up."""
        if cidr:
            try:
                for part in cidr.split(","):
                    ipaddress.ip_network(part.strip(), strict=False)
            except ValueError as exc:
                raise InvalidArgument(f"runtime_config.network_config.pod_cidr: {cidr!r} is not a CIDR: {exc}") from exc
        else:
            return  # kubelet sends an empty CIDR before the node has one: keep what we have
        if cidr != self.pod_cidr:
            await self.store.set_meta(POD_CIDR_KEY, cidr)
            log.info("pod CIDR set to %s", cidr)
            self.pod_cidr = cidr

    async def runtime_condition(self) -> Condition:
        handler = self.handlers[self.cfg.default_runtime]
        probe = await handler.probe()
        if not probe.ok:
            return Condition(RUNTIME_READY, False, "OCIRuntimeNotReady", probe.message)
        conmon = await asyncio.to_thread(checks.check_binary, "conmon", self.cfg.conmon, "")
        if not conmon.ok:
            return Condition(RUNTIME_READY, False, "ConmonNotFound", f"conmon {self.cfg.conmon} not found or not executable")
        return Condition(RUNTIME_READY, True)

    async def network_condition(self) -> Condition:
        ready, message = await asyncio.to_thread(cni.readiness, Path(self.cfg.cni.conf_dir), self.cfg.cni.bin_dirs)
        if ready:
            return Condition(NETWORK_READY, True)
        return Condition(NETWORK_READY, False, "NetworkPluginNotReady", f"Network plugin returns error: {message}")

    async def conditions(self) -> list[Condition]:
        """The conditions, at most ``CONDITIONS_TTL`` seconds old; one refresh runs at a time.

        Like containerd's cached CNI state, this keeps Status (polled by kubelet)
        free of file-system work on most calls.
        """
        if self._conditions is not None and time.monotonic() - self._conditions_at < CONDITIONS_TTL:
            return self._conditions
        async with self._refresh:
            if self._conditions is None or time.monotonic() - self._conditions_at >= CONDITIONS_TTL:
                self._conditions = [await self.runtime_condition(), await self.network_condition()]
                self._conditions_at = time.monotonic()
            return self._conditions

    async def handler_features(self) -> list[HandlerReport]:
        """Features per handler, the default one also under the empty name as kubelet expects.

        Recursive read-only mounts as the handler's runtime and the kernel allow
        them; user namespaces as the host allows ID-mapped mounts of the layers.
        """
        reports = []
        for name in ["", *self.handlers]:
            handler = name or self.cfg.default_runtime
            rro = await self.features.recursive_read_only(handler)
            reports.append(HandlerReport(name, rro, await self.features.user_namespaces(handler)))
        return reports

    async def verbose_info(self) -> dict[str, str]:
        """JSON documents for ``Status(verbose=true)``: the effective config and what was found."""
        networks, errors = await asyncio.to_thread(cni.load_networks, Path(self.cfg.cni.conf_dir))
        handlers = {}
        for name, handler in self.handlers.items():
            probe = await handler.probe()
            handlers[name] = {
                "path": handler.path,
                "root": handler.root,
                "ok": probe.ok,
                "version": probe.version,
                "message": probe.message,
            }
        return {
            "config": self.cfg.to_json(),
            "cni": json.dumps(
                {
                    "confDir": self.cfg.cni.conf_dir,
                    "binDirs": self.cfg.cni.bin_dirs,
                    "networks": [{"name": n.name, "source": str(n.source), "plugins": n.plugin_types} for n in networks],
                    "errors": errors,
                    "podCIDR": self.pod_cidr,
                }
            ),
            "runtimeHandlers": json.dumps(handlers),
            "nri": json.dumps(self.nri_info()),
        }

    def nri_info(self) -> dict[str, object]:
        """NRI's state for ``Status`` info: enabled, its socket, the connected plugins in call order."""
        if self.nri_plugins is None:
            return {"enabled": False}
        plugins = [{"index": p.index, "name": p.name, "events": pretty_mask(p.events)} for p in self.nri_plugins()]
        return {"enabled": True, "socket": self.cfg.nri.socket, "plugins": plugins}
