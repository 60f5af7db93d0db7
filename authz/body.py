"""Reading the request body once, within a byte bound.

Model APIs take JSON objects. The boundary needs a few top-level fields
(`model` now; token budgets later), so the body is decoded at most once per
request, and only its first `limit` bytes are ever examined.

A body Envoy cut short (`allow_partial_message`) cannot be fully trusted: a
second `model` member could sit after the cut. For those the model found in
the prefix is authorised and sent upstream in a governance header, and the
model server must serve exactly that model (see docs/envoy.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()


class BodyError(ValueError):
    """The body cannot be read as a JSON object."""


@dataclass(frozen=True, slots=True)
class BodySummary:
    """The top-level members of a JSON request body that the boundary reads."""

    fields: dict[str, Any]
    complete: bool

    @property
    def model(self) -> str | None:
        """The `model` member when it is a non-empty string."""
        value = self.fields.get("model")
        return value if isinstance(value, str) and value else None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # dict() builds the object in C; only when it came out short is there a
    # duplicate to name (this hook runs for every object of every body).
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            break
        seen.add(key)
    # Two parsers may pick different copies: refuse the ambiguity.
    raise BodyError(f"duplicate member {key!r}")


# One decoder for every body: json.loads with a hook builds a new one per call.
_STRICT = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def summarize(body: bytes, *, partial: bool, limit: int) -> BodySummary:
    """Decode a request body into its top-level members.

    A complete body must be one UTF-8 JSON object without duplicate members.
    A partial body (or one of `limit` bytes or more) yields the members that are
    complete before the cut.
    """
    if len(body) >= limit:
        # At the bound we cannot know whether more followed: read it as cut.
        body, partial = body[:limit], True
    if not partial:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BodyError(f"not UTF-8 (byte {exc.start})") from None
        try:
            value = _STRICT.decode(text)
        except json.JSONDecodeError as exc:
            raise BodyError(f"not JSON ({exc.msg} at char {exc.pos})") from None
        except RecursionError:
            raise BodyError("nested too deeply") from None
        if not isinstance(value, dict):
            raise BodyError("not a JSON object")
        return BodySummary(value, complete=True)
    return BodySummary(_prefix_members(body.decode("utf-8", errors="ignore")), complete=False)


def _prefix_members(text: str) -> dict[str, Any]:
    """Top-level members of a JSON object that end before the text does."""
    found: dict[str, Any] = {}
    pos = _skip_ws(text, 0)
    if not text.startswith("{", pos):
        raise BodyError("not a JSON object")
    pos += 1
    while True:
        pos = _skip_ws(text, pos)
        try:
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _skip_ws(text, pos)
            if not isinstance(key, str) or not text.startswith(":", pos):
                raise BodyError("not a JSON object")
            value, pos = _DECODER.raw_decode(text, _skip_ws(text, pos + 1))
        except json.JSONDecodeError:
            return found  # the cut, or garbage after it: what we have is all we know
        except RecursionError:
            raise BodyError("nested too deeply") from None
        if key in found:
            raise BodyError(f"duplicate member {key!r}")
        found[key] = value
        pos = _skip_ws(text, pos)
        if not text.startswith(",", pos):
            return found
        pos += 1


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos
