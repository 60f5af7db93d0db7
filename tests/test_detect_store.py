"""Detection's sightings in the rate stores: pool counts, account timing and verdicts,
answered in the same store call as the counters, the same on memory, Redis and Cluster."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from authz.detect.keys import (
    band_key,
    network_verdict_key,
    sightings,
    template_verdict_keys,
    timing_key,
    verdict_key,
)
from authz.detect.verdicts import NetworkVerdict, RedisVerdictSink, TemplateVerdict, Verdict
from authz.metering.connect import open_rate_store, rate_client
from authz.metering.memory import MemoryRateStore
from authz.metering.plan import Plan, SlotGroup
from authz.metering.redis_store import RedisRateStore
from authz.metering.result import MeterResult, VerdictView
from authz.metering.window import observe_timing
from authz.protocols import RateStore
from tests.metering_support import T0, compiled, plan_for

_LIMITS = compiled("account: {requests: {1m: 100}}\nentity: {requests: {1d: 1000}}\n")
# The SimHash of each test template (what the request path would compute from its scaffold).
SIMHASH = {
    "tpl0": 0x0123_4567_89AB_CDEF,
    "tpl1": 0x1111_2222_3333_4444,
    "tpl2": 0x5555_6666_7777_8888,
    "t": 0x9F3A_5C7E_1234_5678,
    "u": 0x0F0F_0F0F_0F0F_0F0F,
}


def _network(account: str) -> str:
    """Accounts acct0..acct5 call from three networks, two accounts each; others from 73.1.2."""
    return f"73.1.{int(account[4:]) % 3 if account[4:].isdigit() else 2}.0/24"


def _plan(account: str, template: str, now: float, *, counters: bool = True) -> Plan:
    base = plan_for(_LIMITS, account, "ent", tokens=0) if counters else Plan(counters=())
    s = sightings(
        account=account,
        template=template,
        network=_network(account),
        asn=7922,
        client="c1",
        now=now,
        simhash=SIMHASH[template],
    )
    return dataclasses.replace(base, sightings=s)


def _sequence(seed: int) -> list[tuple[str, str, float]]:
    rng = random.Random(seed)
    t = T0
    out = []
    for _ in range(120):
        t += rng.choice([0.0, 0.4, 7.0, 61.0, 900.0, 3700.0])
        out.append((f"acct{rng.randrange(6)}", f"tpl{rng.randrange(3)}", t))
    return out


def _answers(results: list[MeterResult]) -> list[tuple[object, ...]]:
    out = []
    for r in results:
        s = r.sighted
        assert s is not None
        t = s.timing
        assert t is not None
        out.append(
            (
                r.allowed,
                s.observed,
                (t.gaps, t.mean_ms, t.m2, t.hours),
                s.verdict,
                s.template_verdicts,
                s.network_verdict,
            )
        )
    return out


# An account verdict, a network verdict (acct1's and acct4's network) and a template
# verdict (on tpl1's third band), lapsing at different points of a sequence.
_SEEDED = (
    Verdict("acct2", "deny", "c-a", 0.91, ("proxy_pool",), T0 + 20_000),
    NetworkVerdict("73.1.1.0/24", "restrict", "c-n", 0.7, ("network_churn",), T0 + 25_000),
    TemplateVerdict(
        band_key(2, 0x2222),
        "restrict",
        "c-a",
        0.91,
        ("proxy_pool",),
        T0 + 30_000,
        7,
        ((SIMHASH["tpl1"] ^ 0b11, "c-a"), (0xABCD_2222_0000_0000, "c-b")),
    ),
)


async def _replay(
    store: RateStore, seq: list[tuple[str, str, float]], client: Redis | RedisCluster | None = None
) -> list[MeterResult]:
    """Seed `_SEEDED` (into Redis through `client`, else the memory store), then hit."""
    if client is not None:
        await RedisVerdictSink(client).put(_SEEDED, now=T0)
    else:
        assert isinstance(store, MemoryRateStore)
        for v in _SEEDED:
            store.put_verdict(v.key, v.view())
    return [await store.hit(_plan(a, tpl, now), now) for a, tpl, now in seq]


def test_sightings_share_slots_with_what_they_read() -> None:
    """On Cluster the account's verdict and timing sit with its counters, the network's
    verdict with the network's pool, and each band key in a slot of its own."""
    plan = _plan("acct1", "t", T0)
    groups = {g.tag: g for g in plan.groups()}
    assert plan.sightings is not None
    names = [o.name for o in plan.sightings.observations]
    account = groups["{a:acct1}"]
    assert account.timing and account.verdict and account.counters
    network = groups["{n:73.1.1.0/24}"]
    assert network.network_verdict and not network.verdict
    assert [names[i] for i in network.observations] == ["network_accounts"]
    assert sum(g.network_verdict for g in groups.values()) == 1
    bands = [g for g in groups.values() if g.template_verdicts]
    assert len(bands) == 4 and all(not g.observations and not g.counters for g in bands)


