"""Choosing the client address: Envoy's source, trusted hops, trusted proxies."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from authz.clientip import ClientIpPolicy, client_address
from authz.facts import parse_ip

SOURCE = ipaddress.ip_address("198.18.0.9")
LB = ipaddress.ip_network("198.18.0.0/24")


def pick(xff: str | None, policy: ClientIpPolicy, source: str = "198.18.0.9") -> str:
    """The chosen address as text."""
    ip = parse_ip(source)
    assert ip is not None
    return str(client_address(ip, xff, policy).ip)


def test_default_ignores_x_forwarded_for() -> None:
    """With no trusted hop or proxy, X-Forwarded-For is never read."""
    assert pick("1.2.3.4", ClientIpPolicy()) == "198.18.0.9"


def test_trusted_hops_walk_from_the_right() -> None:
    """One trusted hop picks the address the load balancer appended, not the client's own."""
    one = ClientIpPolicy(trusted_hops=1)
    assert pick("5.6.7.8", one) == "5.6.7.8"
    assert pick("1.2.3.4, 5.6.7.8", one) == "5.6.7.8"
    # Envoy with use_remote_address appended the peer itself: it is not counted twice.
    assert pick("1.2.3.4, 5.6.7.8, 198.18.0.9", one) == "5.6.7.8"
    assert pick("5.6.7.8", ClientIpPolicy(trusted_hops=3)) == "5.6.7.8"


def test_envoys_own_entry_for_a_loopback_peer_is_dropped() -> None:
    """For a loopback peer Envoy appends the host's address; that entry is not a hop."""
    policy = ClientIpPolicy(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    assert pick("2.176.1.1,192.0.2.2", policy, source="127.0.0.1") == "2.176.1.1"
    assert pick("192.0.2.2", policy, source="127.0.0.1") == "127.0.0.1"


def test_trusted_proxies_skip_known_networks() -> None:
    """Trusted proxy CIDRs are skipped from the right; the first other address is the client."""
    policy = ClientIpPolicy(trusted_proxies=(LB,))
    assert pick("1.2.3.4, 5.6.7.8, 198.18.0.3", policy) == "5.6.7.8"
    assert pick(None, policy, source="5.6.7.8") == "5.6.7.8"
    assert pick("198.18.0.4", policy) == "198.18.0.4"


def test_garbage_entry_at_the_trusted_position() -> None:
    """A garbage entry where a trusted proxy would have written is not used, and is flagged."""
    ip = parse_ip("198.18.0.9")
    assert ip is not None
    chosen = client_address(ip, "nonsense", ClientIpPolicy(trusted_hops=1))
    assert str(chosen.ip) == "198.18.0.9" and chosen.xff_invalid


forged = st.lists(st.one_of(st.ip_addresses().map(str), st.text(max_size=20)), max_size=8).map(
    ", ".join
)


@given(forged, st.ip_addresses(v=4).filter(lambda ip: ip not in LB).map(str))
def test_forged_prefix_changes_nothing(prefix: str, real: str) -> None:
    """Whatever a client writes into X-Forwarded-For, the trusted chain's answer stays the same.

    (A client inside a trusted proxy network is itself trusted: excluded here.)
    """
    one = ClientIpPolicy(trusted_hops=1)
    proxies = ClientIpPolicy(trusted_proxies=(LB,))
    honest = f"{real}"
    forged_xff = f"{prefix}, {real}" if prefix else honest
    assert pick(forged_xff, one) == pick(honest, one) == real
    assert pick(forged_xff, proxies) == pick(honest, proxies)
    assert pick(forged_xff, ClientIpPolicy()) == "198.18.0.9"
