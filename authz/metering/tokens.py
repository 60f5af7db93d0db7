"""The estimated token cost of a request, charged against token budgets at check time.

The boundary cannot tokenize, and the answer is not written yet, so the charge
is an upper-leaning estimate from the body's top-level members (the dict of
`BodySummary.fields`, already bounded by the body byte limit):

    input  = ceil(text characters / 4)
    output = n * max(cap, thinking budget)
    total  = input + output

* text characters: the strings of `messages` (each message's `content`, as a
  string or as parts carrying `text`/`content`/`thinking`/`arguments`), `system`,
  `prompt`, `instructions` and `input`; media parts (images, audio, files) are not
  charged. The walk is bounded (depth 8, 10 000 values).
* cap: `max_completion_tokens`, else `max_tokens`, else `max_output_tokens`; for a
  generation request without one, `default_output` plus an allowance for the
  requested `reasoning_effort` (OpenAI) or `reasoning.effort` (Responses API).
* thinking budget: Anthropic `thinking: {type: enabled, budget_tokens: B}`. The
  budget is part of `max_tokens` there, hence max(), not a sum.
* n: OpenAI's number of choices, 1 to 128.

Values of the wrong type are ignored (never an exception): a string `max_tokens`
is treated as absent, and so charged the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4
MAX_DEPTH = 8
MAX_VALUES = 10_000
MAX_CHOICES = 128
MAX_OUTPUT = 10_000_000
MAX_TOTAL = 10**12
# Reasoning tokens a request may spend when it names an effort but no output cap.
REASONING_ALLOWANCE = {"minimal": 0, "low": 1024, "medium": 4096, "high": 16384}

_TEXT_MEMBERS = ("messages", "system", "prompt", "instructions", "input")
_PART_TEXT_KEYS = ("content", "text", "thinking", "arguments", "tool_calls", "function")
_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")
# A body with one of these asks for generated output (an embedding request does not).
_GENERATION = {
    "messages",
    "prompt",
    "instructions",
    "thinking",
    "reasoning_effort",
    "reasoning",
    *_CAPS,
}


@dataclass(frozen=True, slots=True)
class TokenEstimate:
    """Estimated input and output tokens of one request."""

    input: int
    output: int

    @property
    def total(self) -> int:
        """What token budgets are charged."""
        return min(self.input + self.output, MAX_TOTAL)


def estimate_tokens(fields: Mapping[str, Any], *, default_output: int = 4096) -> TokenEstimate:
    """Estimate a request's tokens from its body's top-level members; never raises."""
    if not isinstance(fields, Mapping) or not fields:
        return TokenEstimate(0, 0)
    budget = [MAX_VALUES]
    chars = sum(_chars(fields.get(name), 0, budget) for name in _TEXT_MEMBERS)
    input_tokens = math.ceil(chars / CHARS_PER_TOKEN)
    if not _GENERATION.intersection(fields):
        return TokenEstimate(input_tokens, 0)
    cap = _first_count(fields, _CAPS)
    if cap is None:
        cap = default_output + REASONING_ALLOWANCE.get(_effort(fields), 0)
    thinking = fields.get("thinking")
    if isinstance(thinking, Mapping) and thinking.get("type") == "enabled":
        cap = max(cap, _count(thinking.get("budget_tokens")) or 0)
    n = _count(fields.get("n"))
    choices = n if n is not None and n <= MAX_CHOICES else 1
    return TokenEstimate(input_tokens, min(cap, MAX_OUTPUT) * choices)


def _count(value: object) -> int | None:
    """A positive whole count from JSON (int, or an integral float), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return min(value, MAX_OUTPUT) if value >= 1 else None
    if isinstance(value, float) and math.isfinite(value) and value >= 1:
        return int(min(value, MAX_OUTPUT))
    return None


def _first_count(fields: Mapping[str, Any], names: tuple[str, ...]) -> int | None:
    for name in names:
        value = _count(fields.get(name))
        if value is not None:
            return value
    return None


def _effort(fields: Mapping[str, Any]) -> str:
    effort = fields.get("reasoning_effort")
    reasoning = fields.get("reasoning")
    if effort is None and isinstance(reasoning, Mapping):
        effort = reasoning.get("effort")
    return effort if isinstance(effort, str) else ""


def _chars(value: object, depth: int, budget: list[int]) -> int:
    """Characters of text in a message-like JSON value, within a walk budget.

    (Loops rather than generators, and dict rather than the Mapping ABC: this
    runs for every value of every message on the request path.)
    """
    if budget[0] <= 0 or depth > MAX_DEPTH:
        return 0
    budget[0] -= 1
    if isinstance(value, str):
        return len(value)
    total = 0
    if isinstance(value, list):
        for item in value:
            total += _chars(item, depth + 1, budget)
    elif isinstance(value, dict):
        for key in _PART_TEXT_KEYS:
            total += _chars(value.get(key), depth + 1, budget)
    return total
