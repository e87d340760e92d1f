"""Request admission: what is checked before a request is answered or its job queued.

Models are loaded once per request and checked against their datasets (inputs, the named
layer or the head rule); the path's own settings and its options (:mod:`.options`) are
checked. A bad argument is a ``ValueError`` (INVALID_ARGUMENT), resources that exist but
do not fit together a :class:`FailedPrecondition`. What is admitted is handed to the job
whole, so the work does not load or check it again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ...lazy import lazy_module
from ...protos.options import DEFAULT_ORDERS, IndexOptions
from ..graph import LayerSelectionError, ModelInfo, describe, load_model, select_layers
from ..graph.head import NoHead, feature_layer
from ..metrics import check_index_options
from ..metrics.validation import as_orders
from ..runtime.extract import InputError, model_feeds
from ..runtime.reduce import parse_reduction
from ..store import Store
from . import data
from .compress import check_request, cut_candidates
from .data import Labelled
from .options import (
    CERTIFICATION,
    COMPUTE_INDICES,
    LAYER_ANALYSIS,
    RANKING,
    check_folds,
    check_method,
    check_options,
    check_probe,
    ranking_indices,
)
from .requests import (
    CompressionRequest,
    LayerAnalysisRequest,
    RankingRequest,
    ReferenceRequest,
)

if TYPE_CHECKING:
    import numpy as np
    import onnx
else:
    onnx = lazy_module("onnx")


class FailedPrecondition(ValueError):
    """A request whose resources exist but do not fit together."""


# models ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LoadedModel:
    """A stored model, loaded once for the whole request."""

    id: str
    proto: onnx.ModelProto
    info: ModelInfo


def stored_model(store: Store, model_id: str) -> onnx.ModelProto:
    """Return a stored model: a single file parsed whole (it may name no external data), or
    the model file of a set loaded in place, its weights left in the set's folder."""
    path = store.model_path(model_id)  # NotFound for an unknown id
    if path == store.blobs.path(model_id):
        return load_model(path.read_bytes())
    return load_model(path, in_place=True)


def loaded_model(store: Store, model_id: str) -> LoadedModel:
    proto = stored_model(store, model_id)
    return LoadedModel(model_id, proto, describe(proto))


def _fits(model: LoadedModel, dataset: Labelled, role: str, what: str = "") -> None:
    try:
        model_feeds(model.info, dataset.inputs, role)
    except InputError as exc:
        raise FailedPrecondition(f"{what}{exc}") from None


def _feature_layer(model: LoadedModel, layer: str | None, what: str) -> None:
    """The named layer exists, or the model has a head to take features from."""
    try:
        feature_layer(model.proto, model.info, layer)
    except NoHead as exc:
        raise FailedPrecondition(f"{what}: {exc}") from None
    except LayerSelectionError as exc:
        raise ValueError(f"{what}: {exc}") from None


def _batch_size(value: int | None) -> None:
    if value is not None and value < 1:
        raise ValueError(f"batch_size must be >= 1 (0 = automatic); got {value}")


def _orders_fit(options: IndexOptions, n: int) -> None:
    if options.orders is not None:
        as_orders(options.orders, n, DEFAULT_ORDERS)


# paths ----------------------------------------------------------------------------------
def compute_indices(names: Iterable[str], options: IndexOptions) -> str | None:
    """Check the tensor names and the options of a ComputeIndices call; return the task."""
    known = {"features", "labels", "targets", "test_features", "test_labels", "test_targets"}
    names = set(names)
    if names - known or "features" not in names:
        raise ValueError(f"ComputeIndices tensors must be named among {sorted(known)} with "
                         f"'features' present; got {sorted(names)}")
    if ("labels" in names) == ("targets" in names):
        return None  # both or neither: the engine names the problem
    task = "classification" if "labels" in names else "regression"
    check_options(COMPUTE_INDICES, options, task)
    return task


def stored_indices(store: Store, dataset_id: str, test_dataset_id: str,
                   specs: list[dict[str, Any]], options: IndexOptions) -> dict[str, np.ndarray]:
    """The tensors of a ComputeIndices call on stored datasets (memory-mapped), named as
    the engine takes them: the dataset's one input is ``features``, its labels or targets
    keep their name, the test set's get the ``test_`` prefix."""
    if not dataset_id:
        raise ValueError("ComputeIndices: test_dataset_id needs dataset_id (the training set "
                         "the test set is indexed against)")
    if specs:
        raise ValueError(f"ComputeIndices: a header with dataset_id sends no tensors; got "
                         f"{len(specs)} tensor spec(s) ({', '.join(s['name'] for s in specs)})")
    train = _one_input(store, dataset_id, "dataset_id")
    arrays = {"features": next(iter(train.inputs.values())), **train.target()}
    if test_dataset_id:
        test = _one_input(store, test_dataset_id, "test_dataset_id")
        if test.key != train.key:
            raise FailedPrecondition(
                f"test_dataset_id {test_dataset_id!r} holds {test.key} ({test.task}) but "
                f"dataset_id {dataset_id!r} holds {train.key} ({train.task}); both sets must "
                "be of the same task")
        test_features = next(iter(test.inputs.values()))
        width = math.prod(arrays["features"].shape[1:])
        if math.prod(test_features.shape[1:]) != width:
            raise FailedPrecondition(
                f"test_dataset_id {test_dataset_id!r} has {math.prod(test_features.shape[1:])} "
                f"features per sample (shape {list(test_features.shape)}) but dataset_id "
                f"{dataset_id!r} has {width} (shape {list(arrays['features'].shape)})")
        arrays |= {"test_features": test_features, **test.target("test_")}
    compute_indices(arrays, options)
    return arrays


