"""Locate client addresses with MaxMind databases (GeoIP2/GeoLite2 Country or City, and ASN).

An address is first sorted into its named kind without touching any database:
loopback, private and reserved ranges are fixed tables below (written out,
not taken from `ipaddress.is_private`/`is_global`, whose answers changed
between Python patch releases). Only the remaining public addresses are looked
up; one the country database does not place is UNLISTED.

Databases are memory-mapped (`maxminddb.MODE_AUTO`: the C extension when it is
installed). Lookups are synchronous, so swapping in a reloaded database and
closing the old one is safe as long as both happen on the thread that does the
lookups (the event loop).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import maxminddb

from authz.errors import ConfigError
from authz.facts import IPAddress
from authz.location import AddressKind, Location
from authz.reload import WatchedFile

PROBE_NETWORKS = 10_000
"""How many networks a loader reads, from the start, looking for the fields it needs."""

_MAX_ASN = 2**32 - 1
_MAX_SHARED = 65_536  # distinct answers a resolver keeps to share between lookups

# Special-purpose ranges (IANA registries) that are never looked up.
# Longest prefix wins, so ::1/128 and fc00::/7 beat the /3 blocks around them.
_SPECIAL: tuple[tuple[str, AddressKind], ...] = (
    ("127.0.0.0/8", AddressKind.LOOPBACK),
    ("::1/128", AddressKind.LOOPBACK),
    ("10.0.0.0/8", AddressKind.PRIVATE),  # RFC 1918
    ("172.16.0.0/12", AddressKind.PRIVATE),  # RFC 1918
    ("192.168.0.0/16", AddressKind.PRIVATE),  # RFC 1918
    ("100.64.0.0/10", AddressKind.PRIVATE),  # RFC 6598 shared address space (CGNAT)
    ("fc00::/7", AddressKind.PRIVATE),  # RFC 4193 unique local addresses
    ("0.0.0.0/8", AddressKind.RESERVED),  # "this network", with the unspecified 0.0.0.0
    ("169.254.0.0/16", AddressKind.RESERVED),  # link-local
    ("192.0.0.0/24", AddressKind.RESERVED),  # IETF protocol assignments
    ("192.0.2.0/24", AddressKind.RESERVED),  # documentation (TEST-NET-1)
    ("198.51.100.0/24", AddressKind.RESERVED),  # documentation (TEST-NET-2)
    ("203.0.113.0/24", AddressKind.RESERVED),  # documentation (TEST-NET-3)
    ("198.18.0.0/15", AddressKind.RESERVED),  # benchmarking
    ("224.0.0.0/4", AddressKind.RESERVED),  # multicast
    ("240.0.0.0/4", AddressKind.RESERVED),  # future use, with broadcast 255.255.255.255
    ("2001::/23", AddressKind.RESERVED),  # IETF protocol assignments (Teredo, ORCHID, ...)
    ("2001:db8::/32", AddressKind.RESERVED),  # documentation
    ("3fff::/20", AddressKind.RESERVED),  # documentation (RFC 9637)
    # Everything outside 2000::/3, the only block IANA hands out as global unicast:
    # ::/128, IPv4-compatible, 64:ff9b::/96 NAT64, 100::/64 discard, fe80::/10
    # link-local, fec0::/10 site-local, ff00::/8 multicast, and unassigned space.
    ("::/3", AddressKind.RESERVED),
    ("4000::/3", AddressKind.RESERVED),
    ("6000::/3", AddressKind.RESERVED),
    ("8000::/3", AddressKind.RESERVED),
    ("a000::/3", AddressKind.RESERVED),
    ("c000::/3", AddressKind.RESERVED),
    ("e000::/3", AddressKind.RESERVED),
)


def _compile(
    entries: tuple[tuple[str, AddressKind], ...],
) -> dict[int, tuple[tuple[int, dict[int, AddressKind]], ...]]:
    """Per IP version: (shift, {network >> shift: kind}) from the longest prefix down."""
    by_version: dict[int, dict[int, dict[int, AddressKind]]] = {4: {}, 6: {}}
    for text, kind in entries:
        net = ipaddress.ip_network(text)
        shift = net.max_prefixlen - net.prefixlen
        by_version[net.version].setdefault(shift, {})[int(net.network_address) >> shift] = kind
    return {
        version: tuple(sorted(tables.items()))  # small shift first = longest prefix first
        for version, tables in by_version.items()
    }


_FINE = object()  # a coarse block that holds a range narrower than the block


def _coarse(entries: tuple[tuple[str, AddressKind], ...], version: int, bits: int) -> list[object]:
    """An index on the top `bits` bits: the block's kind, None (public) or _FINE."""
    blocks: list[object] = [None] * (1 << bits)
    nets = [(ipaddress.ip_network(text), kind) for text, kind in entries]
    # Wider ranges first, so a narrower range inside one overwrites its blocks.
    for net, kind in sorted(nets, key=lambda pair: pair[0].prefixlen):
        if net.version != version:
            continue
        start = int(net.network_address) >> (net.max_prefixlen - bits)
        if net.prefixlen <= bits:
            count = 1 << (bits - net.prefixlen)
            blocks[start : start + count] = [kind] * count
        else:
            blocks[start] = _FINE
    return blocks


