"""Plain result objects built from the server's messages.

Each wraps a dict in the same layout the engine's own ``to_dict`` gives (canonical names,
orders and labels as strings), so a result reads the same whether it came from an embedded
or a remote server.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf import json_format

from .stubs import analysis_pb2, common_pb2

_ORDERED_PER_CLASS = ("high_order_si_per_class", "soft_order_si_per_class",
                      "anti_si_per_class")
STATES = {
    common_pb2.JOB_STATE_QUEUED: "queued", common_pb2.JOB_STATE_RUNNING: "running",
    common_pb2.JOB_STATE_SUCCEEDED: "succeeded", common_pb2.JOB_STATE_FAILED: "failed",
    common_pb2.JOB_STATE_CANCELLED: "cancelled", common_pb2.JOB_STATE_INTERRUPTED: "interrupted",
}


def tensor_to_array(t: common_pb2.Tensor) -> np.ndarray:
    """The NumPy array of a Tensor message (a copy, little-endian)."""
    dtype = np.dtype(t.dtype).newbyteorder("<")
    return np.frombuffer(t.data, dtype=dtype).reshape(tuple(t.shape)).copy()


def index_set_dict(msg: common_pb2.IndexSet) -> dict[str, Any]:
    """IndexSet message -> dict keyed by canonical names (``name_per_class`` ...)."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True,
                                  always_print_fields_with_no_presence=False)
    d.pop("per_sample", None)
    if "n_samples" in d:
        d["n_samples"] = int(d["n_samples"])
    for key in _ORDERED_PER_CLASS:
        if key in d:
            d[key] = {r: v.get("by_label", {}) for r, v in d[key].items()}
    for name, t in msg.per_sample.items():
        d[f"{name}_per_sample"] = tensor_to_array(t)
    return d


def _to_pandas(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd  # noqa: PLC0415 - optional
    except ImportError:
        raise RuntimeError("to_pandas needs pandas: pip install pandas") from None
    return pd.DataFrame(rows)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if k.endswith(("_per_class", "_per_sample")) or k in ("notes", "warnings"):
            continue
        if isinstance(v, dict):
            for kk, vv in v.items():
                if not isinstance(vv, dict):
                    out[f"{prefix}{k}[{kk}]"] = vv
        elif isinstance(v, (int, float, str)) or v is None:
            out[f"{prefix}{k}"] = v
    return out


@dataclass
class IndicesResult:
    """Indices of a set of feature vectors, as :meth:`Client.compute_indices` returns them."""

    data: dict[str, Any]

    @classmethod
    def from_proto(cls, msg: common_pb2.IndicesResult) -> IndicesResult:
        d: dict[str, Any] = {"task": msg.task, "n_features": int(msg.n_features)}
        d.update(index_set_dict(msg.train))
        for key in ("single_feature_si", "single_feature_smi_linear", "single_feature_smi_exp"):
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
        return cls(d)

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    @property
    def cross(self) -> dict[str, Any] | None:
        return self.data.get("cross")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; per-sample arrays (when asked for) become lists."""
        return json.loads(json.dumps(self.data, default=lambda a: np.asarray(a).tolist()))

    def to_pandas(self) -> Any:
        """One row per set (train, test) with every dataset-level value (pandas needed)."""
        rows = [{"set": "train", **_flat(self.data)}]
        if self.cross:
            rows.append({"set": "test", **_flat(self.cross)})
        return _to_pandas(rows)


@dataclass
class Job:
    """A server-side job: id, state, progress, and the result once it succeeded."""

    id: str
    kind: str
    state: str
    progress: dict[str, Any]
    message: str
    created: float
    started: float
    finished: float
    result: Any = None

    @classmethod
    def from_proto(cls, msg: analysis_pb2.Job) -> Job:
        result: Any = None
        which = msg.WhichOneof("result")
        if which == "layerwise":
            result = LayerwiseResult.from_proto(msg.layerwise)
        elif which == "ranking":
            result = RankingResult.from_proto(msg.ranking)
        elif which == "reference":
            result = reference_dict(msg.reference)
        progress = json_format.MessageToDict(msg.progress, preserving_proto_field_name=True)
        for key in ("done", "total"):  # int64 fields arrive as strings in JSON form
            if key in progress:
                progress[key] = int(progress[key])
        return cls(
            id=msg.id, kind=msg.kind, state=STATES.get(msg.state, "unspecified"),
            progress=progress,
            message=msg.message, created=msg.created, started=msg.started,
            finished=msg.finished, result=result,
        )

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled", "interrupted")


@dataclass
class LayerwiseResult:
    """The layer table of a layer-wise analysis, in the layout ``layerscope analyze
    --json`` prints."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: analysis_pb2.LayerwiseResult) -> LayerwiseResult:
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
                la["probe"] = json_format.MessageToDict(row.probe,
                                                        preserving_proto_field_name=True)
            if row.notes:
                la["notes"] = list(row.notes)
            if row.error:
                la["error"] = row.error
            layers.append(la)
        plateau = None
        if msg.HasField("plateau"):
            plateau = json_format.MessageToDict(msg.plateau, preserving_proto_field_name=True,
                                                always_print_fields_with_no_presence=True)
        return cls({
            "model": json.loads(msg.model_json or "{}"), "task": msg.task, "layers": layers,
            "plateau": plateau, "options": json.loads(msg.options_json or "{}"),
            "warnings": list(msg.warnings),
        })

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.data["layers"])

    @property
    def plateau(self) -> dict[str, Any] | None:
        return self.data.get("plateau")

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))

    def to_pandas(self) -> Any:
        """One row per layer with its dataset-level values (``test_`` for cross)."""
        rows = []
        for la in self.data["layers"]:
            row = _flat({k: v for k, v in la.items() if k not in ("cross", "probe")})
            row.update(_flat(la.get("cross") or {}, "test_"))
            row.update(_flat(la.get("probe") or {}, "probe_"))
            rows.append(row)
        return _to_pandas(rows)

    def plot(self, path: str | os.PathLike[str]) -> Any:
        """Write the indices-per-layer plot (matplotlib needed); return the path."""
        from .plot import plot_layers  # noqa: PLC0415

        return plot_layers(self.data, path)


