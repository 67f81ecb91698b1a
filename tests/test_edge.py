"""cookieguard.edge.client: which address a request is budgeted by."""

from __future__ import annotations

import ipaddress

import pytest

from cookieguard.edge.client import client_address, is_trusted, parse_ip

LB = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def test_an_untrusted_peer_is_the_client_whatever_it_forwards() -> None:
    assert client_address("203.0.113.7", ["198.51.100.1"], LB) == "203.0.113.7"
    assert client_address("203.0.113.7", ["198.51.100.1"], ()) == "203.0.113.7"


def test_behind_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() -> None:
    # The client wrote "1.2.3.4" itself; the load balancer appended what it saw.
    assert client_address("10.0.0.5", ["1.2.3.4, 203.0.113.7"], LB) == "203.0.113.7"
    assert client_address("10.0.0.5", ["1.2.3.4", "203.0.113.7, 10.1.1.1"], LB) == "203.0.113.7"


def test_only_trusted_hops_leaves_the_leftmost_hop() -> None:
    assert client_address("10.0.0.5", ["10.9.9.9, 10.1.1.1"], LB) == "10.9.9.9"
    assert client_address("10.0.0.5", [], LB) == "10.0.0.5"


def test_a_garbage_entry_ends_the_walk_at_the_last_address_seen() -> None:
    assert client_address("10.0.0.5", ["evil, 10.1.1.1"], LB) == "10.1.1.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("203.0.113.7:80", "203.0.113.7"),
    ],
)
def test_addresses_are_normalised(text: str, expected: str) -> None:
    assert str(parse_ip(text)) == expected


def test_is_trusted() -> None:
    assert is_trusted("fd00::1", LB)
    assert not is_trusted("not-an-ip", LB)
    assert not is_trusted("10.0.0.1", ())
