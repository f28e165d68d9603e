"""``pycri``: run the daemon and talk to it.

pycri daemon [--config FILE]      run the runtime
pycri version | info              ask a running daemon (--json for scripts)
pycri pull | images | import      images: pull with progress, list, import archives (pycri/cli/images.py)
pycri top                         pods and containers by CPU, memory and network (pycri/cli/top.py)
pycri doctor                      check this host's prerequisites
pycri config default | show       print the default / effective configuration

``--config FILE`` may stand before or after the command. Every command but ``daemon`` takes
``--json``: its result as JSON on stdout, and on failure an ``{"error": {...}}`` document there
too. Failures are one line on stderr naming what failed, and one saying what to do.

Exit codes: 0 done; 1 the daemon refused or failed the request, or doctor found an error;
2 bad arguments or configuration; 3 no daemon answers on the socket; 130 interrupted.
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
from pycri.cli import top as top_cli
from pycri.client import Client, ClientError, UnavailableError
from pycri.client.common import DEFAULT_SOCKET, listening, socket_path

Command = Callable[[argparse.Namespace, Console], int]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

# What to do about a failure the daemon reported, by gRPC status.
HINTS = {
    "UNAVAILABLE": "the daemon is running; what it could not reach is named above",
    "UNAUTHENTICATED": "give the registry's credentials (pycri pull --creds USER:PASSWORD)",
    "PERMISSION_DENIED": "the registry refused these credentials this image",
    "DEADLINE_EXCEEDED": "the call took longer than --timeout allows; raise it",
    "UNIMPLEMENTED": "this daemon does not offer that call",
    "NOT_FOUND": "check the name (pycri images lists the image store)",
    "INVALID_ARGUMENT": "correct the argument named above",
}


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

    overrides = {k: v for k, v in (("log_level", args.log_level), ("log_format", args.log_format), ("socket", args.listen)) if v}

    def load() -> config_mod.Config:  # at start, and again on SIGHUP: the command line still wins
        cfg = _load_config(args)
        return config_mod.from_dict(cfg.to_dict() | overrides) if overrides else cfg

    cfg = load()
    logs.setup(cfg.log_level, cfg.log_format)
    try:
        daemon.run(cfg, load)
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
    nri_info = json.loads(status.info.get("nri", "{}"))
    if nri_info.get("enabled"):
        plugins = Table(title=f"NRI plugins on {nri_info.get('socket', '?')}")
        for col in ("index", "name", "events"):
            plugins.add_column(col)
        for p in nri_info.get("plugins", []):
            plugins.add_row(p["index"], p["name"], p["events"])
        console.print(plugins)
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
            console.print(f"{marks[c.severity]} {c.name}: {c.detail}", highlight=False, soft_wrap=True)
            if c.fix:
                console.print(f"      fix: {c.fix}", highlight=False, soft_wrap=True)
    bad = [c for c in results if c.severity in (checks.Severity.ERROR, checks.Severity.FATAL)]
    return 1 if bad else 0


def cmd_config(args: argparse.Namespace, console: Console) -> int:
    cfg = config_mod.Config() if args.what == "default" else _load_config(args)
    if args.json:
        _print_json(cfg.to_dict())
    elif args.what == "default":
        sys.stdout.write(config_mod.render_default())
    else:
        sys.stdout.write(config_mod.render(cfg))
    return 0


def build_parser() -> argparse.ArgumentParser:
    config_help = f"configuration file (default {config_mod.DEFAULT_PATH})"
    parser = argparse.ArgumentParser(
        prog="pycri",
        description="pycri, a Kubernetes container runtime (CRI) in Python.",
        epilog="exit codes: 0 done, 1 failed, 2 bad arguments or configuration, 3 no daemon on the socket, 130 interrupted",
    )
    parser.add_argument("--config", type=Path, default=None, help=config_help)
    parser.add_argument("--version", action="version", version=f"pycri {pycri.__version__}")
    # The global options again, for after the command (`pycri daemon --config FILE`); SUPPRESS keeps
    # a value given before the command when none is given after it.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=config_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_text, parents=[after])

    def client_command(name: str, help_text: str, func: Command) -> argparse.ArgumentParser:
        p = command(name, help_text)
        p.add_argument("--socket", "-s", help="daemon socket or unix:// endpoint (default: from the configuration)")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the daemon")
        p.set_defaults(func=func)
        return p

    d = command("daemon", "run the runtime daemon")
    d.add_argument("--log-level", choices=config_mod.LOG_LEVELS, help="override log_level")
    d.add_argument("--log-format", choices=config_mod.LOG_FORMATS, help="override log_format")
    d.add_argument("--listen", help="override socket")
    d.set_defaults(func=cmd_daemon)
    client_command("version", "show client and runtime versions", cmd_version)
    client_command("info", "show runtime conditions, handlers and configuration", cmd_info)
    images_cli.register(client_command, _socket)
    top_cli.register(client_command, _socket)
    doc = command("doctor", "check this host's prerequisites and explain the node")
    doc.add_argument("--json", action="store_true", help="machine-readable output")
    doc.set_defaults(func=cmd_doctor)
    c = command("config", "print configuration")
    c.add_argument(
        "what", choices=("default", "show"), help="default: every key with its default; show: the effective configuration"
    )
    c.add_argument("--json", action="store_true", help="the configuration as JSON instead of TOML")
    c.set_defaults(func=cmd_config)
    return parser


def _fail(args: argparse.Namespace, code: int, kind: str, message: str, hint: str) -> int:
    """Report a failure: a line naming it and a line saying what to do, plus a JSON document with --json."""
    _error(message)
    if hint:
        _error(hint)
    if getattr(args, "json", False):
        _print_json({"error": {"command": args.command, "kind": kind, "message": message, "hint": hint, "exit_code": code}})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console(highlight=False)
    try:
        result: int = args.func(args, console)
        return result
    except config_mod.ConfigError as exc:
        where = args.config or config_mod.DEFAULT_PATH
        return _fail(args, EXIT_USAGE, "config", f"configuration error: {exc}", f"fix {where}, or pass --config FILE")
    except ClientError as exc:
        if isinstance(exc, UnavailableError):
            socket = _socket(args)
            if not listening(socket):
                return _fail(
                    args,
                    EXIT_UNREACHABLE,
                    "unreachable",
                    f"cannot reach the daemon at {socket_path(socket)} ({exc.details}); is it running?",
                    "start it (scripts/start.sh, or `pycri daemon`), or name its socket with --socket",
                )
        return _fail(args, EXIT_FAILED, exc.code.name, str(exc), HINTS.get(exc.code.name, ""))
    except KeyboardInterrupt:
        return _fail(args, EXIT_INTERRUPTED, "interrupted", f"{args.command} interrupted", "")


if __name__ == "__main__":
    sys.exit(main())
