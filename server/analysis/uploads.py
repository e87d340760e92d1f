"""Uploads of models and datasets: received into a pinned blob, checked, then committed.

The blob and its catalog row come into the store together or not at all: any error on
the way (bad bytes, a model that does not load, non-finite values, a client that went
away) leaves nothing behind, and never touches bytes that another upload shares.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ...onnx_external import ExternalDataError, check_set_path, files_id
from ..cancellation import Cancellation
from ..graph import ModelError, describe, load_model
from ..metrics.validation import check_finite as finite
from ..store import InvalidUpload, NotFound, Store, check_dataset_specs, dataset_id
from ..store.store import split_tensors
from .memory import MemoryBudget, model_estimate

Chunks = Iterable[tuple[int, bytes]]
"""(offset, data) pieces of an upload, in order."""
FileChunks = Iterable[tuple[int, int, bytes]]
"""(file index, offset, data) pieces of the files of a model set, in order."""
ModelFiles = list[tuple[str, int, str]]
"""(relative path, size, sha256) of each file of a model set."""
_SHA = re.compile(r"[0-9a-f]{64}")


def store_model(store: Store, name: str, size: int, sha256: str, chunks: Chunks,
                budget: MemoryBudget | None = None, cancel: Cancellation | None = None,
                ) -> tuple[dict[str, Any], bool]:
    """Return the catalog row of the uploaded model and whether it was already stored.

    With a ``budget`` the model is admitted at its header (describing it takes several
    copies of it) and its inspection waits for room while ``cancel`` lets it.
    """
    try:
        return store.catalog.model(sha256), True
    except NotFound:
        pass
    est = budget.admit(model_estimate(size)) if budget is not None else None
    with store.upload(size, sha256) as writer:
        for offset, data in chunks:
            writer.write(offset, data)
        path = writer.commit()
        try:
            with budget.hold(est, cancel) if budget is not None and est is not None \
                    else contextlib.nullcontext():
                info = describe(load_model(path.read_bytes()))
        except ModelError as exc:
            raise ModelError(f"UploadModel: {exc}") from None
        return store.add_model(sha256, name or sha256[:12], size, info.to_dict()), False


def check_model_files(model_path: str, files: ModelFiles, files_sha256: str) -> None:
    """Raise InvalidUpload unless ``files`` is a set of distinct, normalised relative paths
    with sizes and hashes, ``model_path`` among them, whose id is ``files_sha256``."""
    if not files:
        raise InvalidUpload("header.files is empty; send the model file and its external "
                            "data files")
    seen: set[str] = set()
    for path, size, sha in files:
        try:
            check_set_path(path, "header.files path")
        except ExternalDataError as exc:
            raise InvalidUpload(str(exc)) from None
        if path in seen:
            raise InvalidUpload(f"header.files names {path!r} twice")
        seen.add(path)
        if size < 0:
            raise InvalidUpload(f"header.files {path!r}: size_bytes must be >= 0; got {size}")
        if not _SHA.fullmatch(sha):
            raise InvalidUpload(f"header.files {path!r}: sha256 must be 64 lowercase hex "
                                f"digits; got {sha[:80]!r}")
    for path in seen:  # "a" and "a/b" cannot both be files
        parts = path.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in seen:
                raise InvalidUpload(f"header.files names {'/'.join(parts[:i])!r} as a file and "
                                    f"as the folder of {path!r}")
    if model_path not in seen:
        raise InvalidUpload(f"header.model_path {model_path[:300]!r} is not among header.files "
                            f"({', '.join(sorted(seen)[:5])}{', ...' if len(seen) > 5 else ''})")
    want = files_id(model_path, [(p, sha) for p, _, sha in files])
    if files_sha256 != want:
        raise InvalidUpload(f"header.files_sha256 is {files_sha256[:80]!r} but the files' paths "
                            f"and hashes make {want} (docs/large-models.md)")


def store_model_files(store: Store, name: str, model_path: str, files: ModelFiles,
                      files_sha256: str, chunks: FileChunks,
                      budget: MemoryBudget | None = None, cancel: Cancellation | None = None,
                      ) -> tuple[dict[str, Any], bool]:
    """Return the catalog row of a model uploaded with its external-data files (one set,
    id ``files_sha256``) and whether it was already stored.

    The files are received into a temporary folder, each checked against its size and
    sha256; the model is read from there without its weights (only its graph is parsed),
    every external reference checked to name a file of the set within its bounds; only
    then is the folder moved into the store and the row committed.
    """
    check_model_files(model_path, files, files_sha256)
    try:
        return store.catalog.model(files_sha256), True
    except NotFound:
        pass
    model_size = next(size for path, size, _ in files if path == model_path)
    est = budget.admit(model_estimate(model_size)) if budget is not None else None
    with store.upload_files(files_sha256, files) as writer:
        for index, offset, data in chunks:
            writer.write(index, offset, data)
        root = writer.finish()
        try:
            with budget.hold(est, cancel) if budget is not None and est is not None \
                    else contextlib.nullcontext():
                info = describe(load_model(root / model_path, in_place=True))
        except ModelError as exc:  # name the set's own paths, not the server's folder
            text = str(exc).replace(str(root / model_path), model_path)
            raise ModelError(f"UploadModelFiles: {text.replace(str(root), 'the uploaded set')}"
                             ) from None
        row = info.to_dict() | {
            "model_path": model_path,
            "files": [{"path": p, "size": n, "sha256": h} for p, n, h in files],
        }
        writer.commit()
        total = sum(n for _, n, _ in files)
        return store.add_model(files_sha256, name or files_sha256[:12], total, row), False
DOWNLOAD_CHUNK = 1 << 20


def model_chunks(store: Store, model_id: str, chunk_bytes: int = 0
                 ) -> Iterator[tuple[int, bytes]]:
    """Yield the stored model's bytes as (offset, data) pieces of at most ``chunk_bytes``
    (0: 1 MiB, also the most); NotFound for an unknown id, before any piece."""
    if chunk_bytes < 0:
        raise ValueError(f"chunk_bytes must be >= 0 (0 = 1 MiB); got {chunk_bytes}")
    size = min(chunk_bytes or DOWNLOAD_CHUNK, DOWNLOAD_CHUNK)
    view = memoryview(store.model_bytes(model_id))
    for s in range(0, len(view), size):
        yield s, bytes(view[s:s + size])


def store_dataset(store: Store, name: str, specs: list[dict[str, Any]], size: int,
                  sha256: str, chunks: Chunks) -> tuple[dict[str, Any], bool]:
    """Return the catalog row of the uploaded dataset and whether it was already stored."""
    n, task, total = check_dataset_specs(specs)
    if total != size:
        raise InvalidUpload(
            f"header.size_bytes is {size} but the tensors' dtypes and shapes make "
            f"{total} bytes"
        )
    ds_id = dataset_id(specs, sha256)
    try:
        return store.catalog.dataset(ds_id), True
    except NotFound:
        pass
    with store.upload(size, sha256) as writer:
        for offset, data in chunks:
            writer.write(offset, data)
        check_finite(split_tensors(writer.commit(), specs))
        return store.add_dataset({
            "id": ds_id, "name": name or ds_id[:12], "blob": sha256, "size": total,
            "specs": specs, "n_samples": n, "task": task,
        }), False


def check_finite(arrays: dict[str, np.ndarray]) -> None:
    """Raise InvalidUpload at the first tensor with NaN or Inf (the engine's check, a chunk
    of samples at a time: a mapped upload is never read whole into memory)."""
    for name, arr in arrays.items():
        finite(arr, f"tensor {name!r}", InvalidUpload)
