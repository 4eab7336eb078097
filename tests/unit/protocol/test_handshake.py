"""AUTH transcript, signature and network MAC."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import pytest

from shoal.errors import HandshakeError
from shoal.protocol import (
    AUTH_DOMAIN,
    Auth,
    Hello,
    Role,
    auth_transcript,
    node_id_for,
    public_key_bytes,
    sign_auth,
    verify_auth,
)

from .helpers import CERT_HASH, make_key, nonce

DIALER_KEY, LISTENER_KEY = make_key(1), make_key(2)


def hello(key_seed: int, label: str, network: str = "shoal") -> Hello:
    pk = public_key_bytes(make_key(key_seed))
    return Hello(1, node_id_for(pk), pk, ("127.0.0.1:1",), network, nonce(label))


DIALER, LISTENER = hello(1, "d"), hello(2, "l")


def test_node_id_is_sha256_of_raw_key() -> None:
    pk = public_key_bytes(DIALER_KEY)
    assert len(pk) == 32
    assert node_id_for(pk) == hashlib.sha256(pk).digest()


def test_transcript_binds_every_part() -> None:
    base = auth_transcript(Role.DIALER, CERT_HASH, DIALER, LISTENER)
    assert base.startswith(len(AUTH_DOMAIN).to_bytes(4, "big") + AUTH_DOMAIN)
    assert auth_transcript(Role.LISTENER, CERT_HASH, DIALER, LISTENER) != base
    assert auth_transcript(Role.DIALER, bytes(32), DIALER, LISTENER) != base
    assert auth_transcript(Role.DIALER, CERT_HASH, LISTENER, DIALER) != base
    for field in ("nonce", "public_key", "node_id", "network"):
        value = getattr(DIALER, field)
        changes: dict[str, Any] = {field: value + "x" if isinstance(value, str) else bytes(32)}
        other = dataclasses.replace(DIALER, **changes)
        assert auth_transcript(Role.DIALER, CERT_HASH, other, LISTENER) != base, field
        other = dataclasses.replace(LISTENER, **changes)
        assert auth_transcript(Role.DIALER, CERT_HASH, DIALER, other) != base, field


def test_transcript_is_unambiguous() -> None:
    # Moving a character between the two network names must change the transcript.
    a = auth_transcript(
        Role.DIALER,
        CERT_HASH,
        dataclasses.replace(DIALER, network="ab"),
        dataclasses.replace(LISTENER, network="c"),
    )
    b = auth_transcript(
        Role.DIALER,
        CERT_HASH,
        dataclasses.replace(DIALER, network="a"),
        dataclasses.replace(LISTENER, network="bc"),
    )
    assert a != b


@pytest.mark.parametrize("secret", [None, b"s3cret"])
def test_sign_then_verify(secret: bytes | None) -> None:
    auth = sign_auth(Role.DIALER, DIALER_KEY, CERT_HASH, DIALER, LISTENER, network_secret=secret)
    assert (auth.mac is None) == (secret is None)
    verify_auth(
        auth, Role.DIALER, DIALER.public_key, CERT_HASH, DIALER, LISTENER, network_secret=secret
    )


def expect_code(
    code: str,
    auth: Auth,
    *,
    role: Role = Role.DIALER,
    key: bytes | None = None,
    cert_hash: bytes = CERT_HASH,
    secret: bytes | None = None,
) -> None:
    with pytest.raises(HandshakeError) as info:
        verify_auth(
            auth, role, key or DIALER.public_key, cert_hash, DIALER, LISTENER, network_secret=secret
        )
    assert info.value.code == code


def test_verify_failures() -> None:
    good = sign_auth(Role.DIALER, DIALER_KEY, CERT_HASH, DIALER, LISTENER)
    expect_code("bad-signature", good, role=Role.LISTENER)  # reflected signature
    expect_code("bad-signature", good, key=LISTENER.public_key)
    expect_code("bad-signature", good, cert_hash=bytes(32))  # relay with another certificate
    expect_code("bad-signature", Auth(bytes(64)))
    expect_code("wrong-network-secret", good, secret=b"s")  # no mac
    with_mac = sign_auth(Role.DIALER, DIALER_KEY, CERT_HASH, DIALER, LISTENER, network_secret=b"a")
    expect_code("wrong-network-secret", with_mac, secret=b"b")
    # Without a secret of our own, a peer's MAC is not checked.
    verify_auth(with_mac, Role.DIALER, DIALER.public_key, CERT_HASH, DIALER, LISTENER)
