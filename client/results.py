"""The client's result types: plain, frozen values decoded from the server's messages.

Stored things (``Model``, ``Dataset``, ``Reference``, ``Job``) keep the field names of their
messages. Analysis results wrap a dict in the layout the engine's own ``to_dict`` gives
(canonical names, orders and labels as strings), so a result reads the same whether it came
from an embedded or a remote server. Every message is decoded here and nowhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..lazy import lazy_module
from ..protos import codec
from ..protos.stubs import analysis_pb2, common_pb2, datasets_pb2, models_pb2

if TYPE_CHECKING:
    import numpy as np
else:
    np = lazy_module("numpy")

PANDAS_EXTRA = "pip install 'layerscope[pandas]'"


def _to_pandas(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd  # noqa: PLC0415 - optional
    except ImportError:
        raise RuntimeError(f"to_pandas needs pandas: {PANDAS_EXTRA}") from None
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


def _jsonable(value: Any) -> Any:
    """A dataclass as a JSON-able dict (tuples become lists)."""
    return json.loads(json.dumps(asdict(value)))


# stored things ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorInfo:
    """An input or output of a model: name, NumPy dtype name, and dims as text (a number, a
    symbolic name such as ``"batch"``, or ``"?"``)."""

    name: str
    dtype: str
    shape: tuple[str, ...]

    @classmethod
    def from_proto(cls, msg: models_pb2.TensorInfo) -> TensorInfo:
        return cls(msg.name, msg.dtype, tuple(msg.shape))


@dataclass(frozen=True)
class LayerInfo:
    """A candidate layer of a model (docs/layers.md): the tensor, its producing node, and
    whether the ``auto`` rule picks it."""

    name: str
    node: str
    op_type: str
    dtype: str
    shape: tuple[str, ...]
    elements_per_sample: int
    position: int
    auto: bool
    layout: str
    parameters: int = 0

    @classmethod
    def from_proto(cls, msg: models_pb2.LayerInfo) -> LayerInfo:
        return cls(name=msg.name, node=msg.node, op_type=msg.op_type, dtype=msg.dtype,
                   shape=tuple(msg.shape), elements_per_sample=int(msg.elements_per_sample),
                   position=int(msg.position), auto=bool(msg.auto), layout=msg.layout,
                   parameters=int(msg.parameters))


@dataclass(frozen=True)
class Model:
    """A stored ONNX model. ``id`` is the sha256 of its bytes; ``layers`` is empty in
    listings (:meth:`Client.models`) and filled by :meth:`Client.get_model` and uploads."""

    id: str
    name: str
    size_bytes: int
    created: float
    ir_version: int
    opsets: Mapping[str, int]
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    layers: tuple[LayerInfo, ...]
    model_path: str = ""
    """For a model stored with its external-data files: its model file's path in the set."""
    files: tuple[tuple[str, int, str], ...] = ()
    """(path, size in bytes, sha256) of every file of such a set; empty otherwise."""
    parameters: int = 0

    @classmethod
    def from_proto(cls, msg: models_pb2.Model) -> Model:
        return cls(id=msg.id, name=msg.name, size_bytes=int(msg.size_bytes),
                   created=msg.created, ir_version=int(msg.ir_version),
                   opsets={k: int(v) for k, v in sorted(msg.opsets.items())},
                   inputs=tuple(TensorInfo.from_proto(t) for t in msg.inputs),
                   outputs=tuple(TensorInfo.from_proto(t) for t in msg.outputs),
                   layers=tuple(LayerInfo.from_proto(la) for la in msg.layers),
                   model_path=msg.model_path,
                   files=tuple((f.path, int(f.size_bytes), f.sha256) for f in msg.files),
                   parameters=int(msg.parameters))

    def __hash__(self) -> int:  # the id is the content: equal models have equal ids
        return hash(self.id)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of a dataset: name (a model input, or ``labels`` / ``targets``), dtype and
    shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @classmethod
    def from_proto(cls, msg: common_pb2.TensorSpec) -> TensorSpec:
        return cls(msg.name, msg.dtype, tuple(int(d) for d in msg.shape))


