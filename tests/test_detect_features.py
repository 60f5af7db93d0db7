"""Per-request extraction features: prompt text, scaffold, template id, SimHash, elicitation,
client fingerprint, and extract() on hostile input."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from authz.detect.features import _PHRASES as PHRASES
from authz.detect.features import (
    DEFAULT_LIMIT,
    WEIGHTS,
    Elicitation,
    client_fingerprint,
    elicitation,
    extract,
    gate_words,
    hamming,
    network_key,
    prompt_text,
    scaffold,
    simhash,
    template_id,
)

# --- prompt text ------------------------------------------------------------------------


def test_prompt_text_reads_anthropic_system_and_text_parts_in_order() -> None:
    """System first, then each message's text; images and thinking blocks are skipped."""
    fields: dict[str, Any] = {
        "model": "m",
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "first"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "secret"},
                    {"type": "text", "text": "second"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"data": "AAAA"}},
                    {"type": "tool_result", "content": [{"type": "text", "text": "third"}]},
                ],
            },
        ],
    }
    assert prompt_text(fields) == "Be brief.\nfirst\nsecond\nthird"


def test_prompt_text_reads_openai_chat_messages() -> None:
    """OpenAI chat: the system message is a message like the others."""
    fields = {
        "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        ],
        "n": 2,
    }
    assert prompt_text(fields) == "You help.\nHi"


def test_prompt_text_stops_at_the_limit() -> None:
    """At most `limit` characters come back, however long the prompt."""
    fields = {"system": "s" * 10, "messages": [{"role": "user", "content": "u" * 100}]}
    assert prompt_text(fields, 25) == "s" * 10 + "\n" + "u" * 14
    assert prompt_text(fields, 0) == ""
    assert extract(fields, {}, limit=25).truncated
    assert not extract(fields, {}, limit=111).truncated  # exactly what there is


# --- scaffold: each mask ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Add 3 and 4.5, then 1,000 and 10% of v2",
            "add _num_ and _num_ then _num_ and _num_ of _num_",
        ),
        ('Say "hello there" now', "say _str_ now"),
        ("Say 'hello there' now, don't wait", "say _str_ now don t wait"),
        ("Say “hello there” and «salut» now", "say _str_ and _str_ now"),
        ("Call `parse(x, y)` twice", "call _code_ twice"),
        ("Read:\n```python\ndef f():\n    return 1\n```\nThen answer.", "read _code_ then answer"),
        ("Read:\n```\nunterminated code that runs to the end", "read _code_"),
        ("See https://example.com/a?b=1 and www.example.org.", "see _url_ and _url_"),
        ("Mail jane.doe+x@example.co.uk today", "mail _email_ today"),
        ("Open /usr/local/bin/tool now", "open _path_ now"),
        ("Open src/app/main.py:42 now", "open _path_ now"),
        ("Open notes.txt now", "open _path_ now"),
        ("Open C:\\Users\\Bob\\report now", "open _path_ now"),
        ("Open lib/util/helpers now, and/or not", "open _path_ now and or not"),
        ("Commit 3f9a2c1be0d4e5f6a7b8 now", "commit _hex_ now"),
        ("Id 123e4567-e89b-12d3-a456-426614174000 now", "id _hex_ now"),
        ("Id 0xdeadbeef now", "id _hex_ now"),
        ("Tell Alice and Bob Smith about it", "tell _name_ and _name_ about it"),
        ("Hello there. Today I think I'm fine", "hello there today i think i m fine"),
        ("Spaces   and\n\tpunctuation!!! ... collapse", "spaces and punctuation collapse"),
        ("请计算第3步", "请计算第 _num_ 步"),
    ],
)
def test_scaffold_masks_each_kind_of_slot(text: str, expected: str) -> None:
    """Numbers, quotes, code, URLs, e-mails, paths, ids and mid-sentence names are masked."""
    assert scaffold(text) == expected


def test_a_list_of_numbers_is_one_placeholder_whatever_its_length() -> None:
    """A run of one placeholder collapses, so [3, 1, 2] and [5, 4, 3, 2, 1] read the same."""
    assert (
        scaffold("Sort [3, 1, 2] now") == scaffold("Sort [5, 4, 3, 2, 1] now") == "sort _num_ now"
    )


