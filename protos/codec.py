"""The codec: Python values <-> ``layerscope.v1`` messages, both directions in one place.

Arrays <-> ``Tensor`` (raw little-endian bytes), job states <-> enum names, ``IndexOptions``
<-> its message, and the result dicts (canonical names as keys, orders and labels as
strings, as the engine's ``to_dict`` gives them) <-> result messages. The server encodes
with it and the client decodes with it, so a result reads the same from either side.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format

from ..lazy import lazy_module
from .options import IndexOptions
from .stubs import analysis_pb2, common_pb2

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

ORDERED_PER_CLASS = ("high_order_si_per_class", "soft_order_si_per_class",
                     "anti_si_per_class")
_INDEX_FIELDS = frozenset(common_pb2.IndexSet.DESCRIPTOR.fields_by_name)

JOB_STATES = {
    "queued": common_pb2.JOB_STATE_QUEUED, "running": common_pb2.JOB_STATE_RUNNING,
    "succeeded": common_pb2.JOB_STATE_SUCCEEDED, "failed": common_pb2.JOB_STATE_FAILED,
    "cancelled": common_pb2.JOB_STATE_CANCELLED,
    "interrupted": common_pb2.JOB_STATE_INTERRUPTED,
}
_STATE_NAMES: dict[int, str] = {int(v): k for k, v in JOB_STATES.items()}
FINAL_STATES = frozenset(("succeeded", "failed", "cancelled", "interrupted"))


def dataset_id(specs: list[dict[str, Any]], data_sha256: str) -> str:
    """The id of a dataset (the contract's Dataset.id): sha256 of its canonical spec JSON, a
    newline, the sha256 of the data. The client computes it too, to skip an upload the
    server already holds."""
    canon = json.dumps(
        [{"name": s["name"], "dtype": s["dtype"], "shape": [int(d) for d in s["shape"]]}
         for s in specs],
        separators=(",", ":"), sort_keys=True,
    )
    return hashlib.sha256(f"{canon}\n{data_sha256}".encode()).hexdigest()


def dataset_target_problem(name: str, dtype: str, shape: list[int]) -> str | None:
    """What keeps a tensor named ``labels`` or ``targets`` out of a stored dataset (the
    contract's UploadDatasetHeader: 1-D integer labels, float targets of shape (m,) or
    (m, t)), or None. ``dtype`` is a contract dtype name; other names pass."""
    if name == "labels" and (len(shape) != 1 or not dtype.startswith(("int", "uint", "bool"))):
        return f"labels must be a 1-D integer tensor; got dtype {dtype} shape {shape}"
    if name == "targets" and (len(shape) > 2 or not dtype.startswith("float")):
        return (f"targets must be a float tensor of shape (m,) or (m, t); got dtype {dtype} "
                f"shape {shape}")
    return None


def state_name(value: int) -> str:
    """The name of a JobState enum value ("unspecified" for one this codec does not know)."""
    return _STATE_NAMES.get(value, "unspecified")


# arrays ---------------------------------------------------------------------------------
def little_endian(a: Any) -> np.ndarray:
    """``a`` as a C-contiguous array in little-endian byte order (no copy when it is one)."""
    arr = np.ascontiguousarray(np.asarray(a))
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return arr


def tensor(a: Any) -> common_pb2.Tensor:
    arr = little_endian(a)
    return common_pb2.Tensor(dtype=str(arr.dtype), shape=list(arr.shape), data=arr.tobytes())


def array(t: common_pb2.Tensor, what: str = "tensor", copy: bool = False) -> np.ndarray:
    """The NumPy array of a Tensor message, checked against its dtype and shape.

    Without ``copy`` the array is a read-only view of the message's bytes.
    """
    try:
        dtype = np.dtype(t.dtype).newbyteorder("<")
    except TypeError:
        raise ValueError(f"{what}: unknown dtype {t.dtype!r}") from None
    shape = tuple(int(d) for d in t.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{what}: negative dimension in shape {list(shape)}")
    need = math.prod(shape) * dtype.itemsize
    data = t.data  # each read of a bytes field copies it out of the message: read it once
    if len(data) != need:
        raise ValueError(f"{what}: {len(data)} bytes for dtype {t.dtype} and shape "
                         f"{list(shape)}, which need {need}")
    out = np.frombuffer(data, dtype=dtype).reshape(shape)
    return out.copy() if copy else out


# options --------------------------------------------------------------------------------
_OPTIONAL_SCALARS = ("gamma", "margin_cap", "max_features", "patience", "memory_budget_mb")


def options_message(o: IndexOptions) -> analysis_pb2.IndexOptions:
    """The message of an ``IndexOptions``: only what the caller set travels, so the
    receiving side applies the same defaults."""
    msg = analysis_pb2.IndexOptions()
    given = o.explicit
    if o.indices is not None:
        msg.indices.extend(o.indices)
    if o.orders is not None:
        msg.orders.extend(o.orders)
    if o.candidates is not None:
        msg.candidates.extend(o.candidates)
    for name in _OPTIONAL_SCALARS:
        if name in given and getattr(o, name) is not None:
            setattr(msg, name, getattr(o, name))
    msg.normalize = o.normalize
    msg.per_sample = o.per_sample
    msg.criterion = o.criterion or ""
    msg.precision = o.precision if "precision" in given else ""
    msg.probe_model = o.probe_model or ""
    return msg


def options_from_message(msg: analysis_pb2.IndexOptions) -> IndexOptions:
    """The ``IndexOptions`` of a message, validated (``OptionError``, a ValueError)."""
    kw: dict[str, Any] = {}
    if msg.indices:
        kw["indices"] = tuple(msg.indices)
    if msg.orders:
        kw["orders"] = tuple(int(r) for r in msg.orders)
    if msg.candidates:
        kw["candidates"] = tuple(int(c) for c in msg.candidates)
    for name in _OPTIONAL_SCALARS:
        if msg.HasField(name):
            kw[name] = getattr(msg, name)
    if msg.normalize:
        kw["normalize"] = True
    if msg.per_sample:
        kw["per_sample"] = True
    if msg.criterion:
        kw["criterion"] = msg.criterion
    if msg.precision:
        kw["precision"] = msg.precision
    if msg.probe_model:
        kw["probe_model"] = msg.probe_model
    return IndexOptions.build(**kw)


# index sets -----------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    """Drop None and non-finite numbers (absent in proto3 rather than NaN)."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()
                if v is not None and not (isinstance(v, float) and not math.isfinite(v))}
    return value


