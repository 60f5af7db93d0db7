"""The token estimate: input characters / 4 plus the requested output, from any JSON."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from authz.metering.tokens import TokenEstimate, estimate_tokens

HELLO = [{"role": "user", "content": "Hello, world"}]  # 12 characters -> 3 tokens


def test_openai_chat_charges_input_plus_max_tokens_times_n() -> None:
    """OpenAI chat: ceil(12 / 4) input, and max_tokens for each of the n choices."""
    assert estimate_tokens({"messages": HELLO, "max_tokens": 64}) == TokenEstimate(3, 64)
    assert estimate_tokens({"messages": HELLO, "max_tokens": 64, "n": 3}) == TokenEstimate(3, 192)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    """The newer OpenAI cap is the one the server honours, so it is the one charged."""
    body = {"messages": HELLO, "max_tokens": 64, "max_completion_tokens": 1000}
    assert estimate_tokens(body).output == 1000


def test_without_a_cap_the_default_and_the_reasoning_allowance_are_charged() -> None:
    """No output cap: default_output, plus 4096 for medium reasoning effort."""
    assert estimate_tokens({"messages": HELLO}, default_output=500).output == 500
    body: dict[str, Any] = {"messages": HELLO, "reasoning_effort": "medium"}
    assert estimate_tokens(body, default_output=500).output == 4596
    body = {"input": "hi", "reasoning": {"effort": "high"}}
    assert estimate_tokens(body, default_output=500) == TokenEstimate(1, 16884)


def test_anthropic_messages_count_system_blocks_and_the_thinking_budget() -> None:
    """Anthropic: system and content blocks are text; a thinking budget above max_tokens wins."""
    body: dict[str, Any] = {
        "system": [{"type": "text", "text": "Be brief."}],  # 9
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "abcdefg"}]},  # 7
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {"type": "text", "text": "ok"},
                ],
            },  # 5
            {"role": "user", "content": [{"type": "image", "source": {"data": "A" * 9999}}]},
        ],
        "max_tokens": 1024,
        "thinking": {"type": "enabled", "budget_tokens": 8000},
    }
    assert estimate_tokens(body) == TokenEstimate(6, 8000)  # ceil(21 / 4); images are free
    body["thinking"] = {"type": "disabled", "budget_tokens": 8000}
    assert estimate_tokens(body).output == 1024


def test_tool_calls_and_tool_results_are_text_too() -> None:
    """Function-call arguments and nested tool results count as input characters."""
    body = {
        "messages": [
            {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
            {"role": "user", "content": [{"type": "tool_result", "content": "result"}]},
        ],
        "max_tokens": 1,
    }
    assert estimate_tokens(body).input == 2  # ceil((2 + 6) / 4)


def test_requests_that_generate_nothing_charge_input_only() -> None:
    """An embeddings body has input and no generation member: no output is charged."""
    assert estimate_tokens({"model": "embed-1", "input": "x" * 40}) == TokenEstimate(10, 0)
    assert estimate_tokens({}) == TokenEstimate(0, 0)


def test_garbage_types_are_ignored_not_fatal() -> None:
    """Strings, booleans, negatives and NaN where numbers belong fall back to the default."""
    for bad in ["64", True, -5, 0, float("nan"), float("inf"), None, [64], {"n": 1}]:
        body: dict[str, Any] = {"messages": HELLO, "max_tokens": bad, "n": bad}
        assert estimate_tokens(body, default_output=100) == TokenEstimate(3, 100)
    assert estimate_tokens({"messages": "just a string", "max_tokens": 10.7}).output == 10
    assert estimate_tokens({"messages": HELLO, "max_tokens": 10**30}).output == 10_000_000
    assert estimate_tokens({"messages": HELLO, "max_tokens": 5, "n": 1000}).output == 5


def test_deep_or_huge_structures_are_walked_within_bounds() -> None:
    """Nesting past depth 8 and more than 10 000 values stop the walk, not the process."""
    deep: Any = "x" * 100
    for _ in range(500):
        deep = [deep]
    assert estimate_tokens({"messages": deep, "max_tokens": 1}).input == 0
    wide = {"messages": ["ab"] * 50_000, "max_tokens": 1}
    assert estimate_tokens(wide).input == 2 * 9_999 // 4 + 1


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    ["messages", "system", "prompt", "input", "max_tokens", "n", "thinking", "reasoning", "x"]
)


@settings(max_examples=300)
@given(st.dictionaries(KEYS, JSON, max_size=6))
def test_any_json_body_gives_a_non_negative_estimate(body: dict[str, Any]) -> None:
    """Whatever the JSON, the estimate is two non-negative ints and never raises."""
    estimate = estimate_tokens(body)
    assert isinstance(estimate.input, int) and isinstance(estimate.output, int)
    assert estimate.input >= 0 and estimate.output >= 0
    assert 0 <= estimate.total <= 10**12