TEMPLATE = (
    "You are reviewing code for {who}. Open the file {file} and look at function `{fn}` "
    'around line {line}. The error message is "{error}". Explain step by step why it fails, '
    "then give a fix.\n```python\n{code}\n```\nReference: {url}, commit {sha}."
)
SLOTS = [
    {
        "who": "Maria Garcia",
        "file": "src/parser.py",
        "fn": "parse()",
        "line": 42,
        "error": "list index out of range",
        "code": "def parse(x):\n    return x[0]",
        "url": "https://git.example.com/a/1",
        "sha": "9f8e7d6c5b4a39281706f5e4",
    },
    {
        "who": "Chen",
        "file": "lib/io/reader.ts",
        "fn": "readAll(buf, n)",
        "line": 7,
        "error": "unexpected EOF",
        "code": "export function readAll() {}",
        "url": "http://example.org/x?y=2",
        "sha": "0123456789abcdef0123456789abcdef",
    },
]


def test_one_template_with_different_slots_gives_one_scaffold_and_id() -> None:
    """Slot values (names, files, code, numbers, quotes, URLs, hashes) leave the template."""
    a, b = (scaffold(TEMPLATE.format(**s)) for s in SLOTS)
    assert a == b
    assert template_id(a) == template_id(b)
    assert len(template_id(a)) == 16


def test_different_prompts_give_different_templates() -> None:
    """Genuinely different wording gives another scaffold and another id."""
    first = scaffold(TEMPLATE.format(**SLOTS[0]))
    other = scaffold(TEMPLATE.format(**SLOTS[0]).replace("Explain step by step", "Summarise"))
    unrelated = scaffold("Write a limerick about a cat who learns to sail.")
    assert len({template_id(first), template_id(other), template_id(unrelated)}) == 3


def test_template_id_of_nothing_is_empty() -> None:
    """A request without prompt text has no template (rather than one shared by all of them)."""
    assert template_id("") == ""
    assert extract({"model": "m"}, {}).template_id == ""


# --- SimHash ----------------------------------------------------------------------------

BASE = (
    "You are an expert software engineer. Read the function below and explain, in plain "
    "language, what it does, what its time and space complexity are, and which edge cases "
    "it mishandles. Then propose a corrected version and describe how you would test it "
    "with a small set of unit tests. Keep the answer focused on correctness rather than "
    "style, and mention any assumptions you make about the input."
)
UNRELATED = [
    "Write a short poem about the sea at night, with a calm and hopeful tone, in four "
    "stanzas of four lines each.",
    "Summarise the main causes of the First World War for a high school student in about "
    "two hundred words.",
    "Give me a weekly meal plan for a vegetarian athlete who trains twice a day and needs a "
    "lot of protein.",
]


def test_simhash_of_one_template_is_identical_and_paraphrases_are_close() -> None:
    """Same scaffold, same hash; one reworded word moves few bits; unrelated prompts many."""
    h = simhash(scaffold(BASE))
    assert simhash(scaffold(BASE.replace("expert", "experienced"))) != h
    near = hamming(h, simhash(scaffold(BASE.replace("expert", "experienced"))))
    far = [hamming(h, simhash(scaffold(u))) for u in UNRELATED]
    assert near <= 12
    assert min(far) >= 18
    assert near < min(far)


def test_simhash_is_stable_across_processes() -> None:
    """The hash is BLAKE2b-based, not Python's randomised hash(): a literal value holds."""
    assert simhash("the quick brown fox") == simhash("the quick brown fox")
    assert simhash("") == 0
    assert simhash("two words") == simhash("two words") != 0
    assert (
        f"{simhash('one two three four five'):016x}" == f"{simhash('one two three four five'):016x}"
    )


def test_hamming_counts_differing_bits() -> None:
    """Hamming distance of 64-bit values."""
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(0, (1 << 64) - 1) == 64


# --- elicitation ------------------------------------------------------------------------


def _score(fields: dict[str, Any], text: str) -> float:
    return elicitation(fields, text).score


