"""The OpenAPI document and the /docs page, against a real node's answers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate

from shoal import Node
from shoal.api.http import ApiServer, serve_api


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0", replicas=1) as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


def check(doc: dict[str, Any], name: str, instance: Any) -> None:
    schema = {"$ref": f"#/components/schemas/{name}", "components": doc["components"]}
    OAS31Validator(schema).validate(instance)


async def test_document_is_valid_public_and_covers_every_route(api: ApiServer) -> None:
    async with httpx.AsyncClient(base_url=api.url, trust_env=False) as anonymous:
        answer = await anonymous.get("/openapi.json")  # no token needed
        assert answer.status_code == 200
        doc = answer.json()
        docs = await anonymous.get("/docs")
        assert docs.status_code == 200
        assert docs.headers["Content-Type"].startswith("text/html")
        assert "/openapi.json" in docs.text
        assert "http://" not in docs.text  # nothing remote
        assert "https://" not in docs.text
        assert (await anonymous.get("/v1/status")).status_code == 401
        assert (await anonymous.get("/metrics")).status_code == 401
    validate(doc)
    routes = set()
    for resource in api._app.router.resources():
        info = resource.get_info()
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str)
        routes.add(re.sub(r"\{[^}]+\}", "{}", path))
    documented = {re.sub(r"\{[^}]+\}", "{}", p) for p in doc["paths"]}
    assert routes == documented


async def test_answers_match_their_schemas(api: ApiServer, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {api.token}"}
    folder = tmp_path / "f"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "x.txt").write_text("x")
    put = await api.node.store_folder("folder", folder)
    async with httpx.AsyncClient(base_url=api.url, headers=headers, trust_env=False) as http:
        doc = (await http.get("/openapi.json")).json()
        check(doc, "Status", (await http.get("/v1/status")).json())
        for peer in (await http.get("/v1/peers")).json():
            check(doc, "Peer", peer)
        stored = await http.put("/v1/files/a.txt", content=b"abc")
        check(doc, "PutResult", stored.json())
        for entry in (await http.get("/v1/files")).json():
            check(doc, "FileEntry", entry)
        check(doc, "FolderResult", put.to_json())
        check(doc, "FolderListing", (await http.get("/v1/folders/folder")).json())
        check(doc, "Invite", (await http.get("/v1/invite?address=127.0.0.1:9")).json())
        for bad in ("/v1/files/missing", "/v1/nothing", f"/v1/caps/{'shoal:r:x'}"):
            error = await http.get(bad)
            assert error.status_code >= 400
            check(doc, "Error", error.json())
        check(doc, "FileEntry", (await http.delete("/v1/files/a.txt")).json())
