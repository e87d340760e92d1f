"""Loading ONNX models safely: corrupt bytes, text that is not UTF-8 or names beyond the
server's limits (:mod:`..field_limits`), and escaping external-data paths are refused.

External data is checked before a byte of it is read: every location must be a relative
path that stays inside the model's folder, name an existing file, and fit its offset and
length inside that file.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import onnx
from google.protobuf.message import DecodeError
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from ..field_limits import LimitError, check_model_text


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
    try:
        check_model_text(model)
    except LimitError as exc:
        raise ModelError(f"{origin}: {exc}") from None
    return model


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    tensors = [t for t in model.graph.initializer if uses_external_data(t)]
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and uses_external_data(attr.t):
                tensors.append(attr.t)
    return tensors


def check_external_data(model: onnx.ModelProto, base_dir: Path | None, origin: str) -> None:
    """Raise ModelError unless every external-data location is a safe, existing file."""
    tensors = _external_tensors(model)
    if not tensors:
        return
    if base_dir is None:
        raise ModelError(
            f"{origin}: the model keeps {len(tensors)} tensor(s) in external data files, "
            "which need the model's folder; load it from a path, not from bytes"
        )
    root = base_dir.resolve()
    for t in tensors:
        info = ExternalDataInfo(t)
        loc = info.location
        if (
            not loc
            or PurePosixPath(loc).is_absolute()
            or PureWindowsPath(loc).is_absolute()
            or ".." in PurePosixPath(loc.replace("\\", "/")).parts
        ):
            raise ModelError(
                f"{origin}: tensor {t.name!r} has external data at {loc!r}; locations must "
                "be relative paths inside the model's folder (no absolute path, no '..')"
            )
        path = (root / loc).resolve()
        if root not in path.parents and path != root:
            raise ModelError(
                f"{origin}: tensor {t.name!r} external data {loc!r} resolves outside the "
                "model's folder"
            )
        if not path.is_file():
            raise ModelError(f"{origin}: tensor {t.name!r} needs external data file {loc!r}, "
                             "which does not exist next to the model")
        size = path.stat().st_size
        offset = int(info.offset or 0)
        length = int(info.length) if info.length else size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(
                f"{origin}: tensor {t.name!r} external data {loc!r} asks for bytes "
                f"{offset}..{offset + length} of a {size}-byte file (truncated?)"
            )


def load_model(
    source: str | os.PathLike[str] | bytes, *, with_data: bool = True
) -> onnx.ModelProto:
    """Return the ONNX model at a path (or in bytes), external data checked and loaded.

    ``with_data=False`` leaves external tensors unloaded (enough to inspect the graph).
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
    check_external_data(model, path.parent, origin)
    if with_data and _external_tensors(model):
        onnx.load_external_data_for_model(model, str(path.parent))
    return model
