"""The Admin gRPC API on a real server (port 0), over the memory store and over real Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.protobuf import timestamp_pb2
from google.rpc import code_pb2

from authz.gen.distill_guard.admin.v1 import admin_pb2, admin_pb2_grpc
from authz.logs import JsonFormatter
from tests.checkreq import check_request
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.serverthread import ServerThread, demo_settings

TOKEN = "test-admin-token-0123456789"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
NEW_FREE = admin_pb2.NewAccount(tier="free", kyc="unverified", country="FR")
SMALL_MODEL = b'{"model": "small-1", "messages": []}'


@pytest.fixture(params=["memory", "redis"])
def server(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ServerThread]:
    """A server with the demo rules and accounts, its Admin API on, over each kind of store."""
    store = "memory://"
    if request.param == "redis":
        store = request.getfixturevalue("redis_url")
    monkeypatch.setenv("DISTILL_GUARD_ADMIN_TOKEN", TOKEN)
    settings = demo_settings(
        store=store,
        admin_listen="127.0.0.1:0",
        grace=0.5,
    )
    running = ServerThread(settings)
    yield running
    running.close()


@pytest.fixture
def admin(server: ServerThread) -> Iterator[admin_pb2_grpc.AdminStub]:
    """A sync client of the Admin port."""
    with grpc.insecure_channel(f"127.0.0.1:{server.server.admin_port}") as channel:
        yield admin_pb2_grpc.AdminStub(channel)


@pytest.fixture
def authz(server: ServerThread) -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    """A sync client of the ext_authz port, as Envoy would use it."""
    with grpc.insecure_channel(server.target) as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


def _check(authz: external_auth_pb2_grpc.AuthorizationStub, secret: str) -> tuple[int, str]:
    response = authz.Check(
        check_request({"authorization": f"Bearer {secret}"}, body=SMALL_MODEL), timeout=5
    )
    return response.status.code, response.status.message


def _error(call: object) -> grpc.RpcError:
    assert isinstance(call, grpc.RpcError)
    return call


def test_created_key_is_allowed_and_denied_once_revoked(
    admin: admin_pb2_grpc.AdminStub,
    authz: external_auth_pb2_grpc.AuthorizationStub,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key minted through the Admin API passes Check; after RevokeKey, Check says key_revoked."""
    with caplog.at_level(logging.INFO):
        created = admin.CreateKey(
            admin_pb2.CreateKeyRequest(account="ann", new_account=NEW_FREE), metadata=AUTH
        )
    assert created.key.account == "ann"
    assert (created.key.status, created.key.tier, created.key.entity) == ("active", "free", "ann")
    assert created.secret.startswith("dg_")
    assert _check(authz, created.secret) == (code_pb2.OK, "")
    revoked = admin.RevokeKey(admin_pb2.RevokeKeyRequest(key_id=created.key.key_id), metadata=AUTH)
    assert revoked.key.status == "revoked"
    assert _check(authz, created.secret) == (code_pb2.PERMISSION_DENIED, "key_revoked")
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert created.key.key_id in logged
    assert created.secret not in logged


def test_list_keys_and_get_account(admin: admin_pb2_grpc.AdminStub) -> None:
    """ListKeys shows new and file-declared keys with their status; GetAccount reads an account."""
    expires = timestamp_pb2.Timestamp(seconds=int(time.time()) + 3600)
    created = admin.CreateKey(
        admin_pb2.CreateKeyRequest(account="ann", new_account=NEW_FREE, expires=expires),
        metadata=AUTH,
    )
    (only,) = admin.ListKeys(admin_pb2.ListKeysRequest(account="ann"), metadata=AUTH).keys
    assert only.key_id == created.key.key_id
    assert only.expires == expires
    assert only.HasField("created")
    every = admin.ListKeys(admin_pb2.ListKeysRequest(), metadata=AUTH).keys
    statuses = {k.key_id: k.status for k in every}
    assert statuses[created.key.key_id] == "active"
    assert statuses["k_bob_old"] == "revoked"
    assert statuses["k_dave_exp"] == "expired"
    assert [k.key_id for k in every] == sorted(statuses)
    account = admin.GetAccount(admin_pb2.GetAccountRequest(account="ann"), metadata=AUTH)
    assert (account.entity, account.tier, account.kyc, account.country) == (
        "ann",
        "free",
        "unverified",
        "FR",
    )
    acme = admin.GetAccount(admin_pb2.GetAccountRequest(account="acme-research"), metadata=AUTH)
    assert (acme.tier, acme.kyc) == ("enterprise", "verified")


