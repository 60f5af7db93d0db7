"""The accounts file: formats, validation messages, digests instead of secrets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from authz.accounts import Kyc, load_accounts_file
from authz.errors import ConfigError
from authz.keys import KeyHasher
from authz.registry import load_file_registry

DEMO = Path(__file__).parents[1] / "authz" / "demo" / "accounts.jsonl"


def test_demo_accounts_load_as_digests() -> None:
    """The demo file loads; the registry holds digests and finds keys by them."""
    registry = load_file_registry(DEMO, KeyHasher())
    assert registry.read_only
    record = asyncio.run(registry.lookup(KeyHasher().digest("dg_demo_pro_bob_000000001")))
    assert record is not None and record.key_id == "k_bob_1"
    assert record.account.kyc is Kyc.VERIFIED and record.account.entity == "bob-dev"
    assert "dg_demo" not in repr(record)


def test_yaml_and_jsonl_are_equivalent(tmp_path: Path) -> None:
    """The YAML form with the same fields yields the same accounts."""
    yaml_file = tmp_path / "accounts.yaml"
    yaml_file.write_text(
        "- account: a1\n  entity: e1\n  tier: free\n  kyc: unverified\n  country: FR\n"
        "  keys:\n    - id: k1\n      sha256: " + "ab" * 32 + "\n"
        "      expires: 2027-01-01T00:00:00Z\n"
    )
    (entry,) = load_accounts_file(yaml_file)
    (record,) = entry.to_records(KeyHasher())
    assert record.digest == "ab" * 32 and record.expires == 1798761600.0
    assert record.status(1798761599.0) == "active" and record.status(1798761600.0) == "expired"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: invalid JSON: Expecting property name enclosed in double quotes"),
        (
            '{"account": "a", "entity": "e", "tier": "t", "kyc": "maybe", "country": "US"}',
            "line 2: kyc: Input should be 'verified', 'unverified', 'pending' or 'rejected' "
            "(got 'maybe')",
        ),
        (
            '{"account": "a", "entity": "e", "tier": "t", "kyc": "verified", "country": "usa"}',
            "line 2: country: String should match pattern '^[A-Z]{2}$' (got 'usa')",
        ),
        (
            '{"account": "a", "entity": "e", "tier": "t", "kyc": "verified", "country": "US", '
            '"keys": [{"id": "k", "secret": "dg_aaaaaaaaaaaaaaaa", "sha256": "' + "0" * 64 + '"}]}',
            "line 2: keys.0: give exactly one of 'secret' or 'sha256'",
        ),
        (
            '{"account": "b", "entity": "e", "tier": "t", "kyc": "verified", "country": "US", '
            '"colour": "red"}',
            "line 2: colour: unknown key",
        ),
        (
            '{"account": "a0", "entity": "e", "tier": "t", "kyc": "verified", "country": "US"}',
            "line 2: duplicate account 'a0'",
        ),
    ],
)
def test_bad_entries_are_named(tmp_path: Path, line: str, message: str) -> None:
    """Each bad entry is reported with file, line, field and problem."""
    path = tmp_path / "accounts.jsonl"
    first = '{"account": "a0", "entity": "e", "tier": "t", "kyc": "verified", "country": "US"}'
    path.write_text(first + "\n" + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_accounts_file(path)
    assert str(info.value) == f"{path}: {message}"


def test_errors_never_quote_a_secret(tmp_path: Path) -> None:
    """Neither a YAML syntax error nor a type error on `secret` repeats the secret."""
    broken = tmp_path / "a.yaml"
    broken.write_text('- account: a\n  keys:\n    - {id: k, secret: "dg_supersecret_value_1\n')
    with pytest.raises(ConfigError) as info:
        load_accounts_file(broken)
    assert "dg_supersecret" not in str(info.value) and "invalid YAML" in str(info.value)
    typed = tmp_path / "b.yaml"
    typed.write_text(
        "- {account: a, entity: e, tier: t, kyc: verified, country: US,\n"
        "   keys: [{id: k, secret: 1234567890123456789}]}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_accounts_file(typed)
    assert "1234567890123456789" not in str(info.value)
    assert "keys.0.secret" in str(info.value)
