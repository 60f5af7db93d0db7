"""Redis for the audit commands: a client from a URL, the `--redis` flag, replies as text.

The commands (rollup, queries, verify, tail, generate) run outside the event
loop, so they use redis-py's synchronous clients; the server's sinks have
their own asyncio clients (authz.metering.rate_client).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import redis
from redis.cluster import RedisCluster

from authz.metering.connect import CLUSTER_SCHEMES
from authz.settings import ENV_PREFIX

Client = redis.Redis | RedisCluster
# What a Redis URL may begin with: standalone, or any node of a Cluster.
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", *CLUSTER_SCHEMES})


def connect(url: str, **options: Any) -> Client:
    """A client for a Redis URL as given: redis+cluster:// and rediss+cluster:// name a Cluster."""
    scheme = url.partition("://")[0]
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(CLUSTER_SCHEMES[scheme] + url[len(scheme) :], **options)
    return redis.Redis.from_url(url, **options)


def redis_client(url: str | None, *, timeout: float = 30.0) -> Client:
    """A client for the Redis holding the stream and rollups; `url` defaults to DISTILL_GUARD_STORE.

    redis://, rediss:// and unix:// name a standalone Redis; redis+cluster:// and
    rediss+cluster:// any node of a Cluster.
    """
    return connect(redis_url(url), socket_timeout=timeout, socket_connect_timeout=5.0)


def redis_url(url: str | None, flag: str = "--redis") -> str:
    """The Redis URL given to `flag`, else DISTILL_GUARD_STORE; ValueError if neither is one."""
    url = url or os.environ.get(ENV_PREFIX + "STORE", "")
    if not url:
        raise ValueError(f"give {flag} redis://HOST:PORT/DB (or set {ENV_PREFIX}STORE)")
    if url.partition("://")[0] not in REDIS_SCHEMES:
        raise ValueError(
            f"{flag}: not a Redis URL (redis://, rediss://, unix://, redis+cluster://): {url!r}"
        )
    return url


def add_redis_argument(parser: argparse.ArgumentParser) -> None:
    """`--redis URL`, defaulting to DISTILL_GUARD_STORE."""
    parser.add_argument(
        "--redis",
        metavar="URL",
        help=f"Redis holding the audit stream and rollups (default: ${ENV_PREFIX}STORE)",
    )
