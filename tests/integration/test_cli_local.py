"""The ``shoal`` command line as real subprocesses on this machine."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SHOAL = [sys.executable, "-m", "shoal.cli.main"]
TIMEOUT = 60


async def shoal(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run one ``shoal`` command to completion; return (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *SHOAL,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    # surrogateescape: `get -o -` writes the file's raw bytes to stdout.
    return proc.returncode, out.decode(errors="surrogateescape"), err.decode()


async def test_demo_once_round_trips_the_picture(tmp_path: Path) -> None:
    code, out, err = await shoal(
        "demo", "--once", "--ephemeral-ports", "--data-root", str(tmp_path / "demo")
    )
    assert code == 0, err
    assert "CID:" in out
    cid = out.split("CID:", 1)[1].split()[0]
    assert len(cid) == 52
    assert "identical" in out
    picture = (tmp_path / "demo" / "picture_1.png").read_bytes()
    assert picture.startswith(b"\x89PNG")
    assert (tmp_path / "demo" / "fetched_picture_1.png").read_bytes() == picture


async def test_demo_in_a_temporary_dir(tmp_path: Path) -> None:
    code, out, err = await shoal("demo", "--once", "--ephemeral-ports")
    assert code == 0, err
    assert "read cap: shoal:r:" in out


async def test_run_put_ls_get_rm_over_the_api(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    env = {"SHOAL_DATA_DIR": str(data_dir)}
    node = await asyncio.create_subprocess_exec(
        *SHOAL,
        "run",
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    try:
        assert node.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            banner = (await node.stdout.readline()).decode()
        assert banner.startswith("shoal node ")
        assert "listening on 127.0.0.1:" in banner
        assert "(API http://127.0.0.1:" in banner
        assert (data_dir / "api.json").exists()

        # A second node on the same data dir is refused.
        code, _, err = await shoal("run", env=env)
        assert code == 1
        assert err.strip().splitlines()[-1].startswith("error: a node is already running")

        data = os.urandom(2 * 1024 * 1024 + 3)
        src = tmp_path / "file.bin"
        src.write_bytes(data)
        code, out, err = await shoal("put", str(src), env=env)
        assert code == 0, err
        cap = out.strip().splitlines()[-1]
        assert cap.startswith("shoal:r:")

        code, out, err = await shoal("ls", "--json", env=env)
        assert code == 0, err
        assert [(f["name"], f["cap"], f["size"]) for f in json.loads(out)] == [
            ("file.bin", cap, len(data))
        ]
        code, out, _ = await shoal("ls", env=env)
        assert code == 0
        assert cap in out

        for source in ("file.bin", cap):
            dest = tmp_path / "copy.bin"
            code, _, err = await shoal("get", source, "-o", str(dest), env=env)
            assert code == 0, err
            assert dest.read_bytes() == data
            dest.unlink()

        code, out, err = await shoal("get", "file.bin", "-o", "-", env=env)
        assert code == 0, err
        assert out.encode(errors="surrogateescape") == data

        code, out, _ = await shoal("status", "--json", env=env)
        assert code == 0
        assert json.loads(out)["node_id"] in banner
        code, out, _ = await shoal("peers", "--json", env=env)
        assert code == 0
        assert json.loads(out) == []

        code, _, _ = await shoal("rm", "file.bin", env=env)
        assert code == 0
        code, _, err = await shoal("get", "file.bin", "-o", str(tmp_path / "gone"), env=env)
        assert code == 1
        assert err.strip().startswith("error: no file named 'file.bin'")
        assert not (tmp_path / "gone").exists()
    finally:
        if node.returncode is None:
            node.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            code = await node.wait()
    assert code == 0
    assert not (data_dir / "api.json").exists()
