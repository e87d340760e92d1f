"""Loading ONNX models safely: corrupt bytes, text that is not UTF-8 or names beyond the
server's limits (:mod:`..field_limits`), and external data that is not the model's own are
refused, and onnxruntime is handed only bytes that name no file.

Models given as bytes (every single-file upload) may not refer to external data at all; a
model file may refer only to files inside its own folder, checked before a byte is read
(:mod:`layerscope.onnx_external` walks every tensor at every depth).

A model stored with its external-data files (a set, docs/large-models.md) is loaded
``in_place``: the graph only, its weights left in their files, and the folder they are
checked against recorded in the model (:data:`FOLDER_KEY`, a key no loaded model keeps
from its author), so that :func:`session_input` later hands onnxruntime that folder and
nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError

from ...lazy import lazy_module
from ...onnx_external import (
    ExternalDataError,
    external_refs,
    load_external_data,
    model_folder,
    refuse_external_data,
)
from ...onnx_external import check_external_data as _check_files
from ..field_limits import LimitError, check_model_text

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

# onnxruntime reads session options from this metadata key when ORT_LOAD_CONFIG_FROM_MODEL
# is set (profiling files included); the server chooses its own options.
ORT_CONFIG_KEY = "ort_config"
FOLDER_KEY = "layerscope.external_data_folder"
"""Metadata set by ``load_model(..., in_place=True)``: the folder the weights stay in."""
_SERVER_KEYS = (ORT_CONFIG_KEY, FOLDER_KEY)



class ModelError(ValueError):
    """A model that cannot be used, with a message saying why and what was expected."""


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    if not data:
        raise ModelError(f"{origin}: empty file, not an ONNX model")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelError(
            f"{origin}: not a valid ONNX model (corrupt or truncated bytes: {exc})"
        ) from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{origin}: parsed, but holds no graph; not an ONNX model")
    # Fields this onnx does not know could not be checked: they never reach the runtime.
    model.DiscardUnknownFields()
    kept = [p for p in model.metadata_props if p.key not in _SERVER_KEYS]
    if len(kept) != len(model.metadata_props):
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
    try:
        check_model_text(model)
    except LimitError as exc:
        raise ModelError(f"{origin}: {exc}") from None
    return model


def check_external_data(model: onnx.ModelProto, base_dir: Path | None, origin: str) -> None:
    """Raise ModelError unless every external-data reference of ``model`` (at any depth) may
    be read: none at all without a folder (bytes), inside ``base_dir`` otherwise."""
    try:
        if base_dir is None:
            refuse_external_data(model, origin)
        else:
            _check_files(model, base_dir, origin)
    except ExternalDataError as exc:
        raise ModelError(str(exc)) from None


def external_folder(model: onnx.ModelProto) -> Path | None:
    """The folder a model loaded ``in_place`` keeps its weights in; None for others."""
    found = [p.value for p in model.metadata_props if p.key == FOLDER_KEY]
    return Path(found[-1]) if found else None


def external_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the weights a model loaded ``in_place`` leaves in its files (0 for others):
    what onnxruntime reads from them (file sizes only are looked at)."""
    folder = external_folder(model)
    if folder is None:
        return 0
    try:
        return sum(r.length for r in _check_files(model, folder, "the model"))
    except ExternalDataError as exc:
        raise ModelError(str(exc)) from None


def session_input(model: onnx.ModelProto) -> tuple[bytes, Path | None]:
    """Return (bytes for onnxruntime, the folder its external data is read from).

    A self-contained model gives :func:`session_bytes` and no folder. A model loaded
    ``in_place`` gives its graph, every external reference checked again to lie inside its
    recorded folder, and that folder: the weights are read by onnxruntime from there and
    never pass through a protobuf (which could not hold more than 2 GB).
    """
    folder = external_folder(model)
    if folder is None:
        return session_bytes(model), None
    out = onnx.ModelProto()
    out.CopyFrom(model)
    kept = [p for p in out.metadata_props if p.key != FOLDER_KEY]
    del out.metadata_props[:]
    out.metadata_props.extend(kept)
    check_external_data(out, folder, "the model given to onnxruntime")
    if any(p.key == ORT_CONFIG_KEY for p in out.metadata_props):
        raise ModelError(f"the model given to onnxruntime carries {ORT_CONFIG_KEY!r} session "
                         "options in its metadata; load it with load_model")
    return out.SerializeToString(), folder


def session_bytes(model: onnx.ModelProto) -> bytes:
    """Return ``model`` serialized for onnxruntime, once checked to name no file.

    Every model the server runs passes here: a reference to external data left in it
    would be resolved by onnxruntime itself (against the working directory).
    """
    check_external_data(model, None, "the model given to onnxruntime")
    if any(p.key == ORT_CONFIG_KEY for p in model.metadata_props):
        raise ModelError(f"the model given to onnxruntime carries {ORT_CONFIG_KEY!r} session "
                         "options in its metadata; load it with load_model")
    return model.SerializeToString()


def load_model(
    source: str | os.PathLike[str] | bytes, *, with_data: bool = True, in_place: bool = False
) -> onnx.ModelProto:
    """Return the ONNX model at a path (or in bytes), external data checked and loaded.

    Bytes may not refer to external data. A path's external data must lie inside the
    model's real folder (its real path's parent). ``with_data=False`` checks it but leaves
    it unloaded (enough to inspect the graph); ``in_place`` leaves it unloaded too and
    records the folder, so that the model can run with its weights read from there
    (:func:`session_input`).
    """
    if isinstance(source, (bytes, bytearray)):
        model = _parse(bytes(source), "model bytes")
        check_external_data(model, None, "model bytes")
        return model
    path = Path(source)
    origin = str(path)
    if not path.is_file():
        raise ModelError(f"{origin}: no such file")
    model = _parse(path.read_bytes(), origin)
    folder = model_folder(path)
    check_external_data(model, folder, origin)
    if in_place:
        if external_refs(model):
            model.metadata_props.add(key=FOLDER_KEY, value=str(folder))
        return model
    if with_data and external_refs(model):
        try:
            load_external_data(model, folder, origin)
        except ExternalDataError as exc:
            raise ModelError(str(exc)) from None
    return model
