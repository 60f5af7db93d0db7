"""RedisRateStore: every counter of a request checked and charged by one Lua call per slot.

Standalone Redis: exactly one EVALSHA per request, all keys in it, so the whole
decision is atomic. Redis Cluster: one call per hash tag (account slot, entity
slot), sent concurrently; each slot is atomic on its own, and when one slot
refuses while another charged, the charge is given back (REFUND) before
answering. See docs/limits.md, "Cluster".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis, RedisCluster

from authz.metering import lua
from authz.metering.plan import Plan, Sightings, SlotGroup
from authz.metering.result import (
    ALLOWED,
    MAX_NEAR_BITS,
    MeterResult,
    Sighted,
    Timing,
    VerdictView,
    assess,
    to_result,
)
from authz.metering.window import VOLUME_TTL_MS, CounterView, VolumeView, counter_ttl_ms, to_ms
from authz.redistext import text

log = logging.getLogger("distill_guard.metering")

_ACTION_CODE = {"record": 0, "throttle": 1, "deny": 2}


@dataclass(frozen=True, slots=True)
class _Reply:
    group: SlotGroup
    allowed: bool
    views: tuple[CounterView, ...]
    volumes: tuple[VolumeView, ...]
    observed: tuple[int, ...] = ()
    timing: Timing | None = None
    verdict: VerdictView | None = None
    network_verdict: VerdictView | None = None
    template_verdicts: tuple[VerdictView, ...] = ()


def script_args(plan: Plan, group: SlotGroup, now_ms: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of one HIT call for the counters and watches of `group`."""
    volume_index = {plan.volumes[v].scope: n for n, v in enumerate(group.volumes, start=1)}
    keys = [plan.counters[i].key for i in group.counters]
    keys += [plan.volumes[i].key for i in group.volumes]
    argv = [str(now_ms), str(len(group.counters)), str(len(group.volumes))]
    for i in group.counters:
        c = plan.counters[i]
        window_ms = c.window * 1000
        argv += [
            str(window_ms),
            str(c.limit),
            str(c.throttled),
            str(c.cost),
            str(volume_index.get(c.scope, 0)),
            str(counter_ttl_ms(window_ms)),
        ]
    for i in group.volumes:
        s = plan.volumes[i].settings
        argv += [
            str(_ACTION_CODE[s.action]),
            repr(s.smoothing),
            repr(s.z_score),
            repr(s.multiple),
            repr(s.min_baseline),
            str(VOLUME_TTL_MS),
        ]
    sight = plan.sightings
    observations = [sight.observations[i] for i in group.observations] if sight is not None else []
    keys += [o.key for o in observations]
    argv.append(str(len(observations)))
    for o in observations:
        argv += [o.member, str(o.ttl_ms)]
    argv += ["1" if group.timing else "0", str(sight.timing_ttl_ms if sight else 0)]
    if sight is not None and group.timing:
        keys.append(sight.timing_key)
    verdict_keys = _verdict_keys(sight, group)
    argv.append(str(len(verdict_keys)))
    keys += verdict_keys
    return keys, argv


def _verdict_keys(sight: Sightings | None, group: SlotGroup) -> list[str]:
    """The verdict keys `group` reads: the account's, the network's, then template bands'."""
    if sight is None:
        return []
    keys = [sight.verdict_key] if group.verdict else []
    keys += [sight.network_verdict_key] if group.network_verdict else []
    return keys + [sight.template_verdict_keys[i] for i in group.template_verdicts]


def _int(value: object) -> int:
    """A Redis integer reply (int) or bulk string (bytes/str) as an int."""
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        return int(value)
    raise TypeError(f"unexpected reply {value!r}")


def parse_reply(plan: Plan, group: SlotGroup, now_ms: int, reply: Sequence[object]) -> _Reply:
    """Views of one HIT reply (see lua.HIT for its layout)."""
    views: list[CounterView] = []
    pos = 1
    for i in group.counters:
        bucket, cur, prev = (_int(x) for x in reply[pos : pos + 3])
        pos += 3
        window_ms = plan.counters[i].window * 1000
        views.append(CounterView(bucket, cur, prev, max(0, now_ms - bucket * window_ms)))
    volumes: list[VolumeView] = []
    for _ in group.volumes:
        hour, count, mean, var = reply[pos : pos + 4]
        pos += 4
        mean_text, var_text = text(mean), text(var)
        volumes.append(
            VolumeView(
                _int(hour), _int(count), float(mean_text) if mean_text else None, float(var_text)
            )
        )
    observed = tuple(_int(x) for x in reply[pos : pos + len(group.observations)])
    pos += len(group.observations)
    timing = None
    if group.timing:
        gaps, mean, m2, hours = reply[pos : pos + 4]
        pos += 4
        timing = Timing(_int(gaps), float(text(mean)), float(text(m2)), int(float(text(hours))))
    read: list[VerdictView | None] = []
    for _ in range(int(group.verdict) + int(group.network_verdict) + len(group.template_verdicts)):
        read.append(read_verdict(reply[pos : pos + 6], now_ms))
        pos += 6
    verdict = read.pop(0) if group.verdict else None
    network_verdict = read.pop(0) if group.network_verdict else None
    return _Reply(
        group,
        _int(reply[0]) == 1,
        tuple(views),
        tuple(volumes),
        observed,
        timing,
        verdict,
        network_verdict,
        tuple(v for v in read if v is not None),
    )