def test_elicitation_orders_plain_step_by_step_and_everything_at_once() -> None:
    """Plain < 'think step by step' < step by step + thinking budget + n=4 + logprobs."""
    plain = _score({}, "What is the capital of France?")
    step = _score({}, "What is the capital of France? Think step by step.")
    heavy_fields = {
        "thinking": {"type": "enabled", "budget_tokens": 32000},
        "n": 4,
        "logprobs": True,
        "top_logprobs": 5,
    }
    heavy = _score(heavy_fields, "What is the capital of France? Think step by step.")
    assert plain == 0.0
    assert 0 < step < heavy <= 1
    assert step == pytest.approx(WEIGHTS["step_by_step"])


def test_grading_prompts_score() -> None:
    """Rubric and pairwise-judging prompts (reward-model data) are elicitation too."""
    rubric = elicitation(
        {}, "Rate the following responses on a scale of 1 to 10 using this rubric."
    )
    pairwise = elicitation({}, "Which response is better? Answer [[A]] or [[B]].")
    assert rubric.grading == 1.0 and rubric.score == pytest.approx(WEIGHTS["grading"])
    assert pairwise.grading == 1.0


@pytest.mark.parametrize(
    "text",
    [
        "Resuelve el problema paso a paso y explica tu razonamiento.",
        "Denke Schritt für Schritt nach, bevor du antwortest.",
        "Réfléchis étape par étape avant de répondre.",
        "请一步一步地思考然后给出最终答案。",
        "Evalúa las respuestas en una escala del 1 al 10 con esta rúbrica.",
        "Bewerte die Antworten auf einer Skala von 1 bis 10.",
    ],
)
def test_non_english_requests_for_reasoning_or_grades_score(text: str) -> None:
    """Spanish, German, French and Chinese phrasings are recognised."""
    assert _score({}, text) > 0


def test_reasoning_format_and_self_check_components() -> None:
    """Tags, 'before answering' and self-verification are their own named components."""
    e = elicitation(
        {}, "Put your reasoning in <thinking> tags before answering, then verify your answer."
    )
    assert e.reasoning_format == 1.0 and e.self_check == 1.0 and e.step_by_step == 0.0
    assert set(e.components()) == {"reasoning_format", "self_check"}


@pytest.mark.parametrize(
    ("fields", "component", "strength"),
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 16384}}, "thinking_budget", 1.0),
        ({"thinking": {"type": "enabled", "budget_tokens": 4096}}, "thinking_budget", 0.25),
        ({"reasoning_effort": "high"}, "reasoning_effort", 1.0),
        ({"reasoning": {"effort": "medium"}}, "reasoning_effort", 0.5),
        ({"n": 8}, "samples", 1.0),
        ({"logprobs": True}, "logprobs", 0.5),
        ({"logprobs": True, "top_logprobs": 5}, "logprobs", 1.0),
        ({"logprobs": 3}, "logprobs", 0.8),  # legacy completions: the count itself
    ],
)
def test_parameters_alone_score(fields: dict[str, Any], component: str, strength: float) -> None:
    """Request parameters score without any phrasing, with documented strengths."""
    e = elicitation(fields, "Hello")
    assert e.components() == {component: pytest.approx(strength)}
    assert e.score == pytest.approx(WEIGHTS[component] * strength, abs=1e-4)


@pytest.mark.parametrize(
    "fields",
    [
        {"thinking": {"type": "disabled", "budget_tokens": 30000}},
        {"reasoning_effort": "minimal"},
        {"n": 1},
        {"n": True},
        {"logprobs": False},
        {"thinking": "enabled", "n": "4", "logprobs": "yes", "reasoning": "high"},
    ],
)
def test_parameters_that_ask_for_nothing_do_not_score(fields: dict[str, Any]) -> None:
    """Disabled thinking, minimal effort, one choice and values of the wrong type count zero."""
    assert elicitation(fields, "Hello") == Elicitation()


def test_score_is_monotone_in_every_component() -> None:
    """Adding any component never lowers the score."""
    texts = ["Hi", "Think step by step.", "Use a scratchpad.", "Grade the answers with a rubric."]
    params: list[dict[str, Any]] = [
        {},
        {"n": 3},
        {"logprobs": True},
        {"reasoning_effort": "high", "n": 3},
    ]
    for text in texts:
        for extra in params:
            assert _score(extra, text) >= _score({}, text)
            assert _score(extra, text + " Double-check your work.") >= _score(extra, text)


