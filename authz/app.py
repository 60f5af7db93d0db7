"""Assembly: settings in, a ready pipeline and its stores out.

Shared by `serve`, the CLI's direct store access and (later) replay, so every
entry point wires the same parts the same way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from redis.asyncio import Redis, RedisCluster

from authz.audit.queue import AuditTrail
from authz.audit.record import ContentPolicy, KeyHeaders
from authz.audit.sinks import open_sinks
from authz.clock import SystemClock
from authz.errors import ConfigError
from authz.geo import GeoWatch, NoDatabaseResolver, watch_resolver
from authz.keys import KeyHasher
from authz.metering import MemoryRateStore, open_rate_store, rate_client
from authz.pipeline import Pipeline, new_decision_id
from authz.protocols import Clock, DecisionSink, KeyRegistry, RateStore
from authz.registry import LayeredRegistry, MemoryRegistry, load_file_registry
from authz.registry_redis import RedisRegistry
from authz.reload import WatchedFile
from authz.rules import Rules, load_rules
from authz.settings import Settings

log = logging.getLogger("distill_guard.app")


@dataclass
class App:
    """The wired parts of one distill-guard process."""

    pipeline: Pipeline
    rules: WatchedFile[Rules]
    registry: LayeredRegistry
    hasher: KeyHasher
    clock: Clock
    rates: RateStore
    accounts: WatchedFile[MemoryRegistry] | None = None
    geo: GeoWatch | None = None
    redis: Redis | RedisCluster | None = None
    audit: AuditTrail | None = None

    def watched(self) -> list[WatchedFile[Any]]:
        """The files to poll for hot reload: rules, accounts, GeoIP databases."""
        files: list[WatchedFile[Any]] = [self.rules]
        if self.accounts is not None:
            files.append(self.accounts)
        if self.geo is not None:
            files.extend(self.geo.files)
        return files

    def reload_now(self) -> None:
        """Re-read every watched file at once (SIGHUP), keeping the last good on failure."""
        log.info("reload requested")
        for watched in self.watched():
            watched.poll(force=True)

    async def wait_ready(self, retry: float = 0.5) -> None:
        """Return once the stores answer (Redis PING); retries forever, logging failures."""
        while self.redis is not None:
            try:
                await self.redis.ping()
                return
            except Exception as exc:
                log.warning("store not reachable yet", extra={"error": repr(exc)})
                await asyncio.sleep(retry)

    def start_background(self) -> None:
        """Start the audit trail's writers; call on the server's event loop before serving."""
        if self.audit is not None:
            self.audit.start()

    async def close(self) -> None:
        """Write the queued audit records (within the grace period), release stores and files."""
        if self.audit is not None:
            await self.audit.close()
        await self.rates.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.geo is not None:
            self.geo.resolver.close()


def open_stores(
    url: str, *, clock: Clock, timeout: float, cache_ttl: float
) -> tuple[KeyRegistry, RateStore, Redis | RedisCluster | None]:
    """The key registry and rate store a URL names: `memory://`, `redis://…`, `redis+cluster://…`.

    On Redis both share one client (one connection pool); `timeout` is the budget
    of one store call.
    """
    scheme = urlparse(url).scheme
    if scheme == "memory":
        return MemoryRegistry(), MemoryRateStore(), None
    if scheme not in {"redis", "rediss", "unix", "redis+cluster", "rediss+cluster"}:
        raise ConfigError(
            "--store", "", f"unsupported store URL {url!r} (memory://, redis://, redis+cluster://)"
        )
    client = rate_client(url, timeout=timeout)
    registry = RedisRegistry(client, clock=clock, cache_ttl=cache_ttl)
    return registry, open_rate_store(url, client=client, budget=timeout), client


def build_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    sink: DecisionSink | None = None,
    rates: RateStore | None = None,
    ids: Callable[[], str] = new_decision_id,
) -> App:
    """Load rules and accounts and wire the pipeline. Raises ConfigError on bad files.

    Decisions go to `sink` when given (replay, explain), else to the audit trail
    `--audit` configures; `ids` mints decision ids (replay numbers them).
    """
    clock = clock or SystemClock()
    hasher = KeyHasher(settings.pepper())
    rules = WatchedFile(settings.rules, load_rules, kind="rules")
    audit: AuditTrail | None = None
    if sink is None:
        sink = audit = open_audit(settings, key_headers=lambda: rules.current().key_headers)
    dynamic, store_rates, client = open_stores(
        settings.store,
        clock=clock,
        timeout=settings.store_timeout,
        cache_ttl=settings.registry_cache_ttl,
    )
    # A caller that must not count against the shared store (explain) brings its own.
    rates = rates if rates is not None else store_rates
    accounts: WatchedFile[MemoryRegistry] | None = None
    registry = LayeredRegistry(None, dynamic)
    if settings.accounts is not None:
        accounts = WatchedFile(
            settings.accounts,
            lambda p: _load_accounts(p, hasher),
            kind="accounts",
            on_swap=registry.replace_static,
        )
        registry.replace_static(accounts.current())
    if settings.asn is not None and settings.geoip is None:
        raise ConfigError("--asn", "", "needs --geoip too (the country database)")
    geo = watch_resolver(settings.geoip, settings.asn) if settings.geoip is not None else None
    if geo is None and rules.current().jurisdiction.uses_ip_country:
        log.warning("jurisdiction rules use IP countries but no --geoip database is configured")
    pipeline = Pipeline(
        rules=rules,
        registry=registry,
        hasher=hasher,
        geo=geo.resolver if geo is not None else NoDatabaseResolver(),
        rates=rates,
        clock=clock,
        sink=sink,
        max_body_bytes=settings.max_body_bytes,
        ids=ids,
    )
    return App(pipeline, rules, registry, hasher, clock, rates, accounts, geo, client, audit)


def open_audit(settings: Settings, *, key_headers: KeyHeaders = tuple) -> AuditTrail:
    """The audit trail `--audit` describes (its tasks start with `App.start_background`)."""
    sizes = {"--audit-queue": settings.audit_queue, "--audit-backlog": settings.audit_backlog}
    for flag, value in sizes.items():
        if value < 1:
            raise ConfigError(flag, "", f"must be at least 1 (got {value})")
    content = content_policy(settings, key_headers=key_headers)
    sinks = open_sinks(
        settings.audit,
        store=settings.store,
        stream=settings.audit_stream,
        maxlen=settings.audit_stream_maxlen,
    )
    return AuditTrail(
        sinks,
        chain=settings.audit_chain or socket.gethostname(),
        queue_size=settings.audit_queue,
        backlog=settings.audit_backlog,
        grace=settings.grace,
        content=content,
    )


def content_policy(settings: Settings, *, key_headers: KeyHeaders) -> ContentPolicy | None:
    """What of each request audit records keep (--audit-request-content), or None."""
    if settings.audit_request_content_bytes < 0:
        raise ConfigError(
            "--audit-request-content-bytes",
            "",
            f"must be at least 0 (got {settings.audit_request_content_bytes})",
        )
    if not settings.audit_request_content:
        return None
    return ContentPolicy(settings.audit_request_content_bytes, key_headers=key_headers)


def _load_accounts(path: Path, hasher: KeyHasher) -> MemoryRegistry:
    return load_file_registry(path, hasher)
