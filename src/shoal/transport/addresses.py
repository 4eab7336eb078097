"""Network addresses: parsing what a user typed, and vetting what a peer told us.

Three entry points:

- :func:`parse_address` for addresses the user gives (``--listen``, ``--peer``): lenient
  (``localhost:0`` is a fine listen address), ``ConfigError`` when malformed.
- :func:`normalize_address` for every address before the node dials it or remembers it: one
  canonical spelling per address (so ``127.0.0.1:047600`` and ``127.0.0.1:47600`` are not two
  addresses; they are one refused and one accepted), and nothing a node should never dial:
  unspecified (``0.0.0.0``, ``::``), multicast, broadcast and reserved addresses, port 0,
  over-long or malformed hosts, and loopback addresses unless the caller allows them (only a
  peer that is itself on loopback may announce a loopback address).
- :func:`advertised_addresses` for what a node tells its peers (HELLO's ``listen_addrs``,
  invites): the ``--advertise`` addresses if given, else the listen address, and for a wildcard
  listen (``0.0.0.0``, ``::``) the addresses of the host's interfaces. Never an unspecified
  address: a peer cannot dial ``0.0.0.0``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Final

from shoal.errors import ConfigError
from shoal.protocol.messages import MAX_ADDRS

__all__ = [
    "AddressError",
    "OwnAddresses",
    "advertised_addresses",
    "format_address",
    "host_of",
    "is_loopback_host",
    "is_wildcard_host",
    "normalize_address",
    "parse_address",
    "parse_advertise",
    "printable",
]

#: Longest host name (RFC 1035) and longest address text we look at.
MAX_HOST_LENGTH: Final = 253
MAX_ADDRESS_LENGTH: Final = MAX_HOST_LENGTH + 8  # brackets, colon, five digits

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")


class AddressError(ValueError):
    """An address that is malformed, or one this node must not dial."""


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6); ``ConfigError`` if malformed."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(
            f"invalid address {printable(address)!r}: expected HOST:PORT, e.g. 127.0.0.1:3000"
        )
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"invalid port in {printable(address)!r}: must be 0..65535")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def printable(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters with anything unprintable replaced, for logs."""
    cut = text[:limit]
    clean = "".join(c if c.isprintable() and c.isascii() else "?" for c in cut)
    return clean + ("..." if len(text) > limit else "")


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an IP literal or a name) means this machine."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        name = host.lower().rstrip(".")
        return name == "localhost" or name.endswith(".localhost")
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def host_of(address: str) -> str:
    """The host part of a ``host:port`` address (without IPv6 brackets)."""
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _split(text: str) -> tuple[str, str, bool]:
    """``(host, port text, bracketed)`` of ``text``; AddressError if there is no port."""
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise AddressError("malformed [IPv6]:PORT")
        return host, port, True
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise AddressError("no port")
    if ":" in host:
        raise AddressError("IPv6 hosts need brackets: [v6]:PORT")
    return host, port, False


def normalize_address(text: str, *, allow_loopback: bool = True) -> str:
    """The canonical ``host:port`` for ``text``, if the node may dial it.

    Args:
        text: The address as received.
        allow_loopback: Whether a loopback host is acceptable (only when the address comes
            from the user, or from a peer that itself connects over loopback).

    Raises:
        AddressError: The address is malformed or must not be dialed; the message says why
            (without repeating the address).
    """
    if not isinstance(text, str):
        raise AddressError("not a string")
    if len(text) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"longer than {MAX_ADDRESS_LENGTH} characters")
    if not text.isascii() or not text.isprintable() or " " in text:
        raise AddressError("unprintable or non-ASCII characters")
    host, port_text, bracketed = _split(text)
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise AddressError("the port must be 1..65535, written without leading zeros")
    port = int(port_text)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        if bracketed:
            raise AddressError("malformed IPv6 address") from None
        return format_address(_normalize_name(host, allow_loopback=allow_loopback), port)
    if isinstance(ip, ipaddress.IPv6Address):
        if not bracketed:
            raise AddressError("IPv6 hosts need brackets: [v6]:PORT")
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
    elif bracketed:
        raise AddressError("brackets are for IPv6 hosts only")
    if ip.is_unspecified:
        raise AddressError("unspecified address (0.0.0.0 or ::) is not a peer")
    if ip.is_multicast:
        raise AddressError("multicast address")
    if isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved:
        raise AddressError("reserved or broadcast address")
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_link_local:
        raise AddressError("IPv6 link-local address (needs an interface)")
    if ip.is_loopback and not allow_loopback:
        raise AddressError("loopback address announced by a peer that is not on loopback")
    return format_address(str(ip), port)


def _normalize_name(host: str, *, allow_loopback: bool) -> str:
    name = host.lower()
    name = name.removesuffix(".")
    if not name or len(name) > MAX_HOST_LENGTH:
        raise AddressError(f"host names are 1..{MAX_HOST_LENGTH} characters")
    labels = name.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise AddressError("malformed host name")
    if labels[-1].isdigit():
        raise AddressError("malformed IPv4 address")
    if not allow_loopback and is_loopback_host(name):
        raise AddressError("loopback address announced by a peer that is not on loopback")
    return name


_WILDCARD_HOSTS: Final = frozenset({"0.0.0.0", "::", ""})