def test_every_phrase_has_a_gate_or_is_in_an_unspaced_script() -> None:
    """Latin and Cyrillic phrases are gated by a word; only Chinese/Japanese phrases are not."""
    for phrases in PHRASES.values():
        for phrase in phrases:
            source = phrase if isinstance(phrase, str) else phrase[1]
            if not gate_words(phrase):
                assert not source[0].isascii(), source


def test_ordinary_uses_of_the_gate_words_do_not_score() -> None:
    """'step', 'rate' and 'final' in ordinary sentences are not requests for reasoning."""
    text = "My step function is final; the rate limit is 5 per minute. Which library is best?"
    assert _score({}, text) == 0.0
    assert _score({}, "How do I check the result of a query? What is the final answer?") == 0.0
    assert _score({}, "Put the final answer in \\boxed{}.") > 0


# --- client fingerprint -----------------------------------------------------------------

SDK_HEADERS = {
    ":method": "POST",
    ":path": "/v1/messages",
    ":authority": "api.example.com",
    "content-type": "application/json",
    "user-agent": "Anthropic/Python 0.40.1",
    "x-stainless-lang": "python",
    "anthropic-version": "2023-06-01",
    "x-api-key": "key-one",
    "content-length": "120",
    "x-forwarded-for": "203.0.113.7",
    "x-forwarded-proto": "https",
    "x-request-id": "r-1",
    "x-envoy-expected-rq-timeout-ms": "15000",
}


def test_client_fingerprint_ignores_what_varies_per_request_or_account() -> None:
    """Request ids, forwarding, length, keys, trace context and Envoy's headers do not count."""
    other = dict(SDK_HEADERS)
    other.update(
        {
            "x-request-id": "r-2",
            "x-forwarded-for": "198.51.100.9, 10.0.0.1",
            "content-length": "99999",
            "x-api-key": "key-two",
            "user-agent": "Anthropic/Python 0.41.7",  # same major version
        }
    )
    other["traceparent"] = "00-abc-def-01"
    other["x-distill-exposure"] = "full"
    del other["x-envoy-expected-rq-timeout-ms"]
    assert client_fingerprint(other) == client_fingerprint(SDK_HEADERS)
    bearer = {k: v for k, v in SDK_HEADERS.items() if k != "x-api-key"}
    bearer["authorization"] = "Bearer k"
    assert client_fingerprint(bearer) == client_fingerprint(SDK_HEADERS)
    assert len(client_fingerprint(SDK_HEADERS)) == 16


def test_client_fingerprint_differs_by_user_agent_and_header_order() -> None:
    """Another SDK, a new major version, or the same names in another order is another client."""
    base = client_fingerprint(SDK_HEADERS)
    assert client_fingerprint({**SDK_HEADERS, "user-agent": "OpenAI/Python 1.40.0"}) != base
    assert client_fingerprint({**SDK_HEADERS, "user-agent": "Anthropic/Python 1.0.0"}) != base
    reordered = dict(reversed(list(SDK_HEADERS.items())))
    assert client_fingerprint(reordered) != base
    assert client_fingerprint(reordered, ordered=False) == client_fingerprint(
        SDK_HEADERS, ordered=False
    )
    assert client_fingerprint({**SDK_HEADERS, "accept": "*/*"}) != base


def test_network_key_is_the_audit_network() -> None:
    """The network pool is the /24 or /48 the audit records carry."""
    assert network_key(ipaddress.ip_address("203.0.113.77")) == "203.0.113.0/24"
    assert network_key(ipaddress.ip_address("2001:db8:1:2::5")) == "2001:db8:1::/48"


# --- extract(): everything together, on any input -----------------------------------------


