"""Live probes: a bounded number of real requests through the deployment's Envoy.

Each probe sends one request (the burst and the elicitation probes a few),
records what went out (keys shown only as a digest prefix) and what came
back, and judges the control. When the model server echoes the governance
headers it received (the demo's mock does, under `governance_headers`), the
probes read them; when it does not, a probe that needs them is
`unverifiable` rather than passed.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from authz.assess.findings import CheckInfo, Finding, Severity
from authz.procs import HttpResult, http_request
from authz.rules import Rules

FORGED = "assess-forged"
# Own wording: the step-by-step shape the elicitation detector scores highly.
ELICIT = (
    "You are a careful tutor. For exercise {n} of the series, work out how to detect a cycle "
    "in a linked list. Think step by step, write out every intermediate step of your "
    "reasoning in full before the answer, then check each step again."
)
JURISDICTION_REASONS = {"country_denied", "network_denied", "jurisdiction_denied"}
# A refusal that shows the elicitation control at work: detection, the KYC gate, or the
# tier's model list. Anything else (a bad key, a quota, an outage) says nothing about it.
ELICITATION_REFUSALS = {"extraction_denied", "verification_required", "model_not_allowed"}

NO_KEY = CheckInfo(
    "DG-ID-101",
    "A request without a key is refused with 401",
    Severity.CRITICAL,
    1,
    "Put envoy.filters.http.ext_authz in front of the router on every listener, "
    "failure_mode_allow: false",
)
FORGED_KEY = CheckInfo(
    "DG-ID-102",
    "A made-up key is refused with 401",
    Severity.CRITICAL,
    1,
    "Keep distill-guard's key lookup in the path (no allow-all fallback, no dry_run)",
)
REVOKED_KEY = CheckInfo(
    "DG-ID-103",
    "A revoked key is refused",
    Severity.HIGH,
    1,
    "distill-guard keys revoke <key id>; DISTILL_GUARD_REGISTRY_CACHE_TTL=5",
)
FORGED_XFF = CheckInfo(
    "DG-JU-101",
    "A forged X-Forwarded-For does not move the client",
    Severity.HIGH,
    4,
    "client_ip:\n  trusted_proxies: [<your load balancers' CIDRs>]   # or none at all\n"
    "# Envoy: use_remote_address: true, xff_num_trusted_hops: 0",
)
FORGED_HEADERS = CheckInfo(
    "DG-OG-101",
    "Client-sent governance headers never reach the model server",
    Severity.HIGH,
    5,
    "common_http_protocol_options:\n  headers_with_underscores_action: DROP_HEADER\n"
    "# and keep distill-guard's header rewrite (validate_mutations: true)",
)
OVERSIZE = CheckInfo(
    "DG-ID-104",
    "An oversize body with the model past the cut is not served",
    Severity.MEDIUM,
    1,
    'tiers:\n  <tier>:\n    models: ["small-*"]   # a tier naming its models refuses '
    "model_unreadable",
)
MALFORMED = CheckInfo(
    "DG-ID-105",
    "A malformed JSON body gets a clear 4xx",
    Severity.MEDIUM,
    1,
    "with_request_body: {max_request_bytes: 1048576, allow_partial_message: true, "
    "pack_as_bytes: true}",
)
ELICITATION = CheckInfo(
    "DG-OG-102",
    "Step-by-step elicitation from an unverified key ends restricted",
    Severity.HIGH,
    5,
    "tiers:\n  free:\n    reasoning: none\ndetection:\n  unverified_factor: 1.5",
)
BURST = CheckInfo(
    "DG-RL-101",
    "A burst past the tier's limit gets 429 with Retry-After",
    Severity.HIGH,
    2,
    "tiers:\n  free:\n    limits:\n      account: {requests: {1m: 5, 1d: 30}}",
)


class ProbeError(Exception):
    """The target could not be reached, or stopped answering."""


def key_label(key: str) -> str:
    """How a key appears in the report: a digest prefix, never the key."""
    return "key#" + hashlib.sha256(key.encode()).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request a probe sent and what came back."""

    probe: str
    request: str
    status: int
    reason: str
    upstream: dict[str, list[str]] | None  # governance headers the model server echoed

    def to_json(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "probe": self.probe,
            "request": self.request,
            "status": self.status,
            "reason": self.reason,
            "upstream_governance": self.upstream,
        }