class OwnAddresses:
    """The addresses that reach this very node (its listener, its API), never to be dialed.

    Besides the exact addresses, a loopback host with one of our ports is ours when we listen
    on loopback or on every interface (``localhost:P`` when listening on ``127.0.0.1:P``).
    """

    def __init__(self) -> None:
        self._exact: set[str] = set()
        self._endpoints: set[tuple[str, int]] = set()

    def add(self, address: str) -> None:
        """Add ``host:port`` (``ConfigError`` if malformed)."""
        host, port = parse_address(address)
        self._endpoints.add((host, port))
        try:
            self._exact.add(normalize_address(address))
        except AddressError:
            pass  # e.g. 0.0.0.0:P: kept as an endpoint only

    def __contains__(self, address: object) -> bool:
        """Whether the canonical ``address`` is one of ours."""
        if not isinstance(address, str):
            return False
        if address in self._exact:
            return True
        host, _, port_text = address.rpartition(":")
        if not port_text.isdigit():
            return False
        port = int(port_text)
        host = host[1:-1] if host.startswith("[") else host
        return is_loopback_host(host) and any(
            own_port == port and (own_host in _WILDCARD_HOSTS or is_loopback_host(own_host))
            for own_host, own_port in self._endpoints
        )


# -- what this node tells its peers -------------------------------------------------------------

#: Most addresses a node advertises: what one HELLO carries.
MAX_ADVERTISED: Final = MAX_ADDRS


def is_wildcard_host(host: str) -> bool:
    """Whether listening on ``host`` means every interface (``""``, ``0.0.0.0``, ``::``)."""
    if host == "":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def parse_advertise(addresses: Sequence[str], *, limit: int = MAX_ADVERTISED) -> tuple[str, ...]:
    """The canonical form of the ``--advertise`` addresses a user gave, without duplicates.

    Loopback addresses are fine (nodes on one machine); nothing a peer cannot dial is.

    Raises:
        ConfigError: An address is malformed, has port 0 or a wildcard or other undialable
            host, or there are more than ``limit`` distinct addresses.
    """
    result: dict[str, None] = {}  # ordered set
    for text in addresses:
        result[_parse_one_advertised(text)] = None
    if len(result) > limit:
        raise ConfigError(
            f"too many --advertise addresses ({len(result)}): a node advertises at most {limit}"
        )
    return tuple(result)


def _parse_one_advertised(text: str) -> str:
    where = f"invalid --advertise address {printable(text)!r}"
    try:
        host, port = parse_address(text)
    except ConfigError:
        raise ConfigError(
            f"{where}: expected HOST:PORT as peers should dial it, e.g. 192.0.2.10:7000"
        ) from None
    if is_wildcard_host(host):
        raise ConfigError(
            f"{where}: 0.0.0.0 and :: mean 'every interface' and cannot be dialed; "
            "give an address peers reach this machine at"
        )
    if port == 0:
        raise ConfigError(
            f"{where}: port 0 cannot be dialed; give the port peers connect to "
            "(the --listen port, or the one forwarded to it)"
        )
    try:
        return normalize_address(text, allow_loopback=True)
    except AddressError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def advertised_addresses(
    listen_host: str,
    port: int,
    *,
    advertise: Sequence[str] = (),
    interfaces: Iterable[str] = (),
    dual_stack: bool = False,
    limit: int = MAX_ADVERTISED,
) -> tuple[str, ...]:
    """The addresses a node tells its peers to dial, canonical, best first, at most ``limit``.

    - Explicit ``advertise`` addresses win, as :func:`parse_advertise` returns them.
    - A specific listen host: that address with the bound port (nothing if it cannot be dialed,
      e.g. an IPv6 link-local host).
    - A wildcard listen host: the ``interfaces`` addresses of the listening family with the bound
      port; ``0.0.0.0`` is IPv4, ``::`` IPv6 (and IPv4 too if ``dual_stack``: asyncio's listener
      sets ``IPV6_V6ONLY``, so ours is not), ``""`` both. Ordinary addresses first, then IPv4
      link-local ones, then loopback ones (dropped by peers that are not on this machine);
      addresses no peer can dial (IPv6 link-local, multicast, unspecified, malformed) are left
      out.

    Args:
        listen_host: The host the listener is bound to (no brackets needed).
        port: The port it is bound to (not 0).
        advertise: The ``--advertise`` addresses, if any.
        interfaces: The IP addresses of this host's interfaces (``fe80::1%eth0`` is fine).
        dual_stack: Whether a ``::`` listener also accepts IPv4.
        limit: Most addresses returned.

    Raises:
        ConfigError: An ``advertise`` address is invalid (see :func:`parse_advertise`).
    """
    if advertise:
        return parse_advertise(advertise, limit=limit)
    host = listen_host.strip("[]")
    if not is_wildcard_host(host):
        try:
            return (normalize_address(format_address(host, port)),)
        except AddressError:
            return ()
    versions = {4, 6} if host == "" else {ipaddress.ip_address(host).version}
    if dual_stack and 6 in versions:
        versions.add(4)
    ranked: dict[str, int] = {}
    for text in interfaces:
        ip = _interface_ip(text)
        if ip is None or ip.version not in versions:
            continue
        try:
            address = normalize_address(format_address(str(ip), port))
        except AddressError:
            continue
        rank = 2 if ip.is_loopback else 1 if ip.is_link_local else 0
        ranked.setdefault(address, rank)
    best_first = sorted(ranked, key=ranked.__getitem__)  # stable: interface order within a rank
    return tuple(best_first[:limit])


def _interface_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address of an interface, without its IPv6 zone (``%eth0``) and with an
    IPv4-mapped address as IPv4; None if malformed."""
    if not isinstance(text, str):
        return None
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
