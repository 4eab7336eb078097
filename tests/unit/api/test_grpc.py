"""The gRPC adapter's pure parts: the ``--grpc`` address and the status of every error."""

from __future__ import annotations

import grpc
import pytest

from shoal import errors
from shoal.api.grpc import parse_grpc_address
from shoal.api.grpc.service import one_line, status_code_for
from shoal.errors import ConfigError, ShoalError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", ("127.0.0.1", 0)),
        (":0", ("127.0.0.1", 0)),
        ("50051", ("127.0.0.1", 50051)),
        (":50051", ("127.0.0.1", 50051)),
        ("127.0.0.1:50051", ("127.0.0.1", 50051)),
        ("0.0.0.0:7000", ("0.0.0.0", 7000)),
        ("[::1]:7000", ("::1", 7000)),
        ("localhost:7000", ("localhost", 7000)),
    ],
)
def test_grpc_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_grpc_address(text) == expected


@pytest.mark.parametrize("text", ["", ":", "host", "host:", ":65536", "70000", "a:b"])
def test_bad_grpc_addresses_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="invalid --grpc address"):
        parse_grpc_address(text)


def every_error_class() -> list[type[ShoalError]]:
    found: list[type[ShoalError]] = []
    todo: list[type[ShoalError]] = [ShoalError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_has_a_grpc_status() -> None:
    classes = every_error_class()
    assert errors.StorageFull in classes
    for cls in classes:
        assert isinstance(status_code_for(cls("x")), grpc.StatusCode), cls
    expected = {
        errors.NotFound: grpc.StatusCode.NOT_FOUND,
        errors.ConfigError: grpc.StatusCode.INVALID_ARGUMENT,
        errors.InvalidCapability: grpc.StatusCode.INVALID_ARGUMENT,
        errors.QuorumNotMet: grpc.StatusCode.UNAVAILABLE,
        errors.StorageFull: grpc.StatusCode.RESOURCE_EXHAUSTED,
        errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
        errors.IntegrityError: grpc.StatusCode.DATA_LOSS,
        errors.CorruptBlock: grpc.StatusCode.DATA_LOSS,
        errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    }
    for cls, status in expected.items():
        assert status_code_for(cls("x")) == status, cls


def test_messages_are_one_line_and_printable() -> None:
    assert one_line(errors.NotFound("no file named 'a\nb'\tthere")) == "no file named 'a b' there"
    assert one_line(errors.NotFound("bell \x07 here")) == "bell \\x07 here"
    assert one_line(errors.NotFound("")) == "NotFound"