def test_extract_bundles_all_features() -> None:
    """One call gives template, hash, elicitation, client and prompt size."""
    fields = {
        "model": "m",
        "messages": [{"role": "user", "content": TEMPLATE.format(**SLOTS[0])}],
        "reasoning_effort": "high",
    }
    f = extract(fields, SDK_HEADERS)
    assert f.template_id == template_id(scaffold(prompt_text(fields)))
    assert f.simhash == simhash(scaffold(prompt_text(fields)))
    assert f.elicitation.step_by_step == 1.0 and f.elicitation.reasoning_effort == 1.0
    assert f.elicitation_score == f.elicitation.score
    assert f.client == client_fingerprint(SDK_HEADERS)
    assert f.prompt_chars == len(prompt_text(fields))
    assert not f.truncated and not f.failed and f.scaffold_words > 10


def test_extract_examines_at_most_the_limit() -> None:
    """A megabyte of text is cut to the limit; what lies beyond it changes nothing."""
    head = "Tell me about rivers. " * 300
    tail = " Think step by step and grade the responses with a rubric."
    fields = {"messages": [{"role": "user", "content": head + "x" * 1_000_000 + tail}]}
    f = extract(fields, {})
    assert f.prompt_chars == DEFAULT_LIMIT and f.truncated
    assert f.elicitation.score == 0.0
    shorter = extract({"messages": [{"role": "user", "content": head + "y" * 5000}]}, {})
    assert f.template_id == shorter.template_id
    assert extract(fields, {}, limit=100).prompt_chars == 100


NASTY: list[Any] = [
    None,
    42,
    "just a string",
    [],
    {"messages": None},
    {"messages": 7},
    {"messages": [None, 3, "text", ["nested", ["deeper"]], {"content": 5}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": 12}]}]},
    {"system": {"text": {"text": "x"}}, "messages": [{"content": {"content": {"content": "y"}}}]},
    {"messages": [{"content": [[[[[[[[[[[["deep"]]]]]]]]]]]]}]},
    {"messages": [{"content": [""] * 100_000}]},
    {"messages": [{"content": "\ud800 lone surrogate \udfff and NUL \x00"}]},
    {"thinking": {"type": "enabled", "budget_tokens": 10**400}, "n": float("inf")},
    {"thinking": {"type": "enabled", "budget_tokens": -5}, "n": -3, "top_logprobs": 1e308},
    {"reasoning": {"effort": ["high"]}, "reasoning_effort": None, "logprobs": {}},
]


@pytest.mark.parametrize("fields", NASTY)
def test_extract_never_raises_on_garbage(fields: Any) -> None:
    """Wrong types, deep nesting, huge lists, odd Unicode, huge numbers: features, no fault."""
    f = extract(fields, SDK_HEADERS)
    assert not f.failed
    assert 0.0 <= f.elicitation.score <= 1.0
    assert f.prompt_chars <= DEFAULT_LIMIT


@pytest.mark.parametrize(
    "headers", [None, {}, {"user-agent": None}, {"user-agent": ["x"]}, {1: "x", "a": 2}]
)
def test_extract_never_raises_on_odd_headers(headers: Any) -> None:
    """Headers that are not a mapping of strings still give features."""
    f = extract({"messages": [{"role": "user", "content": "hi"}]}, headers)
    assert not f.failed and f.template_id


def test_text_of_every_shape_scaffolds_without_fault() -> None:
    """Unbalanced quotes and fences, lone punctuation and long tokens are text like any other."""
    odd = [
        '"unclosed quote ' + "a " * 500,
        "``` never closed ~~~ also not",
        "`" * 1000,
        "/" * 4096,
        "a" * 4096,
        "Ab " * 1365,
        "@@@ ::// www. 0x 1e-5 C:\\ ~/ ./ ../",
        "\u200b\u2028\u2029\ufeff",
    ]
    for text in odd:
        f = extract({"messages": [{"role": "user", "content": text}]}, {})
        assert not f.failed and f.prompt_chars <= DEFAULT_LIMIT


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=40,
)
MEMBERS = st.sampled_from(
    ["messages", "system", "content", "text", "thinking", "n", "logprobs", "reasoning"]
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(MEMBERS, JSON, max_size=6))
def test_extract_never_faults_on_any_json(fields: dict[str, Any]) -> None:
    """Any JSON under the members extraction reads gives features without a fault."""
    f = extract(fields, {"user-agent": "x"})
    assert not f.failed and 0.0 <= f.elicitation.score <= 1.0
