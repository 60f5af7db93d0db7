"""GeoIP: address kinds, MaxMind lookups, loaders, hot reload and the CSV -> MMDB builder.

Every database here is a real MMDB file, built by `geo build` from CSV text
(or, for records the builder would refuse, by mmdb-writer directly).
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Callable
from pathlib import Path

import maxminddb
import mmdb_writer
import pytest
from netaddr import IPSet  # type: ignore[import-untyped]  # netaddr ships no type information

from authz import cli
from authz.errors import ConfigError
from authz.facts import parse_ip
from authz.geo import (
    PROBE_NETWORKS,
    GeoDatabase,
    GeoWatch,
    MaxMindResolver,
    load_resolver,
    open_asn_db,
    open_country_db,
    special_kind,
    watch_resolver,
)
from authz.geobuild import DATABASE_TYPE, build_database, demo_csv_path, demo_database, read_csv
from authz.location import AddressKind, Location

EPOCH = 1793491200
DE = {"country": {"iso_code": "DE"}}
EVERYWHERE_DE = [("::/1", DE), ("8000::/1", DE)]  # every address, IPv4 included (::/96)
HEADER = "cidr,country,asn,organisation\n"
ROWS = """\
3.120.0.0/14,DE,16509,"Amazon.com, Inc."
2a01:4f8::/32,DE,24940,Hetzner Online GmbH
73.0.0.0/8,US,7922,"Comcast Cable Communications, LLC"
2601::/20,US,7922,"Comcast Cable Communications, LLC"
146.70.0.0/16,GB,9009,M247 Europe SRL
146.70.128.0/18,NL,9009,M247 Europe SRL
1.1.1.0/24,,13335,"Cloudflare, Inc."
41.0.0.0/11,ZA,,
"""


def write_csv(tmp_path: Path, rows: str, name: str = "geo") -> Path:
    """A CSV with the header and `rows`."""
    src = tmp_path / f"{name}.csv"
    src.write_text(HEADER + rows, encoding="utf-8")
    return src


def build(tmp_path: Path, rows: str = ROWS, name: str = "geo") -> Path:
    """Build `rows` into `<name>.mmdb` with a fixed build epoch."""
    out = tmp_path / f"{name}.mmdb"
    build_database(write_csv(tmp_path, rows, name), out, build_epoch=EPOCH)
    return out


def raw_db(tmp_path: Path, networks: list[tuple[str, object]], name: str = "raw") -> Path:
    """An MMDB written by mmdb-writer directly, with records the builder would refuse."""
    writer = mmdb_writer.MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="Test")
    for network, record in networks:
        writer.insert_network(IPSet([network]), record)
    out = tmp_path / f"{name}.mmdb"
    writer.to_db_file(str(out))
    return out


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as the edge hands it over (IPv4-mapped IPv6 already unmapped)."""
    parsed = parse_ip(text)
    assert parsed is not None, text
    return parsed


@pytest.fixture
def resolver(tmp_path: Path) -> MaxMindResolver:
    """The test rows as both the country and the ASN database."""
    db = build(tmp_path)
    return load_resolver(db, db)


# --- lookups -------------------------------------------------------------------------


def test_ipv4_public_address_has_country_and_network(resolver: MaxMindResolver) -> None:
    """An IPv4 address inside a listed range is PUBLIC with its country, ASN and organisation."""
    assert resolver.locate(ip("3.121.7.9")) == Location(
        AddressKind.PUBLIC, "DE", 16509, "Amazon.com, Inc."
    )


def test_ipv6_public_address_has_country_and_network(resolver: MaxMindResolver) -> None:
    """An IPv6 address inside a listed range is PUBLIC with its country and network."""
    assert resolver.locate(ip("2a01:4f8:c17:1::5")) == Location(
        AddressKind.PUBLIC, "DE", 24940, "Hetzner Online GmbH"
    )
    assert resolver.locate(ip("2601:1c0::1")).country == "US"


