"""`distill-guard assess`: the configuration review, the report forms and the exit status.

The weak deployment in tests/fixtures/assess/weak/ plants one weakness per
check; the project's recommended deployment (the demo rules and accounts, the
shipped Envoy bootstrap and Kubernetes manifest) must come out without a high
or critical finding.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from authz.assess.findings import Severity
from authz.assess.review import REGISTRY  # importing review registers every check
from authz.assess.serveconf import load_serve_config
from authz.cli import main

ROOT = Path(__file__).resolve().parent.parent
WEAK = ROOT / "tests" / "fixtures" / "assess" / "weak"
NOW = "2026-11-27T00:00:00Z"
RECOMMENDED = [
    "--rules", str(ROOT / "authz" / "demo" / "rules.yaml"),
    "--accounts", str(ROOT / "authz" / "demo" / "accounts.jsonl"),
    "--envoy", str(ROOT / "envoy" / "sidecar.yaml"),
    "--serve-config", str(ROOT / "envoy" / "k8s" / "base" / "deployment.yaml"),
]  # fmt: skip
WEAK_ARGS = [
    "--rules", str(WEAK / "rules.yaml"),
    "--accounts", str(WEAK / "accounts.jsonl"),
    "--envoy", str(WEAK / "envoy.yaml"),
    "--serve-config", str(WEAK / "serve.env"),
]  # fmt: skip
# Every id a PLANTED comment in the weak fixtures names, with the status it must get.
PLANTED = {c.info.id: "fail" for c in REGISTRY.checks} | {"DG-DT-002": "warn"}


def _assess_json(
    capsys: pytest.CaptureFixture[str], args: list[str]
) -> tuple[int, dict[str, object]]:
    status = main(["assess", *args, "--now", NOW, "--json"])
    return status, json.loads(capsys.readouterr().out)


def _by_id(report: dict[str, object]) -> dict[str, dict[str, object]]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return {f["id"]: f for f in findings}


def test_weak_fixtures_mark_every_planted_check() -> None:
    """Each check id appears in a PLANTED comment of the weak fixtures, so none goes untested."""
    text = "".join(p.read_text() for p in WEAK.iterdir())
    planted = set(re.findall(r"DG-[A-Z]{2}-\d{3}", text))
    assert planted == set(PLANTED)


def test_weak_deployment_gets_each_planted_finding(capsys: pytest.CaptureFixture[str]) -> None:
    """Every planted weakness is found with its id and status, and the gate fails (exit 1)."""
    status, report = _assess_json(capsys, WEAK_ARGS)
    found = _by_id(report)
    assert {i: found[i]["status"] for i in PLANTED} == PLANTED
    assert status == 1
    assert report["verdict"] == "fail"


@pytest.mark.parametrize(
    ("check_id", "evidence"),
    [
        ("DG-ID-004", "envoy.yaml:44 "),
        ("DG-ID-005", "disabled for {'prefix': '/v1/batch'}"),
        ("DG-JU-003", "rules.yaml:8 client_ip.trusted_proxies: 0.0.0.0/0"),
        ("DG-JU-001", "denied by IP but not by KYC country: CU, IR, KP, SY"),
        ("DG-ID-012", "tier 'platinum'"),
        ("DG-ID-009", "serve.env:8 DISTILL_GUARD_REGISTRY_CACHE_TTL: 300 s"),
        ("DG-OG-002", "tiers.trial.max_thinking_tokens: 1000000 above 4096"),
        ("DG-OG-002", "tiers.free (max_thinking_tokens not present): free admits"),
        ("DG-OG-006", "virtual_hosts.0.request_headers_to_add.0: adds x-distill-reasoning"),
        ("DG-OG-006", "routes.1.request_headers_to_add.0: adds X_Distill_Max_Thinking_Tokens"),
    ],
)
def test_weak_findings_point_at_the_planted_line(
    capsys: pytest.CaptureFixture[str], check_id: str, evidence: str
) -> None:
    """Evidence names the file and line (or the value) that causes the finding."""
    _, report = _assess_json(capsys, WEAK_ARGS)
    assert any(evidence in e for e in _by_id(report)[check_id]["evidence"])  # type: ignore[attr-defined]


def test_recommended_deployment_has_no_high_finding(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped configuration passes every check of high or critical severity."""
    status, report = _assess_json(capsys, RECOMMENDED)
    high = [
        (f["id"], f["evidence"])
        for f in _by_id(report).values()
        if f["status"] != "pass" and Severity.parse(str(f["severity"])) >= Severity.HIGH
    ]
    assert high == []
    assert status == 0
    assert len(_by_id(report)) == len(REGISTRY.checks)


