"""Floods that only a real process shows: memory and service of a ``shoal run`` under load.

The unit and integration suites flood each limit in-process; here the node is a real process,
so what is bounded is its whole memory (``VmHWM``, the peak resident set since it started, from
/proc), every buffer, thread and allocator effect included. The bounds are generous: they are
there to catch memory that grows with the flood (per connection, per request), which is
hundreds of MiB, not a few MiB of noise. Each is relative to the node's own peak after a
warm-up round of the same put and gets, so the interpreter, libraries and thread pools are
already counted.

Both nodes run with ``--replicas 1``: each block of a file put through n1 goes to the one node
closest to its ID, so about half of a file's blocks are on n1 and half on n2. A get through n2
must then fetch n1's half from n1 (n1 serves a peer), and a get through n1 must fetch n2's half
(n1 fetches from a peer), over connections set up before the flood.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shoal.defaults import MAX_PENDING_PER_ADDRESS
from shoal.ids import decode_id
from shoal.node.datadir import load_data_dir
from shoal.protocol import GetBlock
from tests.e2e.conftest import WAIT_TIMEOUT, MiB, ShoalNet, ShoalNode, get_over_network
from tests.e2e.rogue import RoguePeer, split_address

# The floods measure memory and race a flood against a put: never beside the 50-process test
# (same group: same worker, one after the other, under `make test`'s --dist loadgroup).
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("heavy")]

RandomFile = Callable[[str, int], tuple[Path, bytes]]

FILE_SIZE = 16 * MiB + 3  # 17 chunks and a root: all on one node has odds 2**-17

TRANSFER_MARGIN = 32 * MiB
"""What the put and gets during and after a flood may add to the warm-up's peak: they move the
same amount as the warm-up (measured: 10-15 MiB more, allocator growth), and at most 2 x 8
chunks of 1 MiB are in flight in a transfer."""


@dataclass(frozen=True)
class Stored:
    """A file put through n1: its cap, bytes, and the blocks each node got."""

    cap: str
    data: bytes
    on_n1: set[str]
    on_n2: set[str]


def put_across(n1: ShoalNode, n2: ShoalNode, random_file: RandomFile, name: str) -> Stored:
    """Put a new file through n1 (one copy of each block) and see where its blocks went."""
    before = n1.block_ids() | n2.block_ids()
    src, data = random_file(name, FILE_SIZE)
    cap = n1.cli("put", str(src)).ok().last_line
    on_n1, on_n2 = n1.block_ids() - before, n2.block_ids() - before
    assert on_n1, f"no block of {name} on n1"
    assert on_n2, f"no block of {name} on n2"
    assert not on_n1 & on_n2, "one copy of each block was wanted, yet a block is on both"
    return Stored(cap, data, on_n1, on_n2)


def get_across(n1: ShoalNode, n2: ShoalNode, stored: Stored, dest: Path) -> None:
    """Get ``stored`` through n2 (n1 serves its half) and through n1 (n2 serves its half)."""
    blocks = stored.on_n1 | stored.on_n2
    assert get_over_network(n2, stored.cap, stored.data, blocks, dest) == stored.on_n1
    assert get_over_network(n1, stored.cap, stored.data, blocks, dest) == stored.on_n2


def start_pair(net: ShoalNet) -> tuple[ShoalNode, ShoalNode]:
    n1, n2 = net.mesh("n1", "n2", args=("--replicas", "1"))
    assert n1.listen is not None
    return n1, n2


def limit_warnings(node: ShoalNode) -> list[str]:
    """The node's ``limit <name>: ...`` log lines."""
    return [
        line
        for line in node.stderr_text().splitlines()
        if " WARNING " in line and " limit " in line
    ]


# -- 2,000 idle connections ---------------------------------------------------------------------

