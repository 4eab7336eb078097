"""The web UI's security checks over a real node and its real HTTP API (httpx, no browser).

Sign-in link once only, session cookie attributes, CSRF on every change, the Host check against
DNS rebinding, and the live activity feed (server-sent events).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from shoal import Node
from shoal.api.http import ApiServer, serve_api
from shoal.api.ui import CSRF_HEADER, session_cookie_name
from shoal.cli.ui import login_link

WAIT = 20.0


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[ApiServer]:
    data_dir = tmp_path / "node"
    async with (
        Node.start(data_dir, listen="127.0.0.1:0") as node,
        serve_api(node, data_dir) as server,
    ):
        yield server


def bearer(api: ApiServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token}"}


async def new_link(api: ApiServer) -> str:
    return await asyncio.to_thread(login_link, api.data_dir)


class Browser:
    """A cookie-keeping HTTP client that signs in like the page does."""

    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self.http = httpx.AsyncClient(base_url=api.url, timeout=WAIT, trust_env=False)
        self.csrf = ""

    async def sign_in(self) -> httpx.Response:
        response = await self.http.get(await new_link(self.api))
        session = await self.http.get("/ui/api/session")
        assert session.status_code == 200, session.text
        self.csrf = session.json()["csrf"]
        return response

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def browser(api: ApiServer) -> AsyncIterator[Browser]:
    b = Browser(api)
    try:
        yield b
    finally:
        await b.aclose()


async def test_sign_in_link_works_once_and_sets_a_strict_httponly_cookie(
    api: ApiServer, browser: Browser
) -> None:
    link = await new_link(api)
    assert link.startswith(f"{api.url}/ui/login?token=")
    first = await browser.http.get(link)
    assert first.status_code == 303
    assert first.headers["Location"] == "/ui/"
    cookie = first.headers["Set-Cookie"]
    port = urlsplit(api.url).port
    assert port is not None
    assert cookie.startswith(f"{session_cookie_name(port)}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert first.headers["Referrer-Policy"] == "no-referrer"
    assert (await browser.http.get("/v1/files")).status_code == 200  # the session works

    # The same link again, from anyone: refused, no new session.
    async with httpx.AsyncClient(timeout=WAIT, trust_env=False) as other:
        again = await other.get(link)
        assert again.status_code == 401
        assert "Set-Cookie" not in again.headers
        assert "does not work" in again.text
        assert (await other.get(f"{api.url}/v1/files")).status_code == 401
    # ... and the first session is still fine.
    assert (await browser.http.get("/v1/files")).status_code == 200


async def test_without_a_session_or_token_nothing_is_served_but_the_page(
    api: ApiServer, browser: Browser
) -> None:
    page = await browser.http.get("/ui/")
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    assert (await browser.http.get("/ui/static/app.js")).status_code == 200
    assert (await browser.http.get("/ui/static/..%2Fui.py")).status_code == 404
    for path in ("/v1/files", "/ui/api/session", "/ui/api/network", "/ui/api/events"):
        response = await browser.http.get(path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "unauthenticated"
    browser.http.cookies.set(session_cookie_name(urlsplit(api.url).port or 0), "forged")
    assert (await browser.http.get("/v1/files")).status_code == 401


async def test_a_change_without_the_csrf_token_is_refused_and_changes_nothing(
    api: ApiServer, browser: Browser
) -> None:
    await browser.sign_in()
    put = await browser.http.put("/v1/files/a.txt", content=b"hello", headers=bearer(api))
    assert put.status_code == 201
    cap = put.json()["cap"]

    attempts = [
        ("DELETE", "/v1/files/a.txt", {}, None),
        ("DELETE", "/v1/files/a.txt", {CSRF_HEADER: "wrong"}, None),
        ("PUT", "/v1/files/b.txt", {}, b"evil"),
        ("POST", "/ui/api/keep", {}, json.dumps({"cap": cap, "name": "c.txt"}).encode()),
        # The right token from a foreign origin (a page that read it some other way).
        (
            "DELETE",
            "/v1/files/a.txt",
            {CSRF_HEADER: browser.csrf, "Origin": "http://evil.example"},
            None,
        ),
    ]
    for method, path, headers, body in attempts:
        response = await browser.http.request(method, path, headers=headers, content=body)
        assert response.status_code == 403, (method, path, headers)
        assert response.json()["error"]["code"] == "forbidden"
    names = [f["name"] for f in (await browser.http.get("/v1/files")).json()]
    assert names == ["a.txt"]

    # With the token, the same session may change things.
    keep = await browser.http.post(
        "/ui/api/keep", json={"cap": cap, "name": "kept.txt"}, headers={CSRF_HEADER: browser.csrf}
    )
    assert keep.status_code == 201, keep.text
    assert keep.json()["size"] == 5
    for bad in (b"[" * 50_000, b"not json", b'{"cap": 1, "name": "x"}', b"{}" + b" " * 70_000):
        refused = await browser.http.post(
            "/ui/api/keep", content=bad, headers={CSRF_HEADER: browser.csrf}
        )
        assert refused.status_code == 400, bad[:20]
        assert refused.json()["error"]["code"] == "config"
    gone = await browser.http.delete("/v1/files/a.txt", headers={CSRF_HEADER: browser.csrf})
    assert gone.status_code == 200
    names = [f["name"] for f in (await browser.http.get("/v1/files")).json()]
    assert names == ["kept.txt"]


async def test_a_host_that_is_not_the_node_is_refused(api: ApiServer, browser: Browser) -> None:
    await browser.sign_in()
    port = urlsplit(api.url).port
    link = await new_link(api)
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1:{(port or 0) + 1}", ""):
        headers = {"Host": host}
        for path in ("/ui/", "/v1/files", "/ui/api/session", link.removeprefix(api.url)):
            response = await browser.http.get(path, headers=headers)
            assert response.status_code == 403, (host, path)
            assert response.json()["error"]["code"] == "forbidden"
    # The refused attempts did not spend the link; localhost names the node too.
    signed_in = await browser.http.get(
        link.removeprefix(api.url), headers={"Host": f"localhost:{port}"}
    )
    assert signed_in.status_code == 303
    # Programs with the API token are not browsers: their Host is not checked.
    assert (await browser.http.get("/v1/status", headers={**bearer(api), "Host": "x"})).is_success


async def test_a_session_cannot_make_sign_in_links(api: ApiServer, browser: Browser) -> None:
    await browser.sign_in()
    response = await browser.http.post("/v1/ui/login-token", headers={CSRF_HEADER: browser.csrf})
    assert response.status_code == 403
    assert (await browser.http.post("/v1/ui/login-token")).status_code == 403  # no CSRF either
    async with httpx.AsyncClient(base_url=api.url, timeout=WAIT, trust_env=False) as anonymous:
        assert (await anonymous.post("/v1/ui/login-token")).status_code == 401


async def test_signing_out_ends_the_session(api: ApiServer, browser: Browser) -> None:
    await browser.sign_in()
    out = await browser.http.post("/ui/api/logout", headers={CSRF_HEADER: browser.csrf})
    assert out.status_code == 200
    assert (await browser.http.get("/v1/files")).status_code == 401


async def read_event(lines: AsyncIterator[str]) -> tuple[str, dict[str, object]]:
    kind, data = "", ""
    async for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and kind:
            return kind, json.loads(data)
    raise AssertionError("the event stream ended")


async def test_activity_streams_live_and_the_server_stops_with_a_stream_open(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    async with Node.start(data_dir, listen="127.0.0.1:0") as node:
        server = ApiServer(node, data_dir)
        await server.start()
        try:
            browser = Browser(server)
            await browser.sign_in()
            async with browser.http.stream("GET", "/ui/api/events") as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                lines = stream.aiter_lines()
                kind, snapshot = await asyncio.wait_for(read_event(lines), WAIT)
                assert kind == "snapshot"
                assert snapshot == {"running": [], "finished": []}
                put = await browser.http.put(
                    "/v1/files/live.bin",
                    content=b"x" * 300_000,
                    headers={CSRF_HEADER: browser.csrf},
                )
                assert put.status_code == 201
                states = []
                while not states or states[-1] != "done":
                    kind, event = await asyncio.wait_for(read_event(lines), WAIT)
                    transfer = event["transfer"]
                    assert isinstance(transfer, dict)
                    assert transfer["name"] == "live.bin"
                    assert transfer["kind"] == "upload"
                    states.append(transfer["state"])
                assert transfer["done"] == transfer["size"] == 300_000
                assert node.activity.subscribers == 1
                # The server stops while the stream is open: the stream ends, nothing hangs.
                await asyncio.wait_for(server.close(), WAIT)
                with pytest.raises((AssertionError, httpx.HTTPError)):
                    await asyncio.wait_for(read_event(lines), WAIT)
            assert node.activity.subscribers == 0
            await browser.aclose()
        finally:
            await server.close()