def test_fail_on_lowers_the_gate(capsys: pytest.CaptureFixture[str]) -> None:
    """--fail-on medium fails the recommended deployment on its medium findings (exit 1)."""
    status, report = _assess_json(capsys, [*RECOMMENDED, "--fail-on", "medium"])
    assert status == 1
    assert report["fail_on"] == "medium"


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    """The JSON form has the verdict, counts, six controls, parts and complete findings."""
    _, report = _assess_json(capsys, WEAK_ARGS)
    assert report["generated"] == NOW
    assert set(report["failed_by_severity"]) == {"critical", "high", "medium", "low", "info"}  # type: ignore[arg-type]
    controls = report["controls"]
    assert [c["control"] for c in controls] == [1, 2, 3, 4, 5, 6]  # type: ignore[union-attr,index]
    assert report["parts"]["live probes"] == "skipped: no --target"  # type: ignore[index]
    first = report["findings"][0]  # type: ignore[index]
    assert set(first) == {
        "id", "title", "severity", "control", "control_name", "status", "evidence", "fix",
    }  # fmt: skip
    assert first["severity"] == "critical"


def test_report_files_are_deterministic_and_self_contained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--out writes Markdown, JSON and one HTML file fetching nothing; same input, same bytes."""
    for name in ("a", "b"):
        main(["assess", *WEAK_ARGS, "--now", NOW, "--out", str(tmp_path / name)])
    capsys.readouterr()
    for name in ("assessment.md", "assessment.html", "assessment.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    page = (tmp_path / "a" / "assessment.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "data:image/png;base64," in page
    assert "DG-ID-004" in (tmp_path / "a" / "assessment.md").read_text()


_VHOSTS_5 = """static_resources:
  listeners:
  - filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config: {route_config: {virtual_hosts: [5]}}
