"""Audit queries from rollups of a known set of records: exact numbers, windows, tables, JSON."""

from __future__ import annotations

import json
from calendar import timegm
from collections.abc import Iterator

import pytest
import redis

from authz.audit import queries as q
from authz.audit.render import format_timeline, format_usage
from authz.audit.window import QueryError, Window, make_window, parse_time, rfc3339
from authz.cli import main
from tests.audit_support import NOW, load_known

# The known set (tests/audit_support.py) spans 2099-11-18 .. 2099-11-21: a window of
# four whole days (96 hours) is read from daily buckets.
DAYS = ["--since", "2099-11-18", "--until", "2099-11-22"]


@pytest.fixture
def rolled(redis_url: str) -> Iterator[redis.Redis]:
    """A Redis holding the rollups of the known set."""
    with redis.Redis.from_url(redis_url) as client:
        load_known(client)
        yield client


def days_window() -> Window:
    """The four days of the known set."""
    return make_window("2099-11-18", "2099-11-22", NOW)


def rows(result: q.Usage) -> list[tuple[str, int, int, int, int]]:
    """Usage rows as (key, requests, allowed, denied, tokens)."""
    return [(r.key, r.requests, r.allowed, r.denied, r.tokens) for r in result.rows]


# --- windows ---------------------------------------------------------------------------


def test_durations_times_and_dates_parse() -> None:
    """`--since` takes 90m/24h/7d/2w back from now, RFC 3339 times (any offset) and bare dates."""
    assert parse_time("90m", NOW) == NOW - 5400
    assert parse_time("24h", NOW) == NOW - 86400
    assert parse_time("7d", NOW) == NOW - 7 * 86400
    assert parse_time("2w", NOW) == NOW - 14 * 86400
    assert parse_time("2099-11-20T10:00:00Z", NOW) == timegm((2099, 11, 20, 10, 0, 0))
    assert parse_time("2099-11-20T12:00:00+02:00", NOW) == timegm((2099, 11, 20, 10, 0, 0))
    assert parse_time("2099-11-20", NOW) == timegm((2099, 11, 20, 0, 0, 0))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("yesterday", "not a duration (90m, 24h, 7d) or an RFC 3339 time: 'yesterday'"),
        (
            "2099-11-20T10:00:00",
            "give a UTC offset (Z or +01:00) with the time: '2099-11-20T10:00:00'",
        ),
    ],
)
def test_bad_times_are_refused_with_their_text(text: str, message: str) -> None:
    """A time that is neither a duration nor an RFC 3339 time (with offset) is an error."""
    with pytest.raises(QueryError) as exc:
        parse_time(text, NOW)
    assert str(exc.value) == message


def test_windows_up_to_72_hours_use_hours_and_longer_ones_days() -> None:
    """72h (NOW on the hour) reads 72 hourly buckets; a second more switches to daily buckets."""
    hourly = make_window("72h", None, NOW)
    assert (hourly.granularity, len(hourly.buckets)) == ("h", 72)
    assert (hourly.buckets[0], hourly.buckets[-1]) == ("2099111812", "2099112111")
    daily = make_window(str(72 * 3600 + 1) + "s", None, NOW)
    assert daily.granularity == "d"
    assert daily.buckets == ("20991118", "20991119", "20991120", "20991121")
    forced = make_window("7d", None, NOW, "hour")
    assert (forced.granularity, len(forced.buckets)) == ("h", 168)


def test_edge_buckets_are_counted_whole() -> None:
    """A window starting and ending inside hours covers both edge hours entirely."""
    w = make_window("2099-11-20T10:30:00Z", "2099-11-20T12:10:00Z", NOW)
    assert w.buckets == ("2099112010", "2099112011", "2099112012")
    assert (rfc3339(w.start), rfc3339(w.end)) == (
        "2099-11-20T10:00:00Z",
        "2099-11-20T13:00:00Z",
    )
    with pytest.raises(QueryError, match="empty window"):
        make_window("1h", "2h", NOW)


# --- usage ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        (
            "account",
            [
                ("a1", 4, 3, 1, 1300),
                ("a2", 3, 3, 0, 125),
                ("(none)", 1, 0, 1, 0),
                ("a3", 1, 0, 1, 0),
            ],
        ),
        ("entity", [("e1", 7, 6, 1, 1425), ("(none)", 1, 0, 1, 0), ("e2", 1, 0, 1, 0)]),
        (
            "country",
            [("US", 5, 5, 0, 1420), ("DE", 2, 1, 1, 5), ("FR", 1, 0, 1, 0), ("IR", 1, 0, 1, 0)],
        ),
        (
            "asn",
            [
                ("7922", 5, 5, 0, 1420),
                ("16509", 2, 1, 1, 5),
                ("3215", 1, 0, 1, 0),
                ("58224", 1, 0, 1, 0),
            ],
        ),
    ],
)
def test_usage_by_each_dimension(
    rolled: redis.Redis, by: str, expected: list[tuple[str, int, int, int, int]]
) -> None:
    """Requests, allowed, denied and tokens per key; totals and shares over the whole window."""
    result = q.usage(rolled, days_window(), by, top=0)
    assert rows(result) == expected
    assert result.totals == q.Totals(requests=9, allowed=6, denied=3, tokens=1425)
    assert result.keys == len(expected)
    assert sum(r.share for r in result.rows) == pytest.approx(1.0)


