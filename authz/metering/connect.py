"""Opening the rate store a URL names: memory, Redis, or Redis Cluster.

    memory://                        MemoryRateStore (one process)
    redis://host:port/db, rediss://, unix://   RedisRateStore on standalone Redis
    redis+cluster://host:port        RedisRateStore on Redis Cluster (any node; the
    rediss+cluster://host:port       client discovers the others)

Redis stores come wrapped in a BreakerRateStore. The client retries a command
once on a connection error (a pooled connection may be stale after a Redis
restart), without backoff: the breaker's budget bounds the whole call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlparse

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from authz.metering.breaker import BreakerRateStore
from authz.metering.memory import MemoryRateStore
from authz.metering.redis_store import RedisRateStore

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def rate_client(
    url: str, *, timeout: float = 1.0, max_connections: int = 128
) -> Redis | RedisCluster:
    """A redis-py asyncio client for a rate-store URL (see module docstring).

    Concurrent checks beyond `max_connections` (per node) wait for a connection
    instead of failing (redis-py's default pool raises past 100); the breaker's
    budget bounds the wait.
    """
    scheme = urlparse(url).scheme
    retry = Retry(NoBackoff(), 1)
    if scheme in CLUSTER_SCHEMES:
        plain = CLUSTER_SCHEMES[scheme] + url[len(scheme) :]
        return RedisCluster.from_url(
            plain,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry,
            max_connections=max_connections,
        )
    if scheme in {"redis", "rediss", "unix"}:
        pool = BlockingConnectionPool.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=retry,
            health_check_interval=0,
            max_connections=max_connections,
            timeout=timeout,
        )
        return Redis.from_pool(pool)
    raise ValueError(f"unsupported rate store URL {url!r} (memory://, redis://, redis+cluster://)")


def open_rate_store(
    url: str,
    *,
    client: Redis | RedisCluster | None = None,
    budget: float = 0.05,
    max_connections: int = 128,
    failures_to_open: int = 5,
    cooldown: float = 5.0,
    monotonic: Callable[[], float] | None = None,
) -> MemoryRateStore | BreakerRateStore:
    """The rate store a URL names; Redis ones behind a breaker with this budget.

    `client` shares a connection pool the caller already opened for this URL.
    """
    if urlparse(url).scheme == "memory":
        return MemoryRateStore()
    return BreakerRateStore(
        RedisRateStore(
            client or rate_client(url, max_connections=max_connections),
            max_in_flight=max_connections,
        ),
        budget=budget,
        failures_to_open=failures_to_open,
        cooldown=cooldown,
        monotonic=monotonic or time.monotonic,
    )
