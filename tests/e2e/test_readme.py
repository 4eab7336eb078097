"""Every code block of the README runs, so the README cannot drift from the code.

How it works: the README is cut into its fenced code blocks, which run in order in one
temporary directory, as a reader would run them in one directory:

- ``python`` blocks are written to a file and run by this interpreter; they must exit 0.
- Other blocks are shell: each line is one command, run by bash in that directory with the
  directory of this interpreter (where ``shoal`` is installed) first on ``PATH``; it must exit
  0 without a traceback. A ``shoal run ...`` line is a node started in the background (as in a
  terminal of its own): the next line runs once the node printed its banner. Every node is
  stopped with SIGTERM at the end and must exit 0.
- A marker comment right before a block changes that (the reason is required):
  ``<!-- readme-test: skip: REASON -->`` does not run the block;
  ``<!-- readme-test: dry-run: REASON -->`` runs its ``make`` lines as ``make -n`` (the
  targets exist and their recipes parse, but nothing is built or served).

What a reader types is adapted in only these ways:

- Fixed ports: ``--listen 127.0.0.1:3000`` listens on port 0 instead (tests never take fixed
  ports), and every later ``127.0.0.1:3000``, in commands and in Python blocks, becomes the
  address that node really got.
- ``[--json]``, an optional flag, runs the command twice: without it and with it.
- :data:`PLACEHOLDERS` stand for what an earlier command printed (``shoal:r:...``: the last
  read cap printed). A new kind of value (an invite, say) is one more entry there.
- The files the commands name are made first (:data:`INPUT_FILES`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

from shoal.cli.demo import make_png
from tests.e2e.conftest import shoal_env, wait_for

pytestmark = pytest.mark.e2e

ROOT: Final = Path(__file__).resolve().parents[2]
README: Final = ROOT / "README.md"
COMMAND_TIMEOUT: Final = 120.0
START_TIMEOUT: Final = 60.0

PLACEHOLDERS: Final = {"shoal:r:...": re.compile(r"shoal:r:[a-z2-7]{52}:[a-z2-7]{52}")}
"""Placeholder in a block → pattern of the value an earlier command printed (the last one)."""

INPUT_FILES: Final = {
    "picture_1.png": make_png(),
    "a.txt": b"first file\n",
    "b.txt": b"second file\n",
}
"""Files the README's commands name, made in the directory before the first block runs."""

