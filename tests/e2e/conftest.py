"""Fixtures for end-to-end tests: real ``shoal run`` processes on 127.0.0.1, driven by the CLI.

How it works: the ``shoal_net`` fixture hands a test a :class:`ShoalNet`, a set of named nodes
whose data dirs live under the test's ``tmp_path``. Each node is a ``shoal run`` subprocess of
this very interpreter (``python -m shoal.cli.main``), listening on ``127.0.0.1:0``; its stdout and
stderr go to files (never pipes, which could fill up and block a chatty node), so they can be
read at any time and survive the process. A node is ready once its banner line is on stdout; its
real peer address then comes from ``shoal status --json`` (field ``listen``).

Nothing here sleeps for a fixed time to let something happen: every wait polls a condition
(the banner, ``shoal peers --json``, a process exit) against a deadline. Deadlines are generous
(a loaded 2-core machine is slow) and only bound failures. While polling, every node that should
be running is checked: a node that crashed fails the test at once with its stderr instead of
after a timeout.

Tests look inside too: ``block_ids()`` lists the blocks in a node's ``blocks/`` directory, so a
test can prove a get read from peers and not locally (``get_over_network``: the reader lacked
some of the file's blocks just before); ``memory()`` reads a node's VmRSS and VmHWM from /proc;
``freeze()`` and ``thaw()`` send SIGSTOP and SIGCONT.

Every process is killed in the fixture's finalizer, whatever happened (a frozen one is resumed
first). When a test fails, each node's stderr (and exit code) is attached to the failure report
as its own section.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest

from shoal.ids import ID_TEXT_LENGTH

T = TypeVar("T")

SHOAL: Final = [sys.executable, "-m", "shoal.cli.main"]
COMMAND_TIMEOUT: Final = 60.0
"""Bound on one CLI command (a 20 MiB put on a loaded machine takes a few seconds)."""
START_TIMEOUT: Final = 60.0
"""Bound on a node printing its banner."""
WAIT_TIMEOUT: Final = 60.0
"""Bound on a cluster reaching a state (peers up or down)."""
STOP_TIMEOUT: Final = 60.0
"""Bound on a node exiting after a signal."""
POLL_INTERVAL: Final = 0.1
LOG_TAIL_LINES: Final = 200
BANNER: Final = "listening on "
MiB: Final = 1 << 20


def shoal_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a ``shoal`` subprocess: ours, minus a stray ``SHOAL_DATA_DIR``."""
    env = {k: v for k, v in os.environ.items() if k != "SHOAL_DATA_DIR"}
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class Result:
    """What a finished ``shoal`` command did."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        """The command, its exit code and output, for assertion messages."""
        return (
            f"$ shoal {' '.join(self.args)}\nexit code {self.code}\n"
            f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}"
        )

    def ok(self) -> Result:
        """Assert exit code 0; return self."""
        assert self.code == 0, self.describe()
        return self

    @property
    def last_line(self) -> str:
        """The last non-empty line of stdout."""
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"no output\n{self.describe()}"
        return lines[-1].strip()

    @property
    def error_lines(self) -> list[str]:
        """The lines of stderr that start with ``error:``."""
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_shoal(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = COMMAND_TIMEOUT,
) -> Result:
    """Run one ``shoal`` command to completion (bounded by ``timeout``)."""
    try:
        done = subprocess.run(
            [*SHOAL, *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env=shoal_env(env),
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has killed the child already.
        raise AssertionError(
            f"`shoal {' '.join(args)}` did not finish in {timeout:g} s\n"
            f"--- stderr ---\n{_text(exc.stderr)[-4000:]}"
        ) from None
    return Result(tuple(args), done.returncode, _text(done.stdout), _text(done.stderr))


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    return data.decode(errors="replace")


def wait_for(
    check: Callable[[], tuple[bool, T]],
    *,
    what: str,
    timeout: float = WAIT_TIMEOUT,
    guard: Callable[[], None] | None = None,
) -> T:
    """Poll ``check`` until it reports done; return what it observed last.

    Args:
        check: Returns ``(done, observed)``; ``observed`` goes into the timeout message.
        what: The awaited condition, in words, for the timeout message.
        timeout: Seconds before giving up (a bound on failure, not an expected duration).
        guard: Called before each poll; raises to abort early (e.g. a node crashed).

    Raises:
        AssertionError: The condition did not hold within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if guard is not None:
            guard()
        done, observed = check()
        if done:
            return observed
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; last seen: {observed!r}"[:8000]
            )
        time.sleep(POLL_INTERVAL)


