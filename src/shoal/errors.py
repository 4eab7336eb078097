"""Every error Shoal raises on purpose, and the one table that maps them to the outside world.

The tree::

    ShoalError                     code            HTTP  gRPC
    ├── ConfigError                config          400   INVALID_ARGUMENT
    ├── Unauthenticated            unauthenticated 401   UNAUTHENTICATED
    │   └── Forbidden              forbidden       403   PERMISSION_DENIED
    ├── ProtocolError              protocol-error  502   INTERNAL
    │   ├── LocalProtocolError         we tried to send something invalid (a bug)
    │   └── RemoteProtocolError        the peer sent something invalid
    │       └── HandshakeError         HELLO/AUTH failed: version, key, signature, network
    ├── TransportError             transport       502   UNAVAILABLE
    │   ├── PeerUnavailable        unavailable     503   UNAVAILABLE
    │   ├── RequestTimeout         timeout         504   DEADLINE_EXCEEDED
    │   ├── Busy                   busy            503   RESOURCE_EXHAUSTED
    │   └── AddressInUse           address-in-use  409   ALREADY_EXISTS
    ├── NotFound                   not-found       404   NOT_FOUND
    ├── OutOfRange                 out-of-range    416   OUT_OF_RANGE
    ├── IntegrityError             integrity       422   DATA_LOSS
    │   └── CorruptBlock           corrupt-block   422   DATA_LOSS
    ├── QuorumNotMet               quorum          503   UNAVAILABLE
    ├── InvalidCapability          invalid-cap     400   INVALID_ARGUMENT
    └── StorageError               storage         507   INTERNAL
        └── StorageFull            storage-full    507   RESOURCE_EXHAUSTED

Each class carries its ``code`` (the short machine-readable code in ERROR frames and in the
HTTP API's JSON errors), its ``http_status`` and its ``grpc_status`` (the name of a
``grpc.StatusCode`` member, so this module needs no gRPC import). Every adapter (the peer
transport, the HTTP API, its client, later gRPC) maps errors by looking these attributes up
(:func:`error_class_for_code`) rather than keeping a table of its own.

Each message says what failed and, where there is one, what to do about it. Messages never
contain a key, a read cap's secret half, or a local path a peer could learn from.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "AddressInUse",
    "Busy",
    "ConfigError",
    "CorruptBlock",
    "Forbidden",
    "HandshakeError",
    "IntegrityError",
    "InvalidCapability",
    "LocalProtocolError",
    "NotFound",
    "OutOfRange",
    "PeerUnavailable",
    "ProtocolError",
    "QuorumNotMet",
    "RemoteProtocolError",
    "RequestTimeout",
    "ShoalError",
    "StorageError",
    "StorageFull",
    "TransportError",
    "Unauthenticated",
    "error_class_for_code",
]


class ShoalError(Exception):
    """Base class of every error Shoal raises on purpose.

    Attributes:
        code: Short machine-readable code (ERROR frames, HTTP API errors).
        http_status: Status of an HTTP API answer that fails with this error.
        grpc_status: Name of the ``grpc.StatusCode`` for the gRPC adapter.
    """

    code: str = "failed"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"


class ConfigError(ShoalError):
    """A data dir, config file or argument is missing or invalid."""

    code = "config"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class Unauthenticated(ShoalError):
    """A request to the local API lacks the right token or session."""

    code = "unauthenticated"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"


class Forbidden(Unauthenticated):
    """A local request that may not be made this way: a wrong ``Host`` (DNS rebinding), or a
    web UI request that changes something without its CSRF token."""

    code = "forbidden"
    http_status = 403
    grpc_status = "PERMISSION_DENIED"


class ProtocolError(ShoalError):
    """The wire protocol was violated.

    An instance may carry a more precise ``code`` than its class (the code of the ERROR frame
    that reported it, e.g. ``frame-too-large``).
    """

    code = "protocol-error"
    http_status = 502

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

    code = "transport"
    http_status = 502
    grpc_status = "UNAVAILABLE"


class PeerUnavailable(TransportError):
    """The peer cannot be reached right now."""

    code = "unavailable"
    http_status = 503


class RequestTimeout(TransportError):
    """A request got no answer within its timeout."""

    code = "timeout"
    http_status = 504
    grpc_status = "DEADLINE_EXCEEDED"


class Busy(TransportError):
    """The other side refused work because one of its limits is reached; retry later."""

    code = "busy"
    http_status = 503
    grpc_status = "RESOURCE_EXHAUSTED"


class AddressInUse(TransportError):
    """The address to listen on is already taken."""

    code = "address-in-use"
    http_status = 409
    grpc_status = "ALREADY_EXISTS"


class NotFound(ShoalError):
    """No such file, name or block."""

    code = "not-found"
    http_status = 404
    grpc_status = "NOT_FOUND"


class OutOfRange(ShoalError):
    """A read asks for bytes past the end of a file (a ranged get's offset)."""

    code = "out-of-range"
    http_status = 416
    grpc_status = "OUT_OF_RANGE"


class IntegrityError(ShoalError):
    """Data does not match its hash, or a file's structure is inconsistent."""

    code = "integrity"
    http_status = 422
    grpc_status = "DATA_LOSS"


class CorruptBlock(IntegrityError):
    """A block's bytes do not hash to its ID.

    The only evidence that justifies moving a stored block aside, or trying another holder:
    every other failure to open a block whose hash is right (a wrong key, a malformed or
    lying manifest) would be the same on every holder, since they all hold the same bytes.
    """

    code = "corrupt-block"


class QuorumNotMet(ShoalError):
    """A put could not place a block anywhere.

    ``placed`` maps each block ID (text form) to the node IDs (text form) that acknowledged it.
    """

    code = "quorum"
    http_status = 503
    grpc_status = "UNAVAILABLE"

    def __init__(self, message: str, *, placed: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.placed = placed or {}


class InvalidCapability(ShoalError):
    """A capability string is malformed, of the wrong kind, or its key does not open the file."""

    code = "invalid-cap"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"


class StorageError(ShoalError):
    """The local disk failed (read-only, permissions, I/O error)."""

    code = "storage"
    http_status = 507


class StorageFull(StorageError):
    """A storage limit is reached: the disk is full, or a configured limit or reserve."""

    code = "storage-full"
    grpc_status = "RESOURCE_EXHAUSTED"


def _all_subclasses(cls: type[ShoalError]) -> list[type[ShoalError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


def error_class_for_code(code: str) -> type[ShoalError] | None:
    """The error class whose ``code`` is ``code`` (most specific first), or None.

    Protocol codes that only instances carry (``frame-too-large``) map to None: callers treat
    them as ``RemoteProtocolError``.
    """
    return _BY_CODE.get(code)


_BY_CODE: dict[str, type[ShoalError]] = {}
for _cls in _all_subclasses(ShoalError):
    # The first class in tree order owns a code (ProtocolError before its subclasses).
    _BY_CODE.setdefault(_cls.code, _cls)
del _cls
