"""Vetting addresses learnt from peers: one spelling per address, nothing a node must not dial."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.transport.addresses import (
    AddressError,
    is_loopback_host,
    normalize_address,
    printable,
)


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("127.0.0.1:47600", "127.0.0.1:47600"),
        ("10.1.2.3:1", "10.1.2.3:1"),
        ("[::1]:7000", "[::1]:7000"),
        ("[2001:DB8:0:0::1]:7000", "[2001:db8::1]:7000"),
        ("[::ffff:192.0.2.1]:7000", "192.0.2.1:7000"),  # IPv4-mapped: one spelling
        ("Node-1.Example.ORG:7000", "node-1.example.org:7000"),
        ("node.example.org.:7000", "node.example.org:7000"),
        ("localhost:7000", "localhost:7000"),
        ("169.254.1.1:7000", "169.254.1.1:7000"),  # link-local IPv4 works on a LAN
        ("1.2.3.4:65535", "1.2.3.4:65535"),
    ],
)
def test_good_addresses_have_one_canonical_spelling(text: str, canonical: str) -> None:
    assert normalize_address(text) == canonical
    assert normalize_address(canonical) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage-no-port",
        "127.0.0.1",
        ":7000",
        "host:",
        "127.0.0.1:047600",  # leading zero: the same port spelled twice
        "127.0.0.1:0",
        "127.0.0.1:99999",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        "0.0.0.0:7000",
        "[::]:7000",
        "224.0.0.1:7000",  # multicast
        "[ff02::1]:7000",
        "255.255.255.255:7000",  # broadcast
        "240.0.0.1:7000",  # reserved
        "[fe80::1]:7000",  # link-local IPv6 needs an interface
        "[fe80::1%eth0]:7000",
        "::1:7000",  # IPv6 without brackets
        "[127.0.0.1]:7000",
        "[not-v6]:7000",
        "01.2.3.4:7000",
        "1.2.3:7000",
        "999.1.1.1:7000",
        "a" * 240 + ".example:7000",  # a 240-character label
        ("a" * 60 + ".") * 5 + "org:7000",  # a 300-character name
        "-bad.example:7000",
        "bad_.example:7000",
        "bad..example:7000",
        "évil.example:7000",
        "evil\n.example:7000",
        "evil example:7000",
    ],
)
def test_bad_addresses_are_refused_with_a_reason(text: str) -> None:
    with pytest.raises(AddressError) as info:
        normalize_address(text)
    reason = str(info.value)
    assert reason
    assert "\n" not in reason


@pytest.mark.parametrize(
    "text", ["127.0.0.1:7000", "127.9.9.9:7000", "[::1]:7000", "localhost:7000", "a.localhost:1"]
)
def test_loopback_is_refused_unless_allowed(text: str) -> None:
    assert normalize_address(text, allow_loopback=True)
    with pytest.raises(AddressError, match="loopback"):
        normalize_address(text, allow_loopback=False)


def test_loopback_hosts() -> None:
    assert is_loopback_host("127.0.0.1")
    assert is_loopback_host("::1")
    assert is_loopback_host("::ffff:127.0.0.1")
    assert is_loopback_host("LOCALHOST")
    assert not is_loopback_host("10.0.0.1")
    assert not is_loopback_host("example.org")


@given(st.text(max_size=300))
def test_any_text_is_either_refused_or_canonical(text: str) -> None:
    try:
        canonical = normalize_address(text)
    except AddressError:
        return
    assert normalize_address(canonical) == canonical
    assert len(canonical) <= 261


def test_printable_cuts_and_masks() -> None:
    assert printable("a\nb\x00c") == "a?b?c"
    assert printable("x" * 100, limit=10) == "x" * 10 + "..."
