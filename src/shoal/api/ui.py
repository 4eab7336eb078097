"""The web UI: a page served by the node's local HTTP API, for one person at a browser.

How it works (security model; ``docs/web-ui.md`` says the same for users):

- ``shoal ui`` asks the running node for a **login token** (``POST /v1/ui/login-token`` with
  the API's bearer token from ``api.json``) and prints ``<api url>/ui/login?token=...``. The
  token works once and for ``LOGIN_TOKEN_TTL`` seconds.
- ``GET /ui/login?token=`` spends the token, starts a **session** and sets its cookie
  (``HttpOnly``, ``SameSite=Strict``, named after the port, since cookies do not tell ports
  apart), then redirects to ``/ui/`` so the token leaves the address bar.
- The page reads its **CSRF token** from ``GET /ui/api/session`` (same origin: other sites
  cannot read it) and sends it as ``X-Shoal-CSRF`` with every request that changes something.
  With a session cookie, the page may use the whole HTTP API (``/v1/...``) as well as the
  ``/ui/api/...`` endpoints below; without one, requests need the bearer token as before.
- Every request without the bearer token must name the node itself in ``Host``
  (``127.0.0.1:<port>`` or ``localhost:<port>``): a page of another site that rebinds its DNS
  name to 127.0.0.1 gets 403 (DNS rebinding). A cross-site ``Origin`` is refused too.

Sessions and tokens live in memory only (bounded), so a restarted node asks for a new login.
The activity feed (``GET /ui/api/events``) is server-sent events fed by ``Node.activity``: a
snapshot first, then each change; a client that does not read fast enough is dropped (the
browser reconnects and gets a new snapshot), so a slow page never holds memory in the node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Final

from aiohttp import web

from shoal.errors import ConfigError, Forbidden, Unauthenticated
from shoal.node.activity import Subscription
from shoal.node.service import Node

__all__ = [
    "CSRF_HEADER",
    "LOGIN_PATH",
    "UiAuth",
    "install_ui",
    "session_cookie_name",
    "ui_auth",
    "ui_request_allowed",
]

LOGIN_PATH: Final = "/ui/login"
CSRF_HEADER: Final = "X-Shoal-CSRF"
LOGIN_TOKEN_TTL: Final = 600.0  # seconds a login link works (once)
MAX_LOGIN_TOKENS: Final = 16  # unspent tokens kept; the oldest is forgotten first
MAX_SESSIONS: Final = 32  # sessions kept; the oldest ends first
SSE_KEEPALIVE: Final = 15.0  # seconds between keepalive comments on an idle event stream
SSE_WRITE_TIMEOUT: Final = 10.0  # a client that takes no bytes for this long is dropped
MAX_KEEP_BODY: Final = 64 * 1024

_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})

# Everything the page needs comes from this package: no CDN, no download at run time.
_STATIC_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def session_cookie_name(port: int) -> str:
    """The session cookie of the node whose API listens on ``port`` (one per port)."""
    return f"shoal_session_{port}"


@dataclass
class Session:
    """One signed-in browser."""

    id: str
    csrf: str


class UiAuth:
    """Login tokens and sessions, in memory and bounded.

    Args:
        clock: Monotonic seconds (login tokens expire).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._sessions: collections.OrderedDict[str, Session] = collections.OrderedDict()
        self.subscriptions: set[Subscription] = set()

    def new_login_token(self) -> str:
        """A token that starts one session, once, within ``LOGIN_TOKEN_TTL`` seconds."""
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self._clock() + LOGIN_TOKEN_TTL
        while len(self._tokens) > MAX_LOGIN_TOKENS:
            self._tokens.popitem(last=False)
        return token

    def redeem(self, token: str) -> Session | None:
        """Spend ``token`` and start a session; None if it is unknown, spent or expired."""
        expires = None
        for known in list(self._tokens):  # constant-time comparison against each
            if hmac.compare_digest(known.encode(), token.encode("utf-8", "replace")):
                expires = self._tokens.pop(known)
        if expires is None or self._clock() > expires:
            return None
        session = Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32))
        self._sessions[session.id] = session
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def session(self, session_id: str) -> Session | None:
        """The live session with this ID, if any."""
        for known, session in self._sessions.items():
            if hmac.compare_digest(known.encode(), session_id.encode("utf-8", "replace")):
                return session
        return None

    def end(self, session: Session) -> None:
        """Sign the session out."""
        self._sessions.pop(session.id, None)


_AUTH_KEY: Final = web.AppKey("ui_auth", UiAuth)
_UI_NODE_KEY: Final = web.AppKey("ui_node", Node)


def _local_port(request: web.Request) -> int | None:
    transport = request.transport
    if transport is None:
        return None
    sockname = transport.get_extra_info("sockname")
    if not isinstance(sockname, tuple) or len(sockname) < 2 or not isinstance(sockname[1], int):
        return None
    return sockname[1]