def test_usage_top_n_keeps_the_largest_and_the_full_totals(rolled: redis.Redis) -> None:
    """`--top 2` shows the two busiest accounts; totals and key count still cover everything."""
    result = q.usage(rolled, days_window(), "account", top=2)
    assert rows(result) == [("a1", 4, 3, 1, 1300), ("a2", 3, 3, 0, 125)]
    assert result.rows[0].share == pytest.approx(4 / 9)
    assert (result.keys, result.totals.requests) == (4, 9)
    assert rolled.keys("{dg:audit}:tmp:*") == []  # the temporary unions are gone


def test_usage_by_asn_names_the_networks(rolled: redis.Redis) -> None:
    """ASN rows carry the AS organisation the records named."""
    result = q.usage(rolled, days_window(), "asn", top=2)
    assert [(r.key, r.org) for r in result.rows] == [
        ("7922", "COMCAST-7922"),
        ("16509", "AMAZON-02"),
    ]


def test_usage_over_hours_counts_only_those_hours(rolled: redis.Redis) -> None:
    """A 24-hour window (hourly buckets) sees the records of 2099-11-20 12:00 onwards only."""
    result = q.usage(rolled, make_window("24h", None, NOW), "account", top=0)
    assert result.window.granularity == "h"
    assert rows(result) == [("a1", 1, 1, 0, 1000)]


def test_usage_table_for_people(rolled: redis.Redis) -> None:
    """The table aligns its columns, right-aligns numbers and ends with a totals row."""
    text = format_usage(q.usage(rolled, days_window(), "country", top=3))
    assert text == (
        "usage by country, 2099-11-18T00:00:00Z .. 2099-11-22T00:00:00Z "
        "(4 daily buckets, edge buckets counted whole)\n"
        "\n"
        "COUNTRY              REQUESTS  ALLOWED  DENIED  TOKENS   SHARE\n"
        "US                          5        5       0   1,420   55.6%\n"
        "DE                          2        1       1       5   22.2%\n"
        "FR                          1        0       1       0   11.1%\n"
        "-------------------  --------  -------  ------  ------  ------\n"
        "total (4 countries)         9        6       3   1,425  100.0%\n"
        "(top 3 of 4; --top 0 for all)"
    )  # FR and IR tie at 1 request: the cut keeps names in order


# --- who --------------------------------------------------------------------------------


def test_who_lists_accounts_and_entities_seen_from_a_country(rolled: redis.Redis) -> None:
    """Accounts that called from the country with their entity, requests, tokens and signals."""
    result = q.who(rolled, days_window(), "us")
    assert result.country == "US"
    assert result.accounts == [
        q.WhoRow("a1", "e1", requests=3, allowed=3, denied=0, tokens=1300, signaled=1),
        q.WhoRow("a2", "e1", requests=2, allowed=2, denied=0, tokens=120, signaled=0),
    ]
    assert result.entities == [
        q.EntityRow("e1", accounts=2, requests=5, allowed=5, denied=0, tokens=1420, signaled=1)
    ]
    assert (result.total_accounts, result.totals.requests, result.signaled) == (2, 5, 1)


def test_who_counts_denials_and_signals_per_country(rolled: redis.Redis) -> None:
    """From DE: a1 was denied (with two signals on one request), a2 was allowed."""
    result = q.who(rolled, days_window(), "DE")
    assert [(r.account, r.requests, r.denied, r.tokens, r.signaled) for r in result.accounts] == [
        ("a1", 1, 1, 0, 1),
        ("a2", 1, 0, 5, 0),
    ]
    assert q.who(rolled, days_window(), "JP").total_accounts == 0


# --- account timeline ------------------------------------------------------------------


def test_account_timeline_per_hour(rolled: redis.Redis) -> None:
    """Each hour with activity: volume, countries, networks, ASNs, decisions, signals."""
    w = make_window("2099-11-20T09:00:00Z", "2099-11-20T12:00:00Z", NOW)
    result = q.account_timeline(rolled, w, "a1")
    assert (result.entity, result.tier) == ("e1", "(none)")
    assert len(result.buckets) == 1
    hour = result.buckets[0]
    assert hour == q.Activity(
        start="2099-11-20T10:00:00Z",
        requests=3,
        allowed=2,
        denied=1,
        tokens=300,
        signaled=2,
        countries={"US": 2, "DE": 1},
        networks={"1.1.1.0/24": 2, "2.2.2.0/24": 1},
        asns={"7922": 2, "16509": 1},
        reasons={"ok": 2, "rate_limited": 1},
        signals={"volume_spike_account": 2, "kyc-mismatch-unverified": 1},
        would_deny={},
    )
    assert result.as_orgs == {"7922": "COMCAST-7922", "16509": "AMAZON-02"}


