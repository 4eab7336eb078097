"""Handshake cryptography: the AUTH transcript, its signature and its network MAC (sans-I/O).

How it works: after both HELLOs, each side signs a transcript that binds everything the
handshake agreed on: a fixed domain label, the signer's role, the hash of the listener's TLS
certificate (channel binding: a relay that terminates TLS itself presents another certificate,
so a signature it forwards does not verify), both nonces (freshness), both public keys, both
node ids and both network names. Every part is length-prefixed (u32 big-endian), so no two
different transcripts encode to the same bytes. With a network secret, AUTH also carries
HMAC-SHA256(secret, transcript), so a node with a valid key but without the secret is refused.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal import defaults
from shoal.errors import HandshakeError
from shoal.ids import sha256, short_id
from shoal.protocol.messages import MAX_NETWORK_LENGTH, Auth, Hello
from shoal.protocol.schema import safe_text

__all__ = [
    "AUTH_DOMAIN",
    "LocalNode",
    "Role",
    "auth_transcript",
    "check_hello",
    "node_id_for",
    "public_key_bytes",
    "sign_auth",
    "verify_auth",
]

#: Domain separation label: these signatures can never be mistaken for another use of the key.
AUTH_DOMAIN: Final = b"shoal/auth/v1"
_U32: Final = struct.Struct(">I")


class Role(enum.Enum):
    """Which end of the TCP connection a side is."""

    DIALER = "dialer"
    LISTENER = "listener"


def public_key_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``private_key``."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def node_id_for(public_key: bytes) -> bytes:
    """Node ID = SHA-256 of the raw public key."""
    return sha256(public_key)


@dataclass(frozen=True)
class LocalNode:
    """This node as the handshake presents it.

    Attributes:
        private_key: The node's Ed25519 key.
        listen_addrs: ``host:port`` addresses other nodes can dial (at most 16).
        network: The network name; both sides must use the same.
        network_secret: Shared secret of a closed network, or ``None`` for an open one.
    """

    private_key: Ed25519PrivateKey
    listen_addrs: tuple[str, ...] = ()
    network: str = defaults.OPEN_NETWORK
    network_secret: bytes | None = None

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return public_key_bytes(self.private_key)

    @property
    def node_id(self) -> bytes:
        """SHA-256 of the raw public key."""
        return node_id_for(self.public_key)


def check_hello(
    hello: Hello,
    local: LocalNode,
    role: Role,
    *,
    listener_public_key: bytes | None,
    expected_peer_id: bytes | None,
) -> None:
    """Check the peer's HELLO (its version was checked already).

    Args:
        hello: The peer's HELLO.
        local: This node.
        role: This side's role.
        listener_public_key: Dialer: the key of the listener's TLS certificate.
        expected_peer_id: The node id the peer must have, when known.

    Raises:
        HandshakeError: ``wrong-network``, ``invalid-node-id``, ``self-connection``,
            ``key-mismatch`` or ``wrong-peer``.
    """
    if hello.network != local.network:
        raise HandshakeError(
            f"the peer is in network '{safe_text(hello.network, MAX_NETWORK_LENGTH)}', this "
            f"node in '{safe_text(local.network, MAX_NETWORK_LENGTH)}'; use the same network "
            "name on both",
            code="wrong-network",
        )
    if node_id_for(hello.public_key) != hello.node_id:
        raise HandshakeError(
            "the peer's node id is not the SHA-256 of its public key", code="invalid-node-id"
        )
    if hello.node_id == local.node_id:
        raise HandshakeError(
            "this node connected to itself (one of its peer addresses is its own)",
            code="self-connection",
        )
    if role is Role.DIALER and hello.public_key != listener_public_key:
        raise HandshakeError(
            "the peer's HELLO key differs from the key of its TLS certificate",
            code="key-mismatch",
        )
    if expected_peer_id is not None and hello.node_id != expected_peer_id:
        raise HandshakeError(
            f"expected node {short_id(expected_peer_id)} but the peer is node "
            f"{short_id(hello.node_id)}; the address now belongs to another node",
            code="wrong-peer",
        )


def auth_transcript(role: Role, listener_cert_hash: bytes, dialer: Hello, listener: Hello) -> bytes:
    """The bytes the side ``role`` signs (and MACs) in its AUTH.

    Args:
        role: The role of the signer.
        listener_cert_hash: SHA-256 of the listener's TLS certificate (DER).
        dialer: The dialer's HELLO.
        listener: The listener's HELLO.
    """
    parts = (
        AUTH_DOMAIN,
        role.value.encode("ascii"),
        listener_cert_hash,
        dialer.nonce,
        listener.nonce,
        dialer.public_key,
        listener.public_key,
        dialer.node_id,
        listener.node_id,
        dialer.network.encode("utf-8"),
        listener.network.encode("utf-8"),
    )
    return b"".join(_U32.pack(len(part)) + part for part in parts)


def _mac(secret: bytes, transcript: bytes) -> bytes:
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def sign_auth(
    role: Role,
    private_key: Ed25519PrivateKey,
    listener_cert_hash: bytes,
    dialer: Hello,
    listener: Hello,
    *,
    network_secret: bytes | None = None,
) -> Auth:
    """Make the AUTH message of the side ``role``.

    Args:
        role: The role of the signer (this side).
        private_key: This side's node key.
        listener_cert_hash: SHA-256 of the listener's TLS certificate.
        dialer: The dialer's HELLO.
        listener: The listener's HELLO.
        network_secret: The closed network's shared secret, if any (adds the MAC).
    """
    transcript = auth_transcript(role, listener_cert_hash, dialer, listener)
    mac = None if network_secret is None else _mac(network_secret, transcript)
    return Auth(signature=private_key.sign(transcript), mac=mac)


def verify_auth(
    auth: Auth,
    role: Role,
    public_key: bytes,
    listener_cert_hash: bytes,
    dialer: Hello,
    listener: Hello,
    *,
    network_secret: bytes | None = None,
) -> None:
    """Check the AUTH sent by the side ``role``.

    Args:
        auth: The received AUTH.
        role: The role of the sender (the peer).
        public_key: The sender's raw public key.
        listener_cert_hash: SHA-256 of the listener's TLS certificate.
        dialer: The dialer's HELLO.
        listener: The listener's HELLO.
        network_secret: This side's network secret; when set, a valid MAC is required.

    Raises:
        HandshakeError: Code ``bad-signature`` or ``wrong-network-secret``.
    """
    transcript = auth_transcript(role, listener_cert_hash, dialer, listener)
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(auth.signature, transcript)
    except (InvalidSignature, ValueError) as exc:
        raise HandshakeError(
            f"the {role.value}'s AUTH signature does not verify against its public key "
            "and this connection: the peer does not hold its key, or a relay sits in between",
            code="bad-signature",
        ) from exc
    if network_secret is None:
        return  # an open network: a MAC from a closed-network peer is simply not checked
    if auth.mac is None:
        raise HandshakeError(
            f"the {role.value} sent no network MAC but this node is in a closed network: "
            "configure the same network secret on both nodes",
            code="wrong-network-secret",
        )
    if not hmac.compare_digest(auth.mac, _mac(network_secret, transcript)):
        raise HandshakeError(
            f"the {role.value}'s network MAC does not match: the two nodes have different "
            "network secrets; configure the same secret on both",
            code="wrong-network-secret",
        )