_TABLES = _compile(_SPECIAL)
_COARSE = {4: (24, _coarse(_SPECIAL, 4, 8)), 6: (112, _coarse(_SPECIAL, 6, 16))}
SPECIAL_RANGES: tuple[tuple[str, AddressKind], ...] = _SPECIAL
"""The ranges classified without a lookup, for docs and `geo lookup`."""

_FIXED = {kind: Location(kind) for kind in AddressKind}


def special_kind(ip: IPAddress) -> AddressKind | None:
    """The kind of a loopback, private or reserved address; None for a public one."""
    value = int(ip)
    shift, blocks = _COARSE[ip.version]
    block = blocks[value >> shift]
    if block is not _FINE:
        return block  # type: ignore[return-value]  # a kind or None, by construction
    for shift, networks in _TABLES[ip.version]:
        kind = networks.get(value >> shift)
        if kind is not None:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class DatabaseInfo:
    """What a loaded database is, for logs and explanations."""

    file: str
    role: str  # "country", "asn" or "country+asn"
    database_type: str
    build_epoch: int  # Unix time the file was built
    ip_version: int

    def as_dict(self) -> dict[str, str | int]:
        """A plain dict for structured logs."""
        return {
            "file": self.file,
            "role": self.role,
            "database_type": self.database_type,
            "build_epoch": self.build_epoch,
            "ip_version": self.ip_version,
        }


class GeoDatabase:
    """One open, memory-mapped MaxMind database file."""

    def __init__(self, reader: maxminddb.Reader, info: DatabaseInfo) -> None:
        self._reader = reader
        self.info = info
        self.errors = 0  # lookups the database could not answer (corrupt data section)

    def get(self, ip: IPAddress) -> Any:
        """The raw record for `ip`, or None (also for an IPv6 address in an IPv4-only file)."""
        try:
            return self._reader.get(ip)
        except ValueError:  # IPv6 in an IPv4 database
            return None
        except maxminddb.InvalidDatabaseError:
            self.errors += 1
            return None

    def networks(self, limit: int) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        """The first `limit` networks that have a record (benchmarks and probes)."""
        out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for network, _record in self._reader:
            if len(out) >= limit:
                break
            out.append(network)
        return out

    @property
    def closed(self) -> bool:
        """Whether the file has been unmapped."""
        return bool(self._reader.closed)

    def close(self) -> None:
        """Unmap the file; lookups afterwards are a programming error."""
        self._reader.close()


def open_database(path: Path, *, country: bool = True, asn: bool = False) -> GeoDatabase:
    """Open a MaxMind database that carries the wanted fields; ConfigError if it cannot.

    The check reads up to PROBE_NETWORKS networks from the start of the file
    and needs one record with a valid `country.iso_code` (if `country`) and
    one with an `autonomous_system_number` (if `asn`): a GeoLite2-ASN file
    passed as the country database is refused rather than answering UNLISTED
    for everyone.
    """
    file = str(path)
    if path.is_dir():
        raise ConfigError(file, "", "is a directory, not a database file")
    try:
        reader = maxminddb.open_database(os.fspath(path), maxminddb.MODE_AUTO)
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read: {exc.strerror or exc}") from None
    except (maxminddb.InvalidDatabaseError, ValueError):
        # The reader's message only repeats the path.
        raise ConfigError(file, "", "not a MaxMind DB file, or a corrupt one") from None
    try:
        meta = reader.metadata()
        wanted = {"country.iso_code"} if country else set()
        if asn:
            wanted.add("autonomous_system_number")
        missing = _probe(reader, wanted)
        if missing:
            raise ConfigError(
                file,
                "",
                f"no record has {' or '.join(sorted(missing))} in its first"
                f" {PROBE_NETWORKS} networks (database type {meta.database_type!r})",
            )
        info = DatabaseInfo(
            file=file,
            role="+".join(r for r, on in (("country", country), ("asn", asn)) if on),
            database_type=str(meta.database_type),
            build_epoch=int(meta.build_epoch),
            ip_version=int(meta.ip_version),
        )
    except ConfigError:
        reader.close()
        raise
    except (maxminddb.InvalidDatabaseError, ValueError, TypeError) as exc:
        reader.close()
        raise ConfigError(file, "", f"corrupt MaxMind DB file ({exc})") from None
    return GeoDatabase(reader, info)


