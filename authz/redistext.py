"""Redis replies as text, whether or not the client decodes responses."""

from __future__ import annotations


def text(value: object) -> str:
    """A reply (bytes from a non-decoding client) as a str."""
    return value.decode() if isinstance(value, bytes) else str(value)