def _one_input(store: Store, dataset_id: str, field: str) -> Labelled:
    found = data.load(store, dataset_id)  # NotFound for an unknown id
    if len(found.inputs) != 1:
        names = ", ".join(repr(n) for n in found.inputs)
        raise FailedPrecondition(
            f"{field} {dataset_id!r} holds {len(found.inputs)} input tensors ({names}); "
            "ComputeIndices takes a dataset of one input tensor, the features, and its "
            "labels or targets")
    return found


@dataclass(frozen=True)
class LayerAnalysis:
    request: LayerAnalysisRequest
    model: LoadedModel
    train: Labelled
    test: Labelled | None


def layer_analysis(store: Store, req: LayerAnalysisRequest) -> LayerAnalysis:
    """The model and datasets of a layer analysis, checked to fit together."""
    model = loaded_model(store, req.model_id)
    train = data.load(store, req.dataset_id)
    test = data.load(store, req.test_dataset_id) if req.test_dataset_id else None
    try:
        select_layers(model.info, list(req.layers))
    except LayerSelectionError as exc:
        raise ValueError(f"layers: {exc}") from None
    _fits(model, train, "dataset")
    if test is not None:
        _fits(model, test, "test dataset")
        if test.task != train.task:
            raise FailedPrecondition("the dataset and the test dataset are of different tasks")
    _batch_size(req.batch_size)
    if not req.tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0; got {req.tolerance}")
    parse_reduction(req.reduce)
    check_options(LAYER_ANALYSIS, req.options, train.task)
    check_probe(req.options, req.probe, train.task)
    _orders_fit(req.options, len(train.y))
    check_index_options(train.task, req.options.indices, req.options.gamma)
    return LayerAnalysis(req, model, train, test)


@dataclass(frozen=True)
class Ranking:
    request: RankingRequest
    models: list[LoadedModel]
    data: Labelled


def ranking(store: Store, req: RankingRequest) -> Ranking:
    """The models and dataset of a ranking, each model checked against the dataset."""
    if not req.model_ids:
        raise ValueError("model_ids is empty; name at least one model")
    dataset = data.load(store, req.dataset_id)
    models = []
    for mid in req.model_ids:
        model = loaded_model(store, mid)
        _feature_layer(model, req.layers.get(mid), f"model {mid}")
        _fits(model, dataset, "dataset", f"model {mid}: ")
        models.append(model)
    unknown = set(req.layers) - set(req.model_ids)
    if unknown:
        raise ValueError(f"layers names model(s) not in model_ids: {sorted(unknown)}")
    parse_reduction(req.reduce)
    if req.order < 1:
        raise ValueError(f"order must be >= 1; got {req.order}")
    _batch_size(req.batch_size)
    check_method(req.method, dataset.task)
    if req.folds is not None:
        check_folds(req.folds)
    check_options(RANKING, req.options, dataset.task, ranking_indices(dataset.task,
                                                                      req.options))
    return Ranking(req, models, dataset)


@dataclass(frozen=True)
class Reference:
    request: ReferenceRequest
    model: LoadedModel
    data: Labelled


def reference(store: Store, req: ReferenceRequest) -> Reference:
    """The model and reference set of a reference, checked to fit together."""
    dataset = data.load(store, req.dataset_id)
    model = loaded_model(store, req.model_id)
    _feature_layer(model, req.layer, f"model {req.model_id}")
    _fits(model, dataset, "dataset", f"model {req.model_id}: ")
    parse_reduction(req.reduce)
    _batch_size(req.batch_size)
    if not (math.isfinite(req.uncertainty) and req.uncertainty >= 0):
        raise ValueError(f"uncertainty must be a finite number >= 0; got {req.uncertainty}")
    check_options(CERTIFICATION, req.options, dataset.task, ())
    if req.options.orders is not None:
        if dataset.task != "classification":
            raise ValueError(f"option 'orders' has no effect on this {CERTIFICATION} request: "
                             "a regression reference has no confidence order")
        if len(req.options.orders) != 1:
            raise ValueError(f"option 'orders': {CERTIFICATION} takes one order (the "
                             f"confidence index's); got {list(req.options.orders)}")
        _orders_fit(req.options, len(dataset.y))
    return Reference(req, model, dataset)


@dataclass(frozen=True)
class Compression:
    request: CompressionRequest
    model: LoadedModel
    train: Labelled
    test: Labelled


def compression(store: Store, req: CompressionRequest) -> Compression:
    """The model and datasets of a compression, checked to fit together; every candidate
    cut a layer with the batch axis first."""
    check_request(req.tolerance, req.criterion, req.select_features, req.reduce)
    if not (math.isfinite(req.alpha) and req.alpha > 0):
        raise ValueError(f"alpha must be a finite number > 0; got {req.alpha}")
    if not req.test_dataset_id:
        raise ValueError("test_dataset_id is empty: the cut is chosen on a test set's scores")
    model = loaded_model(store, req.model_id)
    train = data.load(store, req.dataset_id)
    test = data.load(store, req.test_dataset_id)
    try:
        cut_candidates(model.info, list(req.layers))
    except LayerSelectionError as exc:
        raise ValueError(f"layers: {exc}") from None
    _fits(model, train, "dataset")
    _fits(model, test, "test dataset")
    if test.task != train.task:
        raise FailedPrecondition("the dataset and the test dataset are of different tasks")
    _batch_size(req.batch_size)
    return Compression(req, model, train, test)