def test_ipv4_mapped_ipv6_is_located_as_ipv4(resolver: MaxMindResolver) -> None:
    """::ffff:a.b.c.d (how a dual-stack socket reports IPv4) locates like a.b.c.d, parsed or not."""
    expected = Location(AddressKind.PUBLIC, "US", 7922, "Comcast Cable Communications, LLC")
    assert parse_ip("::ffff:73.1.2.3") == ipaddress.IPv4Address("73.1.2.3")
    assert resolver.locate(ip("::ffff:73.1.2.3")) == expected
    assert resolver.locate(ipaddress.IPv6Address("::ffff:73.1.2.3")) == expected
    assert resolver.locate(ipaddress.IPv6Address("::ffff:10.0.0.1")).kind == AddressKind.PRIVATE


def test_more_specific_range_wins(resolver: MaxMindResolver) -> None:
    """A range carved out of a wider one answers for its own addresses only."""
    assert resolver.locate(ip("146.70.1.1")).country == "GB"
    assert resolver.locate(ip("146.70.130.1")).country == "NL"
    assert resolver.locate(ip("146.70.192.1")).country == "GB"


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", AddressKind.LOOPBACK),
        ("127.255.255.254", AddressKind.LOOPBACK),
        ("::1", AddressKind.LOOPBACK),
        ("10.0.0.1", AddressKind.PRIVATE),
        ("172.16.0.1", AddressKind.PRIVATE),
        ("172.31.255.255", AddressKind.PRIVATE),
        ("192.168.1.1", AddressKind.PRIVATE),
        ("100.64.0.1", AddressKind.PRIVATE),
        ("100.127.255.255", AddressKind.PRIVATE),
        ("fc00::1", AddressKind.PRIVATE),
        ("fd12:3456::1", AddressKind.PRIVATE),
        ("0.0.0.0", AddressKind.RESERVED),
        ("0.1.2.3", AddressKind.RESERVED),
        ("169.254.169.254", AddressKind.RESERVED),
        ("192.0.0.8", AddressKind.RESERVED),
        ("192.0.2.1", AddressKind.RESERVED),
        ("198.51.100.4", AddressKind.RESERVED),
        ("203.0.113.7", AddressKind.RESERVED),
        ("198.18.0.1", AddressKind.RESERVED),
        ("198.19.255.255", AddressKind.RESERVED),
        ("224.0.0.1", AddressKind.RESERVED),
        ("239.255.255.250", AddressKind.RESERVED),
        ("240.0.0.1", AddressKind.RESERVED),
        ("255.255.255.255", AddressKind.RESERVED),
        ("::", AddressKind.RESERVED),
        ("::5", AddressKind.RESERVED),
        ("64:ff9b::808:808", AddressKind.RESERVED),
        ("100::1", AddressKind.RESERVED),
        ("fe80::1", AddressKind.RESERVED),
        ("fec0::1", AddressKind.RESERVED),
        ("ff02::1", AddressKind.RESERVED),
        ("2001::1", AddressKind.RESERVED),
        ("2001:2::1", AddressKind.RESERVED),
        ("2001:db8::1", AddressKind.RESERVED),
        ("3fff::1", AddressKind.RESERVED),
        ("4000::1", AddressKind.RESERVED),
    ],
)
def test_named_kinds_are_classified_before_any_lookup(
    tmp_path: Path, address: str, kind: AddressKind
) -> None:
    """Loopback, private and reserved addresses get their kind even where the database says DE."""
    everywhere = raw_db(tmp_path, EVERYWHERE_DE)
    resolver = load_resolver(everywhere)
    assert special_kind(ip(address)) == kind
    assert resolver.locate(ip(address)) == Location(kind)


