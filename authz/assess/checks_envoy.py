"""Configuration checks of the Envoy bootstrap in front of distill-guard.

The bootstrap is walked as data: every HTTP connection manager of every
static listener, the ext_authz filter in its chain, and every virtual host and
route that could switch the filter off. Evidence names `file:line path`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from authz.assess.deployment import Deployment
from authz.assess.findings import Outcome, Severity, check

EXT_AUTHZ = "envoy.filters.http.ext_authz"
_HCM_NAME = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True, slots=True)
class Manager:
    """One HTTP connection manager: its config, its dotted path, and its ext_authz filter."""

    path: str
    config: dict[str, Any]
    authz: dict[str, Any] | None
    authz_path: str


def _is(item: Any, name: str, type_fragment: str) -> bool:
    if not isinstance(item, dict):
        return False
    kind = str((item.get("typed_config") or {}).get("@type", ""))
    return item.get("name") == name or kind.endswith(type_fragment)


def managers(envoy: dict[str, Any]) -> Iterator[Manager]:
    """Every HTTP connection manager of the static listeners."""
    listeners = (envoy.get("static_resources") or {}).get("listeners") or []
    for li, listener in enumerate(listeners):
        for ci, chain in enumerate((listener or {}).get("filter_chains") or []):
            for fi, item in enumerate((chain or {}).get("filters") or []):
                if not _is(item, _HCM_NAME, ".HttpConnectionManager"):
                    continue
                path = f"static_resources.listeners.{li}.filter_chains.{ci}.filters.{fi}"
                config = item.get("typed_config") or {}
                authz, authz_path = None, f"{path}.typed_config.http_filters"
                for hi, f in enumerate(config.get("http_filters") or []):
                    if _is(f, EXT_AUTHZ, ".ExtAuthz"):
                        authz = f.get("typed_config") or {}
                        authz_path = f"{path}.typed_config.http_filters.{hi}.typed_config"
                        break
                yield Manager(f"{path}.typed_config", config, authz, authz_path)


def _envoy(d: Deployment) -> list[Manager]:
    assert d.envoy is not None
    return list(managers(d.envoy))


@check(
    "DG-ID-003",
    "Every HTTP listener runs the ext_authz filter",
    Severity.CRITICAL,
    1,
    ("envoy",),
    fix="http_filters:\n  - name: envoy.filters.http.ext_authz\n    typed_config: {...}  "
    "# before envoy.filters.http.router",
)
def authz_on_every_listener(d: Deployment) -> Outcome:
    """A listener without the filter is an open door to the model server."""
    found = _envoy(d)
    if not found:
        return "fail", [f"{d.envoy_at('static_resources.listeners')}: no HTTP connection manager"]
    bad = [f"{d.envoy_at(m.authz_path)}: no ext_authz filter" for m in found if m.authz is None]
    if bad:
        return "fail", bad
    return "pass", [f"{len(found)} HTTP connection manager(s), each with ext_authz"]


@check(
    "DG-ID-004",
    "Envoy fails closed when distill-guard cannot answer",
    Severity.CRITICAL,
    1,
    ("envoy",),
    fix="failure_mode_allow: false\nstatus_on_error: { code: ServiceUnavailable }",
)
def fails_closed(d: Deployment) -> Outcome:
    """failure_mode_allow lets every request through ungoverned while we are down."""
    bad = [
        f"{d.envoy_at(m.authz_path + '.failure_mode_allow')}: true"
        for m in _envoy(d)
        if m.authz is not None and m.authz.get("failure_mode_allow") is True
    ]
    return ("fail", bad) if bad else ("pass", ["failure_mode_allow is false or unset"])


def _disables(config: Any) -> bool:
    per = (config or {}).get(EXT_AUTHZ) if isinstance(config, dict) else None
    return isinstance(per, dict) and per.get("disabled") is True


@check(
    "DG-ID-005",
    "No virtual host or route switches ext_authz off",
    Severity.HIGH,
    1,
    ("envoy",),
    fix="# remove from the route or virtual host:\ntyped_per_filter_config:\n"
    "  envoy.filters.http.ext_authz: {disabled: true}",
)
def no_route_bypass(d: Deployment) -> Outcome:
    """A per-route `disabled: true` exempts that path from every control."""
    bad: list[str] = []
    for m in _envoy(d):
        vhosts = (m.config.get("route_config") or {}).get("virtual_hosts") or []
        for vi, vhost in enumerate(vhosts):
            vpath = f"{m.path}.route_config.virtual_hosts.{vi}"
            if _disables(vhost.get("typed_per_filter_config")):
                bad.append(f"{d.envoy_at(vpath + '.typed_per_filter_config')}: disabled")
            for ri, route in enumerate(vhost.get("routes") or []):
                if _disables(route.get("typed_per_filter_config")):
                    match = route.get("match") or {}
                    bad.append(
                        f"{d.envoy_at(f'{vpath}.routes.{ri}.typed_per_filter_config')}: "
                        f"disabled for {match}"
                    )
    return ("fail", bad) if bad else ("pass", ["no per-route or per-host exemption"])


@check(
    "DG-OG-005",
    "Underscored header names are dropped before the model server",
    Severity.HIGH,
    5,
    ("envoy",),
    fix="common_http_protocol_options:\n  headers_with_underscores_action: DROP_HEADER",
)
def underscores_dropped(d: Deployment) -> Outcome:
    """CGI-style servers read `x_distill_reasoning` as `x-distill-reasoning`."""
    bad = []
    for m in _envoy(d):
        options = m.config.get("common_http_protocol_options") or {}
        action = options.get("headers_with_underscores_action", "ALLOW")
        if action not in ("DROP_HEADER", "REJECT_REQUEST"):
            where = d.envoy_at(f"{m.path}.common_http_protocol_options")
            bad.append(f"{where}: headers_with_underscores_action {action}")
    return ("fail", bad) if bad else ("pass", ["headers with underscores are dropped"])


@check(
    "DG-JU-004",
    "Envoy reports the TCP peer, not a client-written X-Forwarded-For",
    Severity.HIGH,
    4,
    ("envoy",),
    fix="use_remote_address: true\nxff_num_trusted_hops: 0   # or the number of your own proxies",
)
def remote_address(d: Deployment) -> Outcome:
    """Without use_remote_address the client's own XFF names the address we judge."""
    bad = []
    for m in _envoy(d):
        if m.config.get("use_remote_address") is not True:
            bad.append(f"{d.envoy_at(m.path + '.use_remote_address')}: not true")
        hops = m.config.get("xff_num_trusted_hops", 0)
        if isinstance(hops, int) and hops > 1:
            where = d.envoy_at(m.path + ".xff_num_trusted_hops")
            bad.append(f"{where}: {hops} (each extra hop lets a client choose its address)")
    return ("fail", bad) if bad else ("pass", ["use_remote_address true, at most one XFF hop"])


