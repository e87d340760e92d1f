"""Translation between the engine's result dicts and the protobuf messages.

The result dicts (``IndexResult.to_dict``, ``LayerwiseResult.to_dict``) already use the
canonical names as keys, orders and labels as strings: the messages use the same names as
fields, so the translation is :mod:`google.protobuf.json_format` plus the one level of
nesting that protobuf maps need for ordered per-class values.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from google.protobuf import json_format

from ...client.stubs import analysis_pb2, common_pb2, datasets_pb2, models_pb2
from ..metrics.engine import IndexResult
from ..store.catalog import JobRow

ORDERED_PER_CLASS = ("high_order_si_per_class", "soft_order_si_per_class",
                     "anti_si_per_class")
_INDEX_FIELDS = set(common_pb2.IndexSet.DESCRIPTOR.fields_by_name)


def tensor(arr: np.ndarray) -> common_pb2.Tensor:
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    return common_pb2.Tensor(dtype=str(a.dtype), shape=list(a.shape), data=a.tobytes())


def array(t: common_pb2.Tensor, what: str = "tensor") -> np.ndarray:
    """The NumPy array of a Tensor message, checked against its dtype and shape."""
    try:
        dtype = np.dtype(t.dtype).newbyteorder("<")
    except TypeError:
        raise ValueError(f"{what}: unknown dtype {t.dtype!r}") from None
    shape = tuple(int(d) for d in t.shape)
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(t.data) != need:
        raise ValueError(f"{what}: {len(t.data)} bytes for dtype {t.dtype} and shape "
                         f"{list(shape)}, which need {need}")
    return np.frombuffer(t.data, dtype=dtype).reshape(shape)


def _clean(value: Any) -> Any:
    """Drop None and non-finite numbers (absent in proto3 rather than NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    return value


def index_set(values: dict[str, Any], per_sample: dict[str, Any] | None = None
              ) -> common_pb2.IndexSet:
    """Return the IndexSet message of a dict with canonical names (``IndexSet.to_dict``)."""
    d = {k: v for k, v in _clean(values).items() if k in _INDEX_FIELDS and k != "per_sample"}
    for key in ORDERED_PER_CLASS:
        if key in d:
            d[key] = {r: {"by_label": labels} for r, labels in d[key].items()}
    msg = common_pb2.IndexSet()
    json_format.ParseDict(d, msg)
    for name, value in (per_sample or {}).items():
        if isinstance(value, dict):
            for r, arr in value.items():
                msg.per_sample[f"{name}[{r}]"].CopyFrom(tensor(np.asarray(arr)))
        else:
            msg.per_sample[name].CopyFrom(tensor(np.asarray(value)))
    return msg


def indices_result(result: IndexResult, per_sample: bool) -> common_pb2.IndicesResult:
    d = result.to_dict(per_class=True, per_sample=False)
    msg = common_pb2.IndicesResult(
        task=result.task, n_features=result.n_features,
        train=index_set(d, result.train.per_sample if per_sample else None),
        classes=result.classes or [], warnings=result.warnings,
        options_json=json.dumps(d["options"]),
    )
    if result.cross is not None:
        msg.cross.CopyFrom(index_set(d["cross"], result.cross.per_sample if per_sample else None))
    for key in ("single_feature_si", "single_feature_smi_linear", "single_feature_smi_exp"):
        if key in d:
            getattr(msg, key).extend(float(v) for v in d[key])
    if result.feature_ranking is not None:
        json_format.ParseDict(result.feature_ranking.to_dict(), msg.feature_ranking)
    return msg


def layerwise(result: dict[str, Any]) -> analysis_pb2.LayerwiseResult:
    msg = analysis_pb2.LayerwiseResult(
        task=result["task"], warnings=result.get("warnings", []),
        options_json=json.dumps(result.get("options", {})),
        model_json=json.dumps(result.get("model", {})),
    )
    for la in result["layers"]:
        row = msg.layers.add(
            name=la["name"], kind=la["kind"], op_type=la["op_type"],
            shape=[int(s) for s in la["shape"]], reduction=la["reduction"],
            dims=int(la["dims"]), notes=la.get("notes", []), error=la.get("error") or "",
        )
        row.values.CopyFrom(index_set(la))
        if la.get("cross") is not None:
            row.cross.CopyFrom(index_set(la["cross"]))
        if la.get("probe") is not None:
            json_format.ParseDict(_clean(la["probe"]), row.probe)
    if result.get("plateau"):
        json_format.ParseDict(_clean(result["plateau"]), msg.plateau)
    return msg


_STATES = {
    "queued": common_pb2.JOB_STATE_QUEUED, "running": common_pb2.JOB_STATE_RUNNING,
    "succeeded": common_pb2.JOB_STATE_SUCCEEDED, "failed": common_pb2.JOB_STATE_FAILED,
    "cancelled": common_pb2.JOB_STATE_CANCELLED,
    "interrupted": common_pb2.JOB_STATE_INTERRUPTED,
}


def job(row: JobRow) -> analysis_pb2.Job:
    msg = analysis_pb2.Job(
        id=row.id, kind=row.kind, state=_STATES[row.state], message=row.message,
        created=row.created, started=row.started or 0.0, finished=row.finished or 0.0,
        request_json=json.dumps(row.request),
    )
    p = row.progress or {}
    msg.progress.CopyFrom(common_pb2.Progress(
        stage=str(p.get("stage", "")), layer=str(p.get("layer", "")),
        done=int(p.get("done", 0)), total=int(p.get("total", 0)),
        fraction=float(p.get("fraction", 0.0)),
        elapsed_seconds=float(p.get("elapsed_seconds", 0.0)),
        remaining_seconds=float(p.get("remaining_seconds", -1.0)),
    ))
    if row.result is not None and row.kind == "layer_analysis":
        msg.layerwise.CopyFrom(layerwise(row.result))
    elif row.result is not None and row.kind == "ranking":
        msg.ranking.CopyFrom(ranking(row.result))
    elif row.result is not None and row.kind == "reference":
        msg.reference.CopyFrom(reference(row.result))
    return msg


def ranking(result: dict[str, Any]) -> analysis_pb2.RankingResult:
    msg = analysis_pb2.RankingResult(task=result["task"], ranking=result["ranking"],
                                     options_json=json.dumps(result.get("options", {})))
    for m in result["models"]:
        row = msg.models.add(
            model=m["model"], layer=m["layer"], layer_rule=m["layer_rule"],
            reduction=m["reduction"], features=m["features"], index=m["index"],
            all_features=m["all_features"], selected=m["selected"],
            subset_size=m["subset_size"], selection_order=m["selection_order"],
            selection_scores=m["selection_scores"], seconds=m["seconds"], rank=m["rank"],
            notes=m.get("notes", []),
        )
        for k, v in m["tie_breakers"].items():
            row.tie_breakers[k] = float(v)
        for k, v in (m.get("baselines") or {}).items():
            if v is not None and math.isfinite(v):
                row.baselines[k] = float(v)
    return msg


def reference(info: dict[str, Any]) -> analysis_pb2.ReferenceInfo:
    return analysis_pb2.ReferenceInfo(
        id=info["id"], model_id=info["model_id"], dataset_id=info["dataset_id"],
        layer=info["layer"], layer_rule=info["layer_rule"], reduction=info["reduction"],
        task=info["task"], n_samples=info["n_samples"], features=info["features"],
        summary_json=json.dumps(info["summary"]),
    )


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
