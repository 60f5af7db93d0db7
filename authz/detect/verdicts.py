"""Verdicts of the off-path analysis: the values, and where verdicts are written.

The request path reads an account's verdict in its one Redis round trip, so a
verdict lives under the account's hash tag, in the slot of its counters.
Verdicts on a restricted campaign's own templates are kept by SimHash band, so
that a request finds those near its own SimHash under its four band values:

    dg:v:{a:<account>}          hash: action, cluster, score, until, reasons
    dg:v:{n:<network>}          the same, on a network (/24 or /48) a cluster owns
    dg:v:{b:<band>.<value>}     the same, and bits, simhashes (comma-separated hex)

`until` is epoch seconds (float text) and the key expires then (PEXPIREAT):
a verdict that the analysis stops renewing disappears by itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from redis.asyncio import Redis, RedisCluster

from authz.detect.keys import network_verdict_key, verdict_key
from authz.metering.result import VerdictView

Action = Literal["watch", "restrict", "deny"]
ACTIONS: tuple[Action, ...] = ("watch", "restrict", "deny")
# Verdicts per pipeline round trip; a larger batch is written in several.
WRITE_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """The analysis' judgement of one account, as one member of a cluster."""

    account: str
    action: Action
    cluster: str  # stable id of the cluster the account was judged in
    score: float  # the member's score (cluster score times its KYC multiplier), 0 to ~1.5
    reasons: tuple[str, ...]  # the score components that fired
    until: float  # epoch seconds; the verdict lapses then unless renewed

    @property
    def key(self) -> str:
        """Its store key (the account's slot)."""
        return verdict_key(self.account)

    def fields(self) -> dict[str, str]:
        """The Redis hash fields of this verdict."""
        return _fields(self)

    def view(self) -> VerdictView:
        """What the request path reads of it."""
        return VerdictView(self.action, self.cluster, self.score, self.until)


@dataclass(frozen=True, slots=True)
class TemplateVerdict:
    """The analysis' judgement of the templates a restricted cluster owns, by SimHash band.

    One per band value (`key`, see authz.detect.keys.band_key): the owned
    SimHashes with that value in that band. The request path applies it to any
    request whose SimHash is within `bits` of one of them, so a campaign's
    newly opened accounts are restricted from their first request.
    """

    key: str
    action: Action
    cluster: str  # the highest-scoring cluster owning a SimHash of the band value
    score: float  # its score
    reasons: tuple[str, ...]
    until: float
    bits: int
    simhashes: tuple[tuple[int, str], ...]  # each owned SimHash with the cluster owning it

    def fields(self) -> dict[str, str]:
        """The Redis hash fields of this verdict (`simhashes`: `<hex>:<cluster>,...`)."""
        return _fields(self) | {
            "bits": str(self.bits),
            "simhashes": ",".join(f"{h:016x}:{c}" for h, c in self.simhashes),
        }

    def view(self) -> VerdictView:
        """What the request path reads of it."""
        return VerdictView(
            self.action, self.cluster, self.score, self.until, self.bits, self.simhashes
        )


@dataclass(frozen=True, slots=True)
class NetworkVerdict:
    """The analysis' judgement of a network (/24 or /48) a restricted cluster owns.

    The request path applies it to every request from the network: a
    campaign's new account, calling through the campaign's proxies, is
    restricted from its first request.
    """

    network: str
    action: Action
    cluster: str  # the cluster that owns the network
    score: float  # its score
    reasons: tuple[str, ...]
    until: float

    @property
    def key(self) -> str:
        """Its store key (the slot of the network's pool counter)."""
        return network_verdict_key(self.network)

    def fields(self) -> dict[str, str]:
        """The Redis hash fields of this verdict."""
        return _fields(self)

    def view(self) -> VerdictView:
        """What the request path reads of it."""
        return VerdictView(self.action, self.cluster, self.score, self.until)


AnyVerdict = Verdict | TemplateVerdict | NetworkVerdict


def _fields(v: AnyVerdict) -> dict[str, str]:
    return {
        "action": v.action,
        "cluster": v.cluster,
        "score": repr(round(v.score, 4)),
        "until": repr(round(v.until, 3)),
        "reasons": ",".join(v.reasons),
    }


class VerdictSink(Protocol):
    """Where the analysis writes its verdicts."""

    async def put(self, verdicts: Sequence[AnyVerdict], *, now: float | None = None) -> None:
        """Store (or renew) every verdict until its `until`.

        `now` is the time the verdicts were computed at when that is not the
        wall clock (a replay in traffic time).
        """
        ...


class RedisVerdictSink:
    """Writes verdicts to Redis: HSET and PEXPIREAT per account, one pipeline per chunk.

    The pipeline is not a transaction, so it works on Redis Cluster, where the
    accounts' keys sit in many slots. A failed write raises; the caller retries.
    """

    def __init__(self, client: Redis | RedisCluster) -> None:
        self.client = client

    async def put(self, verdicts: Sequence[AnyVerdict], *, now: float | None = None) -> None:
        """Write the verdicts (see the class docstring).

        With `now` (a replay's traffic time) keys expire `until - now` from now by
        Redis' clock instead of at `until`, which is in the past for old traffic; the
        request path compares `until` with its own clock either way.
        """
        for start in range(0, len(verdicts), WRITE_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for v in verdicts[start : start + WRITE_CHUNK]:
                key = v.key
                pipe.hset(key, mapping=v.fields())  # type: ignore[arg-type]  # redis-py's stub wants a broader mapping
                if now is None:
                    pipe.pexpireat(key, int(v.until * 1000))
                else:
                    pipe.pexpire(key, max(1, int((v.until - now) * 1000)))
            await pipe.execute()


class MemoryVerdictSink:
    """Verdicts in a dict by store key: for tests and benchmarks."""

    def __init__(self) -> None:
        self.verdicts: dict[str, AnyVerdict] = {}

    async def put(self, verdicts: Sequence[AnyVerdict], *, now: float | None = None) -> None:
        """Keep each verdict, replacing the previous one under its key (`get` checks expiry)."""
        for v in verdicts:
            self.verdicts[v.key] = v

    def get(self, key: str, now: float) -> AnyVerdict | None:
        """The verdict stored under `key` in force at `now`, if any (expired ones are dropped)."""
        v = self.verdicts.get(key)
        if v is not None and v.until <= now:
            del self.verdicts[key]
            return None
        return v
