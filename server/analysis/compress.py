"""Layer-wise compression: cut a model where a linear probe is as good as the model itself.

The chosen layers are analysed with the probe (:func:`.layerwise.analyze_layers`); the cut
is the earliest layer whose test probe score (accuracy, or R^2) is within ``tolerance`` of
the model's own test score (criterion ``probe``), or the layer where SI (SmI) stops rising
by more than ``tolerance`` (criterion ``si``). The smaller model is the graph up to the cut,
the analysis' reduction, optionally the SI-selected feature subset, and a ridge head fitted
in closed form (one-hot targets for classification, the same as the probe); both models
are then run side by side on the test set (docs/compress.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lazy import lazy_module
from ..cancellation import Cancellation, checker
from ..graph.compress import (
    CompressionError,
    OutputSpec,
    cost_tensors,
    cut_model,
    kept_name,
    node_macs,
    parameters,
    slice_positions,
)
from ..graph.expose import expose
from ..graph.inspect import LayerInfo, ModelInfo, describe
from ..graph.load import load_model, session_bytes
from ..graph.select import select_layers
from ..metrics import compute_indices
from ..metrics.backend import to_host
from ..runtime.extract import extract, model_feeds
from ..runtime.session import make_session
from .data import EXTRACT_MEMORY_MB
from .layerwise import analyze_layers, plateau_position

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

Progress = Callable[[str, int, int], None]
CRITERIA = ("probe", "si")
REDUCTIONS = ("auto", "mean", "flatten")
LATENCY_BATCH = 64
PREFIX_SAMPLES = 256


@dataclass
class Compressed:
    """The smaller model's bytes and the report (:meth:`to_dict`)."""

    model: bytes
    report: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.report)


def check_request(tolerance: float, criterion: str, select_features: int | None,
                  reduce: str) -> None:
    """Raise ValueError naming the first bad compression setting."""
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance)
            and 0.0 <= tolerance <= 1.0):
        raise ValueError(f"tolerance must be a number in [0, 1]; got {tolerance!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if select_features is not None and (isinstance(select_features, bool)
                                        or int(select_features) != select_features
                                        or select_features < 1):
        raise ValueError(f"select_features must be an integer >= 1; got {select_features!r}")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {', '.join(REDUCTIONS)} (a reduction the "
                         f"compressed graph can compute); got {reduce!r}")


def cut_candidates(info: ModelInfo, layers: str | Iterable[str] | None) -> list[LayerInfo]:
    """Return the chosen layers in graph order, each checked to be a possible cut."""
    chosen = sorted(select_layers(info, layers), key=lambda la: la.position)
    for la in chosen:
        if la.shape is None or len(la.shape) < 2:
            shape = None if la.shape is None else list(la.shape)
            raise CompressionError(
                f"layer {la.name!r} has shape {shape}: a cut needs a tensor of known rank with "
                "the batch axis first and at least one feature axis")
    return chosen


def layer_reduction(layer: LayerInfo, reduce: str) -> str:
    """``mean`` (over spatial or sequence axes) or ``flatten`` for ``layer``."""
    rank = len(layer.shape or ())
    if reduce == "auto":
        return "mean" if rank >= 3 else "flatten"
    return reduce


# the model's own outputs -------------------------------------------------------------------
def _run(session: Any, names: list[str], feeds: Mapping[str, np.ndarray], batch: int
         ) -> list[np.ndarray]:
    n = len(next(iter(feeds.values())))
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for s in range(0, n, batch):
        got = session.run(names, {k: v[s:s + batch] for k, v in feeds.items()})
        for p, g in zip(parts, got, strict=True):
            p.append(np.asarray(g))
    return [np.concatenate(p) for p in parts]


def score(task: str, pred: np.ndarray, truth: np.ndarray) -> float:
    """Accuracy of predicted labels, or R^2 (summed over target columns) of predictions."""
    if task == "classification":
        return float(np.mean(pred.reshape(-1) == truth.reshape(-1)))
    t = truth.reshape(len(truth), -1).astype(np.float64)
    p = pred.reshape(len(pred), -1).astype(np.float64)
    ss_tot = float(((t - t.mean(axis=0)) ** 2).sum())
    return 1.0 - float(((t - p) ** 2).sum()) / ss_tot if ss_tot > 0 else 0.0


def _predictions(task: str, specs: Sequence[OutputSpec], outs: Sequence[np.ndarray]
                 ) -> np.ndarray:
    """The model's predictions from its outputs: a labels output, else the arg max of the
    scores; the values for regression."""
    if task == "regression":
        return outs[0]
    for spec, out in zip(specs, outs, strict=True):
        if spec.kind == "labels":
            return out.reshape(-1)
    spec, out = specs[0], outs[0]
    return np.asarray(spec.classes)[np.argmax(out, axis=1)]