@pytest.mark.parametrize(
    "metadata",
    [(), (("authorization", "Bearer wrong-token"),), (("authorization", TOKEN),)],
    ids=["missing", "wrong", "no-scheme"],
)
def test_calls_without_the_token_are_unauthenticated(
    admin: admin_pb2_grpc.AdminStub, metadata: tuple[tuple[str, str], ...]
) -> None:
    """Every method answers UNAUTHENTICATED unless `authorization: Bearer <token>` is sent."""
    calls = [
        (admin.CreateKey, admin_pb2.CreateKeyRequest(account="ann", new_account=NEW_FREE)),
        (admin.RevokeKey, admin_pb2.RevokeKeyRequest(key_id="k_bob_1")),
        (admin.ListKeys, admin_pb2.ListKeysRequest()),
        (admin.GetAccount, admin_pb2.GetAccountRequest(account="bob-dev")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as caught:
            method(request, metadata=metadata)
        assert _error(caught.value).code() == grpc.StatusCode.UNAUTHENTICATED


def test_accounts_file_entries_are_failed_precondition(admin: admin_pb2_grpc.AdminStub) -> None:
    """Keys and accounts declared in the read-only accounts file cannot be changed over the API."""
    with pytest.raises(grpc.RpcError) as caught:
        admin.RevokeKey(admin_pb2.RevokeKeyRequest(key_id="k_bob_1"), metadata=AUTH)
    error = _error(caught.value)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == (
        "key 'k_bob_1' is declared in the accounts file: set \"revoked\": true there"
    )
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateKey(admin_pb2.CreateKeyRequest(account="bob-dev"), metadata=AUTH)
    assert _error(caught.value).code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("request_", "status", "details"),
    [
        (
            admin_pb2.CreateKeyRequest(account="nobody"),
            grpc.StatusCode.NOT_FOUND,
            "no account 'nobody'; give tier, kyc and country to create it",
        ),
        (
            admin_pb2.CreateKeyRequest(
                account="ann",
                new_account=admin_pb2.NewAccount(tier="gold", kyc="verified", country="US"),
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "tier: 'gold' is not a rules tier (enterprise, free, pro)",
        ),
        (
            admin_pb2.CreateKeyRequest(
                account="ann", new_account=NEW_FREE, expires=timestamp_pb2.Timestamp(seconds=1)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "expires: lies in the past",
        ),
    ],
    ids=["unknown-account", "unknown-tier", "expired"],
)
def test_create_key_errors_map_to_status_codes(
    admin: admin_pb2_grpc.AdminStub,
    request_: admin_pb2.CreateKeyRequest,
    status: grpc.StatusCode,
    details: str,
) -> None:
    """Refusals of CreateKey arrive as the documented status code and message."""
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateKey(request_, metadata=AUTH)
    error = _error(caught.value)
    assert (error.code(), error.details()) == (status, details)


def test_existing_account_with_other_values_is_already_exists(
    admin: admin_pb2_grpc.AdminStub,
) -> None:
    """New-account fields that contradict the stored account answer ALREADY_EXISTS."""
    admin.CreateKey(admin_pb2.CreateKeyRequest(account="ann", new_account=NEW_FREE), metadata=AUTH)
    other = admin_pb2.NewAccount(tier="pro", kyc="verified", country="FR")
    with pytest.raises(grpc.RpcError) as caught:
        admin.CreateKey(admin_pb2.CreateKeyRequest(account="ann", new_account=other), metadata=AUTH)
    assert _error(caught.value).code() == grpc.StatusCode.ALREADY_EXISTS


def test_each_port_serves_only_its_own_api(server: ServerThread) -> None:
    """Envoy's ext_authz port does not serve Admin, and the Admin port does not serve Check."""
    with grpc.insecure_channel(server.target) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.AdminStub(channel).ListKeys(admin_pb2.ListKeysRequest(), metadata=AUTH)
        assert _error(caught.value).code() == grpc.StatusCode.UNIMPLEMENTED
    with grpc.insecure_channel(f"127.0.0.1:{server.server.admin_port}") as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Check(check_request(), metadata=AUTH)
        assert _error(caught.value).code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.redis
def test_a_store_outage_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """When Redis stops answering, Admin calls fail with UNAVAILABLE, not an unknown error."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (tests/run.sh installs it)")
    redis_server = RedisServer(REDIS_SERVER)
    redis_server.wait_ready()
    monkeypatch.setenv("DISTILL_GUARD_ADMIN_TOKEN", TOKEN)
    settings = demo_settings(
        accounts=None,
        store=redis_server.url,
        admin_listen="127.0.0.1:0",
        grace=0.5,
    )
    running = ServerThread(settings)
    try:
        redis_server.stop()
        admin_port = f"127.0.0.1:{running.server.admin_port}"
        with grpc.insecure_channel(admin_port) as channel, pytest.raises(grpc.RpcError) as caught:
            admin_pb2_grpc.AdminStub(channel).ListKeys(
                admin_pb2.ListKeysRequest(), metadata=AUTH, timeout=5
            )
        error = _error(caught.value)
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE,
            "the key store is unavailable",
        )
    finally:
        running.close()
        redis_server.stop()
