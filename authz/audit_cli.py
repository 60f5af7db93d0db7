"""The `distill-guard audit` command group.

Each module in ACTIONS adds its sub-commands through `add_parsers(actions)`.
"""

from __future__ import annotations

import argparse
import importlib

ACTIONS: tuple[str, ...] = (
    "authz.audit.verify",
    "authz.audit.tail",
    "authz.audit.export",
    "authz.audit.rollup",
    "authz.audit.query_cli",
    "authz.audit.gen_audit",
    "authz.audit.bench",
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `audit` and its actions."""
    audit = sub.add_parser("audit", help="verify, tail, query and export the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    for name in ACTIONS:
        importlib.import_module(name).add_parsers(actions)
