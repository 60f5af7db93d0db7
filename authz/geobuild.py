"""Build MaxMind-format databases from a readable CSV, and the `geo` commands.

The CSV (`cidr,country,asn,organisation`) becomes records shaped like
GeoLite2 (`country.iso_code`, `autonomous_system_number`,
`autonomous_system_organization`), so one file serves as both the country and
the ASN database. The MMDB format itself is written by mmdb-writer.

Output is deterministic: rows are inserted in a fixed order (IPv4 before IPv6,
wider networks before the narrower ones they contain, so the most specific
range wins whatever the CSV order), and the build epoch is a parameter
(`--build-epoch`, else $SOURCE_DATE_EPOCH, else the current time): the same
CSV built with the same epoch gives a byte-identical file. The demo database
uses DEMO_BUILD_EPOCH. (libmaxminddb, hence Envoy, refuses a build epoch of 0.)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import ipaddress
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mmdb_writer
from netaddr import IPSet  # type: ignore[import-untyped]  # netaddr ships no type information

from authz.datafiles import project_file
from authz.errors import ConfigError
from authz.facts import parse_ip
from authz.geo import SPECIAL_RANGES

HEADER = ("cidr", "country", "asn", "organisation")
DATABASE_TYPE = "DistillGuard-Country-ASN"
_COUNTRY = re.compile(r"[A-Z]{2}")
_MAX_ASN = 2**32 - 1
_FORMAT = b"distill-guard geo build v1\n"  # bump when the output for the same CSV changes
DEMO_BUILD_EPOCH = 1793491200  # 2026-11-01, when geo/demo.csv was written

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SPECIAL_NETWORKS = [(ipaddress.ip_network(text), kind) for text, kind in SPECIAL_RANGES]


@dataclass(frozen=True, slots=True)
class GeoRow:
    """One CSV row: a network and what the database says about it."""

    line: int
    network: Network
    country: str | None
    asn: int | None
    organisation: str | None

    def record(self) -> dict[str, Any]:
        """The MMDB record, shaped like GeoLite2 Country + ASN."""
        out: dict[str, Any] = {}
        if self.country is not None:
            out["country"] = {"iso_code": self.country}
        if self.asn is not None:
            out["autonomous_system_number"] = self.asn
        if self.organisation is not None:
            out["autonomous_system_organization"] = self.organisation
        return out


def read_csv(path: Path) -> list[GeoRow]:
    """Parse and check the CSV; ConfigError naming `file:line` and the column on a bad row.

    Blank lines and lines starting with `#` are skipped; the first other line
    must be the header.
    """
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, "", "no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, "", f"cannot read: {exc}") from None
    rows: list[GeoRow] = []
    seen: dict[Network, int] = {}
    header_seen = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{file}:{number}"
        fields = [f.strip() for f in next(csv.reader([line]))]
        if not header_seen:
            if tuple(fields) != HEADER:
                raise ConfigError(where, "", f"expected the header {','.join(HEADER)}")
            header_seen = True
            continue
        if len(fields) != len(HEADER):
            raise ConfigError(
                where, "", f"expected {len(HEADER)} columns ({','.join(HEADER)}), got {len(fields)}"
            )
        cidr, country, asn_text, org = fields
        try:
            network: Network = ipaddress.ip_network(cidr)
        except ValueError as exc:
            raise ConfigError(where, "cidr", f"{cidr!r} is not a network ({exc})") from None
        for special, kind in _SPECIAL_NETWORKS:
            if special.version == network.version and special.overlaps(network):
                raise ConfigError(
                    where, "cidr", f"{cidr} overlaps {special}, a {kind} range never looked up"
                )
        if network in seen:
            raise ConfigError(where, "cidr", f"{cidr} repeats line {seen[network]}")
        seen[network] = number
        if country and not _COUNTRY.fullmatch(country):
            raise ConfigError(
                where, "country", f"{country!r} is not an ISO 3166-1 alpha-2 code like DE"
            )
        asn: int | None = None
        if asn_text:
            if not asn_text.isdigit() or not 0 < int(asn_text) <= _MAX_ASN:
                raise ConfigError(
                    where, "asn", f"{asn_text!r} is not a number from 1 to {_MAX_ASN}"
                )
            asn = int(asn_text)
        if org and asn is None:
            raise ConfigError(where, "organisation", "given without an asn")
        if not country and asn is None:
            raise ConfigError(where, "", "a row needs a country, an asn or both")
        rows.append(GeoRow(number, network, country or None, asn, org or None))
    if not header_seen:
        raise ConfigError(file, "", f"empty: expected the header {','.join(HEADER)}")
    return rows


class _Writer(mmdb_writer.MMDBWriter):
    """mmdb-writer with a fixed build epoch instead of the wall clock."""

    def __init__(self, build_epoch: int, description: str) -> None:
        super().__init__(
            ip_version=6,
            ipv4_compatible=True,
            database_type=DATABASE_TYPE,
            languages=["en"],
            description=description,
            int_type="u32",  # like GeoLite2 (Envoy reads autonomous_system_number as uint32)
        )
        self._build_epoch = build_epoch

    def _build_meta(self) -> dict[str, Any]:
        return {**super()._build_meta(), "build_epoch": self._build_epoch}


def default_build_epoch() -> int:
    """$SOURCE_DATE_EPOCH (the reproducible-builds convention), else the current time."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "")
    return int(text) if text.isdigit() and int(text) > 0 else int(time.time())


