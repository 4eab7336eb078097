"""Real hosts: nodes as separate processes in network namespaces on one bridge, each on its own
private IP address, started with no ``--peer``.

What is proved, as a user sees it:
- Nodes find each other by mDNS alone (nothing else tells them any address: no ``--peer``, no
  invite, an empty catalog), and a node of another network on the same LAN is never connected
  to (it sees them and ignores them; they never dial it).
- A file put on one host gets on every other; there are more nodes than replicas, so some of
  the bytes each host returns crossed the bridge.
- A host cut off (its interface taken down) is seen down by the others; a file put meanwhile is
  on the other hosts only; once the interface is back up the host reconnects by itself (same
  process, no restart) and gets that file.

How it works: :func:`tests.e2e.netns.lan` makes a switch namespace with a bridge and one
namespace per host joined to it by a veth pair, on 10.77.0.0/24; every ``shoal`` command runs in
its host's namespace (``ip netns exec``), so no multicast or TCP ever reaches a real interface
of the machine. The members of one closed network share its secret (``network.key`` copied
from the first node: ``shoal init --join`` would also write the inviting node's address as a
bootstrap peer, which is exactly what these tests must not give them). Needs root and iproute2;
without them the tests skip, saying which is missing. Every wait polls a condition against a
deadline; the measured times (discovery, heal) are printed, never asserted.
"""

from __future__ import annotations

import datetime
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Final

import pytest

from shoal.ids import decode_id, short_id
from tests.e2e.conftest import NET_KEY, ShoalNet, get_over_network
from tests.e2e.netns import Lan, NamespacedNode, lan, skip_without_netns

pytestmark = pytest.mark.e2e

SUBNET: Final = "10.77.0"
#: Members of the network (more than the 3 replicas, so some bytes must cross the bridge).
MEMBERS: Final = 4
#: Bound on the nodes finding each other and on a cut host being seen down or back up.
MESH_TIMEOUT: Final = 90.0
MiB: Final = 1 << 20


class HostsNet(ShoalNet):
    """A :class:`ShoalNet` whose nodes each run on one host of a :class:`Lan`."""

    def __init__(self, root: Path, lan: Lan) -> None:
        super().__init__(root)
        self.lan = lan

    def host_node(self, index: int, name: str) -> NamespacedNode:
        """Node ``name`` on host ``index`` (0-based), initialized, not started."""
        node = NamespacedNode(name, self.data_root / name, self.log_root, self.lan.hosts[index])
        self.nodes[name] = node
        node.run("init", "--data-dir", str(node.data_dir)).ok()  # a new closed network
        return node


