"""Pure helpers of the HTTP API server: error statuses and headers."""

from __future__ import annotations

import pytest

from shoal.api.http import _content_disposition, error_status
from shoal.errors import (
    AddressInUse,
    ConfigError,
    HandshakeError,
    IntegrityError,
    InvalidCapability,
    NotFound,
    PeerUnavailable,
    QuorumNotMet,
    ShoalError,
    StorageError,
    StorageFull,
)


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (NotFound("x"), 404),
        (InvalidCapability("x"), 400),
        (ConfigError("x"), 400),
        (QuorumNotMet("x"), 503),
        (PeerUnavailable("x"), 503),
        (IntegrityError("x"), 422),
        (StorageError("x"), 507),
        (StorageFull("x"), 507),
        (HandshakeError("x"), 502),
        (AddressInUse("x"), 409),
        (ShoalError("x"), 500),
    ],
)
def test_error_status(exc: ShoalError, status: int) -> None:
    assert error_status(exc) == status


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("a.png", "attachment; filename=\"a.png\"; filename*=UTF-8''a.png"),
        (
            'h\u00e9 "q".txt',
            "attachment; filename=\"h_ _q_.txt\"; filename*=UTF-8''h%C3%A9%20%22q%22.txt",
        ),
        ("a/b\\c", "attachment; filename=\"a_b_c\"; filename*=UTF-8''a%2Fb%5Cc"),
        ("x\ny", "attachment; filename=\"x_y\"; filename*=UTF-8''x%0Ay"),
    ],
)
def test_content_disposition(name: str, header: str) -> None:
    assert _content_disposition(name) == header
