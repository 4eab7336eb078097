"""What the node tells the web UI: storage room, how peers were learnt, the activity of gets."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from shoal import Node
from shoal.errors import ShoalError
from tests.integration.conftest import Cluster

MiB = 1024 * 1024


async def test_storage_free_is_within_max_storage(tmp_path: Path) -> None:
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0", max_storage=4 * MiB) as node:
        before = await node.storage()
        assert before.max_storage == 4 * MiB
        assert before.used == 0
        assert before.free == 4 * MiB
        await node.store("a.bin", b"x" * MiB)
        after = await node.storage()
        assert after.blocks >= 2
        assert after.used > MiB  # the chunk's ciphertext and the manifest
        assert after.free == 4 * MiB - after.used


async def test_peers_say_how_they_were_learnt(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        cluster = Cluster(tmp_path, stack)
        first = await cluster.add("a")
        second = await cluster.add("b", peers=[first.listen_address])
        await first.wait_for_peers(1)
        await second.wait_for_peers(1)
        (seen_by_second,) = second.peers()
        (seen_by_first,) = first.peers()
        assert seen_by_second.source == "bootstrap"
        assert seen_by_first.source == "inbound"
        assert seen_by_first.to_json()["source"] == "inbound"


async def test_activity_of_a_get_by_cap_names_the_cid_not_the_cap(tmp_path: Path) -> None:
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        cap = await node.store("secret.txt", b"hello")
        async with node.get(cap) as reader:
            cid = reader.cid
            assert await reader.read() == b"hello"
        upload, download = reversed(node.activity.snapshot()["finished"])
        assert upload["name"] == "secret.txt"
        assert upload["kind"] == "upload"
        assert upload["size"] == upload["done"] == 5
        assert download["kind"] == "download"
        assert download["name"] == cid
        assert cap.rsplit(":", 1)[1] not in str(node.activity.snapshot())


async def test_a_failed_get_is_reported_in_plain_words_and_the_node_goes_on(
    tmp_path: Path,
) -> None:
    async with Node.start(tmp_path / "n", listen="127.0.0.1:0") as node:
        cap = await node.store("gone.txt", b"bytes")
        await node.drop_local_copy(cap)  # no other node holds it
        with pytest.raises(ShoalError) as failure:
            async with node.get(cap) as reader:
                await reader.read()
        latest = node.activity.snapshot()["finished"][0]
        assert latest["kind"] == "download"
        assert latest["state"] == "failed"
        assert latest["error"] == " ".join(str(failure.value).split())
        assert node.activity.snapshot()["running"] == []
        # The node still stores and reads.
        await node.store("after.txt", b"ok")
        async with node.get("after.txt") as reader:
            assert await reader.read() == b"ok"
