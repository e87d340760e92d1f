"""Layer-wise analysis: how separation (or smoothness) evolves through a model's layers.

For the model's float inputs, the chosen layers and the model's float outputs, in that
order, the indices of the training set and the cross indices of a test set are computed on
each layer's reduced activations; optionally a linear probe per layer (:mod:`.probe`).
The result says where the index stops improving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lazy import lazy_module
from ...protos.options import DEFAULT_ORDERS, IndexOptions
from ..cancellation import Cancellation, checker
from ..cluster import LOCAL, Executor
from ..graph.inspect import LayerInfo, ModelInfo, describe
from ..graph.load import load_model
from ..graph.select import select_layers
from ..metrics import check_index_options, compute_indices
from ..metrics.backend import to_host
from ..metrics.validation import as_orders
from ..runtime.extract import LayerData, model_feeds, ran_on
from ..runtime.reduce import Reduction
from .data import EXTRACT_MEMORY_MB
from .options import LAYER_ANALYSIS, check_options, check_probe, with_options
from .probe import fit_probe, ridge_probe
from .requests import DEFAULT_TOLERANCE

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

Progress = Callable[[str, int, int], None]


@dataclass
class LayerResult:
    """One row of the layer table."""

    name: str
    kind: str  # "input", "layer" or "output"
    op_type: str
    shape: list[int]
    reduction: str
    dims: int
    values: dict[str, Any] = field(default_factory=dict)
    cross: dict[str, Any] | None = None
    probe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name, "kind": self.kind, "op_type": self.op_type,
            "shape": self.shape, "reduction": self.reduction, "dims": self.dims,
        }
        out.update(self.values)
        if self.cross is not None:
            out["cross"] = self.cross
        if self.probe is not None:
            out["probe"] = self.probe
        if self.notes:
            out["notes"] = list(self.notes)
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class LayerwiseResult:
    """The layer table with the options applied and where the index stops improving."""

    model: dict[str, Any]
    task: str
    layers: list[LayerResult]
    plateau: dict[str, Any] | None
    options: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "task": self.task,
            "layers": [la.to_dict() for la in self.layers],
            "plateau": self.plateau, "options": self.options, "warnings": list(self.warnings),
        }


def plateau_position(values: list[float | None], tolerance: float) -> int | None:
    """Return the first position after which the values never rise by more than tolerance.

    Positions without a value (a failed layer) are skipped.
    """
    pts = [(i, v) for i, v in enumerate(values) if v is not None and np.isfinite(v)]
    for a, (i, v) in enumerate(pts):
        later = [w for _, w in pts[a + 1 :]]
        if not later or max(later) - v <= tolerance:
            return i
    return None


def _is_float(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def _input_layers(info: ModelInfo, feeds: Mapping[str, np.ndarray]) -> list[LayerInfo]:
    out = []
    for t in info.inputs:
        if not _is_float(t.dtype):
            continue  # token ids and other integer inputs are not features
        arr = feeds[t.name]
        out.append(LayerInfo(
            name=t.name, node="", op_type="input", dtype=t.dtype, shape=tuple(arr.shape),
            elements_per_sample=int(np.prod(arr.shape[1:], dtype=np.int64)), position=-1,
            auto=False, channels_first=arr.ndim != 3,
        ))
    return out


def analyze_layers(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    data: Mapping[str, Any],
    labels: Any = None,
    targets: Any = None,
    *,
    test: Mapping[str, Any] | None = None,
    test_labels: Any = None,
    test_targets: Any = None,
    layers: str | Iterable[str] | None = "auto",
    reduce: str | Reduction | Mapping[str, str | Reduction] = "auto",
    options: IndexOptions | None = None,
    probe: bool = False,
    probe_alpha: float | None = None,
    include_inputs: bool = True,
    include_outputs: bool = True,
    batch_size: int | None = None,
    extract_memory_mb: float = EXTRACT_MEMORY_MB,
    tolerance: float = DEFAULT_TOLERANCE,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
    executor: Executor = LOCAL,
    **option_kw: Any,
) -> LayerwiseResult:
    """Return the indices of every chosen layer of ``model`` on ``data`` (and ``test``).

    ``data`` / ``test`` map each model input name to an array (a single-input model may use
    ``inputs``); ``labels`` (classification) or ``targets`` (regression) go with them.
    ``options`` (or the same as keywords: ``indices``, ``orders``, ``gamma``,
    ``normalize``, ``precision``, ``memory_budget_mb``) are those of ``compute_indices``,
    with its defaults; ``probe_model`` ("ridge", the default, or "logistic") is the probe
    that ``probe`` fits per layer (``probe_alpha`` fixes the ridge penalty instead of
    choosing it by leave-one-out); the others are refused. ``extract_memory_mb`` bounds one batch of
    raw activations. ``cancel`` stops the work between batches, layers and blocks, and
    terminates a model run under way. ``executor`` runs the extraction and the k-NN
    searches (``LOCAL``: here; a Ray executor: on its cluster, the same numbers).
    """
    started = time.perf_counter()
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels (classification) or targets (regression)")
    task = "classification" if labels is not None else "regression"
    if test is not None and (test_labels if task == "classification" else test_targets) is None:
        raise ValueError(f"a test set needs its {'labels' if labels is not None else 'targets'}")
    opts = with_options(options, option_kw)
    check_options(LAYER_ANALYSIS, opts, task)
    check_index_options(task, opts.indices, opts.gamma)
    probe_model = check_probe(opts, probe, task)
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0; got {tolerance!r}")
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    info = describe(proto)
    chosen = select_layers(info, layers)
    outputs = []
    if include_outputs:
        by_name = {la.name: la for la in info.layers}
        for t in info.outputs:
            if _is_float(t.dtype):
                outputs.append(by_name.get(t.name) or LayerInfo(
                    name=t.name, node="", op_type="output", dtype=t.dtype, shape=t.shape,
                    elements_per_sample=None, position=10**9, auto=False,
                ))
    chosen_names = {la.name for la in chosen}
    run_layers = chosen + [o for o in outputs if o.name not in chosen_names]
    feeds, n_train = model_feeds(info, data, "data")  # checked once, before the model runs
    test_feeds = model_feeds(info, test, "test")[0] if test is not None else None
    orders_t = as_orders(opts.orders, n_train, DEFAULT_ORDERS)  # before the model runs
    engine = opts.engine_kwargs() | {"orders": orders_t}
    sets = [feeds] if test_feeds is None else [feeds, test_feeds]
    cancel = checker(cancel)
    extracted = executor.extract(
        proto, info, run_layers, sets, reduce=reduce, batch_size=batch_size,
        memory_budget_mb=extract_memory_mb, device=device, progress=progress, cancel=cancel,
    )
    rows: list[tuple[str, LayerData]] = []
    if include_inputs:
        for la in _input_layers(info, feeds):
            x = feeds[la.name]
            rows.append(("input", LayerData(
                la.name, "input", tuple(x.shape[1:]), Reduction("flatten"),
                x.reshape(len(x), -1),
                None if test_feeds is None else test_feeds[la.name].reshape(
                    len(test_feeds[la.name]), -1),
            )))
    output_names = {o.name for o in outputs}
    for d in extracted:
        rows.append(("output" if d.name in output_names and d.name not in chosen_names
                     else "layer", d))

    y = np.asarray(labels if task == "classification" else targets)
    yt = None if test is None else np.asarray(
        test_labels if task == "classification" else test_targets)
    results: list[LayerResult] = []
    warnings: list[str] = []
    for i, (kind, d) in enumerate(rows):
        cancel.check()
        row = LayerResult(
            name=d.name, kind=kind, op_type=d.op_type, shape=[int(s) for s in d.shape],
            reduction=d.reduction.describe(), dims=d.dims, notes=list(d.notes),
        )
        # The activations stay where extraction left them (on the GPU there): the engine
        # takes device arrays; only the probe (scikit-learn) needs them on the host.
        train_x, test_x = d.train, d.test
        try:
            kw: dict[str, Any] = {"labels": y} if task == "classification" else {"targets": y}
            if test_x is not None:
                kw["test_features"] = test_x
                kw["test_labels" if task == "classification" else "test_targets"] = yt
            res = compute_indices(train_x, device=device, cancel=cancel, **engine, **kw,
                                  executor=None if executor is LOCAL else executor)
            full = res.to_dict(per_class=False)
            row.values = {k: v for k, v in full.items()
                          if k not in ("task", "n_features", "n_samples", "options", "warnings",
                                       "classes", "cross")}
            if "cross" in full:
                row.cross = {k: v for k, v in full["cross"].items() if k != "n_samples"}
            row.notes += res.warnings
            if probe:
                train_h = to_host(train_x)
                test_h = None if test_x is None else to_host(test_x)
                row.probe = (ridge_probe(train_h, y, test_h, yt, task, probe_alpha)
                             if probe_alpha is not None and probe_model == "ridge"
                             else fit_probe(probe_model, train_h, y, test_h, yt, task))
        except ValueError as exc:
            row.error = str(exc)
            warnings.append(f"layer {d.name!r} was not analysed: {exc}")
        results.append(row)
        if progress is not None:
            progress("indices", i + 1, len(rows))

    key = "si" if task == "classification" else "smi_linear"
    series = [r.values.get(key) for r in results]
    pos = plateau_position(series, tolerance)
    plateau = None if pos is None else {
        "index": key, "position": pos, "layer": results[pos].name, "value": series[pos],
        "tolerance": tolerance,
    }
    applied: dict[str, Any] = {
        "layers": layers if isinstance(layers, str) or layers is None else list(layers),
        "orders": list(orders_t), "normalize": opts.normalize, "precision": opts.precision,
        "memory_budget_mb": opts.memory_budget_mb, "probe": probe, "batch_size": batch_size,
        "probe_model": probe_model if probe else None,
        "extract_memory_mb": extract_memory_mb,
        **ran_on(extracted, device),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if opts.indices is not None:
        applied["indices"] = list(opts.indices)
    if task == "regression":
        applied["gamma"] = opts.gamma
    model_info = {
        "inputs": [t.to_dict() for t in info.inputs],
        "outputs": [t.to_dict() for t in info.outputs],
        "opsets": info.opsets, "ir_version": info.ir_version,
        "candidate_layers": len(info.layers),
    }
    return LayerwiseResult(model_info, task, results, plateau, applied, warnings)
