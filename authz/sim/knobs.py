"""The simulator's knobs, their defaults, and the named presets (`--scenario`).

A run's knobs are the defaults, then the preset's values, then whatever was
given explicitly on the command line, in that order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_START = "2026-04-22T00:00:00Z"
VOCABULARIES = ("en-plain", "en-formal", "es")  # see banks.py
DAY = 86400


@dataclass(frozen=True, slots=True)
class Knobs:
    """Everything a run depends on besides the code: same knobs, same bytes."""

    seed: int = 1
    scenario: str = "default"
    start: str = DEFAULT_START
    days: int = 14
    benign_accounts: int = 5000
    campaign_accounts: int = 500
    campaigns: int = 1
    farmed_verified: float = 0.3
    per_account_daily: float = 25.0
    daily_cap: int = 25
    proxies: int = 300
    timing_jitter: float = 0.1
    paraphrase: float = 0.0
    cover_traffic: float = 0.0
    vocabulary: tuple[str, ...] = ("en-plain",)
    new_model: str = "frontier-4"
    pivot_day: int = 8
    ban_rate: float = 0.03
    replace_hours: float = 4.0

    @property
    def start_epoch(self) -> int:
        """`start` as epoch seconds."""
        return parse_start(self.start)

    @property
    def end_epoch(self) -> int:
        """The end of the simulated period (exclusive)."""
        return self.start_epoch + self.days * DAY

    def as_dict(self) -> dict[str, Any]:
        """The knobs as JSON-ready values."""
        out = dataclasses.asdict(self)
        out["vocabulary"] = list(self.vocabulary)
        return out


_DEFAULTS = Knobs()
PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "paraphrased": {"paraphrase": 0.7},
    "jittered": {"timing_jitter": 0.9},
    "proxies5x": {"proxies": 5 * _DEFAULTS.proxies},
    "low-and-slow": {
        "per_account_daily": 5.0,
        "campaign_accounts": 5 * _DEFAULTS.campaign_accounts,
    },
    "cover30": {"cover_traffic": 0.3},
    "benign-only": {"campaigns": 0},
}


def parse_start(text: str) -> int:
    """An RFC 3339 UTC time (`2026-04-22T00:00:00Z`) as whole epoch seconds."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time like {DEFAULT_START}") from None
    if when.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (add Z for UTC)")
    return int(when.astimezone(UTC).timestamp())


def resolve(scenario: str, explicit: dict[str, Any]) -> Knobs:
    """Defaults, then the preset, then explicit values; ValueError on a bad combination."""
    if scenario not in PRESETS:
        raise ValueError(f"unknown scenario {scenario!r} (known: {', '.join(PRESETS)})")
    values: dict[str, Any] = {**PRESETS[scenario], **explicit, "scenario": scenario}
    knobs = Knobs(**values)
    check(knobs)
    return knobs


def check(k: Knobs) -> None:
    """Raise ValueError naming the first knob out of range."""
    parse_start(k.start)
    limits: list[tuple[str, float, float, float]] = [
        ("days", k.days, 1, 366),
        ("benign_accounts", k.benign_accounts, 0, 1_000_000),
        ("campaign_accounts", k.campaign_accounts, 0, 1_000_000),
        ("campaigns", k.campaigns, 0, 100),
        ("farmed_verified", k.farmed_verified, 0, 1),
        ("per_account_daily", k.per_account_daily, 0, 10_000),
        ("daily_cap", k.daily_cap, 1, 10_000),
        ("proxies", k.proxies, 1, 1_000_000),
        ("timing_jitter", k.timing_jitter, 0, 1),
        ("paraphrase", k.paraphrase, 0, 1),
        ("cover_traffic", k.cover_traffic, 0, 1),
        ("pivot_day", k.pivot_day, 0, 10_000),
        ("ban_rate", k.ban_rate, 0, 1),
        ("replace_hours", k.replace_hours, 0, 24 * 30),
    ]
    for name, value, low, high in limits:
        if not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} must be from {low:g} to {high:g}")
    if k.campaigns > 0 and k.campaign_accounts < k.campaigns:
        raise ValueError("--campaign-accounts must be at least --campaigns")
    if not k.vocabulary:
        raise ValueError("--vocabulary needs at least one name")
    for name in k.vocabulary:
        if name not in VOCABULARIES:
            raise ValueError(f"unknown vocabulary {name!r} (known: {', '.join(VOCABULARIES)})")
    if not k.new_model or k.new_model in {"small-2", "frontier-3"}:
        raise ValueError("--new-model must name a model other than small-2 and frontier-3")