def test_memory_pools_count_distinct_members_per_bucket() -> None:
    store = MemoryRateStore()

    async def run() -> None:
        first = await store.hit(_plan("a", "t", T0), T0)
        again = await store.hit(_plan("a", "t", T0 + 1), T0 + 1)
        other = await store.hit(_plan("b", "t", T0 + 2), T0 + 2)
        later = await store.hit(_plan("c", "t", T0 + 3600), T0 + 3600)  # the next hour
        assert first.sighted and again.sighted and other.sighted and later.sighted
        assert dict(first.sighted.observed)["template_accounts"] == 1
        assert dict(again.sighted.observed)["template_accounts"] == 1
        assert dict(other.sighted.observed)["template_accounts"] == 2
        assert dict(later.sighted.observed)["template_accounts"] == 1
        assert dict(other.sighted.observed)["account_templates"] == 1
        assert dict(other.sighted.observed)["network_accounts"] == 2

    asyncio.run(run())


def test_timing_follows_welford() -> None:
    gaps = [60_000, 60_000, 61_000, 59_000, 600_000]
    state = observe_timing(None, 0)
    now = 0
    for g in gaps:
        now += g
        state = observe_timing(state, now)
    n, last, mean, m2, hours = state
    assert (n, last) == (5, now)
    assert mean == pytest.approx(sum(gaps) / 5)
    var = sum((g - mean) ** 2 for g in gaps) / 4
    assert m2 / 4 == pytest.approx(var)
    assert hours == 1  # all within the first UTC hour of day 0
    # An out-of-order request is a zero gap and does not move `last` back.
    assert observe_timing(state, now - 5000)[1] == now


def test_verdicts_are_read_until_they_expire() -> None:
    """An account's verdict reaches its own requests only, a network's every request from
    it; a template verdict reaches every request whose SimHash shares its band value (the
    detect phase then checks the bits)."""
    store = MemoryRateStore()
    store.put_verdict(verdict_key("a"), VerdictView("restrict", "c-9", 0.9, T0 + 100))
    owned = VerdictView("restrict", "c-8", 0.7, T0 + 50)
    store.put_verdict(network_verdict_key(_network("acct1")), owned)
    near = VerdictView("restrict", "c-9", 0.9, T0 + 50, 7, ((SIMHASH["t"] ^ 1, "c-9"),))
    store.put_verdict(template_verdict_keys(SIMHASH["t"])[3], near)

    async def run() -> None:
        during = await store.hit(_plan("a", "t", T0 + 10), T0 + 10)
        after = await store.hit(_plan("a", "t", T0 + 100), T0 + 100)
        others = await store.hit(_plan("b", "t", T0 + 10), T0 + 10)
        assert during.sighted and during.sighted.verdict == VerdictView(
            "restrict", "c-9", 0.9, T0 + 100
        )
        assert after.sighted and after.sighted.verdict is None
        assert others.sighted and others.sighted.verdict is None
        assert others.sighted.template_verdicts == (near,)
        assert after.sighted.template_verdicts == ()
        elsewhere = await store.hit(_plan("b", "u", T0 + 10), T0 + 10)
        assert elsewhere.sighted and elsewhere.sighted.template_verdicts == ()
        assert elsewhere.sighted.network_verdict is None
        proxied = await store.hit(_plan("acct4", "u", T0 + 10), T0 + 10)
        lapsed = await store.hit(_plan("acct4", "u", T0 + 50), T0 + 50)
        assert proxied.sighted and proxied.sighted.network_verdict == owned
        assert lapsed.sighted and lapsed.sighted.network_verdict is None

    asyncio.run(run())


