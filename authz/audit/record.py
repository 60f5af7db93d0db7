"""The audit record: one AuditRecord per decision, and its canonical JSON.

`build_record` turns the pipeline's plain values into the proto (the schema is
protos/distill_guard/audit/v1/audit.proto), with the request's content only
when a ContentPolicy is given (--audit-request-content); `to_json` is the one definition of
the text every sink writes and every hash covers: the proto3 JSON mapping with
the proto's own (snake_case) field names, keys sorted, no spaces. `from_json`
reads it back; `parse_fields` reads it as a plain mapping, for readers that
only need a few fields or must survive a line that is not a record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from authz.clientip import client_network
from authz.decision import Decision
from authz.facts import IPAddress, RequestFacts, parse_ip
from authz.gen.distill_guard.audit.v1.audit_pb2 import (
    AuditRecord,
    Counter,
    Header,
    RequestContent,
)

SCHEMA = 1
# Lengths kept of client-controlled text, so one request cannot bloat the trail.
_MAX_METHOD = 16
_MAX_PATH = 1024
# Signals the pipeline raises by itself (not named after a rule), and the volume
# signals of a tier's `limits.anomaly` (named after the scope they watch).
_BUILTIN_SIGNALS = frozenset({"xff_invalid", "meter_degraded"})
_VOLUME_SIGNALS = frozenset({"volume_spike_account", "volume_spike_entity"})
# Headers request content never keeps, whatever the rules name as key headers:
# credentials, and what Envoy adds on the way (x-request-id is a field of its own).
NEVER_KEPT = frozenset(
    {
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-request-id",
    }
)
_ENVOY_PREFIX = "x-envoy-"
_MAX_SIZE = (1 << 63) - 1  # a client's Content-Length must still fit body_size (uint64)

# The key header names the rules in force declare (read when a record is built).
KeyHeaders = Callable[[], Collection[str]]


@dataclass(frozen=True, slots=True)
class ContentPolicy:
    """Request content in records (--audit-request-content): the body cap and the key headers.

    `key_headers` names the rules' key headers when the record is built; they are
    dropped together with NEVER_KEPT (which covers the usual ones whatever a
    reload in between changed).
    """

    max_body_bytes: int
    key_headers: KeyHeaders


def build_record(
    facts: RequestFacts,
    decision: Decision,
    *,
    trace_id: str,
    content: ContentPolicy | None = None,
) -> AuditRecord:
    """The unchained record of one decision (no key, only its id), timed at the check's start.

    With `content`, the record keeps the request itself (minus secrets) for replay.
    """
    caller = decision.caller
    account = caller.account if caller is not None else None
    loc = decision.location
    ip = decision.client_ip or facts.client_ip
    record = AuditRecord(
        schema=SCHEMA,
        decision_id=decision.decision_id,
        trace_id=trace_id,
        request_id=facts.request_id,
        key_id=caller.key_id if caller is not None else "",
        account=account.account if account is not None else "",
        entity=account.entity if account is not None else "",
        tier=account.tier if account is not None else "",
        kyc=account.kyc.value if account is not None else "",
        kyc_country=account.country if account is not None else "",
        client_ip=str(ip) if ip is not None else "",
        client_network=client_network(ip) if ip is not None else "",
        country=(loc.country or "") if loc is not None else "",
        address_kind=loc.kind.value if loc is not None else "",
        asn=(loc.asn or 0) if loc is not None else 0,
        as_org=(loc.as_org or "") if loc is not None else "",
        method=facts.method[:_MAX_METHOD],
        path=facts.path.partition("?")[0][:_MAX_PATH],
        model=decision.model or "",
        request_bytes=len(facts.body) if facts.body else 0,
        estimated_tokens=decision.estimated_tokens,
        action=decision.action.value,
        status=decision.status,
        reason=decision.reason.value,
        rule=decision.rule or "",
        matched_rules=matched_rules(decision),
        signals=decision.flags,
        shadow_denies=decision.shadow_denies,
        would_deny=decision.would_deny.value if decision.would_deny is not None else "",
        rules_version=decision.rules_version,
        counters=[Counter(name=n, limit=lim, remaining=rem) for n, lim, rem in decision.counters],
    )
    record.time.FromMicroseconds(round(decision.time * 1_000_000))
    if account is not None and account.created is not None:
        record.account_created.FromMicroseconds(round(account.created * 1_000_000))
    features, assessment = decision.features, decision.assessment
    if features is not None:
        d = record.detection
        d.template = features.template_id
        d.simhash = f"{features.simhash:016x}"
        d.elicitation = features.elicitation.score
        d.client = features.client
        d.prompt_chars = features.prompt_chars
        if assessment is not None:
            d.risk = assessment.applied.label
            d.cluster = assessment.cluster
            d.score = assessment.score
            d.detectors.extend(assessment.fired)
    if content is not None:
        names = content.key_headers()
        record.content.CopyFrom(
            request_content(facts, max_body_bytes=content.max_body_bytes, key_headers=names)
        )
    return record


def request_content(
    facts: RequestFacts, *, max_body_bytes: int, key_headers: Collection[str]
) -> RequestContent:
    """What the client sent, minus secrets: kept headers, raw path, body up to the cap.

    `key_headers` are dropped besides NEVER_KEPT.
    """
    body = facts.body or b""
    kept = body[:max_body_bytes]
    size = max(len(body), _content_length(facts.headers))
    return RequestContent(
        source=_utf8(facts.source),
        headers=kept_headers(facts, key_headers),
        raw_path=_utf8(facts.path),
        body=kept,
        body_cut=facts.body_partial or len(kept) < size,
        body_size=size,
    )


def kept_headers(facts: RequestFacts, key_headers: Collection[str]) -> list[Header]:
    """The request's headers in order, without credentials, pseudo headers and Envoy's own.

    Envoy's `:authority` becomes `host`. Of X-Forwarded-For, the entry Envoy
    appended for the peer is dropped (recognised as authz.clientip does): it is
    the `source` field already, and a replay appends it again.
    """
    drop = NEVER_KEPT.union(key_headers)
    has_host = "host" in facts.headers
    out = []
    if facts.host and not has_host and ":authority" not in facts.headers:
        out.append(Header(name="host", value=_utf8(facts.host)))
    for raw_name, raw_value in facts.headers.items():
        name, value = raw_name.lower(), raw_value
        if name == ":authority" and not has_host:
            name = "host"
        if name.startswith((":", _ENVOY_PREFIX)) or name in drop:
            continue
        if name == "x-forwarded-for":
            value = _without_envoys_entry(value, facts.client_ip)
            if not value:
                continue
        out.append(Header(name=_utf8(name), value=_utf8(value)))
    return out


def _without_envoys_entry(xff: str, source: IPAddress | None) -> str:
    """X-Forwarded-For without its last entry when that entry stands for the peer."""
    head, _, last = xff.rpartition(",")
    if source is not None and (parse_ip(last) == source or source.is_loopback):
        return head.rstrip()
    return xff


def _content_length(headers: Mapping[str, str]) -> int:
    length = headers.get("content-length", "").strip()
    if not (length.isascii() and length.isdigit()):
        return 0
    return min(int(length), _MAX_SIZE)


def _utf8(text: str) -> str:
    """Text a proto string can hold (facts built from bytes may carry lone surrogates)."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def matched_rules(decision: Decision) -> list[str]:
    """Every rule that matched, as qualified ids: the deciding rule, then flags and shadow rules.

    Jurisdiction flag and shadow rules become `jurisdiction:<id>`, a volume signal
    `tier:<tier>:limits:<signal>` (the id its denial carries); the pipeline's own
    signals (`xff_invalid`, `meter_degraded`) are signals, not rules.
    """
    tier = decision.caller.account.tier if decision.caller is not None else ""
    rules = [decision.rule] if decision.rule else []
    for flag in decision.flags:
        if flag in _VOLUME_SIGNALS:
            rules.append(f"tier:{tier}:limits:{flag}")
        elif flag not in _BUILTIN_SIGNALS:
            rules.append(f"jurisdiction:{flag}")
    rules += [f"jurisdiction:{rule}" for rule in decision.shadow_denies]
    return list(dict.fromkeys(rules))


