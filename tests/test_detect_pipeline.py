"""The detect and decide phases: graduated actions, shadow, verdicts, output governance
headers, the audit record; and a campaign through real Envoy against a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz import governance
from authz.audit.record import build_record, to_dict
from authz.clock import ManualClock
from authz.decision import Decision
from authz.detect.keys import network_verdict_key, template_verdict_keys, verdict_key
from authz.detect.risk import near_template
from authz.detect.rules import Risk
from authz.metering import MemoryRateStore
from authz.metering.result import VerdictView
from authz.pipeline import Pipeline
from authz.rules import parse_rules
from tests.fakes import ACME_KEY, DEMO_ACCOUNTS, DEMO_RULES, RecordingSink, StaticRules, facts
from tests.fakes import make_pipeline as _make

T0 = 1_790_000_000.0
PROMPT = (
    "You are an expert competitive programmer. Solve problem {n} of the set: write a function "
    "that merges overlapping intervals. Think step by step and show all of your reasoning "
    "before the final answer, then verify each step."
)
ORBIT = [f"dg_demo_ent_orbit_00000{i}" for i in range(1, 7)]


def _body(n: int, *, thinking: bool = True, prompt: str = PROMPT) -> bytes:
    msg: dict[str, Any] = {
        "model": "frontier-2",
        "max_tokens": 17000,
        "messages": [{"role": "user", "content": prompt.format(n=n)}],
    }
    if thinking:
        msg["thinking"] = {"type": "enabled", "budget_tokens": 16000}
    return json.dumps(msg).encode()


# The thresholds the tests are written against (the defaults come from benign baselines
# and may move; these cases must not).
CAMPAIGN_RULES: dict[str, Any] = {
    "detectors": {
        "template_spread": {"start": 2, "full": 6, "weight": 0.7},
        "elicitation": {"start": 0.3, "full": 0.6, "weight": 0.35},
    },
    "thresholds": {"watch": 0.3, "restrict": 0.6},
}


def _rules(**detection: Any) -> StaticRules:
    doc = yaml.safe_load(DEMO_RULES.read_text())
    doc["detection"] = CAMPAIGN_RULES | detection
    return StaticRules(parse_rules(yaml.safe_dump(doc).encode(), source="test.yaml"))


def _pipeline(
    rules: StaticRules | None = None, rates: MemoryRateStore | None = None
) -> tuple[Pipeline, RecordingSink, ManualClock]:
    from authz.keys import KeyHasher
    from authz.registry import load_file_registry

    clock = ManualClock(T0)
    pipeline, sink = _make(
        registry=load_file_registry(DEMO_ACCOUNTS, KeyHasher()),
        rules=rules or _rules(),
        clock=clock,
        rates=rates if rates is not None else MemoryRateStore(),
    )
    return pipeline, sink, clock


def _send(
    pipeline: Pipeline,
    clock: ManualClock,
    key: str,
    n: int,
    source: str = "79.192.3.4",
    **kw: Any,
) -> Decision:
    clock.advance(5)
    request = facts({"x-api-key": key}, body=_body(n, **kw), source=source)
    return asyncio.run(pipeline.check(request))


def _campaign(pipeline: Pipeline, clock: ManualClock) -> list[Decision]:
    return [_send(pipeline, clock, key, n) for n, key in enumerate(ORBIT + ORBIT[:1])]


def test_a_template_shared_by_many_accounts_is_restricted() -> None:
    pipeline, _, clock = _pipeline()
    decisions = _campaign(pipeline, clock)
    first, last = decisions[0], decisions[-1]
    up = dict(first.upstream_headers)
    assert first.allowed and up[governance.RISK] in {"none", "watch"}
    assert up[governance.REASONING] == "full" and up[governance.LOGPROBS] == "allowed"
    assert up[governance.WATERMARK] == "tier-enterprise"
    assert governance.MAX_THINKING not in up
    assert last.allowed and last.assessment is not None
    assert last.assessment.applied is Risk.RESTRICT
    assert "template_spread" in last.assessment.fired
    up = dict(last.upstream_headers)
    assert up[governance.RISK] == "restrict"
    assert up[governance.REASONING] == "summary"
    assert up[governance.LOGPROBS] == "denied"
    assert up[governance.MAX_THINKING] == "1024"
    assert up[governance.WATERMARK] == "cluster-orbit-01"  # no verdict: the account's own
    # The pools it joined are on the decision; the client gets none of it.
    assert last.sighted is not None and dict(last.sighted.observed)["template_accounts"] == 6
    assert not any(
        n.startswith("x-distill-") and n != governance.DECISION_ID for n, _ in last.response_headers
    )


def test_different_prompts_from_many_accounts_are_not() -> None:
    pipeline, _, clock = _pipeline()
    topics = ["tides", "bread", "tax forms", "violin", "glaciers", "trains", "orchids"]
    for n, key in enumerate(ORBIT + ORBIT[:1]):
        prompt = f"Could you tell me about {topics[n]} and why people care about them so much?"
        d = _send(pipeline, clock, key, n, thinking=False, prompt=prompt)
        assert d.assessment is not None and d.assessment.applied is Risk.NONE


def test_shadow_scores_but_does_not_act() -> None:
    pipeline, _, clock = _pipeline(_rules(shadow=True))
    last = _campaign(pipeline, clock)[-1]
    assert last.assessment is not None
    assert last.assessment.risk is Risk.RESTRICT and last.assessment.applied is Risk.NONE
    assert "shadow:template_spread" in last.assessment.fired
    up = dict(last.upstream_headers)
    assert up[governance.REASONING] == "full" and up[governance.RISK] == "none"


def test_one_detector_in_shadow_leaves_the_others_applied() -> None:
    pipeline, _, clock = _pipeline(_rules(shadow_detectors=["template_spread"]))
    last = _campaign(pipeline, clock)[-1]
    assert last.assessment is not None
    assert (
        "shadow:template_spread" in last.assessment.fired and "elicitation" in last.assessment.fired
    )
    assert last.assessment.risk is Risk.RESTRICT
    assert last.assessment.applied is Risk.WATCH  # elicitation alone: watched, not restricted


def test_verdicts_restrict_with_the_cluster_key_and_deny() -> None:
    rates = MemoryRateStore()
    rates.put_verdict(verdict_key("acme-research"), VerdictView("restrict", "c42", 0.8, T0 + 3600))
    pipeline, _, clock = _pipeline(rates=rates)
    d = _send(pipeline, clock, ACME_KEY, 1, thinking=False, prompt="hello there")
    up = dict(d.upstream_headers)
    assert d.allowed and up[governance.RISK] == "restrict" and up[governance.CLUSTER] == "c42"
    assert up[governance.WATERMARK] == "cluster-c42" and up[governance.REASONING] == "summary"
    rates.put_verdict(verdict_key("acme-research"), VerdictView("deny", "c42", 0.97, T0 + 3600))
    d = _send(pipeline, clock, ACME_KEY, 2, thinking=False, prompt="hello there")
    assert not d.allowed and d.reason.value == "extraction_denied" and d.status == 403
    assert d.rule == "detection:verdict"
    clock.set(T0 + 3600)  # the verdict expired
    assert _send(pipeline, clock, ACME_KEY, 3, thinking=False, prompt="hello there").allowed


NEUTRAL = (
    "Translate the following customer email into formal German and keep the product name "
    "{n} unchanged in the translation."
)


def test_a_template_verdict_restricts_any_account_from_its_first_request() -> None:
    """A SimHash near the request's under a template verdict: a fresh account's first request
    is restricted with the verdict's cluster (never denied, even if the store says deny); a
    verdict that only shares a band value, other templates and other accounts are untouched."""
    rates = MemoryRateStore()
    pipeline, sink, clock = _pipeline(rates=rates)
    first = _send(pipeline, clock, ORBIT[0], 1, thinking=False, prompt=NEUTRAL)
    assert first.assessment is not None and first.assessment.risk is Risk.NONE
    simhash = int(to_dict(build_record(*sink.records[-1], trace_id=""))["detection"]["simhash"], 16)
    keys = template_verdict_keys(simhash)
    far = simhash ^ 0xFFFF_FFFF_0000  # the same first band, 32 bits away
    rates.put_verdict(keys[0], VerdictView("deny", "c6", 0.9, T0 + 3600, 7, ((far, "c6"),)))
    assert _send(pipeline, clock, ORBIT[4], 5, thinking=False, prompt=NEUTRAL).assessment == (
        first.assessment
    )
    # The band's top cluster is c9, but the SimHash that matches is c7's: c7 is named.
    owned = ((simhash ^ 0x41, "c7"), (simhash ^ 0xFFFF_0000_0000_0000, "c9"))
    rates.put_verdict(keys[1], VerdictView("deny", "c9", 0.95, T0 + 3600, 7, owned))

    fresh = _send(pipeline, clock, ORBIT[1], 2, thinking=False, prompt=NEUTRAL)
    up = dict(fresh.upstream_headers)
    assert fresh.allowed and fresh.assessment is not None
    assert fresh.assessment.applied is Risk.RESTRICT
    assert "template_verdict" in fresh.assessment.fired
    assert up[governance.RISK] == "restrict" and up[governance.CLUSTER] == "c7"
    assert up[governance.REASONING] == "summary"
    other = _send(pipeline, clock, ORBIT[2], 3, thinking=False, prompt="x" * 80)
    assert other.assessment is not None and other.assessment.risk is Risk.NONE

    shadowed, _, sclock = _pipeline(_rules(shadow_detectors=["template_verdict"]), rates=rates)
    sclock.set(clock.now())
    d = _send(shadowed, sclock, ORBIT[3], 4, thinking=False, prompt=NEUTRAL)
    assert d.assessment is not None and d.assessment.risk is Risk.RESTRICT
    assert "shadow:template_verdict" in d.assessment.fired
    assert d.assessment.applied < Risk.RESTRICT  # four accounts on it by now: watched at most
    assert d.assessment.cluster == ""  # a shadowed template verdict ties no one to a campaign


def test_a_network_verdict_restricts_reasoning_requests_from_it() -> None:
    """A verdict on the request's /24 (a campaign's proxy network): a fresh account's first
    request from it that asks for reasoning is restricted with the owner's cluster named,
    never denied even if the store says deny; an ordinary prompt from the same /24 and
    requests from the next /24 are untouched; in shadow it only records."""
    rates = MemoryRateStore()
    pipeline, sink, clock = _pipeline(rates=rates)
    first = _send(pipeline, clock, ORBIT[0], 1, source="79.192.3.4", thinking=False, prompt=NEUTRAL)
    assert first.assessment is not None and first.assessment.risk is Risk.NONE
    network = to_dict(build_record(*sink.records[-1], trace_id=""))["client_network"]
    assert network == "79.192.3.0/24"
    rates.put_verdict(network_verdict_key(network), VerdictView("deny", "c5", 0.9, T0 + 3600))

    fresh = _send(pipeline, clock, ORBIT[1], 2, source="79.192.3.77")
    up = dict(fresh.upstream_headers)
    assert fresh.allowed and fresh.assessment is not None
    assert fresh.assessment.applied is Risk.RESTRICT and "network_verdict" in fresh.assessment.fired
    assert up[governance.RISK] == "restrict" and up[governance.CLUSTER] == "c5"
    assert up[governance.WATERMARK] == "cluster-c5" and up[governance.REASONING] == "summary"
    plain = _send(
        pipeline, clock, ORBIT[2], 3, source="79.192.3.78", thinking=False, prompt=NEUTRAL
    )
    assert plain.assessment is not None and plain.assessment.risk is Risk.NONE
    nextdoor = _send(pipeline, clock, ORBIT[3], 4, source="79.192.4.9")
    assert nextdoor.assessment is not None
    assert "network_verdict" not in nextdoor.assessment.fired
    assert nextdoor.assessment.applied < Risk.RESTRICT

    shadowed, _, sclock = _pipeline(_rules(shadow_detectors=["network_verdict"]), rates=rates)
    sclock.set(clock.now())
    d = _send(shadowed, sclock, ORBIT[4], 5, source="79.192.3.5")
    assert d.assessment is not None and d.assessment.risk is Risk.RESTRICT
    assert "shadow:network_verdict" in d.assessment.fired
    assert d.assessment.applied < Risk.RESTRICT and d.assessment.cluster == ""


def test_unverified_accounts_are_restricted_sooner() -> None:
    rules = _rules(thresholds={"watch": 0.2, "restrict": 0.5}, unverified_factor=2.0)
    detection = rules.rules.detection
    from authz.accounts import Kyc
    from authz.detect.features import extract
    from authz.detect.risk import assess_risk
    from authz.metering.result import Sighted

    features = extract(json.loads(_body(1)), {})
    sighted = Sighted((("template_accounts", 4),), None, None)
    verified = assess_risk(
        detection, tier="pro", kyc=Kyc.VERIFIED, features=features, sighted=sighted
    )
    unverified = assess_risk(
        detection, tier="pro", kyc=Kyc.UNVERIFIED, features=features, sighted=sighted
    )
    assert unverified.score == pytest.approx(min(1.0, verified.score * 2.0), abs=1e-3)
    assert unverified.applied >= verified.applied
    assert unverified.applied is Risk.RESTRICT


def test_rules_validate_detection(tmp_path: Path) -> None:
    from authz.errors import ConfigError

    doc = yaml.safe_load(DEMO_RULES.read_text())
    doc["detection"] = {"tiers": {"gold": {"watch": 0.1}}}
    with pytest.raises(ConfigError, match=r"detection\.tiers\.gold.*no tier named 'gold'"):
        parse_rules(yaml.safe_dump(doc).encode(), source="r.yaml")
    doc["detection"] = {"thresholds": {"watch": 0.7, "restrict": 0.5}}
    with pytest.raises(ConfigError, match="'restrict' must not be below 'watch'"):
        parse_rules(yaml.safe_dump(doc).encode(), source="r.yaml")


def test_disabled_detection_adds_nothing() -> None:
    pipeline, _, clock = _pipeline(_rules(enabled=False))
    last = _campaign(pipeline, clock)[-1]
    assert last.features is None and last.assessment is None and last.sighted is None
    assert dict(last.upstream_headers)[governance.RISK] == "none"


def test_the_audit_record_carries_features_and_action() -> None:
    pipeline, sink, clock = _pipeline()
    _campaign(pipeline, clock)
    f, d = sink.records[-1]
    record = to_dict(build_record(f, d, trace_id=""))
    det = record["detection"]
    assert det["risk"] == "restrict" and len(det["template"]) == 16
    assert len(det["simhash"]) == 16 and det["elicitation"] > 0.5
    assert "template_spread" in det["detectors"] and det["client"]
    assert record["account_created"].startswith("2026-11-26T01:00:00")


def test_forged_risk_headers_are_replaced_or_removed() -> None:
    pipeline, _, clock = _pipeline()
    forged = {"x-api-key": ORBIT[0], "x-distill-risk": "none", "x-distill-cluster": "x"}
    clock.advance(1)
    d = asyncio.run(pipeline.check(facts(forged, body=_body(1))))
    up = dict(d.upstream_headers)
    assert up[governance.RISK] in {"none", "watch"}
    assert "x-distill-cluster" in d.remove_headers and governance.CLUSTER not in up


@pytest.mark.envoy
@pytest.mark.redis
def test_a_campaign_through_envoy_and_redis_is_restricted_upstream_only(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> None:
    """Seven requests of one template from six accounts, through real Envoy to a server on a
    real Redis: the model server is told to restrict; the client never sees how."""
    from authz.replay.traffic import parse_line
    from tests.test_envoy_e2e import Stacks

    lines = [
        json.dumps(
            {
                "ts": T0 + n,
                "source_ip": "127.0.0.1",
                "path": "/v1/messages",
                "headers": {"x-api-key": key, "content-type": "application/json"},
                "body": _body(n).decode(),
            }
        )
        for n, key in enumerate(ORBIT + ORBIT[:1])
    ]
    stacks = Stacks(tmp_path_factory)
    try:
        stack = stacks.start(store=redis_url)
        answers = []
        for n, line in enumerate(lines, 1):
            record = parse_line(line, n)
            answers.append(stack.post(record.headers, (record.body or "").encode()))
        seen = stack.upstream.recorder.seen[-1]
    finally:
        stacks.close()
    assert [a.status for a in answers] == [200] * 7
    up = {name: values for name, values in seen.governance.items()}
    assert up[governance.RISK] == ["restrict"] and up[governance.REASONING] == ["summary"]
    assert up[governance.LOGPROBS] == ["denied"] and up[governance.MAX_THINKING] == ["1024"]
    for answer in answers:
        ours = [h for h in answer.headers if h.startswith("x-distill-")]
        assert ours == [governance.DECISION_ID]
        assert json.loads(answer.body)["served"]["reasoning_exposure"] in {"full", "summary"}
    assert json.loads(answers[-1].body)["served"]["reasoning_exposure"] == "summary"


def test_near_template_matches_within_the_distance_and_names_the_nearest_owner() -> None:
    """A template verdict applies to a SimHash within its `bits` (5 of 7 here), not beyond
    (8 bits), and when several owned SimHashes are near, it names the nearest one's owner."""
    h = 0x9F3A_5C7E_1234_5678
    five, two, eight = h ^ 0b11111 << 20, h ^ 0b11 << 40, h ^ 0xFF << 8
    both = VerdictView("restrict", "c1", 0.9, T0 + 60, 7, ((five, "c1"), (two, "c2")))
    near = near_template([both], h)
    assert near is not None and near.cluster == "c2" and near.action == "restrict"
    alone = near_template([VerdictView("restrict", "c1", 0.9, T0 + 60, 7, ((five, "c1"),))], h)
    assert alone is not None and alone.cluster == "c1"
    assert (
        near_template([VerdictView("restrict", "c3", 0.9, T0 + 60, 7, ((eight, "c3"),))], h) is None
    )
