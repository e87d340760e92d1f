"""The files of an ONNX model to upload.

A model without external data goes as the bytes of its file. A model whose weights lie in
external-data files goes either folded into one protobuf (small ones, as before: the
server keeps models as single files) or, beyond :data:`FOLD_MAX_BYTES` of external data
(and always beyond protobuf's 2 GB), as its files: the model file and each external file
it names, hashed in a stream and sent chunk by chunk (:func:`model_files`), never held in
memory whole.

Reading external data needs onnx. The light install has none: there the file's bytes go
as they are, and the server refuses a model that references external data, naming the
tensor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

FOLD_MAX_BYTES = 64 << 20
"""External data up to this size is folded into the model; beyond, the files are sent."""
READ = 8 << 20


def model_file_bytes(path: Path) -> bytes:
    """Return the bytes of the ONNX file at ``path`` with its external data folded in.

    External data may name only files inside the model's real folder (no absolute path, no
    '..', no symlink leaving it), resolved against that folder whatever the working
    directory; anything else raises ExternalDataError (a ValueError) naming the tensor and
    the location.
    """
    data = path.read_bytes()
    try:
        import onnx  # noqa: PLC0415 - not part of the light install
    except ImportError:
        return data

    from ..onnx_external import external_refs, load_external_data, model_folder  # noqa: PLC0415

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # noqa: BLE001 - not parseable here: let the server say why
        return data
    if not external_refs(proto):
        return data
    return load_external_data(proto, model_folder(path), str(path)).SerializeToString()


@dataclass(frozen=True)
class LocalFile:
    """One file of a model set: its path in the set, where it is here, size and sha256."""

    path: str
    local: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class ModelFiles:
    """A model file and the external-data files it names, as one set."""

    model_path: str
    files: tuple[LocalFile, ...]
    id: str

    @property
    def external_bytes(self) -> int:
        return sum(f.size for f in self.files if f.path != self.model_path)


def file_sha256(path: Path) -> tuple[str, int]:
    """Return (sha256, size) of a file, read in pieces."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while block := f.read(READ):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def model_files(path: Path) -> ModelFiles | None:
    """Return the set of files of the model at ``path``: the model file (at the root of
    the set, under its own name) and every external-data file it names, at its location;
    None when the model names no external data (or onnx is not installed).

    The references are checked first as for folding (ExternalDataError naming the tensor
    and the location: outside the model's folder, missing, or shorter than a tensor needs).
    Only the model file is parsed; the external files are read once, to hash them.
    """
    try:
        import onnx  # noqa: PLC0415 - not part of the light install
    except ImportError:
        return None

    from ..onnx_external import (  # noqa: PLC0415
        external_files,
        external_refs,
        files_id,
        model_folder,
    )

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception:  # noqa: BLE001 - not parseable here: let the server say why
        return None
    if not external_refs(proto):
        return None
    needed = external_files(proto, path.name, model_folder(path), str(path))
    del proto
    sha, size = file_sha256(path)
    files = [LocalFile(path.name, path, size, sha)]
    for rel, read in sorted(needed.items()):
        sha, size = file_sha256(Path(read.path))
        files.append(LocalFile(rel, Path(read.path), size, sha))
    return ModelFiles(path.name, tuple(files),
                      files_id(path.name, [(f.path, f.sha256) for f in files]))
