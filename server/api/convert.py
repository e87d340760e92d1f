"""Server rows -> messages: the catalog's models, datasets and jobs, and engine results.

The result layouts themselves are the codec's (:mod:`layerscope.protos.codec`); this module
only adapts the server's own types to it.
"""

from __future__ import annotations

from typing import Any

from ...protos import codec
from ...protos.stubs import analysis_pb2, common_pb2, datasets_pb2, models_pb2
from ..metrics.engine import IndexResult
from ..store.catalog import JobRow


def indices_result(result: IndexResult, per_sample: bool) -> common_pb2.IndicesResult:
    d = result.to_dict(per_class=True, per_sample=False)
    cross = result.cross.per_sample if (per_sample and result.cross is not None) else None
    return codec.indices_result(d, result.train.per_sample if per_sample else None, cross)


def job(row: JobRow) -> analysis_pb2.Job:
    return codec.job(row.id, row.kind, row.state, row.message, row.created, row.started,
                     row.finished, row.request, row.progress, row.result)


def _dims(shape: Any) -> list[str]:
    return ["?" if d is None else str(d) for d in (shape or [])]


def model(row: dict[str, Any], with_layers: bool = True) -> models_pb2.Model:
    info = row["info"]
    msg = models_pb2.Model(
        id=row["id"], name=row["name"], size_bytes=row["size"], created=row["created"],
        ir_version=int(info.get("ir_version", 0)),
    )
    for k, v in info.get("opsets", {}).items():
        msg.opsets[k] = int(v)
    for t in info.get("inputs", []):
        msg.inputs.add(name=t["name"], dtype=t["dtype"], shape=_dims(t["shape"]))
    for t in info.get("outputs", []):
        msg.outputs.add(name=t["name"], dtype=t["dtype"], shape=_dims(t["shape"]))
    if with_layers:
        for la in info.get("layers", []):
            msg.layers.add(
                name=la["name"], node=la["node"], op_type=la["op_type"], dtype=la["dtype"],
                shape=_dims(la["shape"]), elements_per_sample=la["elements_per_sample"] or 0,
                position=la["position"], auto=la["auto"], layout=la.get("layout", ""),
            )
    return msg


def dataset(row: dict[str, Any]) -> datasets_pb2.Dataset:
    msg = datasets_pb2.Dataset(
        id=row["id"], name=row["name"], n_samples=row["n_samples"], task=row["task"],
        size_bytes=row["size"], created=row["created"],
    )
    for s in row["specs"]:
        msg.tensors.add(name=s["name"], dtype=s["dtype"], shape=[int(d) for d in s["shape"]])
    return msg
