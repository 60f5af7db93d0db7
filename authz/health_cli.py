"""`distill-guard health`: a grpc.health.v1 probe for containers and Kubernetes exec probes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz.errors import ConfigError
from authz.grpctls import DEFAULT_SERVER_NAME, channel_credentials, channel_options
from authz.settings import ENV_PREFIX

_EXIT = {
    health_pb2.HealthCheckResponse.SERVING: 0,
    health_pb2.HealthCheckResponse.NOT_SERVING: 1,
}


def probe(
    target: str,
    service: str,
    timeout: float,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    server_name: str | None = None,
) -> tuple[int, str]:
    """Ask a server's health service (over TLS with `credentials`); (exit status, what to print)."""
    if credentials is None:
        channel = grpc.insecure_channel(target)
    else:
        channel = grpc.secure_channel(target, credentials, options=channel_options(server_name))
    try:
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        return 2, f"{target}: {exc.code().name}: {exc.details()}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return _EXIT.get(reply.status, 1), f"{target}: {status}"


def _run(ns: argparse.Namespace) -> int:
    credentials = None
    if ns.tls_ca is not None:
        try:
            credentials = channel_credentials(ns.tls_ca, ns.tls_cert, ns.tls_key)
        except ConfigError as exc:
            print(f"distill-guard health: {exc}", file=sys.stderr)
            return 2
    elif ns.tls_cert is not None or ns.tls_key is not None:
        print("distill-guard health: --tls-cert and --tls-key need --tls-ca", file=sys.stderr)
        return 2
    status, text = probe(
        ns.target, ns.service, ns.timeout, credentials=credentials, server_name=ns.tls_server_name
    )
    print(text, file=sys.stdout if status == 0 else sys.stderr)
    return status


def _default_target() -> str:
    """The plaintext health port when one is configured, else the ext_authz port."""
    listen = (
        os.environ.get(ENV_PREFIX + "HEALTH_LISTEN")
        or os.environ.get(ENV_PREFIX + "LISTEN")
        or "127.0.0.1:9191"
    )
    # A server listening on every interface is probed on loopback.
    return listen.replace("0.0.0.0", "127.0.0.1").replace("[::]", "[::1]")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `health`."""
    p = sub.add_parser(
        "health", help="probe a running server's grpc.health.v1 (exit 0 when SERVING)"
    )
    p.add_argument(
        "--target",
        default=_default_target(),
        help=f"HOST:PORT of the server [default: {ENV_PREFIX}HEALTH_LISTEN, else "
        f"{ENV_PREFIX}LISTEN, else 127.0.0.1:9191]",
    )
    p.add_argument("--service", default="", help="service name ('' is the whole server)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    tls = p.add_argument_group("TLS (a server started with --tls-cert; docs/tls.md)")
    tls.add_argument(
        "--tls-ca", type=Path, metavar="FILE", help="CA certificate to verify the server with"
    )
    tls.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="client certificate, for a server that requires one (--tls-client-ca)",
    )
    tls.add_argument("--tls-key", type=Path, metavar="FILE", help="private key of --tls-cert")
    tls.add_argument(
        "--tls-server-name",
        default=DEFAULT_SERVER_NAME,
        metavar="NAME",
        help=f"the name the server certificate must carry [default: {DEFAULT_SERVER_NAME}]",
    )
    p.set_defaults(func=_run)
