"""`distill-guard evaluate`: figures checked by hand on a tiny replay, bad input, outputs, exits."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from authz import evaluate as evaluate_cli

D = 86400
T0 = 20565 * D  # 2026-04-22 00:00:00 UTC: buckets and UTC days line up
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def run(argv: list[str]) -> int:
    """Run the command as the CLI does: parse, then call the handler."""
    parser = argparse.ArgumentParser(prog="distill-guard")
    evaluate_cli.register(parser.add_subparsers(dest="command", required=True))
    ns = parser.parse_args(argv)
    return int(ns.func(ns))


def label(account: str, cls: str, group: str, hard_negative: bool = False) -> dict[str, Any]:
    """One line of simulate's labels file."""
    return {
        "account": account,
        "entity": f"e-{account}",
        "class": cls,
        "group": group,
        "hard_negative": hard_negative,
        "tier": "free",
        "kyc": "none",
        "opened": T0 - D,
        "banned": None,
        "replaces": None,
    }


def dec(
    i: int,
    ts: float,
    account: str | None,
    *,
    action: str = "allow",
    exposure: str | None = "full",
    restricted: bool = False,
    reason: str = "ok",
    rule: str | None = None,
    model: str = "frontier-2",
    cluster: str | None = None,
) -> str:
    """One line of replay's decisions file."""
    return json.dumps(
        {
            "i": i,
            "ts": ts,
            "account": account,
            "entity": None if account is None else f"e-{account}",
            "tier": "free",
            "model": model,
            "action": action,
            "status": 200 if action == "allow" else 403,
            "reason": reason,
            "rule": rule,
            "exposure": None if action == "deny" else exposure,
            "restricted": restricted,
            "headers": {},
            "signals": {} if cluster is None else {"cluster": cluster},
        }
    )


LABELS = [
    label("c1a", "campaign", "campaign-1"),
    label("c1b", "campaign", "campaign-1"),
    label("c1c", "campaign", "campaign-1"),
    label("c2a", "campaign", "campaign-2"),
    label("b1", "benign", "individual"),
    label("b2", "benign", "individual"),
    label("n1", "benign", "nat", hard_negative=True),
    label("r1", "benign", "researcher"),  # never sends a request
]
EXTRACT: dict[str, Any] = {
    "restricted": True,
    "exposure": "summary",
    "reason": "extraction_pattern",
}
DETECT: dict[str, Any] = {**EXTRACT, "rule": "detect:template"}
RATE: dict[str, Any] = {"action": "deny", "reason": "rate_limited", "rule": "limits:rpm"}
DECISIONS = [
    dec(1, T0 + 0, "c1a", cluster="k1"),  # leaked
    dec(2, T0 + 100, "c1b", cluster="k1"),  # leaked: k1 not restricted yet
    dec(3, T0 + 200, "b1"),
    dec(4, T0 + 300, "c1a", cluster="k1", **DETECT),  # campaign-1 detected; k1 restricted
    dec(5, T0 + 400, "c1b", cluster="k1"),  # full after restriction (its cluster)
    dec(6, T0 + 500, "c1c"),  # leaked: not yet known to be in k1
    dec(7, T0 + 600, "c1c", cluster="k1"),  # full after restriction (joins k1 on this line)
    dec(8, T0 + 700, "n1", **RATE),  # hard negative denied on day 0
    dec(9, T0 + 800, "c2a"),  # leaked
    "{oops",  # line 10: not JSON
    dec(11, T0 + 900, None, action="deny", reason="key_unknown"),  # unlabelled, no account
    dec(12, T0 + 1000, "ghost"),  # unlabelled, not in the labels
    json.dumps({"ts": T0 + 1100, "account": "b1"}),  # line 13: fields missing
    dec(14, T0 + D + 100, "b1", **EXTRACT),  # benign, soft restriction on day 1
    dec(15, T0 + D + 200, "b2"),
    dec(16, T0 + D + 250, "c2a", model="frontier-3"),  # leaked, after the pivot
    dec(
        17,
        T0 + D + 300,
        "c1b",
        action="deny",
        reason="country_denied",
        rule="jurisdiction:embargo",
        model="frontier-3",
    ),
    dec(18, T0 + D + 500, "n1"),
    dec(19, T0 + 2 * D, "c1c", model="frontier-3", **DETECT),
    dec(20, T0 + 2 * D + 100, "b1", **RATE),  # benign denied on day 2
]
SCENARIO = {"seed": 7, "new_model": "frontier-3", "pivot_ts": T0 + D}