"""
_SUFFIX = {"--envoy": "e.yaml", "--serve-config": "m.yaml"}


def _as_file(tmp: Path, flag: str, value: str) -> str:
    """A file argument given inline (it holds a newline) written to a file; others as they are."""
    if "\n" not in value:
        return value
    name = _SUFFIX[flag]
    if flag == "--serve-config" and not value.startswith("spec"):
        name = "m.sh" if value.startswith("distill-guard") else "m.env"
    (tmp / name).write_text(value)
    return str(tmp / name)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rules", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read"),
        (["--envoy", str(WEAK / "rules.yaml")], "not an Envoy bootstrap"),
        (["--serve-config", str(WEAK / "accounts.jsonl")], "expected NAME=value"),
        (["--rules", str(WEAK / "rules.yaml"), "--fail-on", "severe"], "unknown severity"),
        (["--rules", str(WEAK / "rules.yaml"), "--now", "yesterday"], "--now:"),
        (["--target", "http://127.0.0.1:9"], "--target needs --key"),
        (
            ["--target", "http://127.0.0.1:9", "--key", "dg_x_000000000000000", "--admin", "h:1"],
            "--admin needs --admin-token-file",
        ),
        ([], "nothing to assess"),
        (["--envoy", "static_resources: 5\n"], "static_resources: expected a mapping, got 5"),
        (
            ["--envoy", "static_resources: {listeners: [5]}\n"],
            "static_resources.listeners.0: expected a mapping, got 5",
        ),
        (["--envoy", _VHOSTS_5], "route_config.virtual_hosts.0: expected a mapping, got 5"),
        (
            ["--envoy", "static_resources: {}\nadmin: {address: 7}\n"],
            "admin.address: expected a mapping, got 7",
        ),
        (["--serve-config", "spec: 5\n"], "m.yaml: spec: expected a mapping, got 5"),
        (
            ["--serve-config", "spec: {containers: [{name: distill-guard, env: 5}]}\n"],
            "spec.containers.0.env: expected a list, got 5",
        ),
        (
            ["--serve-config", "DISTILL_GUARD_REGISTRY_CACHE_TTL=soon\n"],
            "m.env:1 DISTILL_GUARD_REGISTRY_CACHE_TTL: 'soon': serve refuses this value",
        ),
        (
            ["--serve-config", "distill-guard serve --check-budget=fast\n"],
            "m.sh --check-budget: 'fast': serve refuses this value",
        ),
        (["--campaign"], "--campaign needs --rules"),
    ],
)
def test_bad_inputs_exit_2_with_a_message(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad file or flag is one clear line on stderr and exit status 2, never a traceback."""
    args = [_as_file(tmp_path, flag, value) for flag, value in zip(["", *args], args, strict=False)]
    assert main(["assess", *args]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_unreachable_target_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A target nobody listens on is a clear error, not a report full of failures."""
    assert main(["assess", "--target", "http://127.0.0.1:9", "--key", "dg_x_000000000000000"]) == 2
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_serve_config_from_a_command_line(tmp_path: Path) -> None:
    """A serve command line is read: env words before it, flags over the environment."""
    path = tmp_path / "serve.sh"
    path.write_text(
        "DISTILL_GUARD_AUDIT=stdout distill-guard serve --rules r.yaml \\\n"
        "  --audit=stdout,redis --store redis://redis:6379/0 --audit-request-content\n"
    )
    conf = load_serve_config(path)
    assert conf.get("audit") == "stdout,redis"
    assert conf.get("store") == "redis://redis:6379/0"
    assert conf.get("audit_request_content") == "true"
    assert conf.effective("check_budget") == "0.2"


def test_serve_config_from_a_manifest_with_secrets(tmp_path: Path) -> None:
    """The shipped manifest's distill-guard sidecar is found; Secret values stay unresolved."""
    conf = load_serve_config(ROOT / "envoy" / "k8s" / "base" / "deployment.yaml")
    assert conf.get("store") == "<from secretKeyRef>"
    assert conf.get("audit") == "stdout"
    assert conf.otel["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert conf.replicas == 2


@pytest.mark.redis
def test_keys_from_the_redis_registry(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--store reads the keys through the registry: weak keys found, digests not flagged."""
    assert main(["keys", "import", "--store", redis_url, str(WEAK / "accounts.jsonl")]) == 0
    capsys.readouterr()
    status, report = _assess_json(
        capsys, ["--store", redis_url, "--rules", str(WEAK / "rules.yaml"), "--fail-on", "info"]
    )
    found = _by_id(report)
    assert status == 1
    assert found["DG-ID-010"]["status"] == "fail"  # free-1's key never expires
    assert found["DG-ID-013"]["status"] == "fail"  # rejected-1 holds an active key
    assert found["DG-ID-012"]["status"] == "fail"  # gone-1 is on tier platinum
    assert found["DG-ID-011"]["status"] == "pass"  # the registry keeps digests only
    assert any("store: account rejected-1" in e for e in found["DG-ID-013"]["evidence"])  # type: ignore[attr-defined]


def test_unreachable_store_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """A Redis nobody listens on is one clear line and exit 2."""
    assert main(["assess", "--store", "redis://127.0.0.1:9/0"]) == 2
    assert "the store did not answer" in capsys.readouterr().err


def _rules_file(tmp: Path, extra: dict[str, object]) -> str:
    base: dict[str, object] = {
        "version": "t",
        "tiers": {"free": {"allow_unverified": True, "reasoning": "none"}},
    }
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({**base, **extra}))
    return str(path)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({}, ("DG-JU-001", "fail", "rules.yaml jurisdiction.rules (not present): no country")),
        ({"client_ip": {"trusted_proxies": ["::/8"]}}, ("DG-JU-003", "fail", "::/8 trusts every")),
        ({"client_ip": {"trusted_proxies": ["2001:db8::/31"]}}, ("DG-JU-003", "fail", "/31")),
        ({"client_ip": {"trusted_proxies": ["2001:db8::/32"]}}, ("DG-JU-003", "pass", "XFF read")),
        ({"client_ip": {"trusted_proxies": ["10.0.0.0/8"]}}, ("DG-JU-003", "pass", "XFF read")),
        ({"client_ip": {"trusted_proxies": ["10.0.0.0/7"]}}, ("DG-JU-003", "fail", "10.0.0.0/7")),
    ],
)
def test_rules_checks_on_small_rules_files(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    extra: dict[str, object],
    expected: tuple[str, str, str],
) -> None:
    """No jurisdiction rule fails and says 'not present'; proxy prefixes are judged per family."""
    check_id, status, evidence = expected
    _, report = _assess_json(capsys, ["--rules", _rules_file(tmp_path, extra)])
    found = _by_id(report)[check_id]
    assert found["status"] == status
    assert any(evidence in e for e in found["evidence"]), found["evidence"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("ttl", ["nan", "-5", "inf"])
def test_registry_cache_ttl_must_be_a_duration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ttl: str
) -> None:
    """A cache lifetime serve takes but that means nothing (nan, below 0, inf) fails DG-ID-009."""
    env = tmp_path / "serve.env"
    env.write_text(f"DISTILL_GUARD_REGISTRY_CACHE_TTL={ttl}\n")
    _, report = _assess_json(capsys, ["--serve-config", str(env)])
    found = _by_id(report)["DG-ID-009"]
    assert found["status"] == "fail"
    assert found["evidence"][0].startswith("serve.env:1 DISTILL_GUARD_REGISTRY_CACHE_TTL: ")  # type: ignore[index]
