"""The decision pipeline: request facts in, a Decision out, phases in one fixed order.

Pure Python over the protocols in `authz.protocols`; the gRPC server, replay
and the tests all run this same code. A denial is a value; an exception is a
fault, caught once in `Pipeline.check` and mapped by the failure policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from opentelemetry.trace import Span

from authz import governance, telemetry
from authz.accounts import Kyc
from authz.body import BodyError, summarize
from authz.clientip import ClientAddress, client_address, client_network
from authz.decision import Action, Caller, Decision
from authz.detect.features import RequestFeatures, extract
from authz.detect.keys import sightings
from authz.detect.risk import assess_risk
from authz.detect.rules import Assessment, Risk
from authz.facts import RequestFacts
from authz.jurisdiction import Subject, evaluate
from authz.keys import KeyHasher, KeyProblem, extract_key
from authz.location import Location
from authz.metering import StoreUnavailable, allowed_headers, denied_headers, describe, plan_request
from authz.metering.plan import Sightings
from authz.metering.result import Sighted
from authz.metering.tokens import CHARS_PER_TOKEN
from authz.protocols import (
    Clock,
    DecisionSink,
    GeoResolver,
    KeyRegistry,
    RateStore,
    RulesSource,
)
from authz.reasons import Reason
from authz.rules import CompiledTier, Rules

log = logging.getLogger("distill_guard.pipeline")

_MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Denial:
    """A phase's verdict that the request stops here; `rule` names the rule that said so."""

    reason: Reason
    detail: str
    rule: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # for the client, e.g. Retry-After


class DependencyFault(Exception):
    """A store the pipeline depends on failed (timeout, connection refused)."""


@dataclass(slots=True)
class _Check:
    """Working state of one check, filled in phase by phase."""

    facts: RequestFacts
    rules: Rules
    now: float
    decision_id: str
    recording: bool = False  # the check's span records: phases get spans of their own
    caller: Caller | None = None
    tier: CompiledTier | None = None
    model: str | None = None
    body_fields: dict[str, Any] = field(default_factory=dict)
    quota_headers: tuple[tuple[str, str], ...] = ()
    counters: tuple[tuple[str, int, int], ...] = ()
    estimated_tokens: int = 0
    client: ClientAddress | None = None
    location: Location | None = None
    flags: list[str] = field(default_factory=list)
    shadow_denies: list[str] = field(default_factory=list)
    trace: list[tuple[str, str]] | None = None
    features: RequestFeatures | None = None
    sighted: Sighted | None = None
    assessment: Assessment | None = None

    def note(self, phase: str, text: str) -> None:
        """Add a line to the explain trace; callers test `trace` first, to skip formatting."""
        if self.trace is not None:
            self.trace.append((phase, text))


def new_decision_id() -> str:
    """A random, unguessable decision id (joins logs, audit and Envoy's access log)."""
    return secrets.token_hex(12)


_Phase = TypeVar("_Phase", bound=Callable[..., Any])


def _traced(span_name: str) -> Callable[[_Phase], _Phase]:
    """Run a phase (sync or async) in a child span of the check's; a denial is noted on it.

    Only under a recording check span (`_Check.recording`, asked once per check):
    otherwise (no SDK, trace not sampled, replay) the phase runs bare, as even a
    no-op span costs microseconds.
    """

    def note(span: Span, denial: Denial | None) -> None:
        if denial is not None and span.is_recording():
            span.set_attribute(telemetry.REASON, denial.reason.value)
            if denial.rule is not None:
                span.set_attribute(telemetry.RULE, denial.rule)

    def wrap(phase: _Phase) -> _Phase:
        if inspect.iscoroutinefunction(phase):

            @functools.wraps(phase)
            async def run_async(self: Pipeline, state: _Check) -> Denial | None:
                if not state.recording:
                    return cast(Denial | None, await phase(self, state))
                with telemetry.phase_span(span_name) as span:
                    denial: Denial | None = await phase(self, state)
                    note(span, denial)
                    return denial

            return cast(_Phase, run_async)

        @functools.wraps(phase)
        def run(self: Pipeline, state: _Check) -> Denial | None:
            if not state.recording:
                return cast(Denial | None, phase(self, state))
            with telemetry.phase_span(span_name) as span:
                denial: Denial | None = phase(self, state)
                note(span, denial)
                return denial

        return cast(_Phase, run)

    return wrap


