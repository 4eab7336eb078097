"""The OpenAPI 3.1 document of the local HTTP API, written by hand (served at /openapi.json).

Kept next to the handlers and checked by ``tests/integration/test_http_openapi.py`` (valid
OpenAPI, every route of the app documented, and real answers matching their schemas).
"""

from __future__ import annotations

from typing import Any

from shoal.api.leases import lease_openapi_paths
from shoal.api.scrub import SCRUB_STATUS_SCHEMA, scrub_openapi_paths
from shoal.api.ui_openapi import ui_openapi_paths
from shoal.errors import ShoalError

__all__ = ["openapi_document"]


def _error_codes() -> list[str]:
    codes: set[str] = set()
    pending: list[type[ShoalError]] = [ShoalError]
    while pending:
        cls = pending.pop()
        codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return sorted(codes)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = {"$ref": "#/components/responses/Error"}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "A catalog name, percent-encoded as one path segment ('/' as %2F, '.' as "
    "%2E): 1 to 1024 bytes of UTF-8, no control characters.",
    "schema": {"type": "string"},
}
_REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "description": "A folder's catalog name (percent-encoded) or read cap (shoal:r:...).",
    "schema": {"type": "string"},
}
_HEALTH_REF = {
    "name": "ref",
    "in": "path",
    "required": True,
    "description": "A file's catalog name (percent-encoded), read cap or verify cap "
    "(shoal:v:...: no read key needed).",
    "schema": {"type": "string"},
}
_NDJSON = {
    "description": 'JSON lines: {"progress": {"blocks": N}} about every second, then '
    '{"result": FileHealth or RepairPass} or {"error": Error}.',
    "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
}
_CAP = {
    "name": "cap",
    "in": "path",
    "required": True,
    "description": "A read cap, shoal:r:<cid>:<key>.",
    "schema": {"type": "string"},
}
_DOWNLOAD_HEADERS = {
    "Range": {
        "name": "Range",
        "in": "header",
        "required": False,
        "description": "One byte range, e.g. bytes=0-1023, bytes=1000- or bytes=-500. Several "
        "ranges, or a header that does not parse, get the whole file (200).",
        "schema": {"type": "string"},
    },
    "If-None-Match": {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": "An ETag (the quoted CID) seen before: 304 if it still names this file.",
        "schema": {"type": "string"},
    },
}
_BYTES = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def _download(summary: str, description: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": description,
        "parameters": [*params, *_DOWNLOAD_HEADERS.values()],
        "responses": {
            "200": {
                "description": "The whole file, streamed. Headers: Content-Length, "
                "Content-Type (the stored media type, or guessed from the name), ETag (the "
                "quoted CID), Accept-Ranges: bytes, Content-Disposition.",
                "content": _BYTES,
            },
            "206": {
                "description": "The byte range asked (Content-Range: bytes first-last/size).",
                "content": _BYTES,
            },
            "304": {"description": "If-None-Match names this file's ETag: not sent again."},
            "416": {
                "description": "The range starts past the end (Content-Range: bytes */size).",
                "content": {"application/json": {"schema": _ref("Error")}},
            },
            "default": _ERROR,
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message", "type"],
                "properties": {
                    "code": {"type": "string", "enum": _error_codes()},
                    "message": {"type": "string"},
                    "type": {"type": "string", "description": "The error class, for people."},
                    "placed": {
                        "type": "object",
                        "description": "QuorumNotMet only: block ID -> node IDs holding it.",
                        "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    },
                },
            }
        },
    },
    "Status": {
        "type": "object",
        "required": ["node_id", "listen", "replicas", "peers_up", "peers_known"],
        "properties": {
            "node_id": {"type": "string"},
            "listen": {"type": "string"},
            "advertise": {"type": "array", "items": {"type": "string"}},
            "data_dir": {"type": "string"},
            "network": {"type": "string"},
            "replicas": {"type": "integer"},
            "peers_up": {"type": "integer"},
            "peers_known": {"type": "integer"},
            "uptime": {"type": "number"},
            "blocks": {"type": "integer"},
            "bytes": {"type": "integer"},
            "files": {"type": "integer"},
            "scrub": {"oneOf": [SCRUB_STATUS_SCHEMA, {"type": "null"}]},
            "bytes_for_others": {
                "type": "integer",
                "description": "Bytes of blocks held only under other owners' leases.",
            },
            "files_healthy": {"type": "integer", "description": "Catalog files, last check."},
            "files_degraded": {"type": "integer"},
            "files_lost": {"type": "integer"},
            "files_unchecked": {"type": "integer", "description": "Not checked yet."},
            "repair_queue": {"type": "integer", "description": "Files waiting for repair."},
            "repair_copied": {"type": "integer", "description": "Blocks copied since start."},
            "repair_bytes": {"type": "integer"},
            "repair_passes": {"type": "integer"},
        },
    },
    "FileHealth": {
        "type": "object",
        "description": "A check (or repair) of one file: a `result` line of /v1/health or "
        "/v1/repair/{ref}. Copies are counted on the R closest live nodes of each block.",
        "required": ["cid", "healthy", "state", "blocks", "wanted", "min_copies"],
        "properties": {
            "cid": {"type": "string"},
            "cap": {"type": "string", "description": "The verify cap (shoal:v:...)."},
            "healthy": {"type": "boolean"},
            "state": {"type": "string", "enum": ["healthy", "degraded", "lost"]},
            "blocks": {"type": "integer"},
            "wanted": {"type": "integer", "description": "R, the copies wanted."},
            "min_copies": {"type": "integer", "description": "Fewest live copies of a block."},
            "min_copies_after": {"type": "integer", "description": "The same after repair."},
            "waiting": {"type": "integer", "description": "Blocks waiting for absent nodes."},
            "lost_blocks": {"type": "integer"},
            "copied": {"type": "integer"},
            "bytes_moved": {"type": "integer"},
            "verified": {"type": "boolean"},
            "verified_copies": {
                "type": "integer",
                "description": "With verify: copies and shares downloaded and found intact.",
            },
            "due": {"type": ["number", "null"]},
            "error": {"type": ["string", "null"]},
            "unrepaired": {"type": "array", "items": {"type": "string"}},
        },
    },
    "RepairPass": {
        "type": "object",
        "description": "The `result` line of POST /v1/repair.",
        "required": ["files", "copied", "bytes_moved", "unrepaired"],
        "properties": {
            "files": {"type": "integer"},
            "healthy": {"type": "integer"},
            "degraded": {"type": "integer"},
            "lost": {"type": "integer"},
            "copied": {"type": "integer"},
            "bytes_moved": {"type": "integer"},
            "unrepaired": {"type": "array", "items": {"type": "string"}},
            "reports": {"type": "array", "items": _ref("FileHealth")},
        },
    },
    "Peer": {
        "type": "object",
        "required": ["node_id", "address", "state", "last_seen"],
        "properties": {
            "node_id": {"type": "string"},
            "address": {"type": ["string", "null"]},
            "state": {"type": "string", "enum": ["up", "down"]},
            "last_seen": {"type": ["number", "null"]},
        },
    },
    "FileEntry": {
        "type": "object",
        "required": ["name", "cap", "size", "media_type", "created"],
        "properties": {
            "name": {"type": "string"},
            "cap": {"type": "string"},
            "size": {"type": "integer", "description": "Bytes; for a folder, of all its files."},
            "media_type": {
                "type": "string",
                "description": "inode/directory for a folder (list it with /v1/folders/).",
            },
            "created": {"type": "number"},
            "redundancy": {
                "description": "How it is kept; null if unknown (stored by an older Shoal).",
                "oneOf": [{"$ref": "#/components/schemas/Redundancy"}, {"type": "null"}],
            },
        },
    },
    "PutResult": {
        "type": "object",
        "required": ["name", "cap", "size", "blocks", "replicas", "replicas_wanted"],
        "properties": {
            "name": {"type": "string"},
            "cap": {"type": "string"},
            "size": {"type": "integer"},
            "blocks": {"type": "integer"},
            "replicas": {
                "type": "integer",
                "description": "The fewest copies of any block (erasure coding: shares of any "
                "chunk; docs/erasure.md).",
            },
            "replicas_wanted": {"type": "integer", "description": "R, or N for K-of-N."},
            "redundancy": {"$ref": "#/components/schemas/Redundancy"},
        },
    },
    "Redundancy": {
        "type": "object",
        "description": "How a file is kept: R copies of each block, or K-of-N erasure coding "
        "(each chunk as N shares on N distinct nodes, any K rebuild it; its manifests have "
        "N - K + 1 copies, given as replicas).",
        "required": ["kind", "replicas"],
        "properties": {
            "kind": {"type": "string", "enum": ["replicate", "erasure"]},
            "replicas": {"type": "integer"},
            "k": {"type": "integer"},
            "n": {"type": "integer"},
        },
    },
    "FolderResult": {
        "type": "object",
        "required": [
            "name",
            "cap",
            "size",
            "files",
            "directories",
            "blocks",
            "replicas",
            "replicas_wanted",
            "skipped",
        ],
        "properties": {
            "name": {"type": "string"},
            "cap": {"type": "string"},
            "size": {"type": "integer"},
            "files": {"type": "integer"},
            "directories": {"type": "integer", "description": "The root included."},
            "blocks": {"type": "integer"},
            "replicas": {"type": "integer"},
            "replicas_wanted": {"type": "integer"},
            "skipped": {"type": "array", "items": {"type": "string"}},
        },
    },
    "DirEntry": {
        "type": "object",
        "required": ["name", "type", "size", "mtime", "mtime_ns", "mode", "cap"],
        "properties": {
            "name": {"type": "string"},
            "type": {"type": "string", "enum": ["file", "dir"]},
            "size": {"type": "integer", "description": "A folder's: all files below it."},
            "mtime": {"type": "number", "description": "Unix seconds."},
            "mtime_ns": {"type": "integer"},
            "mode": {"type": "integer", "description": "Permission bits (at most 0o777)."},
            "cap": {"type": "string", "description": "The entry's read cap."},
        },
    },
    "FolderListing": {
        "type": "object",
        "required": ["name", "cap", "size", "entries"],
        "properties": {
            "name": {"type": ["string", "null"], "description": "null when listed by cap."},
            "cap": {"type": "string"},
            "size": {"type": "integer"},
            "entries": {"type": "array", "items": _ref("DirEntry")},
        },
    },
    "Invite": {
        "type": "object",
        "required": ["invite"],
        "properties": {"invite": {"type": "string"}},
    },
}

