"""API keys: how they are read from a request, digested and minted.

Keys are never stored or logged: only their digest (SHA-256, or HMAC-SHA-256
with a server-side pepper) is kept, and a non-secret key id names them.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Mapping, Sequence

KEY_PREFIX = "dg_"
MIN_KEY_LENGTH = 16
MAX_KEY_LENGTH = 256
_KEY_ALPHABET = frozenset(string.ascii_letters + string.digits + "-_.~+/=")


class KeyProblem(ValueError):
    """A key was presented but cannot be a key (wrong shape, size or characters)."""


def extract_key(headers: Mapping[str, str], header_names: Sequence[str]) -> str | None:
    """Return the presented API key, or None when no key header is present.

    `authorization` must use the Bearer scheme; other headers carry the key bare.
    Raises KeyProblem for a present but unusable key.
    """
    for name in header_names:
        raw = headers.get(name)
        if raw is None:
            continue
        value = raw.strip()
        if name == "authorization":
            scheme, _, value = value.partition(" ")
            if scheme.lower() != "bearer":
                raise KeyProblem("authorization header is not a Bearer credential")
            value = value.strip()
        check_key_shape(value)
        return value
    return None


def check_key_shape(key: str) -> None:
    """Raise KeyProblem unless the key has a plausible length and alphabet."""
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise KeyProblem(f"key length must be {MIN_KEY_LENGTH}..{MAX_KEY_LENGTH} characters")
    if not _KEY_ALPHABET.issuperset(key):
        raise KeyProblem("key contains characters outside [A-Za-z0-9-_.~+/=]")


class KeyHasher:
    """Turns a key into the digest the registries index by."""

    def __init__(self, pepper: bytes | None = None) -> None:
        self._pepper = pepper or None

    @property
    def scheme(self) -> str:
        """Which digest this hasher computes."""
        return "hmac-sha256" if self._pepper else "sha256"

    def digest(self, key: str) -> str:
        """Hex digest of a key."""
        data = key.encode("utf-8")
        if self._pepper:
            return hmac.new(self._pepper, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()


def mint_key() -> tuple[str, str]:
    """Create a fresh (key id, secret key) pair; the id is safe to log."""
    key_id = "k_" + secrets.token_hex(6)
    return key_id, KEY_PREFIX + secrets.token_urlsafe(32)
