"""Limit behaviour, identical on the memory store and on a real Redis (each test runs on both)."""

from __future__ import annotations

import pytest

from authz.metering.result import MeterResult
from tests.metering_support import T0, Store, compiled, plan_for, run


def _allowed(results: list[MeterResult]) -> int:
    return sum(r.allowed for r in results)


def test_request_limit_is_exact_and_remaining_counts_down(rate_store_url: str) -> None:
    """With 5 per minute, five requests pass (remaining 4..0) and the sixth is refused."""
    plan = plan_for(compiled("account: {requests: {1m: 5}}"))

    async def body(store: Store) -> None:
        results = [await store.hit(plan, T0 + 1 + i) for i in range(6)]
        assert [r.allowed for r in results] == [True] * 5 + [False]
        assert [r.limits[0].remaining for r in results] == [4, 3, 2, 1, 0, 0]
        denied = results[-1].violated
        assert denied is not None
        assert (denied.name, denied.scope, denied.kind, denied.window, denied.limit) == (
            "account-requests-1m",
            "account",
            "requests",
            60,
            5,
        )

    run(rate_store_url, body)


def test_previous_window_is_weighted_by_its_remaining_overlap(rate_store_url: str) -> None:
    """Half-way into the next minute, a full previous minute counts as half: 5 of 10 pass."""
    plan = plan_for(compiled("account: {requests: {1m: 10}}"))

    async def body(store: Store) -> None:
        assert _allowed([await store.hit(plan, T0 + 50) for _ in range(10)]) == 10
        # estimate = 10 * (60 - 30) / 60 + cur: cur may reach 5.
        assert _allowed([await store.hit(plan, T0 + 90) for _ in range(8)]) == 5
        # Next minute from its start: previous bucket (5) weighs fully, 5 more fit.
        assert _allowed([await store.hit(plan, T0 + 120) for _ in range(8)]) == 5
        # Two minutes later nothing of it is left.
        assert _allowed([await store.hit(plan, T0 + 240) for _ in range(12)]) == 10

    run(rate_store_url, body)


def test_retry_after_is_exactly_when_the_request_fits(rate_store_url: str) -> None:
    """A refusal's retry_after is the moment the estimate has room; a moment earlier is too soon."""
    plan = plan_for(compiled("account: {requests: {1m: 10}}"))

    async def body(store: Store) -> None:
        for _ in range(10):
            await store.hit(plan, T0 + 50)
        for _ in range(5):
            assert (await store.hit(plan, T0 + 90)).allowed
        refused = await store.hit(plan, T0 + 90)
        assert refused.violated is not None
        # 10 * (60 - e) / 60 + 5 + 1 <= 10  <=>  e >= 36 s, i.e. 6 s from now.
        assert refused.violated.retry_after == 6.0
        assert not (await store.hit(plan, T0 + 95.9)).allowed
        assert (await store.hit(plan, T0 + 96)).allowed

    run(rate_store_url, body)


def test_every_window_is_checked_and_the_longest_wait_is_reported(rate_store_url: str) -> None:
    """Minute and hour limits apply together; the hour limit refuses once the minutes pass."""
    plan = plan_for(compiled("account: {requests: {1m: 5, 1h: 8}}"))

    async def body(store: Store) -> None:
        first = [await store.hit(plan, T0 + 1) for _ in range(6)]
        assert _allowed(first) == 5
        assert first[-1].violated is not None
        assert first[-1].violated.name == "account-requests-1m"
        later = [await store.hit(plan, T0 + 120) for _ in range(4)]
        assert _allowed(later) == 3
        refused = later[-1].violated
        assert refused is not None
        assert refused.name == "account-requests-1h"
        # cur 8 > room 7: wait for the hour to end (3480 s), then 1/8 of the next one (450 s).
        assert refused.retry_after == 3930.0
        assert [(s.name, s.remaining) for s in later[-1].limits] == [
            ("account-requests-1m", 2),
            ("account-requests-1h", 0),
        ]

    run(rate_store_url, body)


def test_accounts_of_one_entity_share_the_entity_limit(rate_store_url: str) -> None:
    """Two accounts of one entity pool its limit; a refusal by the account charges no entity."""
    limits = compiled("account: {requests: {1m: 4}}\nentity: {requests: {1m: 5}}")
    alice = plan_for(limits, "alice", "acme")
    bob = plan_for(limits, "bob", "acme")
    carol = plan_for(limits, "carol", "other")

    async def body(store: Store) -> None:
        assert _allowed([await store.hit(alice, T0 + 1) for _ in range(6)]) == 4
        assert (await store.hit(bob, T0 + 2)).allowed
        refused = await store.hit(bob, T0 + 3)
        assert refused.violated is not None
        assert refused.violated.name == "entity-requests-1m"
        assert (await store.hit(carol, T0 + 3)).allowed

    run(rate_store_url, body)


def test_refused_requests_consume_nothing(rate_store_url: str) -> None:
    """Fifty refused attempts leave the counters as they were: the next minute sees only 3."""
    plan = plan_for(compiled("account: {requests: {1m: 3}}"))

    async def body(store: Store) -> None:
        assert _allowed([await store.hit(plan, T0 + 1) for _ in range(3)]) == 3
        refused = [await store.hit(plan, T0 + 2 + i / 10) for i in range(50)]
        assert _allowed(refused) == 0
        assert {r.limits[0].remaining for r in refused} == {0}
        # 3 * 30 / 60 = 1.5 counted: one more fits (2.5), a second does not (3.5).
        assert [(await store.hit(plan, T0 + 90)).allowed for _ in range(2)] == [True, False]

    run(rate_store_url, body)


