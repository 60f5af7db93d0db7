"""The audit trail: records, queue, sinks, hash chain, verification, rollups and queries."""
