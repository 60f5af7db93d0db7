"""The audit record: one AuditRecord per decision, and its canonical JSON.

`build_record` turns the pipeline's plain values into the proto (the schema is
protos/distill_guard/audit/v1/audit.proto); `to_json` is the one definition of
the text every sink writes and every hash covers: the proto3 JSON mapping with
the proto's own (snake_case) field names, keys sorted, no spaces. `from_json`
reads it back; `parse_fields` reads it as a plain mapping, for readers that
only need a few fields or must survive a line that is not a record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from google.protobuf import json_format

from authz.decision import Decision
from authz.facts import IPAddress, RequestFacts
from authz.gen.distill_guard.audit.v1.audit_pb2 import AuditRecord, Counter

SCHEMA = 1
# Lengths kept of client-controlled text, so one request cannot bloat the trail.
_MAX_METHOD = 16
_MAX_PATH = 1024
# Signals the pipeline raises by itself (not named after a rule), and the volume
# signals of a tier's `limits.anomaly` (named after the scope they watch).
_BUILTIN_SIGNALS = frozenset({"xff_invalid", "meter_degraded"})
_VOLUME_SIGNALS = frozenset({"volume_spike_account", "volume_spike_entity"})


def build_record(facts: RequestFacts, decision: Decision, *, trace_id: str) -> AuditRecord:
    """The unchained record of one decision (no key, only its id), timed at the check's start."""
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
    return record


def client_network(ip: IPAddress) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address, e.g. `79.192.3.0/24`."""
    prefix = 24 if ip.version == 4 else 48
    host_bits = ip.max_prefixlen - prefix
    network = type(ip)(int(ip) >> host_bits << host_bits)  # ip_network() is 10x slower
    return f"{network}/{prefix}"


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
