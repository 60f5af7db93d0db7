"""Configuration checks of how `distill-guard serve` runs (flags and environment)."""

from __future__ import annotations

from authz.assess.deployment import Deployment
from authz.assess.findings import Outcome, Severity, check
from authz.assess.serveconf import ServeConfig


def _serve(d: Deployment) -> ServeConfig:
    assert d.serve is not None
    return d.serve


@check(
    "DG-AU-001",
    "Audit records go to a durable sink",
    Severity.MEDIUM,
    6,
    ("serve",),
    fix="DISTILL_GUARD_AUDIT=stdout,redis   # or jsonl:/var/log/distill-guard/audit.jsonl",
)
def audit_durable(d: Deployment) -> Outcome:
    """stdout is only as durable as the log collector, and its chain restarts with the process."""
    conf = _serve(d)
    sinks = [s.strip() for s in conf.effective("audit").split(",") if s.strip()]
    if not sinks or sinks == ["none"]:
        return "fail", [f"{conf.at('audit')}: none: decisions are not recorded at all"]
    durable = [s for s in sinks if s != "stdout"]
    if not durable:
        return "fail", [
            f"{conf.at('audit')}: stdout only: the chain restarts at every restart and "
            "nothing can be read back to verify it"
        ]
    return "pass", [f"audit sinks: {', '.join(sinks)}"]


@check(
    "DG-AU-002",
    "Metrics or OpenTelemetry export is on",
    Severity.LOW,
    6,
    ("serve",),
    fix="DISTILL_GUARD_METRICS_LISTEN=0.0.0.0:9464\n"
    "# or OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317",
)
def telemetry_on(d: Deployment) -> Outcome:
    """Without metrics nobody sees a spike of denials or a store outage."""
    conf = _serve(d)
    endpoint = conf.otel.get("OTEL_EXPORTER_OTLP_ENDPOINT") or conf.otel.get(
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
    )
    if conf.otel.get("OTEL_SDK_DISABLED", "").lower() == "true":
        endpoint = None
    listen = conf.get("metrics_listen")
    if not endpoint and not listen:
        return "fail", [f"{conf.source}: no --metrics-listen and no OTEL_EXPORTER_OTLP_ENDPOINT"]
    shown = [f"Prometheus on {listen}"] if listen else []
    shown += [f"OTLP to {endpoint}"] if endpoint else []
    return "pass", shown


@check(
    "DG-RL-005",
    "Counters and keys live in a shared store, not in each process",
    Severity.MEDIUM,
    2,
    ("serve",),
    fix="DISTILL_GUARD_STORE=redis://redis:6379/0   # from a Secret",
)
def shared_store(d: Deployment) -> Outcome:
    """With memory:// every replica counts alone and sign-ups reach only one process."""
    conf = _serve(d)
    store = conf.effective("store")
    if store.startswith("memory:"):
        replicas = f" with {conf.replicas} replicas" if conf.replicas else ""
        return "fail", [f"{conf.at('store')}: {store}{replicas}: limits are per process"]
    return "pass", [f"{conf.at('store')}: shared store"]


@check(
    "DG-ID-008",
    "Key digests are peppered (HMAC)",
    Severity.LOW,
    1,
    ("serve",),
    fix="DISTILL_GUARD_KEY_PEPPER_FILE=/etc/distill-guard/secrets/key-pepper",
)
def pepper_set(d: Deployment) -> Outcome:
    """Without a pepper a leaked digest list can be tested offline against guessed keys."""
    conf = _serve(d)
    if not conf.get("key_pepper_file"):
        return "fail", [f"{conf.at('key_pepper_file')}: plain SHA-256 digests"]
    return "pass", [f"{conf.at('key_pepper_file')}"]


@check(
    "DG-ID-009",
    "A revocation reaches every replica within a minute",
    Severity.LOW,
    1,
    ("serve",),
    fix="DISTILL_GUARD_REGISTRY_CACHE_TTL=5",
)
def revocation_delay(d: Deployment) -> Outcome:
    """The key cache keeps serving a revoked key until its entry expires."""
    conf = _serve(d)
    try:
        ttl = conf.seconds("registry_cache_ttl", zero=True)
    except ValueError as exc:
        return "fail", [f"{conf.at('registry_cache_ttl')}: {exc}"]
    if ttl > 60:
        return "fail", [f"{conf.at('registry_cache_ttl')}: {ttl:g} s"]
    return "pass", [f"key cache {ttl:g} s"]
