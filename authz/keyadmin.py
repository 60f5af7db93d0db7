"""Key administration: the one implementation behind the Admin API and `distill-guard keys`.

It works on any KeyRegistry and speaks plain values. Every refusal is a
KeyAdminError with a stable code, which the Admin API maps to a gRPC status
and the CLI prints. Secrets are returned once, by `create_key`, and never logged.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from authz.accounts import Account, AccountEntry, KeyRecord, load_accounts_file
from authz.errors import ConfigError, format_validation_error
from authz.keys import KeyHasher, mint_key
from authz.protocols import Clock, KeyRegistry
from authz.registry import ReadOnlyRegistry

log = logging.getLogger("distill_guard.admin")

ErrorCode = Literal["not_found", "invalid", "read_only", "exists"]


class KeyAdminError(Exception):
    """A key-admin request that cannot be done; `code` says why, the message says what."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        self.code: ErrorCode = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class NewAccount:
    """The fields of an account to create along with its first key."""

    tier: str
    kyc: str
    country: str
    entity: str = ""  # empty: the account is its own entity


@dataclass(frozen=True, slots=True)
class KeyView:
    """A key as an admin sees it: its owner and state, never its digest or secret."""

    key_id: str
    account: str
    entity: str
    tier: str
    status: str
    expires: float | None = None
    created: float | None = None

    @classmethod
    def of(cls, record: KeyRecord, now: float) -> KeyView:
        """The view of a stored key at time `now`."""
        return cls(
            key_id=record.key_id,
            account=record.account.account,
            entity=record.account.entity,
            tier=record.account.tier,
            status=record.status(now),
            expires=record.expires,
            created=record.created,
        )


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A freshly minted key: the only value that ever holds its secret."""

    key: KeyView
    secret: str


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What importing an accounts file did."""

    accounts: int
    keys_added: int
    keys_present: int


@contextmanager
def _registry_errors() -> Iterator[None]:
    """Translate the registries' write refusals into KeyAdminError."""
    try:
        yield
    except ReadOnlyRegistry as exc:
        raise KeyAdminError("read_only", str(exc)) from None
    except ValueError as exc:  # add_key's "key id ... already exists"
        raise KeyAdminError("exists", str(exc)) from None