def index_set(values: dict[str, Any], per_sample: dict[str, Any] | None = None
              ) -> common_pb2.IndexSet:
    """The IndexSet message of a dict with canonical names (``IndexSet.to_dict``)."""
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


def index_set_dict(msg: common_pb2.IndexSet) -> dict[str, Any]:
    """IndexSet message -> dict keyed by canonical names (``name_per_class`` ...)."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                  always_print_fields_with_no_presence=False)
    d.pop("per_sample", None)
    if "n_samples" in d:
        d["n_samples"] = int(d["n_samples"])
    for key in ORDERED_PER_CLASS:
        if key in d:
            d[key] = {r: v.get("by_label", {}) for r, v in d[key].items()}
    for name, t in msg.per_sample.items():
        d[f"{name}_per_sample"] = array(t, name, copy=True)
    return d


_SINGLE_FEATURE = ("single_feature_si", "single_feature_smi_linear", "single_feature_smi_exp")


def indices_result(d: dict[str, Any], train_per_sample: dict[str, Any] | None = None,
                   cross_per_sample: dict[str, Any] | None = None) -> common_pb2.IndicesResult:
    """The message of ``IndexResult.to_dict(per_class=True, per_sample=False)``."""
    msg = common_pb2.IndicesResult(
        task=d["task"], n_features=d["n_features"], train=index_set(d, train_per_sample),
        classes=d.get("classes") or [], warnings=d.get("warnings", []),
        options_json=json.dumps(d.get("options", {})),
    )
    if d.get("cross") is not None:
        msg.cross.CopyFrom(index_set(d["cross"], cross_per_sample))
    for key in _SINGLE_FEATURE:
        if key in d:
            getattr(msg, key).extend(float(v) for v in d[key])
    if d.get("feature_ranking") is not None:
        json_format.ParseDict(d["feature_ranking"], msg.feature_ranking)
    return msg


def indices_result_dict(msg: common_pb2.IndicesResult) -> dict[str, Any]:
    d: dict[str, Any] = {"task": msg.task, "n_features": int(msg.n_features)}
    d.update(index_set_dict(msg.train))
    for key in _SINGLE_FEATURE:
        values = list(getattr(msg, key))
        if values:
            d[key] = values
    if msg.HasField("feature_ranking"):
        d["feature_ranking"] = json_format.MessageToDict(
            msg.feature_ranking, preserving_proto_field_name=True)
    if msg.classes:
        d["classes"] = [int(c) for c in msg.classes]
    if msg.HasField("cross"):
        d["cross"] = index_set_dict(msg.cross)
    d["options"] = json.loads(msg.options_json or "{}")
    d["warnings"] = list(msg.warnings)
    return d


# layer-wise analysis --------------------------------------------------------------------
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


def layerwise_dict(msg: analysis_pb2.LayerwiseResult) -> dict[str, Any]:
    layers = []
    for row in msg.layers:
        la: dict[str, Any] = {
            "name": row.name, "kind": row.kind, "op_type": row.op_type,
            "shape": [int(s) for s in row.shape], "reduction": row.reduction,
            "dims": int(row.dims),
        }
        values = index_set_dict(row.values)
        values.pop("n_samples", None)
        la.update(values)
        if row.HasField("cross"):
            cross = index_set_dict(row.cross)
            cross.pop("n_samples", None)
            la["cross"] = cross
        if row.HasField("probe"):
            la["probe"] = json_format.MessageToDict(row.probe, preserving_proto_field_name=True)
        if row.notes:
            la["notes"] = list(row.notes)
        if row.error:
            la["error"] = row.error
        layers.append(la)
    plateau = None
    if msg.HasField("plateau"):
        plateau = json_format.MessageToDict(msg.plateau, preserving_proto_field_name=True,
                                            always_print_fields_with_no_presence=True)
    return {
        "model": json.loads(msg.model_json or "{}"), "task": msg.task, "layers": layers,
        "plateau": plateau, "options": json.loads(msg.options_json or "{}"),
        "warnings": list(msg.warnings),
    }


# ranking --------------------------------------------------------------------------------
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
            notes=m.get("notes", []), method=m.get("method", "seed"),
        )
        for k, v in (m.get("scores") or {}).items():
            row.scores[k] = float(v)
        for k, v in m["tie_breakers"].items():
            row.tie_breakers[k] = float(v)
        for k, v in (m.get("baselines") or {}).items():
            if v is not None and math.isfinite(v):
                row.baselines[k] = float(v)
    return msg


def ranking_dict(msg: analysis_pb2.RankingResult) -> dict[str, Any]:
    models = []
    for m in msg.models:
        d = json_format.MessageToDict(m, preserving_proto_field_name=True,
                                      always_print_fields_with_no_presence=True)
        d["features"] = int(d["features"])
        d["baselines"] = dict(m.baselines) or None
        models.append(d)
    return {"task": msg.task, "ranking": list(msg.ranking), "models": models,
            "options": json.loads(msg.options_json or "{}")}


# references -----------------------------------------------------------------------------
def reference(info: dict[str, Any]) -> analysis_pb2.ReferenceInfo:
    return analysis_pb2.ReferenceInfo(
        id=info["id"], model_id=info["model_id"], dataset_id=info["dataset_id"],
        layer=info["layer"], layer_rule=info["layer_rule"], reduction=info["reduction"],
        task=info["task"], n_samples=info["n_samples"], features=info["features"],
        summary_json=json.dumps(info["summary"]),
    )


def reference_dict(msg: analysis_pb2.ReferenceInfo) -> dict[str, Any]:
    return {"id": msg.id, "model_id": msg.model_id, "dataset_id": msg.dataset_id,
            "layer": msg.layer, "layer_rule": msg.layer_rule, "reduction": msg.reduction,
            "task": msg.task, "n_samples": int(msg.n_samples), "features": int(msg.features),
            "summary": json.loads(msg.summary_json or "{}")}


# compression ----------------------------------------------------------------------------
def compression(report: dict[str, Any]) -> analysis_pb2.CompressionResult:
    """The report of a compression job; the whole report travels as JSON beside the
    fields a caller reads first."""
    cmp = report.get("comparison", {})
    return analysis_pb2.CompressionResult(
        model_id=report["model_id"], size_bytes=int(report["size_bytes"]),
        task=report["task"], cut_layer=report["cut"]["layer"],
        original_score=float(cmp.get("original", {}).get("score", math.nan)),
        compressed_score=float(cmp.get("compressed", {}).get("score", math.nan)),
        report_json=json.dumps(report),
    )


def compression_dict(msg: analysis_pb2.CompressionResult) -> dict[str, Any]:
    report: dict[str, Any] = json.loads(msg.report_json or "{}")
    return report | {"model_id": msg.model_id, "size_bytes": int(msg.size_bytes),
                     "task": msg.task}


# jobs -----------------------------------------------------------------------------------
def progress(p: dict[str, Any] | None) -> common_pb2.Progress:
    p = p or {}
    return common_pb2.Progress(
        stage=str(p.get("stage", "")), layer=str(p.get("layer", "")),
        done=int(p.get("done", 0)), total=int(p.get("total", 0)),
        fraction=float(p.get("fraction", 0.0)),
        elapsed_seconds=float(p.get("elapsed_seconds", 0.0)),
        remaining_seconds=float(p.get("remaining_seconds", -1.0)),
    )


def progress_dict(msg: common_pb2.Progress) -> dict[str, Any]:
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    for key in ("done", "total"):  # int64 fields arrive as strings in JSON form
        if key in d:
            d[key] = int(d[key])
    return d


_RESULT_ENCODERS = {"layer_analysis": ("layerwise", layerwise), "ranking": ("ranking", ranking),
                    "reference": ("reference", reference),
                    "compression": ("compression", compression)}
_RESULT_DECODERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "layerwise": layerwise_dict, "ranking": ranking_dict, "reference": reference_dict,
    "compression": compression_dict}


def job(id: str, kind: str, state: str, message: str, created: float, started: float | None,
        finished: float | None, request: Any, progress_: dict[str, Any] | None,
        result: dict[str, Any] | None) -> analysis_pb2.Job:
    msg = analysis_pb2.Job(
        id=id, kind=kind, state=JOB_STATES[state], message=message, created=created,
        started=started or 0.0, finished=finished or 0.0, request_json=json.dumps(request),
    )
    msg.progress.CopyFrom(progress(progress_))
    if result is not None and kind in _RESULT_ENCODERS:
        field_name, encode = _RESULT_ENCODERS[kind]
        getattr(msg, field_name).CopyFrom(encode(result))
    return msg


def job_result_dict(msg: analysis_pb2.Job) -> tuple[str | None, dict[str, Any] | None]:
    """(which result field is set, its dict) of a Job message."""
    which = msg.WhichOneof("result")
    if which is None or which not in _RESULT_DECODERS:
        return None, None
    return which, _RESULT_DECODERS[which](getattr(msg, which))
