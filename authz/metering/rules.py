"""The `limits:` section of a tier: parsed strictly, compiled once into frozen values.

The lead's `TierRules` gains `limits: LimitRules = LimitRules()`; `compile_limits`
turns it into the `CompiledLimits` the plan builder reads on every request.
See docs/limits.md for the YAML shape and what each setting means.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, field_validator

from authz.schema import StrictModel

Kind = Literal["requests", "tokens"]
Scope = Literal["account", "entity"]
Action = Literal["record", "throttle", "deny"]

_WINDOW = re.compile(r"^([1-9][0-9]{0,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW = 31 * 86400
MAX_LIMIT = 10**12
_MODEL_GLOB = re.compile(r"^[A-Za-z0-9._:/@+*?!\[\]-]{1,128}$")

Quota = Annotated[int, Field(strict=True, ge=1, le=MAX_LIMIT)]


def window_seconds(text: str) -> int:
    """Seconds in a window written `<n>s`, `<n>m`, `<n>h` or `<n>d`. Raises ValueError."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(
            f"window {text!r} must be a whole number and a unit s, m, h or d (e.g. 1m, 6h, 1d)"
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_WINDOW:
        raise ValueError(f"window {text!r} is longer than 31d")
    return seconds


def window_label(seconds: int) -> str:
    """The shortest spelling of a window (86400 -> `1d`, 90 -> `90s`)."""
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _check_windows(limits: dict[str, int]) -> dict[str, int]:
    seen: dict[int, str] = {}
    for text in limits:
        seconds = window_seconds(text)
        if seconds in seen:
            raise ValueError(f"windows {seen[seconds]!r} and {text!r} are the same length")
        seen[seconds] = text
    return limits


class ScopeLimits(StrictModel):
    """Limits of one scope (the account, or the entity that pools its accounts)."""

    requests: dict[str, Quota] = Field(
        default_factory=dict,
        description="Maximum requests per window, several windows at once, e.g. "
        "{1m: 20, 1h: 300, 1d: 2000}. A window is a whole number and a unit s, m, h or d "
        "(1s to 31d).",
    )
    tokens: dict[str, Quota] = Field(
        default_factory=dict,
        description="Maximum estimated tokens (input + requested output) per window, "
        "e.g. {1d: 2000000}. Same window syntax as `requests`.",
    )

    @field_validator("requests", "tokens")
    @classmethod
    def _windows(cls, limits: dict[str, int]) -> dict[str, int]:
        return _check_windows(limits)


class ModelLimits(StrictModel):
    """Extra limits for requests naming a model that matches one glob pattern."""

    account: ScopeLimits = Field(
        default_factory=ScopeLimits, description="Per-account limits for these models."
    )
    entity: ScopeLimits = Field(
        default_factory=ScopeLimits, description="Per-entity limits for these models."
    )


class TokenEstimateRules(StrictModel):
    """How the estimated token cost of a request is computed (see docs/limits.md)."""

    default_output: int = Field(
        default=4096,
        ge=0,
        le=10_000_000,
        description="Output tokens charged when a generation request sets no output cap "
        "(max_tokens, max_completion_tokens, max_output_tokens).",
    )


class AnomalyRules(StrictModel):
    """Volume-spike signals: this hour's request count against an hourly EWMA baseline."""

    z_score: float = Field(
        default=4.0,
        ge=0,
        description="Fire when (count - baseline) / sqrt(max(variance, baseline)) reaches this.",
    )
    multiple: float = Field(
        default=5.0,
        ge=0,
        description="...and when count / baseline reaches this (both must hold).",
    )
    min_baseline: float = Field(
        default=50.0,
        gt=0,
        description="Floor of the baseline (requests per hour), so quiet and new accounts "
        "only fire on absolute volume.",
    )
    smoothing: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="EWMA weight of the most recent completed hour (alpha).",
    )
    action: Action = Field(
        default="record",
        description="`record`: report the signal only; `throttle`: while it fires, every "
        "limit of that scope is multiplied by `throttle_factor`; `deny`: refuse that "
        "scope's requests until the hour ends.",
    )
    throttle_factor: float = Field(
        default=0.25,
        gt=0,
        lt=1,
        description="Multiplier applied to the scope's limits under `throttle` "
        "(rounded down, at least 1).",
    )