@pytest.mark.redis
def test_redis_answers_like_memory(redis_url: str) -> None:
    seq = _sequence(3)

    async def run() -> None:
        client = rate_client(redis_url)
        assert isinstance(client, Redis)
        try:
            redis_results = await _replay(RedisRateStore(client), seq, client)
            keys = {k.decode() for k in await client.keys("dg:d:*")}
        finally:
            await client.aclose()
        memory_results = await _replay(MemoryRateStore(), seq)
        assert _answers(redis_results) == _answers(memory_results)
        # Each kind of verdict was read while in force, and lapsed by the injected clock.
        answers = _answers(memory_results)
        read = [(a[3] is not None, a[4] != ()) for a in answers]
        assert {(True, False), (False, True), (False, False)} <= set(read)
        on_network = [(a[5] is not None, t) for a, (acct, _, t) in zip(answers, seq, strict=True)]
        assert {n for n, t in on_network if t < T0 + 25_000 and n} == {True}
        assert not [n for n, t in on_network if t >= T0 + 25_000 and n]
        assert {acct for a, (acct, _, t) in zip(answers, seq, strict=True) if a[5] is not None} == {
            "acct1",
            "acct4",
        }
        assert timing_key("acct0") in keys
        assert any(k.startswith("dg:d:{t:tpl0}:h:") for k in keys)

    asyncio.run(run())


@pytest.mark.redis
def test_redis_reads_a_verdict_in_the_same_call(redis_url: str) -> None:
    async def run() -> None:
        client = rate_client(redis_url)
        assert isinstance(client, Redis)
        try:
            await client.hset(
                verdict_key("a"),
                mapping={
                    "action": "restrict",
                    "cluster": "c-1",
                    "score": "0.8",
                    "until": str(T0 + 60),
                },
            )
            await client.hset(
                template_verdict_keys(SIMHASH["t"])[0],
                mapping={
                    "action": "restrict",
                    "cluster": "c-2",
                    "score": "0.7",
                    "until": T0 + 30,
                    "bits": 7,
                    "simhashes": f"{SIMHASH['t']:016x}:c-2,0000000000005678:c-3",
                },
            )
            await client.hset(
                network_verdict_key(_network("a")),
                mapping={"action": "restrict", "cluster": "c-4", "score": "0.6", "until": T0 + 60},
            )
            store = RedisRateStore(client)
            calls = 0
            real = store._hit

            async def counted(**kw: object) -> object:
                nonlocal calls
                calls += 1
                return await real(**kw)  # type: ignore[arg-type]

            store._hit = counted  # type: ignore[assignment]
            hit = await store.hit(_plan("a", "t", T0), T0)
            late = await store.hit(_plan("a", "t", T0 + 61), T0 + 61)
            only = await store.hit(_plan("a", "t", T0 + 1, counters=False), T0 + 1)
        finally:
            await client.aclose()
        assert calls == 3  # one script call per check, counters and sightings together
        assert hit.sighted and hit.sighted.verdict == VerdictView("restrict", "c-1", 0.8, T0 + 60)
        assert hit.sighted.network_verdict == VerdictView("restrict", "c-4", 0.6, T0 + 60)
        assert hit.sighted.template_verdicts == (
            VerdictView(
                "restrict", "c-2", 0.7, T0 + 30, 7, ((SIMHASH["t"], "c-2"), (0x5678, "c-3"))
            ),
        )
        assert late.sighted and late.sighted.template_verdicts == ()
        assert late.sighted and late.sighted.verdict is None  # past `until` by our clock
        assert only.sighted and only.sighted.verdict is not None and only.limits == ()

    asyncio.run(run())


