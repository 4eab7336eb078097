"""Property tests of the HTTP API with schemathesis, from its own OpenAPI document.

Schemathesis generates requests for every operation of ``/openapi.json`` (valid ones and odd
ones: strange names, caps, headers, bodies) and sends them to a real node; whatever it sends,
the node must never answer 5xx and every answer must match the document (status, content
type, headers, body schema).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from shoal import Node
from shoal.api.http import serve_api, shoal_version
from shoal.api.openapi import openapi_document

SCHEMA = schemathesis.openapi.from_dict(openapi_document(shoal_version()))


class LiveNode:
    """A node and its API served by an event loop in a thread, for blocking test code."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = ""
        self.token = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._error: BaseException | None = None

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            data_dir = self.root / "node"
            async with (
                Node.start(data_dir, listen="127.0.0.1:0", replicas=1) as node,
                serve_api(node, data_dir) as api,
            ):
                self.url, self.token = api.url, api.token
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    def __enter__(self) -> LiveNode:
        self._thread.start()
        assert self._ready.wait(60), "the node did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveNode]:
    with LiveNode(tmp_path_factory.mktemp("schemathesis")) as node:
        yield node


#: Every operation of the document, by label ("GET /v1/status"): one pytest item (and node ID)
#: each, so reports and pytest-xdist count them apart.
OPERATIONS = {op.label: op for op in (result.ok() for result in SCHEMA.get_all_operations())}


@pytest.mark.parametrize("label", sorted(OPERATIONS))
@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI failures reproduce
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_api_conforms_to_its_document(label: str, data: st.DataObject, live: LiveNode) -> None:
    operation = OPERATIONS[label]
    case = data.draw(
        st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    case.call_and_validate(
        base_url=live.url,
        headers={"Authorization": f"Bearer {live.token}"},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
