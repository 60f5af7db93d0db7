"""`distill-guard evaluate`: score a replay's decisions against the simulator's labels.

The figures come from authz.evaluation; this module is the command line only.
See docs/evaluate.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from authz.errors import ConfigError
from authz.evaluation import DAY, evaluate
from authz.evaluation.chart import draw
from authz.evaluation.figures import Evaluation
from authz.evaluation.markdown import render

PROG = "distill-guard evaluate"


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def to_json(ev: Evaluation) -> str:
    """The figures as one JSON object (what --json prints and evaluation.json holds)."""
    return json.dumps(asdict(ev), indent=2, allow_nan=False) + "\n"


def _warn_skipped(ev: Evaluation) -> None:
    """Say on stderr that lines were skipped, so it is not lost in a long report."""
    ln = ev.lines
    if not (ln.skipped or ln.label_lines_skipped):
        return
    print(
        f"{PROG}: skipped {ln.skipped:,} decision lines and {ln.label_lines_skipped:,} "
        "label lines (see 'Input problems' in the report); first:",
        file=sys.stderr,
    )
    for problem in ln.problems:
        print(f"  {problem}", file=sys.stderr)


def _write_out(ev: Evaluation, out: Path, text_json: str, text_md: str) -> None:
    (out / "evaluation.json").write_text(text_json, encoding="utf-8")
    (out / "evaluation.md").write_text(text_md, encoding="utf-8")
    png = out / "evaluation.png"
    skipped = draw(ev, png)
    if skipped is not None:
        print(f"{PROG}: {png} not written: {skipped}", file=sys.stderr)


def _run(ns: argparse.Namespace) -> int:
    out: Path | None = ns.out
    if out is not None:
        try:  # before the long read, so a bad --out fails at once
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"{PROG}: --out {out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    try:
        ev = evaluate(ns.labels, ns.decisions, ns.scenario, bucket_seconds=ns.bucket)
    except ConfigError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    _warn_skipped(ev)
    text_json = to_json(ev)
    text_md = render(ev)
    if out is not None:
        try:
            _write_out(ev, out, text_json, text_md)
        except OSError as exc:
            print(f"{PROG}: cannot write to {out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    sys.stdout.write(text_json if ns.json else text_md)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `evaluate`."""
    p = sub.add_parser(
        "evaluate",
        help="score replayed decisions against simulate's labels (leakage, detection, "
        "benign false positives)",
        description="Score the decisions of `distill-guard replay` against the labels of "
        "`distill-guard simulate`: campaign leakage and detection, benign restrictions per "
        "account-day, and both over simulated time. Markdown on stdout (JSON with --json).",
    )
    p.add_argument("decisions", type=Path, metavar="DECISIONS.jsonl", help="replay's output")
    p.add_argument(
        "--labels",
        type=Path,
        required=True,
        metavar="LABELS.jsonl",
        help="simulate's ground truth, one line per account",
    )
    p.add_argument(
        "--scenario",
        type=Path,
        metavar="FILE",
        help="simulate's scenario.json; with new_model and pivot_ts, also score the pivot",
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="also write DIR/evaluation.md, evaluation.json and evaluation.png",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    p.add_argument(
        "--bucket",
        type=_seconds,
        default=DAY,
        metavar="SECONDS",
        help=f"width of the time buckets, from the first decision [{DAY:g}]",
    )
    p.set_defaults(func=_run)
