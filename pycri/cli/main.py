"""``pycri``: run the daemon and talk to it.

pycri daemon [--config FILE]      run the runtime
pycri version | info              ask a running daemon (--json for scripts)
pycri pull | images | import      images: pull with progress, list, import archives (pycri/cli/images.py)
pycri doctor                      check this host's prerequisites
pycri config default | show       print the default / effective configuration
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from rich.console import Console
from rich.table import Table

import pycri
from pycri import config as config_mod
from pycri.cli import images as images_cli
from pycri.client import Client, ClientError, UnavailableError
from pycri.client.common import DEFAULT_SOCKET

Command = Callable[[argparse.Namespace, Console], int]


def _load_config(args: argparse.Namespace) -> config_mod.Config:
    return config_mod.load(args.config)


def _socket(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    try:
        return _load_config(args).socket
    except config_mod.ConfigError:
        return DEFAULT_SOCKET


def _error(message: str) -> None:
    print(f"pycri: {message}", file=sys.stderr)


def _print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def cmd_daemon(args: argparse.Namespace, console: Console) -> int:
    from pycri import daemon, logs

    cfg = _load_config(args)
    overrides = {k: v for k, v in (("log_level", args.log_level), ("log_format", args.log_format), ("socket", args.listen)) if v}
    if overrides:
        data = cfg.to_dict() | overrides
        cfg = config_mod.from_dict(data)
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        daemon.run(cfg)
    except daemon.DaemonError as exc:
        _error(f"cannot start: {exc}")
        return 1
    return 0


def cmd_version(args: argparse.Namespace, console: Console) -> int:
    with Client(_socket(args), timeout=args.timeout) as client:
        version = client.version()
    if args.json:
        _print_json({"client": pycri.__version__, "server": json_format.MessageToDict(version, preserving_proto_field_name=True)})
        return 0
    console.print(f"Client version:       {pycri.__version__}")
    console.print(f"Runtime name:         {version.runtime_name}")
    console.print(f"Runtime version:      {version.runtime_version}")
    console.print(f"Runtime API version:  {version.runtime_api_version}")
    return 0


def cmd_info(args: argparse.Namespace, console: Console) -> int:
    from pycri.api import api_pb2 as api

    with Client(_socket(args), timeout=args.timeout) as client:
        status = client.status(api.StatusRequest(verbose=True))
        runtime_config = client.runtime_config()
    if args.json:
        doc = json_format.MessageToDict(status, preserving_proto_field_name=True)
        doc["info"] = {k: json.loads(v) for k, v in status.info.items()}
        doc["runtime_config"] = json_format.MessageToDict(runtime_config, preserving_proto_field_name=True)
        _print_json(doc)
        return 0
    table = Table(title="Conditions", show_lines=False)
    for col in ("condition", "ready", "reason", "message"):
        table.add_column(col)
    for cond in status.status.conditions:
        table.add_row(cond.type, "[green]yes[/green]" if cond.status else "[red]no[/red]", cond.reason, cond.message)
    console.print(table)
    handlers = Table(title="Runtime handlers")
    for col in ("name", "recursive read-only mounts", "user namespaces"):
        handlers.add_column(col)
    for h in status.runtime_handlers:
        handlers.add_row(
            h.name or "(default)", str(h.features.recursive_read_only_mounts).lower(), str(h.features.user_namespaces).lower()
        )
    console.print(handlers)
    cfg = json.loads(status.info.get("config", "{}"))
    driver = api.CgroupDriver.Name(runtime_config.linux.cgroup_driver).lower()
    console.print(f"cgroup driver: {driver}   socket: {cfg.get('socket', '?')}   root: {cfg.get('root_dir', '?')}")
    return 0


def cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    from pycri.host import checks

    cfg = _load_config(args)
    results = checks.run_all(cfg)
    if args.json:
        _print_json([c.to_dict() for c in results])
    else:
        marks = {
            checks.Severity.OK: "[green]ok   [/green]",
            checks.Severity.WARN: "[yellow]warn [/yellow]",
            checks.Severity.ERROR: "[red]error[/red]",
            checks.Severity.FATAL: "[red bold]fatal[/red bold]",
        }
        for c in results:
            console.print(f"{marks[c.severity]} {c.name}: {c.detail}", highlight=False)
            if c.fix:
                console.print(f"      fix: {c.fix}", highlight=False)
    bad = [c for c in results if c.severity in (checks.Severity.ERROR, checks.Severity.FATAL)]
    return 1 if bad else 0


def cmd_config(args: argparse.Namespace, console: Console) -> int:
    if args.what == "default":
        sys.stdout.write(config_mod.render_default())
    else:
        sys.stdout.write(config_mod.render(_load_config(args)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pycri", description="pycri, a Kubernetes container runtime (CRI) in Python.")
    parser.add_argument("--config", type=Path, default=None, help=f"configuration file (default {config_mod.DEFAULT_PATH})")
    parser.add_argument("--version", action="version", version=f"pycri {pycri.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def client_command(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--socket", "-s", help="daemon socket or unix:// endpoint (default: from the configuration)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon")
        p.set_defaults(func=func)
        return p

    d = sub.add_parser("daemon", help="run the runtime daemon")
    d.add_argument("--log-level", choices=config_mod.LOG_LEVELS, help="override log_level")
    d.add_argument("--log-format", choices=config_mod.LOG_FORMATS, help="override log_format")
    d.add_argument("--listen", help="override socket")
    d.set_defaults(func=cmd_daemon)
    client_command("version", "show client and runtime versions", cmd_version)
    client_command("info", "show runtime conditions, handlers and configuration", cmd_info)
    images_cli.register(client_command, _socket)
    doc = sub.add_parser("doctor", help="check this host's prerequisites")
    doc.add_argument("--json", action="store_true")
    doc.set_defaults(func=cmd_doctor)
    c = sub.add_parser("config", help="print configuration")
    c.add_argument(
        "what", choices=("default", "show"), help="default: every key with its default; show: the effective configuration"
    )
    c.set_defaults(func=cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    try:
        result: int = args.func(args, console)
        return result
    except config_mod.ConfigError as exc:
        _error(f"configuration error: {exc}")
        return 2
    except UnavailableError as exc:
        _error(f"cannot reach the daemon ({exc.details}); is it running?")
        return 3
    except ClientError as exc:
        _error(str(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
