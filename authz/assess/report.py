"""The assessment report: the machine form (JSON), Markdown, and one self-contained HTML file.

All three are built from one `Report` value. Nothing in them reads the wall
clock: the time shown is the `--now` the command was given (or started at),
so the same inputs and the same `--now` give the same bytes.
"""

from __future__ import annotations

import html
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from authz import __version__
from authz.assess.campaign import ScenarioResult, benign_total, reason_label
from authz.assess.findings import CONTROLS, Finding, Severity
from authz.assess.probes import Exchange

# The evaluation report's Markdown table, so both reports escape cells alike.
from authz.evaluation.markdown import duration, pct, rate
from authz.tables import html_table, inline_png, md_table

STATUSES = ("pass", "fail", "warn", "unverifiable")


@dataclass
class Report:
    """Everything one assessment found."""

    generated: str
    fail_on: Severity
    parts: dict[str, str]  # part -> what ran, or why it was skipped
    findings: list[Finding]
    exchanges: list[Exchange] = field(default_factory=list)
    probe_bytes: int = 0
    scenarios: list[ScenarioResult] = field(default_factory=list)
    charts: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG

    def __post_init__(self) -> None:
        self.findings = sorted(self.findings, key=Finding.sort_key)

    @property
    def gating(self) -> list[Finding]:
        """Failed findings at or above --fail-on: they make the command exit 1."""
        return [f for f in self.findings if f.status == "fail" and f.check.severity >= self.fail_on]

    @property
    def verdict(self) -> str:
        """`fail` when a finding gates, else `pass`."""
        return "fail" if self.gating else "pass"

    def counts(self) -> dict[str, int]:
        """Failed findings by severity, highest first."""
        c = Counter(f.check.severity for f in self.findings if f.status == "fail")
        return {s.label: c[s] for s in sorted(Severity, reverse=True)}

    def controls(self) -> list[dict[str, Any]]:
        """Per control: findings by status and the control's overall state."""
        rows = []
        for n, name in CONTROLS.items():
            c: Counter[str] = Counter(f.status for f in self.findings if f.check.control == n)
            state = (
                "fail"
                if c["fail"]
                else "warn"
                if c["warn"] or c["unverifiable"]
                else "pass"
                if c["pass"]
                else "not assessed"
            )
            rows.append({"control": n, "name": name, "state": state, **{s: c[s] for s in STATUSES}})
        return rows

    def to_json(self) -> dict[str, Any]:
        """The machine form printed by --json."""
        return {
            "tool": "distill-guard assess",
            "version": __version__,
            "generated": self.generated,
            "verdict": self.verdict,
            "fail_on": self.fail_on.label,
            "failed_by_severity": self.counts(),
            "parts": self.parts,
            "controls": self.controls(),
            "findings": [f.to_json() for f in self.findings],
            "probes": {
                "requests": len(self.exchanges),
                "bytes_sent": self.probe_bytes,
                "exchanges": [e.to_json() for e in self.exchanges],
            },
            "campaign": [_scenario_row(s) for s in self.scenarios],
        }


def _scenario_row(s: ScenarioResult) -> dict[str, Any]:
    camp = s.evaluation.campaigns_total
    benign, hard = benign_total(s.evaluation, None), benign_total(s.evaluation, True)
    found = s.detection
    return {
        "scenario": s.scenario,
        "campaign_accounts": camp.active_accounts,
        "campaign_restricted_share": camp.restricted_share,
        "leakage": camp.leakage,
        "first_restriction_seconds": camp.detection.seconds,
        "first_restriction_requests_before": camp.detection.requests_before,
        "first_restriction_reason": camp.detection.reason,
        "detection_seconds": None if found is None else found.seconds,
        "detection_requests_before": None if found is None else found.requests_before,
        "detection_reason": None if found is None else found.reason,
        "models_moved": s.fitted.moved,
        "models_unfit": s.fitted.unfit,
        "benign_restricted_rate": None if benign is None else benign.restricted_rate,
        "benign_denied_rate": None if benign is None else benign.denied_rate,
        "hard_negatives_denied": None if hard is None else hard.denied_accounts,
    }


# --- Markdown --------------------------------------------------------------------------


