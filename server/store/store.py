"""The store: one data directory with the catalog, the blobs and a lock.

Only one server uses a data directory at a time (an exclusive lock on ``server.lock``);
``server.json`` says which process holds it and where it listens, so that a local client
can reuse a running embedded server instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from ...local import announce, default_data_dir, read_announcement, withdraw
from .blobs import BlobError, BlobStore, BlobWriter
from .catalog import Catalog

DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
INTERRUPTED = "the server stopped while this job was queued or running; start it again"


class DataDirBusy(RuntimeError):
    """Another server holds the data directory."""


class InvalidUpload(ValueError):
    """An upload whose header or bytes are not acceptable."""


def dataset_id(specs: list[dict[str, Any]], data_sha256: str) -> str:
    """The id of a dataset: sha256 of its canonical spec JSON, a newline, the data sha256."""
    canon = json.dumps(
        [{"name": s["name"], "dtype": s["dtype"], "shape": [int(d) for d in s["shape"]]}
         for s in specs],
        separators=(",", ":"), sort_keys=True,
    )
    return hashlib.sha256(f"{canon}\n{data_sha256}".encode()).hexdigest()


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
        if s["name"] == "labels" and (len(shape) != 1 or np.dtype(s["dtype"]).kind not in "iub"):
            raise InvalidUpload(
                f"labels must be a 1-D integer tensor; got dtype {s['dtype']} shape {shape}"
            )
        if s["name"] == "targets" and (len(shape) > 2 or np.dtype(s["dtype"]).kind != "f"):
            raise InvalidUpload(
                f"targets must be a float tensor of shape (m,) or (m, t); got dtype "
                f"{s['dtype']} shape {shape}"
            )
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


class Store:
    """The data directory of one server."""

    def __init__(self, data_dir: Path, max_upload_bytes: int = 2 << 30) -> None:
        self.dir = Path(data_dir).expanduser()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / "server.lock", "a+")  # noqa: SIM115 - held for life
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
        self.blobs = BlobStore(self.dir / "blobs")
        self.catalog = Catalog(self.dir / "catalog.sqlite3")
        self.interrupted_at_start = self.catalog.interrupt_active(INTERRUPTED)

    def announce(self, address: str) -> None:
        announce(self.dir, address)

    def close(self) -> None:
        withdraw(self.dir)
        self.catalog.close()
        self._lock_file.close()

    # uploads ----------------------------------------------------------------------------
    def writer(self, size: int, sha256: str) -> BlobWriter:
        return self.blobs.writer(size, sha256, self.max_upload_bytes)

    def model_bytes(self, id: str) -> bytes:
        self.catalog.model(id)  # NotFound for an unknown id
        return self.blobs.path(id).read_bytes()

    def dataset_arrays(self, id: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        row = self.catalog.dataset(id)
        return row, split_tensors(self.blobs.path(row["blob"]), row["specs"])

    def drop_blob_if_unused(self, digest: str) -> None:
        if not self.catalog.blob_in_use(digest):
            self.blobs.delete(digest)


__all__ = [
    "BlobError", "DataDirBusy", "InvalidUpload", "Store", "check_dataset_specs", "dataset_id",
    "default_data_dir", "split_tensors",
]
