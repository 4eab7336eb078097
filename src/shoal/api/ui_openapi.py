"""The web UI's endpoints as OpenAPI 3.1 path items, for the API's ``/openapi.json``.

Self-contained (no ``$ref`` into the rest of the document), so that the document that serves
every route merges them in with ``paths.update(ui_openapi_paths())``. ``docs/web-ui.md`` says
what each endpoint is for and the security model behind the session and CSRF token.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ui_openapi_paths"]

_ERROR: dict[str, Any] = {
    "description": "An error: {'error': {'type', 'code', 'message'}} (see docs/http-api.md).",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["type", "code", "message"],
                        "properties": {
                            "type": {"type": "string"},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    }
                },
            }
        }
    },
}
_SESSION = (
    "Needs the web UI's session cookie (`shoal_session_<port>`, from /ui/login), and for a "
    "change also the header X-Shoal-CSRF with the token from GET /ui/api/session."
)
_TRANSFER: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "name", "size", "done", "started", "finished", "state", "error"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string", "enum": ["upload", "download"]},
        "name": {"type": "string", "description": "Catalog name, or the CID for a get by cap."},
        "size": {"type": ["integer", "null"]},
        "done": {"type": "integer"},
        "started": {"type": "number"},
        "finished": {"type": ["number", "null"]},
        "state": {"type": "string", "enum": ["running", "done", "failed", "cancelled"]},
        "error": {"type": ["string", "null"]},
    },
}
_ACTIVITY: dict[str, Any] = {
    "type": "object",
    "required": ["running", "finished"],
    "properties": {
        "running": {"type": "array", "items": _TRANSFER},
        "finished": {"type": "array", "items": _TRANSFER, "maxItems": 20},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _page(summary: str, description: str, content_type: str = "text/html") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "description": description,
            "tags": ["web UI"],
            "security": [],
            "responses": {
                "200": {
                    "description": summary,
                    "content": {content_type: {"schema": {"type": "string"}}},
                },
                "403": _ERROR,
                "404": _ERROR,
            },
        }
    }


def ui_openapi_paths() -> dict[str, Any]:
    """The path items of the web UI's routes (``api/ui.py``), keyed by path."""
    return {
        "/v1/ui/login-token": {
            "post": {
                "summary": "Make a one-time sign-in link for the web UI",
                "description": "Bearer token only (what `shoal ui` does). The link works once, "
                "within expires_in seconds.",
                "tags": ["web UI"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["token", "path", "expires_in"],
                            "properties": {
                                "token": {"type": "string"},
                                "path": {"type": "string", "description": "/ui/login?token=..."},
                                "expires_in": {"type": "number"},
                            },
                        },
                        "A sign-in token and the link's path",
                    ),
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui": _page("The web UI (redirects to /ui/)", "Redirects to /ui/."),
        "/ui/": _page("The web UI's page", "The page; it asks for a sign-in without a session."),
        "/ui/static/{file}": {
            "get": {
                **_page("A file of the page", "The page's CSS, JavaScript and icon.", "*/*")["get"],
                "parameters": [
                    {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            }
        },
        "/ui/login": {
            "get": {
                "summary": "Spend a sign-in token and start a session",
                "description": "303 to /ui/ with the session cookie (HttpOnly, SameSite=Strict); "
                "401 with a page if the token is unknown, spent or expired.",
                "tags": ["web UI"],
                "security": [],
                "parameters": [
                    {"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "303": {"description": "Signed in: go to /ui/"},
                    "401": {"description": "The link does not work (any more)"},
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/session": {
            "get": {
                "summary": "The session's CSRF token and what the node can do",
                "description": _SESSION,
                "tags": ["web UI"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["csrf", "node_id", "folders"],
                            "properties": {
                                "csrf": {"type": "string"},
                                "node_id": {"type": "string"},
                                "folders": {"type": "boolean"},
                            },
                        },
                        "The session",
                    ),
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/logout": {
            "post": {
                "summary": "End the session",
                "description": _SESSION,
                "tags": ["web UI"],
                "responses": {
                    "200": _json({"type": "object"}, "Signed out"),
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/network": {
            "get": {
                "summary": "Status, peers (with how each was learnt) and storage, in one answer",
                "description": _SESSION,
                "tags": ["web UI"],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["node", "peers", "storage"],
                            "properties": {
                                "node": {"type": "object"},
                                "peers": {"type": "array", "items": {"type": "object"}},
                                "storage": {
                                    "type": "object",
                                    "required": ["blocks", "used", "free", "max_storage"],
                                    "properties": {
                                        "blocks": {"type": "integer"},
                                        "used": {"type": "integer"},
                                        "free": {"type": "integer"},
                                        "max_storage": {"type": ["integer", "null"]},
                                    },
                                },
                            },
                        },
                        "The network as this node sees it",
                    ),
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/activity": {
            "get": {
                "summary": "Transfers in progress and the last 20 finished",
                "description": _SESSION,
                "tags": ["web UI"],
                "responses": {
                    "200": _json(_ACTIVITY, "Transfers, newest first"),
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/events": {
            "get": {
                "summary": "Live activity (server-sent events)",
                "description": f"{_SESSION} A 'snapshot' event (as /ui/api/activity), then a "
                "'transfer' event ({'type': 'transfer', 'transfer': ...}) for each change.",
                "tags": ["web UI"],
                "responses": {
                    "200": {
                        "description": "An endless event stream",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": _ERROR,
                    "403": _ERROR,
                },
            }
        },
        "/ui/api/keep": {
            "post": {
                "summary": "Keep a shared file (its read cap) in the catalog under a name",
                "description": _SESSION,
                "tags": ["web UI"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["cap", "name"],
                                "properties": {
                                    "cap": {"type": "string"},
                                    "name": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "201": _json({"type": "object"}, "The new catalog entry"),
                    "400": _ERROR,
                    "401": _ERROR,
                    "403": _ERROR,
                    "404": _ERROR,
                },
            }
        },
    }
