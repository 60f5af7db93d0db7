"""The off-path analysis: link accounts into clusters and score each cluster.

Pure Python and clock-driven: `observe` takes audit records (or their compact
`Observation`s) in any order, `analyze(now)` looks at the last `window`
seconds before `now` and returns verdicts. Nothing reads a clock.

One analysis, in order:

1. expire what is older than the window, and accounts with nothing left;
2. template clusters: exact template ids, then near-duplicates (SimHash LSH
   bands, confirmed by Hamming distance); a template cluster used by several
   identities is *shared*;
3. link accounts (union-find): strongly through the shared template clusters
   that carry their traffic, and by entity; weakly (two weak keys needed) by
   client fingerprint within one /24, sign-up cohort and synchronised timing;
   then again, with template links only into each group's core;
4. score each cluster of two or more accounts from named components
   (authz.detect.settings.Components), scaled down when it spans few
   identities (a verified entity counts once);
5. give each member a verdict from the cluster's score times its KYC
   multiplier; restriction needs several kinds of evidence in the cluster and
   some evidence of the member's own, and once given is held while the
   cluster qualifies;
6. give verdicts to the SimHashes of the template clusters a restricted
   cluster owns (in its core, used by several restricted members and by no
   one else), which the request path applies to every request near one
   (`template_verdicts`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from authz.audit.window import epoch_of
from authz.detect.keys import band_key, simhash_bands
from authz.detect.settings import KINDS, AnalysisSettings, OwnedVerdicts
from authz.detect.verdicts import ACTIONS, Action, NetworkVerdict, TemplateVerdict, Verdict

_HOUR = 3600.0
_DAY = 86400.0
T = TypeVar("T")


class RecordError(ValueError):
    """An audit record the analysis cannot use; `kind` is a stable counter label."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Observation:
    """What the analysis keeps of one audit record."""

    ts: float
    account: str
    entity: str = ""
    kyc: str = ""
    tier: str = ""
    created: float | None = None
    network: str = ""
    asn: int = 0
    client: str = ""
    template: str = ""
    simhash: int | None = None
    elicitation: float = 0.0
    model: str = ""
    prompt_chars: int = 0

    def to_compact(self) -> list[Any]:
        """A short JSON-ready list (the worker's observation log entry)."""
        return [
            self.ts,
            self.account,
            self.entity,
            self.kyc,
            self.tier,
            self.created,
            self.network,
            self.asn,
            self.client,
            self.template,
            None if self.simhash is None else f"{self.simhash:016x}",
            self.elicitation,
            self.model,
            self.prompt_chars,
        ]

    @classmethod
    def from_compact(cls, row: Sequence[Any]) -> Observation:
        """The inverse of `to_compact`; RecordError when the row is not one."""
        try:
            (
                ts,
                account,
                entity,
                kyc,
                tier,
                created,
                net,
                asn,
                client,
                tpl,
                sim,
                elic,
                model,
                chars,
            ) = row
            return cls(
                float(ts),
                str(account),
                str(entity),
                str(kyc),
                str(tier),
                None if created is None else float(created),
                str(net),
                int(asn),
                str(client),
                str(tpl),
                None if sim is None else int(sim, 16),
                float(elic),
                str(model),
                int(chars),
            )
        except (TypeError, ValueError) as exc:
            raise RecordError("bad_observation", f"not an observation: {exc}") from None


def _epoch(value: object, name: str) -> float:
    if not isinstance(value, str):
        raise RecordError("bad_field", f"{name!r} is not an RFC 3339 time")
    try:
        return epoch_of(value)
    except ValueError:
        raise RecordError(
            "bad_field", f"{name!r} is not an RFC 3339 time with its offset"
        ) from None


def parse_record(record: Mapping[str, Any]) -> Observation:
    """The Observation of an audit record (its proto3 JSON mapping); RecordError if unusable.

    A record needs `time` and `account`; a check that stopped before the detect
    phase has no `detection`, and its features read as unknown.
    """
    account = record.get("account")
    if not isinstance(account, str) or not account:
        raise RecordError("missing_field", "no 'account'")
    if "time" not in record:
        raise RecordError("missing_field", "no 'time'")
    ts = _epoch(record["time"], "time")
    created_text = record.get("account_created")
    created = None if created_text is None else _epoch(created_text, "account_created")
    det = record.get("detection") or {}
    if not isinstance(det, Mapping):
        raise RecordError("bad_field", "'detection' is not an object")
    try:
        sim_text = det.get("simhash") or ""
        return Observation(
            ts=ts,
            account=account,
            entity=str(record.get("entity") or ""),
            kyc=str(record.get("kyc") or ""),
            tier=str(record.get("tier") or ""),
            created=created,
            network=str(record.get("client_network") or ""),
            asn=int(record.get("asn") or 0),
            client=str(det.get("client") or ""),
            template=str(det.get("template") or ""),
            simhash=int(sim_text, 16) if sim_text else None,
            elicitation=float(det.get("elicitation") or 0.0),
            model=str(record.get("model") or ""),
            prompt_chars=int(det.get("prompt_chars") or 0),
        )
    except (TypeError, ValueError) as exc:
        raise RecordError("bad_field", f"bad field: {exc}") from None


