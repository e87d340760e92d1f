"""Ranking pre-trained models for a target dataset (METRICS.md section 4, Algorithm 2).

For each model: the features at its head's input (or a layer the user names), reduced as
asked; the forward selection of the SI-maximising feature subset (SmI for regression);
then models ranked by the selected subset's index, ties by ``soft_order_si[r]``, then
``center_si`` (``soft_order_smi_linear[r]`` for regression), then input order. On request,
the established transferability scores on the same features, side by side.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from ...lazy import lazy_module
from ...protos.options import IndexOptions
from ..cancellation import Cancellation, checker
from ..cluster import LOCAL, Executor
from ..graph.head import classifier_output, feature_layer
from ..graph.inspect import LayerInfo, describe
from ..graph.load import load_model
from ..graph.select import LayerSelectionError
from ..metrics import compute_indices
from ..metrics.backend import get_backend, to_host
from ..metrics.baselines import (
    BASELINES,
    LEGACY,
    combine_across_models,
    compute_baselines,
    resolve_baselines,
)
from ..metrics.folded import folded_si
from ..runtime.extract import extract, ran_on
from ..runtime.reduce import Reduction
from .data import EXTRACT_MEMORY_MB
from .options import (
    FOLDS,
    RANKING,
    check_folds,
    check_method,
    check_options,
    ranking_indices,
    with_options,
)

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

Progress = Callable[[str, int, int], None]
ModelSource: TypeAlias = "str | os.PathLike[str] | bytes | onnx.ModelProto"


@dataclass
class ModelScore:
    """One model's row of the ranking."""

    model: str
    layer: str
    layer_rule: str
    reduction: str
    features: int
    index: str
    all_features: float
    selected: float
    subset_size: int
    selection_order: list[int]
    selection_scores: list[float]
    tie_breakers: dict[str, float]
    baselines: dict[str, float | None] | None = None
    seconds: float = 0.0
    rank: int = 0
    notes: list[str] = field(default_factory=list)
    method: str = "seed"
    scores: dict[str, float] = field(default_factory=dict)
    # where its extraction and indices ran (extract.ran_on), for the result's options
    ran: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "ran"}


@dataclass
class RankingResult:
    task: str
    models: list[ModelScore]
    options: dict[str, Any]

    @property
    def ranking(self) -> list[str]:
        return [m.model for m in sorted(self.models, key=lambda m: m.rank)]

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "ranking": self.ranking,
                "models": [m.to_dict() for m in self.models], "options": self.options}


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


def _probabilities(outputs: np.ndarray) -> np.ndarray:
    """The model's class probabilities: its output if it is one, else softmax of it."""
    o = outputs.astype(np.float64)
    if (o >= 0).all() and np.allclose(o.sum(axis=1), 1.0, atol=1e-4):
        return np.asarray(o)
    return _softmax(o)


