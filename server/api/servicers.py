"""The gRPC servicers: thin translation between messages and domain calls.

Every domain error becomes a status code with a message that names the field or value
(:func:`status_for`); nothing reaches the client as UNKNOWN with a stack trace.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from ...protos import codec
from ...protos.stubs import (
    analysis_pb2,
    analysis_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)
from ..analysis import analyze_layers, memory
from ..analysis.certify import build_reference, query_features
from ..analysis.ranking import rank_models
from ..graph import LayerSelectionError, describe, load_model, select_layers
from ..graph.head import NoHead, head_layer
from ..graph.load import ModelError
from ..metrics import check_index_options, compute_indices
from ..metrics.guarantee import ClassificationReference, RegressionReference
from ..metrics.validation import as_orders
from ..runtime.extract import Cancelled, InputError, model_feeds
from ..runtime.reduce import parse_reduction
from ..store import (
    InvalidUpload,
    JobCancelled,
    NotFound,
    QueueFull,
    ShuttingDown,
    SizeLimitError,
    Store,
    check_dataset_specs,
    dataset_id,
)
from ..store.jobs import JobManager
from ..store.store import split_tensors
from . import convert

log = logging.getLogger("layerscope.api")
F = TypeVar("F", bound=Callable[..., Any])


class FailedPrecondition(ValueError):
    """A request whose resources exist but do not fit together."""


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """Return the status code and message for a domain error."""
    if isinstance(exc, NotFound):
        return grpc.StatusCode.NOT_FOUND, str(exc)
    if isinstance(exc, (SizeLimitError, QueueFull, memory.MemoryLimitError)):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)
    if isinstance(exc, (FailedPrecondition, InputError)):
        return grpc.StatusCode.FAILED_PRECONDITION, str(exc)
    if isinstance(exc, ShuttingDown):
        return grpc.StatusCode.UNAVAILABLE, str(exc)
    if isinstance(exc, (Cancelled, JobCancelled)):
        return grpc.StatusCode.CANCELLED, str(exc) or "cancelled"
    if isinstance(exc, ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, f"internal error ({type(exc).__name__}): {exc}"


def _abort(context: grpc.ServicerContext, exc: BaseException) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("internal error")
    context.abort(code, message)


def rpc(fn: F) -> F:
    """Map domain errors of a unary-response method to status codes."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error gets a status code
            if isinstance(exc, AssertionError):
                raise
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def rpc_stream(fn: F) -> F:
    """Map domain errors of a streaming-response method to status codes."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from fn(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)

    return wrapper  # type: ignore[return-value]


def _header(requests: Iterator[Any], what: str) -> Any:
    try:
        first = next(requests)
    except StopIteration:
        raise ValueError(f"{what}: the stream was empty; send a header first") from None
    if first.WhichOneof("part") != "header":
        raise ValueError(f"{what}: the first message must be a header, then chunks")
    return first.header


def _receive_blob(
    store: Store, header: Any, requests: Iterator[Any], context: grpc.ServicerContext
) -> Path:
    """Write the chunks that follow a header into the store; return the blob's path.

    Nothing is left behind when the stream breaks off or the bytes do not match.
    """
    writer = store.writer(header.size_bytes, header.sha256)
    try:
        for req in requests:
            if not context.is_active():
                raise JobCancelled("the client went away during the upload")
            if req.WhichOneof("part") != "chunk":
                raise ValueError("after the header, every message must be a chunk")
            writer.write(req.chunk.offset, req.chunk.data)
        return writer.commit()
    finally:
        writer.abort()


def _specs(tensors: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "dtype": t.dtype, "shape": [int(d) for d in t.shape]}
            for t in tensors]


def _check_finite(arrays: dict[str, np.ndarray], chunk_bytes: int = 64 << 20) -> None:
    """Raise InvalidUpload at the first tensor with NaN or Inf, in bounded memory."""
    for name, arr in arrays.items():
        if arr.dtype.kind != "f" or not arr.size:
            continue
        per = max(1, arr[:1].nbytes)
        step = max(1, chunk_bytes // per)
        count, first = 0, -1
        for s in range(0, len(arr), step):
            bad = ~np.isfinite(arr[s : s + step]).reshape(min(step, len(arr) - s), -1)
            rows = bad.any(axis=1)
            if rows.any():
                count += int(bad.sum())
                if first < 0:
                    first = s + int(np.argmax(rows))
        if count:
            raise InvalidUpload(
                f"tensor {name!r} holds {count} non-finite value(s) (NaN or Inf); "
                f"the first in sample {first}"
            )


class ModelsService(models_pb2_grpc.ModelsServicer):
    def __init__(self, store: Store, budget: memory.MemoryBudget | None = None) -> None:
        self.store = store
        self.memory = budget or memory.MemoryBudget(memory.default_budget_mb())

    @rpc
    def UploadModel(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = _header(requests, "UploadModel")
        try:
            row = self.store.catalog.model(h.sha256)
            return models_pb2.UploadModelResponse(model=convert.model(row),
                                                  already_present=True)
        except NotFound:
            pass
        est = self.memory.admit(memory.model_estimate(h.size_bytes))
        path = _receive_blob(self.store, h, requests, context)
        try:
            with self.memory.hold(est, lambda: not context.is_active()):
                info = describe(load_model(path.read_bytes()))
        except (ModelError, ValueError) as exc:
            self.store.drop_blob_if_unused(h.sha256)
            raise ModelError(f"UploadModel: {exc}") from None
        except Cancelled:
            self.store.drop_blob_if_unused(h.sha256)
            raise
        self.store.catalog.add_model(h.sha256, h.name or h.sha256[:12], h.size_bytes,
                                     info.to_dict())
        stored = self.store.catalog.model(h.sha256)
        return models_pb2.UploadModelResponse(model=convert.model(stored))

    @rpc
    def GetModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.model(self.store.catalog.model(request.id))

    @rpc
    def ListModels(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows = self.store.catalog.models()
        return models_pb2.ListModelsResponse(models=[convert.model(r, False) for r in rows])

    @rpc
    def DeleteModel(self, request: Any, context: grpc.ServicerContext) -> Any:
        self.store.catalog.delete_model(request.id)
        self.store.drop_blob_if_unused(request.id)
        return models_pb2.DeleteModelResponse()


class DatasetsService(datasets_pb2_grpc.DatasetsServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    @rpc
    def UploadDataset(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = _header(requests, "UploadDataset")
        specs = _specs(h.tensors)
        n, task, total = check_dataset_specs(specs)
        if total != h.size_bytes:
            raise InvalidUpload(
                f"header.size_bytes is {h.size_bytes} but the tensors' dtypes and shapes make "
                f"{total} bytes"
            )
        ds_id = dataset_id(specs, h.sha256)
        try:
            row = self.store.catalog.dataset(ds_id)
            return datasets_pb2.UploadDatasetResponse(dataset=convert.dataset(row),
                                                      already_present=True)
        except NotFound:
            pass
        path = _receive_blob(self.store, h, requests, context)
        try:
            _check_finite(split_tensors(path, specs))
        except ValueError:
            self.store.drop_blob_if_unused(h.sha256)
            raise
        self.store.catalog.add_dataset({
            "id": ds_id, "name": h.name or ds_id[:12], "blob": h.sha256, "size": total,
            "specs": specs, "n_samples": n, "task": task,
        })
        return datasets_pb2.UploadDatasetResponse(
            dataset=convert.dataset(self.store.catalog.dataset(ds_id)))

    @rpc
    def GetDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.dataset(self.store.catalog.dataset(request.id))

    @rpc
    def ListDatasets(self, request: Any, context: grpc.ServicerContext) -> Any:
        return datasets_pb2.ListDatasetsResponse(
            datasets=[convert.dataset(r) for r in self.store.catalog.datasets()])

    @rpc
    def DeleteDataset(self, request: Any, context: grpc.ServicerContext) -> Any:
        blob = self.store.catalog.delete_dataset(request.id)
        self.store.drop_blob_if_unused(blob)
        return datasets_pb2.DeleteDatasetResponse()


def _options(o: Any) -> dict[str, Any]:
    """IndexOptions -> keyword arguments of compute_indices (unset fields left out)."""
    kw: dict[str, Any] = {}
    if o.indices:
        kw["indices"] = list(o.indices)
    if o.orders:
        kw["orders"] = [int(r) for r in o.orders]
    for name in ("gamma", "margin_cap", "max_features", "patience", "memory_budget_mb"):
        if o.HasField(name):
            kw[name] = getattr(o, name)
    if o.normalize:
        kw["normalize"] = True
    if o.candidates:
        kw["candidates"] = list(o.candidates)
    if o.criterion:
        kw["criterion"] = o.criterion
    if o.precision:
        kw["precision"] = o.precision
    return kw


class AnalysisService(analysis_pb2_grpc.AnalysisServicer):
    def __init__(self, store: Store, jobs: JobManager, device: str | None,
                 budget: memory.MemoryBudget | None = None) -> None:
        self.store, self.jobs, self.device = store, jobs, device
        self.memory = budget or memory.MemoryBudget(memory.default_budget_mb())
        self._refs: dict[str, tuple[dict[str, Any], Any]] = {}
        self._ref_lock = threading.Lock()

    @rpc
    def ComputeIndices(self, requests: Iterator[Any], context: grpc.ServicerContext) -> Any:
        h = _header(requests, "ComputeIndices")
        specs = _specs(h.tensors)
        total = sum(memory.spec_bytes(s) for s in specs)
        if total > self.store.max_upload_bytes:
            raise SizeLimitError(
                f"ComputeIndices tensors total {total} bytes, above the server's limit of "
                f"{self.store.max_upload_bytes} bytes (--max-upload-mb)"
            )
        known = {"features", "labels", "targets", "test_features", "test_labels", "test_targets"}
        names = [s["name"] for s in specs]
        if set(names) - known or "features" not in names or len(set(names)) != len(names):
            raise ValueError(
                f"ComputeIndices tensors must be named among {sorted(known)}, each once, with "
                f"'features' present; got {names}"
            )
        opts = codec.options_from_message(h.options)  # INVALID_ARGUMENT for bad values
        est = memory.compute_indices_estimate(specs, opts)
        with self.memory.hold(est) as resize:
            arrays = memory.receive_tensors(specs, requests, context.is_active)
            resize(memory.with_classes(est, opts, arrays))
            result = compute_indices(device=self.device, **arrays, **_options(h.options))
            return convert.indices_result(result, per_sample=h.options.per_sample)

    @rpc
    def StartLayerAnalysis(self, request: Any, context: grpc.ServicerContext) -> Any:
        model_bytes = self.store.model_bytes(request.model_id)
        _, train = self.store.dataset_arrays(request.dataset_id)
        test = None
        if request.test_dataset_id:
            _, test = self.store.dataset_arrays(request.test_dataset_id)
        info = describe(load_model(model_bytes))
        layers = list(request.layers) or ["auto"]
        try:
            chosen = select_layers(info, layers)
        except LayerSelectionError as exc:
            raise ValueError(f"layers: {exc}") from None
        for role, arrays in (("dataset", train), ("test dataset", test)):
            if arrays is not None:
                try:
                    model_feeds(info, arrays, role)
                except InputError as exc:
                    raise FailedPrecondition(str(exc)) from None
        if test is not None and (("labels" in train) != ("labels" in test)):
            raise FailedPrecondition("the dataset and the test dataset are of different tasks")
        if request.batch_size < 0:
            raise ValueError(f"batch_size must be >= 1 (0 = automatic); got {request.batch_size}")
        if request.HasField("tolerance") and not request.tolerance >= 0:
            raise ValueError(f"tolerance must be >= 0; got {request.tolerance}")
        parse_reduction(request.reduce or "auto")
        opts = _options(request.options)
        task = "classification" if "labels" in train else "regression"
        if "orders" in opts:
            as_orders(opts["orders"], len(train["labels" if task == "classification"
                                               else "targets"]), (5,))
        check_index_options(task, opts.get("indices") or (
            ["si"] if task == "classification" else None), opts.get("gamma", 1.0))
        req = {
            "model_id": request.model_id, "dataset_id": request.dataset_id,
            "test_dataset_id": request.test_dataset_id or None, "layers": layers,
            "reduce": request.reduce or "auto", "probe": request.probe,
            "batch_size": request.batch_size or None,
            "tolerance": request.tolerance if request.HasField("tolerance") else 0.01,
            "options": opts,
        }
        est = memory.layer_analysis_estimate(
            info, chosen, train, test, reduce=req["reduce"], batch_size=req["batch_size"],
            probe=request.probe, opts=codec.options_from_message(request.options),
            model_bytes=len(model_bytes))
        work = self.memory.job(est, functools.partial(self._layer_analysis, req))
        return convert.job(self.jobs.submit("layer_analysis", req, work))

    def _layer_analysis(self, req: dict[str, Any], progress: Any, cancelled: Any) -> Any:
        progress("loading", 0, 1)
        model = load_model(self.store.model_bytes(req["model_id"]))
        _, train = self.store.dataset_arrays(req["dataset_id"])
        test = None
        if req["test_dataset_id"]:
            _, test = self.store.dataset_arrays(req["test_dataset_id"])
        key = "labels" if "labels" in train else "targets"
        data = {k: v for k, v in train.items() if k not in ("labels", "targets")}
        kw: dict[str, Any] = {key: np.asarray(train[key])}
        if test is not None:
            kw["test"] = {k: v for k, v in test.items() if k not in ("labels", "targets")}
            kw[f"test_{key}"] = np.asarray(test[key])
        opts = dict(req["options"])
        budget = opts.pop("memory_budget_mb", 1024.0)
        result = analyze_layers(
            model, data, layers=req["layers"], reduce=req["reduce"], probe=req["probe"],
            batch_size=req["batch_size"], tolerance=req["tolerance"], device=self.device,
            memory_budget_mb=budget, progress=progress, cancelled=cancelled,
            indices=opts.get("indices"), orders=opts.get("orders"),
            gamma=opts.get("gamma", 1.0), normalize=opts.get("normalize", False), **kw,
        )
        return result.to_dict()

    # ranking ----------------------------------------------------------------------------
    def _check_model_fits(self, model_id: str, arrays: dict[str, Any], layer: str,
                          what: str) -> None:
        info = describe(load_model(self.store.model_bytes(model_id)))
        proto_inputs = {k: v for k, v in arrays.items() if k not in ("labels", "targets")}
        if layer:
            if info.layer(layer) is None:
                reason = info.excluded.get(layer, "no such tensor in the model")
                raise ValueError(f"{what}: layer {layer!r}: {reason}")
        else:
            try:
                head_layer(load_model(self.store.model_bytes(model_id)), info)
            except NoHead as exc:
                raise FailedPrecondition(f"{what}: {exc}") from None
        try:
            model_feeds(info, proto_inputs, "dataset")
        except InputError as exc:
            raise FailedPrecondition(f"{what}: {exc}") from None

    @rpc
    def StartRanking(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.model_ids:
            raise ValueError("model_ids is empty; name at least one model")
        _, data = self.store.dataset_arrays(request.dataset_id)
        for mid in request.model_ids:
            self._check_model_fits(mid, data, request.layers.get(mid, ""), f"model {mid}")
        unknown = set(request.layers) - set(request.model_ids)
        if unknown:
            raise ValueError(f"layers names model(s) not in model_ids: {sorted(unknown)}")
        parse_reduction(request.reduce or "auto")
        req = {
            "model_ids": list(request.model_ids), "dataset_id": request.dataset_id,
            "layers": dict(request.layers), "reduce": request.reduce or "auto",
            "max_features": request.max_features if request.HasField("max_features") else 32,
            "patience": request.patience if request.HasField("patience") else None,
            "order": request.order if request.HasField("order") else 5,
            "baselines": request.baselines, "batch_size": request.batch_size or None,
        }
        for key in ("max_features", "patience", "order"):
            if req[key] is not None and req[key] < 1:
                raise ValueError(f"{key} must be >= 1; got {req[key]}")
        est = memory.ranking_estimate(
            [load_model(self.store.model_bytes(m)) for m in req["model_ids"]], req["layers"],
            req["model_ids"], data, reduce=req["reduce"], batch_size=req["batch_size"],
            max_features=req["max_features"], patience=req["patience"], order=req["order"],
            baselines=req["baselines"])
        work = self.memory.job(est, functools.partial(self._ranking, req))
        return convert.job(self.jobs.submit("ranking", req, work))

    def _ranking(self, req: dict[str, Any], progress: Any, cancelled: Any) -> Any:
        progress("loading", 0, 1)
        _, data = self.store.dataset_arrays(req["dataset_id"])
        key = "labels" if "labels" in data else "targets"
        inputs = {k: v for k, v in data.items() if k not in ("labels", "targets")}
        models = [load_model(self.store.model_bytes(m)) for m in req["model_ids"]]
        target: dict[str, Any] = {key: np.asarray(data[key])}
        result = rank_models(
            models, inputs, **target, names=req["model_ids"],
            layers=req["layers"], reduce=req["reduce"], max_features=req["max_features"],
            patience=req["patience"], order=req["order"], baselines=req["baselines"],
            batch_size=req["batch_size"], device=self.device, progress=progress,
            cancelled=cancelled,
        )
        return result.to_dict()

    # certification ----------------------------------------------------------------------
    @rpc
    def BuildReference(self, request: Any, context: grpc.ServicerContext) -> Any:
        _, data = self.store.dataset_arrays(request.dataset_id)
        self._check_model_fits(request.model_id, data, request.layer, "model")
        parse_reduction(request.reduce or "auto")
        if not (math.isfinite(request.uncertainty) and request.uncertainty >= 0):
            raise ValueError(f"uncertainty must be a finite number >= 0; got "
                             f"{request.uncertainty}")
        req = {"model_id": request.model_id, "dataset_id": request.dataset_id,
               "layer": request.layer or None, "reduce": request.reduce or "auto",
               "batch_size": request.batch_size or None, "uncertainty": request.uncertainty}
        est = memory.reference_estimate(
            load_model(self.store.model_bytes(request.model_id)), req["layer"], data,
            reduce=req["reduce"], batch_size=req["batch_size"])
        work = self.memory.job(est, functools.partial(self._build_reference, req))
        return convert.job(self.jobs.submit("reference", req, work))

    def _build_reference(self, req: dict[str, Any], progress: Any, cancelled: Any) -> Any:
        progress("loading", 0, 1)
        proto = load_model(self.store.model_bytes(req["model_id"]))
        _, data = self.store.dataset_arrays(req["dataset_id"])
        key = "labels" if "labels" in data else "targets"
        inputs = {k: v for k, v in data.items() if k not in ("labels", "targets")}
        target: dict[str, Any] = {key: np.asarray(data[key])}
        ref = build_reference(
            proto, inputs, **target, layer=req["layer"],
            reduce=req["reduce"], uncertainty=req["uncertainty"],
            batch_size=req["batch_size"], device=self.device, progress=progress,
            cancelled=cancelled,
        )
        y = ref.labels if ref.labels is not None else ref.targets
        assert y is not None
        y = np.ascontiguousarray(y)
        specs = [{"name": "features", "dtype": "float32", "shape": list(ref.features.shape)},
                 {"name": key, "dtype": str(y.dtype), "shape": list(y.shape)}]
        blob = self.store.blobs.put_bytes(b"".join((ref.features.data, y.data)))  # one copy
        ref_id = hashlib.sha256(json.dumps(
            [req["model_id"], req["dataset_id"], ref.layer, ref.reduction.describe()]
        ).encode()).hexdigest()
        info = {"id": ref_id, "model_id": req["model_id"], "dataset_id": req["dataset_id"],
                "layer": ref.layer, "layer_rule": ref.layer_rule,
                "reduction": ref.reduction.describe(), "task": key == "labels" and
                "classification" or "regression", "n_samples": int(ref.features.shape[0]),
                "features": int(ref.features.shape[1]), "summary": ref.summary}
        self.store.catalog.add_reference({"id": ref_id, "model_id": req["model_id"],
                                          "dataset_id": req["dataset_id"], "blob": blob,
                                          "specs": specs, "info": info})
        with self._ref_lock:
            self._refs.pop(ref_id, None)
        return info

    def _reference(self, ref_id: str) -> tuple[dict[str, Any], Any]:
        with self._ref_lock:
            if ref_id in self._refs:
                return self._refs[ref_id]
        row = self.store.catalog.reference(ref_id)
        arrays = split_tensors(self.store.blobs.path(row["blob"]), row["specs"])
        feats = np.asarray(arrays["features"])
        if "labels" in arrays:
            loaded: Any = ClassificationReference(feats, np.asarray(arrays["labels"]))
        else:
            loaded = RegressionReference(feats, np.asarray(arrays["targets"]))
        with self._ref_lock:
            self._refs[ref_id] = (row, loaded)
        return row, loaded

    def _certify(self, request: Any) -> Any:
        row, ref = self._reference(request.reference_id)
        info = row["info"]
        with self.memory.hold(memory.certify_estimate(request, info)):
            return self._certify_held(request, row, ref, info)

    def _certify_held(self, request: Any, row: dict[str, Any], ref: Any,
                      info: dict[str, Any]) -> Any:
        which = request.WhichOneof("queries")
        preds = None
        if which == "features":
            feats = codec.array(request.features, "features")
        elif which == "inputs":
            inputs = {k: codec.array(t, f"inputs[{k}]") for k, t in
                      request.inputs.tensors.items()}
            proto = load_model(self.store.model_bytes(row["model_id"]))
            try:
                feats, preds = query_features(proto, info["layer"], info["reduction"], inputs,
                                              device=self.device)
            except InputError as exc:
                raise ValueError(f"inputs: {exc}") from None
        else:
            raise ValueError("queries: send features (at the reference's layer) or inputs")
        resp = analysis_pb2.CertifyResponse()
        if info["task"] == "classification":
            order = request.order or 1
            res = ref.certify(feats, request.uncertainty, order)
            if len(ref.classes) == 1:
                resp.warnings.append("the reference has a single label: dn and "
                                     "certified_radius are infinite (absent)")
            for i in range(len(feats)):
                q = resp.results.add(
                    nn_label=int(res["nn_label"][i]), dp=float(res["dp"][i]),
                    confidence=float(res["confidence"][i]), guarantee=int(res["guarantee"][i]),
                    nn_index=int(res["nn_index"][i]),
                )
                if np.isfinite(res["dn"][i]):
                    q.dn = float(res["dn"][i])
                    q.certified_radius = float(res["certified_radius"][i])
                if preds is not None:
                    q.prediction = int(preds[i])
        else:
            res = ref.certify(feats, request.uncertainty, request.mode or "conservative")
            for i in range(len(feats)):
                resp.results.add(
                    error_bound=float(res["error_bound"][i]), mode=res["mode"],
                    neighbourhood_size=int(res["neighbourhood_size"][i]),
                    dp=float(res["dp"][i]), confidence=float(res["confidence"][i]),
                    nn_index=int(res["nn_index"][i]),
                )
        return resp

    @rpc
    def Certify(self, request: Any, context: grpc.ServicerContext) -> Any:
        return self._certify(request)

    @rpc_stream
    def CertifyStream(self, requests: Iterator[Any], context: grpc.ServicerContext
                      ) -> Iterator[Any]:
        for request in requests:
            yield self._certify(request)

    @rpc_stream
    def WatchJob(self, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self.jobs.get(request.id, with_result=False)  # NOT_FOUND before the stream starts
        for row in self.jobs.watch(request.id, context.is_active):
            yield convert.job(row)

    @rpc
    def GetJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.jobs.get(request.id))

    @rpc
    def ListJobs(self, request: Any, context: grpc.ServicerContext) -> Any:
        return analysis_pb2.ListJobsResponse(
            jobs=[convert.job(r) for r in self.store.catalog.jobs()])

    @rpc
    def CancelJob(self, request: Any, context: grpc.ServicerContext) -> Any:
        return convert.job(self.jobs.cancel(request.id))


__all__ = ["AnalysisService", "DatasetsService", "ModelsService", "common_pb2", "status_for"]