@pytest.mark.parametrize(
    "address",
    [
        "1.0.0.1",
        "11.0.0.1",
        "100.63.255.255",
        "100.128.0.1",
        "126.255.255.255",
        "128.0.0.1",
        "169.253.255.255",
        "172.15.255.255",
        "172.32.0.1",
        "192.0.1.1",
        "192.0.3.1",
        "192.167.255.255",
        "198.17.255.255",
        "198.20.0.1",
        "203.0.114.1",
        "223.255.255.255",
        "2000::1",
        "2001:200::1",
        "2001:db7:ffff::1",
        "2001:db9::1",
        "2002::1",
        "2400:cb00::1",
        "3ffe:ffff::1",
        "3fff:1000::1",
    ],
)
def test_addresses_next_to_special_ranges_are_looked_up(tmp_path: Path, address: str) -> None:
    """The first public addresses around each special range are PUBLIC, placed by the database."""
    everywhere = raw_db(tmp_path, EVERYWHERE_DE)
    assert special_kind(ip(address)) is None
    assert load_resolver(everywhere).locate(ip(address)) == Location(AddressKind.PUBLIC, "DE")


def test_unlisted_addresses(resolver: MaxMindResolver) -> None:
    """A public address outside every range, or in a range without a country, is UNLISTED."""
    assert resolver.locate(ip("8.8.8.8")) == Location(AddressKind.UNLISTED)
    assert resolver.locate(ip("2400:cb00::1")) == Location(AddressKind.UNLISTED)
    assert resolver.locate(ip("1.1.1.1")) == Location(
        AddressKind.UNLISTED, None, 13335, "Cloudflare, Inc."
    )


def test_country_without_network(resolver: MaxMindResolver) -> None:
    """A range with a country but no ASN is PUBLIC with no network."""
    assert resolver.locate(ip("41.1.2.3")) == Location(AddressKind.PUBLIC, "ZA")


def test_without_asn_database_there_is_no_network(tmp_path: Path) -> None:
    """With only a country database configured, ASN fields stay empty even if the file has them."""
    assert load_resolver(build(tmp_path)).locate(ip("3.120.0.1")) == Location(
        AddressKind.PUBLIC, "DE"
    )


def test_separate_country_and_asn_databases(tmp_path: Path) -> None:
    """A country-only file and an ASN-only file combine into one answer."""
    country = build(tmp_path, "3.120.0.0/14,DE,,\n2a01:4f8::/32,DE,,\n", "country")
    asn = build(
        tmp_path, '3.0.0.0/8,,16509,"Amazon.com, Inc."\n8.8.8.0/24,,15169,Google LLC\n', "asn"
    )
    resolver = load_resolver(country, asn)
    assert resolver.locate(ip("3.120.0.1")) == Location(
        AddressKind.PUBLIC, "DE", 16509, "Amazon.com, Inc."
    )
    assert resolver.locate(ip("8.8.8.8")) == Location(
        AddressKind.UNLISTED, None, 15169, "Google LLC"
    )
    assert resolver.locate(ip("2a01:4f8::1")) == Location(AddressKind.PUBLIC, "DE")
    assert [i.role for i in resolver.database_info()] == ["country", "asn"]


def test_one_file_for_both_roles_is_opened_once(tmp_path: Path) -> None:
    """The same path as country and ASN database gives one reader and one info entry."""
    db = build(tmp_path)
    (info,) = load_resolver(db, db).database_info()
    assert info.as_dict() == {
        "file": str(db),
        "role": "country+asn",
        "database_type": DATABASE_TYPE,
        "build_epoch": EPOCH,
        "ip_version": 6,
    }