def read_verdict(fields: Sequence[object], now_ms: int) -> VerdictView | None:
    """A stored verdict still in force at `now_ms` (by the injected clock), else None.

    `fields` as the script returns them: action, cluster, score, until, bits,
    simhashes (`<hex>:<cluster>,...`), '' where absent. Anything unreadable
    (not text, not numbers, a distance beyond MAX_NEAR_BITS) reads as no verdict.
    """
    try:
        action, cluster, score, until, bits, simhashes = (text(x) for x in fields)
        pairs = [p.split(":", 1) for p in simhashes.split(",") if p]
        view = VerdictView(
            action,
            cluster,
            float(score or 0),
            float(until),
            int(bits or 0),
            tuple((int(h, 16), owner) for h, owner in pairs),
        )
    except (ValueError, TypeError, UnicodeDecodeError):
        return None  # absent ('') or unreadable
    if not 0 <= view.bits <= MAX_NEAR_BITS or any(h < 0 for h, _ in view.simhashes):
        return None
    return view if action and view.until * 1000 > now_ms else None


class RedisRateStore:
    """A RateStore over Redis or Redis Cluster (see module docstring)."""

    def __init__(self, client: Redis | RedisCluster, *, max_in_flight: int | None = None) -> None:
        self.client = client
        self.cluster = isinstance(client, RedisCluster)
        # redis-py's cluster pool raises past its max_connections per node rather than
        # wait; capping hits in flight at that number makes excess checks queue instead.
        self._in_flight = asyncio.Semaphore(max_in_flight) if max_in_flight else None
        self._hit = client.register_script(lua.HIT)
        self._refund = client.register_script(lua.REFUND)

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        """Check and charge the plan: one script call (standalone) or one per slot (Cluster)."""
        if plan.empty:
            return ALLOWED
        if self._in_flight is None:
            return await self._hit_plan(plan, now)
        async with self._in_flight:
            return await self._hit_plan(plan, now)

    async def _hit_plan(self, plan: Plan, now: float) -> MeterResult:
        now_ms = to_ms(now)
        if not self.cluster:
            replies = [await self._call(plan, plan.whole(), now_ms)]
        else:
            groups = plan.groups()
            outcomes = await asyncio.gather(
                *(self._call(plan, g, now_ms) for g in groups), return_exceptions=True
            )
            replies = []
            for group, outcome in zip(groups, outcomes, strict=True):
                if not isinstance(outcome, BaseException):
                    replies.append(outcome)
                elif _only_template_verdicts(group):
                    # A slot that only held template verdicts: the check goes on without
                    # them rather than fail because one more node is away.
                    log.warning(
                        "rate store: template verdicts unread", extra={"error": repr(outcome)}
                    )
                else:
                    # Slots that did answer keep their charge: over-counting, never under.
                    raise outcome
        allowed = all(r.allowed for r in replies)
        if not allowed:
            await self._give_back(plan, [r for r in replies if r.allowed])
        views: list[CounterView | None] = [None] * len(plan.counters)
        volumes: list[VolumeView | None] = [None] * len(plan.volumes)
        for r in replies:
            for i, v in zip(r.group.counters, r.views, strict=True):
                views[i] = v
            for i, vol in zip(r.group.volumes, r.volumes, strict=True):
                volumes[i] = vol
        counter_views = tuple(v for v in views if v is not None)
        volume_views = tuple(v for v in volumes if v is not None)
        sighted = _sighted(plan, replies)
        a = assess(plan, counter_views, volume_views)
        if a.allowed != allowed:
            log.warning(
                "rate store: Lua and Python disagree",
                extra={"lua": allowed, "python": a.allowed, "counters": len(counter_views)},
            )
        return to_result(plan, now_ms, counter_views, a, allowed=allowed, sighted=sighted)

    async def _call(self, plan: Plan, group: SlotGroup, now_ms: int) -> _Reply:
        keys, argv = script_args(plan, group, now_ms)
        reply = await self._hit(keys=keys, args=argv)
        return parse_reply(plan, group, now_ms, reply)

    async def _give_back(self, plan: Plan, charged: list[_Reply]) -> None:
        """Undo the charges of slots that allowed a request another slot refused."""
        calls = []
        for r in charged:
            if not r.group.counters and not r.group.volumes:
                continue  # nothing was charged there
            keys = [plan.counters[i].key for i in r.group.counters]
            keys += [plan.volumes[i].key for i in r.group.volumes]
            argv = [str(len(r.group.counters)), str(len(r.group.volumes))]
            for i, v in zip(r.group.counters, r.views, strict=True):
                argv += [str(v.bucket), str(plan.counters[i].cost)]
            argv += [str(vol.hour) for vol in r.volumes]
            calls.append(self._refund(keys=keys, args=argv))
        for outcome in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(outcome, BaseException):
                # The request is refused either way; the charge stays (over-counting).
                log.warning("rate store: refund failed", extra={"error": repr(outcome)})

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()


def _only_template_verdicts(group: SlotGroup) -> bool:
    """Whether a slot's call only reads template verdicts (charges and counts nothing)."""
    return not (
        group.counters
        or group.volumes
        or group.observations
        or group.timing
        or group.verdict
        or group.network_verdict
    )


def _sighted(plan: Plan, replies: list[_Reply]) -> Sighted | None:
    """The sightings' answers of all slots, in plan order."""
    s = plan.sightings
    if s is None:
        return None
    counts: dict[int, int] = {}
    timing = verdict = network_verdict = None
    near: list[VerdictView] = []
    for r in replies:
        counts.update(zip(r.group.observations, r.observed, strict=True))
        timing = timing or r.timing
        verdict = verdict or r.verdict
        network_verdict = network_verdict or r.network_verdict
        near += r.template_verdicts
    observed = tuple((o.name, counts.get(i, 0)) for i, o in enumerate(s.observations))
    return Sighted(observed, timing, verdict, network_verdict, tuple(near))