def _check_host(request: web.Request) -> int:
    """The port this request came in on, if its ``Host`` names this node; else ``Forbidden``."""
    port = _local_port(request)
    host = request.headers.get("Host", "")
    if port is None or host.lower() not in {f"127.0.0.1:{port}", f"localhost:{port}"}:
        raise Forbidden(
            "this address does not name the node: open the web UI at the URL `shoal ui` prints "
            "(127.0.0.1 or localhost with the node's API port)"
        )
    return port


def _is_public(request: web.Request) -> bool:
    """The page and its files, and the login: what a browser may load before signing in."""
    path = request.path
    return request.method in _SAFE_METHODS and (
        path in ("/ui", "/ui/", LOGIN_PATH) or path.startswith("/ui/static/")
    )


def ui_request_allowed(request: web.Request) -> bool:
    """Whether a request without the API's bearer token may go on as a web UI request.

    Called by the API's auth check for every request without the right bearer token. Checks
    ``Host`` first (``Forbidden`` if it does not name the node); then True for the page's own
    files and the login, and for a request with a live session cookie, which must also carry
    the session's CSRF token (and no foreign ``Origin``) unless it is a GET or HEAD
    (``Forbidden`` otherwise). False (no session): the caller answers 401.
    """
    if _AUTH_KEY not in request.app:
        return False
    port = _check_host(request)
    if _is_public(request):
        return True
    session = _cookie_session(request, port)
    if session is None:
        return False
    if request.method not in _SAFE_METHODS:
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() not in {
            f"http://127.0.0.1:{port}",
            f"http://localhost:{port}",
        }:
            raise Forbidden("a request from another site was refused")
        given = request.headers.get(CSRF_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, session.csrf.encode()):
            raise Forbidden(
                f"missing or wrong {CSRF_HEADER} header: the web UI sends it with every change; "
                "reload the page"
            )
    return True


def _cookie_session(request: web.Request, port: int | None) -> Session | None:
    """The live session named by the request's cookie for this port, if any."""
    if port is None:
        return None
    session_id = request.cookies.get(session_cookie_name(port))
    return request.app[_AUTH_KEY].session(session_id) if session_id else None


# -- handlers ---------------------------------------------------------------------------------