@pytest.mark.parametrize(
    "record",
    [
        "DE",
        ["DE"],
        {"country": "DE"},
        {"country": {"iso_code": 276}},
        {"country": {"iso_code": "de"}},
        {"country": {"iso_code": "DEU"}},
        {"country": {"iso_code": "D1"}},
        {"country": {"iso_code": "ÄÖ"}},
        {"country": ["DE"]},
        {"registered_country": {"iso_code": "DE"}},
        {"autonomous_system_number": "16509", "autonomous_system_organization": 7},
        {"autonomous_system_number": -5},
        {"autonomous_system_number": 0, "autonomous_system_organization": ""},
        {"autonomous_system_number": True},
        {"autonomous_system_number": 2**40},
        {"autonomous_system_number": 1.5},
    ],
)
def test_garbage_records_answer_unlisted(tmp_path: Path, record: object) -> None:
    """A record of the wrong shape or type is UNLISTED, never a crash; no registered_country."""
    good = {"country": {"iso_code": "FR"}, "autonomous_system_number": 3215}
    db = raw_db(tmp_path, [("1.0.0.0/8", good), ("5.0.0.0/8", record)])  # type: ignore[list-item]
    resolver = load_resolver(db, db)
    assert resolver.locate(ip("5.1.2.3")) == Location(AddressKind.UNLISTED)
    assert resolver.locate(ip("1.2.3.4")) == Location(AddressKind.PUBLIC, "FR", 3215)


def test_corrupt_record_at_lookup_answers_unlisted_and_counts(tmp_path: Path) -> None:
    """A record the reader cannot decode answers UNLISTED and is counted as a lookup error."""
    db = build(tmp_path, "3.0.0.0/8,DE,,\n2a01::/16,FR,,\n")
    data = bytearray(db.read_bytes())
    end = data.index(b"\xab\xcd\xefMaxMind.com")
    data[end - 8 : end] = b"\xff" * 8  # the last record written: 2a01::/16's
    db.write_bytes(bytes(data))
    resolver = load_resolver(db)
    assert resolver.locate(ip("3.1.2.3")).country == "DE"
    assert resolver.locate(ip("2a01::1")) == Location(AddressKind.UNLISTED)
    assert resolver.lookup_errors == 1


def test_ipv6_in_ipv4_only_database_is_unlisted(tmp_path: Path) -> None:
    """An IPv4-only database answers UNLISTED for IPv6 addresses instead of raising."""
    writer = mmdb_writer.MMDBWriter(ip_version=4, database_type="Test")
    writer.insert_network(IPSet(["3.0.0.0/8"]), {"country": {"iso_code": "DE"}})
    out = tmp_path / "v4.mmdb"
    writer.to_db_file(str(out))
    resolver = load_resolver(out)
    assert resolver.locate(ip("3.1.2.3")).country == "DE"
    assert resolver.locate(ip("2a01::1")) == Location(AddressKind.UNLISTED)
    assert resolver.lookup_errors == 0


# --- loaders ------------------------------------------------------------------------


def test_missing_database(tmp_path: Path) -> None:
    """A missing file is a ConfigError naming it."""
    path = tmp_path / "GeoLite2-Country.mmdb"
    with pytest.raises(ConfigError) as err:
        load_resolver(path)
    assert str(err.value) == f"{path}: no such file"


def test_directory_instead_of_database(tmp_path: Path) -> None:
    """A directory where the file should be is a ConfigError naming it."""
    with pytest.raises(ConfigError) as err:
        open_country_db(tmp_path)
    assert str(err.value) == f"{tmp_path}: is a directory, not a database file"


