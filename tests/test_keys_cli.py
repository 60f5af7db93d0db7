"""`distill-guard keys`: direct against real Redis, and through a running server's Admin API."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from redis.asyncio import Redis

from authz.accounts import KeyRecord
from authz.cli import main
from authz.clock import SystemClock
from authz.keys import KeyHasher
from authz.registry_redis import RedisRegistry
from tests.checkreq import check_request
from tests.fakes import BOB_KEY, DEMO_ACCOUNTS, DEMO_RULES
from tests.redis_server import free_port
from tests.serverthread import ServerThread, demo_settings

TOKEN = "cli-admin-token-0123456789"
NEW_FREE = ["--tier", "free", "--kyc", "unverified", "--country", "FR"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = main(["keys", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def _lookup(url: str, digest: str) -> KeyRecord | None:
    async def lookup() -> KeyRecord | None:
        client = Redis.from_url(url)
        try:
            return await RedisRegistry(client, clock=SystemClock(), cache_ttl=0).lookup(digest)
        finally:
            await client.aclose()

    return asyncio.run(lookup())


@pytest.mark.redis
def test_create_list_revoke_directly_in_redis(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """create prints the secret once and stores its digest; list shows it; revoke revokes it."""
    status, out, err = _run(capsys, "create", "--store", redis_url, "--account", "ann", *NEW_FREE)
    assert status == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines())
    key_id, secret = fields["key_id"].strip(), fields["secret"].strip()
    assert fields["account"].strip() == "ann (tier free)"
    assert fields["expires"].strip() == "never"
    assert "shown only now" in err
    record = _lookup(redis_url, KeyHasher().digest(secret))
    assert record is not None
    assert (record.key_id, record.account.country) == (key_id, "FR")

    status, out, _ = _run(capsys, "list", "--store", redis_url)
    assert status == 0
    header, row = out.splitlines()
    assert header.split() == ["KEY", "ID", "ACCOUNT", "ENTITY", "TIER", "STATUS", "EXPIRES"]
    assert row.split() == [key_id, "ann", "ann", "free", "active", "never"]
    assert secret not in out

    assert _run(capsys, "revoke", "--store", redis_url, key_id)[:2] == (
        0,
        f"revoked {key_id} (account ann)\n",
    )
    status, out, _ = _run(capsys, "list", "--store", redis_url, "--account", "ann", "--json")
    (listed,) = json.loads(out)
    assert listed["key_id"] == key_id
    assert listed["status"] == "revoked"
    assert listed["expires"] is None


@pytest.mark.redis
def test_create_with_expiry_pepper_and_json(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--expires is stored, --json prints one object, and the pepper file shapes the digest."""
    pepper = tmp_path / "pepper"
    pepper.write_text("s3cret-pepper\n")
    status, out, err = _run(
        capsys,
        "create", "--store", redis_url, "--key-pepper-file", str(pepper),
        "--account", "ann", *NEW_FREE, "--entity", "ann-co",
        "--expires", "2099-01-01T00:00:00Z", "--json",
    )  # fmt: skip
    assert status == 0, err
    created: dict[str, Any] = json.loads(out)
    assert (created["entity"], created["expires"]) == ("ann-co", "2099-01-01T00:00:00Z")
    assert _lookup(redis_url, KeyHasher().digest(created["secret"])) is None
    record = _lookup(redis_url, KeyHasher(b"s3cret-pepper").digest(created["secret"]))
    assert record is not None
    assert record.expires == 4070908800.0


