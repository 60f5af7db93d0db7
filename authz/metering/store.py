"""The one documented fault of a rate store (the RateStore protocol is in authz.protocols)."""

from __future__ import annotations


class StoreUnavailable(Exception):
    """The counter store cannot answer and the tier says `on_store_failure: fail_closed`."""