@pytest.mark.parametrize(
    "damage",
    [
        lambda good: b"",
        lambda good: b"not a database\n" * 100,
        lambda good: b"\xab\xcd\xefMaxMind.com" + b"\xff" * 40,
        lambda good: good[:2000],  # truncated
        lambda good: good[: good.index(b"MaxMind.com") + 11] + b"\xff" * 20,  # bad metadata
    ],
    ids=["empty", "text", "magic-only", "truncated", "bad-metadata"],
)
def test_corrupt_database_names_the_file(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    """An empty, foreign, mangled or truncated file is a ConfigError naming it."""
    path = tmp_path / "broken.mmdb"
    path.write_bytes(damage(build(tmp_path).read_bytes()))
    with pytest.raises(ConfigError) as err:
        open_country_db(path)
    assert err.value.file == str(path)
    assert str(err.value) == f"{path}: not a MaxMind DB file, or a corrupt one"


def test_corrupt_data_section_names_the_file(tmp_path: Path) -> None:
    """A file whose tree is fine but whose records are garbage is refused at load time."""
    db = build(tmp_path)
    meta = maxminddb.open_database(db).metadata()
    start = meta.node_count * meta.record_size * 2 // 8 + 16  # the tree, then 16 zero bytes
    data = bytearray(db.read_bytes())
    end = data.index(b"\xab\xcd\xefMaxMind.com")
    data[start:end] = b"\xff" * (end - start)
    db.write_bytes(bytes(data))
    with pytest.raises(ConfigError) as err:
        open_country_db(db)
    assert str(err.value).startswith(f"{db}: corrupt MaxMind DB file (")


def test_asn_database_is_not_a_country_database(tmp_path: Path) -> None:
    """A file without country.iso_code is refused as the country database (not all-UNLISTED)."""
    asn = build(tmp_path, '3.0.0.0/8,,16509,"Amazon.com, Inc."\n', "asn")
    with pytest.raises(ConfigError) as err:
        open_country_db(asn)
    assert str(err.value) == (
        f"{asn}: no record has country.iso_code in its first {PROBE_NETWORKS} networks"
        f" (database type '{DATABASE_TYPE}')"
    )
    assert open_asn_db(asn).info.role == "asn"


def test_country_database_is_not_an_asn_database(tmp_path: Path) -> None:
    """A file without autonomous_system_number is refused as the ASN database."""
    country = build(tmp_path, "3.0.0.0/8,DE,,\n", "country")
    with pytest.raises(ConfigError) as err:
        load_resolver(country, tmp_path / "country.mmdb")
    assert str(err.value) == (
        f"{country}: no record has autonomous_system_number in its first {PROBE_NETWORKS}"
        f" networks (database type '{DATABASE_TYPE}')"
    )


def test_empty_database_is_refused(tmp_path: Path) -> None:
    """A valid file with no records at all cannot be a country database."""
    db = raw_db(tmp_path, [])
    with pytest.raises(ConfigError) as err:
        open_country_db(db)
    assert "no record has country.iso_code" in str(err.value)


# --- hot reload -----------------------------------------------------------------------


def swap_in(src: Path, dest: Path) -> None:
    """Replace `dest` by rename, as geoipupdate does (never overwrite a mapped file in place)."""
    os.replace(src, dest)


def poll(watch: GeoWatch) -> bool:
    """Poll every database file the way the server's reload tasks do; True when any swapped."""
    return any([f.poll() for f in watch.files])


def test_reload_swaps_database_and_closes_the_old_one(tmp_path: Path) -> None:
    """A changed file is loaded and answers at once; the old reader is closed."""
    live = build(tmp_path, "3.0.0.0/8,DE,16509,Amazon\n", "live")
    watch = watch_resolver(live, live)
    old: GeoDatabase = watch.files[0].current()
    assert watch.resolver.locate(ip("3.1.2.3")).country == "DE"
    swap_in(build(tmp_path, "3.0.0.0/8,FR,16276,OVH SAS\n", "next"), live)
    assert poll(watch) is True
    assert watch.resolver.locate(ip("3.1.2.3")) == Location(
        AddressKind.PUBLIC, "FR", 16276, "OVH SAS"
    )
    assert old.closed
    assert not watch.files[0].current().closed


def test_corrupt_reload_keeps_the_last_good_database(tmp_path: Path) -> None:
    """A corrupt download swapped in is rejected and counted; the old database keeps answering."""
    country = build(tmp_path, "3.0.0.0/8,DE,,\n", "country")
    asn = build(tmp_path, "3.0.0.0/8,,16509,Amazon\n", "asn")
    watch = watch_resolver(country, asn)
    broken = tmp_path / "broken"
    broken.write_bytes(b"<html>429 Too Many Requests</html>")
    swap_in(broken, country)
    assert poll(watch) is False
    assert watch.files[0].failures == 1
    assert watch.files[0].last_error == f"{country}: not a MaxMind DB file, or a corrupt one"
    assert watch.resolver.locate(ip("3.1.2.3")) == Location(
        AddressKind.PUBLIC, "DE", 16509, "Amazon"
    )
    swap_in(build(tmp_path, "3.0.0.0/8,,13335,Cloudflare\n", "asn2"), asn)
    assert poll(watch) is True
    assert watch.resolver.locate(ip("3.1.2.3")).asn == 13335


def test_watch_with_bad_asn_database_fails_and_closes_the_country_one(tmp_path: Path) -> None:
    """The first load must succeed: a bad ASN database is a ConfigError at start-up."""
    country = build(tmp_path, "3.0.0.0/8,DE,,\n", "country")
    with pytest.raises(ConfigError):
        watch_resolver(country, tmp_path / "missing.mmdb")


# --- the CSV and the builder ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "{file}: empty: expected the header cidr,country,asn,organisation"),
        ("cidr,country\n", "{file}:1: expected the header cidr,country,asn,organisation"),
        (
            HEADER + "3.0.0.0/8,DE,1\n",
            "{file}:2: expected 4 columns (cidr,country,asn,organisation), got 3",
        ),
        (
            HEADER + "# comment\n\n3.0.0.0/33,DE,,\n",
            "{file}:4: cidr: '3.0.0.0/33' is not a network"
            " ('3.0.0.0/33' does not appear to be an IPv4 or IPv6 network)",
        ),
        (
            HEADER + "3.0.0.1/8,DE,,\n",
            "{file}:2: cidr: '3.0.0.1/8' is not a network (3.0.0.1/8 has host bits set)",
        ),
        (
            HEADER + "10.1.0.0/16,DE,,\n",
            "{file}:2: cidr: 10.1.0.0/16 overlaps 10.0.0.0/8, a private range never looked up",
        ),
        (
            HEADER + "198.0.0.0/8,US,,\n",
            "{file}:2: cidr: 198.0.0.0/8 overlaps 198.51.100.0/24,"
            " a reserved range never looked up",
        ),
        (
            HEADER + "2001:db8::/48,US,,\n",
            "{file}:2: cidr: 2001:db8::/48 overlaps 2001:db8::/32,"
            " a reserved range never looked up",
        ),
        (
            HEADER + "3.0.0.0/8,DE,,\n5.0.0.0/8,FR,,\n3.0.0.0/8,GB,,\n",
            "{file}:4: cidr: 3.0.0.0/8 repeats line 2",
        ),
        (
            HEADER + "3.0.0.0/8,de,,\n",
            "{file}:2: country: 'de' is not an ISO 3166-1 alpha-2 code like DE",
        ),
        (
            HEADER + "3.0.0.0/8,DEU,,\n",
            "{file}:2: country: 'DEU' is not an ISO 3166-1 alpha-2 code like DE",
        ),
        (
            HEADER + "3.0.0.0/8,DE,AS16509,\n",
            "{file}:2: asn: 'AS16509' is not a number from 1 to 4294967295",
        ),
        (HEADER + "3.0.0.0/8,DE,0,\n", "{file}:2: asn: '0' is not a number from 1 to 4294967295"),
        (
            HEADER + "3.0.0.0/8,DE,4294967296,\n",
            "{file}:2: asn: '4294967296' is not a number from 1 to 4294967295",
        ),
        (HEADER + "3.0.0.0/8,DE,-1,\n", "{file}:2: asn: '-1' is not a number from 1 to 4294967295"),
        (HEADER + "3.0.0.0/8,DE,,Amazon\n", "{file}:2: organisation: given without an asn"),
        (HEADER + "3.0.0.0/8,,,\n", "{file}:2: a row needs a country, an asn or both"),
    ],
)
def test_csv_errors_name_the_line_and_column(tmp_path: Path, text: str, message: str) -> None:
    """Each bad row is refused with its line number, its column and what is wrong."""
    src = tmp_path / "bad.csv"
    src.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        read_csv(src)
    assert str(err.value) == message.format(file=src)