@pytest.mark.redis
def test_import_then_list(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """import copies an accounts file into Redis, where its keys resolve; a re-import adds none."""
    status, out, err = _run(capsys, "import", "--store", redis_url, str(DEMO_ACCOUNTS))
    assert status == 0, err
    assert out == f"imported 11 accounts from {DEMO_ACCOUNTS}: 13 keys added, 0 already present\n"
    record = _lookup(redis_url, KeyHasher().digest(BOB_KEY))
    assert record is not None
    assert record.key_id == "k_bob_1"
    status, out, _ = _run(capsys, "list", "--store", redis_url, "--json")
    statuses = {k["key_id"]: k["status"] for k in json.loads(out)}
    assert statuses == {
        "k_acme_1": "active",
        "k_bob_1": "active",
        "k_bob_old": "revoked",
        "k_carol_1": "active",
        "k_dave_1": "active",
        "k_dave_exp": "expired",
        "k_erin_1": "active",
        **{f"k_orbit_{i}": "active" for i in range(1, 7)},
    }
    _, out, _ = _run(capsys, "import", "--store", redis_url, str(DEMO_ACCOUNTS))
    assert out.endswith("0 keys added, 13 already present\n")


@pytest.mark.redis
def test_refusals_print_a_message_and_exit_non_zero(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Unknown tiers (with --rules), unknown accounts, keys and half-given fields are refused."""
    cases = [
        (
            ["create", "--store", redis_url, "--rules", str(DEMO_RULES), "--account", "ann",
             "--tier", "gold", "--kyc", "verified", "--country", "US"],
            1,
            "distill-guard keys: tier: 'gold' is not a rules tier (enterprise, free, pro)\n",
        ),
        (
            ["create", "--store", redis_url, "--account", "nobody"],
            1,
            "distill-guard keys: no account 'nobody'; give tier, kyc and country to create it\n",
        ),
        (
            ["revoke", "--store", redis_url, "k_nope"],
            1,
            "distill-guard keys: no key 'k_nope'\n",
        ),
        (
            ["create", "--store", redis_url, "--account", "ann", "--tier", "free"],
            2,
            "distill-guard keys: to create the account also give --kyc, --country\n",
        ),
    ]  # fmt: skip
    for argv, expected_status, message in cases:
        status, out, err = _run(capsys, *argv)
        assert (status, out, err) == (expected_status, "", message)


def test_memory_store_and_no_store_are_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Direct mode needs a store that outlives the command: memory:// or none is a usage error."""
    monkeypatch.delenv("DISTILL_GUARD_STORE", raising=False)
    status, _, err = _run(capsys, "list", "--store", "memory://")
    assert status == 2
    assert err.startswith("distill-guard keys: memory:// lives inside one server process")
    status, _, err = _run(capsys, "list")
    assert (status, err) == (
        2,
        "distill-guard keys: give --store redis://HOST:PORT/DB, or --server HOST:PORT\n",
    )


def test_an_unreachable_store_is_reported(capsys: pytest.CaptureFixture[str]) -> None:
    """A Redis that does not answer gives a one-line error and status 1, not a traceback."""
    status, out, err = _run(capsys, "list", "--store", f"redis://127.0.0.1:{free_port()}/0")
    assert (status, out) == (1, "")
    assert err.startswith("distill-guard keys: the store did not answer: ")
    assert err.count("\n") == 1


@pytest.mark.parametrize("pepper", [None, "p3pper"])
def test_hash_prints_the_digest_the_server_computes(
    pepper: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`keys hash` reads a key from stdin and prints KeyHasher's digest, with or without pepper."""
    argv = ["hash"]
    if pepper is not None:
        (tmp_path / "pepper").write_text(pepper + "\n")
        argv += ["--key-pepper-file", str(tmp_path / "pepper")]
    monkeypatch.setattr("sys.stdin", io.StringIO(BOB_KEY + "\n"))
    status, out, _ = _run(capsys, *argv)
    expected = KeyHasher(pepper.encode() if pepper else None).digest(BOB_KEY)
    assert (status, out) == (0, expected + "\n")


def test_hash_refuses_what_cannot_be_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A too-short key gets no digest, since the server would never accept it."""
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    status, out, err = _run(capsys, "hash")
    assert (status, out) == (1, "")
    assert err == "distill-guard keys: key length must be 16..256 characters\n"


@pytest.fixture
def admin_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    """A running server (memory store, demo files) with its Admin API on a free port."""
    monkeypatch.setenv("DISTILL_GUARD_ADMIN_TOKEN", TOKEN)
    settings = demo_settings(
        admin_listen="127.0.0.1:0",
        grace=0.5,
    )
    running = ServerThread(settings)
    yield running
    running.close()


def test_server_mode_uses_the_admin_api(
    admin_server: ServerThread, capsys: pytest.CaptureFixture[str]
) -> None:
    """With --server the commands go through the Admin API, and the new key passes Check."""
    server = f"127.0.0.1:{admin_server.server.admin_port}"
    status, out, err = _run(
        capsys, "create", "--server", server, "--account", "ann", *NEW_FREE, "--json"
    )
    assert status == 0, err
    created = json.loads(out)
    with grpc.insecure_channel(admin_server.target) as channel:
        response = external_auth_pb2_grpc.AuthorizationStub(channel).Check(
            check_request(
                {"x-api-key": created["secret"]}, body=b'{"model": "small-1", "messages": []}'
            ),
            timeout=5,
        )
    assert response.status.code == code_pb2.OK
    status, out, _ = _run(capsys, "list", "--server", server, "--account", "ann")
    row = out.splitlines()[1].split()
    assert row == [created["key_id"], "ann", "ann", "free", "active", "never"]
    status, out, err = _run(capsys, "revoke", "--server", server, "k_bob_1")
    assert (status, out) == (1, "")
    assert err == (
        "distill-guard keys: key 'k_bob_1' is declared in the accounts file: "
        'set "revoked": true there\n'
    )


def test_server_mode_needs_the_right_token(
    admin_server: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With no token the CLI does not call; with a wrong one the server says UNAUTHENTICATED."""
    server = f"127.0.0.1:{admin_server.server.admin_port}"
    monkeypatch.delenv("DISTILL_GUARD_ADMIN_TOKEN")
    status, _, err = _run(capsys, "list", "--server", server)
    assert (status, err) == (
        2,
        "distill-guard keys: --server needs the admin token: --admin-token-file or "
        "DISTILL_GUARD_ADMIN_TOKEN\n",
    )
    wrong = tmp_path / "token"
    wrong.write_text("not-the-token\n")
    status, _, err = _run(capsys, "list", "--server", server, "--admin-token-file", str(wrong))
    assert status == 1
    assert err == (
        f"distill-guard keys: admin API at {server}: UNAUTHENTICATED: "
        "missing or wrong admin token\n"
    )