def write_lines(path: Path, lines: Sequence[str | dict[str, Any]]) -> Path:
    """A JSON-lines file from strings (written as they are) or objects."""
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """The hand-built labels, decisions and scenario."""
    labels = write_lines(tmp_path / "labels.jsonl", LABELS)
    decisions = write_lines(tmp_path / "decisions.jsonl", DECISIONS)
    scenario = tmp_path / "scenario.json"
    scenario.write_text(json.dumps(SCENARIO), encoding="utf-8")
    return labels, decisions, scenario


def evaluate_json(
    capsys: pytest.CaptureFixture[str], labels: Path, decisions: Path, *extra: str
) -> dict[str, Any]:
    """Run with --json and parse stdout."""
    assert run(["evaluate", "--labels", str(labels), str(decisions), "--json", *extra]) == 0
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


@pytest.fixture
def figures(inputs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The JSON figures of the hand-built case, with the scenario."""
    labels, decisions, scenario = inputs
    return evaluate_json(capsys, labels, decisions, "--scenario", str(scenario))


def test_lines_are_accounted_for(figures: dict[str, Any], inputs: tuple[Path, ...]) -> None:
    """Every line is evaluated, unlabelled or skipped, and the skipped ones are named."""
    decisions = str(inputs[1])
    assert figures["lines"] == {
        "label_accounts": 8,
        "campaign_accounts": 4,
        "benign_accounts": 4,
        "label_lines_skipped": 0,
        "decision_lines": 20,
        "evaluated": 18,
        "skipped": 2,
        "unlabelled_no_account": 1,
        "unlabelled_unknown_account": 1,
        "unknown_accounts": 1,
        "unknown_account_first_lines": [12],
        "out_of_order": 0,
        "label_problems": {},
        "decision_problems": {"not_json": 1, "missing_field": 1},
        "problems": [
            f"{decisions}:10: not JSON (Expecting property name enclosed in double quotes "
            "at column 2)",
            f"{decisions}:13: missing 'action', 'exposure', 'restricted', 'reason'",
        ],
    }
    assert figures["start_ts"] == T0
    assert figures["end_ts"] == T0 + 2 * D + 100


def test_campaign_leakage_with_the_cluster_rule(figures: dict[str, Any]) -> None:
    """Full serves count as leakage until the account or a cluster it is known in is restricted.

    campaign-1 has 8 requests, 5 served in full: lines 1, 2 and 6 leak; lines 5
    and 7 come after cluster k1 was restricted at line 4 (c1c joins k1 on line 7,
    so its line 6 still leaks).
    """
    c1, c2 = figures["campaigns"]
    assert (c1["campaign"], c2["campaign"]) == ("campaign-1", "campaign-2")
    assert {k: c1[k] for k in list(c1)[:13]} == {
        "campaign": "campaign-1",
        "accounts": 3,
        "active_accounts": 3,
        "restricted_accounts": 3,
        "restricted_share": 1.0,
        "denied_accounts": 1,
        "denied_share": 1 / 3,
        "requests": 8,
        "served_full": 5,
        "leaked": 3,
        "leakage": 0.375,
        "full_after_restriction": 2,
        "full_after_restriction_share": 0.25,
    }
    assert c1["restricted_requests_by_reason"] == {"extraction_pattern": 2, "country_denied": 1}
    assert c1["denied_requests_by_reason"] == {"country_denied": 1}
    assert (c2["requests"], c2["served_full"], c2["leaked"], c2["leakage"]) == (2, 2, 2, 1.0)
    assert (c2["restricted_accounts"], c2["restricted_share"]) == (0, 0.0)
    total = figures["campaigns_total"]
    assert total["campaign"] == "all campaigns"
    assert (total["accounts"], total["restricted_accounts"], total["denied_accounts"]) == (4, 3, 1)
    assert (total["restricted_share"], total["denied_share"]) == (0.75, 0.25)
    assert (total["requests"], total["served_full"], total["leaked"]) == (10, 7, 5)
    assert (total["leakage"], total["full_after_restriction_share"]) == (0.5, 0.2)


def test_detection_time_and_requests(figures: dict[str, Any]) -> None:
    """Detection runs from the campaign's first request to its first restricted one."""
    c1, c2 = figures["campaigns"]
    assert c1["detection"] == {
        "start_ts": T0,
        "restricted_ts": T0 + 300,
        "seconds": 300,
        "requests_before": 2,
        "account": "c1a",
        "reason": "extraction_pattern",
        "rule": "detect:template",
    }
    by_reason = c1["first_restriction_by_reason"]
    assert list(by_reason) == ["extraction_pattern", "country_denied"]
    assert by_reason["country_denied"]["seconds"] == D + 300
    assert by_reason["country_denied"]["requests_before"] == 6
    assert c2["detection"] == {
        "start_ts": T0 + 800,
        "restricted_ts": None,
        "seconds": None,
        "requests_before": 2,
        "account": None,
        "reason": None,
        "rule": None,
    }
    assert (
        figures["campaigns_total"]["first_restriction_by_reason"]["country_denied"][
            "requests_before"
        ]
        == 8
    )
    # per account: c1a 300 s after 1 request, c1b D+200 s after 2, c1c 2D-500 s after 2
    spread = c1["time_to_restriction"]
    assert spread["accounts"] == 3
    assert spread["median_seconds"] == D + 200
    assert spread["p90_seconds"] == pytest.approx(D + 200 + 0.8 * (D - 700))
    assert (spread["median_requests"], spread["p90_requests"]) == (2, 2)
    assert c2["time_to_restriction"] == {
        "accounts": 0,
        "median_seconds": None,
        "p90_seconds": None,
        "median_requests": None,
        "p90_requests": None,
    }


def test_detection_after_the_pivot(figures: dict[str, Any]) -> None:
    """After pivot_ts only the campaign's requests on new_model count, timed from pivot_ts."""
    c1, c2 = figures["campaigns"]
    assert c1["pivot"] == {
        "new_model": "frontier-3",
        "pivot_ts": T0 + D,
        "requests": 2,
        "first_request_ts": T0 + D + 300,
        "served_full": 0,
        "leaked": 0,
        "leakage": 0.0,
        "full_after_restriction": 0,
        "detection": {
            "start_ts": T0 + D,
            "restricted_ts": T0 + D + 300,
            "seconds": 300,
            "requests_before": 0,
            "account": "c1b",
            "reason": "country_denied",
            "rule": "jurisdiction:embargo",
        },
    }
    assert (c2["pivot"]["requests"], c2["pivot"]["leakage"]) == (1, 1.0)
    assert c2["pivot"]["detection"]["restricted_ts"] is None
    total = figures["campaigns_total"]["pivot"]
    assert (total["requests"], total["leaked"], total["leakage"]) == (3, 1, 1 / 3)
    assert (total["detection"]["seconds"], total["detection"]["requests_before"]) == (300, 1)


def test_benign_rates_per_account_day(figures: dict[str, Any]) -> None:
    """Benign groups per account-day, the hard negative on its own line, then the totals."""
    rows = {b["name"]: b for b in figures["benign"] + figures["benign_totals"]}
    assert list(rows) == [
        "individual",
        "nat (hard negative)",
        "researcher",
        "all ordinary benign",
        "all hard negatives",
        "all benign",
    ]
    individual = rows["individual"]
    # b1: days 0 (clean), 1 (restricted), 2 (denied); b2: day 1 (clean)
    assert {k: individual[k] for k in list(individual)[:15]} == {
        "name": "individual",
        "group": "individual",
        "hard_negative": False,
        "accounts": 2,
        "active_accounts": 2,
        "requests": 4,
        "restricted_requests": 2,
        "denied_requests": 1,
        "account_days": 4,
        "restricted_account_days": 2,
        "restricted_rate": 0.5,
        "denied_account_days": 1,
        "denied_rate": 0.25,
        "restricted_accounts": 1,
        "denied_accounts": 1,
    }
    assert individual["restricted_requests_by_reason"] == {
        "extraction_pattern": 1,
        "rate_limited": 1,
    }
    nat = rows["nat (hard negative)"]
    assert (nat["hard_negative"], nat["account_days"], nat["restricted_account_days"]) == (
        True,
        2,
        1,
    )
    assert (nat["restricted_rate"], nat["denied_rate"]) == (0.5, 0.5)
    researcher = rows["researcher"]
    assert (researcher["accounts"], researcher["active_accounts"]) == (1, 0)
    assert (researcher["account_days"], researcher["restricted_rate"]) == (0, None)
    assert rows["all hard negatives"]["account_days"] == 2
    everyone = rows["all benign"]
    assert (everyone["accounts"], everyone["active_accounts"], everyone["account_days"]) == (
        4,
        3,
        6,
    )
    assert (everyone["restricted_rate"], everyone["denied_rate"]) == (0.5, 1 / 3)
    assert (everyone["restricted_accounts"], everyone["denied_accounts"]) == (2, 2)
    assert figures["reasons"] == [
        {
            "reason": "extraction_pattern",
            "campaign_restricted": 2,
            "campaign_denied": 0,
            "benign_restricted": 1,
            "benign_denied": 0,
            "hard_negative_restricted": 0,
            "hard_negative_denied": 0,
        },
        {
            "reason": "rate_limited",
            "campaign_restricted": 0,
            "campaign_denied": 0,
            "benign_restricted": 1,
            "benign_denied": 1,
            "hard_negative_restricted": 1,
            "hard_negative_denied": 1,
        },
        {
            "reason": "country_denied",
            "campaign_restricted": 1,
            "campaign_denied": 1,
            "benign_restricted": 0,
            "benign_denied": 0,
            "hard_negative_restricted": 0,
            "hard_negative_denied": 0,
        },
    ]


def rates(days: int, restricted: int, denied: int) -> dict[str, Any]:
    """A DayRates object as JSON."""
    return {
        "account_days": days,
        "restricted": restricted,
        "denied": denied,
        "restricted_rate": restricted / days if days else None,
        "denied_rate": denied / days if days else None,
    }


def test_series_by_day(figures: dict[str, Any]) -> None:
    """Daily buckets: campaign figures cumulative, benign rates within each bucket."""
    assert figures["bucket_seconds"] == D
    got = [
        (
            b["index"],
            b["start_ts"],
            b["end_day"],
            b["campaign_requests"],
            b["campaign_served_full"],
            b["campaign_leaked"],
            b["leakage"],
            b["served_full_share"],
            b["campaign_accounts"],
            b["campaign_accounts_restricted"],
            b["campaign_restricted_share"],
        )
        for b in figures["series"]
    ]
    assert got == [
        (0, T0, 1.0, 7, 6, 4, 4 / 7, 6 / 7, 4, 1, 0.25),
        (1, T0 + D, 2.0, 9, 7, 5, 5 / 9, 7 / 9, 4, 2, 0.5),
        (2, T0 + 2 * D, 3.0, 10, 7, 5, 0.5, 0.7, 4, 3, 0.75),
    ]
    assert [b["benign"] for b in figures["series"]] == [
        rates(1, 0, 0),
        rates(2, 1, 0),
        rates(1, 1, 1),
    ]
    assert [b["hard_negative"] for b in figures["series"]] == [
        rates(1, 1, 1),
        rates(1, 0, 0),
        rates(0, 0, 0),
    ]


def test_account_day_straddling_a_bucket_edge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """UTC days count account-days; a day cut by a bucket edge counts once in each bucket."""
    labels = write_lines(tmp_path / "l.jsonl", [label("b", "benign", "individual")])
    noon = T0 + D // 2  # the first decision, so buckets run noon to noon
    decisions = write_lines(
        tmp_path / "d.jsonl",
        [
            dec(1, noon, "b"),  # day 0, bucket 0
            dec(2, noon + 8 * 3600, "b", **EXTRACT),  # day 0, bucket 0
            dec(3, T0 + D + 3600, "b"),  # day 1, bucket 0
            dec(4, T0 + D + 13 * 3600, "b"),  # day 1, bucket 1
        ],
    )
    got = evaluate_json(capsys, labels, decisions)
    assert got["benign"][0]["account_days"] == 2
    assert got["benign"][0]["restricted_account_days"] == 1
    assert [b["benign"] for b in got["series"]] == [rates(2, 1, 0), rates(1, 0, 0)]
    assert got["campaigns"] == []


def test_bad_input_is_reported_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad label and decision lines are skipped with their line numbers, never a crash."""
    labels = write_lines(
        tmp_path / "labels.jsonl",
        [
            label("a", "campaign", "campaign-1"),
            "not json",
            {"account": "x", "class": "benign"},
            label("y", "robot", "individual"),
            label("a", "benign", "individual"),
            "",
            label("b", "benign", "ci", hard_negative=True),
        ],
    )
    decisions = tmp_path / "decisions.jsonl"
    decisions.write_bytes(
        "\n".join(
            [
                dec(1, T0 + 10, "a"),
                "[1, 2]",
                json.dumps({"ts": T0, "account": "a", "action": "deny"}),
                dec(4, T0 + 20, "a", action="maybe"),
                dec(5, T0 + 5, "b"),  # earlier than line 1: out of order
                dec(6, T0 + 30, "nobody"),
                "",
                dec(8, T0 + 40, "nobody"),
                json.dumps({**json.loads(dec(9, T0, "a")), "ts": "soon"}),
            ]
        ).encode()
        + b"\n\xff\xfe\n"
    )
    assert run(["evaluate", "--labels", str(labels), str(decisions), "--json"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    ln = got["lines"]
    assert (ln["label_accounts"], ln["label_lines_skipped"]) == (2, 4)
    assert ln["label_problems"] == {
        "not_json": 1,
        "missing_field": 1,
        "bad_value": 1,
        "duplicate_account": 1,
    }
    assert (ln["decision_lines"], ln["evaluated"], ln["skipped"]) == (9, 4, 5)
    assert ln["decision_problems"] == {
        "not_object": 1,
        "missing_field": 1,
        "bad_value": 2,
        "not_json": 1,
    }
    assert (ln["unlabelled_unknown_account"], ln["unknown_accounts"]) == (2, 1)
    assert ln["unknown_account_first_lines"] == [6, 8]
    assert ln["out_of_order"] == 1
    lab, decs = str(labels), str(decisions)
    assert ln["problems"] == [
        f"{lab}:2: not JSON (Expecting value at column 1)",
        f"{lab}:3: missing 'group'",
        f'{lab}:4: \'class\' must be "benign" or "campaign", not "robot"',
        f"{lab}:5: account 'a' is labelled twice; the first label counts",
        f"{decs}:2: not a JSON object (a list)",
        f"{decs}:3: missing 'exposure', 'restricted', 'reason'",
        f'{decs}:4: \'action\' must be "allow" or "deny", not "maybe"',
        f"{decs}:9: 'ts' must be a number (epoch seconds), not \"soon\"",
        f"{decs}:10: not UTF-8 (invalid start byte at byte 0)",
    ]
    err = captured.err
    assert "skipped 5 decision lines and 4 label lines" in err
    assert f"  {decs}:4: 'action' must be" in err
    # the label kept for "a" is the first one: a campaign account
    assert got["campaigns"][0]["requests"] == 1
    report = _markdown(labels, decisions, capsys)
    assert "## Input problems" in report
    assert f"{decs}:10: not UTF-8" in report
    assert "2 decisions from 1 account not in the labels (counted as unlabelled), lines 6, 8." in (
        report
    )


def _markdown(labels: Path, decisions: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert run(["evaluate", "--labels", str(labels), str(decisions)]) == 0
    return capsys.readouterr().out


def test_markdown_report(
    inputs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The Markdown names its inputs, states the definitions and shows the tables."""
    labels, decisions, scenario = inputs
    assert (
        run(["evaluate", "--labels", str(labels), str(decisions), "--scenario", str(scenario)]) == 0
    )
    report = capsys.readouterr().out
    assert report.startswith("# distill-guard evaluation\n")
    assert f"`{labels}`" in report and f"`{decisions}`" in report and f"`{scenario}`" in report
    for heading in (
        "## Definitions",
        "## Campaigns",
        "### Detection",
        "### After the pivot to `frontier-3` at 2026-04-23 00:00:00Z",
        "## Benign accounts",
        "## Restricted and denied requests by reason",
        "## Over simulated time",
    ):
        assert f"\n{heading}\n" in report
    assert "| campaign-1 | 3 (3) | 3 (100%) | 1 (33.3%) | 8 | 5 | 37.5% (3) | 2 (25%) |" in report
    assert (
        "| nat (hard negative) | 1 (1) | 2 | 1 | 0.5 | 1 | 0.5 | 1 | 1 | rate_limited 1 |" in report
    )
    assert "| 0-1 | 7 | 57.1% | 85.7% | 1 / 4 (25%) | 1 | 0 | 0 | 1 | 1 | 1 |" in report


def test_json_matches_out_files(
    inputs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints the same object --out writes to evaluation.json, beside evaluation.md."""
    labels, decisions, _ = inputs
    out = tmp_path / "out" / "run1"
    args = ["evaluate", "--labels", str(labels), str(decisions), "--out", str(out)]
    assert run([*args, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((out / "evaluation.json").read_text()) == printed
    assert (out / "evaluation.md").read_text().startswith("# distill-guard evaluation\n")
    assert printed["pivot_ts"] is None and printed["campaigns"][0]["pivot"] is None


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib (the sim extra) is not installed")
def test_png_is_written_and_stable(
    inputs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With matplotlib the chart is a PNG, byte for byte the same on a second run."""
    labels, decisions, _ = inputs
    pngs = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run(["evaluate", "--labels", str(labels), str(decisions), "--out", str(out)]) == 0
        pngs.append((out / "evaluation.png").read_bytes())
    assert pngs[0].startswith(PNG_MAGIC)
    assert pngs[0] == pngs[1]
    assert "not written" not in capsys.readouterr().err


def test_png_skipped_without_matplotlib(
    inputs: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without matplotlib the PNG is skipped with a message; the rest is written, exit 0."""
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    labels, decisions, _ = inputs
    out = tmp_path / "out"
    assert run(["evaluate", "--labels", str(labels), str(decisions), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("# distill-guard evaluation\n")
    assert f"{out / 'evaluation.png'} not written: matplotlib is not installed" in captured.err
    assert "pip install 'distill-guard[sim]'" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["evaluation.json", "evaluation.md"]


def test_exit_codes(
    inputs: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or unusable input file is a clear error and exit 2; so are bad arguments."""
    labels, decisions, _ = inputs
    missing = tmp_path / "nope.jsonl"
    assert run(["evaluate", "--labels", str(missing), str(decisions)]) == 2
    assert capsys.readouterr().err == (
        f"distill-guard evaluate: {missing}: cannot read: No such file or directory\n"
    )
    assert run(["evaluate", "--labels", str(labels), str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"distill-guard evaluate: {missing}: cannot read: No such file or directory\n"
    )
    assert (
        run(["evaluate", "--labels", str(labels), str(decisions), "--scenario", str(missing)]) == 2
    )
    assert "cannot read" in capsys.readouterr().err
    bad = tmp_path / "scenario.json"
    bad.write_text('{"pivot_ts": "tomorrow", "new_model": "m"}')
    assert run(["evaluate", "--labels", str(labels), str(decisions), "--scenario", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"distill-guard evaluate: {bad}: pivot_ts: must be a number (epoch seconds)\n"
    )
    for argv in (
        ["evaluate", str(decisions)],
        ["evaluate", "--labels", str(labels), str(decisions), "--bucket", "0"],
        ["evaluate", "--labels", str(labels), str(decisions), "--bucket", "day"],
    ):
        with pytest.raises(SystemExit) as exc:
            run(argv)
        assert exc.value.code == 2
    assert "--bucket: must be a positive number of seconds: '0'" in capsys.readouterr().err


def test_registered_in_the_cli(
    inputs: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`distill-guard evaluate` reaches this command through the real entry point."""
    from authz.cli import main

    labels, decisions, _ = inputs
    assert main(["evaluate", "--labels", str(labels), str(decisions), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["campaigns_total"]["leakage"] == 0.5
