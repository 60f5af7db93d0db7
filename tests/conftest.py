"""Shared pytest fixtures. Each group is self-contained; add new groups below."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.redis_server import REDIS_SERVER, RedisServer

# --- real Redis ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the whole session."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (tests/run.sh installs it)")
    server = RedisServer(REDIS_SERVER)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis: every database is flushed before and after the test."""
    redis_server.flushall()
    yield redis_server.url
    redis_server.flushall()
