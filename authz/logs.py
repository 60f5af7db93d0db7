"""JSON logs, one object per line, and the decision log.

Secrets never reach a log record: the key itself is never put in one, and
`redact` is the one place that scrubs header maps before they are logged.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

from authz.decision import Decision
from authz.facts import RequestFacts

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}
SENSITIVE_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})

decision_log = logging.getLogger("distill_guard.decision")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object; `extra=` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record."""
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure(level: str = "info", stream: object = None) -> None:
    """Send all logs to stderr (or `stream`) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def redact(headers: Mapping[str, str]) -> dict[str, str]:
    """A copy of a header map with credentials replaced."""
    return {k: ("[redacted]" if k in SENSITIVE_HEADERS else v) for k, v in headers.items()}


class LogDecisionSink:
    """Writes each decision as one JSON log line on the `distill_guard.decision` logger."""

    def record(self, facts: RequestFacts, decision: Decision) -> None:
        """Log one decision (no key, only its id)."""
        if not decision_log.isEnabledFor(logging.INFO):
            return
        caller = decision.caller
        loc = decision.location
        decision_log.info(
            "decision",
            extra={
                "decision_id": decision.decision_id,
                "request_id": facts.request_id,
                "action": decision.action.value,
                "status": decision.status,
                "reason": decision.reason.value,
                "would_deny": decision.would_deny.value if decision.would_deny else None,
                "detail": decision.detail,
                "key_id": caller.key_id if caller else None,
                "account": caller.account.account if caller else None,
                "entity": caller.account.entity if caller else None,
                "tier": caller.account.tier if caller else None,
                "rule": decision.rule,
                "client_ip": str(decision.client_ip) if decision.client_ip else facts.source[:64],
                "country": loc.country if loc else None,
                "address_kind": loc.kind.value if loc else None,
                "asn": loc.asn if loc else None,
                "flags": list(decision.flags),
                "shadow_denies": list(decision.shadow_denies),
                "method": facts.method[:16],
                "path": facts.path[:256],
                "model": decision.model,
                "rules_version": decision.rules_version,
            },
        )