class UnionFind(Generic[T]):
    """Disjoint sets with path halving and union by size."""

    def __init__(self) -> None:
        self._parent: dict[T, T] = {}
        self._size: dict[T, int] = {}

    def __contains__(self, item: object) -> bool:
        return item in self._parent

    def __iter__(self) -> Iterator[T]:
        return iter(self._parent)

    def add(self, item: T) -> None:
        """Make `item` a set of its own unless it is known."""
        if item not in self._parent:
            self._parent[item] = item
            self._size[item] = 1

    def find(self, item: T) -> T:
        """The representative of `item`'s set."""
        parent = self._parent
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    def union(self, a: T, b: T) -> None:
        """Join the sets of `a` and `b`."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self._size[ra] < self._size[rb]:
            ra, rb = rb, ra
        self._parent[rb] = ra
        self._size[ra] += self._size[rb]


class TemplateIndex:
    """Templates seen within the window, with their near-duplicate links.

    Candidates come from the SimHash's four 16-bit bands: two hashes at most
    `max_bits` apart differ in at most `max_bits // 4` bits of one band
    (pigeonhole), so a new template looks up, for each band, the bucket of its
    own value and of every value that many bits away. It is compared, once,
    with at most `max_pairs` templates of each bucket (the oldest), and the
    pairs within `max_bits` are kept as links; an analysis then only joins
    linked live templates. Comparing once on arrival rather than in every
    analysis keeps an analysis cheap, and the cap bounds the work when many
    hashes collide (stock phrases).
    """

    def __init__(self, max_bits: int, max_pairs: int) -> None:
        self.max_bits = max_bits
        self.max_pairs = max_pairs
        self.radius = max_bits // 4  # bits flipped within one band when probing
        self._masks = _probe_masks(self.radius)
        self._last: dict[str, float] = {}  # template id -> last seen
        self._simhash: dict[str, int] = {}
        self._near: dict[str, set[str]] = {}
        # band key -> its templates (oldest first) with their SimHashes, read in one pass
        self._buckets: dict[int, dict[str, int]] = {}

    def __len__(self) -> int:
        return len(self._last)

    def simhash(self, template: str) -> int | None:
        """The SimHash of a template seen within the window, if it came with one."""
        return self._simhash.get(template)

    def add(self, template: str, simhash: int | None, ts: float) -> None:
        """Note a sighting of `template` at `ts`."""
        last = self._last.get(template)
        if last is not None:
            if ts > last:
                self._last[template] = ts
            return
        self._last[template] = ts
        if simhash is None:
            return
        self._simhash[template] = simhash
        max_bits, buckets, keys = self.max_bits, self._buckets, _band_keys(simhash)
        for key in keys:
            for mask in self._masks:
                bucket = buckets.get(key ^ mask)
                if not bucket:
                    continue
                for other, h in itertools.islice(bucket.items(), self.max_pairs):
                    if (h ^ simhash).bit_count() <= max_bits:
                        self._near.setdefault(template, set()).add(other)
                        self._near.setdefault(other, set()).add(template)
        for key in keys:
            buckets.setdefault(key, {})[template] = simhash

    def expire(self, cutoff: float) -> None:
        """Forget templates last seen before `cutoff`."""
        old = [t for t, last in self._last.items() if last < cutoff]
        for template in old:
            del self._last[template]
            simhash = self._simhash.pop(template, None)
            if simhash is not None:
                for key in _band_keys(simhash):
                    bucket = self._buckets[key]
                    del bucket[template]
                    if not bucket:
                        del self._buckets[key]
            for other in self._near.pop(template, ()):
                links = self._near.get(other)
                if links is not None:
                    links.discard(template)
                    if not links:
                        del self._near[other]

    def groups(self, live: Iterable[str]) -> dict[str, str]:
        """Each live template's cluster, named by its smallest member id."""
        alive = set(live)
        out = dict.fromkeys(alive, "")
        uf: UnionFind[str] = UnionFind()
        for template in alive:
            for other in self._near.get(template, ()):
                if other in alive:
                    uf.add(template)
                    uf.add(other)
                    uf.union(template, other)
        names: dict[str, str] = {}
        for template in uf:
            root = uf.find(template)
            if template < names.get(root, "~"):
                names[root] = template
        for template in out:
            out[template] = names[uf.find(template)] if template in uf else template
        return out


def _band_keys(h: int) -> tuple[int, ...]:
    """The four 16-bit bands of a SimHash as bucket keys (the band's number above its bits)."""
    return tuple(band << 16 | value for band, value in enumerate(simhash_bands(h)))


def _probe_masks(radius: int) -> tuple[int, ...]:
    """Every 16-bit mask with at most `radius` bits set, the empty one first."""
    return tuple(
        sum(1 << bit for bit in bits)
        for k in range(radius + 1)
        for bits in itertools.combinations(range(16), k)
    )


@dataclass(slots=True)
class _Event:
    ts: float
    template: str
    network: str
    place: str  # AS number when known, else the /24: what a proxy pool varies
    client: str
    model: str
    elicitation: float


