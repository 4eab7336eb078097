"""A hand-driven peer for end-to-end floods: our own sans-I/O protocol over a blocking socket.

A :class:`RoguePeer` is an insider: it holds the network secret (read from a member's data
dir, as anyone with an invite could), makes a fresh node key, dials a running node, completes
TLS and HELLO/AUTH like a real node, and from then on does only what a test tells it: queue
requests and send them. It never reads after the handshake unless asked, so whatever the node
answers piles up in the kernel's receive buffer and then in the node's own send path: the
node must hold itself back.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import termios
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shoal.ids import encode_id, sha256
from shoal.node.network import NetworkMembership
from shoal.protocol import (
    NEED_DATA,
    Connection,
    HandshakeComplete,
    LocalNode,
    Message,
    Role,
    node_id_for,
    public_key_bytes,
)
from shoal.transport.identity import certificate_public_key
from shoal.transport.tls import client_context

__all__ = ["RoguePeer", "split_address"]

HANDSHAKE_TIMEOUT = 30.0
"""Bound on TCP connect, TLS and HELLO/AUTH (a loaded node takes well under a second)."""


def split_address(address: str) -> tuple[str, int]:
    """``("127.0.0.1", port)`` of a node's ``127.0.0.1:port`` address."""
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1", address
    return host, int(port)


class RoguePeer:
    """One authenticated connection to a node, driven by hand (see the module docstring).

    Args:
        address: The node's peer address (``127.0.0.1:port``).
        network: The node's network (name and secret), e.g. from ``load_data_dir``.
    """

    def __init__(self, address: str, network: NetworkMembership) -> None:
        self.key = Ed25519PrivateKey.generate()
        local = LocalNode(self.key, (), network.name, network.secret)
        raw = socket.create_connection(split_address(address), timeout=HANDSHAKE_TIMEOUT)
        try:
            self.sock = client_context().wrap_socket(raw)
        except BaseException:
            raw.close()
            raise
        try:
            cert = self.sock.getpeercert(binary_form=True)
            assert cert is not None, "the node presented no certificate"
            self.conn = Connection(
                Role.DIALER,
                local,
                nonce=os.urandom(32),
                listener_cert_hash=sha256(cert),
                listener_public_key=certificate_public_key(cert),
            )
            self._handshake()
        except BaseException:
            self.sock.close()
            raise

    def _handshake(self) -> None:
        self.conn.start()
        while True:
            event = self.conn.next_event()
            self.flush()  # what processing the last bytes queued (our AUTH)
            if isinstance(event, HandshakeComplete):
                return
            assert event is NEED_DATA, f"unexpected {type(event).__name__} in the handshake"
            data = self.sock.recv(65536)
            assert data, "the node closed the connection during the handshake"
            self.conn.receive_data(data)

    @property
    def node_id(self) -> str:
        """This peer's node ID, in the text form ``shoal peers`` shows."""
        return encode_id(node_id_for(public_key_bytes(self.key)))

    def flush(self) -> None:
        """Send what the connection has queued (blocks while the node does not read)."""
        data = b"".join(self.conn.data_to_send())
        if data:
            self.sock.sendall(data)

    def send_requests(self, messages: Iterable[Message]) -> None:
        """Queue and send requests; their answers are never read."""
        for message in messages:
            self.conn.send_request(message)
        self.flush()

    def unread_bytes(self) -> int:
        """Bytes the node sent that sit unread in this socket's kernel receive buffer."""
        buf = fcntl.ioctl(self.sock.fileno(), termios.FIONREAD, struct.pack("i", 0))
        value: int = struct.unpack("i", buf)[0]
        return value

    def close(self) -> None:
        self.sock.close()