@pytest.mark.redis
def test_unreadable_template_verdicts_are_ignored(redis_url: str) -> None:
    """Garbage under a band key (bytes that are not text, no hex, a distance beyond the
    limit, a key of another type) or a network key reads as no verdict: the check is
    answered and charged."""
    keys = template_verdict_keys(SIMHASH["t"])
    good = {"action": "restrict", "cluster": "c-1", "score": "0.8", "until": T0 + 60}

    async def run() -> None:
        client = rate_client(redis_url)
        assert isinstance(client, Redis)
        try:
            await client.hset(keys[0], mapping=good | {"bits": 7, "simhashes": b"\xff\xfe:c"})
            await client.hset(keys[1], mapping=good | {"bits": 7, "simhashes": "zz:c-1"})
            await client.hset(keys[2], mapping=good | {"bits": 64, "simhashes": "0:c-1"})
            await client.set(keys[3], "not a hash")
            await client.set(network_verdict_key(_network("a")), "not a hash")
            store = RedisRateStore(client)
            first = await store.hit(_plan("a", "t", T0), T0)
            second = await store.hit(_plan("a", "t", T0 + 1), T0 + 1)
        finally:
            await client.aclose()
        assert first.allowed and first.sighted is not None
        assert first.sighted.template_verdicts == () and first.sighted.network_verdict is None
        assert [lim.remaining for lim in second.limits] == [
            lim.remaining - 1 for lim in first.limits
        ]

    asyncio.run(run())


@pytest.mark.redis
def test_cluster_answers_without_an_unreachable_template_verdict_slot(
    redis_cluster_url: str,
) -> None:
    """On Cluster a slot that only holds template verdicts failing leaves the check answered
    (without them); a slot with counters failing still fails it."""

    async def run() -> tuple[MeterResult, BaseException | None]:
        client = rate_client(redis_cluster_url)
        store = RedisRateStore(client)
        real = store._call

        async def flaky(plan: Plan, group: SlotGroup, now_ms: int) -> Any:
            if not group.counters and group.template_verdicts:
                raise RedisConnectionError("node away")
            if group.counters and failing_counters:
                raise RedisConnectionError("node away")
            return await real(plan, group, now_ms)

        store._call = flaky  # type: ignore[method-assign]
        failing_counters = False
        try:
            answered = await store.hit(_plan("a", "t", T0), T0)
            failing_counters = True
            try:
                await store.hit(_plan("a", "t", T0 + 1), T0 + 1)
                failed = None
            except RedisConnectionError as exc:
                failed = exc
        finally:
            await client.aclose()
        return answered, failed

    answered, failed = asyncio.run(run())
    assert answered.allowed and answered.sighted is not None
    assert answered.sighted.template_verdicts == () and answered.sighted.timing is not None
    assert isinstance(failed, RedisConnectionError)


@pytest.mark.redis
def test_cluster_answers_like_memory(redis_cluster_url: str) -> None:
    seq = _sequence(5)

    async def run() -> None:
        client = rate_client(redis_cluster_url)
        store = open_rate_store(redis_cluster_url, client=client, budget=2.0)
        try:
            results = await _replay(store, seq, client)
        finally:
            await store.aclose()
        assert _answers(results) == _answers(await _replay(MemoryRateStore(), seq))

    asyncio.run(run())


def test_timing_cv() -> None:
    from authz.metering.result import Timing

    assert Timing(1, 100.0, 0.0, 1).cv is None
    assert Timing(3, 100.0, 200.0, 3).cv == pytest.approx(math.sqrt(100.0) / 100.0)
    assert Timing(3, 100.0, 200.0, 0b1011).active_hours == 3
