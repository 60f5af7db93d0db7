"""The decision pipeline: request facts in, a Decision out, phases in one fixed order.

Pure Python over the protocols in `authz.protocols`; the gRPC server, replay
and the tests all run this same code. A denial is a value; an exception is a
fault, caught once in `Pipeline.check` and mapped by the failure policy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from dataclasses import dataclass

from authz import governance
from authz.accounts import Kyc
from authz.body import BodyError, summarize
from authz.decision import Action, Caller, Decision
from authz.facts import RequestFacts
from authz.keys import KeyHasher, KeyProblem, extract_key
from authz.protocols import Clock, DecisionSink, KeyRegistry, RulesSource
from authz.reasons import Reason
from authz.rules import CompiledTier, Rules

log = logging.getLogger("distill_guard.pipeline")

_MODEL_NAME = re.compile(r"^[A-Za-z0-9._:/@+-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Denial:
    """A phase's verdict that the request stops here."""

    reason: Reason
    detail: str


class DependencyFault(Exception):
    """A store the pipeline depends on failed (timeout, connection refused)."""


@dataclass(slots=True)
class _Check:
    """Working state of one check, filled in phase by phase."""

    facts: RequestFacts
    rules: Rules
    now: float
    decision_id: str
    caller: Caller | None = None
    tier: CompiledTier | None = None
    model: str | None = None


def new_decision_id() -> str:
    """A random, unguessable decision id (joins logs, audit and Envoy's access log)."""
    return secrets.token_hex(12)


class Pipeline:
    """Runs the phases for one request at a time; safe to share between tasks."""

    def __init__(
        self,
        *,
        rules: RulesSource,
        registry: KeyRegistry,
        hasher: KeyHasher,
        clock: Clock,
        sink: DecisionSink,
        max_body_bytes: int = 1 << 20,
    ) -> None:
        self._rules = rules
        self._registry = registry
        self._hasher = hasher
        self._clock = clock
        self._sink = sink
        self._max_body_bytes = max_body_bytes

    async def check(self, facts: RequestFacts, *, budget: float | None = None) -> Decision:
        """Decide one request within `budget` seconds.

        Never raises: faults and an exhausted budget become fail-closed denials.
        A cancelled check (Envoy gave up) is still recorded, then cancelled.
        """
        rules = self._rules.current()
        state = _Check(facts, rules, self._clock.now(), new_decision_id())
        try:
            async with asyncio.timeout(budget):
                denial = await self._run_phases(state)
            decision = self._allow(state) if denial is None else self._deny(state, denial)
        except TimeoutError:
            decision = self._deny(
                state, Denial(Reason.DEADLINE_EXCEEDED, f"no decision within {budget:.3f}s")
            )
        except asyncio.CancelledError:
            self._sink.record(
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
        self._sink.record(facts, decision)
        return decision

    async def _run_phases(self, state: _Check) -> Denial | None:
        """The phase order, written once; the first denial ends the run."""
        return (
            # 0. sanity: a request we can reason about at all.
            self._validate(state)
            # 1. identify: key -> account -> entity -> tier.
            or await self._identify(state)
            # 2. locate (jurisdiction), 3. meter (rate counters) and 4. detect
            # (extraction patterns) join here, in this order, as they land.
            # 5. decide: what the tier permits.
            or self._authorize(state)
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
        return None

    def _authorize(self, state: _Check) -> Denial | None:
        tier, caller, facts = state.tier, state.caller, state.facts
        assert tier is not None and caller is not None
        if caller.account.kyc is not Kyc.VERIFIED and not tier.allow_unverified:
            return Denial(
                Reason.VERIFICATION_REQUIRED,
                f"tier {tier.name!r} requires a verified account "
                f"(KYC is {caller.account.kyc.value})",
            )
        if not tier.allows_path(facts.path):
            return Denial(Reason.PATH_NOT_ALLOWED, f"tier {tier.name!r} may not call this path")
        denial = self._read_model(state)
        if denial is not None:
            return denial
        if state.model is not None and not tier.allows_model(state.model):
            return Denial(
                Reason.MODEL_NOT_ALLOWED, f"tier {tier.name!r} may not call model {state.model!r}"
            )
        if state.model is None and tier.restricts_models and self._has_body(facts):
            return Denial(Reason.MODEL_UNREADABLE, "the request body does not name a model")
        return None

    def _read_model(self, state: _Check) -> Denial | None:
        body = state.facts.body
        if not body:
            return None
        try:
            summary = summarize(body, partial=state.facts.body_partial, limit=self._max_body_bytes)
        except BodyError as exc:
            return Denial(Reason.BODY_MALFORMED, f"request body is {exc}")
        model = summary.model
        if model is not None and not _MODEL_NAME.match(model):
            return Denial(
                Reason.BODY_MALFORMED, "request body names a model with invalid characters"
            )
        state.model = model
        return None

    @staticmethod
    def _has_body(facts: RequestFacts) -> bool:
        length = facts.headers.get("content-length", "0").strip()
        return bool(facts.body) or length not in {"", "0"} or "transfer-encoding" in facts.headers

    def _allow(self, state: _Check) -> Decision:
        assert state.caller is not None and state.tier is not None
        rules = state.rules
        upstream = governance.upstream_headers(
            state.decision_id, rules.version, state.caller, state.tier, state.model
        )
        remove = governance.headers_to_remove(state.facts.headers, upstream)
        if not rules.forward_key:
            remove += tuple(h for h in rules.key_headers if h in state.facts.headers)
        return Decision(
            action=Action.ALLOW,
            reason=Reason.OK,
            decision_id=state.decision_id,
            rules_version=rules.version,
            caller=state.caller,
            model=state.model,
            upstream_headers=upstream,
            remove_headers=remove,
            response_headers=((governance.DECISION_ID, state.decision_id),),
            matched=(f"tier:{state.tier.name}",),
        )

    def _deny(self, state: _Check, denial: Denial) -> Decision:
        return Decision(
            action=Action.DENY,
            reason=denial.reason,
            decision_id=state.decision_id,
            rules_version=state.rules.version,
            detail=denial.detail,
            caller=state.caller,
            model=state.model,
            response_headers=((governance.DECISION_ID, state.decision_id),),
            matched=(f"tier:{state.tier.name}",) if state.tier is not None else (),
        )

    def _apply_mode(self, state: _Check, decision: Decision) -> Decision:
        """In dry-run mode a denial is recorded as such, and the request is allowed."""
        if state.rules.mode != "dry_run" or decision.allowed:
            return decision
        headers: tuple[tuple[str, str], ...] = (
            (governance.DECISION_ID, state.decision_id),
            (governance.RULES_VERSION, state.rules.version),
            (governance.DRY_RUN_DENY, decision.reason.value),
        )
        return dataclasses.replace(
            decision,
            action=Action.ALLOW,
            reason=Reason.OK,
            would_deny=decision.reason,
            upstream_headers=headers,
            remove_headers=governance.headers_to_remove(state.facts.headers, headers),
        )