def rank_models(
    models: Sequence[ModelSource],
    data: Mapping[str, Any] | Any,
    labels: Any = None,
    targets: Any = None,
    *,
    names: Sequence[str] | None = None,
    layers: Mapping[str, str] | Sequence[str | None] | None = None,
    reduce: str | Reduction = "auto",
    order: int = 5,
    baselines: bool | str | Sequence[str] = False,
    batch_size: int | None = None,
    options: IndexOptions | None = None,
    extract_memory_mb: float = EXTRACT_MEMORY_MB,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
    method: str | None = None,
    folds: int = FOLDS,
    executor: Executor = LOCAL,
    **option_kw: Any,
) -> RankingResult:
    """Rank ``models`` by how well their features separate (or smooth) the target data.

    ``data`` maps input names to arrays (each model takes the arrays named like its
    inputs), or is one array given to every single-input model. ``layers`` overrides the
    head rule per model (by name, or by position). ``options`` (or the same as keywords)
    of the forward selection and the indices: ``max_features``, ``patience``,
    ``candidates``, ``criterion`` (``smi_linear`` or ``smi_exp`` for regression),
    ``gamma``, ``normalize``, ``precision``, ``memory_budget_mb``; the others are refused.
    ``cancel`` stops the work between batches, blocks and models, and terminates a model
    run under way. ``method``: ``soft_order`` (the default for classification) ranks by
    ``soft_order_si[order]`` of all features; ``folded`` by the out-of-sample
    ``soft_order_si[order]`` of the subset selected without each of ``folds`` folds
    (:func:`..metrics.folded.folded_si`); ``seed`` (the default for regression, the
    only method there) by the subset's index on the samples it was selected on, Algorithm 2
    of METRICS.md section 4 exactly.
    ``baselines`` names the transferability scores to compute beside
    (registry names of :mod:`..metrics.baselines`, a comma list, or ``all``); ``True`` is
    LogME, LEEP, NCE and H-score. ``executor`` runs one task per model on a cluster
    (results in input order; ``LOCAL``: one after the other here).
    """
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels (classification) or targets (regression)")
    if not models:
        raise ValueError("models is empty; give at least one model")
    task = "classification" if labels is not None else "regression"
    y = np.asarray(labels if labels is not None else targets)
    names = list(names) if names is not None else [f"model{i}" for i in range(len(models))]
    if len(names) != len(models):
        raise ValueError(f"{len(names)} names for {len(models)} models")
    wanted_baselines = resolve_baselines(
        LEGACY if baselines is True else None if baselines is False else baselines)
    arrays = dict(data) if isinstance(data, Mapping) else {"inputs": data}
    method = check_method(method, task)
    check_folds(folds)
    opts = with_options(options, option_kw)
    indices = ranking_indices(task, opts)
    check_options(RANKING, opts, task, indices)
    criterion = indices[0]
    engine = opts.engine_kwargs() | {"indices": list(indices), "orders": [order],
                                     "criterion": criterion}
    if method != "seed":
        engine["indices"] = [n for n in indices if n != "feature_ranking"]
    cancel = checker(cancel)
    shared = _Shared(arrays, y, task, layers, reduce, order, tuple(wanted_baselines),
                     batch_size, extract_memory_mb, device, engine, criterion, method, folds,
                     opts)
    local = executor is LOCAL
    # On a cluster each model is one task: extraction and selection run on its worker, with
    # their own progress and stops; the driver reports models done and cancels the tasks.
    one = partial(_score_model, shared, progress=progress if local else None,
                  cancel=cancel if local else None)
    report = None if progress is None else (lambda done, total: progress("models", done, total))
    rows: list[ModelScore] = executor.map(
        one, list(enumerate(zip(names, models, strict=True))), progress=report, cancel=cancel)
    if wanted_baselines:  # scores normalised across the models (NCTI)
        combine_across_models([r.baselines for r in rows if r.baselines is not None])
    order_key = sorted(range(len(rows)), key=lambda i: (
        -rows[i].selected, *(-v for v in rows[i].tie_breakers.values()), i))
    for rank, i in enumerate(order_key, start=1):
        rows[i].rank = rank
    applied: dict[str, Any] = {
        "method": method, "order": order, "max_features": opts.max_features,
        "patience": opts.patience,
        "reduce": reduce.describe() if isinstance(reduce, Reduction) else reduce,
        "baselines": bool(wanted_baselines),
        "baseline_names": list(wanted_baselines), "criterion": criterion,
        "normalize": opts.normalize,
        "precision": opts.precision, "memory_budget_mb": opts.memory_budget_mb,
        # what really ran (the last model's extraction; every model runs on the same device)
        **(rows[-1].ran if rows else ran_on([], device))}
    if opts.candidates is not None:
        applied["candidates"] = list(opts.candidates)
    if task == "regression":
        applied["gamma"] = opts.gamma
    if method == "folded":
        applied["folds"] = folds
    return RankingResult(task, rows, applied)


@dataclass
class _Shared:
    """What every model's scoring shares (sent once to a cluster)."""

    arrays: dict[str, Any]
    y: np.ndarray
    task: str
    layers: Mapping[str, str] | Sequence[str | None] | None
    reduce: str | Reduction
    order: int
    baselines: tuple[str, ...]  # registry names (metrics.baselines)
    batch_size: int | None
    extract_memory_mb: float
    device: str | None
    engine: dict[str, Any]
    criterion: str
    method: str
    folds: int
    opts: IndexOptions


