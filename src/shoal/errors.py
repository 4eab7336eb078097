"""Every error Shoal raises on purpose.

The tree::

    ShoalError
    ├── ConfigError            bad data dir, config file or argument
    ├── ProtocolError          a peer or we broke the wire protocol
    │   ├── LocalProtocolError     we tried to send something invalid (a bug)
    │   └── RemoteProtocolError    the peer sent something invalid
    │       └── HandshakeError         HELLO/AUTH failed: version, key, signature, network
    ├── TransportError         a network operation failed
    │   ├── PeerUnavailable        no connection to that peer (down, refused, timed out)
    │   ├── RequestTimeout         a request got no answer in time
    │   └── AddressInUse           the listen address is taken by another program
    ├── NotFound               no such file, name or block
    ├── IntegrityError         bytes do not match their hash, or fail authentication
    ├── QuorumNotMet           a put could not place enough copies
    ├── InvalidCapability      a cap string that does not parse
    └── StorageError           the local disk failed us (full, read-only, ...)

Each message says what failed and, where there is one, what to do about it.
"""

from __future__ import annotations

__all__ = [
    "AddressInUse",
    "ConfigError",
    "HandshakeError",
    "IntegrityError",
    "InvalidCapability",
    "LocalProtocolError",
    "NotFound",
    "PeerUnavailable",
    "ProtocolError",
    "QuorumNotMet",
    "RemoteProtocolError",
    "RequestTimeout",
    "ShoalError",
    "StorageError",
    "TransportError",
]


class ShoalError(Exception):
    """Base class of every error Shoal raises on purpose."""


class ConfigError(ShoalError):
    """A data dir, config file or argument is missing or invalid."""


class ProtocolError(ShoalError):
    """The wire protocol was violated.

    ``code`` is the short machine-readable code carried in ERROR frames.
    """

    code: str = "protocol-error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow."""


class HandshakeError(RemoteProtocolError):
    """The HELLO/AUTH handshake failed (version, key, signature or network mismatch)."""

    code = "handshake-failed"


class TransportError(ShoalError):
    """A network operation failed."""


class PeerUnavailable(TransportError):
    """The peer cannot be reached right now."""


class RequestTimeout(TransportError):
    """A request got no answer within its timeout."""


class AddressInUse(TransportError):
    """The address to listen on is already taken."""


class NotFound(ShoalError):
    """No such file, name or block."""


class IntegrityError(ShoalError):
    """Data does not match its hash or fails authenticated decryption."""


class QuorumNotMet(ShoalError):
    """A put could not place enough acknowledged copies.

    ``placed`` maps each block ID (text form) to the node IDs (text form) that acknowledged it.
    """

    def __init__(self, message: str, *, placed: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.placed = placed or {}


class InvalidCapability(ShoalError):
    """A capability string is malformed or of the wrong kind."""


class StorageError(ShoalError):
    """The local disk failed (full, read-only, permissions)."""