def build_database(src: Path, out: Path, *, build_epoch: int | None = None) -> int:
    """Write the MMDB for `src` to `out` (atomically); returns the number of networks."""
    if build_epoch is None:
        build_epoch = default_build_epoch()
    if build_epoch <= 0:
        raise ValueError(f"build epoch must be positive, got {build_epoch}")
    rows = read_csv(src)
    writer = _Writer(
        build_epoch,
        "distill-guard database built from a CSV; not accurate geolocation",
    )
    ordered = sorted(
        rows,
        key=lambda r: (r.network.version, r.network.prefixlen, int(r.network.network_address)),
    )
    for row in ordered:
        writer.insert_network(IPSet([str(row.network)]), row.record())
    # Like MaxMind's files, answer IPv4-mapped IPv6 (::ffff:a.b.c.d) as the IPv4 address,
    # for readers (Envoy) that look such an address up as it is.
    for row in ordered:
        if isinstance(row.network, ipaddress.IPv4Network):
            mapped = f"::ffff:{row.network.network_address}/{96 + row.network.prefixlen}"
            writer.insert_network(IPSet([mapped]), row.record())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o644)
        # A rename, never an overwrite in place: readers have the old file memory-mapped.
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(rows)


def demo_csv_path() -> Path:
    """Where geo/demo.csv lives: the source checkout, else the installed data file."""
    return project_file("geo/demo.csv")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    for directory in (
        Path(base) / "distill-guard",
        Path(tempfile.gettempdir()) / f"distill-guard-{os.getuid()}",
    ):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(directory, os.W_OK):
            return directory
    raise OSError("no writable cache directory for the demo GeoIP database")


def demo_database(cache_dir: Path | None = None) -> Path:
    """The demo database built from geo/demo.csv, cached by the CSV's content hash.

    A changed CSV gets a new file name, so a running server watching the old
    file keeps it; older builds are removed.
    """
    src = demo_csv_path()
    digest = hashlib.sha256(_FORMAT + str(DEMO_BUILD_EPOCH).encode() + src.read_bytes())
    name = f"demo-{digest.hexdigest()[:16]}.mmdb"
    directory = cache_dir if cache_dir is not None else _cache_dir()
    out = directory / name
    if not out.is_file():
        build_database(src, out, build_epoch=DEMO_BUILD_EPOCH)
        for stale in directory.glob("demo-*.mmdb"):
            if stale != out:
                stale.unlink(missing_ok=True)
    return out


# --- the `geo` commands ---------------------------------------------------------------


