"""Two real nodes listening on ``0.0.0.0`` in two network namespaces joined by a veth pair.

A node that listens on every interface must tell its peers an address they can dial (its
interface address), never ``0.0.0.0``. Checked as a user sees it: ``shoal peers --json`` on each
node shows the other at its veth address and listening port, a file put on one node arrives on
the other over the veth, and a node restarted on a new port finds its peer again at the address
the peer advertised (the only one it ever learnt: the peer dialed it).

How it works: the ``veth_pair`` fixture makes two network namespaces (unique names per test)
joined by a veth pair, 10.123.0.1/24 and 10.123.0.2/24, with loopback up in each (each node's
local API is on its namespace's own 127.0.0.1), and deletes them at teardown whatever happened,
after every process in them was killed. Every ``shoal`` command runs in its node's namespace
(``ip netns exec``), so nothing here listens on a real interface of the machine. Needs root and
iproute2 (CI has both).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.conftest import NET_KEY, ShoalNet, ShoalNode
from tests.e2e.netns import Namespace, NamespacedNode, skip_without_netns
from tests.e2e.netns import veth_pair as make_veth_pair

pytestmark = pytest.mark.e2e

SUBNET: Final = "10.123.0"
#: What this test proves is how nodes learn addresses from each other's HELLO; mDNS would
#: tell them too (tests/e2e/test_hosts.py covers it).
NO_MDNS: Final = ("--no-mdns",)


@pytest.fixture
def veth_pair() -> Iterator[tuple[Namespace, Namespace]]:
    """Two namespaces joined by a veth pair; deleted at teardown, even after a failure."""
    skip_without_netns()
    with make_veth_pair(SUBNET) as pair:
        yield pair


@pytest.fixture
def wildcard_net(
    tmp_path: Path, request: pytest.FixtureRequest, veth_pair: tuple[Namespace, Namespace]
) -> Iterator[tuple[ShoalNet, NamespacedNode, NamespacedNode]]:
    """Nodes a (in the first namespace) and b (in the second), not started; killed at teardown,
    before ``veth_pair`` deletes their namespaces. Their logs go into a failure's report."""
    net = ShoalNet(tmp_path)
    request.node.stash[NET_KEY] = net
    a = NamespacedNode("a", net.data_root / "a", net.log_root, veth_pair[0])
    b = NamespacedNode("b", net.data_root / "b", net.log_root, veth_pair[1])
    net.nodes.update(a=a, b=b)
    try:
        yield net, a, b
    finally:
        net.close()


def _address_of(peers: list[dict[str, Any]], node: ShoalNode) -> Any:
    by_id = {p.get("node_id"): p for p in peers}
    assert node.node_id in by_id, peers
    return by_id[node.node_id].get("address")


def _no_unspecified(peers: list[dict[str, Any]]) -> None:
    for peer in peers:
        address = str(peer.get("address"))
        assert not address.startswith(("0.0.0.0", "[::]")), peers


def test_nodes_listening_on_every_interface_advertise_their_interface_address(
    wildcard_net: tuple[ShoalNet, NamespacedNode, NamespacedNode],
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    net, a, b = wildcard_net
    a.run("init", "--data-dir", str(a.data_dir)).ok()
    a.start(listen="0.0.0.0:0", args=NO_MDNS)
    invite = a.cli("invite").ok().last_line  # names what a advertises, never 0.0.0.0
    assert invite.endswith(f"@{a.reachable_at}") or f"@{a.reachable_at}," in invite, invite
    b.run("init", "--data-dir", str(b.data_dir), "--join", invite).ok()
    b.start(listen="0.0.0.0:0", args=NO_MDNS)

    # --no-mdns: neither looks for the other on the LAN.
    for node in (a, b):
        assert "mDNS is off: turned off" in node.stderr_text()
    # b dialed a (the invite's address); a knows b only from what b advertised in its HELLO.
    net.wait_states(a, {b: "up"})
    net.wait_states(b, {a: "up"})
    peers_of_a, peers_of_b = a.peers(), b.peers()
    assert _address_of(peers_of_a, b) == b.reachable_at, peers_of_a
    assert _address_of(peers_of_b, a) == a.reachable_at, peers_of_b
    _no_unspecified(peers_of_a)
    _no_unspecified(peers_of_b)

    # A file put on b reaches a over the veth.
    assert a.status()["blocks"] == 0
    src, data = random_file("over-the-veth.bin", 3 * 1024 * 1024)
    cap = b.cli("put", str(src)).ok().last_line
    assert a.status()["blocks"] > 0
    out = tmp_path / "got-on-a.bin"
    a.cli("get", cap, "-o", str(out)).ok()
    assert out.read_bytes() == data

    # a restarts on a new port: b cannot find it; a dials b at the address b advertised.
    old = a.reachable_at
    assert a.terminate() == 0
    a.start(listen="0.0.0.0:0", args=NO_MDNS)
    net.wait_states(a, {b: "up"})
    net.wait_states(b, {a: "up"})
    assert _address_of(a.peers(), b) == b.reachable_at

    # And b now knows a at the address a advertised on its new start.
    def b_knows_new_address() -> tuple[bool, Any]:
        address = _address_of(b.peers(), a)
        return address == a.reachable_at, address

    net.wait(b_knows_new_address, what=f"b to know a at {a.reachable_at} (was {old})")
    _no_unspecified(a.peers())
    _no_unspecified(b.peers())
