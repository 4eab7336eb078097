"""What a node announces on its local network (mDNS), how an announcement is read, and where.

How it works: a node is one DNS-SD service instance of type ``_shoal._tcp.local.``:

- instance name ``<node ID>._shoal._tcp.local.`` (the 52-character text form of the node ID,
  one DNS label);
- SRV: a host name of its own (``shoal-<16 characters of the ID>.local.``) and the port peers
  dial; A/AAAA: the IP addresses it announces (all with that one port);
- TXT: ``v=1`` (this format), ``id=<node ID>`` (the same as the instance label) and
  ``net=<network name>`` (the network the node is in; nodes of another network are never
  dialed).

An announcement is only a hint: whoever answers at an announced address must still prove the
announced node ID with its key in the handshake (an announcement that lies is a failed dial).
:func:`read_announcement` checks everything a neighbour sent before the node uses any of it.

:func:`plan_mdns` decides on which interfaces mDNS runs: only those the node listens on, and
only those with an address the node advertises. A node on loopback runs no mDNS at all (tests
and benchmarks never send multicast).

Pure: no sockets, no zeroconf, no clock.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from shoal.ids import ID_SIZE, ID_TEXT_LENGTH, decode_id, encode_id
from shoal.transport.addresses import (
    MAX_ADVERTISED,
    AddressError,
    format_address,
    host_of,
    is_loopback_host,
    is_wildcard_host,
    normalize_address,
    parse_address,
)

__all__ = [
    "FORMAT_VERSION",
    "SERVICE_TYPE",
    "Announcement",
    "MalformedAnnouncement",
    "MdnsPlan",
    "ServiceRecord",
    "announcement_record",
    "instance_name",
    "plan_mdns",
    "read_announcement",
]

SERVICE_TYPE: Final = "_shoal._tcp.local."
#: The TXT ``v`` of this format; an announcement of another version is ignored.
FORMAT_VERSION: Final = b"1"
#: Longest network name (as ``node.network`` in config.toml).
MAX_NETWORK_NAME: Final = 64
#: Most addresses read from one announcement (what one HELLO carries).
MAX_ANNOUNCED_ADDRESSES: Final = MAX_ADVERTISED
#: Most TXT entries an announcement may have (ours has 3; room for later keys).
MAX_PROPERTIES: Final = 16


class MalformedAnnouncement(ValueError):
    """An announcement this node cannot use; the message says why, without quoting it."""


@dataclass(frozen=True)
class ServiceRecord:
    """One service instance as it goes on the network or came from it (unchecked).

    Attributes:
        name: The full instance name (``<label>._shoal._tcp.local.``).
        port: The SRV port.
        addresses: IP addresses (A/AAAA records), as text.
        properties: The TXT entries (a key without ``=`` has the value None).
        server: The SRV host name (only needed to announce).
    """

    name: str
    port: int
    addresses: tuple[str, ...]
    properties: Mapping[bytes, bytes | None] = field(default_factory=dict)
    server: str = ""


@dataclass(frozen=True)
class Announcement:
    """A neighbour's announcement, checked.

    Attributes:
        node_id: The node ID it claims (proved only by the handshake).
        network: The network it says it is in.
        addresses: Where to dial it: canonical ``host:port``, never loopback, at most
            ``MAX_ANNOUNCED_ADDRESSES``.
    """

    node_id: bytes
    network: str
    addresses: tuple[str, ...]


def instance_name(node_id: bytes) -> str:
    """The service instance name of node ``node_id``."""
    return f"{encode_id(node_id)}.{SERVICE_TYPE}"


def announcement_record(node_id: bytes, network: str, addresses: Sequence[str]) -> ServiceRecord:
    """What node ``node_id`` of ``network`` announces: ``addresses`` (``host:port``, IP
    literals, one port, as :func:`plan_mdns` chooses them)."""
    if not addresses:
        raise ValueError("nothing to announce")
    hosts = tuple(host_of(a) for a in addresses)
    ports = {parse_address(a)[1] for a in addresses}
    if len(ports) != 1:
        raise ValueError("announced addresses must share one port")
    text_id = encode_id(node_id)
    return ServiceRecord(
        name=instance_name(node_id),
        port=ports.pop(),
        addresses=hosts,
        properties={b"v": FORMAT_VERSION, b"id": text_id.encode(), b"net": network.encode()},
        server=f"shoal-{text_id[:16]}.local.",
    )


def read_announcement(record: ServiceRecord) -> Announcement:
    """Check a neighbour's announcement and return what it says.

    Raises:
        MalformedAnnouncement: The format version is not ours, the node ID or network name is
            missing or malformed, the node ID is not the instance's name, or no announced
            address could be dialed.
    """
    properties = record.properties
    if len(properties) > MAX_PROPERTIES:
        raise MalformedAnnouncement(f"more than {MAX_PROPERTIES} TXT entries")
    version = properties.get(b"v")
    if version != FORMAT_VERSION:
        raise MalformedAnnouncement("missing or unknown format version (TXT v)")
    node_id = _node_id(properties.get(b"id"))
    if record.name.lower() != instance_name(node_id):
        raise MalformedAnnouncement("the instance name is not the announced node ID")
    network = _network(properties.get(b"net"))
    if not isinstance(record.port, int) or not 0 < record.port < 65536:
        raise MalformedAnnouncement("no port, or a port out of range")
    addresses: list[str] = []
    for host in record.addresses[: 4 * MAX_ANNOUNCED_ADDRESSES]:
        address = _dialable(host, record.port)
        if address is not None and address not in addresses:
            addresses.append(address)
        if len(addresses) >= MAX_ANNOUNCED_ADDRESSES:
            break
    if not addresses:
        raise MalformedAnnouncement("no address this node could dial")
    return Announcement(node_id=node_id, network=network, addresses=tuple(addresses))


def _node_id(value: bytes | None) -> bytes:
    if value is None or len(value) != ID_TEXT_LENGTH:
        raise MalformedAnnouncement("missing or malformed node ID (TXT id)")
    try:
        node_id = decode_id(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedAnnouncement("missing or malformed node ID (TXT id)") from None
    if len(node_id) != ID_SIZE:
        raise MalformedAnnouncement("missing or malformed node ID (TXT id)")
    return node_id


def _network(value: bytes | None) -> str:
    if value is None or not 0 < len(value) <= MAX_NETWORK_NAME:
        raise MalformedAnnouncement("missing or over-long network name (TXT net)")
    try:
        network = value.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedAnnouncement("a network name that is not ASCII (TXT net)") from None
    if not network.isprintable():
        raise MalformedAnnouncement("a network name with unprintable characters (TXT net)")
    return network


def _dialable(host: object, port: int) -> str | None:
    """``host:port`` canonical, if ``host`` is an IP address a neighbour may announce."""
    if not isinstance(host, str):
        return None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    try:
        # Loopback: a neighbour's 127.0.0.1 is this machine, never the neighbour.
        return normalize_address(format_address(str(ip), port), allow_loopback=False)
    except AddressError:
        return None


# -- where mDNS runs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MdnsPlan:
    """Where mDNS runs and what it announces, or why it does not run.

    Attributes:
        interfaces: The IP addresses of the interfaces mDNS runs on (empty: it does not run).
        addresses: What the node announces: canonical ``host:port``, one port.
        off_reason: Why mDNS does not run (None when it does).
    """

    interfaces: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    off_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.interfaces)

    @classmethod
    def off(cls, reason: str) -> MdnsPlan:
        return cls(off_reason=reason)


def plan_mdns(
    listen_address: str, advertised: Sequence[str], interfaces: Iterable[str]
) -> MdnsPlan:
    """On which interfaces a node runs mDNS, and which of its addresses it announces.

    mDNS runs only on interfaces the node listens on, and announces only addresses it
    advertises: an advertised address is announced if it is an IP address (not loopback) of one
    of this host's ``interfaces`` that the listener covers (the listen address itself, or any
    address of the listening family for ``0.0.0.0`` / ``::``). A node listening on loopback
    runs no mDNS. Announced addresses share one port (that of the first).

    Args:
        listen_address: The bound listen address (``host:port``; the host may be a wildcard).
        advertised: What the node tells its peers (canonical ``host:port``, best first).
        interfaces: This host's interface addresses (``fe80::1%eth0`` is fine).
    """
    host, _ = parse_address(listen_address)
    if is_loopback_host(host):
        return MdnsPlan.off(f"this node listens on loopback ({listen_address})")
    wildcard = is_wildcard_host(host)
    if wildcard:
        families = {4, 6} if host == "" else {ipaddress.ip_address(host).version}
        listen_ip = None
    else:
        try:
            listen_ip = _plain_ip(host)
        except ValueError:
            return MdnsPlan.off(f"the listen host {host} is a name, not an interface address")
        families = {listen_ip.version}
    local = {ip for ip in map(_interface_ip, interfaces) if ip is not None}
    chosen: list[str] = []
    port: int | None = None
    hosts: list[str] = []
    for address in advertised:
        try:
            ip = _plain_ip(host_of(address))
        except ValueError:
            continue  # a host name: no interface to run on
        if ip.is_loopback or ip not in local or ip.version not in families:
            continue
        if listen_ip is not None and ip != listen_ip:
            continue
        address_port = parse_address(address)[1]
        if port is None:
            port = address_port
        if address_port != port:
            continue
        chosen.append(address)
        if str(ip) not in hosts:
            hosts.append(str(ip))
    if not chosen:
        return MdnsPlan.off(
            "no address this node advertises is on an interface it listens on "
            f"(listening on {listen_address}; advertising {', '.join(advertised) or 'nothing'})"
        )
    return MdnsPlan(interfaces=tuple(hosts), addresses=tuple(chosen))


def _plain_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(text.strip("[]"))
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _interface_ip(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str):
        return None
    try:
        return _plain_ip(text.partition("%")[0])
    except ValueError:
        return None
