"""``shoal ui`` and ``shoal demo``'s sign-in link, as real subprocesses against real nodes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest

from shoal import Node
from shoal.api.http import serve_api

pytestmark = pytest.mark.e2e

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
TIMEOUT = 60


async def shoal(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *SHOAL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_shoal_ui_prints_a_link_that_works_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0") as node,
        serve_api(node, data_dir) as api,
    ):
        code, out, err = await shoal("ui", "--data-dir", str(data_dir))
        assert code == 0, err
        (link,) = out.splitlines()
        assert link.startswith(f"{api.url}/ui/login?token=")
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            assert (await http.get(link)).status_code == 303
            assert (await http.get(f"{api.url}/ui/api/session")).status_code == 200
            assert (await http.get(link)).status_code == 401
        # Each run makes a new link.
        code, again, err = await shoal("ui", "--data-dir", str(data_dir))
        assert code == 0, err
        assert again.strip() != link


async def test_shoal_ui_without_a_running_node_says_how_to_start_one(tmp_path: Path) -> None:
    code, out, err = await shoal("ui", "--data-dir", str(tmp_path / "nothing"))
    assert code == 1
    assert out == ""
    assert err.startswith("error: no running node for data dir")
    assert "shoal run --data-dir" in err


async def test_demo_prints_the_ui_link_last_before_waiting(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        *SHOAL,
        "demo",
        "--ephemeral-ports",
        "--data-root",
        str(tmp_path / "demo"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            while not lines or "web UI of node 1" not in lines[-1]:
                line = await proc.stdout.readline()
                assert line, f"the demo stopped early: {lines}"
                lines.append(line.decode().rstrip("\n"))
        link = lines[-1].rsplit(" ", 1)[1]
        assert link.startswith("http://127.0.0.1:")
        assert "/ui/login?token=" in link
        assert any(line.startswith("NODE ") for line in lines[:-1])  # the peer table came first
        async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
            assert (await http.get(link)).status_code == 303
            base = link.split("/ui/", 1)[0]
            files = (await http.get(f"{base}/v1/files")).json()
            assert [f["name"] for f in files] == ["picture_1.png"]  # node 1 keeps it by cap
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(TIMEOUT):
            rest, _ = await proc.communicate()
        # Nothing was printed between the link and the stop.
        assert rest.decode().splitlines() == ["==> stopping"]
        assert proc.returncode == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
