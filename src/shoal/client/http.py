"""The blocking ``shoal.Client``: talks to a running node through its local HTTP API.

``shoal run`` writes ``<data dir>/api.json`` (URL, bearer token, pid, node ID, mode 0600) and
removes it on exit; :meth:`Client.from_data_dir` reads it. Transfers stream both ways in 1 MiB
pieces, so memory stays bounded whatever the file size. The endpoints are described in
``docs/http-api.md``.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final
from urllib.parse import quote

import httpx

from shoal.client.api_info import API_FILE_NAME, read_api_info
from shoal.client.folders import entries_from_json, multipart_body, new_boundary
from shoal.client.folders import restore as restore_folder
from shoal.content.caps import ReadCap, looks_like_cap, parse_cap
from shoal.content.directory import DirEntry
from shoal.errors import (
    ConfigError,
    InvalidCapability,
    PeerUnavailable,
    ProtocolError,
    QuorumNotMet,
    RequestTimeout,
    ShoalError,
    StorageError,
    TransportError,
    error_class_for_code,
)
from shoal.names import check_name
from shoal.node.folder_disk import scan_folder
from shoal.store.files import AtomicFile

__all__ = [
    "Client",
    "TransferProgress",
    "check_read_cap",
]

PIECE_SIZE: Final = 1024 * 1024

TransferProgress = Callable[[int, int | None], None]
"""Progress callback: ``(bytes just transferred, total size or None if unknown)``."""

CONNECT_TIMEOUT: Final = 5.0
# A put answers only once the write quorum is met and a get may wait for slow holders, so
# reads get a generous timeout; there is no total timeout (a 10 GiB transfer takes a while).
DEFAULT_READ_TIMEOUT: Final = 300.0


def _error_from_response(response: httpx.Response) -> ShoalError:
    """Turn an error response into the ``ShoalError`` subclass its JSON body's code names."""
    try:
        err = response.json()["error"]
        if not isinstance(err, dict) or not {"code", "message"} <= err.keys():
            raise TypeError("no error object")
    except (ValueError, KeyError, TypeError):
        text = response.text.strip().splitlines()
        detail = text[0] if text else response.reason_phrase
        return ShoalError(f"node API answered {response.status_code}: {detail}")
    return _error_from_body(err)


def _error_from_body(err: dict[str, Any]) -> ShoalError:
    """The ``ShoalError`` subclass an ``{"code", "message"}`` error object names."""
    code, message = str(err.get("code")), str(err.get("message"))
    cls = error_class_for_code(code) or ShoalError
    if issubclass(cls, QuorumNotMet):
        placed = err.get("placed")
        return QuorumNotMet(message, placed=placed if isinstance(placed, dict) else None)
    if issubclass(cls, ProtocolError):
        return cls(message, code=code)
    return cls(message)


def check_read_cap(cap: str) -> None:
    """Raise ``InvalidCapability`` unless ``cap`` is a well-formed read cap string."""
    if not isinstance(parse_cap(cap), ReadCap):
        raise InvalidCapability(
            "a verify cap (shoal:v:...) cannot read a file: use a read cap (shoal:r:...)"
        )


