"""`distill-guard assess`: red-team a deployment and write a prioritized findings report.

Three parts, each optional: the configuration review (rules, keys, Envoy
bootstrap, serve settings), live probes through the deployment's Envoy, and
the campaign exercise (simulated campaigns replayed against its rules). See
docs/assess.md. Exit status: 0 when no failed finding reaches --fail-on, 1
when one does, 2 on a bad input.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from authz.assess import campaign, minting, probes
from authz.assess.charts import controls_chart
from authz.assess.checks_rules import denied_countries
from authz.assess.deployment import (
    Deployment,
    keys_from_file,
    keys_from_store,
    load_envoy,
    load_rules_part,
)
from authz.assess.findings import Finding, Severity
from authz.assess.report import Report, render_html, render_json, render_markdown
from authz.assess.review import review
from authz.assess.serveconf import load_serve_config
from authz.errors import ConfigError
from authz.geobuild import demo_csv_path, read_csv
from authz.rules import Rules
from authz.sim.knobs import PRESETS, parse_start

PROG = "distill-guard assess"


class Usage(Exception):
    """A bad combination of flags or values: exit 2 with the message."""


def _now(text: str | None) -> float:
    if text is None:
        return datetime.now(UTC).timestamp()
    try:
        return float(parse_start(text))
    except ValueError as exc:
        raise Usage(f"--now: {exc}") from None


def _load(ns: argparse.Namespace, now: float) -> Deployment:
    d = Deployment(now=now)
    if ns.rules:
        d.rules, d.rules_doc = load_rules_part(Path(ns.rules))
    if ns.accounts:
        d.keys = keys_from_file(Path(ns.accounts))
    elif ns.store:
        d.keys = keys_from_store(ns.store)
    if ns.envoy:
        d.envoy, d.envoy_doc = load_envoy(Path(ns.envoy))
    if ns.serve_config:
        d.serve = load_serve_config(Path(ns.serve_config))
    return d


def _parts(ns: argparse.Namespace, d: Deployment, skipped: list[str]) -> dict[str, str]:
    given = {
        "rules": ns.rules,
        "keys": ns.accounts or ns.store,
        "Envoy bootstrap": ns.envoy,
        "serve settings": ns.serve_config,
    }
    ran = [f"{name} ({value})" for name, value in given.items() if value]
    missing = [name for name, value in given.items() if not value]
    review_text = "ran on " + ", ".join(ran) if ran else "skipped: no configuration given"
    if ran and skipped:
        review_text += f"; {len(skipped)} checks skipped for want of: {', '.join(missing)}"
    parts = {"configuration review": review_text}
    if ns.target:
        parts["live probes"] = f"ran against {ns.target}"
        if ns.admin and not ns.unverified_key:
            parts["live probes"] += (
                f"; a fresh unverified account was minted through {ns.admin} and revoked after"
            )
    else:
        parts["live probes"] = "skipped: no --target"
    if ns.campaign:
        parts["campaign exercise"] = f"ran: {', '.join(ns.campaign)} (simulated, small scale)"
    elif d.rules is None:
        parts["campaign exercise"] = "skipped: no --campaign (and it needs --rules)"
    else:
        parts["campaign exercise"] = "skipped: no --campaign"
    return parts


def denied_address(rules: Rules | None) -> str | None:
    """An address (from the demo GeoIP data) in a country the rules deny by IP."""
    denied = denied_countries(rules, "ip_country") if rules is not None else set()
    for row in read_csv(demo_csv_path()):
        if row.country in denied and row.network.version == 4:
            return str(row.network.network_address + 1)
    return None


def _probe(ns: argparse.Namespace, d: Deployment) -> tuple[list[Finding], probes.Target]:
    if not ns.key:
        raise Usage("--target needs --key (an allowed test key)")
    if ns.admin and not ns.admin_token_file:
        raise Usage("--admin needs --admin-token-file")
    target = probes.Target(
        url=ns.target,
        key=ns.key,
        model=ns.model,
        path=ns.path,
        revoked_key=ns.revoked_key,
        unverified_key=ns.unverified_key,
        burst_key=ns.burst_key,
        xff_ip=ns.xff_ip or denied_address(d.rules),
        burst_max=ns.burst_max,
        rules=d.rules,
    )
    minted = None
    try:
        probes.preflight(target)
        if ns.admin and not ns.unverified_key:
            tier = ns.admin_tier or minting.unverified_tier(d.rules)
            # A live action: the key's expiry follows the real clock, not --now.
            minted = minting.mint(
                ns.admin,
                Path(ns.admin_token_file),
                tier=tier,
                country=ns.admin_country,
                now=time.time(),
            )
            target.unverified_key = minted.secret
            target.burst_key = target.burst_key or minted.secret
            print(
                f"{PROG}: minted unverified account {minted.account} (tier {tier}), "
                f"key {minted.key_id}; it is revoked when the probes end",
                file=sys.stderr,
            )
        return probes.run_probes(target), target
    except (probes.ProbeError, minting.MintError) as exc:
        raise Usage(str(exc)) from None
    finally:
        if minted is not None:
            try:
                minting.revoke(ns.admin, Path(ns.admin_token_file), minted.key_id)
            except minting.MintError as exc:
                print(f"{PROG}: {exc}; revoke key {minted.key_id} by hand", file=sys.stderr)


def _exercise(
    ns: argparse.Namespace, d: Deployment, work: Path
) -> tuple[list[Finding], list[campaign.ScenarioResult]]:
    if d.rules is None:
        raise Usage("--campaign needs --rules (the exercise replays against them)")
    scale = campaign.Scale(
        days=ns.campaign_days,
        benign_accounts=ns.campaign_benign,
        campaign_accounts=ns.campaign_accounts,
        analysis=not ns.no_analysis,
    )
    results = []
    for name in ns.campaign:
        try:
            knobs = campaign.knobs_for(name, scale)
        except ValueError as exc:
            raise Usage(f"--campaign: {exc}") from None
        where = work / "campaign" / name
        print(f"{PROG}: campaign exercise {name} ...", file=sys.stderr)
        results.append(
            campaign.run_scenario(Path(ns.rules), d.rules, knobs, where, analysis=scale.analysis)
        )
    return campaign.campaign_findings(d.rules, results), results


def _write(out: Path, report: Report) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "assessment.md").write_text(render_markdown(report), encoding="utf-8")
    (out / "assessment.html").write_text(render_html(report), encoding="utf-8")
    (out / "assessment.json").write_text(render_json(report), encoding="utf-8")
    for name, png in report.charts.items():
        (out / name).write_bytes(png)


def assess(ns: argparse.Namespace) -> Report:
    """Run the parts the flags ask for and build the report. Raises Usage or ConfigError."""
    fail_on = Severity.parse(ns.fail_on)
    now = _now(ns.now)
    d = _load(ns, now)
    findings, skipped = review(d)
    report_parts = _parts(ns, d, skipped)
    exchanges: list[probes.Exchange] = []
    sent = 0
    if ns.target:
        found, target = _probe(ns, d)
        findings += found
        exchanges, sent = target.exchanges, target.bytes_sent
        if target.lost is not None:
            report_parts["live probes"] += f"; cut short: {target.lost}, the rest unverifiable"
    scenarios: list[campaign.ScenarioResult] = []
    if ns.campaign:
        with tempfile.TemporaryDirectory(prefix="dg-assess-") as tmp:
            work = Path(ns.out) if ns.out else Path(tmp)
            found, scenarios = _exercise(ns, d, work)
        findings += found
    if not findings:
        raise Usage(
            "nothing to assess: give --rules, --accounts, --envoy, --serve-config or --target"
        )
    report = Report(
        generated=datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        fail_on=fail_on,
        parts=report_parts,
        findings=findings,
        exchanges=exchanges,
        probe_bytes=sent,
        scenarios=scenarios,
    )
    png = controls_chart(report.controls())
    if png is not None:
        report.charts["controls.png"] = png
    for s in scenarios:
        if s.chart is not None:
            report.charts[f"campaign-{s.scenario}.png"] = s.chart
    return report


def _run(ns: argparse.Namespace) -> int:
    try:
        report = assess(ns)
        if ns.out:
            _write(Path(ns.out), report)
    except (Usage, ConfigError, ValueError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"{PROG}: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}", file=sys.stderr
        )
        return 2
    sys.stdout.write(render_json(report) if ns.json else render_markdown(report))
    return 1 if report.gating else 0


def _scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PRESETS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(PRESETS)}, comma-separated"
        )
    return names


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `assess`."""
    p = sub.add_parser(
        "assess",
        help="red-team a deployment: configuration review, live probes, campaign exercise",
        description="Assess a distill-guard deployment against adversarial distillation and "
        "write a findings report ordered by severity (docs/assess.md). Every part is "
        "optional; the report says which ran.",
    )
    conf = p.add_argument_group("configuration review")
    conf.add_argument("--rules", help="the deployment's rules file")
    keys = conf.add_mutually_exclusive_group()
    keys.add_argument("--accounts", help="the accounts file (JSON lines or YAML)")
    keys.add_argument("--store", help="the Redis key registry, redis://HOST:PORT/DB")
    conf.add_argument("--envoy", metavar="BOOTSTRAP.yaml", help="the Envoy bootstrap")
    conf.add_argument(
        "--serve-config",
        metavar="FILE",
        help="how serve runs: a Kubernetes manifest (.yaml), an env file of "
        "DISTILL_GUARD_*/OTEL_* variables, or a file holding the serve command line",
    )
    live = p.add_argument_group("live probes (they send real requests)")
    live.add_argument("--target", metavar="URL", help="the deployment's Envoy, http://HOST:PORT")
    live.add_argument("--key", help="an allowed test key")
    live.add_argument("--revoked-key", help="a revoked key")
    live.add_argument("--unverified-key", help="a key of a fresh unverified account")
    live.add_argument("--burst-key", help="a key whose per-minute quota the burst probe may use up")
    live.add_argument(
        "--admin",
        metavar="HOST:PORT",
        help="the deployment's Admin API: without --unverified-key, mint a fresh unverified "
        "account for the elicitation (and burst) probes, revoked afterwards",
    )
    live.add_argument("--admin-token-file", metavar="FILE", help="the Admin API bearer token")
    live.add_argument(
        "--admin-tier", help="tier of the minted account (default: the first unverified tier)"
    )
    live.add_argument("--admin-country", default="US", help="its declared country [US]")
    live.add_argument("--model", default="small-1", help="model the probes ask for [small-1]")
    live.add_argument("--path", default="/v1/messages", help="path the probes call [/v1/messages]")
    live.add_argument(
        "--xff-ip", help="address to forge in X-Forwarded-For (default: one in a denied country)"
    )
    live.add_argument(
        "--burst-max", type=_positive, default=120, help="most requests of the burst [120]"
    )
    camp = p.add_argument_group("campaign exercise")
    camp.add_argument(
        "--campaign",
        nargs="?",
        const=["default"],
        type=_scenarios,
        metavar="SCENARIOS",
        help=f"simulated scenarios, comma-separated ({', '.join(PRESETS)}) [default]",
    )
    camp.add_argument("--campaign-days", type=_positive, default=2, help="simulated days [2]")
    camp.add_argument(
        "--campaign-benign", type=_positive, default=300, help="benign accounts [300]"
    )
    camp.add_argument(
        "--campaign-accounts", type=_positive, default=40, help="campaign accounts [40]"
    )
    camp.add_argument(
        "--no-analysis", action="store_true", help="request-path detection only (faster)"
    )
    out = p.add_argument_group("output")
    out.add_argument(
        "--out", metavar="DIR", help="write assessment.md, .html, .json and the charts here"
    )
    out.add_argument("--json", action="store_true", help="print the JSON form instead of Markdown")
    out.add_argument(
        "--fail-on",
        default="high",
        metavar="SEVERITY",
        help="exit 1 when a finding of this severity or above fails "
        "(critical, high, medium, low, info) [high]",
    )
    out.add_argument(
        "--now", metavar="TIME", help="the assessment's time, RFC 3339 UTC (default: now)"
    )
    p.set_defaults(func=_run)
