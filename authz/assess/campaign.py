"""The campaign exercise: simulated campaigns replayed against the deployment's own rules.

For each scenario: `simulate` writes a small population (benign accounts with
hard negatives, and one campaign) with the simulator's own accounts, `replay`
decides every request with the deployment's rules (off-path analysis
included), and `evaluate` scores it. The figures are judged against the
project's quality bar.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from authz.assess.findings import CheckInfo, Finding, Severity, Status
from authz.assess.simmodels import Fitted, fit_models
from authz.evaluation import Evaluation, evaluate
from authz.evaluation.chart import draw
from authz.evaluation.figures import BenignFigures, Detection
from authz.evaluation.markdown import duration, pct
from authz.geobuild import demo_database
from authz.replay.run import replay
from authz.rules import Rules
from authz.settings import Settings
from authz.sim.knobs import PRESETS, Knobs, resolve

# The quality bar (docs/assess.md): what a deployment should reach on every scenario.
MIN_RESTRICTED = 0.99
MAX_LEAKAGE = 0.02
MAX_BENIGN_RESTRICTED = 0.005
MAX_BENIGN_DENIED = 0.0005

SIM_TIERS = ("free", "pro", "enterprise")  # the tiers simulated accounts are on
# Reasons of a restriction that detection caused: a served request at restricted exposure
# keeps reason "ok"; a detection denial is "extraction_denied". Everything else (models,
# limits, jurisdiction) is policy, reported apart.
DETECTION_REASONS = frozenset({"ok", "extraction_denied"})
BLIND = " (unverifiable: most requests asked for a model their tier does not offer)"


def reason_label(reason: str | None) -> str:
    """A restriction's reason as the report shows it ("ok" there means restricted exposure)."""
    return "restricted exposure" if reason == "ok" else str(reason)


TIERS = CheckInfo(
    "DG-DT-200",
    "The rules define the simulated accounts' tiers",
    Severity.INFO,
    3,
    "tiers:\n  free: {...}\n  pro: {...}\n  enterprise: {...}   # names the simulator uses",
)
RESTRICTED = CheckInfo(
    "DG-DT-201",
    "At least 99% of campaign accounts end up restricted",
    Severity.HIGH,
    3,
    "detection:\n  detectors:\n    template_spread: {start: 2, full: 8, weight: 0.6}",
)
LEAKAGE = CheckInfo(
    "DG-DT-202",
    "At most 2% of campaign requests are served in full before restriction",
    Severity.HIGH,
    5,
    "tiers:\n  free:\n    reasoning: none\ndetection:\n  thresholds: {restrict: 0.5}",
)
BENIGN_RESTRICTED = CheckInfo(
    "DG-DT-203",
    "Benign accounts are restricted on at most 0.5% of account-days",
    Severity.MEDIUM,
    3,
    "detection:\n  thresholds: {watch: 0.3, restrict: 0.6}   # raise restrict; check with replay",
)
BENIGN_DENIED = CheckInfo(
    "DG-DT-204",
    "Benign accounts are denied on at most 0.05% of account-days",
    Severity.MEDIUM,
    2,
    "# see the reasons in the evidence: widen the tier's models, limits or regions",
)
HARD_NEGATIVES = CheckInfo(
    "DG-DT-205",
    "No hard negative (CI job, researcher, NAT) is denied",
    Severity.MEDIUM,
    3,
    "detection:\n  thresholds: {deny: null}   # leave denial to cluster verdicts",
)


@dataclass(frozen=True, slots=True)
class Scale:
    """How big each simulated scenario is."""

    days: int = 2
    benign_accounts: int = 300
    campaign_accounts: int = 40
    analysis: bool = True


@dataclass(frozen=True, slots=True)
class ScenarioResult:
    """One scenario's evaluation, its chart (PNG, None without matplotlib), its fitted models."""

    scenario: str
    evaluation: Evaluation
    chart: bytes | None
    fitted: Fitted

    @property
    def detection(self) -> Detection | None:
        """The campaign's first restriction by detection (not by policy), if any came."""
        by_reason = self.evaluation.campaigns_total.first_restriction_by_reason
        found = [d for r, d in by_reason.items() if r in DETECTION_REASONS]
        return min(found, key=lambda d: d.requests_before, default=None)


def knobs_for(scenario: str, scale: Scale) -> Knobs:
    """The simulator's knobs at this scale; a preset's extra accounts scale along."""
    default = Knobs()
    factor = PRESETS.get(scenario, {}).get("campaign_accounts", default.campaign_accounts)
    accounts = round(scale.campaign_accounts * factor / default.campaign_accounts)
    explicit = {
        "days": scale.days,
        "benign_accounts": scale.benign_accounts,
        "campaign_accounts": accounts,
    }
    return resolve(scenario, explicit)  # ValueError for an unknown scenario


