"""The routing table: pure, driven directly (property tests with hypothesis)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.dht.table import (
    RoutingTable,
    bucket_index,
    distance,
    random_id_in_bucket,
    subnet_of,
)

OWN = bytes(32)
ids = st.binary(min_size=32, max_size=32).filter(lambda b: b != OWN)


def node(n: int) -> bytes:
    return n.to_bytes(32, "big")


def in_bucket(index: int, n: int) -> bytes:
    """An ID in bucket ``index`` of OWN (all zeros): its highest set bit is 255 - index."""
    return ((1 << (255 - index)) | n).to_bytes(32, "big")


LAN = ("10.0.0.1:7000",)


@settings(max_examples=60)
@given(st.lists(ids, max_size=300), st.integers(1, 8), ids)
def test_buckets_hold_at_most_k_nodes_each_in_its_bucket_and_closest_is_exact(
    node_ids: list[bytes], k: int, target: bytes
) -> None:
    table = RoutingTable(OWN, k=k)
    for t, n in enumerate(node_ids):
        table.observe(n, LAN, float(t))
    contacts = list(table.contacts())
    assert len(contacts) == len(table) == len({c.node_id for c in contacts})
    assert all(size <= k for size in table.bucket_sizes().values())
    for c in contacts:
        assert c.node_id in table
        assert table.contact(c.node_id) is c
    # Each bucket holds the first k distinct nodes that arrived for it (old nodes are kept).
    first: dict[int, list[bytes]] = {}
    for n in dict.fromkeys(node_ids):
        first.setdefault(bucket_index(OWN, n), []).append(n)
    expected = {n for group in first.values() for n in group[:k]}
    assert {c.node_id for c in contacts} == expected
    brute = sorted(expected, key=lambda n: distance(n, target))[:5]
    assert [c.node_id for c in table.closest(target, 5)] == brute


@given(ids, st.integers(0, 255), st.integers(0, 2**32))
def test_a_random_id_in_bucket_i_shares_exactly_i_bits(own: bytes, index: int, seed: int) -> None:
    picked = random_id_in_bucket(own, index, random.Random(seed))
    assert bucket_index(own, picked) == index


def test_own_id_and_nodes_without_addresses_stay_out() -> None:
    table = RoutingTable(OWN)
    assert table.observe(OWN, LAN, 0.0).refused
    assert table.observe(node(1), (), 0.0).refused
    assert len(table) == 0
    with pytest.raises(ValueError, match="own routing table"):
        bucket_index(OWN, OWN)


def test_a_full_bucket_keeps_its_old_nodes_and_asks_to_check_the_stalest() -> None:
    table = RoutingTable(OWN, k=2, check_after=60.0)
    a, b, c = in_bucket(3, 1), in_bucket(3, 2), in_bucket(3, 3)
    assert table.observe(a, LAN, 0.0).added
    assert table.observe(b, LAN, 10.0).added
    # c waits as a replacement; a was heard from 30 s ago: no check yet.
    result = table.observe(c, LAN, 30.0)
    assert (result.added, result.check) == (False, None)
    assert c not in table
    # Later a is stale: the next news from c asks for a to be checked.
    assert table.observe(c, LAN, 61.0).check == a
    # a answers: it moves to the tail, c still waits, and b is now the stalest.
    table.observe(a, LAN, 62.0)
    assert [x.node_id for x in table.contacts()] == [b, a]
    # b fails: c takes its place at once.
    promoted = table.failed(b, 63.0)
    assert promoted is not None
    assert promoted.node_id == c
    assert {x.node_id for x in table.contacts()} == {a, c}


def test_a_failing_node_without_replacement_is_dropped_after_max_failures() -> None:
    table = RoutingTable(OWN, max_failures=3)
    a = node(5)
    table.observe(a, LAN, 0.0)
    assert table.failed(a, 1.0) is None
    assert table.failed(a, 2.0) is None
    assert a in table
    assert table.closest(a, 1, live_only=True) == []  # failing: not shared with others
    table.observe(a, LAN, 3.0)  # heard from again: failures reset
    entry = table.contact(a)
    assert entry is not None
    assert entry.failures == 0
    for t in range(3):
        table.failed(a, 4.0 + t)
    assert a not in table
    assert len(table) == 0


def test_removing_a_node_promotes_a_replacement() -> None:
    table = RoutingTable(OWN, k=1)
    a, b = in_bucket(0, 1), in_bucket(0, 2)
    table.observe(a, LAN, 0.0)
    table.observe(b, LAN, 1.0)
    assert table.remove(a)
    assert [c.node_id for c in table.contacts()] == [b]
    assert not table.remove(a)


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("203.0.113.7:7000", None),  # documentation range: not global
        ("8.8.8.8:53", "8.8.8.0/24"),
        ("[2001:4860:4860::8888]:53", "2001:4860:4860::/48"),
        ("[::ffff:8.8.4.4]:53", "8.8.4.0/24"),
        ("127.0.0.1:7000", None),
        ("10.1.2.3:7000", None),
        ("192.168.1.9:7000", None),
        ("100.64.0.1:7000", None),
        ("[fe80::1]:7000", None),
        ("example.org:7000", None),
    ],
)
def test_subnets_are_slash_24_and_slash_48_and_private_ranges_are_exempt(
    address: str, group: str | None
) -> None:
    assert subnet_of(address) == group


def test_at_most_two_nodes_of_one_public_slash_24_per_bucket() -> None:
    table = RoutingTable(OWN, k=20, max_per_subnet=2)
    results = [table.observe(in_bucket(2, n), (f"8.8.8.{n}:7000",), 0.0) for n in range(1, 6)]
    assert [r.added for r in results] == [True, True, False, False, False]
    assert results[2].refused == "subnet"
    # Another bucket has its own allowance; another /24 is fine in the same bucket.
    assert table.observe(in_bucket(3, 1), ("8.8.8.9:7000",), 0.0).added
    assert table.observe(in_bucket(2, 9), ("8.8.9.1:7000",), 0.0).added
    # The address a node connected from counts too, whatever it claims.
    refused = table.observe(in_bucket(2, 10), ("10.0.0.5:7000",), 0.0, seen_from="8.8.8.77:5000")
    assert refused.refused == "subnet"
    # Private and loopback addresses are exempt: a LAN or one host fills buckets freely.
    for n in range(20, 30):
        assert table.observe(in_bucket(4, n), (f"127.0.0.1:{7000 + n}",), 0.0).added


@settings(max_examples=40)
@given(st.lists(st.tuples(ids, st.integers(0, 3), st.sampled_from(["ok", "fail", "gone"]))))
def test_the_subnet_cap_and_bucket_size_hold_whatever_happens(
    events: list[tuple[bytes, int, str]],
) -> None:
    table = RoutingTable(OWN, k=4, max_per_subnet=2, check_after=0.0, max_failures=2)
    for t, (n, subnet, what) in enumerate(events):
        if what == "ok":
            table.observe(n, (f"8.8.{subnet}.{t % 250 + 1}:7000",), float(t))
        elif what == "fail":
            table.failed(n, float(t))
        else:
            table.remove(n)
        for index, size in table.bucket_sizes().items():
            assert size <= 4
            bucket = [c for c in table.contacts() if bucket_index(OWN, c.node_id) == index]
            for group in {g for c in bucket for g in c.groups}:
                assert sum(group in c.groups for c in bucket) <= 2
        assert len(table) == len(list(table.contacts()))


def test_stale_buckets_run_from_zero_to_the_deepest_filled_one() -> None:
    table = RoutingTable(OWN)
    assert table.stale_buckets(0.0, 600.0) == [0]
    table.observe(in_bucket(4, 1), LAN, 0.0)
    assert table.stale_buckets(0.0, 600.0) == [0, 1, 2, 3, 4]
    table.refreshed(in_bucket(2, 7), 100.0)
    assert table.stale_buckets(200.0, 600.0) == [0, 1, 3, 4]
    assert table.stale_buckets(700.0, 600.0) == [0, 1, 2, 3, 4]
    table.observe(in_bucket(40, 1), LAN, 0.0)
    assert table.stale_buckets(0.0, 600.0, deepest=15)[-1] == 15