def _after(seconds: float | None, requests: int | None, reason: str | None) -> str:
    if seconds is None:
        return "never"
    return f"{duration(seconds)} ({requests} requests, {reason_label(reason)})"


def _campaign_cells(s: ScenarioResult) -> list[object]:
    r = _scenario_row(s)
    return [
        s.scenario,
        r["campaign_accounts"],
        pct(r["campaign_restricted_share"]),
        pct(r["leakage"]),
        _after(r["detection_seconds"], r["detection_requests_before"], r["detection_reason"]),
        _after(
            r["first_restriction_seconds"],
            r["first_restriction_requests_before"],
            r["first_restriction_reason"],
        ),
        rate(r["benign_restricted_rate"]),
        rate(r["benign_denied_rate"]),
        r["hard_negatives_denied"],
        f"{r['models_moved']} moved, {r['models_unfit']} unfit",
    ]


CAMPAIGN_HEAD = [
    "scenario",
    "campaign accounts",
    "restricted",
    "leakage",
    "first detection after",
    "first restriction (any reason) after",
    "benign restricted / account-day",
    "benign denied / account-day",
    "hard negatives denied",
    "requests' models fitted to the tiers",
]
CONTROL_HEAD = ["control", "state", "pass", "fail", "warn", "unverifiable"]
PROBE_HEAD = ["probe", "request", "answer", "governance headers upstream saw"]
PASSED_HEAD = ["id", "severity", "control", "check", "evidence"]


# The table rows both renderers show, built in one place so the forms cannot drift.


def _control_rows(r: Report) -> list[list[object]]:
    return [
        [f"{c['control']}. {c['name']}", c["state"], *(c[s] for s in STATUSES)]
        for c in r.controls()
    ]


def _passed_rows(r: Report) -> list[list[object]]:
    return [
        [f.check.id, f.check.severity.label, f.check.control, f.check.title, "; ".join(f.evidence)]
        for f in r.findings
        if f.status == "pass"
    ]


def _probe_rows(r: Report) -> list[list[object]]:
    return [
        [e.probe, e.request, f"HTTP {e.status} {e.reason}".strip(), _upstream(e)]
        for e in r.exchanges
    ]


def _upstream(e: Exchange) -> str:
    if e.upstream is None:
        return "-"
    return (
        ", ".join(
            f"{k.removeprefix('x-distill-')}={'/'.join(v)}"
            for k, v in sorted(e.upstream.items())
            if k in _SHOWN_HEADERS
        )
        or "-"
    )


_SHOWN_HEADERS = {
    "x-distill-tier",
    "x-distill-reasoning",
    "x-distill-max-thinking-tokens",
    "x-distill-risk",
    "x-distill-watermark-key",
}


def _summary_lines(r: Report) -> list[str]:
    counts = ", ".join(f"{n} {s}" for s, n in r.counts().items() if n) or "none"
    gate = len(r.gating)
    lines = [
        f"**Verdict: {r.verdict.upper()}** (gate: --fail-on {r.fail_on.label}; "
        f"{gate} failed finding{'s' if gate != 1 else ''} at or above it).",
        "",
        f"Failed findings by severity: {counts}. "
        f"{sum(f.status == 'pass' for f in r.findings)} checks passed, "
        f"{sum(f.status == 'warn' for f in r.findings)} warned, "
        f"{sum(f.status == 'unverifiable' for f in r.findings)} could not be verified.",
        "",
    ]
    lines += [f"- {part}: {what}" for part, what in r.parts.items()]
    return lines


