"""Health and repair endpoints of the HTTP API (``docs/http-api.md``, ``docs/repair.md``).

- ``GET /v1/health/{ref}[?verify=true]``: check one file (``ref``: a catalog name, a read cap
  or a verify cap).
- ``POST /v1/repair``: one repair pass now over every file the node keeps or holds;
  ``POST /v1/repair/{ref}``: over one file.

A check or a pass may take long, so the answer is a stream of JSON lines
(``application/x-ndjson``): ``{"progress": {"blocks": N}}`` about every second while it runs,
then one ``{"result": {...}}`` line (the report), or ``{"error": {...}}`` (the usual error
shape) if it failed after the answer began. Bad input (an unknown name, a malformed cap) is
refused before the stream starts, with the usual JSON error and status.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from shoal.api.keys import NODE_KEY
from shoal.errors import ConfigError, ShoalError
from shoal.ids import encode_id

__all__ = ["add_health_routes"]

log = logging.getLogger(__name__)

#: Seconds between two progress lines.
PROGRESS_EVERY: Final = 1.0
_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"", "0", "false", "no"})


def _flag(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false")


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True).encode() + b"\n"


async def _stream(
    request: web.Request,
    work: Callable[[Callable[[int], None]], Awaitable[dict[str, Any]]],
) -> web.StreamResponse:
    """Run ``work(progress)``, streaming progress lines, then its result line."""
    blocks = 0

    def progress(count: int) -> None:
        nonlocal blocks
        blocks += count

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    task = asyncio.ensure_future(work(progress))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY)
            if done:
                break
            await response.write(_line({"progress": {"blocks": blocks}}))
        try:
            result = task.result()
        except ShoalError as exc:
            error = {"type": type(exc).__name__, "code": exc.code, "message": str(exc)}
            await response.write(_line({"error": error}))
        else:
            await response.write(_line({"result": result}))
    finally:
        if not task.done():  # the client went away: stop the work
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await response.write_eof()
    return response


async def _check(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    ref = request.match_info["ref"]
    verify = _flag(request, "verify")
    root = await node.root_of(ref)  # bad input fails here, before the stream

    async def work(progress: Callable[[int], None]) -> dict[str, Any]:
        report = await node.check(f"shoal:v:{encode_id(root)}", verify=verify, progress=progress)
        return report.to_json()

    return await _stream(request, work)


async def _repair_all(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]

    async def work(progress: Callable[[int], None]) -> dict[str, Any]:
        return (await node.repair(None, progress=progress)).to_json()

    return await _stream(request, work)


async def _repair_one(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    root = await node.root_of(request.match_info["ref"])

    async def work(progress: Callable[[int], None]) -> dict[str, Any]:
        return (await node.repair(f"shoal:v:{encode_id(root)}", progress=progress)).to_json()

    return await _stream(request, work)


def add_health_routes(app: web.Application) -> None:
    """Add the health and repair routes to ``app`` (the node is ``app[NODE_KEY]``)."""
    app.router.add_get("/v1/health/{ref}", _check)
    app.router.add_post("/v1/repair", _repair_all)
    app.router.add_post("/v1/repair/{ref}", _repair_one)
