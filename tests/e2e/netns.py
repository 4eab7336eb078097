"""Network namespaces for end-to-end tests that run nodes as separate hosts.

How it works: every namespace, veth pair and bridge a test needs is made by the test, under a
name unique to it (a random token), so tests on parallel xdist workers never meet, and nothing
is ever made in the machine's own namespace: a veth pair is created inside one test namespace
with its other end moved into another, and a bridge lives in a namespace of its own (the
"switch"). Every namespace gets its loopback up, so each node's local HTTP API is on its own
namespace's 127.0.0.1. Cleanup deletes the namespaces, which destroys every device in them; it
runs whatever happened, after the fixtures that own the processes killed them.

- :func:`veth_pair`: two namespaces joined by one veth pair.
- :func:`lan`: ``count`` hosts, each with one veth to a bridge in a switch namespace, on a
  private /24; :meth:`Lan.cut` and :meth:`Lan.restore` take a host's link down and up.
- :class:`NamespacedNode`: a :class:`~tests.e2e.conftest.ShoalNode` whose ``shoal run`` and
  CLI commands run inside one namespace (``ip netns exec``).

Needs root and iproute2; :func:`skip_without_netns` skips a test, saying which is missing.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from tests.e2e.conftest import (
    COMMAND_TIMEOUT,
    SHOAL,
    Result,
    ShoalNode,
    _text,
    shoal_env,
)

IP_TIMEOUT: Final = 30.0


def netns_unavailable() -> str | None:
    """Why this machine cannot run the namespace tests, or None if it can."""
    if os.geteuid() != 0:
        return (
            "making network namespaces needs root (CI runs as root; run as root to run these tests)"
        )
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (.ci/run installs it: apt-get install iproute2)"
    return None


def skip_without_netns() -> None:
    """Skip the calling test, saying why, on a machine that cannot make namespaces."""
    reason = netns_unavailable()
    if reason is not None:
        pytest.skip(reason)


def ip(*args: str) -> None:
    """``ip ARGS``; fail the test with its stderr if it fails."""
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


def _delete_namespace(name: str) -> None:
    # Best effort: a namespace that is already gone is fine; cleanup must never raise.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["ip", "netns", "del", name],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=IP_TIMEOUT,
            check=False,
        )


@dataclass(frozen=True)
class Namespace:
    """A network namespace with one interface ``device`` at IPv4 ``address`` (a /24)."""

    name: str
    device: str
    address: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]


@contextlib.contextmanager
def veth_pair(subnet: str) -> Iterator[tuple[Namespace, Namespace]]:
    """Two namespaces joined by a veth pair, ``<subnet>.1`` and ``<subnet>.2``; deleted on
    exit, even after a failure."""
    token = secrets.token_hex(4)  # unique per test: parallel tests never share a name
    a = Namespace(f"shoal-{token}-a", f"sh{token}a", f"{subnet}.1")
    b = Namespace(f"shoal-{token}-b", f"sh{token}b", f"{subnet}.2")
    made: list[Namespace] = []
    try:
        for ns in (a, b):
            ip("netns", "add", ns.name)
            made.append(ns)
        # Made in a's namespace with its other end moved to b's: never on the host itself.
        ip(
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
            ip("-n", ns.name, "link", "set", "lo", "up")
            ip("-n", ns.name, "addr", "add", f"{ns.address}/24", "dev", ns.device)
            ip("-n", ns.name, "link", "set", ns.device, "up")
        yield a, b
    finally:
        # Deleting a namespace destroys its veth end, and with it the other end.
        for ns in made:
            _delete_namespace(ns.name)


@dataclass(frozen=True)
class Lan:
    """Hosts on one bridge. ``switch`` is the namespace holding the bridge ``br0``; host ``i``
    is joined to it by a veth pair whose host end is ``eth0`` and switch end ``port<i>``."""

    switch: str
    hosts: tuple[Namespace, ...]

    def cut(self, host: Namespace) -> None:
        """Take ``host``'s interface down, as if its cable were pulled and the interface
        disabled: nothing goes in or out until :meth:`restore`."""
        ip("-n", host.name, "link", "set", host.device, "down")

    def restore(self, host: Namespace) -> None:
        """Bring ``host``'s interface back up."""
        ip("-n", host.name, "link", "set", host.device, "up")


@contextlib.contextmanager
def lan(count: int, subnet: str) -> Iterator[Lan]:
    """``count`` hosts at ``<subnet>.1`` ... ``<subnet>.<count>`` (/24) on one bridge; every
    namespace is deleted on exit, even after a failure."""
    assert 0 < count < 250, count
    token = secrets.token_hex(4)
    switch = f"shoal-{token}-switch"
    hosts = tuple(
        Namespace(f"shoal-{token}-h{i}", "eth0", f"{subnet}.{i}") for i in range(1, count + 1)
    )
    made: list[str] = []
    try:
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for i, host in enumerate(hosts, start=1):
            ip("netns", "add", host.name)
            made.append(host.name)
            port = f"port{i}"
            ip(
                "-n",
                host.name,
                "link",
                "add",
                host.device,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                switch,
            )
            ip("-n", switch, "link", "set", port, "master", "br0")
            ip("-n", switch, "link", "set", port, "up")
            ip("-n", host.name, "link", "set", "lo", "up")
            ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", host.device)
            ip("-n", host.name, "link", "set", host.device, "up")
        yield Lan(switch, hosts)
    finally:
        for name in reversed(made):
            _delete_namespace(name)


class NamespacedNode(ShoalNode):
    """A :class:`ShoalNode` whose ``shoal run`` and CLI commands run in ``namespace``."""

    def __init__(self, name: str, data_dir: Path, log_dir: Path, namespace: Namespace) -> None:
        super().__init__(name, data_dir, log_dir)
        self.namespace = namespace
        self._listen_host = ""

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
        args: Sequence[str] = (),
    ) -> None:
        assert not self.alive, f"{self.name} is already running"
        assert not peers, "not needed here: nodes join with an invite or find each other"
        assert not data_dir_from_env, "not needed here"
        self.starts += 1
        self._listen_host = listen.rpartition(":")[0]
        argv = [*SHOAL, "run", "--listen", listen, "--data-dir", str(self.data_dir), *args]
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

    @property
    def port(self) -> int:
        assert self.listen is not None, f"{self.name} is not running"
        return int(self.listen.rpartition(":")[2])

    @property
    def reachable_at(self) -> str:
        """Where the other namespaces reach this node: its interface address, its port."""
        return f"{self.namespace.address}:{self.port}"
