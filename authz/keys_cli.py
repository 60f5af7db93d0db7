"""`distill-guard keys`: create, revoke, list and import API keys; digest one for the accounts file.

Keys are reached either in the store itself (`--store redis://…`) or through a
running server's Admin API (`--server HOST:PORT` and the admin token). Both
paths run authz.keyadmin; this module only parses arguments and prints.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import getpass
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from authz.accounts import Kyc
from authz.admin import AdminCallError, AdminClient
from authz.app import open_stores
from authz.clock import SystemClock
from authz.errors import ConfigError
from authz.grpctls import DEFAULT_SERVER_NAME, channel_credentials, channel_options
from authz.keyadmin import KeyAdmin, KeyAdminError, KeyView, NewAccount
from authz.keys import KeyHasher, KeyProblem, check_key_shape
from authz.rules import load_rules
from authz.settings import ENV_PREFIX, Settings

# A one-shot command may wait longer for the store than a request may.
_STORE_TIMEOUT = 5.0

Admin = KeyAdmin | AdminClient
Command = Callable[[argparse.Namespace, Admin], Awaitable[int]]


class _Usage(Exception):
    """The command line cannot work as given (exit status 2)."""


def _settings(ns: argparse.Namespace) -> Settings:
    """The server's Settings, so the pepper and admin token are read exactly as `serve` reads them.

    `rules` is only loaded when --rules was given.
    """
    pepper = getattr(ns, "key_pepper_file", None)
    token = getattr(ns, "admin_token_file", None)
    return Settings(
        rules=Path(getattr(ns, "rules", None) or ""),
        store=getattr(ns, "store", None) or "",
        key_pepper_file=Path(pepper) if pepper else None,
        admin_token_file=Path(token) if token else None,
    )


async def _with_admin(ns: argparse.Namespace, command: Command) -> int:
    """Run a command against the Admin API (--server) or the store (--store)."""
    conf = _settings(ns)
    if getattr(ns, "server", None):
        token = conf.admin_token()
        if token is None:
            raise _Usage(
                f"--server needs the admin token: --admin-token-file or {ENV_PREFIX}ADMIN_TOKEN"
            )
        credentials = None
        if getattr(ns, "tls_ca", None):
            credentials = channel_credentials(Path(ns.tls_ca))
        client = AdminClient(
            ns.server,
            token,
            credentials=credentials,
            options=channel_options(ns.tls_server_name if credentials else None),
        )
        try:
            return await command(ns, client)
        finally:
            await client.close()
    if not conf.store:
        raise _Usage("give --store redis://HOST:PORT/DB, or --server HOST:PORT")
    if conf.store.startswith("memory:"):
        raise _Usage(
            "memory:// lives inside one server process and would vanish with this command; "
            "use --store redis://… or --server HOST:PORT"
        )
    tiers = frozenset(load_rules(conf.rules).tiers) if ns.rules else None
    clock = SystemClock()
    registry, rates, redis = open_stores(
        conf.store, clock=clock, timeout=_STORE_TIMEOUT, cache_ttl=0
    )
    hasher = KeyHasher(conf.pepper())
    admin = KeyAdmin(registry, hasher, clock, tiers=None if tiers is None else lambda: tiers)
    try:
        return await command(ns, admin)
    finally:
        await rates.aclose()
        if redis is not None:
            await redis.aclose()


def _runs(command: Command) -> Callable[[argparse.Namespace], int]:
    """An argparse handler running `command` and turning refusals into a message and a status."""

    def run(ns: argparse.Namespace) -> int:
        try:
            return asyncio.run(_with_admin(ns, command))
        except (KeyAdminError, AdminCallError) as exc:
            print(f"distill-guard keys: {exc}", file=sys.stderr)
            return 1
        except RedisError as exc:
            print(f"distill-guard keys: the store did not answer: {exc}", file=sys.stderr)
            return 1
        except (_Usage, ConfigError, OSError) as exc:
            print(f"distill-guard keys: {exc}", file=sys.stderr)
            return 2

    return run


def _time(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _rfc3339(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an RFC 3339 time: {text!r}") from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a time zone (Z or +HH:MM): {text!r}")
    return when.timestamp()


def _key_json(key: KeyView) -> dict[str, Any]:
    return dataclasses.asdict(key) | {"expires": _time(key.expires), "created": _time(key.created)}


async def _create(ns: argparse.Namespace, admin: Admin) -> int:
    new_account = None
    given = {"--entity": ns.entity, "--tier": ns.tier, "--kyc": ns.kyc, "--country": ns.country}
    if any(given.values()):
        missing = [flag for flag in ("--tier", "--kyc", "--country") if not given[flag]]
        if missing:
            raise _Usage(f"to create the account also give {', '.join(missing)}")
        new_account = NewAccount(ns.tier, ns.kyc, ns.country, entity=ns.entity or "")
    created = await admin.create_key(ns.account, new_account=new_account, expires=ns.expires)
    key = created.key
    if ns.json:
        print(json.dumps(_key_json(key) | {"secret": created.secret}))
    else:
        print(f"key_id:  {key.key_id}")
        print(f"account: {key.account} (tier {key.tier})")
        print(f"expires: {_time(key.expires) or 'never'}")
        print(f"secret:  {created.secret}")
    print("The secret is shown only now: only its digest is stored.", file=sys.stderr)
    return 0


async def _revoke(ns: argparse.Namespace, admin: Admin) -> int:
    key = await admin.revoke_key(ns.key_id)
    print(f"revoked {key.key_id} (account {key.account})")
    return 0


async def _list(ns: argparse.Namespace, admin: Admin) -> int:
    keys = await admin.list_keys(ns.account)
    if ns.json:
        print(json.dumps([_key_json(k) for k in keys], indent=2))
        return 0
    rows = [("KEY ID", "ACCOUNT", "ENTITY", "TIER", "STATUS", "EXPIRES")]
    rows += [
        (k.key_id, k.account, k.entity, k.tier, k.status, _time(k.expires) or "never") for k in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


async def _import(ns: argparse.Namespace, admin: Admin) -> int:
    if not isinstance(admin, KeyAdmin):
        raise _Usage("keys import writes to the store directly: use --store, not --server")
    report = await admin.import_accounts(Path(ns.file))
    print(
        f"imported {report.accounts} accounts from {ns.file}: "
        f"{report.keys_added} keys added, {report.keys_present} already present"
    )
    return 0


def _hash(ns: argparse.Namespace) -> int:
    """Print the digest of a key read from stdin: the accounts file's `sha256` value."""
    try:
        pepper = _settings(ns).pepper()
    except OSError as exc:
        print(f"distill-guard keys: {exc}", file=sys.stderr)
        return 2
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.read().strip()
    try:
        check_key_shape(key)
    except KeyProblem as exc:
        print(f"distill-guard keys: {exc}", file=sys.stderr)
        return 1
    print(KeyHasher(pepper).digest(key))
    return 0


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name)


