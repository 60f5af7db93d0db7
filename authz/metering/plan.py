"""The plan of one request: which counters it touches, their keys, limits and cost.

A pure function of the compiled tier limits and the request's account, entity,
model and estimated tokens. Every Redis key comes from `counter_key` or
`volume_key`; keys of one account share the hash tag `{a:<account>}`, keys of
one entity `{e:<entity>}`, so each scope lives in one Cluster slot.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple
from urllib.parse import quote

from authz.metering.rules import AnomalySettings, CompiledLimits, Kind, Scope, WindowLimit
from authz.metering.tokens import estimate_tokens

PREFIX = "dg:rl:"
_TAG_LETTER: dict[Scope, str] = {"account": "a", "entity": "e"}
_KIND_CODE: dict[Kind, str] = {"requests": "req", "tokens": "tok"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@-]+$")


@functools.lru_cache(maxsize=65536)  # accounts and entities repeat from request to request
def hash_tag(scope: Scope, scope_id: str) -> str:
    """`{a:<account>}` or `{e:<entity>}`: the part of a key Redis Cluster hashes."""
    # Ids are validated upstream; encode anything else so a brace cannot move the tag.
    safe = scope_id if _SAFE_ID.match(scope_id) else quote(scope_id, safe="")
    return "{" + _TAG_LETTER[scope] + ":" + safe + "}"


def counter_key(
    scope: Scope, scope_id: str, kind: Kind, window: int, model: str | None = None
) -> str:
    """The Redis key of one counter, e.g. `dg:rl:{a:alice}:req:60` (window in seconds)."""
    key = f"{PREFIX}{hash_tag(scope, scope_id)}:{_KIND_CODE[kind]}:{window}"
    return key if model is None else f"{key}:m:{model}"


def volume_key(scope: Scope, scope_id: str) -> str:
    """The Redis key of a scope's hourly volume baseline, e.g. `dg:rl:{e:acme}:vol`."""
    return f"{PREFIX}{hash_tag(scope, scope_id)}:vol"


def policy_name(scope: Scope, limit: WindowLimit, model: str | None = None) -> str:
    """The name a limit goes by in headers and denials, e.g. `account-requests-1m`."""
    name = f"{scope}-{limit.kind}-{limit.label}"
    return name if model is None else f"{name}@{model}"


class Counter(NamedTuple):
    """One counter a request is checked against and, when allowed, charged to.

    A NamedTuple: token counters are rebuilt per request with that request's cost.
    """

    name: str
    scope: Scope
    kind: Kind
    window: int  # seconds
    limit: int
    throttled: int  # the limit while the scope's volume signal fires under `throttle`
    cost: int
    key: str

    @property
    def tag(self) -> str:
        """The hash tag (Cluster slot) of the key."""
        return self.key[len(PREFIX) : self.key.index("}") + 1]


@dataclass(frozen=True, slots=True)
class VolumeWatch:
    """One scope's hourly volume baseline, checked for spikes on each request."""

    signal: str  # volume_spike_account | volume_spike_entity
    scope: Scope
    key: str
    settings: AnomalySettings

    @property
    def tag(self) -> str:
        """The hash tag (Cluster slot) of the key."""
        return self.key[len(PREFIX) : self.key.index("}") + 1]


class Observation(NamedTuple):
    """A member added to a pool's distinct count (a HyperLogLog), whose count comes back.

    E.g. the account into "accounts that sent this template this hour". A NamedTuple:
    a request makes several, and a frozen dataclass costs several times as much to build.
    """

    name: str  # the signal, e.g. "template_accounts"
    key: str
    member: str
    ttl_ms: int

    @property
    def tag(self) -> str:
        """The hash tag (Cluster slot) of the key."""
        return self.key[self.key.index("{") : self.key.index("}") + 1]


