"""The datasets stored from data files, remembered by the files' identity: a command run
again on an unchanged file names its dataset at once, without reading the file.

A dataset's id is its content's (``protos.codec.dataset_id``: the tensors' specs and
sha256), the same on every server; finding it means reading and hashing the file (for
20 MB, 25 ms of a command that answers in about 1 s). A file is known unchanged, as git's
index and DVC's state know it, by its device, inode, size, and modification and change
times in nanoseconds: writing, truncating, renaming over, ``touch`` or ``utime`` all set
the change time to the clock's now, which no user can set back. The identity is read from
the opened file (``fstat``), so that NFS's close-to-open consistency gives the server's
attributes, not a cached ``stat``.

What was read is remembered only when the file was the same before and after the reading,
and had not changed for ``SETTLED_NS`` when the reading began: a file rewritten within the
timestamps' resolution (a second on some file systems) of a change made just before the
reading could keep all its times while its content changed (git calls such an entry
"racy"). Only where the change time is one (POSIX; Windows' ``st_ctime`` is the creation
time) is anything remembered.

The record is one small JSON file in the data directory, written atomically; losing it,
or finding it unreadable, only costs the next command a read of its files. A remembered id
that the server does not hold (another server, a dataset deleted since) is met with
NOT_FOUND, and the file is then read and uploaded as the first time.
"""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..local import write_atomic

FILE_NAME = "remembered-datasets.json"
SETTLED_NS = 2_000_000_000
MAX_ENTRIES = 256
IDENTITY = ("st_dev", "st_ino", "st_size", "st_mtime_ns", "st_ctime_ns")
CHANGE_TIME = os.name == "posix"
"""Whether ``st_ctime`` is the time of the last change (not the creation time)."""


def identity(path: str | os.PathLike[str]) -> list[int] | None:
    """A regular file's identity (``IDENTITY`` of the opened file's stat), or None (not a
    regular file, not readable, or a system whose change time is not one)."""
    if not CHANGE_TIME:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(st.st_mode):
        return None
    return [int(getattr(st, f)) for f in IDENTITY]


@dataclass(frozen=True)
class Seen:
    """A file's identity, and the clock when it was taken (before the file was read)."""

    identity: list[int] | None
    at_ns: int


@dataclass(frozen=True)
class Recalled:
    """The dataset stored from a file, and what the file's second tensor was (``labels``
    or ``targets``: the task)."""

    dataset: str
    key: str


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

    def see(self, path: str | os.PathLike[str]) -> Seen:
        """The file's identity before it is read (:meth:`remember` takes it)."""
        return Seen(identity(path), self.clock_ns())

    def recall(self, path: str | os.PathLike[str], purpose: str) -> Recalled | None:
        """The dataset stored from ``path`` as it is now, or None."""
        entry = self._entries().get(self._key(path, purpose))
        now = identity(path)
        if not isinstance(entry, dict) or now is None or entry.get("identity") != now:
            return None
        dataset, key = entry.get("dataset"), entry.get("key")
        if not (isinstance(dataset, str) and dataset and isinstance(key, str)):
            return None
        return Recalled(dataset, key)

    def remember(self, path: str | os.PathLike[str], purpose: str, before: Seen,
                 dataset: str, key: str) -> bool:
        """Record that ``dataset`` (whose second tensor is ``key``) was stored from
        ``path``, read after ``before`` was seen. Nothing is recorded, and False returned,
        when the file changed since, had changed less than ``SETTLED_NS`` before it was
        seen, or the record cannot be written."""
        after = identity(path)
        if before.identity is None or after != before.identity:
            return False
        if before.at_ns - max(after[3], after[4]) < SETTLED_NS:
            return False
        entries = self._entries()
        entries[self._key(path, purpose)] = {"identity": after, "dataset": dataset,
                                             "key": key, "at_ns": self.clock_ns()}
        if len(entries) > MAX_ENTRIES:
            def at(name: str) -> int:
                value = entries[name]
                t = value.get("at_ns") if isinstance(value, dict) else None
                return t if isinstance(t, int) else 0
            for name in sorted(entries, key=at)[: len(entries) - MAX_ENTRIES]:
                del entries[name]
        return self._write(entries)

    def forget(self, path: str | os.PathLike[str], purpose: str) -> None:
        """Drop what is remembered of ``path`` (its dataset is gone from the server)."""
        entries = self._entries()
        if entries.pop(self._key(path, purpose), None) is not None:
            self._write(entries)

    def _write(self, entries: dict[str, Any]) -> bool:
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # as the store's
            write_atomic(self.path, lambda f: f.write(json.dumps(entries).encode()))
        except OSError:
            return False
        return True