def output_specs(proto: onnx.ModelProto, info: ModelInfo, task: str, y: np.ndarray,
                 outs: Mapping[str, np.ndarray]) -> tuple[list[OutputSpec], tuple[int, ...]]:
    """Return how each original output is rebuilt from the head's scores, and the classes
    the head's columns stand for (empty for regression).

    Classification: an integer output is the labels; a float (N, C) output the scores over
    classes 0..C-1 (probabilities when every row of it is non-negative and sums to 1), so the
    labels must lie in 0..C-1. Regression: float outputs of the targets' width.
    """
    specs: list[OutputSpec] = []
    elem = {vi.name: vi.type.tensor_type.elem_type for vi in proto.graph.output}
    if task == "classification":
        labels = np.unique(y)
        width = None
        for t in info.outputs:
            o = outs[t.name]
            if o.dtype.kind == "f" and o.ndim == 2 and o.shape[1] >= 2:
                width = o.shape[1]
        if width is not None:
            if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= width:
                raise CompressionError(
                    f"the labels ({labels.min()}..{labels.max()}) are not the column indices "
                    f"0..{width - 1} of the model's class scores: the compressed model could not "
                    "keep the outputs' meaning")
            classes = tuple(range(width))
        else:
            classes = tuple(int(c) for c in labels)
        for t in info.outputs:
            o = outs[t.name]
            if o.dtype.kind in "iu" and o.ndim in (1, 2) and o[:1].size <= 1:
                specs.append(OutputSpec(t.name, "labels", elem[t.name], o.ndim, classes))
            elif o.dtype.kind == "f" and o.ndim == 2 and o.shape[1] == len(classes):
                probs = bool((o >= 0).all() and np.allclose(o.sum(axis=1), 1.0, atol=1e-4))
                specs.append(OutputSpec(t.name, "probabilities" if probs else "scores",
                                        elem[t.name], 2, classes))
            else:
                raise CompressionError(
                    f"output {t.name!r} (shape {list(o.shape)}, {o.dtype}) is neither labels nor "
                    "class scores: the compressed model could not keep its meaning")
        return specs, classes
    k = int(np.prod(y.shape[1:], dtype=np.int64)) if y.ndim > 1 else 1
    for t in info.outputs:
        o = outs[t.name]
        if o.dtype.kind != "f" or int(np.prod(o.shape[1:], dtype=np.int64)) != k:
            raise CompressionError(
                f"output {t.name!r} (shape {list(o.shape)}) does not predict the {k} target "
                "value(s) per sample: the compressed model could not keep its meaning")
        specs.append(OutputSpec(t.name, "values", elem[t.name], o.ndim))
    return specs, ()


