"""simulate -> replay -> evaluate through the command line, as README shows it, small."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from authz.cli import main


def test_simulate_replay_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sim = tmp_path / "sim"
    assert (
        main(
            [
                *("simulate", "--out", str(sim), "--seed", "3", "--benign-accounts", "60"),
                *("--campaign-accounts", "12", "--days", "2", "--pivot-day", "1"),
            ]
        )
        == 0
    )
    decisions = sim / "decisions.jsonl"
    assert (
        main(
            [
                *("replay", str(sim / "traffic.jsonl"), "--out", str(decisions), "--quiet"),
                *("--rules", str(sim / "rules.yaml"), "--accounts", str(sim / "accounts.jsonl")),
                *("--geoip", "demo", "--summary", str(sim / "summary.json")),
            ]
        )
        == 0
    )
    traffic_lines = (sim / "traffic.jsonl").read_text().count("\n")
    summary = json.loads((sim / "summary.json").read_text())
    assert summary["requests"] == traffic_lines and summary["skipped_lines"] == 0
    rows = [json.loads(line) for line in decisions.read_text().splitlines()]
    labels = {
        json.loads(line)["account"]: json.loads(line)
        for line in (sim / "labels.jsonl").read_text().splitlines()
    }
    # Every simulated key is known: replay decides for a labelled account each time.
    assert all(r["account"] in labels for r in rows)
    capsys.readouterr()
    assert (
        main(
            [
                *("evaluate", "--labels", str(sim / "labels.jsonl"), str(decisions)),
                *("--scenario", str(sim / "scenario.json"), "--json", "--out", str(sim / "eval")),
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    campaign_requests = sum(1 for r in rows if labels[r["account"]]["class"] == "campaign")
    full = sum(
        1
        for r in rows
        if labels[r["account"]]["class"] == "campaign"
        and r["action"] == "allow"
        and r["exposure"] == "full"
    )
    total = report["campaigns_total"]
    assert total["requests"] == campaign_requests
    assert total["served_full"] == full
    assert (sim / "eval" / "evaluation.md").read_text().startswith("# distill-guard evaluation")
    assert (sim / "eval" / "evaluation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