class ShoalNode:
    """One data dir and the ``shoal run`` process (if any) serving it."""

    def __init__(
        self,
        name: str,
        data_dir: Path,
        log_dir: Path,
        *,
        before_first_launch: Callable[[ShoalNode], None] | None = None,
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.log_dir = log_dir
        self._before_first_launch = before_first_launch
        self.proc: subprocess.Popen[bytes] | None = None
        self.should_run = False  # False once we stopped or killed it on purpose
        self._listen_host = "127.0.0.1"  # where wait_ready expects it to listen
        self.starts = 0
        self.listen: str | None = None  # peer address, from `shoal status --json`
        self.node_id: str | None = None
        self.exit_codes: list[int] = []
        self.frozen = False  # SIGSTOPped by :meth:`freeze`, not yet SIGCONTed

    def __repr__(self) -> str:
        return f"<ShoalNode {self.name} {self.listen or '-'} pid={self.pid}>"

    # -- files ---------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _log_path(self, stream: str, start: int | None = None) -> Path:
        return self.log_dir / f"{self.name}.{start or self.starts}.{stream}"

    def log_files(self) -> list[Path]:
        """Every stdout and stderr file of every start of this node."""
        return [
            path
            for start in range(1, self.starts + 1)
            for path in (self._log_path("out", start), self._log_path("err", start))
            if path.exists()
        ]

    def stderr_text(self) -> str:
        """The stderr of every start of this node, the last lines of each."""
        parts = []
        for start in range(1, self.starts + 1):
            path = self._log_path("err", start)
            text = path.read_text(errors="replace") if path.exists() else ""
            lines = text.splitlines()
            if len(lines) > LOG_TAIL_LINES:
                cut = f"[... {len(lines) - LOG_TAIL_LINES} lines cut ...]"
                lines = [cut, *lines[-LOG_TAIL_LINES:]]
            parts.append(f"=== start {start} ===\n" + "\n".join(lines))
        return "\n".join(parts)

    # -- process -------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def launch(
        self,
        *,
        listen: str = "127.0.0.1:0",
        peers: Sequence[str] = (),
        data_dir_from_env: bool = False,
        args: Sequence[str] = (),
    ) -> None:
        """Start ``shoal run`` without waiting for it (see :meth:`wait_ready`).

        ``args`` are further ``shoal run`` options (e.g. ``("--replicas", "1")``).
        """
        assert not self.alive, f"{self.name} is already running"
        if self.starts == 0 and self._before_first_launch is not None:
            self._before_first_launch(self)
        self.starts += 1
        command = ["run", "--listen", listen, *args]
        for peer in peers:
            command += ["--peer", peer]
        env: dict[str, str] = {}
        if data_dir_from_env:
            env["SHOAL_DATA_DIR"] = str(self.data_dir)
        else:
            command += ["--data-dir", str(self.data_dir)]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # The child gets its own copies of these descriptors; ours can close at once.
        with (
            self._log_path("out").open("wb") as out,
            self._log_path("err").open("wb") as err,
        ):
            self.proc = subprocess.Popen(
                [*SHOAL, *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=shoal_env(env),
            )
        self.should_run = True
        self.listen = None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait for the banner, then read the node's address and ID from ``shoal status``."""
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
        assert self.listen.startswith(f"{self._listen_host}:"), status

    def start(self, **kwargs: Any) -> ShoalNode:
        """:meth:`launch` then :meth:`wait_ready`."""
        self.launch(**kwargs)
        self.wait_ready()
        return self

    def signal(self, sig: signal.Signals, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the process to exit; return its exit code."""
        assert self.proc is not None, f"{self.name} was never started"
        assert self.alive, f"{self.name} is not running"
        self.should_run = False
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)
            raise AssertionError(
                f"{self.name} did not exit within {timeout:g} s of {sig.name}\n{self.stderr_text()}"
            ) from None
        self.exit_codes.append(code)
        return code

    def kill9(self) -> None:
        """SIGKILL: the node gets no chance to clean up."""
        code = self.signal(signal.SIGKILL)
        assert code == -signal.SIGKILL, code

    def terminate(self) -> int:
        """SIGTERM (a clean stop); return the exit code."""
        return self.signal(signal.SIGTERM)

    def _running_pid(self) -> int:
        assert self.proc is not None, f"{self.name} was never started"
        assert self.alive, f"{self.name} is not running"
        return self.proc.pid

    def freeze(self) -> None:
        """SIGSTOP: the process stays, holds its sockets, and does nothing at all.

        :meth:`thaw` resumes it; :meth:`cleanup` always does, before killing it.
        """
        pid = self._running_pid()
        self.frozen = True
        os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: a frozen node goes on where it stopped."""
        os.kill(self._running_pid(), signal.SIGCONT)
        self.frozen = False

    def cleanup(self) -> None:
        """Kill the process if it is still running (finalizers call this)."""
        if self.proc is not None and self.proc.poll() is None:
            self.should_run = False
            if self.frozen:
                # SIGKILL ends a stopped process too; resuming it first all the same means no
                # process is ever left stopped, whatever happens to the kill.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGCONT)
                self.frozen = False
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass  # nothing more we can do; it is SIGKILLed

    def death_message(self, when: str) -> str:
        """Explain that this node exited unexpectedly, with its stderr."""
        code = self.proc.poll() if self.proc is not None else None
        return f"node {self.name} exited with code {code} {when}\n{self.stderr_text()}"

    # -- inspection ----------------------------------------------------------------------------

    def block_ids(self) -> set[str]:
        """The IDs of the blocks in this node's store, from its ``blocks/`` directory.

        Only installed blocks count (``blocks/<2>/<2>/<id>``): not ``tmp/`` nor ``corrupt/``.
        """
        root = self.data_dir / "blocks"
        return {
            path.name
            for path in root.glob("??/??/*")
            if len(path.name) == ID_TEXT_LENGTH and path.name.startswith(path.parent.parent.name)
        }

    def memory(self) -> Memory:
        """The process's resident memory now and at its peak, from ``/proc/<pid>/status``."""
        fields: dict[str, int] = {}
        for line in Path(f"/proc/{self._running_pid()}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                number, unit = value.split()
                assert unit == "kB", line
                fields[key] = int(number) * 1024
        return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])

    # -- CLI -----------------------------------------------------------------------------------

    def cli(self, command: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> Result:
        """``shoal <command> --data-dir <this node's dir> <args>``."""
        return run_shoal(command, "--data-dir", str(self.data_dir), *args, timeout=timeout)

    def json(self, command: str, *args: str) -> Any:
        """Run a ``--json`` command; assert success and return the parsed output."""
        result = self.cli(command, "--json", *args).ok()
        try:
            return json.loads(result.stdout)
        except ValueError as exc:
            raise AssertionError(f"not JSON: {exc}\n{result.describe()}") from None

    def status(self) -> dict[str, Any]:
        status = self.json("status")
        assert isinstance(status, dict), status
        return status

    def peers(self) -> list[dict[str, Any]]:
        peers = self.json("peers")
        assert isinstance(peers, list), peers
        return peers

    def files(self) -> list[dict[str, Any]]:
        files = self.json("ls")
        assert isinstance(files, list), files
        return files

    def get_bytes(self, name_or_cap: str, dest: Path, timeout: float = COMMAND_TIMEOUT) -> bytes:
        """``shoal get NAME_OR_CAP -o DEST`` (replacing DEST); assert success; return the bytes."""
        self.cli("get", name_or_cap, "-o", str(dest), "--force", timeout=timeout).ok()
        return dest.read_bytes()


@dataclass(frozen=True)
class Memory:
    """A process's resident set: now (``VmRSS``) and its peak so far (``VmHWM``), in bytes."""

    rss: int
    peak: int

    def __str__(self) -> str:
        return f"{self.rss / MiB:.0f} MiB now, {self.peak / MiB:.0f} MiB peak"


def get_over_network(
    reader: ShoalNode,
    name_or_cap: str,
    expected: bytes,
    file_blocks: set[str],
    dest: Path,
    timeout: float = COMMAND_TIMEOUT,
) -> set[str]:
    """Get a file through ``reader`` and prove that some of it came from its peers.

    Right before the get, ``reader`` must lack at least one of ``file_blocks`` (the file's
    block IDs, as found in the data dirs of the nodes that hold it): those bytes can only come
    over the network. The bytes written must equal ``expected``.

    Returns:
        The blocks of the file ``reader`` lacked.
    """
    assert file_blocks, "no blocks given: nothing would prove a fetch from a peer"
    missing = file_blocks - reader.block_ids()
    assert missing, (
        f"{reader.name} already holds all {len(file_blocks)} blocks of the file: a get through "
        "it would read locally and prove nothing about the network"
    )
    got = reader.get_bytes(name_or_cap, dest, timeout=timeout)
    assert len(got) == len(expected), (len(got), len(expected))
    assert got == expected, f"{reader.name} returned other bytes"
    return missing


class ShoalNet:
    """Named nodes under one root, members of one closed network; every process is killed by
    :meth:`close`.

    The network is made as a user makes it: the first node launched runs ``shoal init`` (a new
    closed network); every later node, before its first launch, runs ``shoal init --join`` with
    the invite ``shoal invite`` prints on the first node.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_root = root / "nodes"
        self.log_root = root / "logs"
        self.nodes: dict[str, ShoalNode] = {}
        self.founder: ShoalNode | None = None

    def node(self, name: str) -> ShoalNode:
        """The node called ``name`` (created, not started, on first use)."""
        if name not in self.nodes:
            self.nodes[name] = ShoalNode(
                name, self.data_root / name, self.log_root, before_first_launch=self._join
            )
        return self.nodes[name]

    def _join(self, node: ShoalNode) -> None:
        """Put ``node``'s data dir in this net's closed network, as a user would."""
        if (node.data_dir / "node.key").exists():
            return  # the test made this data dir itself
        founder = self.founder
        if founder is None:
            self.founder = node
            run_shoal("init", "--data-dir", str(node.data_dir)).ok()
            return
        if founder.alive:
            invite = founder.cli("invite").ok().last_line
        else:
            assert founder.listen is not None, f"start {founder.name} before {node.name}"
            invite = founder.cli("invite", "--address", founder.listen).ok().last_line
        run_shoal("init", "--data-dir", str(node.data_dir), "--join", invite).ok()

    def start(self, name: str, *, peers: Sequence[ShoalNode] = (), **kwargs: Any) -> ShoalNode:
        """Start node ``name`` with ``--peer`` to each of ``peers``; wait until it is ready."""
        addresses = [p.listen for p in peers if p.listen is not None]
        assert len(addresses) == len(peers), f"peers without an address: {peers}"
        return self.node(name).start(peers=addresses, **kwargs)

    def quick_start(self) -> tuple[ShoalNode, ShoalNode, ShoalNode]:
        """The README's quick start: n1, n2, then n3 with ``--peer`` to both; all see 2 up."""
        n1 = self.start("n1")
        n2 = self.start("n2")  # joins with n1's invite, which names n1's address
        n3 = self.start("n3", peers=[n1, n2])
        nodes = (n1, n2, n3)
        for node in nodes:
            self.wait_states(node, {other: "up" for other in nodes if other is not node})
        return nodes

    def mesh(self, *names: str, args: Sequence[str] = ()) -> list[ShoalNode]:
        """Start nodes ``names`` in order, each with ``--peer`` to the ones before it (and
        ``args``); wait until every one sees every other one up."""
        nodes: list[ShoalNode] = []
        for name in names:
            nodes.append(self.start(name, peers=list(nodes), args=args))
        for node in nodes:
            self.wait_states(node, {other: "up" for other in nodes if other is not node})
        return nodes

    def check_running(self) -> None:
        """Fail at once, with its stderr, if a node that should be running has exited."""
        for node in self.nodes.values():
            if node.should_run and not node.alive:
                raise AssertionError(node.death_message("while it should be running"))

    def wait(
        self, check: Callable[[], tuple[bool, T]], *, what: str, timeout: float = WAIT_TIMEOUT
    ) -> T:
        """:func:`wait_for`, aborting early if a node crashes."""
        return wait_for(check, what=what, timeout=timeout, guard=self.check_running)

    def wait_states(
        self, node: ShoalNode, expected: Mapping[ShoalNode, str], timeout: float = WAIT_TIMEOUT
    ) -> list[dict[str, Any]]:
        """Poll ``shoal peers --json`` on ``node`` until each peer in ``expected`` has its state.

        Returns:
            The last peer list seen.
        """

        def check() -> tuple[bool, list[dict[str, Any]]]:
            peers = node.peers()
            states = {p.get("node_id"): p.get("state") for p in peers}
            done = all(states.get(other.node_id) == want for other, want in expected.items())
            return done, peers

        wanted = ", ".join(f"{other.name} {want}" for other, want in expected.items())
        return self.wait(check, what=f"{node.name} to see {wanted}", timeout=timeout)

    def log_sections(self) -> Iterator[tuple[str, str]]:
        """One report section per node: its exit codes and stderr."""
        for node in self.nodes.values():
            if node.starts:
                codes = node.exit_codes + ([node.proc.poll()] if node.proc else [])
                yield (
                    f"shoal node {node.name} (pid {node.pid}, exit codes {codes}) stderr",
                    node.stderr_text(),
                )

    def close(self) -> None:
        """Kill every process still running."""
        for node in self.nodes.values():
            node.cleanup()


NET_KEY: Final = pytest.StashKey[ShoalNet]()


@pytest.fixture
def shoal_net(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ShoalNet]:
    """A :class:`ShoalNet` under ``tmp_path``; its processes are killed at teardown."""
    net = ShoalNet(tmp_path)
    request.node.stash[NET_KEY] = net
    try:
        yield net
    finally:
        net.close()


@pytest.fixture
def random_file(tmp_path: Path) -> Callable[[str, int], tuple[Path, bytes]]:
    """Write ``size`` random bytes to ``<tmp_path>/src/<name>``; return (path, bytes).

    The sources live outside every data dir, so scanning data dirs never finds them.
    """

    def make(name: str, size: int) -> tuple[Path, bytes]:
        data = os.urandom(size)
        path = tmp_path / "src" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path, data

    return make


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach every node's stderr to the report of a failed test (setup, call or teardown)."""
    report = yield
    net = item.stash.get(NET_KEY, None)
    if net is not None and report.failed:
        for title, text in net.log_sections():
            report.sections.append((title, text))
    return report