# the head --------------------------------------------------------------------------------
def ridge_head(x: np.ndarray, target: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Return (W, b) with ``x @ W + b`` the closed-form ridge fit on standardised features.

    The same fit as the layer probe: x standardised by its training mean and std (+1e-10),
    targets centred, ``w = (Xs^T Xs + alpha I)^-1 Xs^T T`` (or its dual, whichever is
    smaller); the standardisation is folded into ``W = w / std``, ``b = t_mean - (mean /
    std) @ w``.
    """
    x64 = x.astype(np.float64)
    mean, std = x64.mean(axis=0), x64.std(axis=0) + 1e-10
    xs = (x64 - mean) / std
    t = target.reshape(len(target), -1).astype(np.float64)
    t_mean = t.mean(axis=0)
    tc = t - t_mean
    m, d = xs.shape
    if d <= m:
        w = np.linalg.solve(xs.T @ xs + alpha * np.eye(d), xs.T @ tc)
    else:
        w = xs.T @ np.linalg.solve(xs @ xs.T + alpha * np.eye(m), tc)
    return w / std[:, None], t_mean - (mean / std) @ w


def _targets(task: str, y: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    if task == "classification":
        return (y.reshape(-1)[:, None] == np.asarray(classes)[None, :]).astype(np.float64)
    return y.reshape(len(y), -1).astype(np.float64)


# side by side ----------------------------------------------------------------------------
def _latency_ms(session: Any, names: list[str], feeds: Mapping[str, np.ndarray], batch: int,
                repeats: int) -> float:
    """Median milliseconds of one batch over ``repeats`` passes (after one warm-up run)."""
    first = {k: v[:batch] for k, v in feeds.items()}
    session.run(names, first)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        session.run(names, first)
        times.append(time.perf_counter() - t0)
    return 1000.0 * float(np.median(times))


def measured_macs(proto: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> list[int]:
    """MACs per sample of each node, from the shapes of one sample run through the model
    (shape inference leaves dims unknown behind shape-computing padding, for one)."""
    names = cost_tensors(proto)
    session = make_session(session_bytes(expose(proto, names)), device="cpu")
    got = session.run(names, {k: v[:1] for k, v in feeds.items()})
    return node_macs(proto, {n: list(np.shape(a)) for n, a in zip(names, got, strict=True)})


def compare(original: onnx.ModelProto, small: onnx.ModelProto, cut: str, task: str,
            feeds: Mapping[str, np.ndarray], truth: np.ndarray, specs: Sequence[OutputSpec],
            *, batch: int = LATENCY_BATCH, repeats: int = 20, threads: int | None = 1
            ) -> dict[str, Any]:
    """Run both models with onnxruntime in this process on the test set: scores, parameters,
    file sizes, latency per batch, and the max abs difference of the cut tensor."""
    names = [o.name for o in original.graph.output]
    out: dict[str, Any] = {}
    for key, proto in (("original", original), ("compressed", small)):
        raw = session_bytes(proto)
        session = make_session(raw, device="cpu", threads=threads)
        outs = _run(session, names, feeds, batch)
        out[key] = {
            "score": score(task, _predictions(task, specs, outs), truth),
            "parameters": parameters(proto), "size_bytes": len(proto.SerializeToString()),
            "macs": int(sum(measured_macs(proto, feeds))),
            "latency_ms": _latency_ms(session, names, feeds, batch, repeats),
        }
    few = {k: v[:PREFIX_SAMPLES] for k, v in feeds.items()}
    cuts = []
    for proto, tensor in ((original, cut), (small, kept_name(cut, names))):
        session = make_session(session_bytes(expose(proto, [tensor])), device="cpu",
                               threads=threads)
        cuts.append(_run(session, [tensor], few, batch)[0].astype(np.float64))
    out["prefix_max_abs_diff"] = float(np.max(np.abs(cuts[0] - cuts[1]))) if cuts[0].size else 0.0
    o, c = out["original"], out["compressed"]
    out["ratios"] = {k: (c[k] / o[k] if o[k] else None)
                     for k in ("parameters", "size_bytes", "macs", "latency_ms")}
    out["latency_batch"] = batch
    return out


# the pipeline ----------------------------------------------------------------------------
def compress_model(
    model: str | os.PathLike[str] | bytes | onnx.ModelProto,
    data: Mapping[str, Any],
    labels: Any = None,
    targets: Any = None,
    *,
    test: Mapping[str, Any],
    test_labels: Any = None,
    test_targets: Any = None,
    layers: str | Iterable[str] | None = "auto",
    tolerance: float = 0.01,
    criterion: str = "probe",
    select_features: int | None = None,
    reduce: str = "auto",
    alpha: float = 1.0,
    batch_size: int | None = None,
    extract_memory_mb: float = EXTRACT_MEMORY_MB,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
) -> Compressed:
    """Return the compressed model and its report (module docstring; docs/compress.md).

    ``data`` / ``test`` map input names to arrays, with ``labels`` (classification) or
    ``targets`` (regression). The report holds ``candidates`` (every layer: SI or SmI,
    probe scores, kept parameters, MACs per sample), ``cut``, ``reference`` (the model's own
    test score) and ``comparison`` (both models measured side by side).
    """
    check_request(tolerance, criterion, select_features, reduce)
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels (classification) or targets (regression)")
    task = "classification" if labels is not None else "regression"
    y = np.asarray(labels if task == "classification" else targets)
    yt_given = test_labels if task == "classification" else test_targets
    if yt_given is None:
        raise ValueError(f"compression needs a test set with its "
                         f"{'labels' if task == 'classification' else 'targets'}")
    yt = np.asarray(yt_given)
    cancel = checker(cancel)
    proto = model if isinstance(model, onnx.ModelProto) else load_model(model)
    info = describe(proto)
    chosen = cut_candidates(info, layers)
    reductions = {la.name: layer_reduction(la, reduce) for la in chosen}
    test_feeds = model_feeds(info, test, "test")[0]

    original = make_session(session_bytes(proto), device="cpu")
    out_names = [t.name for t in info.outputs]
    own = dict(zip(out_names, _run(original, out_names, test_feeds, LATENCY_BATCH),
                   strict=True))
    specs, classes = output_specs(proto, info, task, y, own)
    reference = score(task, _predictions(task, specs, [own[n] for n in out_names]), yt)
    del original, own

    kw: dict[str, Any] = ({"labels": y, "test_labels": yt} if task == "classification"
                          else {"targets": y, "test_targets": yt})
    analysis = analyze_layers(
        proto, data, test=test, layers=[la.name for la in chosen], reduce=reductions,
        probe=True, probe_alpha=alpha, include_inputs=False, include_outputs=False,
        batch_size=batch_size, extract_memory_mb=extract_memory_mb, tolerance=tolerance,
        device=device, progress=progress, cancel=cancel, **kw)
    key = "si" if task == "classification" else "smi_linear"
    metric = "accuracy" if task == "classification" else "r2"
    costs = measured_macs(proto, test_feeds)
    head_width = len(classes) if task == "classification" else (
        int(np.prod(y.shape[1:], dtype=np.int64)) if y.ndim > 1 else 1)
    rows: list[dict[str, Any]] = []
    for la, row in zip(chosen, analysis.layers, strict=True):
        positions = slice_positions(proto, la.name)
        nodes = [proto.graph.node[i] for i in positions]
        d = min(row.dims, select_features or row.dims)
        rows.append({
            "layer": la.name, "op_type": la.op_type, "position": la.position,
            "reduction": reductions[la.name], "dims": row.dims,
            key: row.values.get(key),
            "probe_train": None if row.probe is None else row.probe.get(f"train_{metric}"),
            "probe_test": None if row.probe is None else row.probe.get(f"test_{metric}"),
            "kept_parameters": parameters(proto, nodes) + d * head_width + head_width,
            "macs": int(sum(costs[i] for i in positions)) + d * head_width,
            "error": row.error,
        })
    for r in rows:
        r["within_tolerance"] = (r["probe_test"] is not None
                                 and r["probe_test"] >= reference - tolerance)
    pick = _pick(rows, criterion, key, reference, tolerance, metric)
    cut = chosen[pick]
    cancel.check()

    got = extract(proto, info, [cut], [data], reduce={cut.name: reductions[cut.name]},
                  batch_size=batch_size, memory_budget_mb=extract_memory_mb, device=device,
                  cancel=cancel)[0]
    train_x = to_host(got.train)
    selected = None
    if select_features is not None and select_features < train_x.shape[1]:
        target_kw: dict[str, Any] = {"labels": y} if task == "classification" else {
            "targets": y}
        ranked = compute_indices(train_x, indices=["feature_ranking"],
                                 max_features=int(select_features), device=device,
                                 cancel=cancel, **target_kw)
        assert ranked.feature_ranking is not None
        selected = [int(i) for i in ranked.feature_ranking.order[:select_features]]
        train_x = train_x[:, selected]
    w, b = ridge_head(train_x, _targets(task, y, classes), alpha)
    small = cut_model(proto, cut.name, reductions[cut.name], w, b, specs,
                      channels_first=cut.channels_first, select=selected)
    cancel.check()
    comparison = compare(proto, small, cut.name, task, test_feeds, yt, specs)
    report = {
        "task": task, "criterion": criterion, "tolerance": tolerance, "index": key,
        "metric": metric, "reference": {"score": reference, "source": "the model's outputs"},
        "candidates": rows,
        "cut": {"layer": cut.name, "position": pick, "reduction": reductions[cut.name],
                "tensor_in_compressed": kept_name(cut.name, out_names),
                "features": int(train_x.shape[1]), "selected_features": selected,
                key: rows[pick][key], "probe_test": rows[pick]["probe_test"]},
        "head": {"kind": "ridge on one-hot labels" if task == "classification" else "ridge",
                 "alpha": alpha, "classes": list(classes),
                 "outputs": [{"name": s.name, "kind": s.kind} for s in specs]},
        "comparison": comparison, "warnings": list(analysis.warnings),
        "layers": [la.name for la in chosen],
    }
    return Compressed(small.SerializeToString(), report)


def _pick(rows: list[dict[str, Any]], criterion: str, key: str, reference: float,
          tolerance: float, metric: str) -> int:
    """Position of the cut among ``rows`` (CompressionError when no layer qualifies)."""
    if criterion == "si":
        pos = plateau_position([r[key] for r in rows], tolerance)
        if pos is None:
            raise CompressionError(f"no layer has a finite {key}: nothing to cut at")
        return pos
    for i, r in enumerate(rows):
        if r["within_tolerance"]:
            return i
    best = max((r for r in rows if r["probe_test"] is not None),
               key=lambda r: r["probe_test"], default=None)
    found = "no layer could be probed" if best is None else (
        f"the best is {best['layer']!r} at {best['probe_test']:.4f}")
    raise CompressionError(
        f"no layer's test probe {metric} is within tolerance {tolerance} of the model's own "
        f"{reference:.4f} ({found}); raise the tolerance or choose later layers")