_FENCE: Final = re.compile(r"^\s*```(\S*)\s*$")
_MARKER: Final = re.compile(r"^<!--\s*readme-test:\s*(?P<mode>[a-z-]+):\s*(?P<reason>.*?)\s*-->$")
_MODES: Final = ("skip", "dry-run")
_OPTIONAL_FLAG: Final = re.compile(r"\s*\[(--?[\w-]+)\]")
_LISTEN: Final = re.compile(r"--listen\s+(\S+)")
_BANNER: Final = re.compile(r"listening on (\S+) ")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file."""

    language: str
    code: str
    line: int  # of its first line of code, 1-based
    mode: str = "run"
    reason: str = ""

    def where(self) -> str:
        return f"README.md line {self.line}"


def parse_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, each with the marker that precedes it (if any)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    marker: tuple[str, str, int] | None = None
    index = 0
    while index < len(lines):
        line = lines[index]
        found = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if found:
            assert found["mode"] in _MODES, f"line {index + 1}: unknown mode {found['mode']}"
            assert found["reason"], f"line {index + 1}: a {found['mode']} marker needs a reason"
            marker = (found["mode"], found["reason"], index + 1)
        elif fence:
            end = index + 1
            while end < len(lines) and not re.match(r"^\s*```\s*$", lines[end]):
                end += 1
            assert end < len(lines), f"line {index + 1}: code block never closed"
            mode, reason = (marker[0], marker[1]) if marker else ("run", "")
            code = "\n".join(lines[index + 1 : end])
            blocks.append(Block(fence[1], code, index + 2, mode, reason))
            marker = None
            index = end
        elif line.strip() and marker is not None:
            raise AssertionError(f"line {marker[2]}: a marker must come right before a block")
        index += 1
    assert marker is None, f"line {marker[2]}: a marker with no block after it"
    return blocks


def expand_optional_flags(command: str) -> list[str]:
    """``shoal ls [--json]`` → ``["shoal ls", "shoal ls --json"]``."""
    flags = _OPTIONAL_FLAG.findall(command)
    bare = _OPTIONAL_FLAG.sub("", command)
    if not flags:
        return [command]
    with_flags = _OPTIONAL_FLAG.sub(lambda m: f" {m[1]}", command)
    return [bare, with_flags]


def shell_commands(code: str) -> Iterator[str]:
    """The commands of a shell block: its lines that are not empty or comments."""
    for raw in code.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


class Reader:
    """Runs blocks in order in ``workdir`` and keeps what later blocks need."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.addresses: dict[str, str] = {}  # address in the README → real address
        self.values: dict[str, str] = {}  # placeholder → value printed earlier
        self.nodes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        bin_dir = str(Path(sys.executable).parent)
        self.env = shoal_env({"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"})

    def adapt(self, text: str) -> str:
        for fixed, real in self.addresses.items():
            text = text.replace(fixed, real)
        for placeholder, value in self.values.items():
            text = text.replace(placeholder, value)
        missing = [p for p in PLACEHOLDERS if p in text]
        assert not missing, f"no earlier command printed a value for {missing}"
        return text

    def remember(self, output: str) -> None:
        for placeholder, pattern in PLACEHOLDERS.items():
            found = pattern.findall(output)
            if found:
                self.values[placeholder] = found[-1]

    # -- blocks --------------------------------------------------------------------------------

    def run(self, block: Block) -> None:
        if block.mode == "skip":
            return
        if block.mode == "dry-run":
            self.dry_run(block)
        elif block.language == "python":
            self.python(block)
        elif block.language in ("", "sh", "shell", "bash", "console"):
            for command in shell_commands(block.code):
                for variant in expand_optional_flags(command):
                    if variant.startswith("shoal run "):
                        self.start_node(block, variant)
                    else:
                        self.command(block, variant)
        else:
            raise AssertionError(
                f"{block.where()}: no way to run a {block.language!r} block; "
                "mark it <!-- readme-test: skip: why -->"
            )

    def dry_run(self, block: Block) -> None:
        for command in shell_commands(block.code):
            words = command.split("#", 1)[0].split()
            assert words[0] == "make", f"{block.where()}: dry-run only knows make: {command}"
            done = subprocess.run(
                ["make", "-n", *words[1:]],
                cwd=ROOT,
                capture_output=True,
                env=self.env,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
            assert done.returncode == 0, f"{block.where()}: `make -n {words[1:]}`: {done.stderr!r}"

    def command(self, block: Block, command: str) -> None:
        adapted = self.adapt(command)
        done = subprocess.run(
            ["bash", "-c", f"set -o pipefail; {adapted}"],
            cwd=self.workdir,
            capture_output=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        shown = (
            f"{block.where()}: $ {adapted}\nexit {done.returncode}\n{out[-3000:]}\n{err[-3000:]}"
        )
        assert done.returncode == 0, shown
        assert "Traceback" not in err, shown
        self.remember(out)

    def python(self, block: Block) -> None:
        script = self.workdir / f"readme_line_{block.line}.py"
        script.write_text(self.adapt(block.code))
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=self.workdir,
            capture_output=True,
            env=self.env,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"{block.where()}: python block failed\n{out}\n{err[-4000:]}"
        self.remember(out)

    def start_node(self, block: Block, command: str) -> None:
        listen = _LISTEN.search(command)
        fixed = listen[1] if listen and not listen[1].endswith(":0") else None
        if fixed is not None:
            command = command.replace(listen[0], "--listen 127.0.0.1:0")  # type: ignore[index]
        adapted = self.adapt(command)
        log = self.workdir / f"node{len(self.nodes) + 1}"
        with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
            proc = subprocess.Popen(
                ["bash", "-c", f"exec {adapted}"],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=self.env,
            )
        self.nodes.append((adapted, proc, log))

        def banner() -> tuple[bool, str]:
            text = log.with_suffix(".out").read_text(errors="replace")
            if proc.poll() is not None and not _BANNER.search(text):
                errors = log.with_suffix(".err").read_text(errors="replace")
                raise AssertionError(f"{block.where()}: `{adapted}` exited\n{errors[-4000:]}")
            return bool(_BANNER.search(text)), text

        text = wait_for(banner, what=f"`{adapted}` to listen", timeout=START_TIMEOUT)
        real = _BANNER.search(text)
        assert real is not None
        if fixed is not None:
            self.addresses[fixed] = real[1]

    def close(self) -> list[str]:
        """Stop every node; return a problem per node that did not stop cleanly."""
        problems = []
        for command, proc, log in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                errors = log.with_suffix(".err").read_text(errors="replace")[-2000:]
                problems.append(f"`{command}` exited with {code}\n{errors}")
        return problems


def test_every_block_of_the_readme_runs(tmp_path: Path) -> None:
    blocks = parse_blocks(README.read_text(encoding="utf-8"))
    # Every block that does not run says why (parse_blocks insists on a reason).
    assert sum(b.mode == "run" for b in blocks) >= 4, blocks
    for name, data in INPUT_FILES.items():
        (tmp_path / name).write_bytes(data)
    reader = Reader(tmp_path)
    try:
        for block in blocks:
            reader.run(block)
        # What the commands say they did, they did.
        picture = INPUT_FILES["picture_1.png"]
        assert (tmp_path / "out.png").read_bytes() == picture  # get by name, -o out.png
        assert (tmp_path / "copy.png").read_bytes() == picture  # the Client example
        # A get by cap without -o: a file named after the CID.
        assert [p for p in tmp_path.iterdir() if re.fullmatch("[a-z2-7]{52}", p.name)]
    finally:
        problems = reader.close()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<!-- readme-test: skip: -->\n```\nx\n```\n", "needs a reason"),
        ("<!-- readme-test: later: soon -->\n```\nx\n```\n", "unknown mode"),
        ("<!-- readme-test: skip: why -->\nprose\n```\nx\n```\n", "right before a block"),
        ("<!-- readme-test: skip: why -->\n", "no block after it"),
        ("```python\nx = 1\n", "never closed"),
    ],
)
def test_markers_are_checked(text: str, problem: str) -> None:
    with pytest.raises(AssertionError, match=problem):
        parse_blocks(text)


def test_parse_and_expand() -> None:
    text = "a\n<!-- readme-test: skip: because -->\n\n```sh\none\n```\n\n```python\nx = 1\n```\n"
    assert parse_blocks(text) == [
        Block("sh", "one", 5, "skip", "because"),
        Block("python", "x = 1", 9),
    ]
    assert expand_optional_flags("shoal ls --data-dir n3 [--json]") == [
        "shoal ls --data-dir n3",
        "shoal ls --data-dir n3 --json",
    ]
    assert expand_optional_flags("shoal ls") == ["shoal ls"]
