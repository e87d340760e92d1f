"""The store: one data directory with the catalog, the blobs and a lock.

Only one server uses a data directory at a time (an exclusive lock on ``server.lock``);
``server.json`` says which process holds it and where it listens, so that a local client
can reuse a running embedded server instead of starting a second one.

A blob lives while a catalog row refers to it or an upload in progress pins it. Both are
decided under the catalog's lock, and a blob is deleted only under it, so a failed upload
cannot delete the bytes that a concurrent one of the same content is about to commit.
Whatever a crash leaves (a blob without a row, a half-received upload) is swept when the
next server opens the directory. The directory is 0700 and every file in it 0600.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...local import announce, default_data_dir, read_announcement, withdraw
from ...protos.codec import dataset_id, dataset_target_problem
from ..field_limits import DTYPES
from .blobs import DIR_MODE, FILE_MODE, BlobError, BlobStore, BlobWriter, SetWriter
from .catalog import Catalog, NotFound

log = logging.getLogger("layerscope.store")
INTERRUPTED = "the server stopped while this job was queued or running; start it again"
PAUSE_ENV = "LAYERSCOPE_TEST_PAUSE_BEFORE_COMMIT"
"""Test-only: a file path; see :meth:`Store._commit_point`."""


class DataDirBusy(RuntimeError):
    """Another server holds the data directory."""


class InvalidUpload(ValueError):
    """An upload whose header or bytes are not acceptable."""


def check_dataset_specs(specs: list[dict[str, Any]]) -> tuple[int, str, int]:
    """Validate tensor specs; return (n_samples, task, total bytes)."""
    if not specs:
        raise InvalidUpload("header.tensors is empty; send the input tensors and labels or targets")
    names = [s["name"] for s in specs]
    if len(set(names)) != len(names):
        raise InvalidUpload(f"header.tensors has duplicate names: {names}")
    roles = [n for n in names if n in ("labels", "targets")]
    if len(roles) != 1:
        raise InvalidUpload(
            "header.tensors must hold exactly one of 'labels' (classification) or 'targets' "
            f"(regression); got {roles or 'neither'}"
        )
    if len(specs) < 2:
        raise InvalidUpload("header.tensors has no input tensor besides the labels/targets")
    total = 0
    n = None
    for s in specs:
        if s["dtype"] not in DTYPES:
            raise InvalidUpload(
                f"tensor {s['name']!r}: dtype {s['dtype']!r} is not one of {', '.join(DTYPES)}"
            )
        shape = [int(d) for d in s["shape"]]
        if not shape or any(d < 0 for d in shape):
            raise InvalidUpload(
                f"tensor {s['name']!r}: shape {shape} must have a sample axis and no "
                "negative dimension"
            )
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise InvalidUpload(
                f"tensor {s['name']!r} has {shape[0]} samples but {names[0]!r} has {n}"
            )
        problem = dataset_target_problem(s["name"], s["dtype"], shape)
        if problem:
            raise InvalidUpload(problem)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(s["dtype"]).itemsize
    if not n:
        raise InvalidUpload("the dataset has no samples")
    return int(n), ("classification" if "labels" in roles else "regression"), total


def split_tensors(path: Path, specs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Memory-map each tensor of a dataset blob (read-only, no copy)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    for s in specs:
        dtype = np.dtype(s["dtype"]).newbyteorder("<")
        shape = tuple(int(d) for d in s["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if count == 0:
            out[s["name"]] = np.zeros(shape, dtype=dtype)
        else:
            out[s["name"]] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        offset += count * dtype.itemsize
    return out


def make_private(root: Path) -> int:
    """Make ``root`` and every folder under it 0700 and every file 0600 (symbolic links
    are left alone); return how many modes changed."""
    changed = 0
    paths = [root]
    for folder, dirs, files in os.walk(root):  # does not follow links to folders
        paths += [Path(folder, name) for name in (*dirs, *files)]
    for path in paths:
        st = path.lstat()
        want = (DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
                if stat.S_ISREG(st.st_mode) else None)
        if want is not None and stat.S_IMODE(st.st_mode) != want:
            os.chmod(path, want)
            changed += 1
    return changed


class Store:
    """The data directory of one server."""

    def __init__(self, data_dir: Path, max_upload_bytes: int = 2 << 30,
                 max_model_files_bytes: int = 64 << 30) -> None:
        self.dir = Path(data_dir).expanduser()
        self.dir.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        try:
            os.chmod(self.dir, DIR_MODE)
        except PermissionError:
            raise PermissionError(
                f"cannot make the data directory {self.dir} private (mode 0700): it belongs "
                "to another user; use a --data-dir that this user owns") from None
        lock_fd = os.open(self.dir / "server.lock", os.O_RDWR | os.O_CREAT, FILE_MODE)
        self._lock_file = os.fdopen(lock_fd, "a+")
        try:
            import fcntl  # noqa: PLC0415 - POSIX only

            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:
            pass
        except OSError:
            info = read_announcement(self.dir)
            where = f" (pid {info.pid}, {info.address})" if info else ""
            self._lock_file.close()
            raise DataDirBusy(
                f"data directory {self.dir} is in use by another layerscope server{where}; "
                "connect to it with --server, or use another --data-dir"
            ) from None
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_model_files_bytes = int(max_model_files_bytes)
        tightened = make_private(self.dir)
        if tightened:
            log.warning("made %d file(s) and folder(s) of %s private (0600/0700)",
                        tightened, self.dir)
        self.blobs = BlobStore(self.dir / "blobs")
        self.catalog = Catalog(self.dir / "catalog.sqlite3")
        self._pins: Counter[str] = Counter()  # uploads in progress, per blob; catalog.lock
        self.interrupted_at_start = self.catalog.interrupt_active(INTERRUPTED)
        self.swept_at_start = self.sweep()
        if any(self.swept_at_start):
            log.info("removed %d unreferenced blob(s) and %d temporary upload(s) left by a "
                     "previous server", *self.swept_at_start)

    def announce(self, address: str, device: str = "", idle_timeout_s: float = 0.0) -> None:
        announce(self.dir, address, device, idle_timeout_s)

    def close(self) -> None:
        withdraw(self.dir)
        self.catalog.close()
        self._lock_file.close()

    # blob lifetime ----------------------------------------------------------------------
    @contextmanager
    def upload(self, size: int, sha256: str) -> Iterator[BlobWriter]:
        """A writer for an upload of ``size`` bytes with this sha256. The blob is pinned
        until the block ends; commit its catalog row (:meth:`add_model`,
        :meth:`add_dataset`) inside the block. However the block ends, nothing is left
        that no row refers to: a failed or abandoned upload leaves no bytes behind."""
        writer = self.blobs.writer(size, sha256, self.max_upload_bytes)
        try:
            with self._pinned(sha256):
                yield writer
        finally:
            writer.abort()

    @contextmanager
    def upload_files(self, set_id: str, files: list[tuple[str, int, str]]
                     ) -> Iterator[SetWriter]:
        """A writer for the files of a model set (:meth:`upload`'s rules: pinned until the
        block ends, nothing left behind that no row refers to)."""
        writer = self.blobs.set_writer(set_id, files, self.max_model_files_bytes)
        try:
            with self._pinned(set_id):
                yield writer
        finally:
            writer.abort()

    @contextmanager
    def _pinned(self, digest: str) -> Iterator[None]:
        with self.catalog.lock:
            self._pins[digest] += 1
        try:
            yield
        finally:
            with self.catalog.lock:
                self._pins[digest] -= 1
                if self._pins[digest] <= 0:
                    del self._pins[digest]
                self._drop_if_unused(digest)

    def _drop_if_unused(self, digest: str) -> None:
        """Delete the blob unless a row refers to it or an upload pins it."""
        with self.catalog.lock:
            if digest not in self._pins and not self.catalog.blob_in_use(digest):
                self.blobs.delete(digest)

    def _commit_point(self) -> None:
        """Where a blob is written and its catalog row not yet committed. Test-only: with
        ``$LAYERSCOPE_TEST_PAUSE_BEFORE_COMMIT`` naming a file, create that file here and
        wait while it exists, so that a test can kill the server (or race another upload)
        at exactly this point. Never set it in production."""
        marker = os.environ.get(PAUSE_ENV)
        if not marker:
            return
        Path(marker).write_text(str(os.getpid()))
        while os.path.exists(marker):
            time.sleep(0.01)

    def sweep(self) -> tuple[int, int]:
        """Delete blobs that no row refers to and no upload pins, and temporary uploads
        (none is in progress before the server starts); return how many of each."""
        with self.catalog.lock:
            keep = self.catalog.referenced_blobs() | set(self._pins)
            # Uploads in progress own their temporary files.
            return self.blobs.sweep(keep, temps=not self._pins)

    # models, datasets, references ---------------------------------------------------------
    def add_model(self, id: str, name: str, size: int, info: dict[str, Any]) -> dict[str, Any]:
        """Commit the row of a model whose bytes are in the blob ``id``; return it."""
        self._commit_point()
        self.catalog.add_model(id, name, size, info)
        return self.catalog.model(id)

    def add_dataset(self, row: dict[str, Any]) -> dict[str, Any]:
        """Commit the row of a dataset whose bytes are in the blob ``row["blob"]``."""
        self._commit_point()
        self.catalog.add_dataset(row)
        return self.catalog.dataset(row["id"])

    def add_reference(self, data: bytes, row: dict[str, Any]) -> None:
        """Store a certification reference's bytes and commit its row (``blob`` set here);
        the bytes of a reference it replaces go when nothing else refers to them."""
        digest = hashlib.sha256(data).hexdigest()
        with self._pinned(digest):
            self.blobs.put_bytes(data, digest)
            self._commit_point()
            with self.catalog.lock:
                old = self.catalog.add_reference({**row, "blob": digest})
                if old is not None and old != digest:
                    self._drop_if_unused(old)

    def delete_model(self, id: str) -> None:
        with self.catalog.lock:
            self.catalog.delete_model(id)
            self._drop_if_unused(id)

    def delete_dataset(self, id: str) -> None:
        with self.catalog.lock:
            self._drop_if_unused(self.catalog.delete_dataset(id))

    def delete_reference(self, id: str) -> None:
        with self.catalog.lock:
            self._drop_if_unused(self.catalog.delete_reference(id))

    # reading ----------------------------------------------------------------------------
    def model_bytes(self, id: str) -> bytes:
        self.catalog.model(id)  # NotFound for an unknown id
        try:
            return self.blobs.path(id).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no model with id {id!r} (deleted just now)") from None

    def model_path(self, id: str) -> Path:
        """The path of a stored model file: the blob, or the model file in its set's folder
        (whose external data then lies beside it)."""
        row = self.catalog.model(id)  # NotFound for an unknown id
        path = self.blobs.path(id)
        model_path = row["info"].get("model_path")
        if model_path:
            path = path / model_path
        if not path.is_file():
            raise NotFound(f"no model with id {id!r} (deleted just now)")
        return path

    def dataset_arrays(self, id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        row = self.catalog.dataset(id)
        try:
            return row, split_tensors(self.blobs.path(row["blob"]), row["specs"])
        except FileNotFoundError:
            raise NotFound(f"no dataset with id {id!r} (deleted just now)") from None


__all__ = [
    "BlobError", "DataDirBusy", "InvalidUpload", "Store", "check_dataset_specs", "dataset_id",
    "default_data_dir", "split_tensors",
]