def reference_dict(msg: analysis_pb2.ReferenceInfo) -> dict[str, Any]:
    """A certification reference's description as a plain dict."""
    return {"id": msg.id, "model_id": msg.model_id, "dataset_id": msg.dataset_id,
            "layer": msg.layer, "layer_rule": msg.layer_rule, "reduction": msg.reduction,
            "task": msg.task, "n_samples": int(msg.n_samples), "features": int(msg.features),
            "summary": json.loads(msg.summary_json or "{}")}


@dataclass
class RankingResult:
    """Models ranked for a target dataset, best first (``layerscope rank --json``)."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: analysis_pb2.RankingResult) -> RankingResult:
        models = []
        for m in msg.models:
            d = json_format.MessageToDict(m, preserving_proto_field_name=True,
                                          always_print_fields_with_no_presence=True)
            d["features"] = int(d["features"])
            d["baselines"] = dict(m.baselines) or None
            models.append(d)
        return cls({"task": msg.task, "ranking": list(msg.ranking), "models": models,
                    "options": json.loads(msg.options_json or "{}")})

    @property
    def ranking(self) -> list[str]:
        return list(self.data["ranking"])

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.data["models"])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))

    def to_pandas(self) -> Any:
        rows = []
        for m in self.data["models"]:
            row = {k: v for k, v in m.items()
                   if not isinstance(v, (list, dict)) or k in ("tie_breakers", "baselines")}
            row.update({f"tie:{k}": v for k, v in (m.get("tie_breakers") or {}).items()})
            row.update({f"baseline:{k}": v for k, v in (m.get("baselines") or {}).items()})
            row.pop("tie_breakers", None)
            row.pop("baselines", None)
            rows.append(row)
        return _to_pandas(sorted(rows, key=lambda r: r["rank"]))


@dataclass
class CertifyResult:
    """Per-query certification results (one dict per query) and warnings."""

    results: list[dict[str, Any]]
    warnings: list[str]

    @classmethod
    def from_proto(cls, msg: analysis_pb2.CertifyResponse, task: str | None = None
                   ) -> CertifyResult:
        rows = []
        for r in msg.results:
            if r.HasField("error_bound"):
                row: dict[str, Any] = {"error_bound": r.error_bound, "mode": r.mode,
                                       "neighbourhood_size": int(r.neighbourhood_size)}
            else:
                row = {"nn_label": int(r.nn_label), "guarantee": int(r.guarantee),
                       "dn": r.dn if r.HasField("dn") else None,
                       "certified_radius": (r.certified_radius if r.HasField("certified_radius")
                                            else None)}
                if r.HasField("prediction"):
                    row["prediction"] = int(r.prediction)
            row.update(dp=r.dp, confidence=r.confidence, nn_index=int(r.nn_index))
            rows.append(row)
        return cls(rows, list(msg.warnings))

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.results[i]

    def column(self, name: str) -> np.ndarray:
        """One field for every query, as an array (None becomes inf)."""
        return np.asarray([np.inf if r.get(name) is None else r[name] for r in self.results])

    def to_dict(self) -> dict[str, Any]:
        return {"results": list(self.results), "warnings": list(self.warnings)}