class KeyAdmin:
    """Creates, revokes and lists keys, and imports accounts files, over one registry.

    `tiers` returns the tier names of the current rules (None: tiers are not
    checked); `accounts_file` returns the read-only accounts-file layer, whose
    accounts must be changed in the file rather than here.
    """

    def __init__(
        self,
        registry: KeyRegistry,
        hasher: KeyHasher,
        clock: Clock,
        *,
        tiers: Callable[[], Collection[str]] | None = None,
        accounts_file: Callable[[], KeyRegistry | None] | None = None,
    ) -> None:
        self._registry = registry
        self._hasher = hasher
        self._clock = clock
        self._tiers = tiers
        self._accounts_file = accounts_file

    async def create_key(
        self,
        account_id: str,
        *,
        new_account: NewAccount | None = None,
        expires: float | None = None,
    ) -> CreatedKey:
        """Mint a key for an account, creating the account from `new_account` when unknown."""
        now = self._clock.now()
        if expires is not None and expires <= now:
            raise KeyAdminError("invalid", "expires: lies in the past")
        await self._refuse_file_account(account_id)
        account = await self._registry.get_account(account_id)
        if new_account is not None:
            wanted = self._validated(account_id, new_account, created=now)
            if account is None:
                with _registry_errors():
                    await self._registry.put_account(wanted)
                log.info("account created", extra={"account": account_id, "tier": wanted.tier})
                account = wanted
            elif dataclasses.replace(account, created=None) != dataclasses.replace(
                wanted, created=None
            ):
                raise KeyAdminError(
                    "exists",
                    f"account {account_id!r} exists with other values (entity {account.entity!r}, "
                    f"tier {account.tier!r}, kyc {account.kyc.value!r}, country "
                    f"{account.country!r}); leave out the new-account fields to add a key to it",
                )
        if account is None:
            raise KeyAdminError(
                "not_found",
                f"no account {account_id!r}; give tier, kyc and country to create it",
            )
        key_id, secret = mint_key()
        record = KeyRecord(
            key_id=key_id,
            digest=self._hasher.digest(secret),
            account=account,
            expires=expires,
            created=now,
        )
        with _registry_errors():
            await self._registry.add_key(record)
        log.info("key created", extra={"key_id": key_id, "account": account_id})
        return CreatedKey(KeyView.of(record, now), secret)

    async def revoke_key(self, key_id: str) -> KeyView:
        """Mark a key revoked (revoking twice is harmless)."""
        with _registry_errors():
            record = await self._registry.revoke_key(key_id)
        if record is None:
            raise KeyAdminError("not_found", f"no key {key_id!r}")
        log.info("key revoked", extra={"key_id": key_id, "account": record.account.account})
        return KeyView.of(record, self._clock.now())

    async def list_keys(self, account_id: str | None = None) -> list[KeyView]:
        """All keys, or those of one existing account, ordered by key id."""
        if account_id is not None:
            await self.get_account(account_id)
        now = self._clock.now()
        return [KeyView.of(r, now) for r in await self._registry.list_keys(account_id)]

    async def get_account(self, account_id: str) -> Account:
        """The account, or KeyAdminError not_found."""
        account = await self._registry.get_account(account_id)
        if account is None:
            raise KeyAdminError("not_found", f"no account {account_id!r}")
        return account

    async def import_accounts(self, path: Path) -> ImportReport:
        """Copy an accounts file's accounts and keys into the registry.

        Accounts are created or replaced (their keys follow). A key id already
        stored with the same digest is left as it is; with another digest the
        whole import is refused before anything is written.
        """
        if self._registry.read_only:
            raise KeyAdminError("read_only", "the registry is read-only; import into a Redis store")
        try:
            entries = load_accounts_file(path)
        except ConfigError as exc:
            raise KeyAdminError("invalid", str(exc)) from None
        for entry in entries:
            self._check_tier(entry.tier, where=f"{path}: account {entry.account!r}: tier")
        now = self._clock.now()
        present = {r.key_id: r.digest for r in await self._registry.list_keys()}
        records = [r for entry in entries for r in entry.to_records(self._hasher)]
        clashes = sorted(r.key_id for r in records if present.get(r.key_id, r.digest) != r.digest)
        if clashes:
            raise KeyAdminError(
                "exists", f"{path}: key ids already used by other keys: {', '.join(clashes)}"
            )
        added = 0
        with _registry_errors():
            for entry in entries:
                await self._registry.put_account(entry.to_account())
            for record in records:
                if record.key_id not in present:
                    await self._registry.add_key(dataclasses.replace(record, created=now))
                    added += 1
        report = ImportReport(len(entries), added, len(records) - added)
        log.info("accounts imported", extra={"file": str(path), **dataclasses.asdict(report)})
        return report

    async def _refuse_file_account(self, account_id: str) -> None:
        # A key stored elsewhere would carry a copy of the file's account and
        # miss later edits of the file (a tier downgrade, a KYC rejection).
        accounts_file = self._accounts_file() if self._accounts_file else None
        if accounts_file is not None and await accounts_file.get_account(account_id) is not None:
            raise KeyAdminError(
                "read_only",
                f"account {account_id!r} is declared in the accounts file: add its keys there "
                "(`distill-guard keys hash` prints the sha256 to put in the file)",
            )

    def _validated(self, account_id: str, new: NewAccount, *, created: float) -> Account:
        """The account to create, checked as strictly as an accounts-file entry."""
        try:
            entry = AccountEntry.model_validate(
                {
                    "account": account_id,
                    "entity": new.entity or account_id,
                    "tier": new.tier,
                    "kyc": new.kyc,
                    "country": new.country,
                }
            )
        except ValidationError as exc:
            err = format_validation_error("new account", exc)
            raise KeyAdminError("invalid", f"{err.path}: {err.problem}") from None
        self._check_tier(entry.tier, where="tier")
        return dataclasses.replace(entry.to_account(), created=created)

    def _check_tier(self, tier: str, *, where: str) -> None:
        if self._tiers is None:
            return
        known = self._tiers()
        if tier not in known:
            listed = ", ".join(sorted(known))
            raise KeyAdminError("invalid", f"{where}: {tier!r} is not a rules tier ({listed})")
