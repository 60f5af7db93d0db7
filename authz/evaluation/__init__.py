"""Scoring a defence against a simulated distillation campaign (`distill-guard evaluate`).

The modules, in the order data flows through them:

    inputs    read the labels, the scenario and, line by line, the replayed decisions
    tally     keep running counts and per-account state while the decisions stream past
    figures   the finished figures (frozen dataclasses; the JSON is their `asdict`)
    markdown  the figures as a Markdown report
    chart     the figures as a PNG (matplotlib, an optional extra)

See docs/evaluate.md for the definitions behind every number.
"""

from __future__ import annotations

from pathlib import Path

from authz.evaluation.figures import Evaluation
from authz.evaluation.inputs import Problems, iter_decisions, read_labels, read_scenario
from authz.evaluation.tally import Evaluator

DAY = 86400.0


def evaluate(
    labels_path: Path,
    decisions_path: Path,
    scenario_path: Path | None = None,
    *,
    bucket_seconds: float = DAY,
) -> Evaluation:
    """Score one replay: read the labels, stream the decisions, return the figures.

    Raises ConfigError when a file cannot be read or the scenario is unusable;
    bad lines in the labels or decisions are skipped and reported in the result.
    """
    problems = Problems()
    labels = read_labels(labels_path, problems)
    scenario = read_scenario(scenario_path)
    evaluator = Evaluator(labels, scenario, bucket_seconds)
    for decision in iter_decisions(decisions_path, problems):
        evaluator.add(decision)
    return evaluator.finish(
        labels_path=str(labels_path),
        decisions_path=str(decisions_path),
        scenario_path=None if scenario_path is None else str(scenario_path),
        problems=problems,
    )


__all__ = ["DAY", "Evaluation", "evaluate"]
