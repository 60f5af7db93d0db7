"""`distill-guard rules explain`: one decision, and the rules that produced it, offline.

It runs the server's own pipeline (built by `authz.app.build_app`) on a
request described by flags, with no server, Envoy or network involved.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path

from authz.accounts import KeyRecord
from authz.app import App, build_app
from authz.decision import Decision
from authz.errors import ConfigError
from authz.facts import RequestFacts, parse_ip
from authz.metering import MemoryRateStore
from authz.registry import MemoryRegistry
from authz.settings import Settings


class _NoRecord:
    """Explaining is not traffic: nothing is recorded."""

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Drop the decision."""


async def explain(ns: argparse.Namespace) -> tuple[Decision, str]:
    """Run one request through the pipeline with tracing; the decision and the key id used."""
    settings = Settings(
        rules=Path(ns.rules),
        accounts=Path(ns.accounts) if ns.accounts else None,
        store=ns.store,
        key_pepper_file=Path(ns.key_pepper_file) if ns.key_pepper_file else None,
        geoip=Path(ns.geoip) if ns.geoip else None,
        asn=Path(ns.asn) if ns.asn else None,
    )
    app = build_app(settings, sink=_NoRecord())
    # Explaining must not spend a customer's real quota: count on a private store.
    app.pipeline._rates = MemoryRateStore()
    try:
        key = ns.key
        if ns.account:
            key = await _stand_in_key(app, ns.account)
        # Envoy (use_remote_address) appends its view of the peer before asking us.
        headers = {"x-forwarded-for": f"{ns.xff},{ns.ip}"} if ns.xff else {}
        if key:
            name = app.rules.current().key_headers[0]
            headers[name] = f"Bearer {key}" if name == "authorization" else key
        body = json.dumps({"model": ns.model}).encode() if ns.model else None
        if body:
            headers["content-length"] = str(len(body))
        facts = RequestFacts(
            method=ns.method,
            path=ns.path,
            host="explain",
            headers=headers,
            client_ip=parse_ip(ns.ip),
            source=ns.ip,
            body=body,
            request_id="explain",
        )
        decision = await app.pipeline.check(facts, explain=True)
    finally:
        await app.close()
    return decision, key or ""


async def _stand_in_key(app: App, account_id: str) -> str:
    """A throwaway key for an existing account, so explain can start from the account."""
    account = await app.registry.get_account(account_id)
    if account is None:
        raise ConfigError("--account", "", f"no account {account_id!r} in the accounts or store")
    key = "dg_explain_" + secrets.token_hex(16)
    # Into the in-process layer only: explain never writes to a shared store.
    app.registry.replace_static(
        MemoryRegistry(
            [KeyRecord(key_id="(explain)", digest=app.hasher.digest(key), account=account)],
            read_only=True,
        )
    )
    return key


def render(decision: Decision) -> str:
    """The trace and the outcome, for people."""
    lines = [f"{phase:>13}  {text}" for phase, text in decision.trace]
    outcome = f"{decision.action.value.upper()} {decision.status} {decision.reason.value}"
    if decision.rule:
        outcome += f" (rule {decision.rule})"
    lines.append(f"{'=>':>13}  {outcome}")
    if decision.detail:
        lines.append(f"{'':>13}  {decision.detail}")
    for name, value in decision.upstream_headers:
        lines.append(f"{'upstream':>13}  {name}: {value}")
    return "\n".join(lines)


def _run(ns: argparse.Namespace) -> int:
    if bool(ns.key) == bool(ns.account):
        print("distill-guard rules explain: give --key or --account", file=sys.stderr)
        return 2
    try:
        decision, _ = asyncio.run(explain(ns))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if ns.json:
        print(
            json.dumps(
                {
                    "action": decision.action.value,
                    "status": decision.status,
                    "reason": decision.reason.value,
                    "rule": decision.rule,
                    "detail": decision.detail,
                    "trace": [{"phase": p, "text": t} for p, t in decision.trace],
                    "upstream_headers": dict(decision.upstream_headers),
                },
                indent=2,
            )
        )
    else:
        print(render(decision))
    return 0


def add_parser(rules_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `rules explain`."""
    p = rules_sub.add_parser("explain", help="show the decision for one request and why")
    p.add_argument("--rules", required=True, help="rules file")
    p.add_argument("--accounts", help="accounts file")
    p.add_argument("--store", default="memory://", help="key store (for --account/--key lookups)")
    p.add_argument("--key-pepper-file", help="pepper file, as the server uses it")
    p.add_argument("--geoip", help="GeoIP country database (MaxMind format)")
    p.add_argument("--asn", help="GeoIP ASN database")
    p.add_argument("--ip", required=True, help="client address as Envoy sees it")
    p.add_argument("--xff", help="X-Forwarded-For as it reaches Envoy (Envoy appends --ip)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--key", help="API key presented")
    who.add_argument("--account", help="account id (a stand-in key is used)")
    p.add_argument("--path", default="/v1/messages")
    p.add_argument("--method", default="POST")
    p.add_argument("--model", help="model named in the request body")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_run)