class LimitRules(StrictModel):
    """Rate limits, token budgets and volume-anomaly settings of one tier."""

    account: ScopeLimits = Field(
        default_factory=ScopeLimits, description="Limits for each account of the tier."
    )
    entity: ScopeLimits = Field(
        default_factory=ScopeLimits,
        description="Limits shared by all accounts of one entity (organisation).",
    )
    models: dict[str, ModelLimits] = Field(
        default_factory=dict,
        description="Extra limits by model glob pattern; every pattern that matches the "
        "request's model applies, on top of the limits above.",
    )
    token_estimate: TokenEstimateRules = Field(
        default_factory=TokenEstimateRules,
        description="How a request's token cost is estimated.",
    )
    anomaly: AnomalyRules | None = Field(
        default=None, description="Volume-spike detection; off when absent."
    )
    on_store_failure: Literal["fail_open", "fail_closed"] = Field(
        default="fail_closed",
        description="When the counter store is unreachable: `fail_closed` refuses requests "
        "(503 dependency_failed); `fail_open` counts in this replica's memory with "
        "limits scaled by `fail_open_fraction`.",
    )
    fail_open_fraction: float = Field(
        default=0.1,
        gt=0,
        le=1,
        description="Under fail_open, each replica allows this fraction of every limit "
        "(rounded down, at least 1). N replicas together allow up to N times that.",
    )
    headers: Literal["none", "remaining"] = Field(
        default="none",
        description="`remaining`: allowed responses carry RateLimit-Policy and RateLimit "
        "headers. A 429 always carries them.",
    )

    @field_validator("models")
    @classmethod
    def _model_globs(cls, models: dict[str, ModelLimits]) -> dict[str, ModelLimits]:
        for pattern in models:
            if not _MODEL_GLOB.match(pattern):
                raise ValueError(f"model pattern {pattern!r} has characters a model name cannot")
        return models


# --- compiled form --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """One quota: at most `limit` units of `kind` per `window` seconds."""

    kind: Kind
    window: int
    limit: int

    @property
    def label(self) -> str:
        """The window as written in policy names (`1m`, `1d`)."""
        return window_label(self.window)


@dataclass(frozen=True, slots=True)
class ModelRule:
    """Limits that apply when the request's model matches `pattern`."""

    pattern: str
    regex: re.Pattern[str]
    account: tuple[WindowLimit, ...]
    entity: tuple[WindowLimit, ...]


@dataclass(frozen=True, slots=True)
class AnomalySettings:
    """Compiled `anomaly:` settings."""

    z_score: float
    multiple: float
    min_baseline: float
    smoothing: float
    action: Action
    throttle_factor: float


@dataclass(frozen=True, slots=True)
class CompiledLimits:
    """A tier's limits as the plan builder reads them."""

    account: tuple[WindowLimit, ...] = ()
    entity: tuple[WindowLimit, ...] = ()
    models: tuple[ModelRule, ...] = ()
    anomaly: AnomalySettings | None = None
    on_store_failure: Literal["fail_open", "fail_closed"] = "fail_closed"
    fail_open_fraction: float = 0.1
    headers_remaining: bool = False
    default_output_tokens: int = 4096

    @property
    def empty(self) -> bool:
        """Whether there is nothing to count (the meter phase can be skipped)."""
        return not (self.account or self.entity or self.models or self.anomaly)


def _window_limits(scope: ScopeLimits) -> tuple[WindowLimit, ...]:
    out = [WindowLimit("requests", window_seconds(w), n) for w, n in scope.requests.items()]
    out += [WindowLimit("tokens", window_seconds(w), n) for w, n in scope.tokens.items()]
    return tuple(sorted(out, key=lambda w: (w.kind != "requests", w.window)))


def compile_limits(rules: LimitRules) -> CompiledLimits:
    """Compile a validated `limits:` section."""
    anomaly = rules.anomaly
    return CompiledLimits(
        account=_window_limits(rules.account),
        entity=_window_limits(rules.entity),
        models=tuple(
            ModelRule(
                pattern=pattern,
                regex=re.compile(fnmatch.translate(pattern)),
                account=_window_limits(m.account),
                entity=_window_limits(m.entity),
            )
            for pattern, m in rules.models.items()
        ),
        anomaly=None
        if anomaly is None
        else AnomalySettings(
            z_score=anomaly.z_score,
            multiple=anomaly.multiple,
            min_baseline=anomaly.min_baseline,
            smoothing=anomaly.smoothing,
            action=anomaly.action,
            throttle_factor=anomaly.throttle_factor,
        ),
        on_store_failure=rules.on_store_failure,
        fail_open_fraction=rules.fail_open_fraction,
        headers_remaining=rules.headers == "remaining",
        default_output_tokens=rules.token_estimate.default_output,
    )
