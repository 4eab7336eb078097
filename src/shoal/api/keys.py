"""Keys of the aiohttp application's shared state (one module, so handler modules share them)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from shoal.node.service import Node

__all__ = ["NODE_KEY"]

NODE_KEY: Final = web.AppKey("node", Node)
"""The running node the API serves."""