class Pipeline:
    """Runs the phases for one request at a time; safe to share between tasks."""

    def __init__(
        self,
        *,
        rules: RulesSource,
        registry: KeyRegistry,
        hasher: KeyHasher,
        geo: GeoResolver,
        rates: RateStore,
        clock: Clock,
        sink: DecisionSink,
        max_body_bytes: int = 1 << 20,
        ids: Callable[[], str] = new_decision_id,
    ) -> None:
        self._rules = rules
        self._registry = registry
        self._hasher = hasher
        self._geo = geo
        self._rates = rates
        self._clock = clock
        self._sink = sink
        self._max_body_bytes = max_body_bytes
        self._ids = ids  # replay numbers its decisions, so its output is reproducible

    async def check(
        self, facts: RequestFacts, *, budget: float | None = None, explain: bool = False
    ) -> Decision:
        """Decide one request within `budget` seconds.

        Never raises: faults and an exhausted budget become fail-closed denials.
        A cancelled check (Envoy gave up) is still recorded, then cancelled.
        With `explain`, the decision carries the chain of rules that produced it.
        """
        rules = self._rules.current()
        state = _Check(facts, rules, self._clock.now(), self._ids(), telemetry.recording())
        if explain:
            state.trace = [("rules", f"version {rules.version} from {rules.source}")]
        try:
            if budget is None:  # replay, explain: no deadline (and no timer to set up)
                denial = await self._run_phases(state)
            else:
                async with asyncio.timeout(budget):
                    denial = await self._run_phases(state)
            decision = self._allow(state) if denial is None else self._deny(state, denial)
        except TimeoutError:
            decision = self._deny(
                state, Denial(Reason.DEADLINE_EXCEEDED, f"no decision within {budget:.3f}s")
            )
        except asyncio.CancelledError:
            self._record(
                facts,
                self._deny(state, Denial(Reason.DEADLINE_EXCEEDED, "cancelled by the caller")),
            )
            raise
        except DependencyFault as exc:
            log.warning(
                "dependency failed", extra={"decision_id": state.decision_id, "error": str(exc)}
            )
            decision = self._deny(
                state, Denial(Reason.DEPENDENCY_FAILED, "a dependency is unavailable")
            )
        except Exception:
            log.exception("check failed", extra={"decision_id": state.decision_id})
            decision = self._deny(state, Denial(Reason.INTERNAL_ERROR, "internal error"))
        decision = self._apply_mode(state, decision)
        # Phase 7, record: every decision, whatever its outcome.
        self._record(facts, decision)
        return decision

    def _record(self, facts: RequestFacts, decision: Decision) -> None:
        """Hand the decision to the sink, count it, and describe it on the check span."""
        self._sink.record(facts, decision)
        telemetry.observe_decision(decision, request_id=facts.request_id)

    async def _run_phases(self, state: _Check) -> Denial | None:
        """The phase order, written once; the first denial ends the run."""
        return (
            # 0. sanity: a request we can reason about at all.
            self._validate(state)
            # 1. identify: key -> account -> entity -> tier, and what the tier permits.
            or await self._identify(state)
            or self._entitle(state)
            # 2. locate: the client address, its country and network; jurisdiction rules.
            or self._locate(state)
            # 3. meter: rate counters, token budgets and volume, and the pools the
            # request joins for detection, in one store call.
            or await self._meter(state)
            # 4. detect: extraction features, pooled signals and verdicts into a risk.
            or self._detect(state)
            # 5. decide: the graduated action (a deny is a denial; restrict shapes output).
            or self._decide(state)
            # 6. shape headers is _allow/_deny; 7. record is in check().
        )

    def _validate(self, state: _Check) -> Denial | None:
        facts = state.facts
        if facts.malformed:
            return Denial(Reason.REQUEST_MALFORMED, facts.malformed)
        if facts.client_ip is None:
            return Denial(
                Reason.SOURCE_ADDRESS_INVALID,
                f"Envoy's source address {facts.source[:64]!r} is not an IP address",
            )
        return None

    @_traced(telemetry.IDENTIFY_SPAN)
    async def _identify(self, state: _Check) -> Denial | None:
        try:
            key = extract_key(state.facts.headers, state.rules.key_headers)
        except KeyProblem as exc:
            return Denial(Reason.KEY_MALFORMED, str(exc))
        if key is None:
            return Denial(
                Reason.KEY_MISSING, "no API key in " + " or ".join(state.rules.key_headers)
            )
        try:
            record = await self._registry.lookup(self._hasher.digest(key))
        except Exception as exc:
            raise DependencyFault(f"key registry: {exc!r}") from exc
        if record is None:
            return Denial(Reason.KEY_UNKNOWN, "the API key is not known")
        state.caller = Caller(record.key_id, record.account)
        status = record.status(state.now)
        if status == "revoked":
            return Denial(Reason.KEY_REVOKED, "the API key has been revoked")
        if status == "expired":
            return Denial(Reason.KEY_EXPIRED, "the API key has expired")
        tier = state.rules.tiers.get(record.account.tier)
        if tier is None:
            return Denial(
                Reason.TIER_UNKNOWN, f"the account's tier {record.account.tier!r} is not defined"
            )
        state.tier = tier
        account = record.account
        if state.trace is not None:
            state.note(
                "identify",
                f"key {record.key_id} -> account {account.account} (entity {account.entity}), "
                f"tier {tier.name}, KYC {account.kyc.value}, country {account.country}",
            )
        return None

    def _entitle(self, state: _Check) -> Denial | None:
        tier, caller, facts = state.tier, state.caller, state.facts
        assert tier is not None and caller is not None
        rule = f"tier:{tier.name}"
        if caller.account.kyc is not Kyc.VERIFIED and not tier.allow_unverified:
            return Denial(
                Reason.VERIFICATION_REQUIRED,
                f"tier {tier.name!r} requires a verified account "
                f"(KYC is {caller.account.kyc.value})",
                rule=f"{rule}:allow_unverified",
            )
        if not tier.allows_path(facts.path):
            return Denial(
                Reason.PATH_NOT_ALLOWED,
                f"tier {tier.name!r} may not call this path",
                rule=f"{rule}:paths",
            )
        denial = self._read_model(state)
        if denial is not None:
            return denial
        if state.model is not None and not tier.allows_model(state.model):
            return Denial(
                Reason.MODEL_NOT_ALLOWED,
                f"tier {tier.name!r} may not call model {state.model!r}",
                rule=f"{rule}:models",
            )
        # A tier that limits or meters by model must know the model of every body.
        names_models = tier.restricts_models or bool(tier.limits.models)
        if state.model is None and names_models and self._has_body(facts):
            return Denial(
                Reason.MODEL_UNREADABLE,
                "the request body does not name a model",
                rule=f"{rule}:models",
            )
        if state.trace is not None:
            state.note(
                "entitle", f"tier {tier.name} may call {facts.path}, model {state.model or '-'}"
            )
        return None

    @_traced(telemetry.JURISDICTION_SPAN)
    def _locate(self, state: _Check) -> Denial | None:
        facts, rules, caller, tier = state.facts, state.rules, state.caller, state.tier
        assert facts.client_ip is not None and caller is not None and tier is not None
        client = client_address(
            facts.client_ip, facts.headers.get("x-forwarded-for"), rules.client_ip
        )
        state.client = client
        location = state.location = self._geo.locate(client.ip)
        if client.xff_invalid:
            state.flags.append("xff_invalid")
        if state.trace is not None:
            network = f"AS{location.asn or '-'} {location.as_org or ''}".rstrip()
            state.note(
                "locate",
                f"client {client.ip} (from {client.via}): {location.kind.value}, country "
                f"{location.country or '-'}, {network}",
            )
        account = caller.account
        verdict = evaluate(
            rules.jurisdiction,
            Subject(tier.name, account.kyc, account.country, location),
            trace=state.trace is not None,
        )
        for step in verdict.steps:
            state.note("jurisdiction", f"{step.rule}: {step.outcome}")
        state.flags += verdict.flags
        state.shadow_denies += verdict.shadow_denies
        rule = verdict.denied_by
        if rule is None:
            return None
        return Denial(
            rule.reason,
            f"refused by jurisdiction rule {rule.id!r} (client country "
            f"{location.country or 'unknown'}, account country {account.country}"
            + (f", AS{location.asn}" if location.asn else "")
            + ")",
            rule=f"jurisdiction:{rule.id}",
        )

    @_traced(telemetry.COUNTERS_SPAN)
    async def _meter(self, state: _Check) -> Denial | None:
        tier, caller = state.tier, state.caller
        assert tier is not None and caller is not None
        account = caller.account
        plan = plan_request(
            tier.limits,
            account=account.account,
            entity=account.entity,
            model=state.model,
            body_fields=state.body_fields,
            min_tokens=self._cut_body_tokens(state.facts),
            sightings=self._sightings(state),
        )
        if plan.empty:
            return None
        try:
            result = await self._rates.hit(plan, state.now)
        except StoreUnavailable as exc:
            if plan.counters or plan.volumes:
                raise DependencyFault(f"rate store: {exc}") from exc
            # Only detection asked: it goes without its pooled signals this time.
            state.flags.append("detect_degraded")
            return None
        state.sighted = result.sighted
        state.estimated_tokens = plan.tokens
        state.counters = tuple((s.name, s.limit, s.remaining) for s in result.limits)
        if result.signals:
            state.flags += [signal.name for signal in result.signals]
        if result.degraded:
            state.flags.append("meter_degraded")
        if state.trace is not None:
            state.note(
                "meter",
                ", ".join(f"{s.name} {s.remaining}/{s.limit}" for s in result.limits)
                + (" (local fail-open limiter)" if result.degraded else ""),
            )
        violated = result.violated
        if result.allowed or violated is None:
            state.quota_headers = tuple(
                allowed_headers(result, remaining=tier.limits.headers_remaining)
            )
            return None
        reason = Reason.VOLUME_ANOMALY if violated.kind == "volume" else Reason.RATE_LIMITED
        return Denial(
            reason,
            describe(violated),
            rule=f"tier:{tier.name}:limits:{violated.name}",
            headers=tuple(denied_headers(result)),
        )

    def _sightings(self, state: _Check) -> Sightings | None:
        """Extract the request's features and the pools they join (None: detection is off)."""
        detection = state.rules.detection
        caller, client, location = state.caller, state.client, state.location
        if not detection.enabled or caller is None or client is None:
            return None
        features = state.features = extract(
            state.body_fields, state.facts.headers, limit=detection.max_prompt_chars
        )
        long_enough = features.scaffold_words >= detection.min_template_words
        return sightings(
            account=caller.account.account,
            template=features.template_id if long_enough else "",
            network=client_network(client.ip),
            asn=location.asn if location is not None else None,
            client=features.client,
            now=state.now,
            simhash=features.simhash,
        )

    @_traced(telemetry.DETECT_SPAN)
    def _detect(self, state: _Check) -> Denial | None:
        """Score the request from its features, the pools and the account's verdict."""
        features, tier, caller = state.features, state.tier, state.caller
        if features is None or tier is None or caller is None:
            return None
        a = state.assessment = assess_risk(
            state.rules.detection,
            tier=tier.name,
            kyc=caller.account.kyc,
            features=features,
            sighted=state.sighted,
        )
        if state.trace is not None:
            state.note(
                "detect",
                f"score {a.score:.2f} -> {a.risk.label}"
                + (f" (applied: {a.applied.label})" if a.applied != a.risk else "")
                + (f"; detectors {', '.join(a.fired)}" if a.fired else "")
                + (f"; cluster {a.cluster}" if a.cluster else ""),
            )
        return None

    def _decide(self, state: _Check) -> Denial | None:
        """Turn the detect phase's graduated action into the answer: deny is a denial."""
        a = state.assessment
        if a is None or a.applied is not Risk.DENY:
            return None
        return Denial(
            Reason.EXTRACTION_DENIED,
            f"extraction risk {a.score:.2f} at the deny level"
            + (f" (cluster {a.cluster})" if a.cluster else ""),
            rule="detection:" + ("verdict" if "verdict" in a.fired else "score"),
        )

    def _read_model(self, state: _Check) -> Denial | None:
        body = state.facts.body
        if not body:
            return None
        try:
            summary = summarize(body, partial=state.facts.body_partial, limit=self._max_body_bytes)
        except BodyError as exc:
            return Denial(Reason.BODY_MALFORMED, f"request body is {exc}")
        state.body_fields = summary.fields
        model = summary.model
        if model is not None and not _MODEL_NAME.match(model):
            return Denial(
                Reason.BODY_MALFORMED, "request body names a model with invalid characters"
            )
        state.model = model
        return None

    @staticmethod
    def _cut_body_tokens(facts: RequestFacts) -> int:
        """Input tokens a body seen only in part carries at least, from its full size."""
        if not facts.body_partial:
            return 0
        length = facts.headers.get("content-length", "").strip()
        size = max(len(facts.body or b""), int(length) if length.isdigit() else 0)
        return math.ceil(size / CHARS_PER_TOKEN)

    @staticmethod
    def _has_body(facts: RequestFacts) -> bool:
        length = facts.headers.get("content-length", "0").strip()
        return bool(facts.body) or length not in {"", "0"} or "transfer-encoding" in facts.headers

    def _allow(self, state: _Check) -> Decision:
        assert state.caller is not None and state.tier is not None
        upstream = self._upstream(state)
        return self._decision(
            state,
            Action.ALLOW,
            Reason.OK,
            rule=f"tier:{state.tier.name}",
            upstream_headers=upstream,
            remove_headers=self._to_remove(state, upstream),
            client_headers=state.quota_headers,
        )

    @staticmethod
    def _upstream(state: _Check) -> tuple[tuple[str, str], ...]:
        """Identity and output governance headers for the model server."""
        assert state.caller is not None and state.tier is not None
        a = state.assessment
        restricted = a is not None and a.applied >= Risk.RESTRICT
        cluster = a.cluster if a is not None else ""
        output = governance.output_for(
            state.tier,
            state.rules.detection.restrict if restricted else None,
            cluster or state.caller.account.account,
        )
        return governance.upstream_headers(
            state.decision_id,
            state.rules.version,
            state.caller,
            state.tier,
            state.model,
            output=output,
            risk=a.applied.label if a is not None else "none",
            cluster=cluster,
        )

    @staticmethod
    def _to_remove(state: _Check, ours: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
        """What Envoy strips before the model server: forged governance headers, the key."""
        rules, headers = state.rules, state.facts.headers
        remove = governance.headers_to_remove(headers, ours)
        if not rules.forward_key:
            remove += tuple(h for h in rules.key_headers if h in headers)
        return remove

    def _deny(self, state: _Check, denial: Denial) -> Decision:
        return self._decision(
            state,
            Action.DENY,
            denial.reason,
            rule=denial.rule,
            detail=denial.detail,
            client_headers=denial.headers,
        )

    @staticmethod
    def _decision(
        state: _Check,
        action: Action,
        reason: Reason,
        *,
        rule: str | None,
        detail: str = "",
        upstream_headers: tuple[tuple[str, str], ...] = (),
        remove_headers: tuple[str, ...] = (),
        client_headers: tuple[tuple[str, str], ...] = (),
    ) -> Decision:
        """The Decision value, with everything the record and explain need."""
        if state.trace is not None:
            state.note(
                "decision", f"{action.value} {reason.value}" + (f" by {rule}" if rule else "")
            )
        return Decision(
            action=action,
            reason=reason,
            decision_id=state.decision_id,
            rules_version=state.rules.version,
            time=state.now,
            detail=detail,
            rule=rule,
            caller=state.caller,
            model=state.model,
            client_ip=state.client.ip if state.client is not None else state.facts.client_ip,
            location=state.location,
            flags=tuple(state.flags),
            shadow_denies=tuple(state.shadow_denies),
            counters=state.counters,
            estimated_tokens=state.estimated_tokens,
            features=state.features,
            sighted=state.sighted,
            assessment=state.assessment,
            upstream_headers=upstream_headers,
            remove_headers=remove_headers,
            response_headers=((governance.DECISION_ID, state.decision_id), *client_headers),
            trace=tuple(state.trace) if state.trace is not None else (),
        )

    def _apply_mode(self, state: _Check, decision: Decision) -> Decision:
        """In dry-run mode a denial is recorded as such, and the request is allowed."""
        if state.rules.mode != "dry_run" or decision.allowed:
            return decision
        if state.caller is not None and state.tier is not None:
            # The caller is known: the model server learns who it is, as for an allow.
            ours = self._upstream(state)
        else:
            # Nobody to govern by: the most conservative exposure.
            ours = (
                (governance.DECISION_ID, state.decision_id),
                (governance.RULES_VERSION, state.rules.version),
                (governance.REASONING, "none"),
            )
        headers = (*ours, (governance.DRY_RUN_DENY, decision.reason.value))
        return dataclasses.replace(
            decision,
            action=Action.ALLOW,
            reason=Reason.OK,
            would_deny=decision.reason,
            upstream_headers=headers,
            remove_headers=self._to_remove(state, headers),
        )
