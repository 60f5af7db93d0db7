"""A fresh unverified test account for the probes, minted and revoked through the Admin API.

The elicitation probe is about what a brand-new unverified account gets; the
operator may hand one in (`--unverified-key`) or let the assessment create it
(`--admin`). The minted key expires within the hour and is revoked when the
probes end, so a run leaves an inert account behind, never a live key.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from authz.admin import AdminCallError, AdminClient
from authz.keyadmin import KeyAdminError, NewAccount
from authz.rules import Rules

LIFETIME = 3600.0


class MintError(Exception):
    """The Admin API refused or could not be reached."""


@dataclass(frozen=True, slots=True)
class Minted:
    """The minted key: its secret (for the probes only) and its id (to revoke it)."""

    account: str
    key_id: str
    secret: str


def unverified_tier(rules: Rules | None) -> str:
    """The first tier that admits unverified accounts (`free` when the rules are unknown)."""
    if rules is None:
        return "free"
    return next((t.name for t in rules.tiers.values() if t.allow_unverified), "free")


def _token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise MintError(f"--admin-token-file {path}: {exc.strerror or exc}") from None
    if not token:
        raise MintError(f"--admin-token-file {path} is empty")
    return token


async def _call_mint(admin: str, token: str, account: NewAccount, name: str, now: float) -> Minted:
    client = AdminClient(admin, token)
    try:
        created = await client.create_key(name, new_account=account, expires=now + LIFETIME)
    finally:
        await client.close()
    return Minted(name, created.key.key_id, created.secret)


async def _call_revoke(admin: str, token: str, key_id: str) -> None:
    client = AdminClient(admin, token)
    try:
        await client.revoke_key(key_id)
    finally:
        await client.close()


def mint(admin: str, token_file: Path, *, tier: str, country: str, now: float) -> Minted:
    """Create `assess-<now>` (unverified, on `tier`) with one key expiring in an hour."""
    account = NewAccount(tier=tier, kyc="unverified", country=country)
    try:
        return asyncio.run(
            _call_mint(admin, _token(token_file), account, f"assess-{int(now)}", now)
        )
    except (KeyAdminError, AdminCallError) as exc:
        raise MintError(f"--admin {admin}: {exc}") from None


def revoke(admin: str, token_file: Path, key_id: str) -> None:
    """Revoke a minted key."""
    try:
        asyncio.run(_call_revoke(admin, _token(token_file), key_id))
    except (KeyAdminError, AdminCallError) as exc:
        raise MintError(f"--admin {admin}: revoking {key_id}: {exc}") from None
