"""The case JSON as the sections of its document, in reading order (docs/case.md)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from authz.case.document import NONE, Alert, Chart, Pre, Section, counts, table, when

EXAMPLES_SHOWN = 10


def _other(row: Mapping[str, Any]) -> str:
    return f"{row['other_accounts']:,} ({row['other_requests']:,} req.)"


def build(case: Mapping[str, Any]) -> tuple[str, list[Section]]:
    """The document's title and sections, in reading order."""
    subject = case["subject"]
    title = f"Case {case['case_id']}: {subject['kind']} {subject['id']}"
    sections = [
        _overview(case),
        _accounts(case),
        _places(case),
        _clients(case),
        _volume(case),
        _templates(case),
        _detection(case),
        _decisions(case),
        _events(case),
        _chain(case),
    ]
    return title, sections


def _overview(case: Mapping[str, Any]) -> Section:
    s = Section("Overview")
    chain, t, period = case["chain"], case["totals"], case["period"]
    if not chain["intact"]:
        p = chain["problem"]
        s.blocks.append(
            Alert(
                f"The audit trail's hash chain is BROKEN ({p['kind']}): {p['message']}. "
                "Records from there on may have been edited; see 'Chain verification'."
            )
        )
    if skipped := case["source"]["unusable_records"]:
        s.blocks.append(
            Alert(
                f"{skipped:,} records of the subject have fields of the wrong shape and are left "
                f"out of every count (first at {', '.join(case['source']['unusable_places'][:3])})."
            )
        )
    if not case["redacted"]:
        s.blocks.append(Alert("UNREDACTED: this file contains raw prompt text from the trail."))
    since = period["since"] or "the start of the source"
    until = period["until"] or "the end of the source"
    subject = case["subject"]
    from_verdicts = subject["from_verdicts"]
    s.blocks.append(
        table(
            ("item", "value"),
            [
                ("subject", f"{subject['kind']} {subject['id']}"),
                ("period", f"{since} .. {until}"),
                (
                    "records of the case",
                    f"{when(period['first_record'])} .. {when(period['last_record'])}",
                ),
                ("source", f"{case['source']['kind']}: {', '.join(case['source']['names'])}"),
                ("generated", case.get("generated", NONE)),
                ("producer", case["producer"]),
                ("sharing", case["sharing"]),
                ("examples", "masked scaffolds (redacted)" if case["redacted"] else "RAW TEXT"),
                ("accounts from current verdicts", ", ".join(from_verdicts) or NONE),
            ],
        )
    )
    s.blocks.append(
        f"{t['records']:,} requests from {t['accounts']:,} accounts of {t['entities']:,} "
        f"entities: {t['allow']:,} allowed ({t['restricted']:,} of them with restricted "
        f"output), {t['deny']:,} denied; {t['estimated_tokens']:,} estimated tokens. "
        f"{t['with_content']:,} records kept the request content. "
        f"{case['source']['subject_records_outside_period']:,} records of the subject lie "
        "outside the period."
    )
    return s


def _accounts(case: Mapping[str, Any]) -> Section:
    s = Section("Accounts and entities")
    s.blocks.append(
        table(
            (
                "account",
                "entity",
                "tier",
                "KYC",
                "KYC country",
                "signed up",
                "keys",
                "first seen",
                "last seen",
                "requests",
                "allowed",
                "denied",
                "restricted",
            ),
            [
                (
                    a["account"],
                    a["entity"],
                    a["tier"],
                    a["kyc"],
                    a["kyc_country"],
                    when(a["created"]),
                    ", ".join(a["keys"]),
                    when(a["first_seen"]),
                    when(a["last_seen"]),
                    a["requests"],
                    a["allow"],
                    a["deny"],
                    a["restricted"],
                )
                for a in case["accounts"]
            ],
        )
    )
    s.blocks.append(
        table(
            ("entity", "accounts", "requests", "first seen", "last seen"),
            [
                (
                    e["value"],
                    e["accounts"],
                    e["requests"],
                    when(e["first_seen"]),
                    when(e["last_seen"]),
                )
                for e in case["entities"]
            ],
        )
    )
    return s


