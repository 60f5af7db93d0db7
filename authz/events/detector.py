"""Event detection: decisions and analyses in, newly reportable incidents out.

Pure Python and clock-driven, like the Analyzer it sits beside: `note` takes
one decision (the analysis' Observation plus a Sighting), `after_analysis(now,
clusters, verdicts)` takes what one analysis found and returns the events that
became reportable. Nothing reads a clock.

An incident is a kind and a key (e.g. `restricted_jurisdiction:embargo:203.0.113.0/24`).
It opens at its first sighting, stays open while sightings continue and for
the kind's `cooldown` after the latest, and is reported once while open. The
same key sighted after that is a new incident, with a new event id. An
incident that closed before any analysis saw it (by more than two analysis
intervals: a worker catching up on its log) is not reported. A cluster
keeps its incident while it keeps its id, and also when most of its accounts
belong to an open campaign incident (an analysis may rename a cluster that
merged or split).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from authz.detect.analyzer import ClusterReport, Observation, RecordError, parse_record
from authz.detect.settings import AnalysisSettings
from authz.detect.verdicts import Verdict
from authz.events.event import MAX_EVIDENCE, Event
from authz.events.rules import EventRules, seconds

_JURISDICTION = "jurisdiction:"
_KEEP_NETWORKS = 4  # networks remembered per account (its first ones)


@dataclass(frozen=True, slots=True)
class Sighting:
    """What events need of a decision beyond the analysis' Observation."""

    decision_id: str = ""
    denied_by: str = ""  # id of the jurisdiction rule that denied it (or would have: dry run)
    country: str = ""

    def to_compact(self) -> list[str]:
        """A short JSON-ready list (an extra field of the worker's observation log)."""
        return [self.decision_id, self.denied_by, self.country]

    @classmethod
    def from_compact(cls, row: Any) -> Sighting:
        """The inverse of `to_compact`; RecordError when the row is not one."""
        if not (isinstance(row, list) and len(row) == 3 and all(isinstance(v, str) for v in row)):
            raise RecordError("bad_sighting", "not a sighting")
        return cls(*row)


def sighting_of(record: Mapping[str, Any]) -> Sighting:
    """The Sighting of an audit record's JSON mapping."""
    rule = str(record.get("rule") or "")
    denied = record.get("action") == "deny" or bool(record.get("would_deny"))
    return Sighting(
        decision_id=str(record.get("decision_id") or ""),
        denied_by=rule.removeprefix(_JURISDICTION)
        if denied and rule.startswith(_JURISDICTION)
        else "",
        country=str(record.get("country") or ""),
    )


@dataclass(slots=True)
class _Account:
    first: float
    last: float
    first_decision: str
    requests: int = 0
    networks: list[str] = field(default_factory=list)
    asn: int = 0
    country: str = ""


@dataclass(slots=True)
class _Incident:
    kind: str
    key: str
    first: float
    last: float
    cooldown: float
    requests: int = 0
    accounts: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    asns: set[int] = field(default_factory=set)
    countries: set[str] = field(default_factory=set)
    evidence: list[str] = field(default_factory=list)
    cluster: str = ""
    score: float = 0.0
    reasons: tuple[str, ...] = ()
    rule: str = ""
    reported: bool = False

    def open_at(self, now: float) -> bool:
        return now - self.last <= self.cooldown


