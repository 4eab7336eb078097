from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal import ConfigError
from shoal.transport import Backoff, parse_address
from shoal.transport.manager import format_address


def test_backoff_doubles_from_half_a_second_up_to_thirty_with_jitter() -> None:
    backoff = Backoff()
    rng = random.Random(7)
    first = [backoff.delay(0, rng) for _ in range(200)]
    assert all(0.25 <= d <= 0.5 for d in first)
    assert max(first) - min(first) > 0.1  # jitter spreads reconnects of many peers
    assert all(1.0 <= backoff.delay(2, rng) <= 2.0 for _ in range(50))
    late = [backoff.delay(attempt, rng) for attempt in range(6, 100)]
    assert all(15.0 <= d <= 30.0 for d in late)


@given(attempt=st.integers(0, 10_000), seed=st.integers(0, 2**32))
def test_backoff_is_always_within_bounds(attempt: int, seed: int) -> None:
    delay = Backoff(base=0.5, cap=30.0).delay(attempt, random.Random(seed))
    assert 0.25 <= delay <= 30.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:3000", ("127.0.0.1", 3000)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:4000", ("::1", 4000)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert parse_address(format_address(*expected)) == expected


@pytest.mark.parametrize("text", ["", "3000", ":3000", "host:", "host:port", "host:70000", "a:-1"])
def test_bad_addresses_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(text)
    assert "HOST:PORT" in str(info.value) or "port" in str(info.value)
