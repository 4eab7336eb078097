"""Where ``shoal get`` writes: the local file for a name or a cap, and ``-o`` handling.

Like ``ipfs get``: without ``-o`` a get by name writes to the name's last part in the current
directory and a get by cap to a file named after the CID. ``-o DIR/`` (a trailing slash) or
``-o`` naming an existing directory writes that same file name into the directory. Names from a
catalog are reduced to their last part (:func:`shoal.names.local_file_name`), so ``../x`` or
``/etc/passwd`` never leaves the chosen directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from shoal.content.caps import looks_like_cap, parse_cap
from shoal.errors import ConfigError
from shoal.ids import encode_id
from shoal.names import local_file_name

__all__ = ["default_file_name", "output_path"]


def default_file_name(name_or_cap: str) -> str:
    """The local file name for a get: the CID for a cap, else the name's last part.

    Raises:
        ConfigError: The name leaves no usable file name (``..``, ``dir/``); use ``-o``.
        InvalidCapability: It looks like a cap but is malformed.
    """
    if looks_like_cap(name_or_cap):
        return encode_id(parse_cap(name_or_cap.strip()).cid)
    return local_file_name(name_or_cap)


def output_path(name_or_cap: str, output: str | None) -> Path:
    """Where ``shoal get NAME_OR_CAP [-o OUTPUT]`` writes (``-`` is handled by the caller).

    Raises:
        ConfigError: ``OUTPUT/`` is not an existing directory, or no file name can be made
            from the name (then ``-o FILE`` is needed).
    """
    if output is None:
        return Path(default_file_name(name_or_cap))
    if output.endswith(("/", os.sep)) or os.path.isdir(output):
        directory = Path(output)
        if not directory.is_dir():
            raise ConfigError(f"no such directory: {output} (create it first)")
        return directory / default_file_name(name_or_cap)
    return Path(output)
