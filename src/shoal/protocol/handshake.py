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
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from shoal.errors import HandshakeError
from shoal.ids import sha256
from shoal.protocol.messages import Auth, Hello

__all__ = [
    "AUTH_DOMAIN",
    "Role",
    "auth_transcript",
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