def _places(case: Mapping[str, Any]) -> Section:
    s = Section("Networks and countries")
    s.blocks.append(
        "Networks are the client's /24 (IPv4) or /48 (IPv6). 'Other accounts' counts "
        "accounts outside the case that used the same value in the period."
    )
    s.blocks.append(
        table(
            (
                "network",
                "requests",
                "accounts",
                "other accounts",
                "countries",
                "ASNs",
                "first seen",
                "last seen",
                "confidence",
            ),
            [
                (
                    n["value"],
                    n["requests"],
                    n["accounts"],
                    _other(n),
                    counts(n["countries"]),
                    counts(n["asns"]),
                    when(n["first_seen"]),
                    when(n["last_seen"]),
                    n["confidence"],
                )
                for n in case["networks"]
            ],
        )
    )
    s.blocks.append(
        table(
            ("ASN", "organisation", "requests", "accounts", "other accounts", "confidence"),
            [
                (
                    f"AS{a['value']}",
                    a["org"],
                    a["requests"],
                    a["accounts"],
                    _other(a),
                    a["confidence"],
                )
                for a in case["asns"]
            ],
        )
    )
    s.blocks.append(
        table(
            ("IP country", "requests", "accounts"),
            [(c["value"], c["requests"], c["accounts"]) for c in case["countries"]],
        )
    )
    s.blocks.append("Declared (KYC) country against the country of the client address:")
    s.blocks.append(
        table(
            ("KYC country", "IP country", "requests", "accounts", "same"),
            [
                (
                    k["kyc_country"],
                    k["ip_country"],
                    k["requests"],
                    k["accounts"],
                    k["kyc_country"] == k["ip_country"],
                )
                for k in case["kyc_vs_ip"]
            ],
        )
    )
    s.blocks.append(
        table(
            ("address", "requests", "accounts", "other accounts", "first seen", "last seen"),
            [
                (
                    i["value"],
                    i["requests"],
                    i["accounts"],
                    _other(i),
                    when(i["first_seen"]),
                    when(i["last_seen"]),
                )
                for i in case["ips"]
            ],
        )
    )
    return s


def _clients(case: Mapping[str, Any]) -> Section:
    s = Section("Client fingerprints")
    s.blocks.append(
        "A fingerprint hashes the user agent (major versions) and the header names in order."
    )
    s.blocks.append(
        table(
            ("fingerprint", "user agents", "requests", "accounts", "other accounts", "confidence"),
            [
                (
                    c["value"],
                    "; ".join(c["user_agents"]) or NONE,
                    c["requests"],
                    c["accounts"],
                    _other(c),
                    c["confidence"],
                )
                for c in case["clients"]
            ],
        )
    )
    return s


def _volume(case: Mapping[str, Any]) -> Section:
    volume = case["volume"]
    s = Section(f"Volume per {volume['bucket']}")
    s.blocks.append(Chart(f"Requests per {volume['bucket']}: allowed, restricted, denied"))
    s.blocks.append(
        table(
            (f"{volume['bucket']} (UTC)", "requests", "allowed", "restricted", "denied"),
            [
                (when(b["start"]), b["requests"], b["allow"], b["restricted"], b["deny"])
                for b in volume["buckets"]
                if b["requests"]
            ],
        )
    )
    return s


def _templates(case: Mapping[str, Any]) -> Section:
    s = Section("Prompt templates")
    s.blocks.append(
        f"Template hashes are BLAKE2b-64 of the masked prompt (masking {case['masking']}); "
        "SimHashes group near duplicates. "
        + (
            "Examples are masked scaffolds: slot values (names, numbers, quotes, code, "
            "paths, URLs, ids) replaced by placeholders."
            if case["redacted"]
            else "Examples are the RAW prompt text (--unredacted)."
        )
    )
    s.blocks.append(
        table(
            (
                "template",
                "SimHash",
                "requests",
                "accounts",
                "other accounts",
                "confidence",
                "first seen",
                "last seen",
            ),
            [
                (
                    t["value"],
                    ", ".join(t["simhashes"]),
                    t["requests"],
                    t["accounts"],
                    _other(t),
                    t["confidence"],
                    when(t["first_seen"]),
                    when(t["last_seen"]),
                )
                for t in case["templates"]
            ],
        )
    )
    shown = [t for t in case["templates"] if t["example"]][:EXAMPLES_SHOWN]
    if not shown:
        s.blocks.append("No examples: the records kept no request content.")
    for t in shown:
        ex = t["example"]
        cut = " (cut)" if ex["cut"] else ""
        s.blocks.append(
            f"Template {t['value']} ({t['requests']:,} requests), from {ex['decision_id']}{cut}:"
        )
        s.blocks.append(Pre(ex["text"]))
    return s


