"""The plan: literal keys and hash tags, which counters a request touches, and their limits."""

from __future__ import annotations

from authz.metering.plan import (
    Counter,
    counter_key,
    hash_tag,
    plan_request,
    volume_key,
)
from tests.metering_support import compiled, plan_for

LIMITS = compiled(
    """
account: {requests: {1m: 20, 1d: 2000}, tokens: {1d: 100000}}
entity: {requests: {1h: 500}}
models: {"frontier-*": {account: {requests: {1m: 5}}, entity: {tokens: {1d: 9000}}},
         "*-2": {account: {requests: {1h: 50}}}}
anomaly: {action: throttle, throttle_factor: 0.3}
fail_open_fraction: 0.25
"""
)


def test_keys_are_literal_and_share_a_hash_tag_per_scope() -> None:
    """Keys follow dg:rl:{a:<account>}|{e:<entity>}:<req|tok>:<seconds>[:m:<pattern>]."""
    assert counter_key("account", "alice", "requests", 60) == "dg:rl:{a:alice}:req:60"
    assert counter_key("entity", "acme", "tokens", 86400) == "dg:rl:{e:acme}:tok:86400"
    assert (
        counter_key("account", "alice", "requests", 60, "frontier-*")
        == "dg:rl:{a:alice}:req:60:m:frontier-*"
    )
    assert volume_key("entity", "acme") == "dg:rl:{e:acme}:vol"


def test_an_id_with_braces_cannot_move_the_hash_tag() -> None:
    """Ids are validated upstream; anything else is percent-encoded inside the tag."""
    assert hash_tag("account", "a}b{c") == "{a:a%7Db%7Bc}"
    assert hash_tag("account", "user@example.com") == "{a:user@example.com}"


def test_a_request_touches_its_scopes_and_every_matching_model_rule() -> None:
    """frontier-2 matches both patterns; limits, throttled limits and costs are in the plan."""
    plan = plan_for(LIMITS, "alice", "acme", model="frontier-2", tokens=1200)
    assert plan.counters == (
        Counter("account-requests-1m", "account", "requests", 60, 20, 6, 1,
                "dg:rl:{a:alice}:req:60"),
        Counter("account-requests-1d", "account", "requests", 86400, 2000, 600, 1,
                "dg:rl:{a:alice}:req:86400"),
        Counter("account-tokens-1d", "account", "tokens", 86400, 100000, 30000, 1200,
                "dg:rl:{a:alice}:tok:86400"),
        Counter("entity-requests-1h", "entity", "requests", 3600, 500, 150, 1,
                "dg:rl:{e:acme}:req:3600"),
        Counter("account-requests-1m@frontier-*", "account", "requests", 60, 5, 1, 1,
                "dg:rl:{a:alice}:req:60:m:frontier-*"),
        Counter("entity-tokens-1d@frontier-*", "entity", "tokens", 86400, 9000, 2700, 1200,
                "dg:rl:{e:acme}:tok:86400:m:frontier-*"),
        Counter("account-requests-1h@*-2", "account", "requests", 3600, 50, 15, 1,
                "dg:rl:{a:alice}:req:3600:m:*-2"),
    )  # fmt: skip
    assert [(v.signal, v.key) for v in plan.volumes] == [
        ("volume_spike_account", "dg:rl:{a:alice}:vol"),
        ("volume_spike_entity", "dg:rl:{e:acme}:vol"),
    ]


def test_groups_split_the_plan_by_slot() -> None:
    """One group per hash tag: what one script call may touch on Redis Cluster."""
    plan = plan_for(LIMITS, "alice", "acme", model="small-1", tokens=10)
    assert [(g.tag, g.counters, g.volumes) for g in plan.groups()] == [
        ("{a:alice}", (0, 1, 2), (0,)),
        ("{e:acme}", (3,), (1,)),
    ]


def test_zero_cost_counters_are_left_out() -> None:
    """A request without a body is charged no tokens, so token budgets do not see it."""
    plan = plan_for(LIMITS, "alice", "acme", model=None, tokens=0)
    assert [c.name for c in plan.counters] == [
        "account-requests-1m",
        "account-requests-1d",
        "entity-requests-1h",
    ]


def test_the_local_plan_scales_every_limit_by_the_fail_open_fraction() -> None:
    """Fail-open limits are floor(limit * 0.25), never below 1, throttled ones too."""
    local = plan_for(LIMITS, "alice", "acme", model="frontier-2", tokens=5).local()
    assert [(c.limit, c.throttled) for c in local.counters] == [
        (5, 1),
        (500, 150),
        (25000, 7500),
        (125, 37),
        (1, 1),
        (2250, 675),
        (12, 3),
    ]


def test_plan_request_charges_the_body_estimate() -> None:
    """plan_request estimates tokens from the body members with the tier's default output."""
    limits = compiled("account: {tokens: {1d: 1000}}\ntoken_estimate: {default_output: 100}")
    body = {"model": "m", "messages": [{"role": "user", "content": "12345678"}]}
    plan = plan_request(limits, account="alice", entity="acme", model="m", body_fields=body)
    assert [c.cost for c in plan.counters] == [102]
    assert plan_request(limits, account="a", entity="e", model=None, body_fields={}).empty