def render_markdown(r: Report) -> str:
    """The report as Markdown (charts referenced as files next to it)."""
    out = [
        "# distill-guard assessment",
        "",
        f"Generated {r.generated} by distill-guard {__version__}.",
        "",
    ]
    out += ["## Executive summary", "", *_summary_lines(r), ""]
    out += md_table(CONTROL_HEAD, _control_rows(r))
    if "controls.png" in r.charts:
        out += ["", "![per-control pass/fail](controls.png)"]
    out += ["", "## Findings", ""]
    failed = [f for f in r.findings if f.status != "pass"]
    for f in failed:
        c = f.check
        out += [f"### {c.id} [{c.severity.label}, {f.status}] {c.title}", ""]
        out += [f"Control {c.control} ({CONTROLS[c.control]}).", "", "Evidence:", ""]
        out += [f"- `{e}`" if "`" not in e else f"- {e}" for e in f.evidence]
        out += ["", "Fix:", "", "```", c.fix, "```", ""]
    if not failed:
        out += ["No failed, warned or unverifiable finding.", ""]
    out += ["## Passed checks", ""]
    out += md_table(PASSED_HEAD, _passed_rows(r))
    if r.exchanges:
        out += [
            "",
            "## Probes",
            "",
            f"{len(r.exchanges)} requests, {r.probe_bytes:,} bytes sent.",
            "",
        ]
        out += md_table(PROBE_HEAD, _probe_rows(r))
    if r.scenarios:
        out += ["", "## Campaign exercise", ""]
        out += md_table(CAMPAIGN_HEAD, [_campaign_cells(s) for s in r.scenarios])
        out += [""] + [
            f"![{s.scenario}: leakage over time](campaign-{s.scenario}.png)"
            for s in r.scenarios
            if f"campaign-{s.scenario}.png" in r.charts
        ]
    return "\n".join(out) + "\n"


# --- HTML ------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}pre{background:#f6f8fa;padding:.6em;
overflow-x:auto}.fail{color:#b00020;font-weight:600}.warn,.unverifiable{color:#a15c00}
.pass{color:#1b7f3b}.sev{display:inline-block;min-width:5.5em}.finding{border-left:4px solid #ccc;
padding:.2em 1em;margin:1em 0}.finding.critical,.finding.high{border-color:#b00020}
.finding.medium{border-color:#e08a00}.finding.low,.finding.info{border-color:#7a7a7a}
img{max-width:100%}
""".strip()


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(r: Report) -> str:
    """The report as one HTML file: inline CSS, charts as data: URIs, no external fetch."""
    summary = "".join(
        f"<p>{_e(line)}</p>" if not line.startswith("- ") else f"<li>{_e(line[2:])}</li>"
        for line in _summary_lines(r)
        if line
    ).replace("**", "")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>distill-guard assessment</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>distill-guard assessment</h1>",
        f"<p>Generated {_e(r.generated)} by distill-guard {_e(__version__)}.</p>",
        f'<h2>Executive summary</h2><p class="{r.verdict}">Verdict: {r.verdict.upper()}</p>',
        summary,
        html_table(CONTROL_HEAD, _control_rows(r), class_column=1),
    ]
    if "controls.png" in r.charts:
        parts.append(inline_png(r.charts["controls.png"], "per-control pass/fail"))
    parts.append("<h2>Findings</h2>")
    for f in (f for f in r.findings if f.status != "pass"):
        c = f.check
        evidence = "".join(f"<li><code>{_e(e)}</code></li>" for e in f.evidence)
        parts.append(
            f'<div class="finding {c.severity.label}"><h3>{_e(c.id)} '
            f'<span class="{f.status}">[{c.severity.label}, {f.status}]</span> {_e(c.title)}</h3>'
            f"<p>Control {c.control} ({_e(CONTROLS[c.control])}).</p>"
            f"<p>Evidence:</p><ul>{evidence}</ul><p>Fix:</p><pre>{_e(c.fix)}</pre></div>"
        )
    parts.append("<h2>Passed checks</h2>")
    parts.append(html_table(PASSED_HEAD, _passed_rows(r)))
    if r.exchanges:
        parts.append(
            f"<h2>Probes</h2><p>{len(r.exchanges)} requests, {r.probe_bytes:,} bytes sent.</p>"
        )
        parts.append(html_table(PROBE_HEAD, _probe_rows(r)))
    if r.scenarios:
        parts.append("<h2>Campaign exercise</h2>")
        parts.append(html_table(CAMPAIGN_HEAD, [_campaign_cells(s) for s in r.scenarios]))
        for s in r.scenarios:
            png = r.charts.get(f"campaign-{s.scenario}.png")
            if png is not None:
                parts.append(inline_png(png, f"{s.scenario}: leakage over time"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_json(r: Report) -> str:
    """The machine form as indented JSON."""
    return json.dumps(r.to_json(), indent=2) + "\n"
