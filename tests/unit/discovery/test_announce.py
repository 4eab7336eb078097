"""What a node announces by mDNS, how a neighbour's announcement is checked, and where mDNS
runs (pure functions: no sockets)."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from shoal.discovery.announce import (
    MAX_ANNOUNCED_ADDRESSES,
    MAX_PROPERTIES,
    SERVICE_TYPE,
    MalformedAnnouncement,
    ServiceRecord,
    announcement_record,
    instance_name,
    plan_mdns,
    read_announcement,
)
from shoal.ids import encode_id

NODE = secrets.token_bytes(32)


def record_of(node_id: bytes = NODE, network: str = "net-a", **changes: object) -> ServiceRecord:
    record = announcement_record(node_id, network, ["10.0.0.5:4000", "192.168.1.5:4000"])
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def test_an_announcement_says_node_id_network_and_addresses_and_reads_back() -> None:
    record = record_of()
    assert record.name == f"{encode_id(NODE)}.{SERVICE_TYPE}"
    assert record.name.endswith("._shoal._tcp.local.")
    assert record.port == 4000
    assert record.addresses == ("10.0.0.5", "192.168.1.5")
    assert record.properties == {b"v": b"1", b"id": encode_id(NODE).encode(), b"net": b"net-a"}
    found = read_announcement(record)
    assert found.node_id == NODE
    assert found.network == "net-a"
    assert found.addresses == ("10.0.0.5:4000", "192.168.1.5:4000")


def test_announced_addresses_must_share_one_port() -> None:
    with pytest.raises(ValueError, match="one port"):
        announcement_record(NODE, "n", ["10.0.0.5:4000", "10.0.0.6:4001"])
    with pytest.raises(ValueError, match="nothing"):
        announcement_record(NODE, "n", [])


@pytest.mark.parametrize(
    ("properties", "why"),
    [
        ({b"id": encode_id(NODE).encode(), b"net": b"n"}, "version"),
        ({b"v": b"2", b"id": encode_id(NODE).encode(), b"net": b"n"}, "version"),
        ({b"v": b"1", b"net": b"n"}, "node ID"),
        ({b"v": b"1", b"id": b"x" * 52, b"net": b"n"}, "node ID"),
        ({b"v": b"1", b"id": b"\xff" * 52, b"net": b"n"}, "node ID"),
        ({b"v": b"1", b"id": encode_id(NODE).encode()}, "network"),
        ({b"v": b"1", b"id": encode_id(NODE).encode(), b"net": b"x" * 65}, "network"),
        ({b"v": b"1", b"id": encode_id(NODE).encode(), b"net": b"\xc3\xa9"}, "ASCII"),
        ({b"v": b"1", b"id": encode_id(NODE).encode(), b"net": b"a\nb"}, "unprintable"),
        ({b"v": b"1", b"id": encode_id(NODE).encode(), b"net": None}, "network"),
        ({bytes([i]): b"" for i in range(MAX_PROPERTIES + 1)}, "TXT entries"),
    ],
)
def test_malformed_txt_records_are_refused(properties: dict[bytes, bytes | None], why: str) -> None:
    with pytest.raises(MalformedAnnouncement, match=why):
        read_announcement(record_of(properties=properties))


def test_the_node_id_must_be_the_instance_name() -> None:
    # Otherwise one node could announce itself under another's name and make it look gone.
    other = secrets.token_bytes(32)
    with pytest.raises(MalformedAnnouncement, match="instance name"):
        read_announcement(record_of(name=instance_name(other)))
    # Case does not matter in DNS names.
    assert read_announcement(record_of(name=record_of().name.upper())).node_id == NODE


@pytest.mark.parametrize("port", [0, 65536, -1])
def test_a_port_out_of_range_is_refused(port: int) -> None:
    with pytest.raises(MalformedAnnouncement, match="port"):
        read_announcement(record_of(port=port))


def test_loopback_unspecified_and_junk_addresses_are_dropped() -> None:
    # A neighbour's 127.0.0.1 is this machine: dialing it would reach ourselves or a stranger.
    record = record_of(addresses=("127.0.0.1", "0.0.0.0", "::1", "not-an-ip", "10.0.0.9"))
    assert read_announcement(record).addresses == ("10.0.0.9:4000",)
    with pytest.raises(MalformedAnnouncement, match="no address"):
        read_announcement(record_of(addresses=("127.0.0.1", "::1")))


def test_at_most_a_few_addresses_are_read_from_one_announcement() -> None:
    many = tuple(f"10.1.{i // 250}.{i % 250 + 1}" for i in range(1000))
    found = read_announcement(record_of(addresses=many))
    assert len(found.addresses) == MAX_ANNOUNCED_ADDRESSES
    # Duplicates count once.
    found = read_announcement(record_of(addresses=("10.0.0.1", "10.0.0.1", "10.0.0.2")))
    assert found.addresses == ("10.0.0.1:4000", "10.0.0.2:4000")


# -- where mDNS runs ----------------------------------------------------------------------------

INTERFACES = ["127.0.0.1", "::1", "10.0.0.5", "192.168.1.5", "fe80::1%eth0"]


@pytest.mark.parametrize("listen", ["127.0.0.1:4000", "[::1]:4000", "127.0.0.2:4000"])
def test_a_node_on_loopback_runs_no_mdns(listen: str) -> None:
    plan = plan_mdns(listen, [listen], INTERFACES)
    assert not plan.enabled
    assert plan.interfaces == ()
    assert plan.addresses == ()
    assert plan.off_reason is not None
    assert "loopback" in plan.off_reason


def test_a_node_on_one_address_runs_mdns_on_that_interface_only() -> None:
    plan = plan_mdns("10.0.0.5:4000", ["10.0.0.5:4000"], INTERFACES)
    assert plan.enabled
    assert plan.interfaces == ("10.0.0.5",)
    assert plan.addresses == ("10.0.0.5:4000",)


def test_a_node_on_every_interface_runs_mdns_on_those_it_advertises() -> None:
    plan = plan_mdns(
        "0.0.0.0:4000", ["10.0.0.5:4000", "192.168.1.5:4000", "127.0.0.1:4000"], INTERFACES
    )
    assert plan.interfaces == ("10.0.0.5", "192.168.1.5")
    assert plan.addresses == ("10.0.0.5:4000", "192.168.1.5:4000")
    # An IPv4 wildcard does not cover IPv6 addresses.
    plan = plan_mdns("0.0.0.0:4000", ["[2001:db8::5]:4000"], [*INTERFACES, "2001:db8::5"])
    assert not plan.enabled


def test_an_advertised_address_of_no_local_interface_is_not_announced() -> None:
    # A node behind NAT advertising its public address: mDNS has no interface to run on.
    plan = plan_mdns("10.0.0.5:4000", ["203.0.113.7:4000"], INTERFACES)
    assert not plan.enabled
    assert plan.off_reason is not None
    assert "203.0.113.7:4000" in plan.off_reason
    # A host name is not an interface either.
    assert not plan_mdns("10.0.0.5:4000", ["nas.example:4000"], INTERFACES).enabled


def test_only_the_port_of_the_first_announced_address_is_announced() -> None:
    plan = plan_mdns("0.0.0.0:4000", ["10.0.0.5:4000", "192.168.1.5:5000"], INTERFACES)
    assert plan.addresses == ("10.0.0.5:4000",)
