"""HTTP endpoints of leases and garbage collection (``docs/http-api.md``).

- ``POST /v1/pins`` ``{"cap": "shoal:r:...", "name": "..."}``: keep a file someone shared
  (catalog it and take this node's leases on its blocks); 201 with the entry, ``blocks`` and
  ``leased``.
- ``POST /v1/gc``: one garbage-collection pass now; 200 with what it freed.
- ``POST /v1/leases/renew``: renew the leases of every object in the catalog now.

Thin adapters over ``shoal.Node`` (``pin``, ``gc``, ``renew_leases``); errors map through the
one error table like every other route.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from shoal.api.keys import NODE_KEY
from shoal.errors import ConfigError

__all__ = ["add_lease_routes", "lease_openapi_paths"]

#: Largest JSON body of POST /v1/pins (a cap and a name).
MAX_PIN_BODY = 8192


async def _pin(request: web.Request) -> web.Response:
    body = await request.content.read(MAX_PIN_BODY + 1)
    if len(body) > MAX_PIN_BODY:
        raise ConfigError(f"the body of POST /v1/pins is limited to {MAX_PIN_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError('expected a JSON body {"cap": "shoal:r:...", "name": "..."}') from None
    if not isinstance(data, dict):
        raise ConfigError('expected a JSON object {"cap": "shoal:r:...", "name": "..."}')
    cap, name = data.get("cap"), data.get("name")
    if not isinstance(cap, str) or not isinstance(name, str):
        raise ConfigError('"cap" and "name" must both be strings')
    result = await request.app[NODE_KEY].pin(cap, name)
    return web.json_response(result, status=201)


async def _gc(request: web.Request) -> web.Response:
    result = await request.app[NODE_KEY].gc()
    return web.json_response(result.to_json())


async def _renew(request: web.Request) -> web.Response:
    return web.json_response(await request.app[NODE_KEY].renew_leases())


def add_lease_routes(app: web.Application) -> None:
    """Add the lease and GC endpoints to ``app``."""
    app.router.add_post("/v1/pins", _pin)
    app.router.add_post("/v1/gc", _gc)
    app.router.add_post("/v1/leases/renew", _renew)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = {"$ref": "#/components/responses/Error"}
_INT = {"type": "integer"}


def lease_openapi_paths() -> dict[str, Any]:
    """The OpenAPI paths of these endpoints."""
    return {
        "/v1/pins": {
            "post": {
                "summary": "Keep a shared file: catalog its read cap and lease its blocks",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["cap", "name"],
                                "properties": {
                                    "cap": {"type": "string", "description": "A read cap."},
                                    "name": {"type": "string", "description": "Catalog name."},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json(
                        {
                            "type": "object",
                            "required": ["name", "cap", "size", "blocks", "leased"],
                            "properties": {
                                "name": {"type": "string"},
                                "cap": {"type": "string"},
                                "size": _INT,
                                "media_type": {"type": "string"},
                                "created": {"type": "number"},
                                "blocks": {**_INT, "description": "Blocks of the file."},
                                "leased": {
                                    **_INT,
                                    "description": "Block leases recorded, all holders together.",
                                },
                            },
                        },
                        "Pinned.",
                    ),
                    "default": _ERROR,
                },
            }
        },
        "/v1/gc": {
            "post": {
                "summary": "One garbage-collection pass now",
                "description": "Deletes local blocks with no live lease whose grace period "
                "is over (never one this node's catalog needs).",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["blocks", "bytes"],
                            "properties": {
                                "blocks": {**_INT, "description": "Blocks freed."},
                                "bytes": {**_INT, "description": "Bytes freed."},
                                "candidates": _INT,
                                "kept_for_catalog": _INT,
                                "skipped": {"type": ["string", "null"]},
                            },
                        },
                        "What the pass freed.",
                    ),
                    "default": _ERROR,
                },
            }
        },
        "/v1/leases/renew": {
            "post": {
                "summary": "Renew the leases of every object in the catalog now",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["roots", "blocks", "leased", "nodes", "unreachable"],
                            "properties": {
                                "roots": _INT,
                                "blocks": _INT,
                                "leased": _INT,
                                "nodes": _INT,
                                "unreachable": _INT,
                            },
                        },
                        "What was renewed.",
                    ),
                    "default": _ERROR,
                },
            }
        },
    }
