"""The audit stream in Redis: its default key, and the field each entry keeps its record in.

Writers (the Redis sinks, `audit generate`) and readers (`audit verify`, `audit
tail`, the rollup consumer) all name the stream and the field through these.
"""

from __future__ import annotations

STREAM = "dg:audit"
# Each entry holds one record, as canonical JSON, in this field.
RECORD_FIELD = "record"
