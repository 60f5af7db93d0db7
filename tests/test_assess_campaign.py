"""`distill-guard assess --campaign`: a tiny simulated campaign replayed against a deployment.

The weak rules (dry run, detection in shadow, full reasoning for unverified
accounts, no enterprise tier) must show the leakage and the missing tier; the
figures must be the ones `evaluate` computes from the same decisions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.cli import main
from authz.evaluation import evaluate

WEAK_RULES = Path(__file__).resolve().parent / "fixtures" / "assess" / "weak" / "rules.yaml"


def test_campaign_exercise_on_weak_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Weak rules leak the campaign; figures match evaluate's; the HTML embeds the chart."""
    out = tmp_path / "report"
    status = main(
        [
            "assess", "--rules", str(WEAK_RULES), "--campaign", "default",
            "--campaign-days", "1", "--campaign-benign", "40", "--campaign-accounts", "8",
            "--now", "2026-11-27T00:00:00Z", "--out", str(out), "--json",
        ]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert status == 1
    found = {f["id"]: f for f in report["findings"]}
    assert found["DG-DT-200"]["status"] == "fail"
    assert "enterprise" in found["DG-DT-200"]["evidence"][0]
    assert found["DG-DT-201"]["status"] == "fail"  # dry run restricts nobody
    assert found["DG-DT-202"]["status"] == "fail"  # unverified accounts get full reasoning
    (row,) = report["campaign"]
    work = out / "campaign" / "default"
    ev = evaluate(work / "labels.jsonl", work / "decisions.jsonl", work / "scenario.json")
    assert row["leakage"] == ev.campaigns_total.leakage
    assert row["leakage"] > 0.02
    assert row["campaign_restricted_share"] == ev.campaigns_total.restricted_share
    page = (out / "assessment.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # per-control chart and the campaign's
    assert report["parts"]["campaign exercise"].startswith("ran: default")
