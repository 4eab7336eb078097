"""The peer book, the inbound admission and the node's own addresses: pure, no I/O."""

from __future__ import annotations

import pytest

from shoal.transport.addresses import OwnAddresses
from shoal.transport.book import PeerBook, PeerSource
from shoal.transport.limits import Admission, TransportLimits

OWN = b"\x00" * 32


def node(n: int) -> bytes:
    return n.to_bytes(32, "big")


def book(**limits: int) -> PeerBook:
    return PeerBook(OWN, TransportLimits(**limits), is_own_address=lambda a: a == "10.0.0.1:7000")


def test_learning_keeps_good_canonical_addresses_up_to_the_cap() -> None:
    peers = book(max_addresses_per_peer=2)
    result = peers.learn(
        node(1),
        [
            "garbage",
            "10.0.0.2:7000",
            "10.0.0.2:7000",
            "[::ffff:10.0.0.2]:7000",
            "10.0.0.3:1",
            "10.0.0.4:1",
            "10.0.0.1:7000",
        ],
        source=PeerSource.EXCHANGE,
        now=0.0,
    )
    assert result.new
    assert result.record is not None
    assert result.record.addresses == ["10.0.0.2:7000", "10.0.0.3:1"]
    assert [reason for _, reason in result.bad] == [
        "no port",
        "this node's own address",
    ]


def test_a_peer_with_no_good_address_is_not_taken_in() -> None:
    peers = book()
    result = peers.learn(node(1), ["0.0.0.0:7000", "x:0"], source=PeerSource.EXCHANGE, now=0.0)
    assert result.record is None
    assert len(peers) == 0
    assert len(result.bad) == 2


def test_the_node_itself_is_never_a_peer() -> None:
    peers = book()
    assert peers.learn(OWN, ["10.0.0.9:1"], source=PeerSource.EXCHANGE, now=0.0).record is None
    assert len(peers) == 0


def test_a_peers_own_announcement_replaces_what_others_said() -> None:
    peers = book()
    peers.learn(node(1), ["10.0.0.8:1"], source=PeerSource.EXCHANGE, now=0.0)
    peers.learn(node(1), ["10.0.0.9:1"], source=PeerSource.HELLO, now=0.0, authoritative=True)
    record = peers.get(node(1))
    assert record is not None
    assert record.addresses == ["10.0.0.9:1"]
    # An announcement with nothing usable keeps what we had.
    peers.learn(node(1), ["0.0.0.0:1"], source=PeerSource.HELLO, now=0.0, authoritative=True)
    assert record.addresses == ["10.0.0.9:1"]


def test_what_one_peer_tells_us_is_capped_until_we_reach_those_peers() -> None:
    peers = book(max_learnt_per_peer=3)
    teller = node(99)
    results = [
        peers.learn(node(n), [f"10.0.1.{n}:1"], source=PeerSource.EXCHANGE, now=0.0, via=teller)
        for n in range(1, 6)
    ]
    assert [r.refused for r in results] == [None, None, None, *["max_learnt_per_peer"] * 2]
    assert peers.learnt_from(teller) == 3
    peers.connected(node(1))  # reached: no longer charged to the teller
    assert peers.learnt_from(teller) == 2
    peers.forget(node(2))
    assert peers.learnt_from(teller) == 1
    assert (
        peers.learn(node(6), ["10.0.1.6:1"], source=PeerSource.EXCHANGE, now=0.0, via=teller).record
        is not None
    )


def test_the_book_is_capped_but_a_connected_peer_evicts_the_longest_unreachable() -> None:
    peers = book(max_known_peers=3)
    for n, now in ((1, 10.0), (2, 5.0), (3, 20.0)):
        peers.learn(node(n), [f"10.0.1.{n}:1"], source=PeerSource.EXCHANGE, now=now)
    refused = peers.learn(node(4), ["10.0.1.4:1"], source=PeerSource.EXCHANGE, now=30.0)
    assert refused.refused == "max_known_peers"
    record, evicted = peers.connected(node(5))
    assert evicted is not None
    assert evicted.node_id == node(2)  # unreachable since 5.0, the longest
    assert record.verified
    assert sorted(r.node_id for r in peers.records()) == [node(1), node(3), node(5)]


def test_expired_peers_are_the_unreachable_ones_past_the_delay_but_never_bootstrap() -> None:
    peers = book()
    peers.learn(node(1), ["10.0.1.1:1"], source=PeerSource.EXCHANGE, now=0.0)
    peers.learn(node(2), ["10.0.1.2:1"], source=PeerSource.BOOTSTRAP, now=0.0)
    peers.get(node(2)).bootstrap = True  # type: ignore[union-attr]
    peers.learn(node(3), ["10.0.1.3:1"], source=PeerSource.EXCHANGE, now=50.0)
    assert [r.node_id for r in peers.expired(now=100.0, after=100.0)] == [node(1)]
    record, _ = peers.connected(node(1))
    assert peers.expired(now=1000.0, after=100.0) == [peers.get(node(3))]
    peers.disconnected(record, now=1000.0)
    assert record.unreachable_since == 1000.0


def test_admission_closes_what_is_over_each_limit() -> None:
    limits = TransportLimits(
        max_connections=10, max_pending=3, max_pending_per_address=2, max_connections_per_address=1
    )
    admission = Admission(limits)

    def refusal(host: str, established: int = 0, from_host: int = 0) -> str | None:
        found = admission.refusal(host, established=established, established_from_host=from_host)
        return found[0] if found else None

    assert refusal("a", established=10) == "max_connections"
    assert refusal("a", from_host=1) == "max_connections_per_address"
    admission.begin("a")
    admission.begin("a")
    assert refusal("a") == "max_pending_per_address"
    assert refusal("b") is None
    admission.begin("b")
    assert refusal("c") == "max_pending"
    admission.end("a")
    assert refusal("c") is None
    assert admission.pending == 2


@pytest.mark.parametrize(
    ("listen", "address", "ours"),
    [
        ("127.0.0.1:7000", "127.0.0.1:7000", True),
        ("127.0.0.1:7000", "localhost:7000", True),
        ("127.0.0.1:7000", "[::1]:7000", True),
        ("127.0.0.1:7000", "127.0.0.1:7001", False),
        ("0.0.0.0:7000", "127.0.0.1:7000", True),
        ("0.0.0.0:7000", "10.0.0.5:7000", False),  # another machine on the usual port
        ("10.0.0.1:7000", "10.0.0.1:7000", True),
        ("10.0.0.1:7000", "127.0.0.1:7000", False),
    ],
)
def test_own_addresses(listen: str, address: str, ours: bool) -> None:
    own = OwnAddresses()
    own.add(listen)
    assert (address in own) is ours
