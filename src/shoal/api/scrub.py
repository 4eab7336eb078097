"""The scrub's endpoints: its status, and a whole pass started now (``docs/scrub.md``).

``GET /v1/scrub`` answers ``Node.scrub_status()``; ``POST /v1/scrub`` starts a whole pass
(a pass under way starts over) and answers ``202`` with its number at once: the pass is done
when ``last.pass`` in ``GET /v1/scrub`` reaches it (``shoal scrub`` polls for that). A pass
is throttled like any other, so it may take hours on a big store: no request waits for one.
"""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from shoal.api.keys import NODE_KEY

__all__ = ["SCRUB_STATUS_SCHEMA", "add_scrub_routes", "scrub_openapi_paths"]


async def _scrub_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[NODE_KEY].scrub_status().to_json())


async def _start_scrub(request: web.Request) -> web.Response:
    number = request.app[NODE_KEY].start_scrub()
    return web.json_response({"pass": number}, status=202)


def add_scrub_routes(app: web.Application) -> None:
    """Add the scrub endpoints to ``app``."""
    app.router.add_get("/v1/scrub", _scrub_status)
    app.router.add_post("/v1/scrub", _start_scrub)


_NUMBER_OR_NULL: Final = {"type": ["number", "null"]}
_REPORT: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["pass", "started", "finished", "checked", "bytes", "corrupt", "replaced"],
    "properties": {
        "pass": {"type": "integer"},
        "started": {"type": "number"},
        "finished": {"type": "number"},
        "checked": {"type": "integer", "description": "Blocks read and hashed."},
        "bytes": {"type": "integer"},
        "corrupt": {"type": "integer", "description": "Blocks that failed their hash."},
        "replaced": {"type": "integer", "description": "Blocks fetched again and stored."},
        "unreplaced": {
            "type": "integer",
            "description": "Blocks no holder could supply yet (retried next pass).",
        },
    },
}
SCRUB_STATUS_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "description": "The scrub: the pass under way (progress), the last finished one, the next "
    "due (docs/scrub.md).",
    "required": ["running", "pass", "checked", "blocks", "last"],
    "properties": {
        "running": {"type": "boolean"},
        "pass": {"type": "integer", "description": "The pass under way, else the last begun."},
        "started": _NUMBER_OR_NULL,
        "checked": {"type": "integer"},
        "bytes": {"type": "integer"},
        "corrupt": {"type": "integer"},
        "replaced": {"type": "integer"},
        "blocks": {"type": "integer", "description": "Blocks stored when the pass began."},
        "next_pass": _NUMBER_OR_NULL,
        "rate": {"type": "integer", "description": "Bytes per second a pass may read."},
        "last": {"oneOf": [_REPORT, {"type": "null"}]},
    },
}


def scrub_openapi_paths() -> dict[str, Any]:
    """The OpenAPI paths of these endpoints (merged into ``api/openapi.py``'s document)."""
    error = {"$ref": "#/components/responses/Error"}
    return {
        "/v1/scrub": {
            "get": {
                "summary": "The scrub's status",
                "responses": {
                    "200": {
                        "description": "Status.",
                        "content": {"application/json": {"schema": SCRUB_STATUS_SCHEMA}},
                    },
                    "default": error,
                },
            },
            "post": {
                "summary": "Start a whole scrub pass now",
                "description": "A pass under way starts over. Answers at once with the "
                "pass's number; it is done when last.pass in GET /v1/scrub reaches it.",
                "responses": {
                    "202": {
                        "description": "Started.",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["pass"],
                                    "properties": {"pass": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    "default": error,
                },
            },
        }
    }
