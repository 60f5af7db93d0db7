"""`distill-guard assess --campaign`: a tiny simulated campaign replayed against a deployment.

The weak rules (dry run, detection in shadow, full reasoning for unverified
accounts, no enterprise tier) must show the leakage and the missing tier; the
figures must be the ones `evaluate` computes from the same decisions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from authz.cli import main
from authz.evaluation import evaluate

ROOT = Path(__file__).resolve().parent.parent
WEAK_RULES = ROOT / "tests" / "fixtures" / "assess" / "weak" / "rules.yaml"
DEMO_RULES = ROOT / "authz" / "demo" / "rules.yaml"


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
    assert row["detection_seconds"] is None  # detection in shadow restricts nobody
    assert "detection restricted none of them" in found["DG-DT-201"]["evidence"][0]
    assert row["campaign_restricted_share"] == ev.campaigns_total.restricted_share
    page = (out / "assessment.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # per-control chart and the campaign's
    assert report["parts"]["campaign exercise"].startswith("ran: default")


def test_campaign_models_fit_the_tiers_and_detection_is_told_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the demo tiers no simulated request is denied for its model, and the first
    restriction by detection is reported apart from the first restriction of any kind."""
    out = tmp_path / "report"
    main(
        [
            "assess", "--rules", str(DEMO_RULES), "--campaign", "default",
            "--campaign-days", "1", "--campaign-benign", "40", "--campaign-accounts", "8",
            "--now", "2026-11-27T00:00:00Z", "--out", str(out), "--json",
        ]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    (row,) = report["campaign"]
    assert row["models_moved"] > 0  # free accounts asked for frontier-3, which free lacks
    assert row["models_unfit"] == 0
    work = out / "campaign" / "default"
    ev = evaluate(work / "labels.jsonl", work / "decisions.jsonl", work / "scenario.json")
    reasons = set(ev.campaigns_total.restricted_requests_by_reason)
    for benign in ev.benign_totals:
        reasons |= set(benign.restricted_requests_by_reason)
    assert "model_not_allowed" not in reasons
    assert row["detection_reason"] in {"ok", "extraction_denied"}
    assert row["first_restriction_seconds"] <= row["detection_seconds"]
    first = ev.campaigns_total.first_restriction_by_reason[row["detection_reason"]]
    assert row["detection_requests_before"] == first.requests_before


def test_campaign_is_unverifiable_when_no_tier_offers_a_simulated_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tiers offering none of the simulator's models leave the requests unfit, and the
    exercise's bars say unverifiable instead of judging a model list."""
    rules = yaml.safe_load(DEMO_RULES.read_text())
    for tier in rules["tiers"].values():
        tier["models"] = ["tiny-*"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    main(
        [
            "assess", "--rules", str(path), "--campaign", "default", "--no-analysis",
            "--campaign-days", "1", "--campaign-benign", "20", "--campaign-accounts", "4",
            "--now", "2026-11-27T00:00:00Z", "--json",
        ]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    (row,) = report["campaign"]
    assert row["models_moved"] == 0 and row["models_unfit"] > 0
    found = {f["id"]: f for f in report["findings"]}
    for check_id in ("DG-DT-201", "DG-DT-202", "DG-DT-203", "DG-DT-204"):
        assert found[check_id]["status"] == "unverifiable", found[check_id]
        assert (
            "most requests asked for a model their tier does not offer"
            in (found[check_id]["evidence"][0])
        )
