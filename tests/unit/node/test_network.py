"""Closed networks and invites: names from secrets, invites that never leak their secret."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import ConfigError
from shoal.ids import encode_id
from shoal.node.network import (
    Invite,
    NetworkMembership,
    closed_network_name,
    parse_invite,
)

SECRET = bytes(range(32))


def test_closed_networks_get_distinct_names_that_do_not_reveal_the_secret() -> None:
    a = closed_network_name(SECRET)
    b = closed_network_name(bytes(32))
    assert a != b
    assert a.startswith("net-")
    assert encode_id(SECRET)[:8] not in a
    assert NetworkMembership.closed(SECRET).name == a
    assert not NetworkMembership.closed(SECRET).is_open
    assert NetworkMembership.open().is_open
    assert "secret" not in repr(NetworkMembership.closed(SECRET)).replace("secret=", "")


def test_invite_round_trips() -> None:
    invite = Invite(SECRET, ("127.0.0.1:3000", "[::1]:3000"))
    assert parse_invite(str(invite)) == invite
    assert parse_invite(f"  {invite}\n") == invite


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello",
        "shoal:r:abc:def",
        f"shoal:invite:{encode_id(SECRET)}",
        f"shoal:invite:{encode_id(SECRET)}@",
        f"shoal:invite:{encode_id(SECRET)[:-1]}@127.0.0.1:1",
        f"shoal:invite:{encode_id(SECRET)}x@127.0.0.1:1",
        "shoal:invite:" + "a" * 5000,
    ],
)
def test_bad_invites_are_refused_without_echoing_the_secret(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_invite(text)
    assert encode_id(SECRET)[:8] not in str(info.value)


@given(secret=st.binary(min_size=32, max_size=32), cut=st.integers(0, 60))
def test_a_damaged_invite_never_shows_a_piece_of_its_secret(secret: bytes, cut: int) -> None:
    text = f"shoal:invite:{encode_id(secret)[:cut]}@127.0.0.1:3000"
    try:
        parse_invite(text)
    except ConfigError as exc:
        secret_text = encode_id(secret)
        message = str(exc)
        assert not any(secret_text[i : i + 8] in message for i in range(len(secret_text) - 7))