def test_token_budget_charges_the_estimate_and_refuses_what_cannot_fit(
    rate_store_url: str,
) -> None:
    """A daily token budget of 1000: 400 + 400 pass, 400 more is refused, 200 fits; 2000 never."""
    limits = compiled("account: {tokens: {1d: 1000}}")

    async def body(store: Store) -> None:
        assert (await store.hit(plan_for(limits, tokens=400), T0 + 1)).allowed
        assert (await store.hit(plan_for(limits, tokens=400), T0 + 2)).allowed
        refused = await store.hit(plan_for(limits, tokens=400), T0 + 3)
        assert refused.violated is not None
        assert (refused.violated.name, refused.violated.kind) == ("account-tokens-1d", "tokens")
        assert refused.limits[0].remaining == 200
        assert (await store.hit(plan_for(limits, tokens=200), T0 + 4)).allowed
        never = await store.hit(plan_for(limits, tokens=2000), T0 + 5)
        assert never.violated is not None
        assert never.violated.retry_after is None
        # A request without a body costs no tokens and is not refused by an empty budget.
        assert plan_for(limits, tokens=0).empty

    run(rate_store_url, body)


def test_model_limits_apply_to_matching_models_only(rate_store_url: str) -> None:
    """`frontier-*` has its own 2 per minute, shared by every frontier model; others are free."""
    limits = compiled(
        "account: {requests: {1m: 100}}\nmodels: {'frontier-*': {account: {requests: {1m: 2}}}}"
    )

    async def body(store: Store) -> None:
        frontier = [await store.hit(plan_for(limits, model="frontier-2"), T0 + 1) for _ in range(2)]
        assert _allowed(frontier) == 2
        refused = await store.hit(plan_for(limits, model="frontier-3"), T0 + 2)
        assert refused.violated is not None
        assert refused.violated.name == "account-requests-1m@frontier-*"
        assert (await store.hit(plan_for(limits, model="small-1"), T0 + 2)).allowed
        assert (await store.hit(plan_for(limits, model=None), T0 + 2)).allowed

    run(rate_store_url, body)


_ANOMALY = """
account: {requests: {1h: 1000}}
anomaly: {z_score: 2, multiple: 3, min_baseline: 10, smoothing: 0.5, action: ACTION,
          throttle_factor: 0.02}
"""


async def _baseline_then_spike(store: Store, action: str, spike: int) -> list[MeterResult]:
    """Two hours of 10 requests (baseline 10), then `spike` requests in the third hour."""
    plan = plan_for(compiled(_ANOMALY.replace("ACTION", action)), "alice", "acme")
    for hour in range(2):
        for i in range(10):
            assert (await store.hit(plan, T0 + hour * 3600 + i)).allowed
    return [await store.hit(plan, T0 + 2 * 3600 + 3000 + i / 10) for i in range(spike)]


def test_volume_spike_is_recorded_at_three_times_the_baseline(rate_store_url: str) -> None:
    """`record`: the 30th request of an hour against a baseline of 10 fires, and still passes."""

    async def body(store: Store) -> None:
        results = await _baseline_then_spike(store, "record", 31)
        assert all(r.allowed for r in results)
        assert [r.signals for r in results[:29]] == [()] * 29
        names = {s.name: s for s in results[29].signals}
        assert set(names) == {"volume_spike_account", "volume_spike_entity"}
        signal = names["volume_spike_account"]
        assert (signal.count, signal.baseline, signal.value) == (30, 10.0, 3.0)
        assert signal.z == (30 - 10) / 10**0.5
        assert signal.action == "record"

    run(rate_store_url, body)


def test_volume_spike_denies_until_the_hour_ends(rate_store_url: str) -> None:
    """`deny`: from the firing request on, the scope is refused; retry when the hour ends."""

    async def body(store: Store) -> None:
        results = await _baseline_then_spike(store, "deny", 31)
        assert [r.allowed for r in results] == [True] * 29 + [False, False]
        refused = results[29]
        assert refused.violated is not None
        assert refused.violated.kind == "volume"
        assert refused.violated.name in {"volume_spike_account", "volume_spike_entity"}
        # The 30th request comes 3002.9 s into the hour.
        assert refused.violated.retry_after == pytest.approx(597.1)

    run(rate_store_url, body)


def test_volume_spike_throttles_the_scope_limits(rate_store_url: str) -> None:
    """`throttle`: while the signal fires the hour limit is 1000 * 0.02 = 20, and 29 are counted."""

    async def body(store: Store) -> None:
        results = await _baseline_then_spike(store, "throttle", 30)
        assert [r.allowed for r in results] == [True] * 29 + [False]
        assert results[28].limits[0].limit == 1000
        refused = results[29]
        assert refused.violated is not None
        assert (refused.violated.name, refused.violated.limit) == ("account-requests-1h", 20)
        assert refused.limits[0].limit == 20

    run(rate_store_url, body)


def test_a_replica_whose_clock_is_behind_counts_in_the_newer_bucket(rate_store_url: str) -> None:
    """A check stamped just before a bucket another replica already opened counts there, from
    its start: skew between replicas can refuse early, never let more through."""
    plan = plan_for(compiled("account: {requests: {1m: 2}}"))

    async def body(store: Store) -> None:
        assert (await store.hit(plan, T0 + 30)).allowed
        assert (await store.hit(plan, T0 + 60.5)).allowed  # 1 * 59.5/60 + 0 + 1 <= 2
        behind = await store.hit(plan, T0 + 59.9)  # sees bucket 1 at elapsed 0: 1 + 1 + 1 > 2
        assert not behind.allowed

    run(rate_store_url, body)
