"""Jurisdiction through the real Envoy: forged X-Forwarded-For, and reloads under load."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import DEMO_RULES
from tests.test_envoy_e2e import BOB, Stack, Stacks

pytestmark = pytest.mark.envoy


@pytest.fixture
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    """Envoy stacks owned by one test."""
    owned = Stacks(tmp_path_factory)
    try:
        yield owned
    finally:
        owned.close()


IRAN = "2.176.1.1"
GERMANY = "79.192.3.4"


def rules_with(tmp_path: Path, client_ip: str) -> Path:
    """The demo rules with another `client_ip` section."""
    text = DEMO_RULES.read_text()
    start = text.index("client_ip:")
    end = text.index("tiers:")
    path = tmp_path / "rules.yaml"
    path.write_text(text[:start] + client_ip + "\n" + text[end:])
    return path


def publish(path: Path, text: str) -> None:
    """Replace a file atomically, as a ConfigMap update or an editor's save-and-rename does.

    A plain rewrite can be seen half-written by the reloader and count as a failure.
    """
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def reason(stack: Stack, xff: str | None) -> str:
    """The decision for Bob's request with this X-Forwarded-For ("ok" when allowed)."""
    headers = {"authorization": f"Bearer {BOB}"}
    if xff is not None:
        headers["x-forwarded-for"] = xff
    result = stack.post(headers)
    return "ok" if result.status == 200 else str(json.loads(result.body)["reason"])


def test_forged_xff_changes_nothing_without_trusted_hops(stacks: Stacks, tmp_path: Path) -> None:
    """With no trusted hop a client's X-Forwarded-For is ignored: same answer as without it."""
    stack = stacks.start(rules=rules_with(tmp_path, "client_ip: {trusted_hops: 0}"))
    assert reason(stack, None) == "ok"
    for forged in (IRAN, f"{GERMANY}, {IRAN}", "garbage", f"{IRAN}, 127.0.0.1"):
        assert reason(stack, forged) == "ok", forged


def test_trusted_hop_reads_only_what_the_proxy_appended(stacks: Stacks, tmp_path: Path) -> None:
    """With one trusted hop the entry the proxy appended decides; forged ones left of it don't."""
    stack = stacks.start(rules=rules_with(tmp_path, "client_ip: {trusted_hops: 1}"))
    assert reason(stack, IRAN) == "country_denied"
    assert reason(stack, GERMANY) == "ok"
    # The client wrote an Iranian address; the proxy appended the German one it saw.
    assert reason(stack, f"{IRAN}, {GERMANY}") == "ok"
    # The client claims Germany, but the proxy saw Iran.
    assert reason(stack, f"{GERMANY}, {IRAN}") == "country_denied"


def test_rules_rewritten_under_load(stacks: Stacks, tmp_path: Path) -> None:
    """Rewriting the rules while traffic flows fails no check; the new rule applies within 5 s."""
    path = tmp_path / "rules.yaml"
    # Bob's pro tier without its rate limits: this test is about reloads, not quotas.
    text = DEMO_RULES.read_text().replace(
        "      account: {requests: {1m: 60,", "      account: {requests: {1m: 100000,"
    )
    text = text.replace(
        '"frontier-*": {account: {requests: {1m: 20}}}',
        '"frontier-*": {account: {requests: {1m: 100000}}}',
    )
    text = text.replace(
        "entity: {requests: {1m: 300, 1d: 50000}}", "entity: {requests: {1m: 100000}}"
    )
    text = text.replace("1d: 5000}, tokens", "1d: 1000000}, tokens")
    publish(path, text)
    stack = stacks.start(rules=path, reload_interval=0.1)
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            outcomes[reason(stack, GERMANY)] += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        for i in range(6):  # valid edits, and one broken edit, while traffic flows
            publish(path, text.replace("version: demo-1", f"version: demo-1-r{i}"))
            time.sleep(0.15)
        publish(path, "tiers: {pro: {colour: red}}\n")
        time.sleep(0.3)
        # Now put Germany in the embargoed group: Bob (a German account) is refused by
        # the first rule, on his KYC country, within the bound.
        denied_de = text.replace("embargoed: [CU, IR, KP, SY]", "embargoed: [CU, IR, KP, SY, DE]")
        publish(path, denied_de)
        changed_at = time.monotonic()
        while (now := reason(stack, GERMANY)) == "ok":
            assert time.monotonic() - changed_at < 5.0, "new rules not applied within 5 s"
            time.sleep(0.02)
        assert now == "kyc_country_denied"
    finally:
        stop.set()
        for w in workers:
            w.join(10)
    assert outcomes["ok"] > 0
    # Every check was answered by a rules snapshot: allowed, or denied by the new rule.
    assert set(outcomes) <= {"ok", "kyc_country_denied"}
    assert stack.guard.server is not None
    assert stack.guard.server.app.rules.failures == 1


def test_access_log_and_audit_record_share_the_decision_id(stacks: Stacks, tmp_path: Path) -> None:
    """One request through Envoy: its access log line and its audit record name one decision."""
    audit = tmp_path / "audit.jsonl"
    stack = stacks.start(audit=f"jsonl:{audit}")
    res = stack.post({"authorization": f"Bearer {BOB}", "x-forwarded-for": IRAN})
    decision_id = json.loads(res.body)["decision_id"]
    deadline = time.monotonic() + 10
    records: list[dict[str, object]] = []
    logged: list[dict[str, object]] = []
    while time.monotonic() < deadline and not (records and logged):
        time.sleep(0.05)
        text = audit.read_text() if audit.exists() else ""
        records = [json.loads(x) for x in text.splitlines() if decision_id in x]
        log = stack.access_log.read_text() if stack.access_log.exists() else ""
        logged = [json.loads(x) for x in log.splitlines() if decision_id in x]
    assert records and logged, "the decision is missing from the audit file or the access log"
    (record,), (line,) = records, logged
    assert record["decision_id"] == line["decision_id"] == decision_id
    assert record["request_id"] == line["request_id"]
    assert (record["reason"], record["rule"]) == ("country_denied", "jurisdiction:embargoed-ip")
    assert (record["country"], record["client_ip"], record["client_network"]) == (
        "IR",
        IRAN,
        "2.176.1.0/24",
    )
