"""The scrub over the local HTTP API and ``shoal.Client``, against a real node: answers match
the OpenAPI document, a started pass finishes and reports, status carries the scrub."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator

from shoal import Client, Node
from shoal.api.http import ApiServer, serve_api
from shoal.node.runtime import RuntimeOptions


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    options = RuntimeOptions(chunk_size=4096, scrub_interval=1e9, scrub_rate=1 << 30)
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", replicas=1, options=options) as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


def validate(doc: dict[str, Any], path: str, method: str, status: str, instance: Any) -> None:
    answer = doc["paths"][path][method]["responses"][status]
    schema = answer["content"]["application/json"]["schema"]
    OAS31Validator({**schema, "components": doc["components"]}).validate(instance)


async def test_a_pass_started_over_http_finishes_and_reports(api: ApiServer) -> None:
    await api.node.store("f.bin", os.urandom(4096 * 5))
    headers = {"Authorization": f"Bearer {api.token}"}
    async with httpx.AsyncClient(base_url=api.url, headers=headers, trust_env=False) as http:
        doc = (await http.get("/openapi.json")).json()
        before = (await http.get("/v1/scrub")).json()
        validate(doc, "/v1/scrub", "get", "200", before)
        assert before["last"] is None
        assert before["running"] is False
        assert (
            await http.post("/v1/scrub", headers={"Authorization": "Bearer x"})
        ).status_code == 401

        started = await http.post("/v1/scrub")
        assert started.status_code == 202
        validate(doc, "/v1/scrub", "post", "202", started.json())
        number = started.json()["pass"]
        assert number == 1
        async with asyncio.timeout(60):
            while (status := (await http.get("/v1/scrub")).json())["last"] is None:
                await asyncio.sleep(0.05)
        validate(doc, "/v1/scrub", "get", "200", status)
        assert status["last"]["pass"] == number
        assert status["last"]["checked"] == 6
        assert (status["last"]["corrupt"], status["last"]["replaced"]) == (0, 0)
        full = (await http.get("/v1/status")).json()
        validate(doc, "/v1/status", "get", "200", full)
        assert full["scrub"] == status

    # The blocking client, as `shoal scrub` uses it.
    def through_client() -> tuple[int, dict[str, Any]]:
        with Client(api.url, api.token) as client:
            return client.start_scrub(), client.scrub_status()

    second, _ = await asyncio.to_thread(through_client)
    assert second == 2
    report = await api.node.scrub()  # a third, run here and awaited
    assert report.pass_number == 3
    assert report.checked == 6
