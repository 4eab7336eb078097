"""Shared helpers for the protocol tests: keys, connection pairs and a fake link."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.protocol import (
    NEED_DATA,
    Connection,
    Event,
    LocalNode,
    Role,
)

CERT_HASH = hashlib.sha256(b"listener certificate").digest()


def make_key(seed: int) -> Ed25519PrivateKey:
    """A deterministic Ed25519 key, so failures reproduce."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"key %d" % seed).digest())


def make_local(seed: int, **kwargs: object) -> LocalNode:
    return LocalNode(make_key(seed), (f"127.0.0.1:{4000 + seed}",), **kwargs)  # type: ignore[arg-type]


def nonce(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


def make_pair(
    dialer_local: LocalNode | None = None,
    listener_local: LocalNode | None = None,
    **dialer_kwargs: object,
) -> tuple[Connection, Connection]:
    """A dialer and a listener Connection, with the listener's key as the 'certificate' key."""
    dialer_local = dialer_local or make_local(1)
    listener_local = listener_local or make_local(2)
    kwargs: dict[str, object] = {"listener_public_key": listener_local.public_key}
    kwargs.update(dialer_kwargs)
    dialer = Connection(
        Role.DIALER,
        dialer_local,
        nonce=nonce("dialer"),
        listener_cert_hash=CERT_HASH,
        **kwargs,  # type: ignore[arg-type]
    )
    listener = Connection(
        Role.LISTENER, listener_local, nonce=nonce("listener"), listener_cert_hash=CERT_HASH
    )
    return dialer, listener


def drain(conn: Connection) -> list[Event]:
    """Every event available now (stops at NEED_DATA)."""
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)


def transfer(src: Connection, dst: Connection) -> int:
    """Move what src queued into dst; return the byte count."""
    data = b"".join(src.data_to_send())
    if data:
        dst.receive_data(data)
    return len(data)


@dataclass
class Link:
    """Two connections joined back to back, like h11's ConnectionPair: pump until quiet."""

    dialer: Connection
    listener: Connection

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Exchange bytes until neither side has anything to send; return the events."""
        dialer_events: list[Event] = []
        listener_events: list[Event] = []
        while True:
            moved = transfer(self.dialer, self.listener)
            listener_events += drain(self.listener)
            moved += transfer(self.listener, self.dialer)
            dialer_events += drain(self.dialer)
            if not moved:
                return dialer_events, listener_events
