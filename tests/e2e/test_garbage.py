"""Garbage on a node's ports does not take the node down, and it keeps serving: its API, and its
peers, which fetch from it and store on it."""

from __future__ import annotations

import json
import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import ShoalNet, ShoalNode, get_over_network

pytestmark = pytest.mark.e2e

CLOSE_TIMEOUT = 30.0  # the node drops a bad connection within its handshake timeouts (5-10 s)


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    assert host == "127.0.0.1", address
    return host, int(port)


def client_hello() -> bytes:
    """The bytes of a genuine TLS ClientHello, made by the ssl module without any socket."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="shoal")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16", hello[:8]  # a TLS handshake record
    return hello


def send_raw(address: str, payload: bytes) -> socket.socket:
    """Connect, send ``payload`` (the node may hang up midway), half-close; return the socket."""
    sock = socket.create_connection(split_address(address), timeout=CLOSE_TIMEOUT)
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # reset or broken pipe: the node already refused it, which is fine
    return sock


def send_inside_tls(address: str, payload: bytes) -> socket.socket:
    """Complete a TLS handshake (no certificate check), then send ``payload`` as app data."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(split_address(address), timeout=CLOSE_TIMEOUT)
    sock = context.wrap_socket(raw, server_hostname="shoal")
    try:
        sock.sendall(payload)
    except OSError:
        pass
    return sock


def wait_closed_by_node(sock: socket.socket, what: str) -> None:
    """Read until the node closes the connection; fail if it keeps it open too long."""
    deadline = time.monotonic() + CLOSE_TIMEOUT
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                if not sock.recv(65536):
                    return
            except (ConnectionError, ssl.SSLError):
                return  # reset, or a TLS alert: closed either way
            except TimeoutError:
                break
        raise AssertionError(f"the node kept the connection open ({what})")
    finally:
        sock.close()


def peer_port_garbage() -> list[tuple[str, Callable[[str], socket.socket]]]:
    """Each case: (description, function that sends it to an address)."""
    hello = client_hello()
    too_big_frame = (0xFFFF_FFFF).to_bytes(4, "big") + os.urandom(64)
    bad_msgpack = (7 + 3).to_bytes(4, "big") + b"\x01" + bytes(4) + (3).to_bytes(2, "big")
    bad_msgpack += b"\xc1\xc1\xc1"  # 0xc1 is never valid msgpack
    return [
        ("64 KiB of random bytes", lambda a: send_raw(a, os.urandom(64 * 1024))),
        ("an HTTP request", lambda a: send_raw(a, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
        ("a ClientHello then junk", lambda a: send_raw(a, hello + os.urandom(4096))),
        ("a ClientHello alone", lambda a: send_raw(a, hello)),
        ("1 MiB of zeros", lambda a: send_raw(a, bytes(1024 * 1024))),
        ("an immediate close", lambda a: send_raw(a, b"")),
        ("random bytes inside TLS", lambda a: send_inside_tls(a, os.urandom(64 * 1024))),
        ("a 4 GiB frame length inside TLS", lambda a: send_inside_tls(a, too_big_frame)),
        ("a bad HELLO header inside TLS", lambda a: send_inside_tls(a, bad_msgpack)),
    ]


def api_address(node: ShoalNode) -> str:
    url = json.loads((node.data_dir / "api.json").read_text())["url"]
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def test_garbage_on_the_ports_does_not_take_the_node_down(
    shoal_net: ShoalNet, random_file: Callable[[str, int], tuple[Path, bytes]], tmp_path: Path
) -> None:
    # No background repair: it would copy the file below to n2 as soon as n2 is up (it has
    # one copy of three), and then n2's get would prove nothing about the network.
    n1 = shoal_net.start("n1", args=["--no-background-repair"])
    # A file only n1 holds (it is alone: one copy, and the CLI warns so), for n2 to fetch after
    # the garbage: the bytes can then only come from n1 over the network.
    src_before, data_before = random_file("before-garbage.bin", 3 * 1024 * 1024 + 7)
    put_before = n1.cli("put", str(src_before)).ok()
    assert "only 1 of 3 copies" in put_before.stderr, put_before.describe()
    cap_before = put_before.last_line
    only_on_n1 = n1.block_ids()
    n2 = shoal_net.start("n2", peers=[n1])
    shoal_net.wait_states(n1, {n2: "up"})
    assert n1.listen is not None

    # A connection that says nothing at all stays open while the rest happens.
    idle = socket.create_connection(split_address(n1.listen), timeout=CLOSE_TIMEOUT)

    for what, send in peer_port_garbage():
        sock = send(n1.listen)
        wait_closed_by_node(sock, what)
        shoal_net.check_running()
    # Refusals are logged as one line each; a traceback would mean an unhandled error path.
    assert "Traceback" not in n1.stderr_text(), "a traceback in n1's log (see its stderr)"

    # The local HTTP API gets its share (it answers 400/401 or hangs up; not checked here).
    api = api_address(n1)
    hello = client_hello()
    for payload in (
        os.urandom(64 * 1024),
        bytes(1024 * 1024),
        b"GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # no token
        b"PUT /v1/files/x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\nabc",
        b"GET /" + b"A" * 100_000 + b" HTTP/1.1\r\n\r\n",
        hello + os.urandom(1024),
    ):
        send_raw(api, payload).close()
        shoal_net.check_running()

    # Still up, still answering, still a peer, and still storing and serving files.
    assert n1.alive, n1.death_message("after the garbage")
    assert n1.status()["node_id"] == n1.node_id
    shoal_net.wait_states(n2, {n1: "up"})
    shoal_net.wait_states(n1, {n2: "up"})
    fetched = get_over_network(
        n2, cap_before, data_before, only_on_n1, tmp_path / "before-from-n2.bin"
    )
    assert fetched == only_on_n1  # n2 held none of it: n1 served every block
    src, data = random_file("after-garbage.bin", 3 * 1024 * 1024 + 5)
    cap = n1.cli("put", str(src)).ok().last_line
    assert n1.get_bytes("after-garbage.bin", tmp_path / "back.bin") == data
    assert n2.get_bytes(cap, tmp_path / "back-from-n2.bin") == data
    new_blocks = n1.block_ids() - only_on_n1
    assert new_blocks, "the new file left no block on n1"
    assert new_blocks <= n2.block_ids(), "n1 did not place a copy of every new block on n2"

    # The silent connection was dropped by the node's handshake timeout, not kept forever.
    wait_closed_by_node(idle, "a connection that never sent a byte")
