"""The benchmark's baseline: an ext_authz server that allows everything.

Same runtime as distill-guard (grpcio aio, one process, same server options),
no decision at all, so `distill-guard bench` can subtract what Envoy, gRPC
and Python cost anyway. Run: `python -m authz.allow_all --listen 127.0.0.1:9292`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

_OK = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK),
    ok_response=external_auth_pb2.OkHttpResponse(),
)


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):
    """Answers every Check with OK and no header changes."""

    async def Check(  # noqa: N802 (the gRPC method name)
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> external_auth_pb2.CheckResponse:
        """Allow."""
        return _OK


async def serve(listen: str) -> None:
    """Serve until SIGTERM or SIGINT."""
    # The same server options as authz.server, so only the decision differs.
    server = grpc.aio.server(
        options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 16 << 20)]
    )
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowAll(), server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if server.add_insecure_port(listen) == 0:
        raise OSError(f"cannot listen on {listen}")
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0.5)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m authz.allow_all`."""
    parser = argparse.ArgumentParser(prog="python -m authz.allow_all", description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:9292", metavar="HOST:PORT")
    asyncio.run(serve(parser.parse_args(argv).listen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
