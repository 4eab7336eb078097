"""``api.json``: how a running node tells local programs where its API is. Writer and reader.

``shoal run`` writes ``<data dir>/api.json`` (mode 0600, atomically) once its HTTP API listens,
and removes it on exit; the CLI and ``shoal.Client`` read it. Only users who can read the data
dir learn the token. Fields (JSON object):

- ``url`` (str): base URL of the HTTP API, e.g. ``http://127.0.0.1:43117``;
- ``token`` (str): the bearer token every request must carry;
- ``pid`` (int): the process serving it;
- ``node_id`` (str): the node's ID (text form);
- ``grpc`` (str, only when ``shoal run --grpc`` serves the gRPC API): its ``host:port``; the
  same token authenticates its calls.

Readers ignore fields they do not know, so later versions may add some.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Final

from shoal.errors import ConfigError, StorageError
from shoal.store.files import write_file_atomic

__all__ = [
    "API_FILE_NAME",
    "ApiInfo",
    "publish_grpc_address",
    "read_api_info",
    "remove_api_info",
    "write_api_info",
]

API_FILE_NAME: Final = "api.json"
"""The file in a data dir where ``shoal run`` publishes the API address and token."""


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """The contents of ``api.json``."""

    url: str
    token: str
    pid: int
    node_id: str
    grpc: str | None = None

    def to_json(self) -> dict[str, object]:
        """The JSON object of ``api.json`` (``grpc`` only when set)."""
        fields = asdict(self)
        if self.grpc is None:
            del fields["grpc"]
        return fields


def write_api_info(data_dir: str | os.PathLike[str], info: ApiInfo) -> None:
    """Publish ``info`` as ``<data_dir>/api.json`` (0600, atomic).

    Raises:
        StorageError: The file cannot be written.
    """
    path = Path(data_dir) / API_FILE_NAME
    try:
        write_file_atomic(path, json.dumps(info.to_json()).encode())
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


def remove_api_info(data_dir: str | os.PathLike[str], token: str) -> None:
    """Remove ``api.json`` if it is still the one with ``token`` (a newer node may own it)."""
    path = Path(data_dir) / API_FILE_NAME
    with contextlib.suppress(OSError, ValueError, ConfigError):
        if read_api_info(data_dir).token == token:
            path.unlink()


def read_api_info(data_dir: str | os.PathLike[str]) -> ApiInfo:
    """Read and check ``<data_dir>/api.json``.

    Raises:
        ConfigError: The file is missing (no node running) or malformed.
    """
    path = Path(data_dir) / API_FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"no running node for data dir {data_dir}: start it with "
            f"`shoal run --data-dir {data_dir}`"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path} is not valid JSON: remove it and restart the node") from exc
    if not (
        isinstance(raw, dict)
        and isinstance(raw.get("url"), str)
        and isinstance(raw.get("token"), str)
        and type(raw.get("pid")) is int
        and isinstance(raw.get("node_id"), str)
    ):
        raise ConfigError(
            f"{path} lacks url, token, pid or node_id: remove it and restart the node"
        )
    grpc = raw.get("grpc")
    return ApiInfo(
        url=raw["url"],
        token=raw["token"],
        pid=raw["pid"],
        node_id=raw["node_id"],
        grpc=grpc if isinstance(grpc, str) else None,
    )


def publish_grpc_address(data_dir: str | os.PathLike[str], token: str, address: str | None) -> None:
    """Add the gRPC API's ``address`` to the ``api.json`` that carries ``token`` (None: remove
    it, when the gRPC API stops before the HTTP API).

    Raises:
        ConfigError: ``api.json`` is missing, malformed, or another node's (another token).
        StorageError: The file cannot be written.
    """
    info = read_api_info(data_dir)
    if info.token != token:
        raise ConfigError(
            f"{Path(data_dir) / API_FILE_NAME} belongs to another running node: stop it first"
        )
    write_api_info(data_dir, replace(info, grpc=address))