def _probe(reader: maxminddb.Reader, wanted: set[str]) -> set[str]:
    """The wanted fields that none of the first networks carry."""
    missing = set(wanted)
    try:
        for n, (_network, record) in enumerate(reader):
            if n >= PROBE_NETWORKS or not missing:
                break
            _tick(missing, record)
    except ValueError:
        # maxminddb's iterator cannot name a network wider than the IPv4 subtree
        # (a record at ::/1, say); sample addresses instead.
        for address in _SAMPLES:
            if not missing:
                break
            try:
                _tick(missing, reader.get(address))
            except ValueError:  # IPv6 in an IPv4 database
                continue
    return missing


def _tick(missing: set[str], record: object) -> None:
    if "country.iso_code" in missing and country_code(record) is not None:
        missing.discard("country.iso_code")
    if "autonomous_system_number" in missing and asn_fields(record)[0] is not None:
        missing.discard("autonomous_system_number")


# One address in every IPv4 /8 and in every /8 of IPv6 global unicast (2000::/3).
_SAMPLES = [ipaddress.IPv4Address((n << 24) | 0x010101) for n in range(256)] + [
    ipaddress.IPv6Address(((0x20 + n) << 120) | 1) for n in range(32)
]


def open_country_db(path: Path) -> GeoDatabase:
    """Open a country database (GeoIP2/GeoLite2 Country or City)."""
    return open_database(path, country=True, asn=False)


def open_asn_db(path: Path) -> GeoDatabase:
    """Open an ASN database (GeoLite2-ASN)."""
    return open_database(path, country=False, asn=True)


def open_combined_db(path: Path) -> GeoDatabase:
    """Open one file that serves as both the country and the ASN database."""
    return open_database(path, country=True, asn=True)


def country_code(record: object) -> str | None:
    """`country.iso_code` when it is two upper-case ASCII letters; anything else is None.

    `registered_country` is deliberately not a fallback: it says where the
    block is registered, not where the client is, and Envoy's own geoip
    filter does not use it either. Such addresses are UNLISTED.
    """
    if not isinstance(record, dict):
        return None
    country = record.get("country")
    if not isinstance(country, dict):
        return None
    code = country.get("iso_code")
    if isinstance(code, str) and len(code) == 2 and code.isascii() and code.isalpha():
        return code if code.isupper() else None
    return None


def asn_fields(record: object) -> tuple[int | None, str | None]:
    """`autonomous_system_number` and `autonomous_system_organization`, each None if unusable."""
    if not isinstance(record, dict):
        return None, None
    number = record.get("autonomous_system_number")
    org = record.get("autonomous_system_organization")
    asn = (
        number
        if isinstance(number, int) and not isinstance(number, bool) and 0 < number <= _MAX_ASN
        else None
    )
    return asn, org if isinstance(org, str) and org else None


class NoDatabaseResolver:
    """The GeoResolver when no database is configured: address kinds only, never a country."""

    def locate(self, ip: IPAddress) -> Location:
        """Loopback, private and reserved by table; every other address is unlisted."""
        if ip.version == 6 and (mapped := ip.ipv4_mapped) is not None:
            ip = mapped
        return _FIXED[special_kind(ip) or AddressKind.UNLISTED]


