"""Messages <-> the server's types: requests decoded into the analysis' typed requests,
catalog rows (models, datasets, jobs), engine results and certifications encoded.

The result layouts and the options are the codec's (:mod:`layerscope.protos.codec`); this
module only adapts the server's own types to it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from typing import Any

import numpy as np

from ...protos import codec
from ...protos.stubs import analysis_pb2, common_pb2, datasets_pb2, models_pb2
from ..analysis.references import Certified
from ..analysis.requests import (
    DEFAULT_TOLERANCE,
    RANKING_MAX_FEATURES,
    RANKING_ORDER,
    CertifyRequest,
    CompressionRequest,
    LayerAnalysisRequest,
    RankingRequest,
    ReferenceRequest,
)
from ..metrics.baselines import LEGACY, resolve_baselines
from ..metrics.engine import IndexResult
from ..store.catalog import JobRow, Key


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
        ir_version=int(info.get("ir_version", 0)), parameters=int(info.get("parameters", 0)),
    )
    for k, v in info.get("opsets", {}).items():
        msg.opsets[k] = int(v)
    for t in info.get("inputs", []):
        msg.inputs.add(name=t["name"], dtype=t["dtype"], shape=_dims(t["shape"]))
    for t in info.get("outputs", []):
        msg.outputs.add(name=t["name"], dtype=t["dtype"], shape=_dims(t["shape"]))
    msg.model_path = info.get("model_path", "")
    for f in info.get("files", []):
        msg.files.add(path=f["path"], size_bytes=f["size"], sha256=f["sha256"])
    if with_layers:
        for la in info.get("layers", []):
            msg.layers.add(
                name=la["name"], node=la["node"], op_type=la["op_type"], dtype=la["dtype"],
                shape=_dims(la["shape"]), elements_per_sample=la["elements_per_sample"] or 0,
                position=la["position"], auto=la["auto"], layout=la.get("layout", ""),
                parameters=int(la.get("parameters", 0)),
            )
    return msg


def model_files(files: Any) -> list[tuple[str, int, str]]:
    """(path, size, sha256) of each ModelFile of an UploadModelFiles header."""
    return [(f.path, int(f.size_bytes), f.sha256) for f in files]


def dataset(row: dict[str, Any]) -> datasets_pb2.Dataset:
    msg = datasets_pb2.Dataset(
        id=row["id"], name=row["name"], n_samples=row["n_samples"], task=row["task"],
        size_bytes=row["size"], created=row["created"],
    )
    for s in row["specs"]:
        msg.tensors.add(name=s["name"], dtype=s["dtype"], shape=[int(d) for d in s["shape"]])
    return msg


# page tokens ----------------------------------------------------------------------------
def page_token(key: Key | None, listing: str) -> str:
    """The opaque token of the page after ``key`` of ``listing``; empty when none follows."""
    if key is None:
        return ""
    return base64.urlsafe_b64encode(json.dumps([listing, *key]).encode()).decode()


def page_key(token: str, listing: str) -> Key | None:
    """The key after which the page of ``token`` starts (None for the first page);
    ValueError naming ``page_token`` for a token that no response of ``listing`` gave."""
    if not token:
        return None
    try:
        name, created, id = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (UnicodeError, binascii.Error, ValueError, TypeError):
        name = created = id = None
    if (name != listing or type(created) is not float or not math.isfinite(created)
            or not isinstance(id, str)):
        raise ValueError(f"page_token {token[:40]!r} is not a token of a List{listing.title()}"
                         " response: send the next_page_token of the previous page, or none")
    return created, id


# requests -> typed requests -------------------------------------------------------------
def specs(tensors: Any) -> list[dict[str, Any]]:
    """TensorSpec messages -> ``{"name", "dtype", "shape"}`` dicts."""
    return [{"name": t.name, "dtype": t.dtype, "shape": [int(d) for d in t.shape]}
            for t in tensors]


def layer_analysis_request(msg: analysis_pb2.StartLayerAnalysisRequest) -> LayerAnalysisRequest:
    return LayerAnalysisRequest(
        model_id=msg.model_id, dataset_id=msg.dataset_id,
        test_dataset_id=msg.test_dataset_id or None, layers=tuple(msg.layers) or ("auto",),
        reduce=msg.reduce or "auto", probe=msg.probe, batch_size=msg.batch_size or None,
        tolerance=msg.tolerance if msg.HasField("tolerance") else DEFAULT_TOLERANCE,
        options=codec.options_from_message(msg.options))


def ranking_request(msg: analysis_pb2.StartRankingRequest) -> RankingRequest:
    """The request; ``max_features`` and ``patience`` may come in the request's own fields
    or in its options (the same value where both are set)."""
    options = codec.options_from_message(msg.options)
    for name in ("max_features", "patience"):
        if msg.HasField(name):
            value = getattr(msg, name)
            if name in options.explicit and getattr(options, name) != value:
                raise ValueError(f"{name} is {value} but options.{name} is "
                                 f"{getattr(options, name)}; set one of them")
            options = options.with_(**{name: value})
    if options.max_features is None:
        options = options.with_(max_features=RANKING_MAX_FEATURES)
    return RankingRequest(
        model_ids=tuple(msg.model_ids), dataset_id=msg.dataset_id, layers=dict(msg.layers),
        reduce=msg.reduce or "auto", order=msg.order if msg.HasField("order") else RANKING_ORDER,
        baselines=resolve_baselines([*(LEGACY if msg.baselines else ()), *msg.baseline_names]),
        batch_size=msg.batch_size or None, options=options,
        method=msg.method or None, folds=msg.folds if msg.HasField("folds") else None)


def reference_request(msg: analysis_pb2.BuildReferenceRequest) -> ReferenceRequest:
    return ReferenceRequest(
        model_id=msg.model_id, dataset_id=msg.dataset_id, layer=msg.layer or None,
        reduce=msg.reduce or "auto", batch_size=msg.batch_size or None,
        uncertainty=msg.uncertainty, options=codec.options_from_message(msg.options))


def compression_request(msg: analysis_pb2.StartCompressionRequest) -> CompressionRequest:
    return CompressionRequest(
        model_id=msg.model_id, dataset_id=msg.dataset_id, test_dataset_id=msg.test_dataset_id,
        layers=tuple(msg.layers) or ("auto",),
        tolerance=msg.tolerance if msg.HasField("tolerance") else DEFAULT_TOLERANCE,
        criterion=msg.criterion or "probe",
        select_features=msg.select_features if msg.HasField("select_features") else None,
        reduce=msg.reduce or "auto", batch_size=msg.batch_size or None, name=msg.name,
        alpha=msg.alpha if msg.HasField("alpha") else 1.0)


def certify_request(msg: analysis_pb2.CertifyRequest) -> CertifyRequest:
    which = msg.WhichOneof("queries")
    features = codec.array(msg.features, "features") if which == "features" else None
    inputs = {k: codec.array(t, f"inputs[{k}]") for k, t in msg.inputs.tensors.items()} \
        if which == "inputs" else None
    return CertifyRequest(msg.reference_id, features, inputs, msg.uncertainty, msg.order,
                          msg.mode or "conservative")


def certify_response(res: Certified) -> analysis_pb2.CertifyResponse:
    msg = analysis_pb2.CertifyResponse(warnings=res.warnings)
    v = res.values
    for i in range(len(v["dp"])):
        if res.task == "classification":
            q = msg.results.add(
                nn_label=int(v["nn_label"][i]), dp=float(v["dp"][i]),
                confidence=float(v["confidence"][i]), guarantee=int(v["guarantee"][i]),
                nn_index=int(v["nn_index"][i]),
            )
            if np.isfinite(v["dn"][i]):
                q.dn = float(v["dn"][i])
                q.certified_radius = float(v["certified_radius"][i])
            if res.predictions is not None:
                q.prediction = int(res.predictions[i])
        else:
            msg.results.add(
                error_bound=float(v["error_bound"][i]), mode=v["mode"],
                neighbourhood_size=int(v["neighbourhood_size"][i]), dp=float(v["dp"][i]),
                confidence=float(v["confidence"][i]), nn_index=int(v["nn_index"][i]),
            )
    return msg
