"""The one error table: every error class carries its wire code, HTTP status and gRPC status."""

from __future__ import annotations

import pytest

from shoal import errors
from shoal.errors import ProtocolError, RemoteProtocolError, ShoalError, error_class_for_code

GRPC_CODES = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
    "UNAUTHENTICATED",
}  # fmt: skip

ALL = [
    obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, ShoalError)
]


def test_every_exported_error_is_in_the_tree_docstring() -> None:
    doc = errors.__doc__ or ""
    for cls in ALL:
        assert cls.__name__ in doc, cls


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
def test_each_class_has_a_code_and_statuses(cls: type[ShoalError]) -> None:
    assert cls.code
    assert cls.code == cls.code.lower()
    assert 400 <= cls.http_status <= 599
    assert cls.grpc_status in GRPC_CODES


@pytest.mark.parametrize(
    "cls",
    [c for c in ALL if not issubclass(c, ProtocolError) or c is ProtocolError],
    ids=lambda c: c.__name__,
)
def test_code_maps_back_to_the_class_that_owns_it(cls: type[ShoalError]) -> None:
    owner = error_class_for_code(cls.code)
    assert owner is not None
    assert issubclass(cls, owner)


def test_codes_are_unique_outside_the_protocol_family() -> None:
    codes = [c.code for c in ALL if not issubclass(c, ProtocolError)]
    assert len(codes) == len(set(codes))


def test_unknown_code_maps_to_nothing() -> None:
    assert error_class_for_code("no-such-code") is None


def test_a_protocol_error_instance_keeps_its_precise_code() -> None:
    exc = RemoteProtocolError("bad", code="frame-too-large")
    assert exc.code == "frame-too-large"
    assert RemoteProtocolError.code == "protocol-error"