class EventDetector:
    """Finds reportable incidents (see the module docstring)."""

    def __init__(
        self, rules: EventRules, analysis: AnalysisSettings, *, rules_version: str = ""
    ) -> None:
        self.rules = rules
        self.rules_version = rules_version
        campaign = rules.campaign_cluster
        self.min_score = (
            campaign.min_score if campaign.min_score is not None else analysis.thresholds.restrict
        )
        self.retention = analysis.window  # accounts silent this long are forgotten
        # An incident already closed for longer than this when first analysed is history
        # (a worker catching up on its log after a restart), not news: it is not reported.
        self.grace = 2 * analysis.interval
        self._cooldown = {
            "campaign_cluster": seconds(campaign.cooldown),
            "restricted_jurisdiction": seconds(rules.restricted_jurisdiction.cooldown),
            "unverified_signup_burst": seconds(rules.unverified_signup_burst.cooldown),
        }
        self._burst_window = seconds(rules.unverified_signup_burst.window)
        self._accounts: dict[str, _Account] = {}
        self._incidents: dict[str, _Incident] = {}
        self._signups: dict[str, dict[str, float]] = {}  # place -> account -> sign-up time
        self._joined: dict[str, set[str]] = {}  # place -> accounts new since the last analysis
        self._campaign_of: dict[str, str] = {}  # account -> its campaign incident key

    def observe(self, record: Mapping[str, Any]) -> None:
        """Note one audit record's JSON mapping; RecordError when the analysis cannot use it."""
        self.note(parse_record(record), sighting_of(record))

    def note(self, obs: Observation, seen: Sighting) -> None:
        """Note one decision."""
        acc = self._accounts.get(obs.account)
        if acc is None:
            acc = self._accounts[obs.account] = _Account(obs.ts, obs.ts, seen.decision_id)
            self._new_account(obs)
        acc.last = max(acc.last, obs.ts)
        acc.requests += 1
        if obs.network and obs.network not in acc.networks and len(acc.networks) < _KEEP_NETWORKS:
            acc.networks.append(obs.network)
        acc.asn = obs.asn or acc.asn
        acc.country = seen.country or acc.country
        if seen.denied_by:
            self._denied(obs, seen)

    def _new_account(self, obs: Observation) -> None:
        burst = self.rules.unverified_signup_burst
        if not burst.enabled or obs.kyc == "verified" or obs.created is None:
            return
        places = []
        if "network" in burst.by and obs.network:
            places.append(f"network:{obs.network}")
        if "asn" in burst.by and obs.asn:
            places.append(f"asn:{obs.asn}")
        for place in places:
            self._signups.setdefault(place, {})[obs.account] = obs.created
            self._joined.setdefault(place, set()).add(obs.account)

    def _denied(self, obs: Observation, seen: Sighting) -> None:
        rules = self.rules.restricted_jurisdiction
        if not rules.enabled or (rules.rules and seen.denied_by not in rules.rules):
            return
        where = obs.network if rules.per == "network" and obs.network else obs.account
        inc = self._sight("restricted_jurisdiction", f"{seen.denied_by}:{where}", obs.ts)
        inc.rule = seen.denied_by
        inc.requests += 1
        inc.accounts.add(obs.account)
        if obs.network:
            inc.networks.add(obs.network)
        if obs.asn:
            inc.asns.add(obs.asn)
        if seen.country:
            inc.countries.add(seen.country)
        if seen.decision_id and len(inc.evidence) < MAX_EVIDENCE:
            inc.evidence.append(seen.decision_id)

    def _sight(self, kind: str, key: str, ts: float) -> _Incident:
        """The open incident of `kind:key` at `ts`, extended to `ts`; a new one if none is open."""
        full = f"{kind}:{key}"
        inc = self._incidents.get(full)
        if inc is None or not inc.open_at(ts):
            inc = self._incidents[full] = _Incident(kind, full, ts, ts, self._cooldown[kind])
        inc.last = max(inc.last, ts)
        return inc

    def after_analysis(
        self, now: float, clusters: Sequence[ClusterReport], verdicts: Sequence[Verdict]
    ) -> list[Event]:
        """Take one analysis at `now` (its clusters and verdicts); the events newly reportable."""
        if self.rules.campaign_cluster.enabled:
            self._campaigns(now, clusters, verdicts)
        if self.rules.unverified_signup_burst.enabled:
            for place, joined in sorted(self._joined.items()):
                self._burst(place, joined)
        self._joined.clear()
        events = []
        need = self.rules.restricted_jurisdiction.min_requests
        for inc in self._incidents.values():
            if inc.reported or not getattr(self.rules, inc.kind).enabled:
                continue
            if now - inc.last > inc.cooldown + self.grace:
                continue
            if inc.kind == "restricted_jurisdiction" and inc.requests < need:
                continue
            inc.reported = True
            events.append(self._event(inc))
        self._expire(now)
        return sorted(events, key=lambda e: (e.first_seen, e.incident))

    def open_incidents(self, now: float) -> list[tuple[str, float]]:
        """Reported incidents still open at `now`, with the seconds they stay open for."""
        return [
            (inc.key, inc.last + inc.cooldown - now)
            for inc in self._incidents.values()
            if inc.reported and inc.open_at(now)
        ]

    def _campaigns(
        self, now: float, clusters: Sequence[ClusterReport], verdicts: Sequence[Verdict]
    ) -> None:
        """Open an incident for each cluster that qualifies; extend the open ones that go on.

        A cluster goes on while the analysis still finds it (by id, or by most of its
        accounts), whatever its score now: a campaign that slows down overnight and
        scores lower for a while is still the one incident.
        """
        rules = self.rules.campaign_cluster
        members: dict[str, list[str]] = {}
        for v in verdicts:
            members.setdefault(v.cluster, []).append(v.account)
        for c in clusters:
            accounts = sorted(members.get(c.cluster, ()))
            qualifies = c.score >= self.min_score and c.accounts >= rules.min_accounts
            key = self._open_campaign(c.cluster, accounts, now)
            if key is None and not qualifies:
                continue
            inc = self._sight("campaign_cluster", key or c.cluster, now)
            inc.accounts.update(accounts)
            for account in accounts:
                self._campaign_of[account] = inc.key
            if not inc.reported:  # an event keeps the figures it was reported with
                inc.cluster, inc.score, inc.reasons = c.cluster, c.score, c.reasons
                self._gather(inc, inc.accounts)

    def _open_campaign(self, cluster: str, accounts: Sequence[str], now: float) -> str | None:
        """The key (without its kind) of the open incident a cluster continues, if any."""
        own = self._incidents.get(f"campaign_cluster:{cluster}")
        if own is not None and own.open_at(now):
            return cluster
        votes = Counter(self._campaign_of.get(a, "") for a in accounts)
        votes.pop("", None)
        for key, n in votes.most_common(1):
            inc = self._incidents.get(key)
            if 2 * n > len(accounts) and inc is not None and inc.open_at(now):
                return key.removeprefix("campaign_cluster:")
        return None

    def _burst(self, place: str, joined: set[str]) -> None:
        """Sight the place's burst when enough accounts, some of them `joined` lately, signed
        up within the window; the sighting's time is when the latest of those was first seen.
        """
        signups = sorted((t, a) for a, t in self._signups[place].items())
        fresh_before = [0]  # fresh accounts among the first i sign-ups
        for _, account in signups:
            fresh_before.append(fresh_before[-1] + (account in joined))
        best: list[str] = []
        start = 0
        for end in range(len(signups)):
            while signups[end][0] - signups[start][0] > self._burst_window:
                start += 1
            has_fresh = fresh_before[end + 1] > fresh_before[start]
            if has_fresh and end - start + 1 > len(best):
                best = [a for _, a in signups[start : end + 1]]
        if len(best) < self.rules.unverified_signup_burst.min_accounts:
            return
        fresh = joined.intersection(best)
        seen_at = max(self._accounts[a].first for a in fresh)
        inc = self._sight("unverified_signup_burst", place, seen_at)
        inc.accounts.update(best)
        if not inc.reported:
            self._gather(inc, inc.accounts)

    def _gather(self, inc: _Incident, accounts: Iterable[str]) -> None:
        """Recount an incident's requests, places and evidence from its accounts' state."""
        known = [self._accounts[a] for a in sorted(accounts) if a in self._accounts]
        inc.requests = sum(a.requests for a in known)
        inc.networks = {n for a in known for n in a.networks}
        inc.asns = {a.asn for a in known if a.asn}
        inc.countries = {a.country for a in known if a.country}
        inc.evidence = [a.first_decision for a in known if a.first_decision][:MAX_EVIDENCE]

    def _event(self, inc: _Incident) -> Event:
        return Event(
            kind=inc.kind,
            severity=getattr(self.rules, inc.kind).severity,
            incident=inc.key,
            first_seen=inc.first,
            last_seen=inc.last,
            requests=inc.requests,
            accounts=tuple(sorted(inc.accounts)),
            networks=tuple(sorted(inc.networks)),
            asns=tuple(sorted(inc.asns)),
            countries=tuple(sorted(inc.countries)),
            cluster=inc.cluster,
            score=inc.score,
            reasons=inc.reasons,
            rule=inc.rule,
            evidence=tuple(inc.evidence),
            rules_version=self.rules_version,
        )

    def _expire(self, now: float) -> None:
        """Forget closed incidents and accounts silent for the analysis window."""
        for key in [k for k, inc in self._incidents.items() if not inc.open_at(now)]:
            del self._incidents[key]
        gone = {a for a, acc in self._accounts.items() if acc.last < now - self.retention}
        for account in gone:
            del self._accounts[account]
        self._campaign_of = {
            a: key
            for a, key in self._campaign_of.items()
            if a not in gone and key in self._incidents
        }
        for place in list(self._signups):
            signups = self._signups[place]
            for account in gone.intersection(signups):
                del signups[account]
            if not signups:
                del self._signups[place]
