"""Request facts: what Envoy told us about one request, free of protobuf."""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Envoy adds this header to the CheckRequest when it buffered only part of the body.
PARTIAL_BODY_HEADER = "x-envoy-auth-partial-body"


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """One HTTP request as Envoy saw it.

    `headers` keys are lower-case (HTTP/2 and Envoy already normalise them);
    `client_ip` is None when Envoy's source address is missing or not an IP
    (a pipe, garbage), and `source` keeps the raw text for the record.
    """

    method: str
    path: str
    host: str
    headers: dict[str, str]
    client_ip: IPAddress | None
    source: str = ""
    body: bytes | None = None
    body_partial: bool = False
    request_id: str = ""
    protocol: str = ""
    malformed: str = field(default="")


# Clients and proxies repeat: parsing an address costs more than the rest of
# the client-address logic, and the parsed values are immutable.
@functools.lru_cache(maxsize=16384)
def parse_ip(text: str) -> IPAddress | None:
    """Parse an address as Envoy prints it; IPv4-mapped IPv6 becomes IPv4."""
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
