"""Rate limits through the real gRPC server on real Redis: concurrency, outages, Cluster."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
import redis
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from tests.checkreq import check_request
from tests.fakes import BOB_KEY, CAROL_KEY
from tests.redis_server import RedisServer
from tests.serverthread import ServerThread, demo_settings

pytestmark = pytest.mark.redis

RULES = """
version: meter-test
tiers:
  pro:
    limits:
      account: {requests: {1m: 50}}
      on_store_failure: fail_closed
  free:
    allow_unverified: true
    limits:
      account: {requests: {1m: 5}}
      on_store_failure: fail_open
      fail_open_fraction: 0.4
  enterprise: {}
"""


def reason_of(resp: external_auth_pb2.CheckResponse) -> str:
    """`ok`, or the denial's reason."""
    if resp.HasField("ok_response"):
        return "ok"
    return str(json.loads(resp.denied_response.body)["reason"])


def start(tmp_path: Path, store: str, *, check_budget: float = 1.0) -> ServerThread:
    """A server with the test limits on the given store."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    return ServerThread(demo_settings(rules=rules, store=store, check_budget=check_budget))


def test_concurrent_checks_never_exceed_the_limit(tmp_path: Path, redis_url: str) -> None:
    """200 concurrent checks for one account with a limit of 50: exactly 50 are allowed.

    The budget is generous: this is about atomic counting, and 200 checks queued
    at once on a busy machine can outlast one second without anything being wrong.
    """
    running = start(tmp_path, redis_url, check_budget=10.0)
    try:

        async def burst() -> Counter[str]:
            async with grpc.aio.insecure_channel(running.target) as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                req = check_request({"x-api-key": BOB_KEY})
                answers = await asyncio.gather(*(stub.Check(req) for _ in range(200)))
            return Counter(reason_of(a) for a in answers)

        assert asyncio.run(burst()) == Counter({"ok": 50, "rate_limited": 150})
        client = redis.Redis.from_url(redis_url)
        keys = [k.decode() for k in client.scan_iter("dg:rl:*")]
        assert keys and all(client.pttl(k) > 0 for k in keys), "every counter key expires"
    finally:
        running.close()


def test_redis_killed_and_restarted(tmp_path: Path, own_redis: RedisServer) -> None:
    """With Redis gone, fail_closed tiers get 503 and fail_open tiers a local limiter; then back."""
    running = start(tmp_path, own_redis.url)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)

            def check(key: str) -> str:
                return reason_of(stub.Check(check_request({"x-api-key": key}), timeout=5))

            assert check(BOB_KEY) == "ok"
            own_redis.kill()
            # fail_closed: a clear 503, every time, and never a gRPC error or a hang.
            assert [check(BOB_KEY) for _ in range(10)] == ["dependency_failed"] * 10
            # fail_open: the local limiter allows 40 % of 5 per minute, then refuses.
            assert [check(CAROL_KEY) for _ in range(4)] == ["ok", "ok"] + ["rate_limited"] * 2
            own_redis.restart()
            own_redis.wait_ready()
            deadline = time.monotonic() + 20  # the breaker half-opens after its cooldown
            while check(BOB_KEY) != "ok":
                assert time.monotonic() < deadline, "counting did not resume after Redis returned"
                time.sleep(0.2)
            # Counting resumed in Redis: the counter key is back.
            client = redis.Redis.from_url(own_redis.url)
            assert any(b":req:60" in k for k in client.scan_iter("dg:rl:*"))
    finally:
        running.close()


def test_cluster_store_serves_keys_and_limits(tmp_path: Path, redis_cluster_url: str) -> None:
    """On a 3-master Redis Cluster, sign-up keys resolve and an account's limit holds."""
    from authz.accounts import Kyc
    from authz.keyadmin import KeyAdmin, NewAccount

    running = start(tmp_path, redis_cluster_url)
    try:
        admin = KeyAdmin(running.app.registry, running.app.hasher, running.app.clock)
        created = running.call(
            admin.create_key(
                "zed", new_account=NewAccount(tier="pro", kyc=Kyc.VERIFIED.value, country="NL")
            )
        )
        with grpc.insecure_channel(running.target) as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            answers = Counter(
                reason_of(stub.Check(check_request({"x-api-key": created.secret})))
                for _ in range(55)
            )
        assert answers == Counter({"ok": 50, "rate_limited": 5})
    finally:
        running.close()
