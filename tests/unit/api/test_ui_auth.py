"""Web UI sign-in: a login token works once and only for a while; sessions are bounded."""

from __future__ import annotations

from shoal.api.ui import LOGIN_TOKEN_TTL, MAX_LOGIN_TOKENS, MAX_SESSIONS, UiAuth


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_a_login_token_works_once() -> None:
    auth = UiAuth(FakeClock())
    token = auth.new_login_token()
    session = auth.redeem(token)
    assert session is not None
    assert auth.session(session.id) is session
    assert auth.redeem(token) is None
    assert session.csrf != session.id


def test_a_login_token_expires() -> None:
    clock = FakeClock()
    auth = UiAuth(clock)
    token = auth.new_login_token()
    clock.now += LOGIN_TOKEN_TTL + 1
    assert auth.redeem(token) is None
    fresh = auth.new_login_token()
    assert auth.redeem(fresh) is not None  # a new one still works


def test_unknown_tokens_and_sessions_are_refused() -> None:
    auth = UiAuth(FakeClock())
    auth.new_login_token()
    assert auth.redeem("") is None
    assert auth.redeem("nope\u00e9") is None
    assert auth.session("nope") is None


def test_tokens_and_sessions_are_bounded() -> None:
    auth = UiAuth(FakeClock())
    tokens = [auth.new_login_token() for _ in range(MAX_LOGIN_TOKENS + 3)]
    assert auth.redeem(tokens[0]) is None  # the oldest unspent ones were forgotten
    sessions = [auth.redeem(auth.new_login_token()) for _ in range(MAX_SESSIONS + 2)]
    assert all(s is not None for s in sessions)
    assert auth.session(sessions[0].id) is None  # type: ignore[union-attr]
    assert auth.session(sessions[-1].id) is sessions[-1]  # type: ignore[union-attr]


def test_signing_out_ends_the_session() -> None:
    auth = UiAuth(FakeClock())
    session = auth.redeem(auth.new_login_token())
    assert session is not None
    auth.end(session)
    assert auth.session(session.id) is None
