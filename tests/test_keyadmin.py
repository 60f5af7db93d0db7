"""Key administration over the memory registry: what it creates, and the exact refusals."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from authz.accounts import Kyc
from authz.clock import ManualClock
from authz.keyadmin import KeyAdmin, KeyAdminError, NewAccount
from authz.keys import KeyHasher
from authz.logs import JsonFormatter
from authz.registry import LayeredRegistry, MemoryRegistry, load_file_registry
from tests.fakes import DEMO_ACCOUNTS

NOW = 1_790_000_000.0
TIERS = ("free", "pro", "enterprise")
FREE_FR = NewAccount(tier="free", kyc="unverified", country="FR")


def _admin(registry: MemoryRegistry | None = None, *, hasher: KeyHasher | None = None) -> KeyAdmin:
    return KeyAdmin(
        registry or MemoryRegistry(), hasher or KeyHasher(), ManualClock(NOW), tiers=lambda: TIERS
    )


def _layered_admin() -> tuple[KeyAdmin, MemoryRegistry]:
    static = load_file_registry(DEMO_ACCOUNTS, KeyHasher())
    dynamic = MemoryRegistry()
    admin = KeyAdmin(
        LayeredRegistry(static, dynamic),
        KeyHasher(),
        ManualClock(NOW),
        tiers=lambda: TIERS,
        accounts_file=lambda: static,
    )
    return admin, dynamic


def test_create_mints_a_key_whose_digest_finds_the_new_account(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A created key is stored by its (peppered) digest only, and its secret is never logged."""
    registry = MemoryRegistry()
    hasher = KeyHasher(b"pepper")
    admin = _admin(registry, hasher=hasher)
    with caplog.at_level(logging.DEBUG):
        created = asyncio.run(admin.create_key("ann", new_account=FREE_FR, expires=NOW + 60))
    record = asyncio.run(registry.lookup(hasher.digest(created.secret)))
    assert record is not None
    assert record.key_id == created.key.key_id
    assert (record.account.entity, record.account.tier, record.account.kyc) == (
        "ann",
        "free",
        Kyc.UNVERIFIED,
    )
    assert (record.created, record.expires, record.account.created) == (NOW, NOW + 60, NOW)
    assert created.key.status == "active"
    assert created.secret not in repr(record)
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert created.key.key_id in logged
    assert created.secret not in logged


def test_second_key_for_an_existing_account_needs_no_fields() -> None:
    """Once an account exists, a key is added by naming it; repeating equal fields is fine."""
    admin = _admin()
    asyncio.run(admin.create_key("ann", new_account=FREE_FR))
    asyncio.run(admin.create_key("ann"))
    asyncio.run(admin.create_key("ann", new_account=FREE_FR))
    assert len(asyncio.run(admin.list_keys("ann"))) == 3


@pytest.mark.parametrize(
    ("new_account", "account_id", "code", "message"),
    [
        (
            None,
            "nobody",
            "not_found",
            "no account 'nobody'; give tier, kyc and country to create it",
        ),
        (
            NewAccount(tier="gold", kyc="verified", country="US"),
            "ann",
            "invalid",
            "tier: 'gold' is not a rules tier (enterprise, free, pro)",
        ),
        (
            NewAccount(tier="free", kyc="maybe", country="US"),
            "ann",
            "invalid",
            "kyc: Input should be 'verified', 'unverified', 'pending' or 'rejected' (got 'maybe')",
        ),
        (
            NewAccount(tier="free", kyc="verified", country="usa"),
            "ann",
            "invalid",
            "country: String should match pattern '^[A-Z]{2}$' (got 'usa')",
        ),
        (
            FREE_FR,
            "has space",
            "invalid",
            "account: String should match pattern '^[A-Za-z0-9_.:@-]{1,128}$' (got 'has space')",
        ),
    ],
)
def test_create_refusals(
    new_account: NewAccount | None, account_id: str, code: str, message: str
) -> None:
    """Unknown accounts, tiers outside the rules and malformed fields are refused, with a code."""
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(_admin().create_key(account_id, new_account=new_account))
    assert (caught.value.code, str(caught.value)) == (code, message)


def test_create_refuses_other_values_for_an_existing_account() -> None:
    """New-account fields that contradict the stored account are `exists`, not a silent change."""
    admin = _admin()
    asyncio.run(admin.create_key("ann", new_account=FREE_FR))
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(admin.create_key("ann", new_account=NewAccount("pro", "verified", "FR")))
    assert caught.value.code == "exists"
    assert str(caught.value).startswith("account 'ann' exists with other values (entity 'ann', ")


def test_create_refuses_an_expiry_in_the_past() -> None:
    """A key that would be born expired is refused."""
    with pytest.raises(KeyAdminError, match="expires: lies in the past"):
        asyncio.run(_admin().create_key("ann", new_account=FREE_FR, expires=NOW))


