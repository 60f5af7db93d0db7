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
from authz.assess.findings import Outcome, Severity, check, outcome
from authz.errors import ConfigError
from authz.governance import GOVERNANCE_PREFIX

EXT_AUTHZ = "envoy.filters.http.ext_authz"
_HCM_NAME = "envoy.filters.network.http_connection_manager"


@dataclass(frozen=True, slots=True)
class Manager:
    """One HTTP connection manager: its config, its dotted path, and its ext_authz filter."""

    path: str
    config: dict[str, Any]
    authz: dict[str, Any] | None
    authz_path: str


def _map(d: Deployment, value: Any, path: str) -> dict[str, Any]:
    """`value` as a mapping (absent is empty); ConfigError naming file and path otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _shape(d, path, "a mapping", value)
    return value


def _seq(d: Deployment, value: Any, path: str) -> list[Any]:
    """`value` as a list (absent is empty); ConfigError naming file and path otherwise."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise _shape(d, path, "a list", value)
    return value


def _shape(d: Deployment, path: str, wanted: str, value: Any) -> ConfigError:
    assert d.envoy_doc is not None
    return ConfigError(str(d.envoy_doc.path), path, f"expected {wanted}, got {value!r}")


def _is(d: Deployment, item: Any, path: str, name: str, type_fragment: str) -> bool:
    item = _map(d, item, path)
    kind = str(_map(d, item.get("typed_config"), f"{path}.typed_config").get("@type", ""))
    return item.get("name") == name or kind.endswith(type_fragment)


def managers(d: Deployment) -> Iterator[Manager]:
    """Every HTTP connection manager of the static listeners."""
    assert d.envoy is not None
    root = "static_resources"
    resources = _map(d, d.envoy.get(root), root)
    listeners = _seq(d, resources.get("listeners"), f"{root}.listeners")
    for li, listener in enumerate(listeners):
        lpath = f"{root}.listeners.{li}"
        chains = _seq(d, _map(d, listener, lpath).get("filter_chains"), f"{lpath}.filter_chains")
        for ci, chain in enumerate(chains):
            cpath = f"{lpath}.filter_chains.{ci}"
            items = _seq(d, _map(d, chain, cpath).get("filters"), f"{cpath}.filters")
            for fi, item in enumerate(items):
                path = f"{cpath}.filters.{fi}"
                if not _is(d, item, path, _HCM_NAME, ".HttpConnectionManager"):
                    continue
                config = _map(d, item.get("typed_config"), f"{path}.typed_config")
                filters_path = f"{path}.typed_config.http_filters"
                authz, authz_path = None, filters_path
                for hi, f in enumerate(_seq(d, config.get("http_filters"), filters_path)):
                    if _is(d, f, f"{filters_path}.{hi}", EXT_AUTHZ, ".ExtAuthz"):
                        authz_path = f"{filters_path}.{hi}.typed_config"
                        authz = _map(d, f.get("typed_config"), authz_path)
                        break
                yield Manager(f"{path}.typed_config", config, authz, authz_path)


def _envoy(d: Deployment) -> list[Manager]:
    return list(managers(d))


def _virtual_hosts(d: Deployment, m: Manager) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every virtual host of a manager's inline route_config, with its dotted path."""
    rc_path = f"{m.path}.route_config"
    vhosts = _map(d, m.config.get("route_config"), rc_path).get("virtual_hosts")
    for vi, vhost in enumerate(_seq(d, vhosts, f"{rc_path}.virtual_hosts")):
        vpath = f"{rc_path}.virtual_hosts.{vi}"
        yield vpath, _map(d, vhost, vpath)


