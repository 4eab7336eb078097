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

import secrets
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.e2e.conftest import (
    BANNER,
    COMMAND_TIMEOUT,
    NET_KEY,
    SHOAL,
    START_TIMEOUT,
    Result,
    ShoalNet,
    ShoalNode,
    _text,
    shoal_env,
    wait_for,
)

pytestmark = pytest.mark.e2e

SUBNET: Final = "10.123.0"
IP_TIMEOUT: Final = 30.0


@dataclass(frozen=True)
class Namespace:
    """A network namespace with one veth end at ``address``."""

    name: str
    device: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


def _ip(*args: str) -> None:
    done = subprocess.run(
        ["ip", *args],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        timeout=IP_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (
        f"$ ip {' '.join(args)}\nexit code {done.returncode}\n{_text(done.stderr)}"
        "\n(this test makes network namespaces: it needs root and iproute2)"
    )


@pytest.fixture
def veth_pair() -> Iterator[tuple[Namespace, Namespace]]:
    """Two namespaces joined by a veth pair; deleted at teardown, even after a failure."""
    token = secrets.token_hex(4)  # unique per test: parallel tests never share a name
    a = Namespace(f"shoal-{token}-a", f"sh{token}a", f"{SUBNET}.1")
    b = Namespace(f"shoal-{token}-b", f"sh{token}b", f"{SUBNET}.2")
    made: list[Namespace] = []
    try:
        for ns in (a, b):
            _ip("netns", "add", ns.name)
            made.append(ns)
        # Made in a's namespace with its other end moved to b's: never on the host itself.
        _ip(
            "-n",
            a.name,
            "link",
            "add",
            a.device,
            "type",
            "veth",
            "peer",
            "name",
            b.device,
            "netns",
            b.name,
        )
        for ns in (a, b):
            _ip("-n", ns.name, "link", "set", "lo", "up")
            _ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", ns.device)
            _ip("-n", ns.name, "link", "set", ns.device, "up")
        yield a, b
    finally:
        # Deleting a namespace destroys its veth end, and with it the other end.
        for ns in made:
            subprocess.run(
                ["ip", "netns", "del", ns.name],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                timeout=IP_TIMEOUT,
                check=False,
            )


class NamespacedNode(ShoalNode):
    """A :class:`ShoalNode` whose ``shoal run`` and CLI commands run in ``namespace``."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path, namespace: Namespace) -> None:
        super().__init__(name, data_dir, log_dir)
        self.namespace = namespace

    def run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        """``shoal <args>`` in this node's namespace, to completion."""
        argv = self.namespace.command([*SHOAL, *args])
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                env=shoal_env(),
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"`shoal {' '.join(args)}` in {self.namespace.name} did not finish in "
                f"{timeout:g} s\n--- stderr ---\n{_text(exc.stderr)[-4000:]}"
            ) from None
        return Result(tuple(args), done.returncode, _text(done.stdout), _text(done.stderr))

    def cli(self, command: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        return self.run(command, "--data-dir", str(self.data_dir), *args, timeout=timeout)

    def launch(
        self,
        *,
        listen: str = "0.0.0.0:0",
        peers: Sequence[str] = (),
        data_dir_from_env: bool = False,
    ) -> None:
        assert not self.alive, f"{self.name} is already running"
        assert not peers, "not needed here: nodes join with an invite"
        assert not data_dir_from_env, "not needed here"
        self.starts += 1
        argv = [*SHOAL, "run", "--listen", listen, "--data-dir", str(self.data_dir)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (
            self._log_path("out").open("wb") as out,
            self._log_path("err").open("wb") as err,
        ):
            self.proc = subprocess.Popen(
                self.namespace.command(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=shoal_env(),
            )
        self.should_run = True
        self.listen = None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        out_path = self._log_path("out")

        def banner() -> tuple[bool, str]:
            if not self.alive:
                raise AssertionError(self.death_message("before printing its banner"))
            text = out_path.read_text(errors="replace")
            return BANNER in text, text

        wait_for(banner, what=f"{self.name} to print its banner", timeout=timeout)
        status = self.status()
        self.listen = status["listen"]
        self.node_id = status["node_id"]
        assert isinstance(self.listen, str), status
        assert self.listen.startswith("0.0.0.0:"), status

    @property
    def port(self) -> int:
        assert self.listen is not None, f"{self.name} is not running"
        return int(self.listen.rpartition(":")[2])

    @property
    def reachable_at(self) -> str:
        """Where the other namespace reaches this node: its veth address, its port."""
        return f"{self.namespace.address}:{self.port}"


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
    a.start(listen="0.0.0.0:0")
    invite = a.cli("invite").ok().last_line  # names what a advertises, never 0.0.0.0
    assert invite.endswith(f"@{a.reachable_at}") or f"@{a.reachable_at}," in invite, invite
    b.run("init", "--data-dir", str(b.data_dir), "--join", invite).ok()
    b.start(listen="0.0.0.0:0")

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
    a.start(listen="0.0.0.0:0")
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
