"""Which network a node belongs to: closed networks (a shared secret) and the open one.

How it works: ``shoal init`` makes a new *closed* network: 32 random bytes, the network secret,
kept in ``<data dir>/network.key`` (mode 0600). Its network name, carried in HELLO, is derived
from the secret (so two closed networks never share a name, and a node of another network found
by chance is told apart before any proof is exchanged); the secret itself never crosses the
wire: each side adds an HMAC under it over the handshake transcript, so a node that cannot prove
the secret is refused before it can store or ask anything.

``shoal invite`` prints a one-line invite holding the secret and this node's address, which
``shoal init --join INVITE`` uses on another machine. ``shoal init --open`` joins the one public
network instead (name ``shoal``, no secret): any two open nodes can talk, and storage limits
bound what strangers can take.

Invite text: ``shoal:invite:<secret>@<host:port>[,<host:port>...]`` with the secret in the ID
text form (52 base32 characters). An invite is a secret: whoever has it can join.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shoal import defaults
from shoal.errors import ConfigError
from shoal.ids import ID_SIZE, decode_id, encode_id

__all__ = [
    "INVITE_PREFIX",
    "Invite",
    "NetworkMembership",
    "closed_network_name",
    "parse_invite",
]

INVITE_PREFIX = "shoal:invite:"
_NAME_LABEL = b"shoal network name\x00"
MAX_INVITE_ADDRESSES = 8
_MAX_INVITE_LENGTH = 2048


def closed_network_name(secret: bytes) -> str:
    """The public name of the closed network whose secret is ``secret``."""
    digest = hashlib.sha256(_NAME_LABEL + secret).digest()
    return "net-" + encode_id(digest)[:20]


@dataclass(frozen=True, slots=True)
class NetworkMembership:
    """The network a node is in: its name, and its secret when it is closed."""

    name: str
    secret: bytes | None = field(default=None, repr=False)

    @classmethod
    def open(cls) -> NetworkMembership:
        return cls(defaults.OPEN_NETWORK)

    @classmethod
    def closed(cls, secret: bytes) -> NetworkMembership:
        if len(secret) != ID_SIZE:
            raise ValueError(f"a network secret is {ID_SIZE} bytes")
        return cls(closed_network_name(secret), secret)

    @property
    def is_open(self) -> bool:
        return self.secret is None


@dataclass(frozen=True, slots=True)
class Invite:
    """What ``shoal init --join`` needs: the network secret and where to find a member."""

    secret: bytes = field(repr=False)
    addresses: tuple[str, ...]

    def __str__(self) -> str:
        return f"{INVITE_PREFIX}{encode_id(self.secret)}@{','.join(self.addresses)}"


def parse_invite(text: str) -> Invite:
    """Parse an invite printed by ``shoal invite``.

    Raises:
        ConfigError: Not an invite; the message never repeats the secret.
    """
    stripped = text.strip()
    if len(stripped) > _MAX_INVITE_LENGTH or not stripped.lower().startswith(INVITE_PREFIX):
        raise ConfigError(
            "not an invite: expected the line printed by `shoal invite` "
            f"({INVITE_PREFIX}<secret>@<host:port>)"
        )
    secret_text, sep, address_text = stripped[len(INVITE_PREFIX) :].partition("@")
    try:
        secret = decode_id(secret_text)
    except ValueError:
        raise ConfigError(
            "the invite's secret is damaged: copy the whole line printed by `shoal invite`"
        ) from None
    addresses = tuple(a.strip() for a in address_text.split(",") if a.strip()) if sep else ()
    if not addresses:
        raise ConfigError("the invite names no address to join: run `shoal invite` again")
    if len(addresses) > MAX_INVITE_ADDRESSES:
        raise ConfigError(f"an invite names at most {MAX_INVITE_ADDRESSES} addresses")
    return Invite(secret, addresses)