def test_tiers_are_not_checked_without_rules() -> None:
    """Without rules (a CLI run without --rules) any well-formed tier name is accepted."""
    admin = KeyAdmin(MemoryRegistry(), KeyHasher(), ManualClock(NOW))
    created = asyncio.run(admin.create_key("ann", new_account=NewAccount("gold", "verified", "US")))
    assert created.key.tier == "gold"


def test_accounts_file_accounts_and_keys_are_read_only() -> None:
    """Accounts and keys declared in the accounts file are changed in the file, not by the admin."""
    admin, dynamic = _layered_admin()
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(admin.create_key("bob-dev"))
    assert caught.value.code == "read_only"
    assert "declared in the accounts file" in str(caught.value)
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(admin.revoke_key("k_bob_1"))
    assert caught.value.code == "read_only"
    assert str(caught.value) == (
        "key 'k_bob_1' is declared in the accounts file: set \"revoked\": true there"
    )
    assert asyncio.run(dynamic.list_keys()) == []


def test_revoke_list_and_get_account() -> None:
    """Revoking shows in the listing; unknown keys and accounts are `not_found`."""
    admin, _ = _layered_admin()
    created = asyncio.run(admin.create_key("ann", new_account=FREE_FR))
    revoked = asyncio.run(admin.revoke_key(created.key.key_id))
    assert revoked.status == "revoked"
    statuses = {k.key_id: k.status for k in asyncio.run(admin.list_keys())}
    assert statuses[created.key.key_id] == "revoked"
    assert statuses["k_bob_old"] == "revoked"
    assert statuses["k_dave_exp"] == "expired"
    assert statuses["k_acme_1"] == "active"
    assert asyncio.run(admin.get_account("acme-research")).tier == "enterprise"
    for call, message in [
        (admin.revoke_key("k_nope"), "no key 'k_nope'"),
        (admin.get_account("nobody"), "no account 'nobody'"),
        (admin.list_keys("nobody"), "no account 'nobody'"),
    ]:
        with pytest.raises(KeyAdminError) as caught:
            asyncio.run(call)
        assert (caught.value.code, str(caught.value)) == ("not_found", message)


def test_import_copies_accounts_and_digests_and_is_repeatable() -> None:
    """Importing the demo file stores its accounts and keys; a second import adds nothing."""
    registry = MemoryRegistry()
    admin = _admin(registry)
    first = asyncio.run(admin.import_accounts(DEMO_ACCOUNTS))
    assert (first.accounts, first.keys_added, first.keys_present) == (11, 13, 0)
    bob = asyncio.run(registry.lookup(KeyHasher().digest("dg_demo_pro_bob_000000001")))
    assert bob is not None
    assert (bob.key_id, bob.account.tier, bob.created) == ("k_bob_1", "pro", NOW)
    old = asyncio.run(registry.lookup(KeyHasher().digest("dg_demo_pro_bob_revoked01")))
    assert old is not None
    assert old.revoked
    again = asyncio.run(admin.import_accounts(DEMO_ACCOUNTS))
    assert (again.keys_added, again.keys_present) == (0, 13)


def test_import_refuses_a_key_id_taken_by_another_key(tmp_path: Path) -> None:
    """A key id already stored with another digest stops the import before any write."""
    registry = MemoryRegistry()
    admin = _admin(registry)
    asyncio.run(admin.import_accounts(DEMO_ACCOUNTS))
    clash = tmp_path / "accounts.jsonl"
    clash.write_text(
        '{"account": "eve", "entity": "eve", "tier": "free", "kyc": "unverified", '
        '"country": "FR", "keys": [{"id": "k_bob_1", "sha256": "' + "ab" * 32 + '"}]}\n'
    )
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(admin.import_accounts(clash))
    assert caught.value.code == "exists"
    assert str(caught.value) == f"{clash}: key ids already used by other keys: k_bob_1"
    assert asyncio.run(registry.get_account("eve")) is None


def test_import_refusals(tmp_path: Path) -> None:
    """A broken file is `invalid` with the loader's message; a read-only registry is `read_only`."""
    broken = tmp_path / "accounts.jsonl"
    broken.write_text('{"account": "x"\n')
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(_admin().import_accounts(broken))
    assert caught.value.code == "invalid"
    assert str(caught.value).startswith(f"{broken}: line 1: invalid JSON")
    unknown_tier = tmp_path / "tiers.jsonl"
    unknown_tier.write_text(
        '{"account": "x", "entity": "x", "tier": "gold", "kyc": "verified", "country": "US"}\n'
    )
    with pytest.raises(KeyAdminError, match=r"account 'x': tier: 'gold' is not a rules tier"):
        asyncio.run(_admin().import_accounts(unknown_tier))
    read_only = load_file_registry(DEMO_ACCOUNTS, KeyHasher())
    with pytest.raises(KeyAdminError) as caught:
        asyncio.run(_admin(read_only).import_accounts(DEMO_ACCOUNTS))
    assert caught.value.code == "read_only"
