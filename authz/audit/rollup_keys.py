"""Where the audit rollups live in Redis: key layout, buckets and retention (pure functions).

The queries (authz.audit.queries) read only these keys, never the records, so
their cost depends on the window and on how many distinct accounts, entities,
countries and networks it saw, not on how many records there were.

Layout (g is `h` or `d`; bucket is UTC `YYYYMMDDHH` or `YYYYMMDD`; "(none)"
stands for an empty value; `asn` 0 means unknown):

    {dg:audit}:roll:<g>:<bucket>:total        HASH  req deny tok sig
    {dg:audit}:roll:<g>:<bucket>:<dim>:<m>    ZSET  member = the dimension's value
        dim: account | entity | country | asn;  m: req | deny | tok
    {dg:audit}:roll:<g>:<bucket>:cc:<CC>:<m>  ZSET  member = "<account>|<entity>"
        m: req | deny | tok | sig             (who used the model from country CC)
    {dg:audit}:acct:<account>:<g>:<bucket>    HASH  req deny tok sig cc:<CC> net:<network>
        asn:<n> reason:<r> sig:<name> wd:<would_deny>, and, overwritten by the
        latest record, @entity @tier @kyc @kyc_country
    {dg:audit}:roll:asn-org                   HASH  asn -> as_org (kept as long as days)
    {dg:audit}:roll:stats                     HASH  applied invalid deleted expired
                                                    applied:<consumer> (never expires)

`req` counts records, `deny` those whose action is deny (allowed = req - deny;
dry-run allows count as allowed and carry `wd:`), `tok` sums estimated tokens,
`sig` counts records that raised at least one signal.

Every key expires at its bucket's end plus the retention of its granularity
(hours 14 days, days 400 days by default), so TTLs follow the records' time,
not the time they were rolled up; records older than both retentions are
counted as `expired` and skipped.

On Redis Cluster every rollup key carries the stream's hash tag, `{dg:audit}`,
so they all live in the stream's slot: the script that acknowledges entries
and updates rollups runs on one node, atomically.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime

# The hash tag puts every rollup key in the stream's slot ("dg:audit" hashes as itself), so
# on Redis Cluster the batch script can touch them all on the node that holds the stream.
PREFIX = "{dg:audit}:roll"
ACCOUNT_PREFIX = "{dg:audit}:acct"
ASN_ORG_KEY = f"{PREFIX}:asn-org"
STATS_KEY = f"{PREFIX}:stats"
WAL_PREFIX = f"{PREFIX}:wal"
WAL_INDEX_KEY = f"{PREFIX}:wal-index"
DIMENSIONS = ("account", "entity", "country", "asn")
META_FIELDS = ("@entity", "@tier", "@kyc", "@kyc_country")
NONE = "(none)"
HOUR, DAY = "h", "d"
BUCKET_FORMAT = {HOUR: "%Y%m%d%H", DAY: "%Y%m%d"}
BUCKET_SECONDS = {HOUR: 3600, DAY: 86400}
DAY_S = 86400


def bucket_name(granularity: str, when: float) -> str:
    """The bucket (UTC) of an epoch time: YYYYMMDDHH for hours, YYYYMMDD for days."""
    return time.strftime(BUCKET_FORMAT[granularity], time.gmtime(when))


def bucket_start(granularity: str, name: str) -> int:
    """Epoch seconds at which a bucket begins."""
    return calendar.timegm(time.strptime(name, BUCKET_FORMAT[granularity]))


def total_key(granularity: str, bucket: str) -> str:
    """The per-bucket totals hash."""
    return f"{PREFIX}:{granularity}:{bucket}:total"


def dim_key(granularity: str, bucket: str, dim: str, measure: str) -> str:
    """The per-bucket ZSET of one dimension (account, entity, country, asn) and measure."""
    return f"{PREFIX}:{granularity}:{bucket}:{dim}:{measure}"


def country_key(granularity: str, bucket: str, country: str, measure: str) -> str:
    """The per-bucket ZSET of `account|entity` pairs seen from one country."""
    return f"{PREFIX}:{granularity}:{bucket}:cc:{country}:{measure}"


def account_key(account: str, granularity: str, bucket: str) -> str:
    """The per-bucket detail hash of one account."""
    return f"{ACCOUNT_PREFIX}:{account}:{granularity}:{bucket}"


def hour_bucket(stamp: str) -> str:
    """The hour bucket of an RFC 3339 time; the canonical `...Z` form needs no parsing."""
    if len(stamp) >= 20 and stamp[-1] == "Z" and stamp[10] == "T":
        name = stamp[0:4] + stamp[5:7] + stamp[8:10] + stamp[11:13]
        if name.isdigit():
            return name
    when = datetime.fromisoformat(stamp)
    if when.tzinfo is None:
        raise ValueError(f"time without a UTC offset: {stamp!r}")
    return when.astimezone(UTC).strftime(BUCKET_FORMAT[HOUR])


@dataclass(frozen=True, slots=True)
class Retention:
    """How long rollups are kept after their bucket ends, in seconds."""

    hours: float = 14 * DAY_S
    days: float = 400 * DAY_S

    def expire_at(self, granularity: str, bucket: str) -> int:
        """Epoch second at which a bucket's keys expire."""
        keep = self.hours if granularity == HOUR else self.days
        return int(bucket_start(granularity, bucket) + BUCKET_SECONDS[granularity] + keep)
