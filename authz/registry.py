"""In-process key registries: the static accounts file and the embedded memory store.

Both index keys by digest in a dict, so a lookup is O(1) whatever the number of keys.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from authz.accounts import Account, KeyRecord, load_accounts_file
from authz.keys import KeyHasher
from authz.protocols import KeyRegistry


class ReadOnlyRegistry(Exception):
    """A write was sent to a registry that cannot take it (the accounts file)."""


class MemoryRegistry:
    """Keys and accounts in dicts: the embedded store, and the accounts file once loaded."""

    def __init__(
        self,
        records: list[KeyRecord] | None = None,
        *,
        accounts: list[Account] | None = None,
        read_only: bool = False,
    ) -> None:
        self.read_only = read_only
        self._by_digest: dict[str, KeyRecord] = {}
        self._digest_by_id: dict[str, str] = {}
        self._accounts: dict[str, Account] = {a.account: a for a in accounts or []}
        for record in records or []:
            self._store(record)

    def _store(self, record: KeyRecord) -> None:
        self._by_digest[record.digest] = record
        self._digest_by_id[record.key_id] = record.digest
        self._accounts[record.account.account] = record.account

    def _writable(self) -> None:
        if self.read_only:
            raise ReadOnlyRegistry("the accounts file is read-only; use a Redis store for sign-ups")

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The key with this digest, or None."""
        return self._by_digest.get(digest)

    async def put_account(self, account: Account) -> None:
        """Create or replace an account; its keys follow the new values."""
        self._writable()
        self._accounts[account.account] = account
        for digest, record in list(self._by_digest.items()):
            if record.account.account == account.account:
                self._by_digest[digest] = dataclasses.replace(record, account=account)

    async def get_account(self, account_id: str) -> Account | None:
        """The account, or None."""
        return self._accounts.get(account_id)

    async def add_key(self, record: KeyRecord) -> None:
        """Store a new key."""
        self._writable()
        if record.key_id in self._digest_by_id:
            raise ValueError(f"key id {record.key_id!r} already exists")
        self._store(record)

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Mark a key revoked."""
        self._writable()
        digest = self._digest_by_id.get(key_id)
        if digest is None:
            return None
        record = dataclasses.replace(self._by_digest[digest], revoked=True)
        self._by_digest[digest] = record
        return record

    def has_key_id(self, key_id: str) -> bool:
        """Whether a key with this id is held here."""
        return key_id in self._digest_by_id

    async def list_keys(self, account_id: str | None = None) -> list[KeyRecord]:
        """All keys, or one account's, ordered by key id."""
        records = [
            r
            for r in self._by_digest.values()
            if account_id is None or r.account.account == account_id
        ]
        return sorted(records, key=lambda r: r.key_id)


def load_file_registry(path: Path, hasher: KeyHasher) -> MemoryRegistry:
    """Build the read-only registry of an accounts file. Raises ConfigError."""
    entries = load_accounts_file(path)
    return MemoryRegistry(
        [r for entry in entries for r in entry.to_records(hasher)],
        accounts=[entry.to_account() for entry in entries],
        read_only=True,
    )


class LayeredRegistry:
    """The accounts file first, then the dynamic store (memory or Redis) for sign-ups.

    Reads consult both; writes go to the dynamic store. The file layer is a
    callable so a hot reload of the accounts file is seen at once.
    """

    read_only = False

    def __init__(self, static: MemoryRegistry | None, dynamic: KeyRegistry) -> None:
        self._static = static
        self.dynamic = dynamic

    def replace_static(self, static: MemoryRegistry) -> None:
        """Swap in a freshly loaded accounts file."""
        self._static = static

    async def lookup(self, digest: str) -> KeyRecord | None:
        """The key with this digest in the file, else in the dynamic store."""
        if self._static is not None:
            record = await self._static.lookup(digest)
            if record is not None:
                return record
        return await self.dynamic.lookup(digest)

    async def put_account(self, account: Account) -> None:
        """Create or replace an account in the dynamic store."""
        await self.dynamic.put_account(account)

    async def get_account(self, account_id: str) -> Account | None:
        """The account from the file, else from the dynamic store."""
        if self._static is not None:
            found = await self._static.get_account(account_id)
            if found is not None:
                return found
        return await self.dynamic.get_account(account_id)

    async def add_key(self, record: KeyRecord) -> None:
        """Store a new key in the dynamic store; ids must be unique across both layers."""
        if self._static is not None and self._static.has_key_id(record.key_id):
            raise ValueError(f"key id {record.key_id!r} already exists in the accounts file")
        await self.dynamic.add_key(record)

    async def revoke_key(self, key_id: str) -> KeyRecord | None:
        """Revoke a key of the dynamic store (file keys are revoked by editing the file)."""
        if self._static is not None and self._static.has_key_id(key_id):
            raise ReadOnlyRegistry(
                f'key {key_id!r} is declared in the accounts file: set "revoked": true there'
            )
        return await self.dynamic.revoke_key(key_id)

    async def list_keys(self, account_id: str | None = None) -> list[KeyRecord]:
        """Keys of both layers, ordered by key id."""
        records = await self.dynamic.list_keys(account_id)
        if self._static is not None:
            records = records + await self._static.list_keys(account_id)
        return sorted(records, key=lambda r: r.key_id)
