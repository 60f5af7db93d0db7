"""Accounts and keys: the identity model, and the accounts file that declares them.

The accounts file has one JSON object per account (JSON lines), or a YAML list
of the same objects; see docs/accounts.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import AwareDatetime, Field, ValidationError, model_validator

from authz.errors import ConfigError, format_validation_error
from authz.keys import KeyHasher, KeyProblem, check_key_shape
from authz.schema import StrictModel


class Kyc(StrEnum):
    """Know-your-customer status of an account."""

    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    PENDING = "pending"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Account:
    """Who is calling: an account of an entity (organisation), on a tier."""

    account: str
    entity: str
    tier: str
    kyc: Kyc
    country: str
    created: float | None = None


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as the registries keep it: digest and metadata, never the secret."""

    key_id: str
    digest: str
    account: Account
    expires: float | None = None
    revoked: bool = False
    created: float | None = None

    def status(self, now: float) -> str:
        """`active`, `revoked` or `expired` at time `now`."""
        if self.revoked:
            return "revoked"
        if self.expires is not None and now >= self.expires:
            return "expired"
        return "active"


class KeyEntry(StrictModel):
    """A key in the accounts file: a plaintext `secret` (hashed at load) or its digest."""

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    secret: str | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    expires: AwareDatetime | None = None
    revoked: bool = False

    @model_validator(mode="after")
    def _one_of_secret_or_digest(self) -> KeyEntry:
        if (self.secret is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'secret' or 'sha256'")
        if self.secret is not None:
            try:
                check_key_shape(self.secret)
            except KeyProblem as exc:
                raise ValueError(str(exc)) from None
        return self


class AccountEntry(StrictModel):
    """One account in the accounts file."""

    account: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")
    entity: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,128}$")
    tier: str = Field(min_length=1, max_length=64)
    kyc: Kyc
    country: str = Field(pattern=r"^[A-Z]{2}$")
    created: AwareDatetime | None = None
    keys: list[KeyEntry] = Field(default_factory=list)

    def to_account(self) -> Account:
        """The runtime value of this entry."""
        return Account(
            account=self.account,
            entity=self.entity,
            tier=self.tier,
            kyc=self.kyc,
            country=self.country,
            created=_epoch(self.created),
        )

    def to_records(self, hasher: KeyHasher) -> list[KeyRecord]:
        """The key records of this entry, with secrets replaced by digests."""
        account = self.to_account()
        return [
            KeyRecord(
                key_id=k.id,
                digest=k.sha256 if k.sha256 is not None else hasher.digest(k.secret or ""),
                account=account,
                expires=_epoch(k.expires),
                revoked=k.revoked,
            )
            for k in self.keys
        ]


def _epoch(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def load_accounts_file(path: Path) -> list[AccountEntry]:
    """Parse and validate an accounts file; errors name the file, the entry and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    raw_entries: list[tuple[str, Any]] = []
    if path.suffix in {".yaml", ".yml"}:
        try:
            doc = yaml.safe_load(text)
        except RecursionError:
            raise ConfigError(str(path), "", "invalid YAML: nested too deeply") from None
        except yaml.YAMLError as exc:
            # Name the line and the problem only: PyYAML's full message quotes the
            # source line, which may hold a key secret.
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or "cannot parse"
            raise ConfigError(where, "", f"invalid YAML: {problem}") from None
        if doc is None:
            doc = []
        if not isinstance(doc, list):
            raise ConfigError(str(path), "", "expected a list of accounts")
        raw_entries = [(f"[{i}]", item) for i, item in enumerate(doc)]
    else:
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                raw_entries.append((f"line {lineno}", json.loads(line)))
            except RecursionError:
                raise ConfigError(str(path), f"line {lineno}", "nested too deeply") from None
            except json.JSONDecodeError as exc:
                raise ConfigError(str(path), f"line {lineno}", f"invalid JSON: {exc.msg}") from None
    entries: list[AccountEntry] = []
    seen_accounts: set[str] = set()
    seen_keys: set[str] = set()
    for where, raw in raw_entries:
        try:
            entry = AccountEntry.model_validate(raw)
        except ValidationError as exc:
            raise format_validation_error(str(path), exc, prefix=where) from None
        if entry.account in seen_accounts:
            raise ConfigError(str(path), where, f"duplicate account {entry.account!r}")
        seen_accounts.add(entry.account)
        for key in entry.keys:
            if key.id in seen_keys:
                raise ConfigError(str(path), where, f"duplicate key id {key.id!r}")
            seen_keys.add(key.id)
        entries.append(entry)
    return entries