@dataclass(slots=True)
class _Account:
    entity: str
    kyc: str
    created: float | None
    last: float
    events: dict[object, _Event] = field(default_factory=dict)
    summary: _Summary | None = None  # of the last analysis, while nothing changed


@dataclass(slots=True)
class _Summary:
    """One account's window, as the analysis needs it."""

    account: str
    identity: str
    kyc: str
    created: float | None
    events: list[_Event]
    templates: Counter[str]
    places: int
    client: str  # the account's most used client fingerprint
    pairs: set[tuple[str, str]]  # (client, network)
    networks: set[str]  # the /24s (or /48s) it called from
    gaps: int
    cv: float | None
    median_gap: float
    shared_share: float = 0.0  # of its requests, on shared template clusters
    linked: set[str] = field(default_factory=set)  # shared template clusters it links through


@dataclass(frozen=True, slots=True)
class _Context:
    """What one analysis learnt about the whole window, shared by every cluster's judgement."""

    now: float
    template_cluster: Mapping[str, str]  # template id -> template cluster
    shared: set[str]  # template clusters several identities use
    cluster_identities: Mapping[str, set[str]]  # template cluster -> identities that used it
    network_identities: Mapping[str, set[str]]  # network -> identities that used it
    cohorts: Mapping[str, int]  # account -> sign-up cohort number
    new_after: float  # accounts opened after this are new
    new_models: Mapping[str, float]  # model -> first appearance, for models released lately


@dataclass(frozen=True, slots=True)
class ClusterReport:
    """One cluster as the last analysis saw it: for logs, the harness and baselines."""

    cluster: str
    accounts: int
    identities: int
    score: float
    strengths: dict[str, float]
    values: dict[str, float]
    reasons: tuple[str, ...]
    kinds: int
    action: str  # the cluster's own action before KYC multipliers and member checks


