"""The `distill-guard` command line.

Each subcommand lives in the module that owns its job and registers itself
through a `register(subparsers)` function listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from authz import __version__, explain, logs, settings
from authz.errors import ConfigError
from authz.rules import json_schema, load_rules

# Modules that contribute subcommands besides the ones defined here.
COMMANDS: tuple[str, ...] = (
    "authz.upstream",
    "authz.demo",
    "authz.bench",
    "authz.keys_cli",
    "authz.geobuild",
    "authz.audit_cli",
    "authz.health_cli",
    "authz.tls",
    "authz.replay.cli",
    "authz.sim.cli",
    "authz.evaluate",
    "authz.detect.cli",
    "authz.case.cli",
    "authz.assess.cli",
)


def _serve(ns: argparse.Namespace) -> int:
    from authz import telemetry
    from authz.server import serve

    conf = settings.from_namespace(ns)
    logs.configure(conf.log_level)
    try:
        # The one place the OpenTelemetry SDK is installed (OTEL_* variables and
        # --metrics-listen); library code records through the API.
        installed = telemetry.setup(metrics_listen=conf.metrics_listen)
        try:
            asyncio.run(serve(conf))
        finally:
            installed.shutdown()  # export what is still buffered
    except ConfigError as exc:
        print(f"distill-guard: {exc}", file=sys.stderr)
        return 2
    return 0


def _rules_check(ns: argparse.Namespace) -> int:
    status = 0
    for path in ns.files:
        try:
            rules = load_rules(Path(path))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"ok: {path}: rules version {rules.version}, tiers: {', '.join(sorted(rules.tiers))}")
    return status


def _rules_schema(ns: argparse.Namespace) -> int:
    sys.stdout.write(json_schema())
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser."""
    parser = argparse.ArgumentParser(
        prog="distill-guard", description="Envoy ext_authz governance for a model API."
    )
    parser.add_argument("--version", action="version", version=f"distill-guard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the ext_authz gRPC server")
    settings.add_arguments(serve)
    serve.set_defaults(func=_serve)

    rules = sub.add_parser("rules", help="check or describe rules files")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    check = rules_sub.add_parser("check", help="validate rules files with the server's loader")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(func=_rules_check)
    schema = rules_sub.add_parser("schema", help="print the rules file's JSON Schema")
    schema.set_defaults(func=_rules_schema)
    explain.add_parser(rules_sub)

    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    ns = build_parser().parse_args(argv)
    return int(ns.func(ns))


if __name__ == "__main__":
    sys.exit(main())
