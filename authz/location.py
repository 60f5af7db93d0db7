"""Where a request comes from: the client address's kind, country and network."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AddressKind(StrEnum):
    """The named cases of a client address; each can have its own jurisdiction rule."""

    PUBLIC = "public"  # found in the GeoIP database
    UNLISTED = "unlisted"  # public, but the database has no country for it
    PRIVATE = "private"  # RFC 1918, RFC 4193 (fc00::/7), CGNAT 100.64/10
    LOOPBACK = "loopback"
    RESERVED = "reserved"  # link-local, multicast, documentation, unspecified, other reserved


@dataclass(frozen=True, slots=True)
class Location:
    """The result of locating one address.

    `country` is an ISO 3166-1 alpha-2 code, set only for PUBLIC addresses;
    `asn`/`as_org` come from the ASN database when one is configured.
    """

    kind: AddressKind
    country: str | None = None
    asn: int | None = None
    as_org: str | None = None
