"""Reading request bodies: complete, partial, hostile."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.body import BodyError, summarize


def test_complete_body_gives_model() -> None:
    """A complete JSON object yields its top-level members."""
    s = summarize(b'{"model": "small-1", "max_tokens": 10}', partial=False, limit=1024)
    assert s.model == "small-1" and s.complete and s.fields["max_tokens"] == 10


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"\xff\xfe{}", "not UTF-8 (byte 0)"),
        (b"{'model': 1}", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"model": "a", "model": "b"}', "duplicate member 'model'"),
    ],
)
def test_complete_body_errors(body: bytes, problem: str) -> None:
    """Bodies that are not one unambiguous UTF-8 JSON object are refused with a reason."""
    with pytest.raises(BodyError, match=re.escape(problem)):
        summarize(body, partial=False, limit=1024)


@pytest.mark.parametrize("partial", [False, True])
def test_deep_nesting_is_a_body_error(partial: bool) -> None:
    """A body nested deeper than the parser recurses is malformed (400), not a server fault."""
    body = b'{"m": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(BodyError, match="nested too deeply"):
        summarize(body, partial=partial, limit=1 << 20)


def test_partial_body_reads_members_before_the_cut() -> None:
    """A truncated body yields the members complete before the cut, and no more."""
    body = b'{"model": "frontier-2", "messages": [{"role": "user", "content": "lo'
    s = summarize(body, partial=True, limit=1024)
    assert s.model == "frontier-2" and not s.complete and "messages" not in s.fields


def test_body_over_limit_is_treated_as_partial() -> None:
    """Only `limit` bytes are examined; the rest is as if Envoy had cut it."""
    body = json.dumps({"model": "m-1", "pad": "x" * 5000}).encode()
    s = summarize(body, partial=False, limit=100)
    assert s.model == "m-1" and not s.complete


def test_partial_body_still_rejects_duplicate_model() -> None:
    """A second `model` before the cut is the same ambiguity as in a complete body."""
    with pytest.raises(BodyError, match="duplicate"):
        summarize(b'{"model": "a", "model": "b", "x": "trunc', partial=True, limit=1024)


def test_non_string_model_is_none() -> None:
    """A `model` that is not a non-empty string names no model."""
    assert summarize(b'{"model": 3}', partial=False, limit=64).model is None
    assert summarize(b'{"model": ""}', partial=False, limit=64).model is None


@given(st.binary(max_size=300), st.booleans())
def test_any_bytes_either_summarise_or_raise_body_error(body: bytes, partial: bool) -> None:
    """No input makes the reader fail with anything but BodyError."""
    with contextlib.suppress(BodyError):
        summarize(body, partial=partial, limit=200)