def _static_file(name: str) -> tuple[bytes, str]:
    suffix = name[name.rfind(".") :] if "." in name else ""
    content_type = _STATIC_TYPES.get(suffix)
    if content_type is None or "/" in name or name.startswith("."):
        raise web.HTTPNotFound()
    try:
        data = resources.files("shoal.api").joinpath("ui_static", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise web.HTTPNotFound() from None
    return data, content_type


async def _index(request: web.Request) -> web.StreamResponse:
    if request.path == "/ui":
        raise web.HTTPFound("/ui/")
    data, content_type = _static_file("index.html")
    return web.Response(body=data, headers=_page_headers(content_type))


async def _static(request: web.Request) -> web.Response:
    data, content_type = _static_file(request.match_info["file"])
    return web.Response(body=data, headers=_page_headers(content_type))


def _page_headers(content_type: str) -> dict[str, str]:
    return {**_SECURITY_HEADERS, "Content-Type": content_type}


_LOGIN_FAILED_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shoal: sign-in link not valid</title>
<link rel="stylesheet" href="/ui/static/style.css"></head>
<body class="signin"><main class="card">
<h1>This sign-in link does not work</h1>
<p>A sign-in link works once, for ten minutes. Run <code>shoal ui</code> again for a new one.</p>
</main></body></html>
"""


async def _login(request: web.Request) -> web.Response:
    port = _check_host(request)
    token = request.query.get("token", "")
    session = request.app[_AUTH_KEY].redeem(token) if token else None
    if session is None:
        return web.Response(
            status=401,
            body=_LOGIN_FAILED_PAGE.encode(),
            headers=_page_headers("text/html; charset=utf-8"),
        )
    response = web.Response(status=303, headers={**_SECURITY_HEADERS, "Location": "/ui/"})
    response.set_cookie(
        session_cookie_name(port), session.id, httponly=True, samesite="Strict", path="/"
    )
    return response


async def _new_login_token(request: web.Request) -> web.Response:
    # Only a bearer-token holder (the `shoal ui` command) may mint a sign-in link.
    if _cookie_session(request, _local_port(request)) is not None:
        raise Forbidden("a sign-in link is made with the API token (`shoal ui`), not a session")
    token = request.app[_AUTH_KEY].new_login_token()
    return web.json_response(
        {"token": token, "path": f"{LOGIN_PATH}?token={token}", "expires_in": LOGIN_TOKEN_TTL}
    )


def _session_of(request: web.Request) -> Session:
    # The auth check let this request in; only a session (not the API token) has a page.
    session = _cookie_session(request, _local_port(request))
    if session is None:
        raise Unauthenticated("not signed in to the web UI: run `shoal ui` for a sign-in link")
    return session


async def _session(request: web.Request) -> web.Response:
    session = _session_of(request)
    node = request.app[_UI_NODE_KEY]
    return web.json_response(
        {"csrf": session.csrf, "node_id": node.node_id, "folders": _stores_folders(request.app)}
    )


def _stores_folders(app: web.Application) -> bool:
    """Whether this API stores folders whole (``PUT /v1/folders/{name}``): the page then
    uploads a folder as one; otherwise file by file, with its relative paths as names."""
    return any(
        route.method == "PUT"
        and route.resource is not None
        and route.resource.canonical == "/v1/folders/{name}"
        for route in app.router.routes()
    )


async def _logout(request: web.Request) -> web.Response:
    session = _session_of(request)
    request.app[_AUTH_KEY].end(session)
    response = web.json_response({"signed_out": True})
    port = _local_port(request)
    if port is not None:
        response.del_cookie(session_cookie_name(port), path="/")
    return response


async def _network(request: web.Request) -> web.Response:
    _session_of(request)
    node = request.app[_UI_NODE_KEY]
    status = await node.status()
    storage = await node.storage()
    return web.json_response(
        {
            "node": status.to_json(),
            "peers": [p.to_json() for p in node.peers()],
            "storage": storage.to_json(),
        }
    )


async def _activity(request: web.Request) -> web.Response:
    _session_of(request)
    return web.json_response(request.app[_UI_NODE_KEY].activity.snapshot())


async def _keep(request: web.Request) -> web.Response:
    _session_of(request)
    if request.content_length is None or request.content_length > MAX_KEEP_BODY:
        raise ConfigError(
            'send a JSON body {"cap": ..., "name": ...} of at most 64 KiB, with Content-Length'
        )
    try:
        body = json.loads(await request.read())  # at most MAX_KEEP_BODY (checked above)
    except (ValueError, RecursionError):  # RecursionError: a deeply nested body
        raise ConfigError('send a JSON body {"cap": "shoal:r:...", "name": "..."}') from None
    cap = body.get("cap") if isinstance(body, dict) else None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(cap, str) or not isinstance(name, str):
        raise ConfigError('send a JSON body {"cap": "shoal:r:...", "name": "..."}')
    entry = await request.app[_UI_NODE_KEY].keep(cap.strip(), name)
    return web.json_response(entry.to_json(), status=201)


async def _events(request: web.Request) -> web.StreamResponse:
    _session_of(request)
    auth = request.app[_AUTH_KEY]
    feed = request.app[_UI_NODE_KEY].activity
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    await response.prepare(request)

    async def send(text: str) -> None:
        # A client that takes no bytes for this long is gone or stuck: drop it.
        async with asyncio.timeout(SSE_WRITE_TIMEOUT):
            await response.write(text.encode())

    with feed.subscribe() as subscription:
        auth.subscriptions.add(subscription)
        try:
            await send(f"retry: 2000\nevent: snapshot\ndata: {json.dumps(feed.snapshot())}\n\n")
            while True:
                try:
                    async with asyncio.timeout(SSE_KEEPALIVE):
                        event = await subscription.next()
                except TimeoutError:
                    await send(": keepalive\n\n")
                    continue
                if event is None:
                    break  # dropped (too slow) or the server is stopping
                await send(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n")
        except (TimeoutError, ConnectionError):
            pass  # the client went away or stopped reading
        finally:
            auth.subscriptions.discard(subscription)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _end_event_streams(app: web.Application) -> None:
    # on_shutdown runs before the server waits for handlers: end the endless ones now.
    for subscription in list(app[_AUTH_KEY].subscriptions):
        subscription.close()


def install_ui(app: web.Application, node: Node) -> UiAuth:
    """Add the web UI's routes to the API ``app`` serving ``node``; return its sessions."""
    auth = UiAuth()
    app[_AUTH_KEY] = auth
    app[_UI_NODE_KEY] = node
    app.on_shutdown.append(_end_event_streams)
    app.router.add_get("/ui", _index)
    app.router.add_get("/ui/", _index)
    app.router.add_get("/ui/static/{file}", _static)
    app.router.add_get(LOGIN_PATH, _login)
    app.router.add_post("/v1/ui/login-token", _new_login_token)
    app.router.add_get("/ui/api/session", _session)
    app.router.add_post("/ui/api/logout", _logout)
    app.router.add_get("/ui/api/network", _network)
    app.router.add_get("/ui/api/activity", _activity)
    app.router.add_get("/ui/api/events", _events)
    app.router.add_post("/ui/api/keep", _keep)
    return auth


def ui_auth(app: web.Application) -> UiAuth:
    """The sessions of the web UI installed on ``app`` (for the node's own use, e.g. tests)."""
    return app[_AUTH_KEY]
