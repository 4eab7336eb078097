"""What a node tells peers: answers that always fit the protocol's limits."""

from __future__ import annotations

import secrets
from types import SimpleNamespace
from typing import Any

from shoal.node.serve import MAX_PEERS_SHARED, _peers_to_share
from shoal.protocol import Peers, encode_message
from shoal.transport.book import PeerRecord


class Up:
    """Stands for an open connection: ``PeerRecord.up`` only asks whether it is closed."""

    closed = SimpleNamespace(is_set=lambda: False)


def runtime_with(records: list[PeerRecord]) -> Any:
    return SimpleNamespace(manager=SimpleNamespace(records=lambda: records))


def test_a_peers_answer_with_the_longest_addresses_still_fits_a_frame() -> None:
    long_host = "h" * 230  # with the rest, 255 characters: the longest address allowed
    records = [
        PeerRecord(
            secrets.token_bytes(32),
            addresses=[f"{long_host}{i}{j}.example:65535" for j in range(4)],
            connection=Up(),  # type: ignore[arg-type]
        )
        for i in range(MAX_PEERS_SHARED * 2)
    ]
    asker = SimpleNamespace(peer_id=secrets.token_bytes(32))
    shared = _peers_to_share(runtime_with(records), asker)  # type: ignore[arg-type]
    assert 0 < len(shared) < MAX_PEERS_SHARED
    encode_message(1, Peers(peers=tuple(shared)))  # raises if the header were over 64 KiB


def test_short_addresses_share_up_to_the_cap_and_never_the_asker() -> None:
    asker_id = secrets.token_bytes(32)
    records = [
        PeerRecord(secrets.token_bytes(32), addresses=[f"10.0.0.{i % 250}:3000"], connection=Up())  # type: ignore[arg-type]
        for i in range(100)
    ] + [PeerRecord(asker_id, addresses=["10.1.1.1:1"], connection=Up())]  # type: ignore[arg-type]
    shared = _peers_to_share(runtime_with(records), SimpleNamespace(peer_id=asker_id))  # type: ignore[arg-type]
    assert len(shared) == MAX_PEERS_SHARED
    assert asker_id not in {p.node_id for p in shared}
