"""Where ``shoal get`` writes (pure path logic, no node)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli.files import default_file_name, output_path
from shoal.errors import ConfigError, InvalidCapability
from shoal.ids import encode_id

CID = encode_id(b"\x01" * 32)
CAP = f"shoal:r:{CID}:{encode_id(bytes([2]) * 32)}"


@pytest.mark.parametrize(
    ("name_or_cap", "expected"),
    [
        ("a.png", "a.png"),
        ("albums/2024/a.png", "a.png"),
        ("../../x", "x"),
        ("/etc/passwd", "passwd"),
        (CAP, CID),
        (f"  {CAP}\n", CID),
    ],
)
def test_default_file_name(name_or_cap: str, expected: str) -> None:
    assert default_file_name(name_or_cap) == expected


def test_default_file_name_of_a_bad_cap() -> None:
    with pytest.raises(InvalidCapability):
        default_file_name("shoal:r:nope")


def test_output_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    assert output_path("a/b.png", None) == Path("b.png")
    assert output_path(CAP, None) == Path(CID)
    assert output_path("a/b.png", "x.png") == Path("x.png")
    assert output_path("..", "x.png") == Path("x.png")  # -o names the file: no need for one
    assert output_path("a/b.png", "existing/") == Path("existing/b.png")
    assert output_path("a/b.png", "existing") == Path("existing/b.png")
    assert output_path(CAP, str(tmp_path)) == tmp_path / CID
    with pytest.raises(ConfigError, match="no such directory: missing/"):
        output_path("a/b.png", "missing/")
    with pytest.raises(ConfigError, match="-o FILE"):
        output_path("dir/", "existing/")
