"""`distill-guard simulate`: write a simulated scenario (accounts, traffic, labels) to DIR."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from authz.sim.knobs import PRESETS, VOCABULARIES, Knobs, parse_start, resolve

_D = Knobs()  # the defaults, quoted in --help


def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is not from {low:g} to {high:g}")
        return value

    return parse


def _start(text: str) -> str:
    try:
        parse_start(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _vocabulary(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in VOCABULARIES]
    if not names or unknown:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give one or more of {', '.join(VOCABULARIES)}, comma-separated"
        )
    return names


_KNOBS: list[tuple[str, Callable[[str], Any], str, str]] = [
    # flag, parser, metavar, help (the default is appended)
    ("--start", _start, "TIME", "first simulated instant, RFC 3339 UTC"),
    ("--days", _number(int, 1, 366), "N", "simulated days"),
    (
        "--benign-accounts",
        _number(int, 0, 1_000_000),
        "N",
        "benign accounts: individuals, NAT groups, CI jobs and researchers",
    ),
    (
        "--campaign-accounts",
        _number(int, 0, 1_000_000),
        "N",
        "campaign accounts over all campaigns, not counting replacements of banned ones",
    ),
    ("--campaigns", _number(int, 0, 100), "N", "independent campaigns (0: benign traffic only)"),
    (
        "--farmed-verified",
        _number(float, 0, 1),
        "F",
        "share of campaign accounts verified on the pro tier through a farmed KYC path",
    ),
    (
        "--per-account-daily",
        _number(float, 0, 10_000),
        "F",
        "requests per campaign account per UTC day, on average",
    ),
    (
        "--daily-cap",
        _number(int, 1, 10_000),
        "N",
        "most requests a campaign account sends in one UTC day",
    ),
    ("--proxies", _number(int, 1, 1_000_000), "N", "proxy addresses in each campaign's pool"),
    (
        "--timing-jitter",
        _number(float, 0, 1),
        "F",
        "0: a perfectly regular load-balancer schedule; 1: irregular and human-shaped",
    ),
    (
        "--paraphrase",
        _number(float, 0, 1),
        "F",
        "share of campaign template sentences reworded per request",
    ),
    (
        "--cover-traffic",
        _number(float, 0, 1),
        "F",
        "share of campaign requests that are ordinary, benign-looking prompts",
    ),
    (
        "--vocabulary",
        _vocabulary,
        "NAMES",
        f"phrase banks of campaign templates, one per campaign in turn ({', '.join(VOCABULARIES)})",
    ),
    ("--new-model", str, "MODEL", "the model released during the period"),
    (
        "--pivot-day",
        _number(int, 0, 10_000),
        "N",
        "day (0 = the first) on whose 17:00 UTC the new model is released",
    ),
    (
        "--ban-rate",
        _number(float, 0, 1),
        "F",
        "chance per campaign account per day of being banned (a replacement follows)",
    ),
    (
        "--replace-hours",
        _number(float, 0, 720),
        "H",
        "hours, on average, from a ban to the replacement account's sign-up",
    ),
]


def _default(flag: str) -> str:
    value = getattr(_D, flag[2:].replace("-", "_"))
    return ",".join(value) if isinstance(value, tuple) else str(value)


def _run(ns: argparse.Namespace) -> int:
    explicit = {
        flag[2:].replace("-", "_"): getattr(ns, flag[2:].replace("-", "_"))
        for flag, *_ in _KNOBS
        if getattr(ns, flag[2:].replace("-", "_")) is not None
    }
    if ns.seed is not None:
        explicit["seed"] = ns.seed
    try:
        knobs = resolve(ns.scenario, explicit)
    except ValueError as exc:
        print(f"distill-guard simulate: {exc}", file=sys.stderr)
        return 2
    from authz.sim.run import simulate  # the generator's imports are only needed here

    began = time.perf_counter()
    try:
        result = simulate(knobs, Path(ns.out))
    except OSError as exc:
        print(f"distill-guard simulate: cannot write {ns.out}: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"distill-guard simulate: {exc}", file=sys.stderr)
        return 2
    took = time.perf_counter() - began
    reqs, accts = result.counts["requests"], result.counts["accounts"]
    print(
        f"wrote {ns.out}: {result.accounts} accounts ({accts['benign']['total']} benign, "
        f"{accts['campaign']['total']} campaign), {result.requests} requests "
        f"({reqs['benign']['total']} benign, {reqs['campaign']['total']} campaign) in {took:.1f} s"
    )
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `simulate`."""
    p = sub.add_parser(
        "simulate",
        help="generate a simulated scenario: benign users and distillation campaigns",
        description=(
            "Write accounts.jsonl, traffic.jsonl, labels.jsonl, scenario.json and rules.yaml "
            "into DIR: a seeded simulation of benign users and distillation campaigns "
            "(docs/simulate.md). The same seed and knobs give byte-identical files. Knobs "
            "start from the --scenario preset; knobs given explicitly override it."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write (created)")
    p.add_argument(
        "--seed", type=_number(int, 0, 2**63), default=None, help=f"random seed (default {_D.seed})"
    )
    presets = "; ".join(
        f"{name}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults")
        for name, values in PRESETS.items()
    )
    p.add_argument(
        "--scenario", choices=list(PRESETS), default="default", help=f"named preset ({presets})"
    )
    for flag, parse, metavar, text in _KNOBS:
        p.add_argument(
            flag,
            type=parse,
            metavar=metavar,
            default=None,
            help=f"{text} (default {_default(flag)})",
        )
    p.set_defaults(func=_run)
