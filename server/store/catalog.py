"""The catalog: a SQLite database (WAL) of models, datasets and jobs.

Every change is one transaction. Blob bytes live in :mod:`blobs`; rows refer to them by
sha256, and :attr:`Catalog.lock` is the lock under which blobs are kept or dropped. The
database file is created 0600 (SQLite gives its WAL and shared-memory files the same
mode). On opening, jobs left queued or running by a server that stopped are marked
interrupted with a message: never silently lost, never left "running".

Listings come in pages in one stable order, (created, id): a page starts after the key of
the previous page's last row, so rows stored meanwhile come on later pages and no row is
skipped or repeated (keyset paging; an offset would shift under inserts and deletes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    info_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    blob TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    specs_json TEXT NOT NULL,
    n_samples INTEGER NOT NULL,
    task TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reference_sets (
    id TEXT PRIMARY KEY,
    model_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    blob TEXT NOT NULL,
    created REAL NOT NULL,
    specs_json TEXT NOT NULL,
    info_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    request_json TEXT NOT NULL,
    progress_json TEXT NOT NULL DEFAULT '{}',
    message TEXT NOT NULL DEFAULT '',
    result_json TEXT
);
CREATE INDEX IF NOT EXISTS models_order ON models (created, id);
CREATE INDEX IF NOT EXISTS datasets_order ON datasets (created, id);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs (created, id);
"""

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled", "interrupted")
DEFAULT_PAGE_SIZE = 100
"""Rows of a listing's page when the request leaves the size at 0."""
MAX_PAGE_SIZE = 1000
"""The most rows of a page; a larger request gets this many (it keeps a page of ordinary
rows, a few KiB each, far below the 16 MiB message limit)."""

Key = tuple[float, str]
"""(created, id) of a row: the order of every listing, and where a page ends."""


