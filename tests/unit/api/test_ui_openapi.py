"""The web UI's OpenAPI path items name every route the UI adds, with the same methods."""

from __future__ import annotations

import re

from aiohttp import web

from shoal.api.ui import install_ui
from shoal.api.ui_openapi import ui_openapi_paths


def test_every_ui_route_is_documented_and_nothing_else() -> None:
    app = web.Application()
    install_ui(app, node=None)  # type: ignore[arg-type]  # routes only: no request is made
    routes: dict[str, set[str]] = {}
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD to every GET
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert isinstance(path, str)
        routes.setdefault(path, set()).add(route.method.lower())
    documented = {path: set(item) for path, item in ui_openapi_paths().items()}
    assert routes == documented


def test_path_parameters_are_declared() -> None:
    for path, item in ui_openapi_paths().items():
        names = set(re.findall(r"\{([^}]+)\}", path))
        for operation in item.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, path
            assert operation["responses"], path