@dataclass(frozen=True, slots=True)
class Sightings:
    """What detection asks of the store besides the counters, all in the same call.

    Pool counts (observations), the account's request timing (gaps between its
    requests, hours of day), and the off-path analysis' verdicts on the account,
    on the request's network and on the templates near the request's (one key
    per SimHash band). Timing and account verdict keys carry the account's hash
    tag, the network verdict key the network pool's, each band key its own.
    """

    observations: tuple[Observation, ...] = ()
    timing_key: str = ""
    timing_ttl_ms: int = 0
    verdict_key: str = ""
    network_verdict_key: str = ""
    template_verdict_keys: tuple[str, ...] = ()

    def keys_in(self, tag: str) -> tuple[bool, bool, bool, tuple[int, ...]]:
        """Whether the timing, account and network verdict keys live in slot `tag`; which
        band keys do."""
        return (
            bool(self.timing_key) and _tag_of(self.timing_key) == tag,
            bool(self.verdict_key) and _tag_of(self.verdict_key) == tag,
            bool(self.network_verdict_key) and _tag_of(self.network_verdict_key) == tag,
            tuple(i for i, k in enumerate(self.template_verdict_keys) if _tag_of(k) == tag),
        )


def _tag_of(key: str) -> str:
    return key[key.index("{") : key.index("}") + 1]


