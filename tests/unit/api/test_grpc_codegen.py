"""The committed gRPC code in ``src/shoal/v1`` is exactly what ``proto/generate.py`` writes.

Nobody edits generated code by hand: after changing ``proto/shoal/v1/*.proto``, run
``.venv/bin/python proto/generate.py`` and commit its output. This test generates the code again
(grpcio-tools and mypy-protobuf, pinned in the dev extra) into a temporary directory and fails on
any file that differs, is missing, or is extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
COMMITTED = ROOT / "src" / "shoal" / "v1"


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "shoal_proto_generate", ROOT / "proto" / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def files_under(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_committed_code_is_what_the_generator_writes(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.generate(tmp_path)
    assert Path("shoal/v1/storage_pb2.py") in written
    fresh = files_under(tmp_path / "shoal" / "v1")
    committed = files_under(COMMITTED)
    assert sorted(fresh) == sorted(committed), "files were added to or removed from src/shoal/v1"
    stale = sorted(name for name in fresh if fresh[name] != committed[name])
    assert stale == [], (
        f"src/shoal/v1/{stale} differ from what proto/generate.py writes: run "
        "`.venv/bin/python proto/generate.py` and commit the result (never edit them by hand)"
    )


def test_the_generated_service_is_the_one_in_the_proto() -> None:
    # A second check that does not depend on the generator: the service the server registers
    # has the methods of the contract in proto/shoal/v1/storage.proto.
    from shoal.v1 import storage_pb2

    service = storage_pb2.DESCRIPTOR.services_by_name["Storage"]
    assert service.full_name == "shoal.v1.Storage"
    assert [m.name for m in service.methods] == [
        "Put",
        "Get",
        "Stat",
        "List",
        "Delete",
        "Peers",
        "Status",
    ]
    put = service.methods_by_name["Put"]
    assert (put.client_streaming, put.server_streaming) == (True, False)
    get = service.methods_by_name["Get"]
    assert (get.client_streaming, get.server_streaming) == (False, True)
