"""/metrics on real nodes: Prometheus text format, one registry per node, bearer token."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from shoal.api.http import serve_api
from tests.integration.conftest import Cluster


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def scrape(url: str, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(trust_env=False) as http:
        answer = await http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return samples(answer.text)


async def test_metrics_count_puts_gets_bytes_and_peers(cluster: Cluster, tmp_path: Path) -> None:
    n1 = await cluster.add("n1", replicas=2)
    n2 = await cluster.add("n2", peers=[n1.listen_address], replicas=2)
    await n1.wait_for_peers(1)
    async with contextlib.AsyncExitStack() as stack:
        api1 = await stack.enter_async_context(serve_api(n1, tmp_path / "n1"))
        api2 = await stack.enter_async_context(serve_api(n2, tmp_path / "n2"))
        before = await scrape(api1.url, api1.token)
        assert before[("shoal_puts_total", (("outcome", "ok"),))] == 0

        data = b"m" * 300_000
        cap = await n1.store("m.bin", data)
        async with n1.get(cap) as reader:
            assert await reader.read() == data
        folder = tmp_path / "folder"
        folder.mkdir()
        (folder / "x").write_bytes(b"12345")
        await n1.store_folder("folder", folder)
        try:
            async with n1.get("no such name"):
                pass
        except Exception:
            pass

        one = await scrape(api1.url, api1.token)
        assert one[("shoal_puts_total", (("outcome", "ok"),))] == 2
        assert one[("shoal_put_duration_seconds_count", ())] == 2
        assert one[("shoal_bytes_received_total", ())] == len(data) + 5
        assert one[("shoal_gets_total", (("outcome", "ok"),))] == 1
        assert one[("shoal_get_duration_seconds_count", ())] == 2  # the failed one too
        assert one[("shoal_bytes_sent_total", ())] == len(data)
        assert one[("shoal_peers", (("state", "up"),))] == 1
        assert one[("shoal_peers", (("state", "down"),))] == 0
        assert one[("shoal_connections", (("state", "open"),))] == 1
        assert one[("shoal_blocks_stored", ())] > 0
        assert one[("shoal_stored_bytes", ())] >= len(data)

        # The other node in the same process has its own registry: it put and got nothing.
        two = await scrape(api2.url, api2.token)
        assert two[("shoal_puts_total", (("outcome", "ok"),))] == 0
        assert two[("shoal_bytes_sent_total", ())] == 0
        assert two[("shoal_blocks_stored", ())] > 0  # but holds replicas

        await cluster.stop(n2)
        async with asyncio.timeout(30):
            while (await scrape(api1.url, api1.token))[("shoal_peers", (("state", "down"),))] != 1:
                await asyncio.sleep(0.05)
