"""The deployment under assessment: its rules, keys, Envoy bootstrap and serve settings.

Each part is optional and loaded with the project's own loaders where one
exists (`load_rules`, `load_accounts_file`, the Redis registry); the Envoy
bootstrap is plain YAML walked by the Envoy checks. Line numbers come from the
same YAML node index the rules loader uses, so evidence can say `file:line`.
A part that cannot be read is a ConfigError: the command exits 2 with it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.accounts import Kyc, load_accounts_file
from authz.assess.serveconf import ServeConfig
from authz.clock import SystemClock
from authz.errors import ConfigError
from authz.rules import Rules, _line_index, load_rules


@dataclass(frozen=True, slots=True)
class KeyFact:
    """One key as the accounts checks see it (never its secret)."""

    tier: str
    kyc: Kyc
    expires: float | None
    revoked: bool
    plaintext: bool  # the accounts file holds the secret itself, not its digest
    where: str  # "accounts.jsonl: line 3" or "redis dg:reg:"


@dataclass(frozen=True, slots=True)
class Located:
    """A YAML document with the line of every dotted path in it."""

    path: Path
    lines: dict[str, int]

    def at(self, dotted: str) -> str:
        """`file:line dotted.path`; an absent path names its nearest parent and what is missing."""
        line = self.lines.get(dotted)
        if line is not None:
            return f"{self.path.name}:{line} {dotted}"
        parts = dotted.split(".")
        # Stop before the root: its line is merely the document's first one, which
        # would point a reader at an unrelated key.
        for n in range(len(parts) - 1, 0, -1):
            parent = ".".join(parts[:n])
            line = self.lines.get(parent)
            if line is not None:
                missing = ".".join(parts[n:])
                return f"{self.path.name}:{line} {parent} ({missing} not present)"
        return f"{self.path.name} {dotted} (not present)"


@dataclass
class Deployment:
    """Everything the configuration checks read; a missing part is None."""

    rules: Rules | None = None
    rules_doc: Located | None = None
    keys: list[KeyFact] | None = None
    envoy: dict[str, Any] | None = None
    envoy_doc: Located | None = None
    serve: ServeConfig | None = None
    now: float = 0.0

    def rule_at(self, dotted: str) -> str:
        """Evidence location inside the rules file."""
        assert self.rules_doc is not None
        return self.rules_doc.at(dotted)

    def envoy_at(self, dotted: str) -> str:
        """Evidence location inside the Envoy bootstrap."""
        assert self.envoy_doc is not None
        return self.envoy_doc.at(dotted)


def _located(path: Path) -> tuple[Any, Located]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(where, "", f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(str(path), "", "invalid YAML: nested too deeply") from None
    return data, Located(path, _line_index(node))


def load_rules_part(path: Path) -> tuple[Rules, Located]:
    """The rules with the server's loader, and their line index."""
    rules = load_rules(path)
    _, located = _located(path)
    return rules, located


def load_envoy(path: Path) -> tuple[dict[str, Any], Located]:
    """The Envoy bootstrap as data, and its line index."""
    data, located = _located(path)
    if not isinstance(data, dict) or "static_resources" not in data:
        raise ConfigError(str(path), "", "not an Envoy bootstrap (no static_resources)")
    return data, located


def keys_from_file(path: Path) -> list[KeyFact]:
    """The keys of an accounts file, with the server's loader."""
    facts: list[KeyFact] = []
    for n, entry in enumerate(load_accounts_file(path)):
        for k in entry.keys:
            facts.append(
                KeyFact(
                    tier=entry.tier,
                    kyc=entry.kyc,
                    expires=None if k.expires is None else k.expires.timestamp(),
                    revoked=k.revoked,
                    plaintext=k.secret is not None,
                    where=f"{path.name}: account {entry.account} (entry {n + 1}), key {k.id}",
                )
            )
    return facts


def keys_from_store(url: str) -> list[KeyFact]:
    """The keys of a Redis registry, read through the server's registry class."""
    from redis.exceptions import RedisError

    from authz.app import open_stores

    async def read() -> list[KeyFact]:
        registry, rates, client = open_stores(url, clock=SystemClock(), timeout=5.0, cache_ttl=0)
        try:
            records = await registry.list_keys()
        finally:
            await rates.aclose()
            if client is not None:
                await client.aclose()
        return [
            KeyFact(
                tier=r.account.tier,
                kyc=r.account.kyc,
                expires=r.expires,
                revoked=r.revoked,
                plaintext=False,
                where=f"store: account {r.account.account}, key {r.key_id}",
            )
            for r in records
        ]

    if url.startswith("memory:"):
        raise ConfigError("--store", "", "memory:// lives inside one server; give redis://…")
    try:
        return asyncio.run(read())
    except RedisError as exc:
        raise ConfigError("--store", "", f"the store did not answer: {exc}") from None