_FOLDER_UPLOAD = {
    "type": "object",
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "One part per file; its filename is the file's relative path.",
        },
        "dir": {"type": "string", "description": "A relative path: declares a folder."},
        "mtime": {"type": "string", "description": "Unix seconds, for the next file or dir."},
        "mtime_ns": {"type": "string", "description": "Integer nanoseconds (exact)."},
        "mode": {"type": "string", "description": "Octal permission bits, e.g. 644."},
    },
}


def _paths() -> dict[str, Any]:
    return {
        "/v1/status": {
            "get": {
                "summary": "The node's status",
                "responses": {"200": _json(_ref("Status"), "Status."), "default": _ERROR},
            }
        },
        "/v1/peers": {
            "get": {
                "summary": "Known peers",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("Peer")}, "Peers."),
                    "default": _ERROR,
                },
            }
        },
        "/v1/invite": {
            "get": {
                "summary": "An invite into this node's closed network",
                "description": "Holds the network secret: share it like a password.",
                "parameters": [
                    {
                        "name": "address",
                        "in": "query",
                        "required": False,
                        "description": "host:port where new nodes find this one (repeatable).",
                        "schema": {"type": "array", "items": {"type": "string"}},
                        "style": "form",
                        "explode": True,
                    }
                ],
                "responses": {"200": _json(_ref("Invite"), "The invite."), "default": _ERROR},
            }
        },
        "/v1/files": {
            "get": {
                "summary": "The catalog (files and folders)",
                "responses": {
                    "200": _json({"type": "array", "items": _ref("FileEntry")}, "Entries."),
                    "default": _ERROR,
                },
            }
        },
        "/v1/files/{name}": {
            "parameters": [_NAME],
            "put": {
                "summary": "Store a file",
                "description": "The body is the file, streamed (Content-Length or chunked). "
                "Content-Type, if given, becomes its media type. ?replicas=R or "
                "?erasure=K-of-N (at most one) overrides the node's redundancy for this file.",
                "parameters": [
                    {
                        "name": "replicas",
                        "in": "query",
                        "required": False,
                        "description": "Copies of each block, 1 to 255.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 255},
                    },
                    {
                        "name": "erasure",
                        "in": "query",
                        "required": False,
                        "description": "Erasure coding K-of-N, 1 <= K < N <= 32 (e.g. 3-of-5).",
                        "schema": {"type": "string", "pattern": "^[0-9]{1,2}-of-[0-9]{1,2}$"},
                    },
                ],
                "requestBody": {"required": True, "content": _BYTES},
                "responses": {"201": _json(_ref("PutResult"), "Stored."), "default": _ERROR},
            },
            "get": _download("Get a file by name", "Streams the file.", []),
            "delete": {
                "summary": "Remove a name from the catalog",
                "responses": {
                    "200": _json(_ref("FileEntry"), "The removed entry."),
                    "default": _ERROR,
                },
            },
        },
        "/v1/caps/{cap}": {
            "get": _download(
                "Get a file by read cap",
                "Works on every node. ?name= names the download and guesses its media type.",
                [
                    _CAP,
                    {
                        "name": "name",
                        "in": "query",
                        "required": False,
                        "description": "File name for Content-Disposition and Content-Type.",
                        "schema": {"type": "string"},
                    },
                ],
            )
        },
        "/v1/folders/{ref}": {
            "parameters": [_REF],
            "put": {
                "summary": "Store a folder (multipart/form-data, streamed)",
                "description": "Parts in order: optional mtime/mtime_ns/mode fields apply to "
                "the next file or dir part. Paths are relative ('a/b.txt'); '..', absolute "
                "paths, empty parts and control characters are refused (400).",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": _FOLDER_UPLOAD}},
                },
                "responses": {
                    "201": _json(_ref("FolderResult"), "Stored."),
                    "default": _ERROR,
                },
            },
            "get": {
                "summary": "List a folder",
                "parameters": [_DOWNLOAD_HEADERS["If-None-Match"]],
                "responses": {
                    "200": _json(_ref("FolderListing"), "The folder's entries (ETag: its CID)."),
                    "304": {"description": "If-None-Match names this folder's ETag."},
                    "default": _ERROR,
                },
            },
        },
        "/v1/folders/{ref}/archive": {
            "parameters": [_REF],
            "get": {
                "summary": "Download a folder as a tar archive (streamed)",
                "responses": {
                    "200": {
                        "description": "A pax tar with one top-level folder.",
                        "content": {
                            "application/x-tar": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    "default": _ERROR,
                },
            },
        },
        "/v1/health/{ref}": {
            "parameters": [_HEALTH_REF],
            "get": {
                "summary": "Check a file's health (live copies of each block)",
                "parameters": [
                    {
                        "name": "verify",
                        "in": "query",
                        "required": False,
                        "description": "Also download and hash every copy counted.",
                        "schema": {"type": "boolean"},
                    }
                ],
                "responses": {"200": _NDJSON, "default": _ERROR},
            },
        },
        "/v1/repair": {
            "post": {
                "summary": "One repair pass now over every file this node keeps or holds",
                "responses": {"200": _NDJSON, "default": _ERROR},
            }
        },
        "/v1/repair/{ref}": {
            "parameters": [_HEALTH_REF],
            "post": {
                "summary": "One repair pass now over one file",
                "responses": {"200": _NDJSON, "default": _ERROR},
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (text format; needs the token)",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format 0.0.4.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "default": _ERROR,
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document (no token needed)",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI document."),
                },
            }
        },
        "/docs": {
            "get": {
                "summary": "A page that shows this document (no token needed)",
                "security": [],
                "responses": {
                    "200": {
                        "description": "HTML.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
    }


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API of Shoal ``version``."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Shoal local HTTP API",
            "version": version,
            "description": "A running node's API on 127.0.0.1. Every request but /openapi.json "
            "and /docs needs 'Authorization: Bearer <token>' (the token is in <data dir>/"
            'api.json). Errors: {"error": {"code", "message", "type"}}.',
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": {
            **_paths(),
            **ui_openapi_paths(),
            **lease_openapi_paths(),
            **scrub_openapi_paths(),
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {"Error": _json(_ref("Error"), "An error (see the code).")},
        },
    }