def test_build_command_reports_csv_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`geo build` prints the error, exits 1 and writes nothing."""
    src = write_csv(tmp_path, "3.0.0.0/8,XX1,,\n")
    out = tmp_path / "out.mmdb"
    assert cli.main(["geo", "build", str(src), str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: {src}:2: country: 'XX1' is not an ISO 3166-1 alpha-2 code like DE\n"
    )
    assert not out.exists()


def test_build_is_byte_identical_for_the_same_rows(tmp_path: Path) -> None:
    """The same rows, in any order, with the same build epoch give a byte-identical file."""
    rows = ROWS.splitlines(keepends=True)
    first = build(tmp_path, "".join(rows), "first")
    random.Random(7).shuffle(rows)
    second = build(tmp_path, "".join(rows), "second")
    assert first.read_bytes() == second.read_bytes()


def test_build_epoch_comes_from_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --build-epoch, $SOURCE_DATE_EPOCH dates the file (reproducible builds)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    out = tmp_path / "dated.mmdb"
    assert cli.main(["geo", "build", str(write_csv(tmp_path, ROWS)), str(out)]) == 0
    assert open_country_db(out).info.build_epoch == 1700000000


def test_lookup_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`geo lookup` prints kind, country and network per address, and flags bad input."""
    db = build(tmp_path)
    argv = ["geo", "lookup", "--geoip", str(db), "--asn", str(db)]
    status = cli.main([*argv, "3.120.0.1", "::ffff:41.0.0.1", "10.0.0.1", "8.8.8.8", "nope"])
    out = capsys.readouterr()
    assert status == 1
    assert out.out.splitlines() == [
        '3.120.0.1  public  country=DE  asn=16509  org="Amazon.com, Inc."',
        "41.0.0.1  public  country=ZA",
        "10.0.0.1  private",
        "8.8.8.8  unlisted",
    ]
    assert out.err.splitlines() == [
        f"# country+asn database {db}: {DATABASE_TYPE}, built 2026-11-01",
        "error: 'nope' is not an IP address",
    ]
    assert cli.main([*argv, "--json", "1.1.1.1"]) == 0
    assert capsys.readouterr().out == (
        '{"ip": "1.1.1.1", "kind": "unlisted", "country": null, "asn": 13335,'
        ' "as_org": "Cloudflare, Inc."}\n'
    )