def register(subparsers: Any) -> None:
    """Add `keys create|revoke|list|import|hash` to the command line."""
    pepper = argparse.ArgumentParser(add_help=False)
    pepper.add_argument(
        "--key-pepper-file",
        default=_env("KEY_PEPPER_FILE"),
        help=f"the HMAC pepper the server uses [env {ENV_PREFIX}KEY_PEPPER_FILE]",
    )
    store = argparse.ArgumentParser(add_help=False, parents=[pepper])
    store.add_argument(
        "--store",
        default=_env("STORE"),
        help=f"the server's Redis store, redis://HOST:PORT/DB [env {ENV_PREFIX}STORE]",
    )
    store.add_argument(
        "--rules",
        default=_env("RULES"),
        help="rules file whose tiers new accounts must use (checked only when given)",
    )
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--server", metavar="HOST:PORT", help="use a server's Admin API instead of the store"
    )
    server.add_argument(
        "--admin-token-file",
        default=_env("ADMIN_TOKEN_FILE"),
        help=f"file holding the Admin API token [or env {ENV_PREFIX}ADMIN_TOKEN]",
    )
    server.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="CA certificate to verify a TLS Admin API with (a server run with --tls-cert)",
    )
    server.add_argument(
        "--tls-server-name",
        default=DEFAULT_SERVER_NAME,
        metavar="NAME",
        help=f"the name the server certificate must carry [default: {DEFAULT_SERVER_NAME}]",
    )
    both = [store, server]

    keys = subparsers.add_parser("keys", help="create, revoke, list and import API keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", parents=both, help="mint a key (prints its secret once)")
    create.add_argument("--account", required=True, help="the account that owns the key")
    create.add_argument("--entity", help="new account: its organisation (default: the account)")
    create.add_argument("--tier", help="new account: its tier")
    create.add_argument("--kyc", choices=[k.value for k in Kyc], help="new account: KYC status")
    create.add_argument("--country", help="new account: ISO country code, e.g. US")
    create.add_argument("--expires", type=_rfc3339, help="RFC 3339 time the key stops working")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=_runs(_create))

    revoke = actions.add_parser("revoke", parents=both, help="revoke a key by its id")
    revoke.add_argument("key_id", metavar="KEY_ID")
    revoke.set_defaults(func=_runs(_revoke))

    listing = actions.add_parser("list", parents=both, help="list keys (never their secrets)")
    listing.add_argument("--account", help="only this account's keys")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_runs(_list))

    importing = actions.add_parser(
        "import", parents=[store], help="copy an accounts file into the Redis store"
    )
    importing.add_argument("file", metavar="FILE", help="accounts file (JSON lines or YAML)")
    importing.set_defaults(func=_runs(_import))

    hashing = actions.add_parser(
        "hash", parents=[pepper], help="print the digest of a key read from stdin"
    )
    hashing.set_defaults(func=_hash)
