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

from ..protos import codec
from ..protos.stubs import analysis_pb2, common_pb2


def _to_pandas(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd  # noqa: PLC0415 - optional
    except ImportError:
        raise RuntimeError(
            "to_pandas needs pandas: pip install 'layerscope[pandas]'") from None
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
        which, d = codec.job_result_dict(msg)
        result: Any = d
        if which == "layerwise":
            result = LayerwiseResult(d or {})
        elif which == "ranking":
            result = RankingResult(d or {})
        return cls(
            id=msg.id, kind=msg.kind, state=codec.state_name(msg.state),
            progress=codec.progress_dict(msg.progress), message=msg.message,
            created=msg.created, started=msg.started, finished=msg.finished, result=result,
        )

    @property
    def done(self) -> bool:
        return self.state in codec.FINAL_STATES


@dataclass
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


reference_dict = codec.reference_dict


@dataclass
class RankingResult:
    """Models ranked for a target dataset, best first (``layerscope rank --json``)."""

    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, msg: analysis_pb2.RankingResult) -> RankingResult:
        return cls(codec.ranking_dict(msg))

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