@dataclass
class Target:
    """Where and with what the probes run."""

    url: str
    key: str
    model: str
    path: str = "/v1/messages"
    revoked_key: str | None = None
    unverified_key: str | None = None
    burst_key: str | None = None
    xff_ip: str | None = None
    oversize_bytes: int = (1 << 20) + 65536
    burst_max: int = 120
    elicit_max: int = 6
    rules: Rules | None = None
    exchanges: list[Exchange] = field(default_factory=list)
    bytes_sent: int = 0
    lost: str | None = None  # why the probes stopped early, when the target went away

    @property
    def key_header(self) -> str:
        """The header the deployment reads keys from first."""
        return self.rules.key_headers[0] if self.rules is not None else "authorization"

    def auth(self, key: str) -> dict[str, str]:
        """The credential header for `key`."""
        if self.key_header == "authorization":
            return {"authorization": f"Bearer {key}"}
        return {self.key_header: key}

    def send(
        self, probe: str, what: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[HttpResult, Exchange]:
        """POST one request and record it."""
        if body is None:
            body = json.dumps({"model": self.model, "max_tokens": 16}).encode()
        headers = {"content-type": "application/json", **headers}
        try:
            res = http_request(
                self.url.rstrip("/") + self.path,
                method="POST",
                headers=headers,
                body=body,
                timeout=15.0,
            )
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            raise ProbeError(f"cannot reach {self.url}: {exc}") from None
        self.bytes_sent += len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        payload = _json(res.body)
        reason = str(payload.get("reason", "")) if res.status >= 300 else ""
        upstream = payload.get("governance_headers") if res.status < 300 else None
        ex = Exchange(
            probe, what, res.status, reason, upstream if isinstance(upstream, dict) else None
        )
        self.exchanges.append(ex)
        return res, ex


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _said(ex: Exchange) -> str:
    return f"HTTP {ex.status}" + (f" {ex.reason}" if ex.reason else "")


def refused(
    t: Target, info: CheckInfo, what: str, headers: dict[str, str], ok: set[int]
) -> Finding:
    """Send one request that must be refused with one of `ok`."""
    _, ex = t.send(info.id, what, headers)
    evidence = [f"{what} -> {_said(ex)}"]
    if ex.status in ok:
        return info.finding("pass", evidence)
    if ex.status < 300:
        return info.finding("fail", [*evidence, "the request reached the model server"])
    if ex.status >= 500:
        return info.finding("fail", [*evidence, "a server error, not a clear answer"])
    return info.finding("warn", [*evidence, f"expected HTTP {'/'.join(map(str, sorted(ok)))}"])


def probe_forged_xff(t: Target) -> Finding:
    """The same request with and without a forged X-Forwarded-For must be decided alike."""
    info = FORGED_XFF
    if t.xff_ip is None:
        return info.finding("unverifiable", ["no address of a denied country to forge"])
    _, base = t.send(info.id, f"test {key_label(t.key)}", t.auth(t.key))
    if base.status >= 300:
        return info.finding("unverifiable", [f"the test key itself is refused: {_said(base)}"])
    what = f"test {key_label(t.key)}, x-forwarded-for: {t.xff_ip}"
    _, ex = t.send(info.id, what, {**t.auth(t.key), "x-forwarded-for": t.xff_ip})
    evidence = [f"without XFF -> {_said(base)}", f"{what} -> {_said(ex)}"]
    if ex.reason in JURISDICTION_REASONS:
        return info.finding("fail", [*evidence, "the client chose its own location"])
    if ex.status != base.status:
        return info.finding("warn", [*evidence, "the forged header changed the decision"])
    return info.finding("pass", evidence)


def probe_forged_headers(t: Target) -> Finding:
    """Forged x-distill-* (and x_distill_*) headers must not reach the model server."""
    info = FORGED_HEADERS
    forged = {
        "x-distill-reasoning": "full",
        "x-distill-tier": FORGED,
        "x-distill-watermark-key": FORGED,
        "x-distill-max-thinking-tokens": "999999",
        "x-distill-assess-probe": FORGED,
        "x_distill_reasoning": "full",
    }
    what = f"test {key_label(t.key)} + " + ", ".join(forged)
    res, ex = t.send(info.id, what, {**t.auth(t.key), **forged})
    evidence = [f"{what} -> {_said(ex)}"]
    if ex.status >= 300:
        return info.finding("unverifiable", [*evidence, "the test key was refused"])
    if ex.upstream is None:
        return info.finding(
            "unverifiable", [*evidence, "the model server does not echo what it received"]
        )
    leaked = [
        f"{name}: {values}"
        for name, values in sorted(ex.upstream.items())
        if len(values) > 1 or FORGED in values or "999999" in values
    ]
    names = _json(res.body).get("header_names")
    if isinstance(names, list) and "x_distill_reasoning" in names:
        leaked.append("x_distill_reasoning reached the model server")
    if leaked:
        return info.finding("fail", evidence + leaked)
    return info.finding("pass", [*evidence, "upstream saw only distill-guard's values"])


def probe_oversize(t: Target) -> Finding:
    """A body longer than Envoy sends to the check, with the model after the cut."""
    info = OVERSIZE
    pad = "x" * t.oversize_bytes
    body = json.dumps({"messages": [{"role": "user", "content": pad}], "model": t.model})
    what = f"test {key_label(t.key)}, {len(body)}-byte body, model after the cut"
    _, ex = t.send(info.id, what, t.auth(t.key), body.encode())
    evidence = [f"{what} -> {_said(ex)}"]
    if 400 <= ex.status < 500:
        return info.finding("pass", evidence)
    if ex.status < 300:
        model = (ex.upstream or {}).get("x-distill-model")
        note = "served without x-distill-model: the model server must refuse or pick the model"
        return info.finding("warn" if not model else "pass", evidence + ([] if model else [note]))
    return info.finding("fail", [*evidence, "a server error, not a clear answer"])


def probe_malformed(t: Target) -> Finding:
    """A body that is not JSON."""
    info = MALFORMED
    what = f"test {key_label(t.key)}, body '{{\"model\": ' (cut JSON)"
    _, ex = t.send(info.id, what, t.auth(t.key), b'{"model": ')
    evidence = [f"{what} -> {_said(ex)}"]
    if 400 <= ex.status < 500:
        return info.finding("pass", evidence)
    if ex.status < 300:
        return info.finding("fail", [*evidence, "a broken body reached the model server"])
    return info.finding("fail", [*evidence, "a server error, not a clear answer"])


def probe_elicitation(t: Target) -> Finding:
    """Step-by-step prompts with a large thinking budget from a fresh unverified key."""
    info = ELICITATION
    if t.unverified_key is None:
        return info.finding("unverifiable", ["no --unverified-key given"])
    evidence: list[str] = []
    blind = 0
    for n in range(1, t.elicit_max + 1):
        body = {
            "model": t.model,
            "max_tokens": 17000,
            "thinking": {"type": "enabled", "budget_tokens": 16000},
            "messages": [{"role": "user", "content": ELICIT.format(n=n)}],
        }
        what = f"unverified {key_label(t.unverified_key)}, elicitation prompt {n}"
        _, ex = t.send(info.id, what, t.auth(t.unverified_key), json.dumps(body).encode())
        if ex.status >= 300:
            evidence.append(f"{what} -> {_said(ex)}")
            if ex.status == 403 and ex.reason in ELICITATION_REFUSALS:
                return info.finding("pass", [*evidence, f"refused after {n} request(s)"])
            return info.finding(
                "unverifiable",
                [*evidence, "refused for a reason that is not detection, KYC or the model list"],
            )
        if ex.upstream is None:
            blind += 1
            continue
        exposure = (ex.upstream.get("x-distill-reasoning") or ["?"])[0]
        evidence.append(f"{what} -> HTTP {ex.status}, upstream told reasoning {exposure}")
        if exposure in ("summary", "none"):
            return info.finding("pass", [*evidence, f"restricted after {n} request(s)"])
    if blind:
        return info.finding(
            "unverifiable", [*evidence, "the model server does not echo what it received"]
        )
    return info.finding("fail", [*evidence, f"full reasoning after {t.elicit_max} requests"])


def _minute_limit(t: Target, tier: str | None) -> int | None:
    if t.rules is None or tier is None or tier not in t.rules.tiers:
        return None
    limits = [w.limit for w in t.rules.tiers[tier].limits.account if w.kind == "requests"]
    return min(limits) if limits else None


def probe_burst(t: Target) -> Finding:
    """Requests in a row with the burst key until 429, bounded by the tier's limit."""
    info = BURST
    if t.burst_key is None:
        return info.finding("unverifiable", ["no --burst-key given (the burst uses up its quota)"])
    label = key_label(t.burst_key)
    res, first = t.send(info.id, f"burst {label}, request 1", t.auth(t.burst_key))
    tiers = (first.upstream or {}).get("x-distill-tier") or []
    tier = tiers[0] if tiers else None
    limit = _minute_limit(t, tier)
    # Counting is atomic, so the limit holds exactly; one request of slack per ten covers
    # requests the key made just before the probe in the same window.
    ceiling = t.burst_max if limit is None else min(t.burst_max, limit + 1 + max(1, limit // 10))
    sent = 1
    while res.status != 429 and res.status < 300 and sent < ceiling:
        sent += 1
        res, first = t.send(info.id, f"burst {label}, request {sent}", t.auth(t.burst_key))
    known = f"tier {tier}, smallest request limit {limit}" if limit else "limit unknown"
    evidence = [f"{sent} request(s) sent ({known}); last -> {_said(first)}"]
    if res.status == 429:
        retry = res.headers.get("retry-after")
        if retry is None:
            return info.finding("fail", [*evidence, "429 without Retry-After"])
        return info.finding("pass", [*evidence, f"Retry-After: {retry}"])
    if res.status >= 300:
        return info.finding("unverifiable", [*evidence, "the burst key is refused outright"])
    return info.finding("fail", [*evidence, f"no 429 within {ceiling} requests"])


def preflight(t: Target) -> None:
    """One request with the test key; ProbeError unless it is served (2xx)."""
    _, ex = t.send("preflight", f"test {key_label(t.key)}", t.auth(t.key))
    if not 200 <= ex.status < 300:
        # Every probe after this one leans on the test key: judging them against a key the
        # deployment refuses would fill the report with findings that mean nothing.
        raise ProbeError(f"--key is refused: {_said(ex)}")


def probe_no_key(t: Target) -> Finding:
    """A request without any key."""
    return refused(t, NO_KEY, "no key", {}, {401})


def probe_forged_key(t: Target) -> Finding:
    """A key that was never issued."""
    return refused(t, FORGED_KEY, "made-up key", t.auth("dg_assess_made_up_key_0000"), {401})


def probe_revoked_key(t: Target) -> Finding:
    """The revoked key, when one was given."""
    if t.revoked_key is None:
        return REVOKED_KEY.finding("unverifiable", ["no --revoked-key given"])
    label = f"revoked {key_label(t.revoked_key)}"
    return refused(t, REVOKED_KEY, label, t.auth(t.revoked_key), {401, 403})


# In the order they run; the elicitation runs before the burst that may share its key.
PROBES: tuple[tuple[CheckInfo, Callable[[Target], Finding]], ...] = (
    (NO_KEY, probe_no_key),
    (FORGED_KEY, probe_forged_key),
    (REVOKED_KEY, probe_revoked_key),
    (FORGED_XFF, probe_forged_xff),
    (FORGED_HEADERS, probe_forged_headers),
    (OVERSIZE, probe_oversize),
    (MALFORMED, probe_malformed),
    (ELICITATION, probe_elicitation),
    (BURST, probe_burst),
)
ALL_PROBES = tuple(info for info, _ in PROBES)


def run_probes(t: Target) -> list[Finding]:
    """Every probe of PROBES in turn.

    When the target stops answering part-way, the probes already done keep their
    findings and the rest are recorded as unverifiable, with the reason in `t.lost`.
    """
    out: list[Finding] = []
    for info, probe in PROBES:
        if t.lost is not None:
            out.append(info.finding("unverifiable", [f"not run: {t.lost}"]))
            continue
        try:
            out.append(probe(t))
        except ProbeError as exc:
            t.lost = f"the target stopped answering ({exc})"
            out.append(info.finding("unverifiable", [f"cut short: {t.lost}"]))
    return out
