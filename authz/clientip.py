"""Which address is the client: Envoy's view, plus only the proxies we were told to trust.

By default the client is Envoy's source address (`attributes.source.address`),
the TCP peer or whatever Envoy's own `xff_num_trusted_hops` derived. When
proxies in front of Envoy append to X-Forwarded-For, the rules may trust a
number of hops, or proxies by CIDR; the chain (X-Forwarded-For entries, then
the source address) is walked from the right, so entries a client wrote on the
left can never be chosen over an address a trusted proxy saw.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from authz.facts import IPAddress, parse_ip

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientIpPolicy:
    """How far to trust X-Forwarded-For (compiled from the rules' `client_ip` section)."""

    trusted_hops: int = 0
    trusted_proxies: tuple[Network, ...] = ()

    @property
    def reads_xff(self) -> bool:
        """Whether X-Forwarded-For is consulted at all."""
        return self.trusted_hops > 0 or bool(self.trusted_proxies)


@dataclass(frozen=True, slots=True)
class ClientAddress:
    """The chosen client address and how it was chosen (for explain and the record)."""

    ip: IPAddress
    via: str  # "source", "xff-hops", "xff-proxies"
    xff_invalid: bool = False


def client_address(source: IPAddress, xff: str | None, policy: ClientIpPolicy) -> ClientAddress:
    """Pick the client address from Envoy's source and X-Forwarded-For under `policy`."""
    if not policy.reads_xff or not xff:
        return ClientAddress(source, "source")
    entries = [e.strip() for e in xff.split(",")][-64:]
    chain: list[IPAddress | None] = [parse_ip(e) for e in entries]
    # Envoy with use_remote_address appends its own view of the peer: the peer
    # itself, or, for a loopback peer, the host's own address. Either way that
    # entry stands for the source address, which is added below: drop it.
    if chain and (chain[-1] == source or source.is_loopback):
        chain.pop()
    chain.append(source)
    if policy.trusted_proxies:
        return _walk_trusted_proxies(chain, policy.trusted_proxies, source)
    # With fewer entries than trusted hops, the leftmost came from a trusted proxy.
    index = max(len(chain) - 1 - policy.trusted_hops, 0)
    picked = chain[index]
    if picked is None:
        # A trusted proxy would not write garbage: someone else did. Stay on the proxy's peer.
        return ClientAddress(_first_valid_right_of(chain, index) or source, "xff-hops", True)
    return ClientAddress(picked, "xff-hops")


def _walk_trusted_proxies(
    chain: list[IPAddress | None], proxies: tuple[Network, ...], source: IPAddress
) -> ClientAddress:
    for i in range(len(chain) - 1, -1, -1):
        ip = chain[i]
        if ip is None:
            return ClientAddress(_first_valid_right_of(chain, i) or source, "xff-proxies", True)
        if not any(ip in net for net in proxies):
            return ClientAddress(ip, "xff-proxies")
    # Every hop is a trusted proxy: the leftmost one is as far as we can see.
    return ClientAddress(chain[0] or source, "xff-proxies")


def _first_valid_right_of(chain: list[IPAddress | None], index: int) -> IPAddress | None:
    for ip in chain[index + 1 :]:
        if ip is not None:
            return ip
    return None


def client_network(ip: IPAddress) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address, e.g. `79.192.3.0/24`."""
    prefix = 24 if ip.version == 4 else 48
    host_bits = ip.max_prefixlen - prefix
    network = type(ip)(int(ip) >> host_bits << host_bits)  # ip_network() is 10x slower
    return f"{network}/{prefix}"