IDLE_CONNECTIONS = 2000  # at least; more if the put and gets during the flood take longer
MAX_FLOOD_SECONDS = 600.0
"""A safety stop for a flood whose test died without stopping it (not a timing assert: the put
and get made during the flood end it, however long a loaded machine makes them)."""
BATCH = 50
IDLE_MARGIN = TRANSFER_MARGIN + 32 * MiB
"""Over the warm-up peak. A node that kept even a 64 KiB buffer per idle connection would need
125 MiB more for 2,000 of them; before the connection limits it took 256 KiB each (500 MiB),
and about 580 MiB in all was measured. 32 MiB covers the few connections admitted at a time
(8 pending per address, each with a 16 KiB buffer and a TLS object) and noise."""


@contextlib.contextmanager
def open_files_limit(needed: int) -> Iterator[None]:
    """Raise this process's soft RLIMIT_NOFILE to at least ``needed`` (restored on exit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        yield
        return
    assert hard == resource.RLIM_INFINITY or hard >= needed, (
        f"this test opens {needed} sockets; the hard limit on open files is {hard}"
    )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class IdleFlood(threading.Thread):
    """Opens TCP connections to ``address`` that never send a byte, in batches, from the
    moment it starts until it is stopped and at least ``minimum`` were opened. Every socket
    stays open (on this side) until :meth:`close`.

    Why batches: when a listener's accept queue (100 here) overflows, the kernel drops the
    connection's last ACK; the client believes it is connected, the node never hears of it
    (about half of 2,000 connects at once were lost that way). ``BATCH`` connects never
    overflow it, and the next batch starts once the node has closed all but the few it admits
    for a TLS handshake (``MAX_PENDING_PER_ADDRESS`` from one address, until their handshake
    timeout): so every connection reaches the node, and the node must refuse them as they come.
    The sockets the node has closed are closed here too, so a long flood (a slow put on a
    loaded machine) needs no more file descriptors than a short one.
    """

    def __init__(self, net: ShoalNet, address: str, minimum: int) -> None:
        super().__init__(name="idle flood", daemon=True)
        self.net = net
        self.address = address
        self.minimum = minimum
        self.socks: list[socket.socket] = []  # those the node has not closed (yet)
        self.opened = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            started = time.monotonic()
            while self.opened < self.minimum or not self.stopping.is_set():
                assert time.monotonic() - started < MAX_FLOOD_SECONDS, "the flood was never stopped"
                self._batch()
        except BaseException as exc:  # handed to the test by stop()
            self.error = exc

    def _batch(self) -> None:
        for _ in range(BATCH):
            sock = socket.create_connection(split_address(self.address), timeout=30)
            sock.setblocking(False)  # for closed_by_peer
            self.socks.append(sock)
            self.opened += 1
        self.net.wait(
            lambda: (
                (n := self.open_count()) <= MAX_PENDING_PER_ADDRESS,
                n,
            ),
            what=f"n1 to close all but {MAX_PENDING_PER_ADDRESS} of {self.opened} idle "
            "connections (last seen: how many are open)",
        )
        closed = [sock for sock in self.socks if closed_by_peer(sock)]
        self.socks = [sock for sock in self.socks if sock not in closed]
        for sock in closed:
            sock.close()

    def open_count(self) -> int:
        """How many of the connections the node has not closed yet."""
        return sum(sock.fileno() != -1 and not closed_by_peer(sock) for sock in list(self.socks))

    def stop(self) -> None:
        """Finish (after ``minimum`` connections); raise what went wrong in the thread."""
        self.stopping.set()
        self.join(timeout=WAIT_TIMEOUT * 2)
        assert not self.is_alive(), "the flood did not stop"
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        self.stopping.set()
        self.join(timeout=WAIT_TIMEOUT * 2)
        for sock in self.socks:
            sock.close()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end has closed ``sock`` (EOF or reset); ``sock`` is non-blocking
    (a socket with a timeout would wait for data, MSG_DONTWAIT or not)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.ECONNRESET, errno.EPIPE)


def test_two_thousand_idle_connections_cost_no_memory_and_no_service(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    n1, n2 = start_pair(shoal_net)
    assert n1.listen is not None
    get_across(n1, n2, put_across(n1, n2, random_file, "warm-up"), tmp_path / "warm-up")
    bound = n1.memory().peak + IDLE_MARGIN

    with open_files_limit(4 * BATCH + 256):
        flood = IdleFlood(shoal_net, n1.listen, IDLE_CONNECTIONS)
        flood.start()
        try:
            # While connections keep coming (the flood goes on until this is done): the API
            # answers, and n1 stores on and fetches from its peer over their connection (a new
            # one from 127.0.0.1 would now wait for a pending slot like the flood's).
            assert n1.status()["node_id"] == n1.node_id
            stored = put_across(n1, n2, random_file, "during")
            get_across(n1, n2, stored, tmp_path / "during")
            flood.stop()
            # After: the same (while the last connections it admitted time out).
            assert n1.status()["node_id"] == n1.node_id
            shoal_net.wait_states(n2, {n1: "up"})
            get_across(n1, n2, put_across(n1, n2, random_file, "after"), tmp_path / "after")
            # n1 holds none of them for long: past its limits it closes a connection at once,
            # and the few it admitted time out in the handshake.
            shoal_net.wait(
                lambda: ((n := flood.open_count()) == 0, n),
                what="n1 to close every idle connection (last seen: how many are open)",
            )
        finally:
            flood.close()
    memory = n1.memory()
    assert memory.peak < bound, f"n1 after {flood.opened} idle connections: {memory}"
    # The limit said so in the log, once (a minute), not once per connection.
    warnings = limit_warnings(n1)
    assert warnings, "no limit was logged although 2,000 connections came from one address"
    assert len(warnings) <= 3, warnings


# -- peers that ask for blocks and never read ------------------------------------------------------

ROGUES = 12  # under the 16 inbound connections allowed per source address (n2 may be one)
REQUESTS_PER_ROGUE = 200  # small (about 60 bytes each): they fit in the socket buffers
ANSWERED = 32 * 1024
"""Unread bytes in a rogue's socket that show n1 is answering its GET_BLOCKs (block data); the
small messages a node sends a new peer (GET_PEERS, a PING) are a few hundred bytes."""
ROGUE_MARGIN = TRANSFER_MARGIN + ROGUES * 8 * MiB
"""Over the warm-up peak. Per connection, answers are produced only as fast as the peer reads:
at most 2 answers of one 1 MiB block in production, plus what was written and not yet read (the
transport's buffer up to its high-water mark, and the answer above it): about 4 MiB, measured
3.5 MiB; twice that is allowed. Before the per-connection limits a node produced 32 answers per
connection at once: 32 MiB each here, 384 MiB for 12 rogues (the issue measured 310 MiB per
connection with 4 MiB blocks)."""
PUT_BOUND = 25.0
GET_BOUND = 25.0
"""Bounds on a put and a get of 16 MiB through the flooded node (command timeouts, not timing
asserts): they take 1-3 s on this machine; waiting the 30 s request timeout even once for a
peer that does not read exceeds them."""


def data_blocks(node: ShoalNode) -> list[bytes]:
    """The IDs of the node's 1 MiB blocks (whole chunks, not manifests), in binary form."""
    root = node.data_dir / "blocks"
    ids = sorted(node.block_ids())
    return [decode_id(i) for i in ids if (root / i[:2] / i[2:4] / i).stat().st_size >= MiB]


@contextlib.contextmanager
def rogues_flooding(net: ShoalNet, node: ShoalNode, count: int) -> Iterator[list[RoguePeer]]:
    """``count`` members of the node's network that each send it ``REQUESTS_PER_ROGUE``
    GET_BLOCKs of its largest blocks and never read; yields once the node answers all of them.
    They are closed on exit."""
    assert node.listen is not None
    blocks = data_blocks(node)
    assert blocks, f"{node.name} holds no 1 MiB block to be asked for"
    network = load_data_dir(node.data_dir).network  # the secret: the rogues are insiders
    rogues: list[RoguePeer] = []
    try:
        for _ in range(count):
            rogue = RoguePeer(node.listen, network)
            rogues.append(rogue)
            rogue.send_requests(
                GetBlock(block_id=blocks[i % len(blocks)]) for i in range(REQUESTS_PER_ROGUE)
            )
        net.wait(
            lambda: (
                all(r.unread_bytes() >= ANSWERED for r in rogues),
                [r.unread_bytes() for r in rogues],
            ),
            what=f"{node.name} to start answering every rogue (last seen: unread bytes)",
        )
        yield rogues
    finally:
        for rogue in rogues:
            rogue.close()


def wait_rogues_down(net: ShoalNet, node: ShoalNode, rogues: list[RoguePeer]) -> None:
    """Wait until ``node`` no longer reports any of ``rogues`` up."""
    ids = {r.node_id for r in rogues}

    def check() -> tuple[bool, list[str]]:
        up = [p["node_id"] for p in node.peers() if p["node_id"] in ids and p["state"] == "up"]
        return not up, up

    net.wait(check, what=f"{node.name} to see no rogue up (last seen: the rogues still up)")


def test_peers_that_ask_for_blocks_and_never_read_cost_bounded_memory(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    n1, n2 = start_pair(shoal_net)
    warm_up = put_across(n1, n2, random_file, "warm-up")
    get_across(n1, n2, warm_up, tmp_path / "warm-up")
    bound = n1.memory().peak + ROGUE_MARGIN

    with rogues_flooding(shoal_net, n1, ROGUES) as rogues:  # each has unread answers now
        # Other clients are served meanwhile: the API, and n2 fetching n1's half of a file
        # from n1 (n2 does not know the rogues: they announce no address).
        assert n1.status()["node_id"] == n1.node_id
        assert (
            get_over_network(
                n2,
                warm_up.cap,
                warm_up.data,
                warm_up.on_n1 | warm_up.on_n2,
                tmp_path / "during",
            )
            == warm_up.on_n1
        )
        during = n1.memory()
    assert during.peak < bound, f"n1 with {ROGUES} peers that never read: {during}"

    # After the rogues hung up: n1 notices, and stores and fetches as before.
    wait_rogues_down(shoal_net, n1, rogues)
    shoal_net.wait_states(n1, {n2: "up"})
    get_across(n1, n2, put_across(n1, n2, random_file, "after"), tmp_path / "after")
    after = n1.memory()
    assert after.peak < bound, f"n1 after the flood: {after}"


def test_a_node_flooded_by_peers_that_never_read_still_puts_and_gets(
    shoal_net: ShoalNet, random_file: RandomFile, tmp_path: Path
) -> None:
    """The rogues are members, so n1 may pick them as holders of a block or ask them for one;
    they answer nothing (they never read), and n1 has stopped reading them (its per-connection
    limits hold them back). The put and the get through n1 must not wait on them for the
    request timeout: they finish within a bound that excludes even one such wait."""
    n1, n2 = start_pair(shoal_net)
    warm_up = put_across(n1, n2, random_file, "warm-up")

    with rogues_flooding(shoal_net, n1, 4):
        src, data = random_file("during", FILE_SIZE)
        cap = n1.cli("put", str(src), timeout=PUT_BOUND).ok().last_line
        assert n2.get_bytes(cap, tmp_path / "during") == data
        # n1 lacks n2's half of the warm-up file and fetches it: from n2, not from a rogue.
        get_over_network(
            n1,
            warm_up.cap,
            warm_up.data,
            warm_up.on_n1 | warm_up.on_n2,
            tmp_path / "warm-up",
            timeout=GET_BOUND,
        )


def test_a_peer_that_never_reads_is_dropped_without_a_traceback(
    shoal_net: ShoalNet, random_file: RandomFile
) -> None:
    """A peer that never reads never answers a PING: the liveness check declares it down (and
    closes its connection) although n1's read loop is held back by its requests. The wait is
    bounded by the harness's 60 s; the check itself takes a quiet interval (7.5 s on the
    listening side) and a PING timeout (10 s)."""
    n1, n2 = start_pair(shoal_net)
    put_across(n1, n2, random_file, "warm-up")

    with rogues_flooding(shoal_net, n1, 2) as rogues:
        wait_rogues_down(shoal_net, n1, rogues)
    assert "Traceback" not in n1.stderr_text(), "a traceback in n1's log (see its stderr)"
    assert n1.status()["node_id"] == n1.node_id
    shoal_net.wait_states(n1, {n2: "up"})