@check(
    "DG-DT-005",
    "ext_authz sends the request body (model and prompt are in it)",
    Severity.HIGH,
    3,
    ("envoy",),
    fix="with_request_body:\n  max_request_bytes: 1048576\n  allow_partial_message: true\n"
    "  pack_as_bytes: true",
)
def body_sent(d: Deployment) -> Outcome:
    """Without the body no prompt is scored and no model is checked."""
    bad = [
        f"{d.envoy_at(m.authz_path)}: no with_request_body"
        for m in _envoy(d)
        if m.authz is not None and not m.authz.get("with_request_body")
    ]
    return ("fail", bad) if bad else ("pass", ["the body reaches the check"])


@check(
    "DG-ID-006",
    "Envoy's admin interface listens on loopback only",
    Severity.MEDIUM,
    1,
    ("envoy",),
    fix="admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 9901 }",
)
def admin_loopback(d: Deployment) -> Outcome:
    """The admin port can drain listeners and dump the configuration."""
    assert d.envoy is not None
    admin = d.envoy.get("admin")
    if not admin:
        return "pass", ["no admin interface"]
    address = str(((admin.get("address") or {}).get("socket_address") or {}).get("address", ""))
    if address.startswith("127.") or address in ("::1", "localhost"):
        return "pass", [f"admin on {address}"]
    return "fail", [f"{d.envoy_at('admin.address.socket_address.address')}: {address}"]


def _seconds(text: Any) -> float | None:
    if isinstance(text, int | float):
        return float(text)
    if isinstance(text, str) and text.endswith("s"):
        try:
            return float(text[:-1])
        except ValueError:
            return None
    return None


@check(
    "DG-ID-007",
    "distill-guard's check budget is below Envoy's ext_authz timeout",
    Severity.MEDIUM,
    1,
    ("envoy", "serve"),
    fix="DISTILL_GUARD_CHECK_BUDGET=0.2   # with grpc_service.timeout: 0.5s",
)
def budget_below_timeout(d: Deployment) -> Outcome:
    """Otherwise slow checks end as Envoy's anonymous 503s, without reason or audit."""
    assert d.serve is not None
    try:
        budget = float(d.serve.effective("check_budget"))
    except ValueError:
        return "fail", [f"{d.serve.at('check_budget')}: not a number"]
    bad = []
    for m in _envoy(d):
        if m.authz is None:
            continue
        timeout = _seconds((m.authz.get("grpc_service") or {}).get("timeout", "0.2s"))
        if timeout is not None and budget >= timeout:
            where = d.envoy_at(m.authz_path + ".grpc_service.timeout")
            bad.append(f"{where}: {timeout:g}s, check budget {budget:g}s")
    return ("fail", bad) if bad else ("pass", [f"check budget {budget:g}s below Envoy's timeout"])
