"""Request-path thresholds from a benign baseline: `python -m authz.detect.calibrate`.

Replay a population with no campaign in it (`distill-guard simulate --scenario
benign-only --seed N`, or recorded traffic known to be clean), then run this
over its decisions. Every request's score is recomputed from the signals the
decision recorded, with the rules' weights and the same `assess_risk` the
pipeline runs; each account-day keeps its highest score, and the thresholds
are set at the quantiles that leave at most `--restrict-rate` (and
`--watch-rate`) of benign account-days restricted (watched), plus a margin.
Nothing here looks at campaign traffic: thresholds chosen on the campaign a
defence is measured against would measure nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from authz.accounts import Kyc, load_accounts_file
from authz.detect.features import Elicitation, RequestFeatures
from authz.detect.risk import assess_risk
from authz.detect.rules import DetectionRules
from authz.metering.result import Sighted, Timing
from authz.rules import load_rules

DAY = 86400


def _sighted(signals: dict[str, Any]) -> Sighted:
    pools = signals.get("pools") or {}
    gaps, cv = signals.get("gaps"), signals.get("cv")
    timing = None
    if isinstance(gaps, int):
        # Timing with the recorded coefficient of variation (mean 1, so m2 = cv^2 (n-1)).
        m2 = (cv or 0.0) ** 2 * max(gaps - 1, 0)
        timing = Timing(gaps, 1.0 if cv is not None else 0.0, m2, 0)
    return Sighted(tuple(pools.items()), timing, None)


def account_day_scores(
    decisions: Path, rules: DetectionRules, kyc: dict[str, Kyc]
) -> dict[tuple[str, int], float]:
    """The highest request score of each account-day (requests without features skipped)."""
    best: dict[tuple[str, int], float] = defaultdict(float)
    with decisions.open(encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            signals = row.get("signals") or {}
            account, tier = row.get("account"), row.get("tier")
            if not account or not tier or "elicitation" not in signals:
                continue
            features = RequestFeatures(elicitation=Elicitation(score=signals["elicitation"]))
            a = assess_risk(
                rules,
                tier=tier,
                kyc=kyc.get(account, Kyc.UNVERIFIED),
                features=features,
                sighted=_sighted(signals),
            )
            key = (account, int(row["ts"] // DAY))
            best[key] = max(best[key], a.score)
    return best


def threshold(scores: list[float], rate: float, margin: float) -> float:
    """The score above which at most `rate` of the values lie, plus `margin` (at most 1)."""
    if not scores:
        return 1.0
    ordered = sorted(scores)
    index = min(len(ordered) - 1, max(0, math.ceil((1 - rate) * len(ordered)) - 1))
    return min(1.0, round(ordered[index] + margin, 3))


def main(argv: list[str] | None = None) -> int:
    """Print the benign score distribution and the thresholds it implies, as JSON."""
    p = argparse.ArgumentParser(prog="python -m authz.detect.calibrate", description=__doc__)
    p.add_argument("decisions", type=Path, help="decisions of a benign-only replay")
    p.add_argument("--rules", type=Path, required=True, help="rules whose weights to use")
    p.add_argument("--accounts", type=Path, required=True, help="the replay's accounts file")
    p.add_argument("--restrict-rate", type=float, default=0.001)
    p.add_argument("--watch-rate", type=float, default=0.02)
    p.add_argument("--margin", type=float, default=0.05)
    ns = p.parse_args(argv)
    rules = load_rules(ns.rules).detection
    kyc = {e.account: e.kyc for e in load_accounts_file(ns.accounts)}
    scores = list(account_day_scores(ns.decisions, rules, kyc).values())
    quantiles = {f"p{q}": threshold(scores, 1 - q / 100, 0.0) for q in (50, 90, 99, 99.9, 99.99)}
    result = {
        "account_days": len(scores),
        "score_quantiles": quantiles,
        "max": round(max(scores, default=0.0), 4),
        "thresholds": {
            "watch": threshold(scores, ns.watch_rate, ns.margin),
            "restrict": threshold(scores, ns.restrict_rate, ns.margin),
        },
        "in_rules": rules.thresholds.model_dump(),
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
