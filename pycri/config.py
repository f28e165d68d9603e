"""pycri's configuration: one TOML file, every key with a default, checked at start.

The schema is the dataclasses below; each field's ``help`` metadata documents
it and ``render_default()`` turns the defaults into the file that
``pycri config default`` prints. ``load()`` rejects unknown keys and values of
the wrong type or range with a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/pycri/pycri.toml")

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
CGROUP_DRIVERS = ("cgroupfs", "systemd")


class ConfigError(ValueError):
    """A configuration file or value that pycri cannot use; the message names the key."""


def _doc(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class RuntimeHandlerConfig:
    """One OCI runtime handler a pod can select with ``runtime_handler``."""

    path: str = field(metadata=_doc("OCI runtime binary (runc or crun compatible command line)."))
    root: str = field(metadata=_doc("State directory of the OCI runtime (its --root)."))


@dataclass
class CNIConfig:
    conf_dir: str = field(default="/etc/cni/net.d", metadata=_doc("Directory of CNI network configurations (.conflist/.conf)."))
    bin_dirs: list[str] = field(
        default_factory=lambda: ["/usr/lib/cni", "/opt/cni/bin"],
        metadata=_doc("Directories searched for CNI plugin binaries, in order."),
    )
    default_subnet: str = field(
        default="10.88.0.0/16",
        metadata=_doc("Subnet of the default bridge network pycri writes when conf_dir holds none."),
    )
    default_bridge: str = field(default="pycri0", metadata=_doc("Bridge of that default network."))


@dataclass
class ImagesConfig:
    registries_conf: str = field(
        default="/etc/containers/registries.conf",
        metadata=_doc("containers-registries.conf(5) v2 file: mirrors, prefixes, insecure registries."),
    )
    auth_file: str = field(default="", metadata=_doc("Docker-style config.json with registry credentials (empty: none)."))
    pinned: list[str] = field(
        default_factory=list, metadata=_doc("Images reported as pinned (never garbage-collected by kubelet).")
    )
    max_concurrent_downloads: int = field(default=3, metadata=_doc("Layers downloaded in parallel per pull."))
    max_layer_unpacked_bytes: int = field(
        default=64 << 30,
        metadata=_doc(
            "Most bytes one layer may unpack to (64 GiB): its uncompressed tar, and the sizes of its files "
            "(a sparse file at its full size). A layer over it fails its pull."
        ),
    )
    max_layer_entries: int = field(
        default=2_000_000,
        metadata=_doc("Most entries (files, directories, links...) one layer may hold. A layer over it fails its pull."),
    )


@dataclass
class StreamingConfig:
    address: str = field(default="127.0.0.1", metadata=_doc("Address the exec/attach/port-forward server listens on."))
    port: int = field(default=0, metadata=_doc("Its port; 0 picks a free one."))
    tls_cert_file: str = field(default="", metadata=_doc("PEM certificate: serve HTTPS (with tls_key_file); empty: HTTP."))
    tls_key_file: str = field(default="", metadata=_doc("PEM private key of tls_cert_file."))


@dataclass
class NRIConfig:
    enable: bool = field(default=False, metadata=_doc("Serve NRI (Node Resource Interface) plugins on socket."))
    socket: str = field(default="/var/run/nri/nri.sock", metadata=_doc("Unix socket NRI plugins connect to."))
    plugin_path: str = field(
        default="/opt/nri/plugins", metadata=_doc("Directory of pre-installed plugins (executables named NN-name).")
    )
    plugin_config_path: str = field(
        default="/etc/nri/conf.d", metadata=_doc("Directory of plugins' drop-in configuration (NN-name.conf or name.conf).")
    )
    plugin_registration_timeout: str = field(
        default="5s", metadata=_doc("How long a connected plugin has to register (a duration: 500ms, 5s, 1m).")
    )
    plugin_request_timeout: str = field(
        default="2s", metadata=_doc("How long a plugin has to answer one request before it is disconnected (a duration).")
    )


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a duration such as ``500ms``, ``2s``, ``1m30s`` (Go's notation); ValueError otherwise."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration (like 500ms, 5s, 1m)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def _default_runtimes() -> dict[str, RuntimeHandlerConfig]:
    return {
        "runc": RuntimeHandlerConfig(path="/usr/sbin/runc", root="/run/pycri/runc"),
        "crun": RuntimeHandlerConfig(path="/usr/bin/crun", root="/run/pycri/crun"),
    }


@dataclass
class Config:
    root_dir: str = field(default="/var/lib/pycri", metadata=_doc("Persistent data: state database, images, container layers."))
    state_dir: str = field(
        default="/run/pycri", metadata=_doc("Runtime data that does not survive a reboot: sockets, pod files.")
    )
    socket: str = field(default="/run/pycri/pycri.sock", metadata=_doc("Unix socket serving RuntimeService and ImageService."))
    image_socket: str = field(
        default="",
        metadata=_doc("Optional second socket serving only ImageService (kubelet's --image-service-endpoint)."),
    )
    log_level: str = field(default="info", metadata=_doc(f"One of {', '.join(LOG_LEVELS)}."))
    log_format: str = field(default="text", metadata=_doc("text (journald friendly) or json."))
    cgroup_driver: str = field(default="cgroupfs", metadata=_doc("cgroupfs (systemd is not supported yet)."))
    default_runtime: str = field(default="runc", metadata=_doc("Handler used when a pod names none."))
    conmon: str = field(default="/usr/bin/conmon", metadata=_doc("The per-container monitor binary."))
    infra_command: list[str] = field(
        default_factory=lambda: ["/usr/bin/catatonit", "-P"],
        metadata=_doc("Process each pod's infra container runs (bind-mounted from the host)."),
    )
    cdi_spec_dirs: list[str] = field(
        default_factory=lambda: ["/etc/cdi", "/var/run/cdi"],
        metadata=_doc("Directories of CDI device specs (JSON/YAML), a later one overriding an earlier; [] turns CDI off."),
    )
    runtimes: dict[str, RuntimeHandlerConfig] = field(
        default_factory=_default_runtimes, metadata=_doc("OCI runtime handlers by name.")
    )
    cni: CNIConfig = field(default_factory=CNIConfig)
    images: ImagesConfig = field(default_factory=ImagesConfig)
    streaming: StreamingConfig = field(default_factory=StreamingConfig)
    nri: NRIConfig = field(default_factory=NRIConfig)

    @property
    def database(self) -> Path:
        return Path(self.root_dir) / "state.db"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "table"
    if dataclasses.is_dataclass(tp):
        return "table"
    return {str: "string", int: "integer", bool: "boolean"}.get(tp, str(tp))


def _convert(key: str, tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return _build(tp, value, key)
    if origin is dict:
        _, vtp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {type(value).__name__}")
        return {k: _convert(f"{key}.{k}", vtp, v) for k, v in value.items()}
    if origin is list:
        (etp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_convert(f"{key}[{i}]", etp, v) for i, v in enumerate(value)]
    # bool is an int subclass: check it exactly.
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__}")
    if tp in (str, bool) and type(value) is not tp:
        raise ConfigError(f"{key}: expected a {_type_name(tp)}, got {type(value).__name__}")
    return value


def _build(cls: type[Any], data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key (known: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            where = f"{prefix}.{f.name}" if prefix else f.name
            kwargs[f.name] = _convert(where, hints[f.name], data[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            where = f"{prefix}.{f.name}" if prefix else f.name
            raise ConfigError(f"{where}: required key is missing")
    return cls(**kwargs)


def validate(cfg: Config) -> Config:
    """Checks that go beyond types; raises ConfigError naming the key."""

    def absolute(key: str, value: str, allow_empty: bool = False) -> None:
        if allow_empty and not value:
            return
        if not value.startswith("/"):
            raise ConfigError(f"{key}: must be an absolute path, got {value!r}")

    for key in ("root_dir", "state_dir", "socket", "conmon"):
        absolute(key, getattr(cfg, key))
    absolute("image_socket", cfg.image_socket, allow_empty=True)
    if cfg.image_socket and cfg.image_socket == cfg.socket:
        raise ConfigError("image_socket: must differ from socket")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: must be one of {', '.join(LOG_LEVELS)}, got {cfg.log_level!r}")
    if cfg.log_format not in LOG_FORMATS:
        raise ConfigError(f"log_format: must be one of {', '.join(LOG_FORMATS)}, got {cfg.log_format!r}")
    if cfg.cgroup_driver not in CGROUP_DRIVERS:
        raise ConfigError(f"cgroup_driver: must be one of {', '.join(CGROUP_DRIVERS)}, got {cfg.cgroup_driver!r}")
    if cfg.cgroup_driver == "systemd":
        raise ConfigError("cgroup_driver: 'systemd' is not supported yet; use 'cgroupfs'")
    if not cfg.runtimes:
        raise ConfigError("runtimes: at least one runtime handler is needed")
    for name, handler in cfg.runtimes.items():
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"runtimes.{name}: handler names are letters, digits, '-' and '_'")
        absolute(f"runtimes.{name}.path", handler.path)
        absolute(f"runtimes.{name}.root", handler.root)
    if cfg.default_runtime not in cfg.runtimes:
        raise ConfigError(f"default_runtime: {cfg.default_runtime!r} is not one of runtimes ({', '.join(cfg.runtimes)})")
    if not cfg.infra_command:
        raise ConfigError("infra_command: must name a program")
    absolute("infra_command[0]", cfg.infra_command[0])
    for i, d in enumerate(cfg.cdi_spec_dirs):
        absolute(f"cdi_spec_dirs[{i}]", d)
    absolute("cni.conf_dir", cfg.cni.conf_dir)
    for i, d in enumerate(cfg.cni.bin_dirs):
        absolute(f"cni.bin_dirs[{i}]", d)
    try:
        ipaddress.ip_network(cfg.cni.default_subnet)
    except ValueError as exc:
        raise ConfigError(f"cni.default_subnet: {exc}") from None
    if not 0 < len(cfg.cni.default_bridge) <= 15 or "/" in cfg.cni.default_bridge or " " in cfg.cni.default_bridge:
        raise ConfigError(f"cni.default_bridge: {cfg.cni.default_bridge!r} is not a valid interface name (1 to 15 characters)")
    absolute("images.registries_conf", cfg.images.registries_conf)
    absolute("images.auth_file", cfg.images.auth_file, allow_empty=True)
    if not 1 <= cfg.images.max_concurrent_downloads <= 64:
        raise ConfigError("images.max_concurrent_downloads: must be between 1 and 64")
    for key in ("max_layer_unpacked_bytes", "max_layer_entries"):
        if getattr(cfg.images, key) < 1:
            raise ConfigError(f"images.{key}: must be at least 1")
    if not 0 <= cfg.streaming.port <= 65535:
        raise ConfigError(f"streaming.port: must be between 0 and 65535, got {cfg.streaming.port}")
    if bool(cfg.streaming.tls_cert_file) != bool(cfg.streaming.tls_key_file):
        raise ConfigError("streaming.tls_cert_file and streaming.tls_key_file: give both or neither")
    try:
        ipaddress.ip_address(cfg.streaming.address)
    except ValueError:
        raise ConfigError(f"streaming.address: not an IP address: {cfg.streaming.address!r}") from None
    for key in ("socket", "plugin_path", "plugin_config_path"):
        absolute(f"nri.{key}", getattr(cfg.nri, key))
    for key in ("plugin_registration_timeout", "plugin_request_timeout"):
        try:
            seconds = parse_duration(getattr(cfg.nri, key))
        except ValueError as exc:
            raise ConfigError(f"nri.{key}: {exc}") from None
        if not 0 < seconds <= 3600:
            raise ConfigError(f"nri.{key}: must be more than 0 and at most 1h")
    if cfg.nri.enable and cfg.nri.socket in (cfg.socket, cfg.image_socket):
        raise ConfigError("nri.socket: must differ from socket and image_socket")
    return cfg


def from_dict(data: dict[str, Any]) -> Config:
    cfg: Config = _build(Config, data)
    return validate(cfg)


def load(path: Path | None, *, required: bool = False) -> Config:
    """Read ``path`` (default /etc/pycri/pycri.toml). A missing default file means all defaults."""
    target = path or DEFAULT_PATH
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        if required or path is not None:
            raise ConfigError(f"{target}: configuration file not found") from None
        return validate(Config())
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{target}: not valid TOML: {exc}") from exc
    try:
        return from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{target}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r}")


def _render_table(obj: Any, name: str, out: list[str]) -> None:
    tables: list[tuple[str, Any, str]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        help_text = f.metadata.get("help", "")
        if dataclasses.is_dataclass(value):
            tables.append((f"{name}.{f.name}" if name else f.name, value, help_text))
        elif isinstance(value, dict):
            for key, sub in value.items():
                tables.append((f"{name}.{f.name}.{key}" if name else f"{f.name}.{key}", sub, help_text))
        else:
            if help_text:
                out.append(f"# {help_text}")
            out.append(f"{f.name} = {_toml_value(value)}")
    for tname, value, help_text in tables:
        out.append("")
        if help_text:
            out.append(f"# {help_text}")
        out.append(f"[{tname}]")
        _render_table(value, tname, out)


def render(cfg: Config) -> str:
    """The configuration as a commented TOML document that ``load`` reads back unchanged."""
    out = ["# pycri configuration. Every key is optional; shown here with its default."]
    _render_table(cfg, "", out)
    return "\n".join(out) + "\n"


def render_default() -> str:
    return render(Config())


# What SIGHUP applies to a running daemon, as CRI-O reloads its log level, registries and CNI
# directory; any other changed key takes effect at the next start (the daemon says so).
RELOADABLE = ("log_level", "images.registries_conf", "images.auth_file", "cni.conf_dir")


def _flat(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat |= _flat(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changes(old: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """Every key whose value differs, as ``(dotted key, old value, new value)``, sorted by key."""
    before, after = _flat(old.to_dict()), _flat(new.to_dict())
    return [(k, before.get(k), after.get(k)) for k in sorted(before.keys() | after.keys()) if before.get(k) != after.get(k)]


def apply_reloadable(live: Config, new: Config) -> tuple[list[tuple[str, Any, Any]], list[str]]:
    """Copy ``new``'s reloadable keys into ``live`` (the object every service holds); returns the changes
    applied and the other changed keys, which need a restart."""
    applied, later = [], []
    for key, old_value, new_value in changes(live, new):
        if key not in RELOADABLE:
            later.append(key)
            continue
        *path, name = key.split(".")
        target: Any = live
        for part in path:
            target = getattr(target, part)
        setattr(target, name, new_value)
        applied.append((key, old_value, new_value))
    return applied, later


__all__ = [
    "DEFAULT_PATH",
    "RELOADABLE",
    "CNIConfig",
    "Config",
    "ConfigError",
    "ImagesConfig",
    "NRIConfig",
    "RuntimeHandlerConfig",
    "StreamingConfig",
    "apply_reloadable",
    "changes",
    "from_dict",
    "load",
    "parse_duration",
    "render",
    "render_default",
    "validate",
]