@dataclass(frozen=True, slots=True)
class SlotGroup:
    """Counters and watches sharing one hash tag: what one script call may touch on Cluster."""

    tag: str
    counters: tuple[int, ...]
    volumes: tuple[int, ...]
    observations: tuple[int, ...] = ()
    timing: bool = False
    verdict: bool = False
    network_verdict: bool = False
    template_verdicts: tuple[int, ...] = ()  # indices into Sightings.template_verdict_keys


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a RateStore needs to check and charge one request."""

    counters: tuple[Counter, ...]
    volumes: tuple[VolumeWatch, ...] = ()
    on_store_failure: Literal["fail_open", "fail_closed"] = "fail_closed"
    fail_open_fraction: float = 0.1
    tokens: int = 0  # the estimated token cost charged to `tokens` limits
    sightings: Sightings | None = None

    @property
    def empty(self) -> bool:
        """Nothing to count or read: the request passes without touching a store."""
        return not self.counters and not self.volumes and self.sightings is None

    def whole(self) -> SlotGroup:
        """Everything in one group (standalone Redis, the memory store)."""
        s = self.sightings
        return SlotGroup(
            "",
            tuple(range(len(self.counters))),
            tuple(range(len(self.volumes))),
            tuple(range(len(s.observations))) if s else (),
            bool(s and s.timing_key),
            bool(s and s.verdict_key),
            bool(s and s.network_verdict_key),
            tuple(range(len(s.template_verdict_keys))) if s else (),
        )

    def groups(self) -> tuple[SlotGroup, ...]:
        """Counters, watches and sightings by hash tag, in plan order."""
        tags: dict[str, tuple[list[int], list[int], list[int]]] = {}
        for i, c in enumerate(self.counters):
            tags.setdefault(c.tag, ([], [], []))[0].append(i)
        for i, v in enumerate(self.volumes):
            tags.setdefault(v.tag, ([], [], []))[1].append(i)
        s = self.sightings
        if s is not None:
            for i, o in enumerate(s.observations):
                tags.setdefault(o.tag, ([], [], []))[2].append(i)
            for key in (
                s.timing_key,
                s.verdict_key,
                s.network_verdict_key,
                *s.template_verdict_keys,
            ):
                if key:
                    tags.setdefault(_tag_of(key), ([], [], []))
        groups = []
        for t, (cs, vs, os_) in tags.items():
            reads = s.keys_in(t) if s is not None else (False, False, False, ())
            groups.append(SlotGroup(t, tuple(cs), tuple(vs), tuple(os_), *reads))
        return tuple(groups)

    def local(self) -> Plan:
        """The plan for the fail-open local limiter: every limit times the fraction."""
        return dataclasses.replace(
            self,
            counters=tuple(
                c._replace(
                    limit=scaled(c.limit, self.fail_open_fraction),
                    throttled=scaled(c.throttled, self.fail_open_fraction),
                )
                for c in self.counters
            ),
        )


def scaled(limit: int, factor: float) -> int:
    """A limit times a factor, rounded down, never below 1."""
    return max(1, math.floor(limit * factor))


def plan_request(
    limits: CompiledLimits,
    *,
    account: str,
    entity: str,
    model: str | None,
    body_fields: Mapping[str, Any],
    min_tokens: int = 0,
    sightings: Sightings | None = None,
) -> Plan:
    """The plan of a request whose body has these top-level members (may be empty).

    `min_tokens` is a floor for bodies the boundary saw only in part: their
    members past the cut cannot be counted, their size still can.
    """
    estimate = estimate_tokens(body_fields, default_output=limits.default_output_tokens).total
    tokens = max(estimate, min_tokens)
    return build_plan(
        limits, account=account, entity=entity, model=model, tokens=tokens, sightings=sightings
    )


def build_plan(
    limits: CompiledLimits,
    *,
    account: str,
    entity: str,
    model: str | None,
    tokens: int,
    sightings: Sightings | None = None,
) -> Plan:
    """The counters and watches of one request (pure; no clock: keys do not depend on time)."""
    key = (id(limits), account, entity, model)
    cached = _shapes.get(key)
    if cached is None or cached[0] is not limits:
        if len(_shapes) >= _MAX_SHAPES:
            _shapes.clear()
        cached = _shapes[key] = (limits, _shape(limits, account, entity, model))
    counters, charges_tokens, volumes = cached[1]
    if charges_tokens:
        # Token counters cost the estimate; none is charged when there is nothing to
        # charge (an exhausted budget must not refuse a free request).
        counters = tuple(
            c
            if c.kind == "requests"
            else Counter(c.name, c.scope, c.kind, c.window, c.limit, c.throttled, tokens, c.key)
            for c in counters
            if c.kind == "requests" or tokens > 0
        )
    return Plan(
        counters=counters,
        volumes=volumes,
        on_store_failure=limits.on_store_failure,
        fail_open_fraction=limits.fail_open_fraction,
        tokens=tokens,
        sightings=sightings,
    )


# The counters of an (account, entity, model) under one CompiledLimits depend on
# nothing else: building names and keys is most of a plan's cost, so keep them.
_MAX_SHAPES = 65536
_shapes: dict[
    tuple[int, str, str, str | None],
    tuple[CompiledLimits, tuple[tuple[Counter, ...], bool, tuple[VolumeWatch, ...]]],
] = {}


def _shape(
    limits: CompiledLimits, account: str, entity: str, model: str | None
) -> tuple[tuple[Counter, ...], bool, tuple[VolumeWatch, ...]]:
    """Every counter a request of this caller and model touches (token costs left at 0)."""
    anomaly = limits.anomaly
    throttle = anomaly.throttle_factor if anomaly and anomaly.action == "throttle" else 1.0
    counters: list[Counter] = []

    def add(scope: Scope, scope_id: str, wl: WindowLimit, pattern: str | None) -> None:
        counters.append(
            Counter(
                name=policy_name(scope, wl, pattern),
                scope=scope,
                kind=wl.kind,
                window=wl.window,
                limit=wl.limit,
                throttled=scaled(wl.limit, throttle),
                cost=1 if wl.kind == "requests" else 0,
                key=counter_key(scope, scope_id, wl.kind, wl.window, pattern),
            )
        )

    for wl in limits.account:
        add("account", account, wl, None)
    for wl in limits.entity:
        add("entity", entity, wl, None)
    if model is not None:
        for rule in limits.models:
            if rule.regex.fullmatch(model):
                for wl in rule.account:
                    add("account", account, wl, rule.pattern)
                for wl in rule.entity:
                    add("entity", entity, wl, rule.pattern)
    volumes: tuple[VolumeWatch, ...] = ()
    if anomaly is not None:
        volumes = (
            VolumeWatch("volume_spike_account", "account", volume_key("account", account), anomaly),
            VolumeWatch("volume_spike_entity", "entity", volume_key("entity", entity), anomaly),
        )
    return tuple(counters), any(c.kind == "tokens" for c in counters), volumes