def _build(ns: argparse.Namespace) -> int:
    try:
        count = build_database(Path(ns.src), Path(ns.out), build_epoch=ns.build_epoch)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: {ns.out}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"ok: {ns.out}: {count} networks from {ns.src}")
    return 0


def _when(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _open(ns: argparse.Namespace) -> Any:
    from authz.geo import load_resolver

    resolver = load_resolver(Path(ns.geoip), Path(ns.asn) if ns.asn else None)
    for info in resolver.database_info():
        print(
            f"# {info.role} database {info.file}: {info.database_type},"
            f" built {_when(info.build_epoch)}",
            file=sys.stderr,
        )
    return resolver


def _lookup(ns: argparse.Namespace) -> int:
    try:
        resolver = _open(ns)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    for text in ns.ips:
        ip = parse_ip(text)
        if ip is None:
            print(f"error: {text!r} is not an IP address", file=sys.stderr)
            status = 1
            continue
        loc = resolver.locate(ip)
        if ns.json:
            record = {"ip": str(ip), "kind": str(loc.kind), "country": loc.country}
            print(json.dumps({**record, "asn": loc.asn, "as_org": loc.as_org}))
            continue
        parts = [str(ip), str(loc.kind)]
        if loc.country is not None:
            parts.append(f"country={loc.country}")
        if loc.asn is not None:
            parts.append(f"asn={loc.asn}")
        if loc.as_org is not None:
            parts.append(f"org={json.dumps(loc.as_org)}")
        print("  ".join(parts))
    resolver.close()
    return status


def _bench(ns: argparse.Namespace) -> int:
    import random

    try:
        resolver = _open(ns)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rng = random.Random(1)
    networks = resolver.country_db.networks(10_000)
    listed = [
        net[rng.randrange(net.num_addresses)] for net in rng.choices(networks, k=ns.n)
    ]  # hosts inside the database's first networks
    samples = {
        "listed": listed,
        "random IPv4": [ipaddress.IPv4Address(rng.getrandbits(32)) for _ in range(ns.n)],
        "random IPv6": [
            ipaddress.IPv6Address((0x2 << 124) | rng.getrandbits(124)) for _ in range(ns.n)
        ],  # inside 2000::/3
    }
    for name, ips in samples.items():
        locate = resolver.locate
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for ip in ips:
                locate(ip)
            best = min(best, (time.perf_counter() - start) / len(ips))
        print(f"{name}: {best * 1e6:.2f} µs per locate() ({len(ips)} addresses, best of 3)")
    resolver.close()
    return 0


def _demo_path(ns: argparse.Namespace) -> int:
    print(demo_database())
    return 0


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return int(text)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `geo` command group: build, lookup, bench, demo-db."""
    geo = sub.add_parser("geo", help="build and query GeoIP databases")
    actions = geo.add_subparsers(dest="geo_command", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="build a MaxMind-format database from a CSV")
    build.add_argument("src", metavar="SRC.csv", help="cidr,country,asn,organisation")
    build.add_argument("out", metavar="OUT.mmdb")
    build.add_argument(
        "--build-epoch",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="the database's build time [default $SOURCE_DATE_EPOCH, else now]",
    )
    build.set_defaults(func=_build)

    for name, func, text in (
        ("lookup", _lookup, "print what the resolver says about addresses"),
        ("bench", _bench, "measure the cost of one lookup"),
    ):
        p = actions.add_parser(name, help=text)
        p.add_argument("--geoip", required=True, metavar="DB", help="country (or city) database")
        p.add_argument("--asn", metavar="DB", help="ASN database (may be the same file)")
        p.set_defaults(func=func)
        if name == "lookup":
            p.add_argument("ips", nargs="+", metavar="IP")
            p.add_argument("--json", action="store_true", help="one JSON object per line")
        else:
            p.add_argument("-n", type=int, default=200_000, help="addresses per family")

    demo = actions.add_parser("demo-db", help="build (or reuse) the demo database; print its path")
    demo.set_defaults(func=_demo_path)
