"""The shipped Prometheus alerting rules: valid for promtool, unit-tested by promtool, and
written with the metric names distill-guard's Prometheus endpoint really exposes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "envoy" / "prometheus" / "alerts.yaml"
ALERT_TESTS = ROOT / "envoy" / "prometheus" / "alerts_test.yaml"


def promtool() -> str:
    """The promtool binary (Debian package `prometheus`); CI installs it (tests/run.sh)."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI: tests/run.sh installs the prometheus package")
        pytest.skip("promtool not installed (apt-get install prometheus); tests/run.sh installs it")
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """promtool with arguments, from the repository root."""
    return subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the file and finds every rule."""
    result = run_promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules` runs the alert unit tests (input series, expected alerts): all pass."""
    result = run_promtool("test", "rules", str(ALERT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def alert_names() -> list[str]:
    """The alerts the rules file defines."""
    doc = yaml.safe_load(ALERTS.read_text())
    return [rule["alert"] for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    """Each alert appears in alerts_test.yaml with at least one expected firing."""
    doc = yaml.safe_load(ALERT_TESTS.read_text())
    fired = {
        case["alertname"]
        for test in doc["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert set(alert_names()) == fired


# Gives every instrument a value, then prints the metric names the /metrics endpoint
# (telemetry.setup, as `serve` and `analyze` install it) serves. Observable gauges
# report only for live objects, so a stand-in of each kind is registered for them.
_EXPOSE = """
import asyncio, urllib.request
from authz import reload, telemetry
from authz.audit import queue
from authz.events import report, webhook
from authz.metering import breaker

installed = telemetry.setup(metrics_listen="127.0.0.1:0")

class StandIn:
    state = breaker.BreakerState.CLOSED
    name = "redis"
    depth = 0
    backlog = 0
    class sink:
        name = "redis"

stand_in = StandIn()
breaker._live.add(stand_in)
queue._trails.add(stand_in)
queue._workers.add(stand_in)
webhook._QUEUES.append(asyncio.Queue())
telemetry.decisions.add(1, {"action": "allow", "reason": "ok", "tier": "free"})
telemetry.check_duration.record(0.001)
for counter in (
    breaker._failures, breaker._short_circuits, breaker._fallbacks,
    queue._dropped, queue._written, queue._errors, reload._reloads, reload._failures,
    report._emitted, report._sink_errors,
    webhook._delivered, webhook._failures, webhook._dropped,
):
    counter.add(1)
url = f"http://127.0.0.1:{installed.metrics_port}/metrics"
for line in urllib.request.urlopen(url).read().decode().splitlines():
    if line.startswith("distill_guard"):
        print(line.split("{")[0].split(" ")[0])
installed.shutdown()
"""


def test_rules_use_the_names_the_endpoint_exposes() -> None:
    """Every distill_guard_* name in the rules is served by the real Prometheus endpoint."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "DISTILL_GUARD_"))}
    result = subprocess.run(
        [sys.executable, "-c", _EXPOSE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    exposed = set(result.stdout.split())
    used = set(re.findall(r"\bdistill_guard_[a-z_]+\b", ALERTS.read_text()))
    assert used, "no metric names found in the rules"
    assert used <= exposed, f"not exposed: {sorted(used - exposed)}"
    # What an operator must hear about is covered: faults, latency, the store, the
    # audit trail, rules reloads, reportable events and their webhook.
    assert {
        "distill_guard_decisions_total",
        "distill_guard_check_duration_seconds_bucket",
        "distill_guard_rate_store_failures_total",
        "distill_guard_rate_store_circuit_state",
        "distill_guard_audit_queue_depth",
        "distill_guard_audit_dropped_total",
        "distill_guard_reload_failures_total",
        "distill_guard_events_emitted_total",
        "distill_guard_events_webhook_dropped_total",
        "distill_guard_events_webhook_failures_total",
    } <= used
