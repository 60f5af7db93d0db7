"""The networks clients call from: rows of geo/demo.csv, and host addresses drawn inside them.

Every simulated address lies in a network of the demo GeoIP source, so the
server's GeoIP lookups (and Envoy's) place it. A row that contains a more
specific row (M247's GB /16 around an NL /18) never yields an address of the
inner one, so the country a client was given is the country the database says.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass
from pathlib import Path

from authz.geobuild import demo_csv_path, read_csv

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud, hosting and VPN providers (the demo rules' hosting list, plus the ones the
# simulator added to geo/demo.csv).
HOSTING_ASNS = frozenset({16509, 14061, 16276, 24940, 9009, 396982, 20473, 63949, 13335})
MOBILE_ASNS = frozenset({20057, 22394, 21928, 197207})
# Countries jurisdiction rules commonly single out (the embargoed group, and two more).
RESTRICTED = frozenset({"CU", "IR", "KP", "SY", "RU", "CN"})
# Where the reference rules offer the free tier (their `eu` group, GB and US).
FREE_COUNTRIES = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "HR",
        "CY",
        "CZ",
        "DK",
        "EE",
        "FI",
        "FR",
        "DE",
        "GR",
        "HU",
        "IE",
        "IT",
        "LV",
        "LT",
        "LU",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SK",
        "SI",
        "ES",
        "SE",
        "GB",
        "US",
    }
)


@dataclass(frozen=True, slots=True)
class Net:
    """One row of the GeoIP source, and what kind of network the simulator takes it for."""

    network: Network
    country: str
    asn: int | None
    organisation: str
    kind: str  # residential, mobile, hosting or restricted
    inner: tuple[Network, ...]  # more specific rows inside this one

    @property
    def v6(self) -> bool:
        """Whether this is an IPv6 network."""
        return self.network.version == 6


def _kind(country: str, asn: int | None) -> str:
    if asn in HOSTING_ASNS:
        return "hosting"
    if country in RESTRICTED:
        return "restricted"
    return "mobile" if asn in MOBILE_ASNS else "residential"


class Networks:
    """The demo networks by kind and country."""

    def __init__(self, path: Path | None = None) -> None:
        rows = read_csv(path or demo_csv_path())
        self.all: list[Net] = []
        for row in rows:
            if row.country is None:  # anycast: no country to place a client in
                continue
            inner = tuple(
                other.network
                for other in rows
                if other is not row
                and other.network.version == row.network.version
                and other.network.subnet_of(row.network)  # type: ignore[arg-type]
            )
            self.all.append(
                Net(
                    network=row.network,
                    country=row.country,
                    asn=row.asn,
                    organisation=row.organisation or "",
                    kind=_kind(row.country, row.asn),
                    inner=inner,
                )
            )

    def select(
        self, *, kinds: tuple[str, ...], countries: frozenset[str] | None = None, v6: bool = False
    ) -> list[Net]:
        """Networks of these kinds (and countries), of one address family."""
        return [
            n
            for n in self.all
            if n.kind in kinds and n.v6 == v6 and (countries is None or n.country in countries)
        ]

    def access(self, country: str) -> list[Net]:
        """The residential and mobile IPv4 networks of a country."""
        return self.select(kinds=("residential", "mobile"), countries=frozenset({country}))


def draw_address(rng: random.Random, net: Net) -> str:
    """A host address inside `net` (outside its inner rows), as text."""
    network = net.network
    for _ in range(100):
        if network.version == 4:
            # Skip the network's first and last address, and .0/.255 hosts, which
            # clients rarely get.
            value = int(network.network_address) + rng.randrange(1, network.num_addresses - 1)
            if value & 0xFF in (0, 255):
                continue
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(value)
        else:
            value = int(network.network_address) + rng.randrange(1, network.num_addresses)
            address = ipaddress.IPv6Address(value)
        if not any(address in inner for inner in net.inner):
            return str(address)
    raise ValueError(f"{network} has no room outside its inner networks")
