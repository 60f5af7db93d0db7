"""`distill-guard health`: a grpc.health.v1 probe for containers and Kubernetes exec probes."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.settings import ENV_PREFIX

_EXIT = {
    health_pb2.HealthCheckResponse.SERVING: 0,
    health_pb2.HealthCheckResponse.NOT_SERVING: 1,
}


def probe(target: str, service: str, timeout: float) -> tuple[int, str]:
    """Ask a server's health service; (exit status, what to print)."""
    try:
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        return 2, f"{target}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return _EXIT.get(reply.status, 1), f"{target}: {status}"


def _run(ns: argparse.Namespace) -> int:
    status, text = probe(ns.target, ns.service, ns.timeout)
    print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `health`."""
    p = sub.add_parser(
        "health", help="probe a running server's grpc.health.v1 (exit 0 when SERVING)"
    )
    listen = os.environ.get(ENV_PREFIX + "LISTEN", "127.0.0.1:9191")
    p.add_argument(
        "--target",
        # A server listening on every interface is probed on loopback.
        default=listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]"),
        help=f"HOST:PORT of the server [default: {ENV_PREFIX}LISTEN or 127.0.0.1:9191]",
    )
    p.add_argument("--service", default="", help="service name ('' is the whole server)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    p.set_defaults(func=_run)