class Analyzer:
    """Links accounts into clusters and scores them (see the module docstring)."""

    def __init__(self, settings: AnalysisSettings | None = None) -> None:
        self.settings = settings or AnalysisSettings()
        self._accounts: dict[str, _Account] = {}
        link = self.settings.linking
        self._templates = TemplateIndex(link.near_duplicate_bits, link.max_bucket_pairs)
        self._model_first: dict[str, float] = {}
        self._started: float | None = None
        self.latest: float | None = None  # the newest record time seen: the worker's clock
        self._seq = 0
        self._cluster_of: dict[str, str] = {}  # account -> cluster id of the last analysis
        # account -> until when its restriction lasts, and the most it may be
        self._held: dict[str, tuple[float, Action]] = {}
        self.clusters: list[ClusterReport] = []
        self.template_verdicts: list[TemplateVerdict] = []  # of the last analysis
        self.network_verdicts: list[NetworkVerdict] = []  # of the last analysis

    def __len__(self) -> int:
        return sum(len(a.events) for a in self._accounts.values())

    @property
    def accounts(self) -> int:
        """Accounts with state."""
        return len(self._accounts)

    def observe(self, record: Mapping[str, Any], source: object = None) -> None:
        """Ingest one audit record; RecordError when it cannot be used.

        `source` (e.g. the stream entry id) makes ingestion idempotent: a record
        seen twice under one source counts once.
        """
        self.add(parse_record(record), source)

    def add(self, obs: Observation, source: object = None) -> None:
        """Ingest one observation (see `observe`)."""
        acc = self._accounts.get(obs.account)
        if acc is None:
            acc = self._accounts[obs.account] = _Account(obs.entity, obs.kyc, obs.created, obs.ts)
        else:
            acc.entity, acc.kyc, acc.last = obs.entity, obs.kyc, max(acc.last, obs.ts)
            if obs.created is not None:
                acc.created = obs.created
        acc.summary = None
        if source is None:
            self._seq += 1
            source = self._seq
        if len(acc.events) >= self.settings.max_events_per_account and source not in acc.events:
            del acc.events[next(iter(acc.events))]  # the oldest arrival
        # A short prompt's template is weak evidence: thousands of people say "hi".
        template = (
            obs.template if obs.prompt_chars >= self.settings.linking.min_template_chars else ""
        )
        acc.events[source] = _Event(
            obs.ts,
            template,
            obs.network,
            str(obs.asn) if obs.asn else obs.network,
            obs.client,
            obs.model,
            obs.elicitation,
        )
        if template:
            self._templates.add(template, obs.simhash, obs.ts)
        if obs.model and obs.ts < self._model_first.get(obs.model, math.inf):
            self._model_first[obs.model] = obs.ts
        if self._started is None or obs.ts < self._started:
            self._started = obs.ts
        if self.latest is None or obs.ts > self.latest:
            self.latest = obs.ts

    # --- analysis -----------------------------------------------------------------

    def analyze(self, now: float) -> list[Verdict]:
        """Cluster the accounts seen in the window before `now` and judge each member."""
        summaries = self._expire_and_summarize(now)
        template_cluster = self._template_clusters(summaries)
        shared, users = self._shared_template_clusters(summaries, template_cluster)
        cohorts = self._cohorts(summaries, now)
        network_users: dict[str, set[str]] = {}
        for summary in summaries.values():
            for network in summary.networks:
                network_users.setdefault(network, set()).add(summary.identity)
        ctx = _Context(
            now,
            template_cluster,
            shared,
            users,
            network_users,
            cohorts,
            now - self.settings.new_account_days * _DAY,
            self._new_models(),
        )
        groups = self._link(summaries, ctx)
        self._held = {a: held for a, held in self._held.items() if held[0] > now}
        verdicts: list[Verdict] = []
        reports: list[ClusterReport] = []
        owners: dict[int, ClusterReport] = {}  # owned SimHash -> best cluster owning it
        network_owners: dict[str, ClusterReport] = {}  # owned network -> its cluster
        assigned: dict[str, str] = {}
        for members in self._stable_order(groups):
            cluster_id = self._cluster_id(members, assigned)
            report, member_verdicts, owns, networks = self._judge(cluster_id, members, ctx)
            reports.append(report)
            verdicts.extend(member_verdicts)
            for h in self._owned_simhashes(members, owns, ctx) if owns else ():
                if h not in owners or report.score > owners[h].score:
                    owners[h] = report
            for network in networks:
                if network not in network_owners or report.score > network_owners[network].score:
                    network_owners[network] = report
            for s in members:
                assigned[s.account] = cluster_id
        self._cluster_of = assigned
        self.clusters = reports
        self.template_verdicts = self._template_verdicts(owners, now)
        self.network_verdicts = self._network_verdicts(network_owners, now)
        return verdicts

    def _expire_and_summarize(self, now: float) -> dict[str, _Summary]:
        s = self.settings
        cutoff = now - s.window
        summaries: dict[str, _Summary] = {}
        for account in list(self._accounts):
            acc = self._accounts[account]
            events = acc.events
            # Arrival order is nearly time order: drop from the front, then filter stragglers.
            while events and next(iter(events.values())).ts < cutoff:
                del events[next(iter(events))]
                acc.summary = None
            if not events:
                del self._accounts[account]
                continue
            summary = acc.summary
            if summary is None or summary.events[0].ts < cutoff:
                live = sorted((e for e in events.values() if cutoff <= e.ts <= now), key=_ts)
                if not live:
                    continue
                summary = _summarize(account, acc, live)
                # Reusable next time unless a request lies beyond `now` (it would join later).
                acc.summary = summary if len(live) == len(events) else None
            summaries[account] = summary
        if len(self._accounts) > s.max_accounts:
            idle = sorted(self._accounts, key=lambda a: self._accounts[a].last)
            for account in idle[: len(self._accounts) - s.max_accounts]:
                del self._accounts[account]
                summaries.pop(account, None)
        self._templates.expire(cutoff)
        return summaries

    def _template_clusters(self, summaries: Mapping[str, _Summary]) -> dict[str, str]:
        """Each live template id's cluster: near-duplicate SimHashes joined."""
        return self._templates.groups(t for s in summaries.values() for t in s.templates)

    def _shared_template_clusters(
        self, summaries: Mapping[str, _Summary], template_cluster: Mapping[str, str]
    ) -> tuple[set[str], dict[str, set[str]]]:
        """The shared template clusters, and every template cluster's identities."""
        users: dict[str, set[str]] = {}
        for summary in summaries.values():
            for t in summary.templates:
                users.setdefault(template_cluster[t], set()).add(summary.identity)
        need = self.settings.linking.shared_template_identities
        shared = {tc for tc, ids in users.items() if len(ids) >= need}
        link = self.settings.linking
        for summary in summaries.values():
            per_cluster: Counter[str] = Counter()
            for t, n in summary.templates.items():
                if (tc := template_cluster[t]) in shared:
                    per_cluster[tc] += n
            requests = len(summary.events)
            summary.shared_share = sum(per_cluster.values()) / requests
            if per_cluster and summary.shared_share >= link.template_share:
                # Only clusters that carry a real part of the account's own traffic, next
                # to its main one: ordinary prompts mixed in on popular frames (cover
                # traffic, a hydra cluster) must not join the frames' benign users.
                floor = max(
                    link.template_link_share * requests,
                    link.template_link_ratio * max(per_cluster.values()),
                )
                summary.linked = {tc for tc, n in per_cluster.items() if n >= floor}
        return shared, users

    def _cohorts(self, summaries: Mapping[str, _Summary], now: float) -> dict[str, int]:
        """Accounts opened in a sign-up cohort, with the cohort's number."""
        link = self.settings.linking
        recent = sorted(
            (s.created, s.account, s.client)
            for s in summaries.values()
            if s.created is not None and s.created >= now - self.settings.new_account_days * _DAY
        )
        cohorts: dict[str, int] = {}
        run: list[tuple[float, str, str]] = []
        number = 0

        def close(run: list[tuple[float, str, str]]) -> None:
            nonlocal number
            by_client: dict[str, list[str]] = {}
            for _, account, client in run:
                by_client.setdefault(client, []).append(account)
            for accounts in by_client.values():
                if len(accounts) >= link.cohort_min:
                    number += 1
                    for account in accounts:
                        cohorts[account] = number

        for item in recent:
            if run and item[0] - run[-1][0] > link.cohort_gap:
                close(run)
                run = []
            run.append(item)
        close(run)
        return cohorts

    def _link(self, summaries: Mapping[str, _Summary], ctx: _Context) -> list[list[_Summary]]:
        """Clusters of two or more accounts.

        Strong links join two accounts by themselves: a shared template cluster
        both concentrate on, one entity. Weak links (one client fingerprint on
        one /24, a sign-up cohort, a synchronised timing bucket) join two
        groups of strongly linked accounts (or single accounts) only when they
        share at least `weak_meetings` of them: any one alone is often chance
        (neighbours behind a NAT, a user whose address a residential proxy also
        uses, a sign-up next to a campaign's burst).

        Linking runs twice. The first pass finds each group's core, the
        template clusters that many of its members are linked through; the
        second keeps only template links into a core. A group held together by
        its own templates thus lets go of accounts tied to it by a template few
        of its members use: the people on a popular frame that a campaign's
        cover traffic also uses.
        """
        link = self.settings.linking
        for group in self._union(summaries, ctx):
            if len(group) < 2:
                continue
            uses = Counter(tc for m in group for tc in m.linked)
            need = max(
                2.0,
                min(
                    link.core_share * len(group),
                    link.core_relative * max(uses.values(), default=0),
                ),
            )
            core = {tc for tc, n in uses.items() if n >= need}
            for m in group:
                m.linked &= core
        return [g for g in self._union(summaries, ctx) if len(g) >= 2]

    def _union(self, summaries: Mapping[str, _Summary], ctx: _Context) -> list[list[_Summary]]:
        """One pass of union-find over the strong and weak links; every group, singletons too."""
        link = self.settings.linking
        uf: UnionFind[str] = UnionFind()
        first: dict[tuple[str, ...], str] = {}
        weak: dict[tuple[str, ...], list[str]] = {}

        def join(key: tuple[str, ...], account: str) -> None:
            other = first.setdefault(key, account)
            if other != account:
                uf.union(other, account)

        for s in summaries.values():
            uf.add(s.account)
            for tc in s.linked:
                join(("t", tc), s.account)
            if link.entity and s.identity.startswith("e:"):
                join(("e", s.identity), s.account)
            for key in self._weak_keys(s, ctx):
                weak.setdefault(key, []).append(s.account)
        # Count meetings between the groups strong links made: a campaign's accounts
        # are mostly one group by then, which leaves few pairs to count.
        grouped = {key: sorted({uf.find(a) for a in accounts}) for key, accounts in weak.items()}
        for a, b in _met_often(grouped, link.weak_meetings, link.max_weak_key_accounts):
            uf.union(a, b)
        groups: dict[str, list[_Summary]] = {}
        for s in summaries.values():
            groups.setdefault(uf.find(s.account), []).append(s)
        return list(groups.values())

    def _weak_keys(self, s: _Summary, ctx: _Context) -> Iterator[tuple[str, ...]]:
        link = self.settings.linking
        if link.client_network:
            for client, network in s.pairs:
                if client and network:
                    yield ("n", client, network)
        if s.account in ctx.cohorts:
            yield ("c", str(ctx.cohorts[s.account]))
        if link.timing and self._regular(s) and s.median_gap > 0:
            yield ("s", str(round(math.log(s.median_gap) / math.log(1.5))), s.client)

    def _stable_order(self, groups: list[list[_Summary]]) -> list[list[_Summary]]:
        """Largest clusters first, so they keep their ids when an old cluster splits."""
        for g in groups:
            g.sort(key=lambda s: s.account)
        return sorted(groups, key=lambda g: (-len(g), g[0].account))

    def _cluster_id(self, members: Sequence[_Summary], taken: Mapping[str, str]) -> str:
        """The id most members had last time, unless a larger cluster took it; else a new one."""
        used = set(taken.values())
        previous = Counter(
            self._cluster_of[s.account] for s in members if s.account in self._cluster_of
        )
        for cid, _ in sorted(previous.items(), key=lambda kv: (-kv[1], kv[0])):
            if cid not in used:
                return cid
        digest = min(hashlib.sha256(s.account.encode()).hexdigest() for s in members)
        cid = "c" + digest[:12]
        n = 1
        while cid in used:
            n += 1
            cid = f"c{digest[:12]}-{n}"
        return cid

    def _judge(
        self, cluster_id: str, members: Sequence[_Summary], ctx: _Context
    ) -> tuple[ClusterReport, list[Verdict], set[str], list[str]]:
        """Score a cluster, give each member its verdict, name the templates and networks it owns.

        Template clusters come as a set; networks as a list, those most members
        used first, at most `network_verdicts.max_per_cluster`.
        """
        s = self.settings
        identities = {m.identity for m in members}
        core = set().union(*(m.linked for m in members))  # the templates that bind the cluster
        values = self._cluster_values(members, core, ctx)
        strengths = {n: getattr(s.components, n).strength(v) for n, v in values.items()}
        weights = {n: getattr(s.components, n).weight for n in values}
        factor = min(1.0, len(identities) / s.full_identities)
        score = (
            factor * sum(strengths[n] * weights[n] for n in values) / (sum(weights.values()) or 1)
        )
        reasons = tuple(n for n in values if strengths[n] >= s.fire and weights[n] > 0)
        kinds = len({KINDS[n] for n in reasons})
        report = ClusterReport(
            cluster_id,
            len(members),
            len(identities),
            round(score, 4),
            {k: round(v, 3) for k, v in strengths.items()},
            {k: round(v, 3) for k, v in values.items()},
            reasons,
            kinds,
            _action(score, s) or "none",
        )
        member_scores = {m.account: score * s.kyc_multipliers.get(m.kyc, 1.0) for m in members}
        actions = {a: _action(v, s) for a, v in member_scores.items()}
        by_score = (
            {a for a, action in actions.items() if action in ("restrict", "deny")}
            if kinds >= s.min_kinds
            else set()
        )
        owned = self._owned(
            members,
            by_score,
            lambda m: {ctx.template_cluster[t] for t in m.templates} & core,
            ctx.cluster_identities,
            s.template_verdicts,
        )
        enforced: set[str] = set()  # members restricted or denied after their own checks
        verdicts: list[Verdict] = []
        for m in members:
            member_score = member_scores[m.account]
            action = actions[m.account]
            if action is None:
                continue
            ceiling = self._member_ceiling(m, core, owned, ctx)
            held = self._held.get(m.account)
            if held is not None and (ceiling is None or _rank(held[1]) > _rank(ceiling)):
                ceiling = held[1]
            if action != "watch" and (kinds < s.min_kinds or ceiling is None):
                action = "watch"  # not enough kinds of evidence, or none of the member's own
            elif ceiling is not None and _rank(action) > _rank(ceiling):
                action = ceiling
            if action != "watch" and ceiling is not None:
                # Once a member has passed its own checks it stays restricted while its
                # cluster qualifies: its own evidence wavers as requests enter and leave the
                # window, and each lapse would serve it in full again.
                self._held[m.account] = (ctx.now + s.verdict_ttl, ceiling)
            if action != "watch":
                enforced.add(m.account)
            action, said = _shadowed(action, reasons, s.shadow)
            verdicts.append(
                Verdict(
                    m.account,
                    action,
                    cluster_id,
                    round(member_score, 4),
                    said,
                    ctx.now + s.verdict_ttl,
                )
            )
        # A network is owned only through members restricted on their own evidence, and
        # every other identity on it, member or not, is an outsider: a customer swept
        # into the cluster never turns its home network into the campaign's.
        networks = self._owned(
            members,
            enforced,
            lambda m: m.networks,
            ctx.network_identities,
            s.network_verdicts,
            insiders_only=True,
        )
        on_network = Counter(n for m in members for n in m.networks & networks)
        ranked = sorted(networks, key=lambda n: (-on_network[n], n))
        return report, verdicts, owned, ranked[: s.network_verdicts.max_per_cluster]

    @staticmethod
    def _owned(
        members: Sequence[_Summary],
        by_score: set[str],
        used: Callable[[_Summary], set[str]],
        users: Mapping[str, set[str]],
        rule: OwnedVerdicts,
        *,
        insiders_only: bool = False,
    ) -> set[str]:
        """What of the things its members `used` this cluster owns (see OwnedVerdicts).

        `by_score`: the members whose use counts towards `min_identities`;
        `users`: each thing's identities over the whole window. Outsiders are
        the identities that are not members, or with `insiders_only` every
        identity not in `by_score`.
        """
        if not rule.enabled or not by_score:
            return set()
        members_on: dict[str, set[str]] = {}  # thing -> member identities
        restricted_on: dict[str, set[str]] = {}
        for m in members:
            for thing in used(m):
                members_on.setdefault(thing, set()).add(m.identity)
                if m.account in by_score:
                    restricted_on.setdefault(thing, set()).add(m.identity)
        return {
            thing
            for thing, ids in restricted_on.items()
            if len(ids) >= rule.min_identities
            and len(users[thing] - (ids if insiders_only else members_on[thing]))
            <= rule.max_outsiders
        }

    def _owned_simhashes(
        self, members: Sequence[_Summary], owned: set[str], ctx: _Context
    ) -> list[int]:
        """SimHashes of the members' templates on owned template clusters.

        At most `max_per_cluster`, those most members used first.
        """
        users: dict[str, set[str]] = {}  # template id on an owned cluster -> member identities
        for m in members:
            for t in m.templates:
                if ctx.template_cluster[t] in owned:
                    users.setdefault(t, set()).add(m.identity)
        ranked = sorted((-len(ids), t) for t, ids in users.items())
        hashes = (self._templates.simhash(t) for _, t in ranked)
        limit = self.settings.template_verdicts.max_per_cluster
        return list(dict.fromkeys(h for h in hashes if h is not None))[:limit]

    def _template_verdicts(
        self, owners: Mapping[int, ClusterReport], now: float
    ) -> list[TemplateVerdict]:
        """One verdict per band value of the owned SimHashes (see TemplateVerdict).

        Each SimHash carries the cluster that owns it; the highest-scoring
        clusters' SimHashes are kept first when a cap (`max_total`,
        `max_per_key`) is reached.
        """
        s = self.settings
        tv = s.template_verdicts
        ranked = sorted(owners, key=lambda h: (-owners[h].score, owners[h].cluster, h))
        by_key: dict[str, list[int]] = {}
        for h in ranked[: tv.max_total]:
            for band, value in enumerate(simhash_bands(h)):
                kept = by_key.setdefault(band_key(band, value), [])
                if len(kept) < tv.max_per_key:
                    kept.append(h)
        out = []
        for key, hashes in sorted(by_key.items()):
            top = owners[hashes[0]]
            action, reasons = _shadowed(tv.action, top.reasons, s.shadow)
            out.append(
                TemplateVerdict(
                    key,
                    action,
                    top.cluster,
                    top.score,
                    reasons,
                    now + s.verdict_ttl,
                    s.linking.near_duplicate_bits,
                    tuple((h, owners[h].cluster) for h in hashes),
                )
            )
        return out

    def _network_verdicts(
        self, owners: Mapping[str, ClusterReport], now: float
    ) -> list[NetworkVerdict]:
        """One verdict per owned network, naming the cluster that owns it (at most
        `max_total`, those of the highest-scoring clusters first)."""
        s = self.settings
        ranked = sorted(owners, key=lambda n: (-owners[n].score, owners[n].cluster, n))
        out = []
        for network in sorted(ranked[: s.network_verdicts.max_total]):
            report = owners[network]
            action, reasons = _shadowed(s.network_verdicts.action, report.reasons, s.shadow)
            out.append(
                NetworkVerdict(
                    network, action, report.cluster, report.score, reasons, now + s.verdict_ttl
                )
            )
        return out

    def _cluster_values(
        self, members: Sequence[_Summary], core: set[str], ctx: _Context
    ) -> dict[str, float]:
        """The raw value of every score component over a cluster's members."""
        s = self.settings
        active = [m for m in members if len(m.events) >= s.member_min_requests] or list(members)
        churn = [_churn(m) for m in members if len(m.events) >= 2]
        judged = [m for m in members if m.cv is not None and m.gaps >= s.timing.min_gaps]
        spread: dict[tuple[str, int], set[str]] = {}
        elicitation = 0.0
        requests = pivot_hits = pivot_eligible = 0
        for m in members:
            for e in m.events:
                requests += 1
                elicitation += e.elicitation
                if e.template and (tc := ctx.template_cluster[e.template]) in core:
                    spread.setdefault((tc, int(e.ts // _HOUR)), set()).add(m.identity)
                hit, eligible = _pivot(e, ctx.new_models, s.pivot_window)
                pivot_hits += hit
                pivot_eligible += eligible
        return {
            "template_spread": float(max((len(v) for v in spread.values()), default=0)),
            "template_concentration": statistics.median(
                _core_share(m, core, ctx.template_cluster) for m in active
            ),
            "elicitation": elicitation / requests if requests else 0.0,
            "regular_timing": _share(judged, self._regular) if judged else 0.0,
            "model_pivot": pivot_hits / pivot_eligible if pivot_eligible >= 5 else 0.0,
            "new_accounts": _share(members, lambda m: _is_new(m, ctx.new_after)),
            "unverified": _share(members, lambda m: m.kyc != "verified"),
            "signup_cohort": _share(members, lambda m: m.account in ctx.cohorts),
            "proxy_pool": float(statistics.median(m.places for m in active)),
            "network_churn": statistics.median(churn) if churn else 0.0,
        }

    def _regular(self, m: _Summary) -> bool:
        t = self.settings.timing
        return m.cv is not None and m.gaps >= t.min_gaps and m.cv <= t.cv_regular

    def _member_ceiling(
        self, m: _Summary, core: set[str], owned: set[str], ctx: _Context
    ) -> Action | None:
        """The most a member's own evidence allows (None: watch at most).

        `member_min_requests` requests and `member_min_kinds` kinds of its own allow
        deny. With fewer requests, all on template clusters the cluster owns, the
        member (a campaign's new account has nothing else to show) may be given
        `template_verdicts.action` at most, and only with `member_min_kinds` kinds
        of its own besides being on the cluster's templates: using a campaign's
        template is never enough by itself.
        """
        s = self.settings
        evidence = self._own_evidence(m, core, ctx)
        if len(m.events) >= s.member_min_requests:
            kinds = {KINDS[n] for n in evidence}
            return "deny" if len(kinds) >= s.member_min_kinds else None
        on_owned = bool(owned) and all(
            e.template and ctx.template_cluster[e.template] in owned for e in m.events
        )
        kinds = {KINDS[n] for n in evidence if n != "template_concentration"}
        if on_owned and len(kinds) >= s.member_min_kinds:
            return s.template_verdicts.action
        return None

    def _own_evidence(self, m: _Summary, core: set[str], ctx: _Context) -> list[str]:
        """The components a member shows by itself (the cluster-wide spread excepted)."""
        s = self.settings
        hits = eligible = 0
        for e in m.events:
            h, el = _pivot(e, ctx.new_models, s.pivot_window)
            hits += h
            eligible += el
        values = {
            "template_concentration": _core_share(m, core, ctx.template_cluster),
            "elicitation": sum(e.elicitation for e in m.events) / len(m.events),
            "regular_timing": 1.0 if self._regular(m) else 0.0,
            "model_pivot": hits / eligible if eligible else 0.0,
            "new_accounts": 1.0 if _is_new(m, ctx.new_after) else 0.0,
            "unverified": 1.0 if m.kyc != "verified" else 0.0,
            "signup_cohort": 1.0 if m.account in ctx.cohorts else 0.0,
            "proxy_pool": float(m.places),
            "network_churn": _churn(m),
        }
        return [n for n, v in values.items() if getattr(s.components, n).strength(v) >= s.fire]

    def _new_models(self) -> dict[str, float]:
        """Models first seen after the warm-up: their first appearance."""
        if self._started is None:
            return {}
        known_until = self._started + self.settings.pivot_warmup
        return {m: t for m, t in self._model_first.items() if t > known_until}


def _ts(e: _Event) -> float:
    return e.ts


def _summarize(account: str, acc: _Account, live: list[_Event]) -> _Summary:
    templates: Counter[str] = Counter(e.template for e in live if e.template)
    clients = Counter(e.client for e in live)
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(live)]
    cv: float | None = None
    median_gap = 0.0
    if len(gaps) >= 2:
        mean = sum(gaps) / len(gaps)
        if mean > 0:
            cv = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps)) / mean
        median_gap = statistics.median(gaps)
    verified = acc.kyc == "verified" and acc.entity
    return _Summary(
        account=account,
        identity=f"e:{acc.entity}" if verified else f"a:{account}",
        kyc=acc.kyc,
        created=acc.created,
        events=live,
        templates=templates,
        places=len({e.place for e in live if e.place}),
        client=clients.most_common(1)[0][0],
        pairs={(e.client, e.network) for e in live},
        networks={e.network for e in live if e.network},
        gaps=len(gaps),
        cv=cv,
        median_gap=median_gap,
    )