def run_scenario(
    rules_path: Path, rules: Rules, knobs: Knobs, work: Path, *, analysis: bool
) -> ScenarioResult:
    """Simulate, fit models to the tiers, replay with the deployment's rules, and evaluate."""
    from authz.sim.run import simulate  # the generator's imports are only needed here

    simulate(knobs, work)
    fitted = fit_models(rules, work, knobs.new_model)
    geo = demo_database()  # the simulator's networks are placed by the demo database
    settings = Settings(
        rules=rules_path, accounts=work / "accounts.jsonl", store="memory://", geoip=geo, asn=geo
    )
    decisions = work / "decisions.jsonl"
    with (work / "traffic.jsonl").open("rb") as traffic, decisions.open("w") as out:
        asyncio.run(replay(settings, traffic, out, analysis_lag=60.0 if analysis else None))
    ev = evaluate(work / "labels.jsonl", decisions, work / "scenario.json")
    chart_path = work / "evaluation.png"
    chart = None if draw(ev, chart_path) is not None else chart_path.read_bytes()
    return ScenarioResult(knobs.scenario, ev, chart, fitted)


def benign_total(ev: Evaluation, hard_negative: bool | None) -> BenignFigures | None:
    """The benign totals of all benign accounts (None) or of the hard negatives (True)."""
    return next((b for b in ev.benign_totals if b.hard_negative is hard_negative), None)


def _reasons(counts: dict[str, int]) -> str:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    return ", ".join(f"{r} {n}" for r, n in top) or "none"


def _detected(found: Detection | None) -> str:
    if found is None:
        return "detection restricted none of them"
    return (
        f"first restriction by detection ({reason_label(found.reason)}) after "
        f"{duration(found.seconds)} and {found.requests_before} campaign requests"
    )


def campaign_findings(rules: Rules, results: list[ScenarioResult]) -> list[Finding]:
    """Judge every scenario against the quality bar; one finding per criterion."""
    missing = [t for t in SIM_TIERS if t not in rules.tiers]
    fitted = [
        f"{r.scenario}: {r.fitted.moved} requests moved to a model their tier offers, "
        f"{r.fitted.unfit} left on one it does not"
        for r in results
    ]
    out = [
        TIERS.finding(
            "fail", [f"no tier {', '.join(missing)}: those accounts are tier_unknown", *fitted]
        )
        if missing
        else TIERS.finding("pass", [f"tiers {', '.join(SIM_TIERS)} exist", *fitted])
    ]
    # A scenario whose tiers offer none of the simulated models is mostly model_not_allowed
    # denials: its figures judge the model list, not the controls.
    blind = {r.scenario for r in results if r.fitted.unfit > r.fitted.kept + r.fitted.moved}
    judged: dict[CheckInfo, list[tuple[str, bool, str]]] = {
        c: [] for c in (RESTRICTED, LEAKAGE, BENIGN_RESTRICTED, BENIGN_DENIED, HARD_NEGATIVES)
    }
    for r in results:
        camp = r.evaluation.campaigns_total
        share, leak = camp.restricted_share, camp.leakage
        judged[RESTRICTED].append(
            (
                r.scenario,
                share is not None and share >= MIN_RESTRICTED,
                f"{r.scenario}: {camp.restricted_accounts} of {camp.active_accounts} active "
                f"campaign accounts restricted ({pct(share)}); restricted requests by reason: "
                f"{_reasons(camp.restricted_requests_by_reason)}; {_detected(r.detection)}",
            )
        )
        judged[LEAKAGE].append(
            (
                r.scenario,
                leak is not None and leak <= MAX_LEAKAGE,
                f"{r.scenario}: leakage {pct(leak)} ({camp.leaked} of {camp.requests} requests)",
            )
        )
        benign, hard = benign_total(r.evaluation, None), benign_total(r.evaluation, True)
        if benign is not None:
            judged[BENIGN_RESTRICTED].append(
                (
                    r.scenario,
                    (benign.restricted_rate or 0.0) <= MAX_BENIGN_RESTRICTED,
                    f"{r.scenario}: {pct(benign.restricted_rate)} of {benign.account_days} "
                    "benign account-days restricted "
                    f"({_reasons(benign.restricted_requests_by_reason)})",
                )
            )
            judged[BENIGN_DENIED].append(
                (
                    r.scenario,
                    (benign.denied_rate or 0.0) <= MAX_BENIGN_DENIED,
                    f"{r.scenario}: {pct(benign.denied_rate)} of {benign.account_days} benign "
                    f"account-days denied ({_reasons(benign.denied_requests_by_reason)})",
                )
            )
        if hard is not None:
            judged[HARD_NEGATIVES].append(
                (
                    r.scenario,
                    hard.denied_accounts == 0,
                    f"{r.scenario}: {hard.denied_accounts} of {hard.active_accounts} active hard "
                    "negatives denied",
                )
            )
    for info, rows in judged.items():
        if not rows:
            continue
        states = {"unverifiable" if s in blind else "pass" if ok else "fail" for s, ok, _ in rows}
        status: Status = next(x for x in ("fail", "unverifiable", "pass") if x in states)
        evidence = [text + (BLIND if s in blind else "") for s, _, text in rows]
        out.append(info.finding(status, evidence))
    return out
