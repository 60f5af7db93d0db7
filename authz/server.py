"""The gRPC edge: Envoy's Authorization service, gRPC health, and the process lifecycle."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer as AsyncHealthServicer

from authz import edge, telemetry
from authz.app import App, build_app
from authz.grpctls import ServerTls
from authz.pipeline import Pipeline
from authz.reload import WatchedFile
from authz.settings import Settings

log = logging.getLogger("distill_guard.server")

AUTHZ_SERVICE = "envoy.service.auth.v3.Authorization"
# Leave this much of Envoy's deadline for the answer to travel back.
_DEADLINE_MARGIN = 0.01
# ...and a tenth of the time left, so a loaded machine still gets the answer back in time.
_DEADLINE_SHARE = 0.1
_MAX_CHECK_REQUEST_BYTES = 16 << 20


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers every Check with an allow or a deny; never with a gRPC error."""

    def __init__(self, pipeline: Pipeline, budget: float) -> None:
        self._pipeline = pipeline
        self._budget = budget

    async def Check(  # noqa: N802 (the gRPC method name)
        self,
        request: external_auth_pb2.CheckRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> external_auth_pb2.CheckResponse:
        """Decide one request for Envoy, inside a span joined to Envoy's trace."""
        started = time.perf_counter()
        budget = self._budget
        remaining = context.time_remaining()
        if remaining is not None:
            margin = max(_DEADLINE_MARGIN, remaining * _DEADLINE_SHARE)
            budget = max(0.0, min(budget, remaining - margin))
        facts = edge.facts_from_check_request(request)
        # Envoy's tracer sends its ext_authz span's context as gRPC metadata; the
        # request's own headers are the fallback (a tracing proxy before Envoy).
        parent = telemetry.parent_context(context.invocation_metadata() or (), facts.headers)
        try:
            # The pipeline records the decision inside this span: the span gets the
            # decision's attributes, and the audit record can carry its trace id.
            with telemetry.check_span(parent):
                decision = await self._pipeline.check(facts, budget=budget)
        finally:
            telemetry.check_duration.record(time.perf_counter() - started)
        return edge.check_response(decision)


class Health:
    """grpc.health.v1 for the overall server and the Authorization service."""

    def __init__(self) -> None:
        self.servicer = AsyncHealthServicer()

    async def set(self, serving: bool) -> None:
        """Flip both service names to SERVING or NOT_SERVING."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", AUTHZ_SERVICE):
            await self.servicer.set(name, status)


class Server:
    """A running ext_authz server (and Admin and plaintext health servers when configured).

    With --tls-cert the ext_authz and Admin ports speak TLS with the same
    certificate; with --tls-client-ca the ext_authz port requires client
    certificates, the Admin port does not (its callers present the bearer token).
    """

    def __init__(self, settings: Settings, app: App) -> None:
        self.settings = settings
        self.app = app
        self.health = Health()
        self.tls = ServerTls.from_settings(settings)
        self.grpc = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                # Envoy forwards at most max_request_bytes of body (1 MiB in envoy/) plus
                # headers; leave ample room so an oversized request is still answered.
                ("grpc.max_receive_message_length", _MAX_CHECK_REQUEST_BYTES),
            ]
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
            AuthorizationServicer(app.pipeline, settings.check_budget), self.grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.grpc)
        if self.tls is None:
            self.port = self.grpc.add_insecure_port(settings.listen)
        else:
            credentials = self.tls.credentials(verify_clients=self.tls.verifies_clients)
            self.port = self.grpc.add_secure_port(settings.listen, credentials)
        if self.port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        # Kubelet gRPC probes speak plaintext and present no client certificate: with
        # TLS on, they ask this port, which answers grpc.health.v1 and nothing else.
        self.health_grpc: grpc.aio.Server | None = None
        self.health_port: int | None = None
        if settings.health_listen:
            self.health_grpc = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health.servicer, self.health_grpc)
            self.health_port = self.health_grpc.add_insecure_port(settings.health_listen)
            if self.health_port == 0:
                raise OSError(f"cannot listen on {settings.health_listen}")
        self.admin: grpc.aio.Server | None = None
        self.admin_port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def watched(self) -> list[WatchedFile[Any]]:
        """The files to poll for hot reload: the app's, and the TLS certificate files."""
        files = self.app.watched()
        if self.tls is not None:
            files.append(self.tls.watched)
        return files

    def reload_now(self) -> None:
        """Re-read every watched file at once (SIGHUP), keeping the last good on failure."""
        self.app.reload_now()
        if self.tls is not None:
            self.tls.watched.poll(force=True)

    async def start(self) -> None:
        """Listen (NOT_SERVING), wait for the stores, then report SERVING."""
        await self.health.set(False)
        self.app.start_background()  # audit writers, before the first Check can arrive
        await self.grpc.start()
        if self.health_grpc is not None:
            await self.health_grpc.start()
        token = self.settings.admin_token()
        if token is not None:
            from authz.admin import start_admin_server

            try:
                self.admin, self.admin_port = await start_admin_server(
                    self.settings.admin_listen,
                    token,
                    self.app,
                    credentials=None
                    if self.tls is None
                    else self.tls.credentials(verify_clients=False),
                )
            except BaseException:
                await self.grpc.stop(None)
                if self.health_grpc is not None:
                    await self.health_grpc.stop(None)
                raise
        await self.app.wait_ready()
        for watched in self.watched():
            self._tasks.append(asyncio.create_task(watched.watch(self.settings.reload_interval)))
        await self.health.set(True)
        log.info(
            "serving",
            extra={
                "listen": self.settings.listen,
                "port": self.port,
                "tls": "off" if self.tls is None else _tls_mode(self.tls),
                "health_port": self.health_port,
                "admin_port": self.admin_port,
                "rules_version": self.app.rules.current().version,
                "store": _redact_url(self.settings.store),
            },
        )

    async def stop(self) -> None:
        """Report NOT_SERVING, let in-flight checks finish within the grace period, close."""
        await self.health.set(False)
        for task in self._tasks:
            task.cancel()
        if self.admin is not None:
            await self.admin.stop(self.settings.grace)
        await self.grpc.stop(self.settings.grace)
        if self.health_grpc is not None:  # last: probes see NOT_SERVING, not a closed port
            await self.health_grpc.stop(None)
        await self.app.close()
        log.info("stopped")


def _tls_mode(tls: ServerTls) -> str:
    mode = "mutual" if tls.verifies_clients else "server"
    return f"{mode}, certificate sha256:{tls.fingerprint}"


def _redact_url(url: str) -> str:
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://[redacted]@{rest.rpartition('@')[2]}"
    return url


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    app = build_app(settings)
    server = Server(settings, app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_now)
    # Start-up waits for the stores (retrying forever); a SIGTERM meanwhile must still
    # stop the process rather than wait for Redis to come back.
    starting = asyncio.create_task(server.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
    else:
        starting.result()  # a start-up error (a busy port) ends the process here
        await stopping
    stopping.cancel()
    log.info("shutting down", extra={"grace": settings.grace})
    await server.stop()
