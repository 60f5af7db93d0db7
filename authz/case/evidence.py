"""The chain check of a case: the whole source verified, and where the case's records sit.

Every record of the source goes through `audit verify`'s ChainChecker, not
only the case's, because a chain is only intact as a whole: an edit to an
unrelated record in between would break the links the case's records hang on.
For the case's records the section names each chain, the sequence range and
the last hash, so a reader with the source can re-verify it and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz.audit.verify import ChainChecker, read_entry


@dataclass(slots=True)
class _Span:
    records: int = 0
    first: int = 0
    last: int = 0
    last_hash: str = ""


class Evidence:
    """Feeds the source to a ChainChecker and notes the chain places of the case's records."""

    def __init__(self) -> None:
        self.checker = ChainChecker()
        self.read = 0
        self.found_at = ""  # the place where the first problem showed
        self.case_records = 0
        self.case_before_problem = 0
        self.spans: dict[str, _Span] = {}

    def feed(self, where: str, raw: bytes | None) -> None:
        """Check the next record of the source (nothing more once a problem is found)."""
        self.read += 1
        if self.checker.problem is None and self.checker.feed(read_entry(where, raw)) is not None:
            self.found_at = where

    def note(self, fields: dict[str, Any]) -> None:
        """Count a record of the case (just fed) and widen its chain's span."""
        self.case_records += 1
        self.case_before_problem += self.checker.problem is None
        try:
            sequence = int(fields.get("sequence", 0))
        except (TypeError, ValueError):
            sequence = 0
        span = self.spans.setdefault(str(fields.get("chain", "")), _Span(first=sequence))
        span.records += 1
        span.first = min(span.first, sequence)
        if sequence >= span.last:
            span.last, span.last_hash = sequence, str(fields.get("hash", ""))

    def summary(self) -> dict[str, Any]:
        """The `chain` section of the case JSON (docs/case.md)."""
        if self.checker.problem is None and self.checker.finish() is not None:
            self.found_at = "the end of the source"
        problem = self.checker.problem
        return {
            "intact": problem is None,
            "problem": None
            if problem is None
            else {"kind": problem.kind, "message": problem.message, "found_at": self.found_at},
            "records_read": self.read,
            "records_checked": self.checker.records,
            "chains": [
                {
                    "name": name,
                    "first_sequence": chain.first.sequence,
                    "last_sequence": chain.last.sequence,
                    "last_hash": chain.last.hash,
                    "restarts": chain.restarts,
                }
                for name, chain in sorted(self.checker.chains.items())
            ],
            "case": {
                "records": self.case_records,
                "checked_before_problem": self.case_before_problem,
                "chains": [
                    {
                        "name": name,
                        "records": span.records,
                        "first_sequence": span.first,
                        "last_sequence": span.last,
                        "last_hash": span.last_hash,
                    }
                    for name, span in sorted(self.spans.items())
                ],
            },
        }