class MaxMindResolver:
    """The GeoResolver over a country database and an optional ASN database."""

    def __init__(self, country: GeoDatabase, asn: GeoDatabase | None = None) -> None:
        self._country = country
        self._asn = asn
        self._locations: dict[tuple[str | None, int | None, str | None], Location] = {}

    def locate(self, ip: IPAddress) -> Location:
        """The address's kind, and its country and network when the databases know them."""
        if ip.version == 6 and (mapped := ip.ipv4_mapped) is not None:
            ip = mapped
        kind = special_kind(ip)
        if kind is not None:
            return _FIXED[kind]
        record = self._country.get(ip)
        country = country_code(record)
        asn: int | None = None
        org: str | None = None
        if self._asn is not None:
            asn, org = asn_fields(record if self._asn is self._country else self._asn.get(ip))
        key = (country, asn, org)
        location = self._locations.get(key)
        if location is None:
            # Building a frozen dataclass costs more than the lookup; the databases
            # hold far fewer distinct answers than addresses, so share them.
            kind = AddressKind.PUBLIC if country is not None else AddressKind.UNLISTED
            location = Location(kind, country, asn, org)
            if len(self._locations) >= _MAX_SHARED:
                self._locations.clear()
            self._locations[key] = location
        return location

    def replace(
        self, *, country: GeoDatabase | None = None, asn: GeoDatabase | None = None
    ) -> None:
        """Swap in reloaded databases and close the ones no longer used.

        Call it on the thread that does the lookups (the event loop).
        """
        old = (self._country, self._asn)
        if country is not None:
            self._country = country
        if asn is not None:
            self._asn = asn
        self._locations.clear()
        for db in old:
            if db is not None and db is not self._country and db is not self._asn:
                db.close()

    @property
    def country_db(self) -> GeoDatabase:
        """The country database in use."""
        return self._country

    def database_info(self) -> tuple[DatabaseInfo, ...]:
        """The loaded databases (one entry when one file serves both roles)."""
        if self._asn is None or self._asn is self._country:
            return (self._country.info,)
        return (self._country.info, self._asn.info)

    @property
    def lookup_errors(self) -> int:
        """Lookups a database could not answer (answered UNLISTED), since the last swap."""
        asn = 0 if self._asn is None or self._asn is self._country else self._asn.errors
        return self._country.errors + asn

    def close(self) -> None:
        """Close every database."""
        self._country.close()
        if self._asn is not None and self._asn is not self._country:
            self._asn.close()


def _same_file(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b)


def load_resolver(country_db: Path, asn_db: Path | None = None) -> MaxMindResolver:
    """Open the databases (one reader if both paths name one file); ConfigError if unusable."""
    if asn_db is not None and _same_file(country_db, asn_db):
        combined = open_combined_db(country_db)
        return MaxMindResolver(combined, combined)
    country = open_country_db(country_db)
    try:
        asn = open_asn_db(asn_db) if asn_db is not None else None
    except ConfigError:
        country.close()
        raise
    return MaxMindResolver(country, asn)


@dataclass(frozen=True, slots=True)
class GeoWatch:
    """A resolver whose database files hot-reload (a bad file keeps the last good one)."""

    resolver: MaxMindResolver
    files: tuple[WatchedFile[GeoDatabase], ...]


def watch_resolver(country_db: Path, asn_db: Path | None = None) -> GeoWatch:
    """Load the databases behind WatchedFile, so each reloads when its file changes."""
    resolver: MaxMindResolver | None = None

    def swap(**dbs: GeoDatabase) -> None:
        assert resolver is not None  # on_swap runs only from poll(), after construction
        resolver.replace(**dbs)

    if asn_db is not None and _same_file(country_db, asn_db):
        combined = WatchedFile(
            country_db,
            open_combined_db,
            kind="GeoIP country+ASN database",
            on_swap=lambda db: swap(country=db, asn=db),
        )
        resolver = MaxMindResolver(combined.current(), combined.current())
        return GeoWatch(resolver, (combined,))
    country = WatchedFile(
        country_db,
        open_country_db,
        kind="GeoIP country database",
        on_swap=lambda db: swap(country=db),
    )
    files: list[WatchedFile[GeoDatabase]] = [country]
    if asn_db is not None:
        try:
            files.append(
                WatchedFile(
                    asn_db, open_asn_db, kind="GeoIP ASN database", on_swap=lambda db: swap(asn=db)
                )
            )
        except ConfigError:
            country.current().close()
            raise
    resolver = MaxMindResolver(files[0].current(), files[1].current() if asn_db else None)
    return GeoWatch(resolver, tuple(files))
