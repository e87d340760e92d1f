"""The bytes of an ONNX file to upload, with external data folded in.

The server keeps models as single files, so a model saved with external data is folded
into one here (with onnx, where it is installed). The light install has no onnx: a plain
model is sent as it is, and one with external data (found by reading the protobuf wire
format, which needs no schema) is refused with what to install.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# Protobuf field numbers of onnx.proto that lead to TensorProtos, per message.
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE = 1, 5, 15
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_MODEL_GRAPH = 7
_TENSOR_DATA_LOCATION, _EXTERNAL = 14, 1


def model_file_bytes(path: Path) -> bytes:
    """Return the bytes of the ONNX file at ``path`` with any external data folded in.

    External data locations must stay inside the model's folder (ValueError otherwise).
    Without onnx installed, a model with external data raises ImportError naming what to
    install.
    """
    data = path.read_bytes()
    try:
        import onnx  # noqa: PLC0415 - not part of the light install
        from onnx.external_data_helper import (  # noqa: PLC0415
            ExternalDataInfo,
            uses_external_data,
        )
    except ImportError:
        n = external_tensor_count(data)
        if n:
            raise ImportError(
                f"{path}: the model keeps {n} tensor(s) in external data files, and folding "
                "them into the one file the server takes needs onnx: pip install onnx (or "
                "save the model as one file)"
            ) from None
        return data

    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:  # noqa: BLE001 - not parseable here: let the server say why
        return data
    tensors = list(proto.graph.initializer) + [
        a.t for n in proto.graph.node for a in n.attribute
        if a.type == onnx.AttributeProto.TENSOR
    ]
    external = [t for t in tensors if uses_external_data(t)]
    if not external:
        return data
    root = path.parent.resolve()
    for t in external:
        loc = (root / ExternalDataInfo(t).location).resolve()
        if root not in loc.parents:
            raise ValueError(
                f"{path}: tensor {t.name!r} has external data at "
                f"{ExternalDataInfo(t).location!r}, outside the model's folder; refused"
            )
    onnx.load_external_data_for_model(proto, str(root))
    return proto.SerializeToString()


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def _fields(buf: memoryview) -> Iterator[tuple[int, int | memoryview]]:
    """The (field number, value) pairs of one protobuf message: an int for varints, a view
    for length-delimited fields; fixed-width fields are skipped."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            yield number, value
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise ValueError("truncated field")
            yield number, buf[i : i + n]
            i += n
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")


def _external_in_tensor(buf: memoryview) -> int:
    return int(any(n == _TENSOR_DATA_LOCATION and v == _EXTERNAL for n, v in _fields(buf)))


def _external_in_sparse(buf: memoryview) -> int:
    return sum(_external_in_tensor(v) for n, v in _fields(buf)
               if n in (_SPARSE_VALUES, _SPARSE_INDICES) and isinstance(v, memoryview))


def _external_in_graph(buf: memoryview) -> int:
    count = 0
    for n, v in _fields(buf):
        if not isinstance(v, memoryview):
            continue
        if n == _GRAPH_INITIALIZER:
            count += _external_in_tensor(v)
        elif n == _GRAPH_SPARSE:
            count += _external_in_sparse(v)
        elif n == _GRAPH_NODE:
            for an, av in _fields(v):
                if an == _NODE_ATTRIBUTE and isinstance(av, memoryview):
                    count += _external_in_attribute(av)
    return count


def _external_in_attribute(buf: memoryview) -> int:
    count = 0
    for n, v in _fields(buf):
        if not isinstance(v, memoryview):
            continue
        if n in (_ATTR_T, _ATTR_TENSORS):
            count += _external_in_tensor(v)
        elif n in (_ATTR_G, _ATTR_GRAPHS):
            count += _external_in_graph(v)
        elif n in (_ATTR_SPARSE, _ATTR_SPARSES):
            count += _external_in_sparse(v)
    return count


def external_tensor_count(data: bytes) -> int:
    """Return how many tensors of the serialized ONNX model ``data`` keep their values in
    external files (``data_location = EXTERNAL``), read from the wire format without onnx;
    0 for bytes that are not a model (the server says why)."""
    try:
        return sum(_external_in_graph(v) for n, v in _fields(memoryview(data))
                   if n == _MODEL_GRAPH and isinstance(v, memoryview))
    except ValueError:
        return 0