def _routes(
    d: Deployment, vpath: str, vhost: dict[str, Any]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every route of a virtual host, with its dotted path."""
    for ri, route in enumerate(_seq(d, vhost.get("routes"), f"{vpath}.routes")):
        rpath = f"{vpath}.routes.{ri}"
        yield rpath, _map(d, route, rpath)


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
    return outcome(bad, f"{len(found)} HTTP connection manager(s), each with ext_authz")


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
    return outcome(bad, "failure_mode_allow is false or unset")


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
        for vpath, vhost in _virtual_hosts(d, m):
            if _disables(vhost.get("typed_per_filter_config")):
                bad.append(f"{d.envoy_at(vpath + '.typed_per_filter_config')}: disabled")
            for rpath, route in _routes(d, vpath, vhost):
                if _disables(route.get("typed_per_filter_config")):
                    match = route.get("match") or {}
                    bad.append(
                        f"{d.envoy_at(f'{rpath}.typed_per_filter_config')}: disabled for {match}"
                    )
    return outcome(bad, "no per-route or per-host exemption")


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
        options = _map(
            d,
            m.config.get("common_http_protocol_options"),
            f"{m.path}.common_http_protocol_options",
        )
        action = options.get("headers_with_underscores_action", "ALLOW")
        if action not in ("DROP_HEADER", "REJECT_REQUEST"):
            where = d.envoy_at(f"{m.path}.common_http_protocol_options")
            bad.append(f"{where}: headers_with_underscores_action {action}")
    return outcome(bad, "headers with underscores are dropped")


def _governance_added(d: Deployment, holder: dict[str, Any], path: str) -> list[str]:
    """x-distill-* headers a route_config, virtual host or route adds to the request."""
    found = []
    added_path = f"{path}.request_headers_to_add"
    for i, entry in enumerate(_seq(d, holder.get("request_headers_to_add"), added_path)):
        entry_path = f"{added_path}.{i}"
        header = _map(d, _map(d, entry, entry_path).get("header"), f"{entry_path}.header")
        name = str(header.get("key", "")).lower().replace("_", "-")
        if name.startswith(GOVERNANCE_PREFIX):
            found.append(f"{d.envoy_at(entry_path)}: adds {header.get('key')}")
    return found


@check(
    "DG-OG-006",
    "No route adds x-distill-* headers after the check",
    Severity.HIGH,
    5,
    ("envoy",),
    fix="# remove from route_config, virtual hosts and routes:\nrequest_headers_to_add:\n"
    "  - header: {key: x-distill-reasoning, value: full}",
)
def no_governance_headers_added(d: Deployment) -> Outcome:
    """The router applies request_headers_to_add after ext_authz: it overrides governance."""
    bad: list[str] = []
    for m in _envoy(d):
        rc_path = f"{m.path}.route_config"
        bad += _governance_added(d, _map(d, m.config.get("route_config"), rc_path), rc_path)
        for vpath, vhost in _virtual_hosts(d, m):
            bad += _governance_added(d, vhost, vpath)
            for rpath, route in _routes(d, vpath, vhost):
                bad += _governance_added(d, route, rpath)
    return outcome(bad, "no route adds a governance header")


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
    return outcome(bad, "use_remote_address true, at most one XFF hop")


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
    return outcome(bad, "the body reaches the check")


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
    admin = _map(d, d.envoy.get("admin"), "admin")
    if not admin:
        return "pass", ["no admin interface"]
    address_map = _map(d, admin.get("address"), "admin.address")
    socket = _map(d, address_map.get("socket_address"), "admin.address.socket_address")
    address = str(socket.get("address", ""))
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
        budget = d.serve.seconds("check_budget", zero=False)
    except ValueError as exc:
        return "fail", [f"{d.serve.at('check_budget')}: {exc}"]
    bad = []
    for m in _envoy(d):
        if m.authz is None:
            continue
        service = _map(d, m.authz.get("grpc_service"), m.authz_path + ".grpc_service")
        timeout = _seconds(service.get("timeout", "0.2s"))
        if timeout is not None and budget >= timeout:
            where = d.envoy_at(m.authz_path + ".grpc_service.timeout")
            bad.append(f"{where}: {timeout:g}s, check budget {budget:g}s")
    return outcome(bad, f"check budget {budget:g}s below Envoy's timeout")