class NotFound(KeyError):
    """An id the catalog does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class Page(NamedTuple):
    """One page of a listing: its rows, and the key of the last one when more follow."""

    rows: list[Any]
    next: Key | None


def page_size(requested: int) -> int:
    """Return the rows a page holds for a requested size: 0 means DEFAULT_PAGE_SIZE, more
    than MAX_PAGE_SIZE means MAX_PAGE_SIZE; ValueError for a negative size."""
    if requested < 0:
        raise ValueError(f"page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or "
                         f"positive, got {requested}")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


@dataclass
class JobRow:
    id: str
    kind: str
    state: str
    created: float
    started: float | None
    finished: float | None
    request: dict[str, Any]
    progress: dict[str, Any]
    message: str
    result: dict[str, Any] | None


class Catalog:
    """Thread-safe access to the SQLite catalog at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        with self._lock:
            self._db.executescript(SCHEMA)  # executescript commits on its own

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @property
    def lock(self) -> threading.RLock:
        """The lock every change of the catalog takes (reentrant): hold it to make a
        decision about a blob together with the rows that refer to it."""
        return self._lock

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _page(self, table: str, size: int, after: Key | None,
              convert: Callable[[sqlite3.Row], Any]) -> Page:
        """The rows of ``table`` after the key ``after`` in (created, id) order, at most
        ``page_size(size)`` of them, each converted."""
        limit = page_size(size)
        start = "" if after is None else "WHERE (created, id) > (?, ?) "
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM {table} {start}ORDER BY created, id LIMIT ?",
                (*(after or ()), limit + 1)).fetchall()
        last = rows[limit - 1] if len(rows) > limit else None  # one more row: more follow
        return Page([convert(r) for r in rows[:limit]],
                    None if last is None else (float(last["created"]), str(last["id"])))

    # models -----------------------------------------------------------------------------
    def add_model(self, id: str, name: str, size: int, info: dict[str, Any]) -> bool:
        """Insert a model row; return False when the id was already there."""
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO models (id, name, size, created, info_json) "
                "VALUES (?, ?, ?, ?, ?)",
                (id, name, size, time.time(), json.dumps(info)),
            )
            return cur.rowcount == 1

    def model(self, id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM models WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise NotFound(f"no model with id {id!r}")
        return _model_dict(row)

    def models(self, size: int = 0, after: Key | None = None) -> Page:
        """A page of models, oldest first (see :func:`page_size` for ``size``)."""
        return self._page("models", size, after, _model_dict)

    def delete_model(self, id: str) -> None:
        with self.transaction() as db:
            if db.execute("DELETE FROM models WHERE id = ?", (id,)).rowcount == 0:
                raise NotFound(f"no model with id {id!r}")

    # datasets ---------------------------------------------------------------------------
    def add_dataset(self, row: dict[str, Any]) -> bool:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO datasets (id, name, blob, size, created, specs_json, "
                "n_samples, task) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["name"], row["blob"], row["size"], time.time(),
                 json.dumps(row["specs"]), row["n_samples"], row["task"]),
            )
            return cur.rowcount == 1

    def dataset(self, id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM datasets WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise NotFound(f"no dataset with id {id!r}")
        return _dataset_dict(row)

    def datasets(self, size: int = 0, after: Key | None = None) -> Page:
        """A page of datasets, oldest first (see :func:`page_size` for ``size``)."""
        return self._page("datasets", size, after, _dataset_dict)

    def delete_dataset(self, id: str) -> str:
        """Delete the row; return its blob's sha256 (the caller drops unreferenced blobs)."""
        with self.transaction() as db:
            row = db.execute("SELECT blob FROM datasets WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise NotFound(f"no dataset with id {id!r}")
            db.execute("DELETE FROM datasets WHERE id = ?", (id,))
            return str(row["blob"])

    def blob_in_use(self, digest: str) -> bool:
        """Whether a model, dataset or reference row refers to the blob."""
        with self._lock:
            row = self._db.execute(
                "SELECT EXISTS (SELECT 1 FROM datasets WHERE blob = ?1) "
                "OR EXISTS (SELECT 1 FROM models WHERE id = ?1) "
                "OR EXISTS (SELECT 1 FROM reference_sets WHERE blob = ?1)", (digest,)
            ).fetchone()
        return bool(row[0])

    def referenced_blobs(self) -> set[str]:
        """The sha256 of every blob a row refers to."""
        with self._lock:
            rows = self._db.execute(
                "SELECT blob FROM datasets UNION SELECT id FROM models "
                "UNION SELECT blob FROM reference_sets").fetchall()
        return {str(r[0]) for r in rows}

    # certification references ----------------------------------------------------------
    def add_reference(self, row: dict[str, Any]) -> str | None:
        """Insert or replace a reference row; return the blob of the row it replaced."""
        with self.transaction() as db:
            old = db.execute("SELECT blob FROM reference_sets WHERE id = ?",
                             (row["id"],)).fetchone()
            db.execute(
                "INSERT OR REPLACE INTO reference_sets (id, model_id, dataset_id, blob, "
                "created, specs_json, info_json) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], row["model_id"], row["dataset_id"], row["blob"], time.time(),
                 json.dumps(row["specs"]), json.dumps(row["info"])),
            )
        return None if old is None else str(old["blob"])

    def reference(self, id: str) -> dict[str, Any]:
        with self._lock:
            row = self._db.execute("SELECT * FROM reference_sets WHERE id = ?",
                                   (id,)).fetchone()
        if row is None:
            raise NotFound(f"no certification reference with id {id!r}")
        return _reference_dict(row)

    def references(self, size: int = 0, after: Key | None = None) -> Page:
        """A page of references, oldest first (see :func:`page_size` for ``size``)."""
        return self._page("reference_sets", size, after, _reference_dict)

    def delete_reference(self, id: str) -> str:
        """Delete the row; return its blob's sha256 (the caller drops unreferenced blobs)."""
        with self.transaction() as db:
            row = db.execute("SELECT blob FROM reference_sets WHERE id = ?", (id,)).fetchone()
            if row is None:
                raise NotFound(f"no certification reference with id {id!r}")
            db.execute("DELETE FROM reference_sets WHERE id = ?", (id,))
            return str(row["blob"])

    # jobs -------------------------------------------------------------------------------
    def add_job(self, id: str, kind: str, request: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO jobs (id, kind, state, created, request_json, progress_json) "
                "VALUES (?, ?, 'queued', ?, ?, ?)",
                (id, kind, time.time(), json.dumps(request), json.dumps({"stage": "queued"})),
            )

    def update_job(self, id: str, *, active_only: bool = False, **fields: Any) -> bool:
        """Set ``fields`` of job ``id``; with ``active_only`` only while it is queued or
        running (a final state, interrupted at shutdown say, is never overwritten).
        Return whether the row changed."""
        cols, vals = [], []
        for key, value in fields.items():
            if key in ("progress", "result", "request"):
                key, value = f"{key}_json", None if value is None else json.dumps(value)
            cols.append(f"{key} = ?")
            vals.append(value)
        guard = " AND state IN ('queued', 'running')" if active_only else ""
        with self.transaction() as db:
            cur = db.execute(f"UPDATE jobs SET {', '.join(cols)} WHERE id = ?{guard}",
                             (*vals, id))
            return cur.rowcount > 0

    def job(self, id: str, with_result: bool = True) -> JobRow:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (id,)).fetchone()
        if row is None:
            raise NotFound(f"no job with id {id!r}")
        return _job_row(row, with_result)

    def jobs(self, size: int = 0, after: Key | None = None) -> Page:
        """A page of jobs without results, oldest first (see :func:`page_size`)."""
        return self._page("jobs", size, after, lambda r: _job_row(r, False))

    def interrupt_active(self, message: str) -> int:
        """Mark every queued or running job interrupted; return how many."""
        with self.transaction() as db:
            cur = db.execute(
                "UPDATE jobs SET state = 'interrupted', message = ?, finished = ? "
                "WHERE state IN ('queued', 'running')",
                (message, time.time()),
            )
            return int(cur.rowcount)


def _model_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "size": row["size"],
            "created": row["created"], "info": json.loads(row["info_json"])}


def _dataset_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "name": row["name"], "blob": row["blob"], "size": row["size"],
            "created": row["created"], "specs": json.loads(row["specs_json"]),
            "n_samples": row["n_samples"], "task": row["task"]}


def _job_row(row: sqlite3.Row, with_result: bool) -> JobRow:
    result = row["result_json"] if with_result else None
    return JobRow(
        id=row["id"], kind=row["kind"], state=row["state"], created=row["created"],
        started=row["started"], finished=row["finished"],
        request=json.loads(row["request_json"]), progress=json.loads(row["progress_json"]),
        message=row["message"], result=None if result is None else json.loads(result),
    )


def _reference_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "model_id": row["model_id"], "dataset_id": row["dataset_id"],
            "blob": row["blob"], "created": row["created"],
            "specs": json.loads(row["specs_json"]), "info": json.loads(row["info_json"])}