def _score_model(sh: _Shared, item: tuple[int, tuple[str, ModelSource]], *,
                 progress: Progress | None, cancel: Cancellation | None) -> ModelScore:
    """The row of one model (``item``: its position, name and source), not yet ranked."""
    j, (name, source) = item
    arrays, y, task, reduce, order, baselines = (sh.arrays, sh.y, sh.task, sh.reduce,
                                                  sh.order, sh.baselines)
    batch_size, extract_memory_mb, device = sh.batch_size, sh.extract_memory_mb, sh.device
    engine, criterion = sh.engine, sh.criterion
    started = time.perf_counter()
    proto = source if isinstance(source, onnx.ModelProto) else load_model(source)
    info = describe(proto)
    try:
        layer, rule = feature_layer(proto, info, _override(sh.layers, name, j))
    except LayerSelectionError as exc:
        raise LayerSelectionError(f"model {name!r}: {exc}") from None
    wanted: list[LayerInfo] = [layer]
    output = None
    needs_probs = any(BASELINES[b].needs == "probabilities" for b in baselines)
    if needs_probs and task == "classification":
        output = classifier_output(info)
        if output is not None and output.name != layer.name:
            wanted.append(output)
    reductions: dict[str, str | Reduction] = {layer.name: reduce}
    if output is not None:
        reductions[output.name] = "flatten"

    def report(stage: str, done: int, total: int, _n: str = name) -> None:
        if progress is not None:
            progress(f"{_n}:{stage}", done, total)

    got = extract(proto, info, wanted, [arrays], reduce=reductions, batch_size=batch_size,
                  memory_budget_mb=extract_memory_mb, device=device, progress=report,
                  cancel=cancel)
    feats = to_host(got[0].train)
    target: dict[str, Any] = {"labels" if task == "classification" else "targets": y}
    res = compute_indices(feats, **target, device=device, cancel=cancel, **engine)
    method = sh.method
    row = (_folded_row(feats, y, res, order, sh.folds, sh.opts, device, cancel)
           if method == "folded" else _soft_order_row(res, order)
           if method == "soft_order" else _seed_row(res, criterion, order, task))
    row.model, row.layer, row.layer_rule = name, layer.name, rule
    row.reduction = got[0].reduction.describe()
    row.notes = list(got[0].notes) + list(res.warnings) + row.notes
    if baselines:
        if cancel is not None:
            cancel.check()
        probs = _probabilities(to_host(got[1].train)) if len(got) > 1 else None
        row.baselines = compute_baselines(list(baselines), feats, **target,
                                          probabilities=probs)
    row.ran = ran_on(got, device)
    row.seconds = round(time.perf_counter() - started, 3)
    return row


def _ties(res: Any, order: int, task: str) -> dict[str, float]:
    if task == "classification":
        return {f"soft_order_si[{order}]": float(res["soft_order_si"][order]),
                "center_si": float(res["center_si"])}
    return {f"soft_order_smi_linear[{order}]": float(res["soft_order_smi_linear"][order])}


def _soft_order_row(res: Any, order: int) -> ModelScore:
    """``soft_order_si[order]`` of all features (each point's neighbours exclude itself, so
    it is scored out of sample); ties by ``si``, then ``center_si``."""
    key = f"soft_order_si[{order}]"
    value = float(res["soft_order_si"][order])
    return ModelScore(
        model="", layer="", layer_rule="", reduction="", features=int(res.n_features),
        index=key, all_features=float(res["si"]), selected=value,
        subset_size=int(res.n_features), selection_order=[], selection_scores=[],
        tie_breakers={"si": float(res["si"]), "center_si": float(res["center_si"])},
        method="soft_order", scores={key: value})


def _seed_row(res: Any, criterion: str, order: int, task: str) -> ModelScore:
    """Algorithm 2 as written: the selected subset's index on the samples it was selected on."""
    fr = res.feature_ranking
    assert fr is not None
    return ModelScore(
        model="", layer="", layer_rule="", reduction="", features=int(res.n_features),
        index=criterion, all_features=float(res[criterion]),
        selected=max(fr.scores) if fr.scores else float("nan"),
        subset_size=len(fr.best_subset), selection_order=list(fr.order),
        selection_scores=[float(s) for s in fr.scores], tie_breakers=_ties(res, order, task),
        method="seed")


def _folded_row(feats: np.ndarray, y: np.ndarray, res: Any, order: int, folds: int,
                opts: IndexOptions, device: str | None, cancel: Any) -> ModelScore:
    """The folded score: ``soft_order_si[order]`` of each sample against the other folds,
    under the subset selected without its fold; ties by the folded ``si``, then the
    all-feature tie-breakers."""
    _, xp = get_backend(device)
    fs = folded_si(xp, feats, y, folds=folds, order=order, max_features=opts.max_features,
                   patience=opts.patience, candidates=opts.candidates,
                   memory_budget_mb=opts.memory_budget_mb, precision=opts.precision,
                   cancel=cancel)
    vals = fs.values
    key = f"folded_soft_order_si[{order}]"
    scores = {key: vals["soft_order_si"], "folded_si": vals["si"],
              f"folded_high_order_si[{order}]": vals["high_order_si"]}
    sizes = [len(s) for s in fs.subsets]
    return ModelScore(
        model="", layer="", layer_rule="", reduction="", features=int(feats.shape[1]),
        index=key, all_features=float(res["si"]), selected=scores[key],
        subset_size=int(np.median(sizes)), selection_order=[], selection_scores=[],
        tie_breakers={"folded_si": vals["si"], **_ties(res, order, "classification")},
        method="folded", scores=scores,
        notes=[f"folded: {fs.folds} folds, subsets of {min(sizes)} to {max(sizes)} features"])


def _override(layers: Mapping[str, str] | Sequence[str | None] | None, name: str,
              j: int) -> str | None:
    if layers is None:
        return None
    if isinstance(layers, Mapping):
        return layers.get(name)
    return layers[j] if j < len(layers) else None