@dataclass(frozen=True)
class Dataset:
    """A stored dataset: its tensors (labels or targets included), sample count and task
    (``classification`` with labels, ``regression`` with targets)."""

    id: str
    name: str
    tensors: tuple[TensorSpec, ...]
    n_samples: int
    task: str
    size_bytes: int
    created: float

    @classmethod
    def from_proto(cls, msg: datasets_pb2.Dataset) -> Dataset:
        return cls(id=msg.id, name=msg.name,
                   tensors=tuple(TensorSpec.from_proto(t) for t in msg.tensors),
                   n_samples=int(msg.n_samples), task=msg.task,
                   size_bytes=int(msg.size_bytes), created=msg.created)

    def __hash__(self) -> int:
        return hash(self.id)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Reference:
    """A certification reference (:meth:`Client.build_reference`): the layer and reduction
    its features come from, and the dataset-level ``summary`` (classification: dw_max,
    db_min, confidence, max_uncertainty, guarantee; regression: smi_linear and alpha
    statistics; infinite values are None)."""

    id: str
    model_id: str
    dataset_id: str
    layer: str
    layer_rule: str
    reduction: str
    task: str
    n_samples: int
    features: int
    summary: Mapping[str, Any]

    @classmethod
    def from_proto(cls, msg: analysis_pb2.ReferenceInfo) -> Reference:
        return cls(**codec.reference_dict(msg))

    def __hash__(self) -> int:
        return hash(self.id)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class IndicesResult:
    """Indices of a set of feature vectors, as :meth:`Client.compute_indices` returns them."""

    data: dict[str, Any]

    @classmethod
    def from_proto(cls, msg: common_pb2.IndicesResult) -> IndicesResult:
        return cls(codec.indices_result_dict(msg))

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


@dataclass(frozen=True)
class Job:
    """A server-side job: id, kind (``layer_analysis``, ``ranking``, ``reference``,
    ``compression``), state, progress, and once it succeeded its result (a
    :class:`LayerwiseResult`, a :class:`RankingResult`, a :class:`Reference` or a
    :class:`CompressionResult`)."""

    id: str
    kind: str
    state: str
    progress: Mapping[str, Any]
    message: str
    created: float
    started: float
    finished: float
    result: Any = None

    @classmethod
    def from_proto(cls, msg: analysis_pb2.Job) -> Job:
        which, d = codec.job_result_dict(msg)
        result: Any = None
        if which == "layerwise":
            result = LayerwiseResult(d or {})
        elif which == "ranking":
            result = RankingResult.of(d or {})
        elif which == "reference":
            result = Reference(**(d or {}))
        elif which == "compression":
            result = CompressionResult(d or {})
        return cls(
            id=msg.id, kind=msg.kind, state=codec.state_name(msg.state),
            progress=codec.progress_dict(msg.progress), message=msg.message,
            created=msg.created, started=msg.started, finished=msg.finished, result=result,
        )

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def done(self) -> bool:
        return self.state in codec.FINAL_STATES


@dataclass(frozen=True)
class LayerwiseResult:
    """The layer table of a layer-wise analysis, in the layout ``layerscope analyze
    --json`` prints."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: analysis_pb2.LayerwiseResult) -> LayerwiseResult:
        return cls(codec.layerwise_dict(msg))

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


@dataclass(frozen=True)
class RankingResult:
    """Models ranked for a target dataset, best first (``layerscope rank --json``).

    Each model is named as the caller gave it (``model``: the path, the name, or the id
    given) with its stored id beside it (``model_id``); ``ranking`` lists the names best
    first and ``ranking_ids`` the ids.
    """

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: analysis_pb2.RankingResult) -> RankingResult:
        return cls.of(codec.ranking_dict(msg))

    @classmethod
    def of(cls, d: dict[str, Any]) -> RankingResult:
        """The result of a ranking dict whose ``model`` fields are ids (the server's)."""
        models = [{"model": m["model"], "model_id": m["model"],
                   **{k: v for k, v in m.items() if k != "model"}} for m in d["models"]]
        return cls({**d, "models": models, "ranking_ids": list(d["ranking"])})

    def named(self, names: Mapping[str, str]) -> RankingResult:
        """This ranking with each model named ``names[id]`` (a model not in ``names``
        keeps its id as its name)."""
        models = [{**m, "model": names.get(m["model_id"], m["model_id"])}
                  for m in self.data["models"]]
        ranking = [names.get(i, i) for i in self.data["ranking_ids"]]
        return RankingResult({**self.data, "models": models, "ranking": ranking})

    @property
    def ranking(self) -> list[str]:
        """The models' names, best first."""
        return list(self.data["ranking"])

    @property
    def ranking_ids(self) -> list[str]:
        """The models' ids, best first."""
        return list(self.data["ranking_ids"])

    @property
    def models(self) -> list[dict[str, Any]]:
        return list(self.data["models"])

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data))  # type: ignore[no-any-return]

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


@dataclass(frozen=True)
class CompressionResult:
    """A compression report (``layerscope compress --json``): ``candidates`` (one row per
    layer), ``cut``, ``head``, ``comparison`` (original vs compressed, measured side by
    side) and ``model_id``, the stored compressed model. :meth:`Client.compress` fills
    ``model`` with its ONNX bytes."""

    data: dict[str, Any] = field(default_factory=dict)
    model: bytes | None = None

    @property
    def model_id(self) -> str:
        return str(self.data["model_id"])

    @property
    def cut_layer(self) -> str:
        return str(self.data["cut"]["layer"])

    def to_dict(self) -> dict[str, Any]:
        return dict(self.data)


@dataclass(frozen=True)
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
