"""Rate counters per account and entity, token budgets and volume-anomaly signals.

The meter phase of the pipeline: `plan_request` builds the request's plan from
the tier's compiled limits, one `RateStore.hit` checks and charges it, and
`headers` shapes what the client sees. See docs/limits.md.
"""

from __future__ import annotations

from authz.metering.breaker import BreakerRateStore, BreakerState
from authz.metering.connect import open_rate_store, rate_client
from authz.metering.headers import allowed_headers, denied_headers
from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan, build_plan, counter_key, plan_request, volume_key
from authz.metering.redis_store import RedisRateStore
from authz.metering.result import LimitState, MeterResult, Signal, Violation, describe
from authz.metering.rules import CompiledLimits, LimitRules, compile_limits
from authz.metering.store import StoreUnavailable
from authz.metering.tokens import TokenEstimate, estimate_tokens

__all__ = [
    "BreakerRateStore",
    "BreakerState",
    "CompiledLimits",
    "LimitRules",
    "LimitState",
    "MemoryRateStore",
    "MeterResult",
    "Plan",
    "RedisRateStore",
    "Signal",
    "StoreUnavailable",
    "TokenEstimate",
    "Violation",
    "allowed_headers",
    "build_plan",
    "compile_limits",
    "counter_key",
    "denied_headers",
    "describe",
    "estimate_tokens",
    "open_rate_store",
    "plan_request",
    "rate_client",
    "volume_key",
]
