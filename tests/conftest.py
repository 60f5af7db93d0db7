"""Shared pytest fixtures. Each group is self-contained; add new groups below."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.redis_server import REDIS_CLI, REDIS_SERVER, RedisClusterServers, RedisServer

# --- real Redis ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server on a free loopback port for the whole session."""
    yield from _running_redis()


def _running_redis() -> Iterator[RedisServer]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (tests/run.sh installs it)")
    server = RedisServer(REDIS_SERVER)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()  # SIGKILL ends a paused server too


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The URL of an empty Redis: every database is flushed before and after the test."""
    redis_server.flushall()
    yield redis_server.url
    redis_server.flushall()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server this test alone owns: it may kill, pause and restart it."""
    yield from _running_redis()


# --- real Redis Cluster ----------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterServers]:
    """A real three-master Redis Cluster for the whole session."""
    if REDIS_SERVER is None or REDIS_CLI is None:
        pytest.skip("redis-server and redis-cli are needed for the cluster tests")
    cluster = RedisClusterServers(REDIS_SERVER, REDIS_CLI)
    try:
        cluster.create()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def redis_cluster_url(redis_cluster: RedisClusterServers) -> Iterator[str]:
    """The `redis+cluster://` URL of an empty cluster: every master is flushed around the test."""
    redis_cluster.flushall()
    yield redis_cluster.url
    redis_cluster.flushall()


# --- rate stores -----------------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def rate_store_url(request: pytest.FixtureRequest) -> str:
    """Run a metering behaviour test on the memory store and on a real (empty) Redis."""
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


# --- logging -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """CLI entry points point the root logger at the stderr of the moment, which under
    capsys is a capture stream closed after the test: put the handlers back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
