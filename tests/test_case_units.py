"""The parts of `distill-guard case` alone: sources, periods, redaction, confidence, chains."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from authz.audit.chain import ChainHead, seal
from authz.case.evidence import Evidence
from authz.case.indicators import confidence
from authz.case.redact import example, masking_version
from authz.case.source import FileSource, Period, make_subject
from authz.detect.features import prompt_text, scaffold, template_id


def _sealed(n: int) -> list[str]:
    """n records of one chain, as a sink writes them."""
    head: ChainHead | None = None
    lines = []
    for i in range(n):
        body = {"schema": 1, "time": f"2026-04-22T00:00:0{i}Z", "account": "a1", "action": "allow"}
        line, head = seal(body, head, "guard-0")
        lines.append(line)
    return lines


def test_a_later_pass_stops_where_the_first_ended(tmp_path: Path) -> None:
    """Lines appended after the first full pass are not read by the next one."""
    audit = tmp_path / "audit.jsonl"
    lines = _sealed(3)
    audit.write_text(lines[0] + "\n" + lines[1] + "\n")
    source = FileSource([audit])
    assert [where for where, _ in source.records()] == ["line 1", "line 2"]
    with open(audit, "a") as f:
        f.write(lines[2] + "\n")
    assert [where for where, _ in source.records()] == ["line 1", "line 2"]


def test_an_unfinished_last_line_is_left_out(tmp_path: Path) -> None:
    """A last line without its newline that is not JSON yet is being written: it is skipped."""
    audit = tmp_path / "audit.jsonl"
    line = _sealed(1)[0]
    audit.write_text(line + "\n" + line[:40])
    assert [where for where, _ in FileSource([audit]).records()] == ["line 1"]


def test_several_files_are_placed_by_name(tmp_path: Path) -> None:
    """With rotated files, each place names its file; blank lines are skipped."""
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    lines = _sealed(2)
    first.write_text(lines[0] + "\n\n")
    second.write_text(lines[1] + "\n")
    places = [where for where, _ in FileSource([first, second]).records()]
    assert places == [f"{first} line 1", f"{second} line 1"]


def test_the_period_is_half_open() -> None:
    """since is inside the period, until is not; an open end holds everything on its side."""
    period = Period(100.0, 200.0)
    assert period.holds(100.0) and period.holds(199.9)
    assert not period.holds(200.0) and not period.holds(99.9)
    assert Period(None, None).holds(0.0)


def test_subject_kinds() -> None:
    """A cluster id is recognised by its form; anything else is an account unless told."""
    assert make_subject("c03df98098554", None).kind == "cluster"
    assert make_subject(" a5b52dfb5b9 ", None).id == "a5b52dfb5b9"
    assert make_subject("e7a24d65c39", "entity").kind == "entity"
    assert make_subject("c03df98098554", "account").kind == "account"


def test_confidence_levels() -> None:
    """high needs several accounts and 90% of the value's traffic; medium half; else low."""
    assert confidence(90, 2, 10) == "high"
    assert confidence(90, 1, 0) == "medium"  # one account is weak evidence of a campaign
    assert confidence(89, 5, 11) == "medium"
    assert confidence(50, 5, 50) == "medium"
    assert confidence(49, 5, 51) == "low"


def _record(prompt: str) -> dict[str, Any]:
    """A record that kept its request, with the template the detect phase would have named."""
    body = {"model": "m", "messages": [{"role": "user", "content": prompt}]}
    return {
        "decision_id": "d-1",
        "content": {"body": base64.b64encode(json.dumps(body).encode()).decode()},
        "detection": {
            "template": template_id(scaffold(prompt_text(body))),
            "prompt_chars": len(prompt),
        },
    }


def test_examples_are_masked_scaffolds_unless_unredacted() -> None:
    """The redacted example hides names, numbers and URLs; the unredacted one is the prompt."""
    prompt = "Ask Ada Lovelace about order 123456 at https://shop.example/o?id=9, step by step."
    record = _record(prompt)
    redacted = example(record, unredacted=False)
    assert redacted is not None and redacted["kind"] == "scaffold"
    assert redacted["matches_template"] and redacted["decision_id"] == "d-1"
    for secret in ("Lovelace", "123456", "shop.example"):
        assert secret not in redacted["text"]
    assert {"_name_", "_num_", "_url_"} <= set(redacted["text"].split())
    raw = example(record, unredacted=True)
    assert raw is not None and raw["kind"] == "raw" and raw["text"] == prompt


def test_no_example_without_a_usable_body() -> None:
    """A body that is not base64 JSON, or a record without content, gives no example."""
    record = _record("Explain this step by step please.")
    record["content"]["body"] = base64.b64encode(b"\xff\x00 not json").decode()
    assert example(record, unredacted=False) is None
    assert example({"detection": {}}, unredacted=False) is None


def test_masking_version_names_the_masking() -> None:
    """The masking version is `scaffold-` and a 16-hex-digit template id, the same every time."""
    assert re.fullmatch(r"scaffold-[0-9a-f]{16}", masking_version())
    assert masking_version() == masking_version()


def test_a_deleted_record_is_found_and_located() -> None:
    """Evidence over a chain with a gap: the kind, the place, and the case records before it."""
    lines = _sealed(4)
    del lines[1]
    evidence = Evidence()
    for n, line in enumerate(lines, start=1):
        evidence.feed(f"line {n}", line.encode())
        evidence.note(json.loads(line))
    summary = evidence.summary()
    assert not summary["intact"]
    assert summary["problem"]["kind"] == "deleted"
    assert "1 record(s) missing" in summary["problem"]["message"]
    assert summary["case"]["records"] == 3
    assert summary["case"]["checked_before_problem"] < 3
    assert summary["case"]["chains"][0]["first_sequence"] == 1
    assert summary["case"]["chains"][0]["last_sequence"] == 4


def test_a_record_of_the_wrong_shape_is_left_out_and_named(tmp_path: Path) -> None:
    """A chained record whose fields have the wrong types is skipped, counted and located."""
    from authz.case.build import build_case

    good = {"schema": 1, "time": "2026-04-22T00:00:00Z", "account": "a1", "action": "allow"}
    bad = {**good, "time": "2026-04-22T00:00:01Z", "detection": "oops"}
    first, head = seal(good, None, "guard-0")
    second, _ = seal(bad, head, "guard-0")
    audit = tmp_path / "audit.jsonl"
    audit.write_text(first + "\n" + second + "\n")
    case = build_case(FileSource([audit]), make_subject("a1", None), Period(None, None))
    assert case["totals"]["records"] == 1
    assert case["source"]["unusable_records"] == 1
    assert case["source"]["unusable_places"] == ["line 2"]
    assert case["chain"]["intact"]


def test_volume_is_daily_beyond_72_hours() -> None:
    """Records over more than 72 hours are bucketed per day, every day listed, none lost."""
    from authz.case.collect import Collector

    collector = Collector(unredacted=False)
    times = ["2026-04-20T10:00:00Z", "2026-04-20T23:59:59Z", "2026-04-23T11:00:00Z"]
    for at in times:
        fields = {"time": at, "account": "a1", "action": "deny"}
        collector.add(fields, datetime.fromisoformat(at).timestamp())
    volume = collector.sections()["volume"]
    assert volume["bucket"] == "day"
    assert [(b["start"], b["requests"], b["deny"]) for b in volume["buckets"]] == [
        ("2026-04-20T00:00:00Z", 2, 2),
        ("2026-04-21T00:00:00Z", 0, 0),
        ("2026-04-22T00:00:00Z", 0, 0),
        ("2026-04-23T00:00:00Z", 1, 1),
    ]