def test_account_timeline_per_day_with_totals(rolled: redis.Redis) -> None:
    """Over days: a row per active day, and the window's sums (dry-run would-denies too)."""
    result = q.account_timeline(rolled, days_window(), "a1")
    assert [(b.start, b.requests, b.tokens) for b in result.buckets] == [
        ("2099-11-20T00:00:00Z", 3, 300),
        ("2099-11-21T00:00:00Z", 1, 1000),
    ]
    t = result.totals
    assert (t.requests, t.allowed, t.denied, t.tokens, t.signaled) == (4, 3, 1, 1300, 2)
    assert t.countries == {"US": 3, "DE": 1}
    assert t.networks == {"1.1.1.0/24": 3, "2.2.2.0/24": 1}
    assert t.reasons == {"ok": 3, "rate_limited": 1}
    assert t.would_deny == {"rate_limited": 1}


def test_account_timeline_for_people(rolled: redis.Redis) -> None:
    """The timeline table has one row per day and a summary naming countries, ASNs and signals."""
    text = format_timeline(q.account_timeline(rolled, days_window(), "a1"))
    lines = text.splitlines()
    assert lines[0].startswith("account a1 (entity e1, tier (none), kyc (none) in (none)), ")
    assert lines[2].split() == [
        "DAY", "REQUESTS", "DENIED", "TOKENS", "COUNTRIES", "NETS", "DECISIONS", "SIGNALS",
    ]  # fmt: skip
    assert lines[3].startswith("2099-11-20         3       1     300  US 2, DE 1")
    assert "networks:   1.1.1.0/24 3 · 2.2.2.0/24 1 (2 networks)" in lines
    assert "ASNs:       AS7922 COMCAST-7922 3 · AS16509 AMAZON-02 1" in lines
    assert "signals:    volume_spike_account 2 · kyc-mismatch-unverified 1" in lines
    assert "would deny: rate_limited 1" in lines


# --- command line ----------------------------------------------------------------------


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["audit", *argv, "--json"]) == 0
    data: dict[str, object] = json.loads(capsys.readouterr().out)
    return data


def test_usage_json_shape(
    rolled: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`usage --json`: the window, rows with their numbers and share, key count and totals."""
    data = _json(capsys, "usage", "--redis", redis_url, *DAYS, "--by", "entity", "--top", "1")
    assert data == {
        "query": "usage",
        "by": "entity",
        "window": {
            "since": "2099-11-18T00:00:00Z",
            "until": "2099-11-22T00:00:00Z",
            "granularity": "day",
            "from": "2099-11-18T00:00:00Z",
            "to": "2099-11-22T00:00:00Z",
            "buckets": 4,
        },
        "rows": [
            {
                "key": "e1",
                "requests": 7,
                "allowed": 6,
                "denied": 1,
                "tokens": 1425,
                "share": pytest.approx(7 / 9),
            }
        ],
        "keys": 3,
        "totals": {"requests": 9, "allowed": 6, "denied": 3, "tokens": 1425},
    }


def test_who_and_account_json_shapes(
    rolled: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`who --json` and `account --json` carry the same figures as the tables."""
    who = _json(capsys, "who", "--redis", redis_url, *DAYS, "--country", "IR")
    assert who["accounts"] == [
        {
            "account": "a3",
            "entity": "e2",
            "requests": 1,
            "allowed": 0,
            "denied": 1,
            "tokens": 0,
            "signaled": 0,
        }
    ]
    assert who["totals"] == {"requests": 1, "allowed": 0, "denied": 1, "tokens": 0, "signaled": 0}
    assert set(who) == {
        "query",
        "country",
        "window",
        "accounts",
        "entities",
        "total_accounts",
        "totals",
    }
    account = _json(capsys, "account", "a2", "--redis", redis_url, *DAYS)
    assert set(account) == {
        "query", "account", "entity", "tier", "kyc", "kyc_country", "window", "buckets", "totals",
        "as_orgs",
    }  # fmt: skip
    buckets = account["buckets"]
    assert isinstance(buckets, list)
    assert [(b["start"], b["requests"], b["countries"]) for b in buckets] == [
        ("2099-11-18T00:00:00Z", 1, {"DE": 1}),
        ("2099-11-20T00:00:00Z", 2, {"US": 2}),
    ]


def test_query_errors_exit_2(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad --since is reported on stderr with status 2, before Redis is touched."""
    status = main(["audit", "usage", "--redis", redis_url, "--since", "soon"])
    assert status == 2
    assert capsys.readouterr().err == (
        "distill-guard audit usage: not a duration (90m, 24h, 7d) or an RFC 3339 time: 'soon'\n"
    )


def test_record_times_need_their_offset() -> None:
    """A record's time is read with its offset; one without is refused, not read as local time."""
    from authz.audit.window import epoch_of

    assert epoch_of("2026-04-22T00:00:00Z") == 1776816000.0
    assert epoch_of("2026-04-22T02:00:00+02:00") == 1776816000.0
    with pytest.raises(ValueError, match="without a UTC offset"):
        epoch_of("2026-04-22T00:00:00")
    with pytest.raises(ValueError):
        epoch_of("yesterday")
