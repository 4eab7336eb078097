"""What a node tells its peers to dial: ``--advertise``, a wildcard listen, never ``0.0.0.0``.

The pure part (``advertised_addresses``) is tested by tables and properties; the manager's part
(HELLO carries the advertised addresses, each is one of the node's own) over the in-memory
network on virtual time.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.clock import VirtualClock, run_virtual
from shoal.errors import ConfigError
from shoal.transport import Identity, PeerSource
from shoal.transport.addresses import (
    MAX_ADVERTISED,
    advertised_addresses,
    is_wildcard_host,
    normalize_address,
    parse_advertise,
)
from shoal.transport.backend import AcceptCallback, Listener, NetworkBackend, Stream
from shoal.transport.interfaces import interface_addresses
from shoal.transport.memory import MemoryBackend
from tests.unit.transport.sim import RecordingBackend, Sim, connected, wait_for

#: A host with the usual mix: loopback, a LAN address, a ULA and link-local IPv6, a docker bridge.
INTERFACES = (
    "127.0.0.1",
    "::1",
    "192.168.1.20",
    "fd00::20",
    "fe80::1%eth0",
    "169.254.7.7",
    "172.17.0.1",
)

# -- the pure function -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen_host", "interfaces", "expected"),
    [
        # A specific listen host is advertised as it is (loopback included: one machine).
        ("127.0.0.1", INTERFACES, ("127.0.0.1:7000",)),
        ("192.168.1.20", INTERFACES, ("192.168.1.20:7000",)),
        ("fd00::20", INTERFACES, ("[fd00::20]:7000",)),
        ("[fd00::20]", INTERFACES, ("[fd00::20]:7000",)),
        ("::ffff:192.168.1.20", (), ("192.168.1.20:7000",)),
        ("Node.Example.org", (), ("node.example.org:7000",)),
        # ... unless no peer could dial it.
        ("fe80::1", INTERFACES, ()),
        # 0.0.0.0: the IPv4 interface addresses, ordinary first, link-local, loopback last.
        (
            "0.0.0.0",
            INTERFACES,
            ("192.168.1.20:7000", "172.17.0.1:7000", "169.254.7.7:7000", "127.0.0.1:7000"),
        ),
        # ::: the IPv6 ones (asyncio's :: listener is IPv6 only); link-local IPv6 never.
        ("::", INTERFACES, ("[fd00::20]:7000", "[::1]:7000")),
        ("[::]", INTERFACES, ("[fd00::20]:7000", "[::1]:7000")),
        # The empty host listens on both families.
        (
            "",
            INTERFACES,
            (
                "192.168.1.20:7000",
                "[fd00::20]:7000",
                "172.17.0.1:7000",
                "169.254.7.7:7000",
                "127.0.0.1:7000",
                "[::1]:7000",
            ),
        ),
        # Nothing dialable found: nothing advertised (never 0.0.0.0).
        ("0.0.0.0", (), ()),
        ("0.0.0.0", ("0.0.0.0", "224.0.0.1", "255.255.255.255", "::1", "garbage", ""), ()),
        # Duplicates (an address on two interfaces, a mapped spelling) once.
        ("0.0.0.0", ("10.0.0.1", "10.0.0.1", "::ffff:10.0.0.1"), ("10.0.0.1:7000",)),
    ],
)
def test_advertised_addresses_from_the_listen_host(
    listen_host: str, interfaces: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    assert advertised_addresses(listen_host, 7000, interfaces=interfaces) == expected


def test_a_dual_stack_listener_also_advertises_ipv4() -> None:
    assert advertised_addresses("::", 7000, interfaces=INTERFACES, dual_stack=True) == (
        "192.168.1.20:7000",
        "[fd00::20]:7000",
        "172.17.0.1:7000",
        "169.254.7.7:7000",
        "127.0.0.1:7000",
        "[::1]:7000",
    )
    # dual_stack is about ::; an IPv4 listener never advertises IPv6.
    assert advertised_addresses("0.0.0.0", 7000, interfaces=("fd00::20",), dual_stack=True) == ()


def test_a_wildcard_listen_advertises_at_most_what_a_hello_carries_loopback_dropped_first() -> None:
    many = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(40)]
    result = advertised_addresses("0.0.0.0", 7000, interfaces=["127.0.0.1", *many])
    assert len(result) == MAX_ADVERTISED == 16
    assert result == tuple(f"{ip}:7000" for ip in many[:16])


@pytest.mark.parametrize(
    ("advertise", "expected"),
    [
        (["192.0.2.7:9000"], ("192.0.2.7:9000",)),
        # Canonical spellings, duplicates dropped, the user's order kept.
        (
            ["NAS.example.org.:7000", "[2001:DB8::1]:7000", "nas.example.org:7000"],
            ("nas.example.org:7000", "[2001:db8::1]:7000"),
        ),
        (["[::ffff:192.0.2.7]:9000", "192.0.2.7:9000"], ("192.0.2.7:9000",)),
        # Loopback is allowed: several nodes on one machine.
        (
            ["127.0.0.1:7000", "localhost:7001", "[::1]:7002"],
            ("127.0.0.1:7000", "localhost:7001", "[::1]:7002"),
        ),
    ],
)
def test_explicit_addresses_win(advertise: list[str], expected: tuple[str, ...]) -> None:
    assert parse_advertise(advertise) == expected
    for host in ("0.0.0.0", "127.0.0.1", "::", "10.9.9.9"):
        # Whatever the listen address and the interfaces.
        assert advertised_addresses(host, 4000, advertise=advertise, interfaces=INTERFACES) == (
            expected
        )


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("0.0.0.0:7000", "0.0.0.0 and :: mean 'every interface'"),
        ("[::]:7000", "0.0.0.0 and :: mean 'every interface'"),
        ("[::ffff:0.0.0.0]:7000", "unspecified address"),
        ("192.0.2.7:0", "port 0 cannot be dialed"),
        ("0.0.0.0:0", "0.0.0.0 and :: mean 'every interface'"),
        ("192.0.2.7", "expected HOST:PORT"),
        ("192.0.2.7:70000", "expected HOST:PORT"),
        ("", "expected HOST:PORT"),
        (":7000", "expected HOST:PORT"),
        ("224.0.0.1:7000", "multicast"),
        ("255.255.255.255:7000", "broadcast"),
        ("[fe80::1]:7000", "link-local"),
        ("fd00::1:7000", "brackets"),
        ("bad_host!:7000", "malformed host name"),
    ],
)
def test_an_explicit_address_no_peer_can_dial_is_a_one_line_config_error(
    text: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_advertise(["192.0.2.1:7000", text])
    message = str(info.value)
    assert says in message
    assert message.startswith("invalid --advertise address")
    assert "\n" not in message
    with pytest.raises(ConfigError):
        advertised_addresses("0.0.0.0", 7000, advertise=[text], interfaces=INTERFACES)


def test_more_explicit_addresses_than_a_hello_carries_is_a_config_error() -> None:
    addresses = [f"192.0.2.{i}:7000" for i in range(1, 18)]
    assert len(parse_advertise(addresses[:16])) == 16
    assert len(parse_advertise(addresses[:16] + addresses[:3])) == 16  # duplicates do not count
    with pytest.raises(ConfigError, match="at most 16"):
        parse_advertise(addresses)


@pytest.mark.parametrize(
    ("host", "wildcard"),
    [
        ("", True),
        ("0.0.0.0", True),
        ("::", True),
        ("[::]", True),
        ("0:0::0", True),
        ("127.0.0.1", False),
        ("localhost", False),
        ("0", False),
        ("::1", False),
    ],
)
def test_wildcard_hosts(host: str, wildcard: bool) -> None:
    assert is_wildcard_host(host) is wildcard


# -- properties --------------------------------------------------------------------------------

HOSTS = st.one_of(
    st.sampled_from(["", "0.0.0.0", "::", "[::]", "127.0.0.1", "localhost", "fe80::1", "0"]),
    st.ip_addresses().map(str),
    st.text(max_size=20),
)
INTERFACE_TEXTS = st.lists(
    st.one_of(
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda ip: f"{ip}%eth0"),
        st.text(max_size=12),
    ),
    max_size=40,
)
EXPLICIT = st.lists(
    st.one_of(
        st.tuples(st.ip_addresses(), st.integers(0, 65536)).map(
            lambda t: f"[{t[0]}]:{t[1]}" if t[0].version == 6 else f"{t[0]}:{t[1]}"
        ),
        st.text(max_size=30),
    ),
    max_size=20,
)


def _check_advertised(result: tuple[str, ...]) -> None:
    assert len(result) <= MAX_ADVERTISED
    assert len(set(result)) == len(result)
    for address in result:
        assert normalize_address(address) == address  # canonical and dialable
        host, _, port = address.rpartition(":")
        assert int(port) != 0
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            continue  # a host name (only from a specific listen host or --advertise)
        assert not ip.is_unspecified


@given(host=HOSTS, port=st.integers(0, 65535), interfaces=INTERFACE_TEXTS, dual=st.booleans())
def test_derived_addresses_are_canonical_dialable_and_few(
    host: str, port: int, interfaces: list[str], dual: bool
) -> None:
    result = advertised_addresses(host, port, interfaces=interfaces, dual_stack=dual)
    _check_advertised(result)
    if is_wildcard_host(host.strip("[]")):
        assert all(not address.startswith(("0.0.0.0", "[::]")) for address in result)


@given(advertise=EXPLICIT, interfaces=INTERFACE_TEXTS)
def test_explicit_addresses_are_canonical_dialable_and_few_or_refused(
    advertise: list[str], interfaces: list[str]
) -> None:
    refusal: str | None = None
    try:
        result = advertised_addresses("0.0.0.0", 7000, advertise=advertise, interfaces=interfaces)
    except ConfigError as exc:
        refusal = str(exc)
    if refusal is not None:
        assert refusal.startswith(("invalid --advertise address", "too many --advertise"))
        assert "\n" not in refusal
        return
    _check_advertised(result)
    if advertise:
        # Explicit addresses win: exactly the good ones, in the user's order.
        assert result == tuple(dict.fromkeys(normalize_address(a) for a in advertise))


def test_this_hosts_interfaces_are_ip_addresses() -> None:
    found = interface_addresses()
    for text in found:
        ipaddress.ip_address(text.partition("%")[0])
    # The test machine has an IPv4 loopback interface that is up (every node test uses it).
    assert "127.0.0.1" in found


# -- the manager ---------------------------------------------------------------------------------


class _WildcardListener:
    """A memory listener that reports the wildcard address it was asked for."""

    def __init__(self, inner: Listener, host: str) -> None:
        self._inner = inner
        self._host = host

    @property
    def address(self) -> str:
        port = self._inner.address.rpartition(":")[2]
        return f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"

    @property
    def certificate_der(self) -> bytes:
        return self._inner.certificate_der

    def close(self) -> None:
        self._inner.close()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()


class WildcardBackend:
    """A memory interface that accepts ``listen("0.0.0.0" or "::", port)`` as TCP does: it
    listens on its one host and reports the wildcard address."""

    def __init__(self, inner: MemoryBackend) -> None:
        self._inner = inner

    async def listen(
        self, host: str, port: int, *, identity: Identity, on_accept: AcceptCallback
    ) -> Listener:
        assert is_wildcard_host(host), host
        listener = await self._inner.listen(
            self._inner.host, port, identity=identity, on_accept=on_accept
        )
        return _WildcardListener(listener, host)

    async def connect(self, host: str, port: int, *, timeout: float) -> Stream:
        return await self._inner.connect(host, port, timeout=timeout)


def _wildcard(sim: Sim, host: str) -> NetworkBackend:
    return WildcardBackend(sim.network.interface(host))


def test_a_wildcard_listener_tells_peers_its_interface_addresses_never_0_0_0_0() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node(
                "0.0.0.0",
                backend=_wildcard(sim, "10.0.0.1"),
                interfaces=lambda: ["127.0.0.1", "10.0.0.1", "fe80::1%eth0", "::1"],
                mesh=False,
            )
            port = a.listen_address.rpartition(":")[2]
            assert a.listen_address == f"0.0.0.0:{port}"
            assert a.advertised_addresses == (f"10.0.0.1:{port}", f"127.0.0.1:{port}")
            # Each advertised address is one of its own: never dialed.
            assert a.is_own_address(f"10.0.0.1:{port}")
            assert a.is_own_address(f"127.0.0.1:{port}")
            b = await sim.node("10.0.0.2", mesh=False)

            # a dials b: b learns a only from a's HELLO.
            conn = await a.dial(b.listen_address)
            await wait_for(lambda: connected(a, b))
            back = b.connection(a.node_id)
            assert back is not None
            assert back.peer is not None
            assert back.peer.listen_addrs == a.advertised_addresses
            record = b.record(a.node_id)
            assert record is not None
            # The loopback address is dropped: b does not reach a over loopback.
            assert record.addresses == [f"10.0.0.1:{port}"]

            # And what b learnt reaches a.
            await conn.close()
            await wait_for(lambda: b.connection(a.node_id) is None)
            again = await b.dial(record.addresses[0])
            assert again.peer_id == a.node_id

    run_virtual(main)


def test_a_peer_learns_the_advertised_addresses_not_the_listen_one() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            # a listens on 10.0.0.1:7000, reached from outside at a forwarded 192.0.2.7:9000.
            a = await sim.node(
                "10.0.0.1",
                port=7000,
                advertise=["192.0.2.7:9000", "A.Example.org:9000", "192.0.2.7:9000"],
                mesh=False,
            )
            assert a.listen_address == "10.0.0.1:7000"
            assert a.advertised_addresses == ("192.0.2.7:9000", "a.example.org:9000")
            b = await sim.node("10.0.0.2", mesh=False)
            await a.dial(b.listen_address)
            await wait_for(lambda: connected(a, b))
            record = b.record(a.node_id)
            assert record is not None
            assert record.addresses == ["192.0.2.7:9000", "a.example.org:9000"]

            # A peer that tells a "someone is at your advertised address" is not believed.
            stranger = Identity.generate().node_id
            assert a.learn(stranger, ["192.0.2.7:9000"], source=PeerSource.CATALOG) == []
            assert a.record(stranger) is None

    run_virtual(main)


def test_a_specific_listen_address_is_advertised_as_it_is() -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            found: list[str] = []

            def interfaces() -> list[str]:
                found.append("asked")
                return ["10.0.0.99"]

            a = await sim.node("10.0.0.1", interfaces=interfaces, mesh=False)
            assert a.advertised_addresses == (a.listen_address,)
            assert found == []  # interfaces are only listed for a wildcard listen

    run_virtual(main)


@pytest.mark.parametrize("bad", ["0.0.0.0:7000", "10.0.0.1:0", "no-port"])
def test_a_bad_advertise_address_fails_start_before_listening(bad: str) -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            recorder = RecordingBackend(sim.network.interface("10.0.0.1"), clock)
            with pytest.raises(ConfigError, match="invalid --advertise address"):
                await sim.node("10.0.0.1", port=7000, advertise=[bad], backend=recorder)
            # Nothing listens, and the address is free for a node with a good setting.
            a = await sim.node("10.0.0.1", port=7000, advertise=["10.0.0.1:7000"])
            b = await sim.node("10.0.0.2")
            b.add_bootstrap(a.listen_address)
            await wait_for(lambda: connected(a, b))

    run_virtual(main)


def test_a_wildcard_listener_with_no_usable_interface_advertises_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main(clock: VirtualClock) -> None:
        async with Sim(clock) as sim:
            a = await sim.node(
                "0.0.0.0",
                backend=_wildcard(sim, "10.0.0.1"),
                interfaces=lambda: ["fe80::1%eth0"],
                mesh=False,
            )
            assert a.advertised_addresses == ()
            # Peers can still connect to it; they just learn no address for it.
            b = await sim.node("10.0.0.2", mesh=False)
            port = a.listen_address.rpartition(":")[2]
            await b.dial(f"10.0.0.1:{port}")
            await wait_for(lambda: connected(a, b))

    run_virtual(main)
    assert any("--advertise HOST:PORT" in r.getMessage() for r in caplog.records), caplog.text