def _detection(case: Mapping[str, Any]) -> Section:
    s = Section("Detection")
    det = case["detection"]
    s.blocks.append(
        f"Risk applied, by requests: {counts(det['risks'], 8)}. "
        f"Detectors fired, by requests: {counts(det['detectors'], 12)}."
    )
    s.blocks.append(
        table(
            (
                "account",
                "first watch",
                "first restrict",
                "first deny",
                "max score",
                "detectors",
                "clusters",
            ),
            [
                (
                    a["account"],
                    when(a["first_watch"]),
                    when(a["first_restrict"]),
                    when(a["first_deny"]),
                    f"{a['max_score']:.3f}",
                    counts(a["detectors"]),
                    counts(a["clusters"]),
                )
                for a in case["accounts"]
            ],
        )
    )
    s.blocks.append(
        table(
            ("cluster", "requests", "accounts", "first seen", "last seen"),
            [
                (
                    c["value"],
                    c["requests"],
                    c["accounts"],
                    when(c["first_seen"]),
                    when(c["last_seen"]),
                )
                for c in case["clusters"]
            ],
        )
    )
    if case["verdicts"] is not None:
        s.blocks.append("Current verdicts in Redis:")
        s.blocks.append(
            table(
                ("account", "action", "cluster", "score", "until", "reasons"),
                [
                    (
                        v["account"],
                        v["action"],
                        v["cluster"],
                        v["score"],
                        v["until"],
                        ", ".join(v["reasons"]),
                    )
                    for v in case["verdicts"]
                ],
            )
        )
    return s


def _decisions(case: Mapping[str, Any]) -> Section:
    s = Section("Decisions and rules")
    s.blocks.append(
        table(
            ("action", "reason", "rule", "requests"),
            [(d["action"], d["reason"], d["rule"], d["requests"]) for d in case["decisions"]],
        )
    )
    s.blocks.append(f"Signals raised, by requests: {counts(case['signals'], 12)}.")
    s.blocks.append(
        table(
            ("rules version", "requests", "first seen", "last seen"),
            [
                (r["value"], r["requests"], when(r["first_seen"]), when(r["last_seen"]))
                for r in case["rules_versions"]
            ],
        )
    )
    return s


def _events(case: Mapping[str, Any]) -> Section:
    s = Section("Reportable events")
    if not case["events"]:
        s.blocks.append("The trail holds no reportable event about these accounts in the period.")
        return s
    s.blocks.append(
        table(
            ("id", "kind", "severity", "incident", "first seen", "requests", "accounts"),
            [
                (
                    e.get("id", ""),
                    e.get("kind", ""),
                    e.get("severity", ""),
                    e.get("incident", ""),
                    when(str(e.get("first_seen", ""))),
                    str(e.get("requests", "")),
                    str(e.get("account_count", "")),
                )
                for e in case["events"]
            ],
        )
    )
    return s


def _chain(case: Mapping[str, Any]) -> Section:
    s = Section("Chain verification")
    chain = case["chain"]
    read, checked = chain["records_read"], chain["records_checked"]
    c = chain["case"]
    if chain["intact"]:
        s.blocks.append(
            f"Every chain of the source is intact: {checked:,} of {read:,} records "
            "re-hashed and linked, so none of the case's records was edited, removed or "
            "reordered after it was written."
        )
    else:
        p = chain["problem"]
        s.blocks.append(
            Alert(f"BROKEN CHAIN ({p['kind']}), found at {p['found_at']}: {p['message']}.")
        )
        s.blocks.append(
            f"{checked:,} records verified before the problem; {c['checked_before_problem']:,} "
            f"of the case's {c['records']:,} records come before it, the rest are unverified."
        )
    s.blocks.append(
        table(
            ("chain", "sequences in the source", "last hash in the source", "restarts"),
            [
                (
                    ch["name"] or "(unnamed)",
                    f"{ch['first_sequence']}-{ch['last_sequence']}",
                    ch["last_hash"],
                    ch["restarts"],
                )
                for ch in chain["chains"]
            ],
        )
    )
    s.blocks.append("Where the case's records sit:")
    s.blocks.append(
        table(
            ("chain", "records", "sequences", "hash of the last one"),
            [
                (
                    ch["name"] or "(unnamed)",
                    ch["records"],
                    f"{ch['first_sequence']}-{ch['last_sequence']}",
                    ch["last_hash"],
                )
                for ch in c["chains"]
            ],
        )
    )
    s.blocks.append("Re-verify with the source (the last hashes above must match):")
    s.blocks.append(Pre(case["source"]["verify"]))
    return s