def test_lookup_command_with_a_bad_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`geo lookup` on a missing database prints the ConfigError and exits 1."""
    missing = tmp_path / "nope.mmdb"
    assert cli.main(["geo", "lookup", "--geoip", str(missing), "1.2.3.4"]) == 1
    assert capsys.readouterr().err == f"error: {missing}: no such file\n"


# --- the demo data --------------------------------------------------------------------


def test_demo_csv_covers_what_the_demo_needs() -> None:
    """geo/demo.csv parses and has the countries and hosting networks the demo talks about."""
    rows = read_csv(demo_csv_path())
    countries = {r.country for r in rows}
    assert {"US", "GB", "DE", "FR", "JP", "BR", "IN", "CU", "IR", "KP", "SY", "RU", "CN"} <= (
        countries
    )
    assert {"NL", "IT", "ES", "PL", "SE", "FI"} <= countries  # a few more EU members
    assert {16509, 14061, 16276, 24940, 9009} <= {r.asn for r in rows}
    assert {r.network.version for r in rows} == {4, 6}


def test_demo_database_is_built_once_and_cached(tmp_path: Path) -> None:
    """demo_database() builds into the cache dir, reuses the build, and drops stale ones."""
    stale = tmp_path / "demo-0000000000000000.mmdb"
    stale.write_bytes(b"old")
    path = demo_database(tmp_path)
    assert path.parent == tmp_path
    assert not stale.exists()
    mtime = path.stat().st_mtime_ns
    assert demo_database(tmp_path) == path
    assert path.stat().st_mtime_ns == mtime
    resolver = load_resolver(path, path)
    assert resolver.locate(ip("175.45.176.1")).country == "KP"
    assert resolver.locate(ip("2a01:4f8::1")).asn == 24940
