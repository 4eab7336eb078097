"""What background repair remembers across restarts: ``repair.json`` in the data dir.

Format (JSON, written atomically with :func:`~shoal.store.files.write_file_atomic`)::

    {"version": 1,
     "cursor": "<root CID>" | null,          # the last root a full pass finished
     "absent": {"<node ID>": <unix time>},  # unreachable nodes: when last heard from
     "due": {"<root CID>": <unix time>},    # roots waiting for a repair delay to run out
     "health": {"<root CID>": {"state": "healthy"|"degraded"|"lost",
                               "min_copies": int, "wanted": int, "checked": <unix time>}},
     "passes": int, "last_pass": <unix time> | null}

IDs are in their text form (``shoal.ids``). A missing file is a fresh start; an unreadable one
is logged and replaced (it only holds hints: the next pass finds everything again). Sizes are
bounded: ``absent`` and ``due`` by ``MAX_ENTRIES`` (the oldest dropped), ``health`` by the
catalog (only catalog files are kept).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.ids import decode_id, encode_id
from shoal.store.files import write_file_atomic

__all__ = ["STATE_FILE", "FileHealth", "RepairState"]

log = logging.getLogger(__name__)

STATE_FILE = "repair.json"
VERSION = 1
#: Entries kept in ``absent`` and ``due`` (the oldest go first).
MAX_ENTRIES = 65536


@dataclass(frozen=True, slots=True)
class FileHealth:
    """The last check of one file: ``state`` is healthy, degraded or lost."""

    state: str
    min_copies: int
    wanted: int
    checked: float

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "min_copies": self.min_copies,
            "wanted": self.wanted,
            "checked": self.checked,
        }


def _id_map(raw: object) -> dict[bytes, float]:
    out: dict[bytes, float] = {}
    if not isinstance(raw, dict):
        return out
    for key, value in raw.items():
        if not isinstance(key, str) or not isinstance(value, int | float):
            continue
        try:
            out[decode_id(key)] = float(value)
        except ValueError:
            continue
    return out


def _bounded(values: dict[bytes, float]) -> dict[bytes, float]:
    if len(values) <= MAX_ENTRIES:
        return values
    newest = sorted(values.items(), key=lambda kv: kv[1])[-MAX_ENTRIES:]
    return dict(newest)


@dataclass
class RepairState:
    """The repair loop's memory (see the module docstring). Not thread-safe: the loop owns it;
    :meth:`encode` snapshots it for a write on the I/O pool."""

    cursor: bytes | None = None
    absent: dict[bytes, float] = field(default_factory=dict)
    due: dict[bytes, float] = field(default_factory=dict)
    health: dict[bytes, FileHealth] = field(default_factory=dict)
    passes: int = 0
    last_pass: float | None = None

    @classmethod
    def load(cls, path: Path) -> RepairState:
        """Read ``path``; a fresh state if it is missing or unreadable."""
        try:
            raw = json.loads(path.read_bytes())
        except FileNotFoundError:
            return cls()
        except (OSError, ValueError) as exc:
            log.warning("repair state %s unreadable (%s): starting afresh", path.name, exc)
            return cls()
        if not isinstance(raw, dict) or raw.get("version") != VERSION:
            log.warning("repair state %s has an unknown format: starting afresh", path.name)
            return cls()
        state = cls(absent=_id_map(raw.get("absent")), due=_id_map(raw.get("due")))
        cursor = raw.get("cursor")
        if isinstance(cursor, str):
            try:
                state.cursor = decode_id(cursor)
            except ValueError:
                state.cursor = None
        health = raw.get("health")
        if isinstance(health, dict):
            for key, value in health.items():
                try:
                    state.health[decode_id(key)] = FileHealth(
                        state=str(value["state"]),
                        min_copies=int(value["min_copies"]),
                        wanted=int(value["wanted"]),
                        checked=float(value["checked"]),
                    )
                except (ValueError, KeyError, TypeError):
                    continue
        passes = raw.get("passes")
        state.passes = passes if isinstance(passes, int) else 0
        last = raw.get("last_pass")
        state.last_pass = float(last) if isinstance(last, int | float) else None
        return state

    def encode(self) -> bytes:
        """The state as the bytes of ``repair.json``."""
        self.absent = _bounded(self.absent)
        self.due = _bounded(self.due)
        doc = {
            "version": VERSION,
            "cursor": encode_id(self.cursor) if self.cursor is not None else None,
            "absent": {encode_id(k): v for k, v in self.absent.items()},
            "due": {encode_id(k): v for k, v in self.due.items()},
            "health": {encode_id(k): v.to_json() for k, v in self.health.items()},
            "passes": self.passes,
            "last_pass": self.last_pass,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @staticmethod
    def write(path: Path, data: bytes) -> None:
        """Replace ``path`` with ``data`` atomically (call on the I/O pool)."""
        write_file_atomic(path, data)
