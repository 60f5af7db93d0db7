"""Fast draws for the per-request hot path (random.Random.choice costs several times more)."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def pick(rng: random.Random, items: Sequence[T]) -> T:
    """One item of a non-empty sequence, uniformly."""
    return items[int(rng.random() * len(items))]


def cumulative(weights: Sequence[float]) -> list[float]:
    """Running totals of `weights`, for `random.choices(..., cum_weights=...)`."""
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out


def weighted(rng: random.Random, items: Sequence[T], cum: Sequence[float]) -> T:
    """One item, drawn with the running-total weights `cum` (see `cumulative`)."""
    return items[bisect.bisect_right(cum, rng.random() * cum[-1])]
