"""API key extraction, shape checks and digests."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from authz.keys import KeyHasher, KeyProblem, check_key_shape, extract_key, mint_key

HEADERS = ("authorization", "x-api-key")


def test_bearer_and_x_api_key() -> None:
    """Keys come from `Authorization: Bearer` or `x-api-key`, in the configured order."""
    key = "dg_abcdefghijklmnop"
    assert extract_key({"authorization": f"Bearer {key}"}, HEADERS) == key
    assert extract_key({"authorization": f"bearer  {key} "}, HEADERS) == key
    assert extract_key({"x-api-key": key}, HEADERS) == key
    assert extract_key({"authorization": f"Bearer {key}", "x-api-key": "other"}, HEADERS) == key
    assert extract_key({"accept": "*/*"}, HEADERS) is None


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"authorization": "Basic dXNlcjpwYXNz"}, "not a Bearer credential"),
        ({"x-api-key": "short"}, "key length"),
        ({"x-api-key": "k" * 10_000}, "key length"),
        (
            {"x-api-key": "dg_" + "\u00e9" * 20},
            "characters",
        ),
        ({"x-api-key": "dg_aaaaaaaa\x00bbbbbbbbb"}, "characters"),
    ],
)
def test_unusable_keys(headers: dict[str, str], problem: str) -> None:
    """A present but impossible key is a KeyProblem with a reason, not a lookup."""
    with pytest.raises(KeyProblem, match=problem):
        extract_key(headers, HEADERS)


def test_digests_plain_and_peppered() -> None:
    """Without a pepper the digest is SHA-256; with one it is HMAC-SHA-256."""
    key = "dg_abcdefghijklmnop"
    assert KeyHasher().digest(key) == hashlib.sha256(key.encode()).hexdigest()
    peppered = KeyHasher(b"pepper").digest(key)
    assert peppered == hmac.new(b"pepper", key.encode(), hashlib.sha256).hexdigest()
    assert KeyHasher().scheme == "sha256" and KeyHasher(b"p").scheme == "hmac-sha256"


def test_minted_keys_are_valid_and_distinct() -> None:
    """Minted keys pass the shape check and never repeat."""
    minted = [mint_key() for _ in range(50)]
    for key_id, secret in minted:
        check_key_shape(secret)
        assert key_id.startswith("k_") and secret.startswith("dg_")
    assert len({s for _, s in minted}) == 50
