"""Generate the Python code of ``proto/shoal/v1/*.proto`` into ``src/shoal/v1/``.

Run after changing a ``.proto`` file, and commit what it writes::

    .venv/bin/python proto/generate.py

The code is never edited by hand: ``tests/unit/api/test_grpc_codegen.py`` generates it again
and fails on any difference. Generators (pinned in pyproject.toml's dev extra, since their
version is written into the output): ``grpcio-tools`` (protoc and the gRPC plugin) and
``mypy-protobuf`` (``.pyi`` stubs, so that ``mypy --strict`` checks the code that uses them).

The modules land where their own imports expect them: protoc names a proto's Python module
after its path (``shoal/v1/storage.proto`` -> ``shoal.v1.storage_pb2``), so they live in the
package ``shoal.v1`` and need no rewriting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "src"
PACKAGE = Path("shoal") / "v1"
INIT = '"""Code generated from proto/shoal/v1/*.proto by proto/generate.py: do not edit."""\n'


def proto_files() -> list[Path]:
    """The ``.proto`` files of the package, relative to ``proto/``."""
    return sorted(p.relative_to(PROTO_DIR) for p in (PROTO_DIR / PACKAGE).glob("*.proto"))


def _plugin(name: str) -> str:
    """The path of a protoc plugin installed next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} not found: install the dev extra (pip install -e '.[dev]')")
    return found


def generate(out_dir: Path) -> list[Path]:
    """Write the generated package into ``out_dir`` (``out_dir/shoal/v1/...``).

    Returns:
        The files written, relative to ``out_dir``.
    """
    import grpc_tools  # a dev dependency: imported here, not at the top

    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"--proto_path={PROTO_DIR}",
            f"--proto_path={includes}",
            f"--plugin=protoc-gen-mypy={_plugin('protoc-gen-mypy')}",
            f"--plugin=protoc-gen-mypy_grpc={_plugin('protoc-gen-mypy_grpc')}",
            f"--python_out={scratch}",
            f"--grpc_python_out={scratch}",
            f"--mypy_out={scratch}",
            f"--mypy_grpc_out={scratch}",
            *(str(p) for p in proto_files()),
        ]
        done = subprocess.run(args, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"protoc failed:\n{done.stderr}")
        (scratch / PACKAGE / "__init__.py").write_text(INIT)
        (scratch / PACKAGE / "py.typed").write_text("")
        written = sorted(p.relative_to(scratch) for p in (scratch / PACKAGE).iterdir())
        target = out_dir / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(scratch / PACKAGE, target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=OUT_DIR, help="where the package goes (default: src)"
    )
    args = parser.parse_args()
    for path in generate(args.out):
        print(os.path.join(args.out, path))


if __name__ == "__main__":
    main()