class Client:
    """Blocking client for a running node's local HTTP API.

    Usually made with :meth:`from_data_dir`; use it as a context manager or call
    :meth:`close`. Every failure is raised as a :class:`~shoal.errors.ShoalError` subclass:
    errors reported by the node keep their type (``NotFound``, ``QuorumNotMet``, ...).

    Example::

        with Client.from_data_dir("n1") as client:
            cap = client.put("picture_1.png")["cap"]
            client.get(cap, "copy.png")
    """

    def __init__(
        self,
        url: str,
        token: str,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
    ) -> None:
        """Connect lazily to the API at ``url`` with bearer ``token``.

        Args:
            url: Base URL of the node's API, e.g. ``http://127.0.0.1:43117``.
            token: The bearer token from ``api.json``.
            data_dir: The data dir the URL came from, only used in error messages.
            read_timeout: Longest wait, in seconds, for the node to answer or send more bytes
                (connecting has 5 s; a whole transfer has no limit).
        """
        self.url = url
        self._data_dir = data_dir
        self._http = httpx.Client(
            base_url=url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(
                connect=CONNECT_TIMEOUT, read=read_timeout, write=read_timeout, pool=CONNECT_TIMEOUT
            ),
            trust_env=False,  # never send the token through a proxy from the environment
        )

    @classmethod
    def from_data_dir(
        cls, data_dir: str | os.PathLike[str], *, read_timeout: float = DEFAULT_READ_TIMEOUT
    ) -> Client:
        """Make a client for the node running on ``data_dir`` (reads its ``api.json``).

        Raises:
            ConfigError: No node is running for that data dir.
        """
        info = read_api_info(data_dir)
        return cls(info.url, info.token, data_dir=data_dir, read_timeout=read_timeout)

    def close(self) -> None:
        """Close the underlying connections."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- simple calls ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the node's status (node ID, address, peers, blocks and bytes stored, ...)."""
        result: dict[str, Any] = self._json("GET", "/v1/status")
        return result

    def peers(self) -> list[dict[str, Any]]:
        """Return the known peers: ``node_id``, ``address``, ``state`` (up/down), ``last_seen``."""
        result: list[dict[str, Any]] = self._json("GET", "/v1/peers")
        return result

    def list_files(self) -> list[dict[str, Any]]:
        """Return the node's catalog: ``name``, ``cap``, ``size``, ``media_type``, ``created``."""
        result: list[dict[str, Any]] = self._json("GET", "/v1/files")
        return result

    def remove(self, name: str) -> dict[str, Any]:
        """Remove ``name`` from the node's catalog and return its entry.

        Raises:
            NotFound: No such name.
        """
        result: dict[str, Any] = self._json("DELETE", _file_path(name))
        return result

    # -- transfers ---------------------------------------------------------------------------

    def put(
        self,
        path_or_fileobj: str | os.PathLike[str] | IO[bytes],
        name: str | None = None,
        progress: TransferProgress | None = None,
        *,
        replicas: int | None = None,
        erasure: str | None = None,
    ) -> dict[str, Any]:
        """Store a file through the node, streaming it in 1 MiB pieces.

        Args:
            path_or_fileobj: A path, or a binary file object open for reading.
            name: Name in the catalog; defaults to the file's base name. It is checked with
                :func:`shoal.names.check_name` before anything is sent.
            progress: Called as ``progress(bytes_sent, total_or_None)`` after each piece.
            replicas: Keep this many copies of each block (1 to 255) instead of the node's
                default.
            erasure: Erasure-code the file instead, ``"K-of-N"`` (e.g. ``"3-of-5"``: each
                chunk becomes N shares on N distinct nodes, any K rebuild it). At most one of
                ``replicas`` and ``erasure``.

        Returns:
            ``{"name", "cap", "size", "blocks", "replicas", "replicas_wanted",
            "redundancy"}``; ``cap`` is the read cap string; ``redundancy`` is
            ``{"kind": "replicate", "replicas": R}`` or ``{"kind": "erasure", "k", "n",
            "replicas"}`` (for erasure coding, ``replicas`` counts shares: see
            docs/erasure.md).

        Raises:
            ConfigError: The name is invalid (empty, control characters, too long), or none
                was given and none can be derived from the file object.
            StorageError: The local file cannot be read.
            QuorumNotMet: The node could not place a block anywhere.
        """
        if name is not None:
            check_name(name)
        params: dict[str, str] = {}
        if replicas is not None and erasure is not None:
            raise ConfigError("give replicas or erasure, not both")
        if replicas is not None:
            params["replicas"] = str(replicas)
        if erasure is not None:
            params["erasure"] = erasure
        if isinstance(path_or_fileobj, str | os.PathLike):
            path = Path(path_or_fileobj)
            if name is None:
                name = check_name(path.name)
            try:
                with path.open("rb") as fileobj:
                    return self._put_fileobj(fileobj, name, progress, params)
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if name is None:
            raw_name = getattr(path_or_fileobj, "name", None)
            if not isinstance(raw_name, str) or not os.path.basename(raw_name):
                raise ConfigError("put needs a name for a file object without one")
            name = check_name(os.path.basename(raw_name))
        return self._put_fileobj(path_or_fileobj, name, progress, params)

    def _put_fileobj(
        self,
        fileobj: IO[bytes],
        name: str,
        progress: TransferProgress | None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        total = _remaining_size(fileobj)
        headers = {"Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream"}
        if total is not None:
            # With a known length httpx sends Content-Length instead of chunked encoding.
            headers["Content-Length"] = str(total)

        def pieces() -> Iterator[bytes]:
            sent = 0
            while piece := fileobj.read(PIECE_SIZE):
                sent += len(piece)
                if total is not None and sent > total:
                    raise StorageError(f"{name} grew while it was being uploaded")
                yield piece
                if progress is not None:
                    progress(len(piece), total)
            if total is not None and sent != total:
                raise StorageError(f"{name} shrank while it was being uploaded")

        with self._request(
            "PUT", _file_path(name), content=pieces(), headers=headers, params=params or None
        ) as resp:
            resp.read()
            result: dict[str, Any] = resp.json()
            return result

    def get(
        self,
        name_or_cap: str,
        dest_path: str | os.PathLike[str],
        progress: TransferProgress | None = None,
        *,
        overwrite: bool = True,
    ) -> int:
        """Fetch a file by name or read cap into ``dest_path``, atomically.

        The bytes go to a temporary file next to ``dest_path``, which is fsynced and renamed
        into place only when the whole file arrived; on any failure nothing is left at
        ``dest_path`` (an existing file there is kept as it was).

        Args:
            name_or_cap: A name in the node's catalog, or a read cap ``shoal:r:...``.
            dest_path: Where to write the file.
            progress: Called as ``progress(bytes_received, total)`` after each piece.
            overwrite: Replace a file already at ``dest_path`` (the default). If False, such
                a file is never replaced, even one created while the transfer ran.

        Returns:
            The file's size in bytes.

        Raises:
            NotFound: No such name, or the file's blocks cannot be found.
            InvalidCapability: ``name_or_cap`` starts with ``shoal:`` but is no read cap.
            TransportError: The transfer was cut short.
            StorageError: The destination cannot be written.
            ConfigError: ``overwrite`` is False and ``dest_path`` exists.
        """
        dest = Path(dest_path)
        if not overwrite and os.path.lexists(dest):
            raise _exists_error(dest)
        try:
            out = AtomicFile(dest)
        except OSError as exc:
            raise StorageError(f"cannot write into {dest.parent}: {exc.strerror or exc}") from exc
        try:
            size = self.get_into(name_or_cap, out.file, progress)
            out.commit(overwrite=overwrite)
        except BaseException as exc:
            out.discard()
            if isinstance(exc, FileExistsError):
                raise _exists_error(dest) from None
            if isinstance(exc, OSError):
                raise StorageError(f"cannot write {dest}: {exc.strerror or exc}") from exc
            raise
        return size

    def get_into(
        self, name_or_cap: str, out: IO[bytes], progress: TransferProgress | None = None
    ) -> int:
        """Stream a file by name or read cap into the binary file object ``out``.

        Unlike :meth:`get` this is not atomic: on failure ``out`` holds a prefix of the file.

        Returns:
            The file's size in bytes.

        Raises:
            TransportError: The transfer was cut short (fewer bytes than announced).
        """
        if looks_like_cap(name_or_cap):
            check_read_cap(name_or_cap)
            url = "/v1/caps/" + quote(name_or_cap.strip(), safe=":")
        else:
            url = _file_path(name_or_cap)
        with self._request("GET", url) as resp:
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            received = 0
            try:
                for piece in resp.iter_raw():
                    out.write(piece)
                    received += len(piece)
                    if progress is not None:
                        progress(len(piece), total)
            except httpx.HTTPError as exc:
                raise self._map_transport_error(exc, transfer=True) from exc
            if total is not None and received != total:
                raise TransportError(
                    f"transfer of {name_or_cap} cut short: got {received} of {total} bytes"
                )
            return received

    # -- folders -----------------------------------------------------------------------------

    def put_folder(
        self,
        path: str | os.PathLike[str],
        name: str | None = None,
        progress: TransferProgress | None = None,
    ) -> dict[str, Any]:
        """Store a local folder through the node (``PUT /v1/folders/{name}``), streamed.

        The folder is scanned first: names and limits are checked before anything is sent,
        and symbolic links and special files are skipped (listed in the answer's ``skipped``).

        Returns:
            ``{"name", "cap", "size", "files", "directories", "blocks", "replicas",
            "replicas_wanted", "skipped"}``.

        Raises:
            ConfigError: Not a folder, or a name or limit that cannot be stored.
        """
        root = Path(path)
        folder_name = check_name(name if name is not None else root.resolve().name)
        items, skipped = scan_folder(root)
        boundary = new_boundary()
        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        body = multipart_body(items, boundary, progress)
        url = "/v1/folders/" + _quote_name(folder_name)
        with self._request("PUT", url, content=body, headers=headers) as resp:
            resp.read()
            result: dict[str, Any] = resp.json()
        result["skipped"] = skipped
        return result

    def list_folder(self, name_or_cap: str) -> dict[str, Any]:
        """One folder's entries: ``{"name", "cap", "size", "entries": [...]}``; each entry
        ``{"name", "type" ("file" or "dir"), "size", "mtime", "mtime_ns", "mode", "cap"}``."""
        result: dict[str, Any] = self._json("GET", _folder_path(name_or_cap))
        return result

    def get_folder(
        self,
        name_or_cap: str,
        dest_path: str | os.PathLike[str],
        progress: TransferProgress | None = None,
        *,
        overwrite: bool = False,
    ) -> dict[str, Any]:
        """Restore a folder as the folder ``dest_path``, with its files' times and modes.

        Written into a staging folder renamed into place when complete: a failure leaves
        nothing at ``dest_path``. An existing ``dest_path`` is only replaced if ``overwrite``.

        Returns:
            ``{"path", "files", "directories", "size"}``.
        """
        top = self.list_folder(name_or_cap)
        cap = ReadCap.parse(str(top["cap"]))

        def listing(of: ReadCap) -> list[DirEntry]:
            raw = top if of == cap else self.list_folder(str(of))
            return entries_from_json(raw.get("entries"))

        def get_file(
            of: ReadCap, target: Path, step: Callable[[int, int | None], None] | None
        ) -> int:
            return self.get(str(of), target, step, overwrite=False)

        return restore_folder(
            cap,
            Path(dest_path),
            listing=listing,
            get_file=get_file,
            overwrite=overwrite,
            progress=progress,
        )

    # -- health and repair (docs/repair.md) --------------------------------------------------

    def check(
        self,
        name_or_cap: str,
        *,
        verify: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> dict[str, Any]:
        """Check a file's health: the live copies of each of its blocks.

        Args:
            name_or_cap: A catalog name, a read cap or a verify cap (``shoal:v:...``).
            verify: Also download and hash every copy counted.
            progress: Called with the number of blocks checked so far, about every second.

        Returns:
            At least ``{"healthy", "state", "blocks", "min_copies", "wanted"}``
            (``docs/http-api.md``).
        """
        query = "?verify=true" if verify else ""
        return self._lines("GET", _health_path("/v1/health/", name_or_cap) + query, progress)

    def repair(
        self, name_or_cap: str | None = None, *, progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Run one repair pass now over one file (a name or a cap; a verify cap is enough) or,
        with None, over every file the node keeps or holds.

        Returns:
            For one file its report (``check``'s fields plus ``copied``, ``bytes_moved``,
            ``unrepaired``); for all, ``{"files", "copied", "bytes_moved", "unrepaired",
            "reports", ...}``.
        """
        if name_or_cap is None:
            return self._lines("POST", "/v1/repair", progress)
        report = self._lines("POST", _health_path("/v1/repair/", name_or_cap), progress)
        files: list[dict[str, Any]] = report.get("reports", [])
        return files[0] if len(files) == 1 else report

    def _lines(
        self, method: str, url: str, progress: Callable[[int], None] | None
    ) -> dict[str, Any]:
        """Read a stream of JSON lines: progress, then a result or an error."""
        malformed = ShoalError(f"node API sent a malformed answer to {method} {url}")
        with self._request(method, url) as resp:
            try:
                for line in resp.iter_lines():
                    if not line.strip():
                        continue
                    try:
                        message = json.loads(line)
                        if "progress" in message:
                            if progress is not None:
                                progress(int(message["progress"]["blocks"]))
                            continue
                    except (ValueError, TypeError, KeyError) as exc:
                        raise malformed from exc
                    if isinstance(message.get("result"), dict):
                        result: dict[str, Any] = message["result"]
                        return result
                    if isinstance(message.get("error"), dict):
                        raise _error_from_body(message["error"])
                    raise malformed
            except httpx.HTTPError as exc:
                raise self._map_transport_error(exc, transfer=True) from exc
        raise TransportError(f"the node's answer to {method} {url} ended before its result")

    # -- plumbing ----------------------------------------------------------------------------

    def _json(self, method: str, url: str) -> Any:
        with self._request(method, url) as resp:
            resp.read()
            try:
                return resp.json()
            except ValueError as exc:
                raise ShoalError(f"node API sent a malformed answer to {method} {url}") from exc

    @contextlib.contextmanager
    def _request(self, method: str, url: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """Send a request, yield the streaming response, raise the mapped error on failure."""
        try:
            with self._http.stream(method, url, **kwargs) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_from_response(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise self._map_transport_error(exc, transfer=False) from exc

    def _map_transport_error(self, exc: httpx.HTTPError, *, transfer: bool) -> ShoalError:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            if self._data_dir is not None:
                return ConfigError(
                    f"no node answers at {self.url} for data dir {self._data_dir} (stale "
                    f"{API_FILE_NAME}: the node was stopped or crashed): start it with "
                    f"`shoal run --data-dir {self._data_dir}`"
                )
            return PeerUnavailable(f"no node answers at {self.url}: is `shoal run` running?")
        if isinstance(exc, httpx.TimeoutException):
            return RequestTimeout(f"the node at {self.url} did not answer in time")
        if transfer or isinstance(exc, httpx.RemoteProtocolError):
            return TransportError(f"the node closed the connection mid-transfer: {exc}")
        return TransportError(f"request to the node at {self.url} failed: {exc}")

    # -- leases and garbage collection (docs/leases.md) --------------------------------------

    def pin(self, cap: str, name: str) -> dict[str, Any]:
        """Keep a file someone shared: catalog ``cap`` as ``name`` and take this node's leases
        on its blocks. Returns the entry plus ``blocks`` and ``leased``.

        Raises:
            InvalidCapability: ``cap`` is not a read cap.
            NotFound: The file's root is on no reachable node.
        """
        with self._request("POST", "/v1/pins", json={"cap": cap, "name": name}) as resp:
            resp.read()
            result: dict[str, Any] = resp.json()
        return result

    def gc(self) -> dict[str, Any]:
        """Run one garbage-collection pass now; returns ``blocks`` and ``bytes`` freed."""
        result: dict[str, Any] = self._json("POST", "/v1/gc")
        return result

    def renew_leases(self) -> dict[str, Any]:
        """Renew the leases of every object in the node's catalog now."""
        result: dict[str, Any] = self._json("POST", "/v1/leases/renew")
        return result

    # -- scrub (docs/scrub.md) -----------------------------------------------------------------

    def scrub_status(self) -> dict[str, Any]:
        """Return the scrub's status: ``running``, ``pass``, progress, ``last`` (or None)."""
        result: dict[str, Any] = self._json("GET", "/v1/scrub")
        return result

    def start_scrub(self) -> int:
        """Start a whole scrub pass now (one under way starts over); return its number.

        It is done when ``scrub_status()["last"]["pass"]`` reaches that number.
        """
        answer = self._json("POST", "/v1/scrub")
        number = answer.get("pass") if isinstance(answer, dict) else None
        if not isinstance(number, int):
            raise ShoalError("node API sent a malformed answer to POST /v1/scrub")
        return number


def _exists_error(dest: Path) -> ConfigError:
    return ConfigError(f"{dest} already exists; it was not replaced")


def _quote_name(name: str) -> str:
    # Dots are escaped too, or "." and ".." would be taken as path segments and normalized.
    return quote(name, safe="").replace(".", "%2E")


def _folder_path(name_or_cap: str) -> str:
    if looks_like_cap(name_or_cap):
        check_read_cap(name_or_cap)
        return "/v1/folders/" + quote(name_or_cap.strip(), safe=":")
    if not name_or_cap:
        raise ConfigError("a folder name must not be empty")
    return "/v1/folders/" + _quote_name(name_or_cap)


def _health_path(prefix: str, name_or_cap: str) -> str:
    if looks_like_cap(name_or_cap):
        parse_cap(name_or_cap)  # malformed caps fail here, with the cap's own message
        return prefix + quote(name_or_cap.strip(), safe=":")
    if not name_or_cap:
        raise ConfigError("a file name must not be empty")
    return prefix + _quote_name(name_or_cap)


def _file_path(name: str) -> str:
    if not name:
        raise ConfigError("a file name must not be empty")
    # Dots are escaped too, or "." and ".." would be taken as path segments and normalized.
    return "/v1/files/" + quote(name, safe="").replace(".", "%2E")


def _remaining_size(fileobj: IO[bytes]) -> int | None:
    """Bytes left to read in ``fileobj`` if it is a regular seekable file, else None."""
    try:
        if not fileobj.seekable():
            return None
        pos = fileobj.tell()
        end = fileobj.seek(0, os.SEEK_END)
        fileobj.seek(pos)
    except (OSError, ValueError):
        return None
    return max(end - pos, 0)