def _met_often(
    met: Mapping[tuple[str, ...], list[str]], meetings: int, max_accounts: int
) -> Iterator[tuple[str, str]]:
    """Pairs (of accounts, or of groups) that share at least `meetings` weak keys.

    Each key's members must come sorted and without repeats.

    Accounts of one proxy pool meet on many networks, and in cohorts and timing
    buckets besides. Keys of more than `max_accounts` accounts are skipped:
    too common to tell anything, and quadratic to count.
    """
    counts: Counter[tuple[str, str]] = Counter()
    for accounts in met.values():
        if 2 <= len(accounts) <= max_accounts:
            counts.update(itertools.combinations(accounts, 2))  # sorted, so each pair once
    return (pair for pair, n in counts.items() if n >= meetings)


def _core_share(m: _Summary, core: set[str], template_cluster: Mapping[str, str]) -> float:
    on_core = sum(n for t, n in m.templates.items() if template_cluster[t] in core)
    return on_core / len(m.events)


def _churn(m: _Summary) -> float:
    """Share of a member's requests after the first that brought a network new to it
    (0 for a single request)."""
    return (m.places - 1) / (len(m.events) - 1) if len(m.events) > 1 and m.places else 0.0


def _is_new(m: _Summary, new_after: float) -> bool:
    return m.created is not None and m.created >= new_after


