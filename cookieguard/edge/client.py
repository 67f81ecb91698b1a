"""Who is asking: the client address cookieguard budgets by and reports upstream.

The socket peer is the client, unless the peer is one of `limits.trusted_proxies` (a load
balancer in front of cookieguard). Then the client is the right-most `X-Forwarded-For` entry that
is not itself a trusted proxy: every hop appends the address it saw, so entries to the left of
the last trusted hop were written by the client and prove nothing (docs/security.md "Abuse limits").

Pure: no request objects, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from cookieguard.config import IPNetwork


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:1234", as some proxies write it
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:1234"
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(address: str | None, trusted: Sequence[IPNetwork]) -> bool:
    if not trusted or not address:
        return False
    ip = parse_ip(address)
    return ip is not None and any(ip in network for network in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the socket peer, or, behind a trusted proxy, the right-most
    `X-Forwarded-For` entry that is not a trusted proxy. `forwarded_for` holds the header's values
    as received (several headers or comma-separated lists). An entry that is not an IP address
    ends the walk: the hop that wrote it is not one we trust to write addresses."""
    if not is_trusted(peer, trusted):
        return _normal(peer) if peer else "unknown"
    entries = [e.strip() for value in forwarded_for for e in value.split(",") if e.strip()]
    client = peer or "unknown"
    for entry in reversed(entries):
        ip = parse_ip(entry)
        if ip is None:
            break
        client = str(ip)
        if not any(ip in network for network in trusted):
            break
    return _normal(client)


def _normal(address: str) -> str:
    ip = parse_ip(address)
    return str(ip) if ip is not None else address
