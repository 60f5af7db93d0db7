"""`distill-guard rules explain`: the decision and the chain of rules, with no server."""

from __future__ import annotations

import json

import pytest

from authz.cli import main
from authz.geobuild import demo_database
from tests.fakes import BOB_KEY, DEMO_ACCOUNTS, DEMO_RULES


def explain(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command; its exit status, stdout and stderr."""
    geo = str(demo_database())
    status = main(
        ["rules", "explain", "--rules", str(DEMO_RULES), "--accounts", str(DEMO_ACCOUNTS),
         "--geoip", geo, "--asn", geo, *args]
    )  # fmt: skip
    out, err = capsys.readouterr()
    return status, out, err


def test_country_refusal_is_explained(capsys: pytest.CaptureFixture[str]) -> None:
    """A request from Iran shows identity, location, each rule tried and the deciding rule."""
    status, out, _ = explain(capsys, "--ip", "2.176.1.1", "--key", BOB_KEY, "--model", "small-1")
    assert status == 0
    lines = [line.strip() for line in out.splitlines()]
    identity = "identify  key k_bob_1 -> account bob-dev (entity bob-dev), tier pro"
    assert any(line.startswith(identity) for line in lines)
    located = "locate  client 2.176.1.1 (from source): public, country IR, AS58224"
    assert any(line.startswith(located) for line in lines)
    assert "jurisdiction  embargoed-kyc: no match" in lines
    assert "jurisdiction  embargoed-ip: deny" in lines
    assert "=>  DENY 403 country_denied (rule jurisdiction:embargoed-ip)" in lines


def test_account_instead_of_key(capsys: pytest.CaptureFixture[str]) -> None:
    """--account explains for an account without knowing its key; --json is machine-readable."""
    status, out, _ = explain(capsys, "--ip", "79.192.3.4", "--account", "erin-labs", "--json")
    assert status == 0
    result = json.loads(out)
    assert (result["action"], result["reason"]) == ("deny", "kyc_country_denied")
    assert result["rule"] == "jurisdiction:embargoed-kyc"
    assert {"phase": "jurisdiction", "text": "embargoed-kyc: deny"} in result["trace"]


def test_allowed_request_shows_upstream_headers(capsys: pytest.CaptureFixture[str]) -> None:
    """An allowed request lists the governance headers the model server would receive."""
    status, out, _ = explain(capsys, "--ip", "79.192.3.4", "--key", BOB_KEY, "--model", "small-1")
    assert status == 0
    assert "=>  ALLOW 200 ok (rule tier:pro)" in out
    assert "x-distill-tier: pro" in out


def test_unknown_account_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An account that does not exist is reported, exit status 2."""
    status, _, err = explain(capsys, "--ip", "79.192.3.4", "--account", "nobody")
    assert status == 2
    assert err == "error: --account: no account 'nobody' in the accounts or store\n"