@pytest.fixture
def hosts(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[HostsNet]:
    """A LAN of ``MEMBERS + 1`` hosts; the processes are killed before the namespaces go."""
    skip_without_netns()
    with lan(MEMBERS + 1, SUBNET) as the_lan:
        net = HostsNet(tmp_path, the_lan)
        request.node.stash[NET_KEY] = net
        try:
            yield net
        finally:
            net.close()


def start_members(net: HostsNet, count: int) -> list[NamespacedNode]:
    """``count`` members of one closed network, one per host, started with no ``--peer``.

    The second listens on every interface (``0.0.0.0``: mDNS then runs on the interfaces it
    advertises, here its one veth), the others on their host's address.
    """
    members = [net.host_node(i, f"m{i + 1}") for i in range(count)]
    for member in members[1:]:
        shutil.copyfile(members[0].data_dir / "network.key", member.data_dir / "network.key")
    for i, member in enumerate(members):
        member.launch(listen="0.0.0.0:0" if i == 1 else f"{member.namespace.address}:0")
    for member in members:
        member.wait_ready()
    return members


def wait_mesh(net: HostsNet, nodes: Sequence[NamespacedNode], state: str = "up") -> float:
    """Wait until every node sees every other one in ``state``; the seconds it took."""
    start = time.monotonic()
    for node in nodes:
        net.wait_states(
            node, {other: state for other in nodes if other is not node}, timeout=MESH_TIMEOUT
        )
    return time.monotonic() - start


_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")


def log_times(node: NamespacedNode, pattern: str) -> list[float]:
    """When (``time.time()``) ``node`` logged each message that starts with regex ``pattern``."""
    times = []
    for line in node.stderr_text().splitlines():
        match = _LOG_LINE.match(line)
        if match and re.match(pattern, match.group(2)):
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
            times.append(stamp.timestamp())
    return times


def last_peer_up(nodes: Sequence[NamespacedNode], after: float) -> float:
    """The time of the last "peer ... up" line any of ``nodes`` logged after ``after``."""
    ups = [t for node in nodes for t in log_times(node, r"peer \S+ up ") if t >= after]
    assert ups, "no node logged a peer up"
    return max(ups)


def found_by_mdns(node: NamespacedNode, others: Sequence[NamespacedNode]) -> set[str]:
    """The names of ``others`` that ``node`` logged it found by mDNS."""
    text = node.stderr_text()
    return {
        other.name
        for other in others
        if f"mDNS: found node {short_id(decode_id(str(other.node_id)))}" in text
    }


def test_nodes_on_a_lan_find_each_other_by_mdns_and_share_files(
    hosts: HostsNet,
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    # A node of another network on the same LAN, verbose so its log shows what it ignored.
    stranger = hosts.host_node(MEMBERS, "stranger")
    stranger.launch(listen=f"{stranger.namespace.address}:0", args=("-v",))
    stranger.wait_ready()

    started = time.monotonic()
    members = start_members(hosts, MEMBERS)
    wait_mesh(hosts, members)
    # From the last node listening to the last connection up, as the nodes logged it (the
    # polled figure adds process start-up and the CLI's own start-up on a busy machine).
    listening = max(t for m in members for t in log_times(m, "telling peers to reach"))
    took = last_peer_up(members, listening) - listening
    print(
        f"{MEMBERS} hosts found each other by mDNS {took:.1f} s after the last one listened "
        f"({time.monotonic() - started:.1f} s from launch, polled)"
    )
    for member in members:
        others = [m for m in members if m is not member]
        # Nothing but mDNS could have named a peer: every member found some by it.
        assert found_by_mdns(member, others), member.stderr_text()
        peers = {p["node_id"]: p["address"] for p in member.peers()}
        assert peers == {m.node_id: m.reachable_at for m in others}
        # Each announced its own interface address only (never 127.0.0.1 nor 0.0.0.0).
        announcing = f"mDNS: announcing this node at {member.reachable_at} on the local network"
        assert announcing in member.stderr_text()

    # The stranger saw every member's announcement, ignored it, and nobody connected to it.
    def stranger_saw_all() -> tuple[bool, str]:
        text = stranger.stderr_text()
        return text.count("mDNS: ignoring node") >= MEMBERS, text

    hosts.wait(stranger_saw_all, what="the stranger to see and ignore every member")
    assert stranger.peers() == []
    assert "refused connection" not in stranger.stderr_text()  # no member dialed it

    # A file put on one host gets on every other; each lacked blocks it had to fetch.
    src, data = random_file("lan.bin", 8 * MiB)
    cap = members[0].cli("put", str(src)).ok().last_line
    file_blocks = set().union(*(m.block_ids() for m in members))
    fetched = 0
    for i, member in enumerate(members[1:], start=1):
        if file_blocks - member.block_ids():
            dest = tmp_path / f"got-{i}.bin"
            fetched += len(get_over_network(member, cap, data, file_blocks, dest))
        else:
            assert member.get_bytes(cap, tmp_path / f"got-{i}.bin") == data
    assert fetched > 0, "no host lacked a block: nothing crossed the bridge"
    assert stranger.block_ids() == set()

    # A clean stop with mDNS running: goodbye sent, sockets closed, exit code 0.
    for node in members:
        assert node.terminate() == 0, node.stderr_text()
        assert "Traceback" not in node.stderr_text()


def test_a_host_cut_off_and_brought_back_heals_without_a_restart(
    hosts: HostsNet,
    random_file: Callable[[str, int], tuple[Path, bytes]],
    tmp_path: Path,
) -> None:
    members = start_members(hosts, MEMBERS)
    wait_mesh(hosts, members)
    cut, rest = members[-1], members[:-1]
    pid = cut.pid

    hosts.lan.cut(cut.namespace)
    started = time.monotonic()
    for node in rest:
        hosts.wait_states(node, {cut: "down"}, timeout=MESH_TIMEOUT)
    hosts.wait_states(cut, dict.fromkeys(rest, "down"), timeout=MESH_TIMEOUT)
    print(f"the cut host was seen down after {time.monotonic() - started:.1f} s")

    # A put while the host is away lands on the others only.
    src, data = random_file("while-cut.bin", 4 * MiB)
    cap = rest[0].cli("put", str(src)).ok().last_line
    file_blocks = set().union(*(m.block_ids() for m in rest))
    assert file_blocks
    assert not cut.block_ids() & file_blocks

    hosts.lan.restore(cut.namespace)
    restored, started = time.time(), time.monotonic()
    wait_mesh(hosts, members)
    took = last_peer_up(members, restored) - restored
    print(
        f"the cut host was up with every peer again {took:.1f} s after its link came back "
        f"({time.monotonic() - started:.1f} s polled)"
    )
    assert cut.pid == pid
    assert cut.alive
    assert cut.starts == 1

    # It had none of the file's blocks: every byte it reads came over the healed link, by the
    # get itself or, for blocks it is now among the closest to, by repair or handoff before.
    dest = tmp_path / "got-after-heal.bin"
    if file_blocks - cut.block_ids():
        get_over_network(cut, cap, data, file_blocks, dest)
    else:
        assert cut.get_bytes(cap, dest) == data
    # And the healed host's puts reach the others.
    src2, data2 = random_file("after-heal.bin", 2 * MiB)
    cap2 = cut.cli("put", str(src2)).ok().last_line
    assert rest[0].get_bytes(cap2, tmp_path / "got-from-healed.bin") == data2
