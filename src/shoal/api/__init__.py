"""User-facing network APIs served by a running node: the local HTTP API (``api.http``)."""

from __future__ import annotations

from shoal.api.http import ApiServer, serve_api

__all__ = ["ApiServer", "serve_api"]
