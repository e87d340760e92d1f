"""The bytes of an ONNX file to upload, with external data from the model's own folder
folded in (the server keeps models as single, self-contained files).

Folding needs onnx. The light install has none: there the file's bytes go as they are,
and the server refuses a model that references external data, naming the tensor.
"""

from __future__ import annotations

from pathlib import Path


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
