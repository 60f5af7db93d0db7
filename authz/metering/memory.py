"""MemoryRateStore: the counters in this process (embedded mode, and the fail-open fallback).

Same semantics as the Lua script: it reads the same views through the same
functions of `authz.metering.window`, and decides with `assess`. Nothing awaits
between reading and writing, so each hit is atomic within the event loop.
"""

from __future__ import annotations

from authz.metering.plan import Plan, Sightings
from authz.metering.result import (
    ALLOWED,
    MeterResult,
    Sighted,
    Timing,
    VerdictView,
    assess,
    to_result,
)
from authz.metering.window import (
    VOLUME_TTL_MS,
    CounterView,
    VolumeView,
    counter_ttl_ms,
    fold,
    observe_timing,
    roll,
    to_ms,
)

_SWEEP_EVERY = 4096


class MemoryRateStore:
    """A RateStore in a dict; expired entries are swept now and then (by the injected time)."""

    def __init__(self) -> None:
        self._counters: dict[str, tuple[int, int, int, int]] = {}  # b, c, p, expires_ms
        self._volumes: dict[str, tuple[int, int, float | None, float, int]] = {}
        # Detection: distinct members per pool (exact sets where Redis keeps
        # HyperLogLogs), account timing, and verdicts of the off-path analysis.
        self._pools: dict[str, tuple[set[str], int]] = {}
        self._timing: dict[str, tuple[tuple[int, int, float, float, int], int]] = {}
        self._verdicts: dict[str, tuple[VerdictView, int]] = {}
        self._writes = 0

    def __len__(self) -> int:
        return len(self._counters) + len(self._volumes) + len(self._pools) + len(self._timing)

    def put_verdict(self, key: str, verdict: VerdictView) -> None:
        """Store a verdict under its key until `verdict.until` (what the analysis writes)."""
        self._verdicts[key] = (verdict, to_ms(verdict.until))

    async def hit(self, plan: Plan, now: float) -> MeterResult:
        """Check and charge the plan's counters at `now`."""
        return self.hit_now(plan, now)

    def hit_now(self, plan: Plan, now: float) -> MeterResult:
        """The synchronous body of `hit` (for callers that must not yield)."""
        if plan.empty:
            return ALLOWED
        now_ms = to_ms(now)
        # A plain loop, not a generator and a method per counter: this runs six
        # times or more for each request.
        stored_counters = self._counters
        counter_views: list[CounterView] = []
        for c in plan.counters:
            stored = stored_counters.get(c.key)
            live = stored[:3] if stored is not None and stored[3] > now_ms else None
            counter_views.append(roll(live, now_ms, c.window * 1000))
        views = tuple(counter_views)
        volumes = (
            tuple(self._volume(w.key, now_ms, w.settings.smoothing) for w in plan.volumes)
            if plan.volumes
            else ()
        )
        a = assess(plan, views, volumes)
        if a.allowed:
            self._charge(plan, now_ms, views, volumes)
        sighted = self._sight(plan.sightings, now_ms) if plan.sightings is not None else None
        return to_result(plan, now_ms, views, a, allowed=a.allowed, sighted=sighted)

    def _sight(self, s: Sightings, now_ms: int) -> Sighted:
        """Record the sightings, as the Lua script does after the counters."""
        observed = []
        for o in s.observations:
            stored = self._pools.get(o.key)
            members = stored[0] if stored is not None and stored[1] > now_ms else set()
            members.add(o.member)
            self._pools[o.key] = (members, now_ms + o.ttl_ms)
            observed.append((o.name, len(members)))
        timing = None
        if s.timing_key:
            kept = self._timing.get(s.timing_key)
            state = observe_timing(kept[0] if kept and kept[1] > now_ms else None, now_ms)
            self._timing[s.timing_key] = (state, now_ms + s.timing_ttl_ms)
            timing = Timing(state[0], state[2], state[3], state[4])
        return Sighted(
            tuple(observed),
            timing,
            self._verdict(s.verdict_key, now_ms),
            self._verdict(s.network_verdict_key, now_ms),
            tuple(
                v
                for v in (self._verdict(k, now_ms) for k in s.template_verdict_keys)
                if v is not None
            ),
        )

    def _verdict(self, key: str, now_ms: int) -> VerdictView | None:
        """The verdict stored under `key` while in force (no key: none asked)."""
        found = self._verdicts.get(key) if key else None
        if found is not None and found[1] > now_ms and found[0].action:
            return found[0]
        return None

    def _volume(self, key: str, now_ms: int, alpha: float) -> VolumeView:
        stored = self._volumes.get(key)
        if stored is None or stored[4] <= now_ms:
            return fold(None, now_ms, alpha)
        return fold(stored[:4], now_ms, alpha)

    def _charge(
        self,
        plan: Plan,
        now_ms: int,
        views: tuple[CounterView, ...],
        volumes: tuple[VolumeView, ...],
    ) -> None:
        for c, v in zip(plan.counters, views, strict=True):
            expires = now_ms + counter_ttl_ms(c.window * 1000)
            self._counters[c.key] = (v.bucket, v.cur + c.cost, v.prev, expires)
        for w, vol in zip(plan.volumes, volumes, strict=True):
            expires = now_ms + VOLUME_TTL_MS
            self._volumes[w.key] = (vol.hour, vol.requests + 1, vol.mean, vol.var, expires)
        self._writes += 1
        if self._writes % _SWEEP_EVERY == 0:
            self.sweep(now_ms)

    async def aclose(self) -> None:
        """Nothing to release (same interface as the Redis store)."""

    def sweep(self, now_ms: int) -> None:
        """Drop entries whose expiry has passed (they would read as empty anyway)."""
        self._counters = {k: s for k, s in self._counters.items() if s[3] > now_ms}
        self._volumes = {k: s for k, s in self._volumes.items() if s[4] > now_ms}
        self._pools = {k: s for k, s in self._pools.items() if s[1] > now_ms}
        self._timing = {k: s for k, s in self._timing.items() if s[1] > now_ms}
        self._verdicts = {k: s for k, s in self._verdicts.items() if s[1] > now_ms}