def to_dict(record: AuditRecord) -> dict[str, Any]:
    """The record's proto3 JSON mapping as a dict (proto field names; defaults omitted)."""
    fields: dict[str, Any] = json_format.MessageToDict(record, preserving_proto_field_name=True)
    return fields


def canonical(fields: Mapping[str, Any]) -> str:
    """The canonical text of a record's JSON mapping: keys sorted, no spaces, ASCII."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def to_json(record: AuditRecord) -> str:
    """The canonical JSON of a record: what sinks write and hashes cover."""
    return canonical(to_dict(record))


def from_json(text: str | bytes) -> AuditRecord:
    """Parse a record's JSON; fields of a newer schema are ignored. Raises ParseError."""
    return json_format.Parse(text, AuditRecord(), ignore_unknown_fields=True)


def parse_fields(raw: str | bytes | None) -> dict[str, Any] | None:
    """A record line or stream value as its JSON mapping, or None when it is not a JSON object."""
    if raw is None:
        return None
    try:
        fields = json.loads(raw)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError alike
        return None
    return fields if isinstance(fields, dict) else None


def is_event(fields: Mapping[str, Any]) -> bool:
    """Whether a record's JSON mapping carries a reportable event rather than a decision.

    Event records (authz.events) share the audit trail, on chains of their own;
    readers that count decisions skip them.
    """
    return "event" in fields