def _share(members: Sequence[_Summary], test: Any) -> float:
    return sum(1 for m in members if test(m)) / len(members)


def _pivot(e: _Event, new_models: Mapping[str, float], window: float) -> tuple[int, int]:
    """(hit, eligible): whether the request fell within a new model's pivot window, and used it."""
    eligible = 0
    for model, first in new_models.items():
        if first <= e.ts <= first + window:
            if e.model == model:
                return 1, 1
            eligible = 1
    return 0, eligible


def _shadowed(
    action: Action, reasons: tuple[str, ...], shadow: bool
) -> tuple[Action, tuple[str, ...]]:
    """A verdict's action and reasons as written: in shadow mode, `watch` led by what it
    would have been (`shadow:restrict`)."""
    if shadow and action != "watch":
        return "watch", (f"shadow:{action}", *reasons)
    return action, reasons


def _rank(action: Action) -> int:
    return ACTIONS.index(action)


def _action(score: float, s: AnalysisSettings) -> Action | None:
    t = s.thresholds
    if score >= t.deny:
        return ACTIONS[2]
    if score >= t.restrict:
        return ACTIONS[1]
    if score >= t.watch:
        return ACTIONS[0]
    return None


def observe_all(analyzer: Analyzer, records: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Feed records to an analyzer; the unusable ones counted by kind."""
    bad: Counter[str] = Counter()
    for record in records:
        try:
            analyzer.observe(record)
        except RecordError as exc:
            bad[exc.kind] += 1
    return bad
