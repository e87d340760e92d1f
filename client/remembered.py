"""The datasets stored from data files, remembered by the files' identity: a command run
again on an unchanged file names its dataset at once, without reading the file.

A dataset's id is its content's (``protos.codec.dataset_id``: the tensors' specs and
sha256), the same on every server; finding it means reading and hashing the file (for
20 MB, 25 ms of a command that answers in about 1 s). A file is known unchanged, as git's
index and DVC's state know it, by its device, inode, size, and modification and change
times in nanoseconds: writing, truncating, renaming over, ``touch`` or ``utime`` all set
the change time to the clock's now, which no user can set back. What was read is
remembered only when the file was the same before and after the reading and had not
changed for ``SETTLED_NS`` (a file rewritten within the clock's resolution of its last
change would keep its times: git calls such an entry "racy").

The record is one small JSON file in the data directory, written atomically; losing it,
or finding it unreadable, only costs the next command a read of its files. A remembered id
that the server does not hold (another server, a dataset deleted since) is met with
NOT_FOUND, and the file is then read and uploaded as the first time.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..local import write_atomic

FILE_NAME = "remembered-datasets.json"
SETTLED_NS = 2_000_000_000
MAX_ENTRIES = 256
IDENTITY = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")


def identity(path: str | os.PathLike[str]) -> list[int] | None:
    """A file's identity (``IDENTITY`` of its stat), or None when it is not a regular file
    that can be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not Path(path).is_file():
        return None
    return [int(getattr(st, f)) for f in IDENTITY]


class RememberedDatasets:
    """``{(file, purpose): dataset id}`` for files unchanged since they were read.

    ``purpose`` names what was stored from the file (the same file gives different
    datasets to different commands: ``indices`` stores its features and labels only)."""

    def __init__(self, directory: str | os.PathLike[str],
                 clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.path = Path(directory) / FILE_NAME
        self.clock_ns = clock_ns

    @staticmethod
    def _key(path: str | os.PathLike[str], purpose: str) -> str:
        return f"{purpose}:{os.path.realpath(path)}"

    def _entries(self) -> dict[str, Any]:
        try:
            found = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            return {}
        return found if isinstance(found, dict) else {}

    def recall(self, path: str | os.PathLike[str], purpose: str) -> str | None:
        """The id of the dataset stored from ``path`` as it is now, or None."""
        entry = self._entries().get(self._key(path, purpose))
        now = identity(path)
        if not isinstance(entry, dict) or now is None or entry.get("identity") != now:
            return None
        found = entry.get("dataset")
        return found if isinstance(found, str) and found else None

    def remember(self, path: str | os.PathLike[str], purpose: str, before: list[int] | None,
                 dataset: str) -> bool:
        """Record that ``dataset`` was stored from ``path``, read while it had the identity
        ``before`` (taken before the first read). Nothing is recorded, and False returned,
        when the file changed since, changed less than ``SETTLED_NS`` ago, or the record
        cannot be written."""
        after = identity(path)
        if before is None or after != before:
            return False
        changed_ns = max(after[3], after[4])
        if self.clock_ns() - changed_ns < SETTLED_NS:
            return False
        entries = self._entries()
        entries[self._key(path, purpose)] = {"identity": after, "dataset": dataset,
                                             "at_ns": self.clock_ns()}
        if len(entries) > MAX_ENTRIES:
            def at(key: str) -> int:
                value = entries[key]
                t = value.get("at_ns") if isinstance(value, dict) else None
                return t if isinstance(t, int) else 0
            for key in sorted(entries, key=at)[: len(entries) - MAX_ENTRIES]:
                del entries[key]
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the store's
            write_atomic(self.path, lambda f: f.write(json.dumps(entries).encode()))
        except OSError:
            return False
        return True

    def forget(self, path: str | os.PathLike[str], purpose: str) -> None:
        """Drop what is remembered of ``path`` (its dataset is gone from the server)."""
        entries = self._entries()
        if entries.pop(self._key(path, purpose), None) is not None:
            try:
                write_atomic(self.path, lambda f: f.write(json.dumps(entries).encode()))
            except OSError:
                pass
