"""Hash chains: each sink's records link to the one before, so edits show.

A record's `hash` is the hex SHA-256 of its `prev_hash` followed by its own
canonical JSON without `hash` (which includes `chain`, `sequence` and
`prev_hash`). The first record of a chain has sequence 1 and a `prev_hash` of
64 zeros. Editing, deleting, inserting or reordering a record breaks a link
that `distill-guard audit verify` finds; see docs/audit.md for what a chain
cannot show (records cut off the end).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from authz.audit.record import canonical

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class ChainHead:
    """The last record of a chain: where the next one links."""

    sequence: int
    hash: str
    decision_id: str = ""

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> ChainHead:
        """The head a record (as its JSON mapping) leaves behind. Raises ValueError."""
        sequence = int(fields.get("sequence", 0))
        return cls(sequence, str(fields.get("hash", "")), str(fields.get("decision_id", "")))


def record_hash(fields: Mapping[str, Any]) -> str:
    """The hash a record's JSON mapping must carry (its own `hash`, if any, left out)."""
    body = canonical({k: v for k, v in fields.items() if k != "hash"})
    return _digest(str(fields.get("prev_hash", "")), body)


def _digest(prev_hash: str, body: str) -> str:
    return hashlib.sha256((prev_hash + body).encode()).hexdigest()


def seal(body: Mapping[str, Any], head: ChainHead | None, chain: str) -> tuple[str, ChainHead]:
    """Link an unchained record (its JSON mapping) after `head`: its canonical JSON and new head.

    The text is exactly `to_json` of the record with `chain`, `sequence`,
    `prev_hash` and `hash` set (tests/test_audit_chain.py holds that). The
    chain fields are set as the proto3 JSON mapping has them (strings, uint64
    as a decimal string, an empty string omitted), and the canonical text is
    made once, in two halves around where `hash` sorts, so that the text
    without `hash` (hashed) and with it (written) share the work.
    """
    sequence = head.sequence + 1 if head is not None else 1
    prev = head.hash if head is not None else GENESIS
    fields = {**body, "sequence": str(sequence), "prev_hash": prev}
    if chain:
        fields["chain"] = chain
    before = canonical({k: v for k, v in fields.items() if k < "hash"})[1:-1]
    after = canonical({k: v for k, v in fields.items() if k > "hash"})[1:-1]  # never empty
    digest = _digest(prev, "{" + (before + "," if before else "") + after + "}")
    line = "{" + (before + "," if before else "") + f'"hash":"{digest}",' + after + "}"
    return line, ChainHead(sequence, digest, str(body.get("decision_id", "")))
