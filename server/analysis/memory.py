"""Memory admission: what a request will take, estimated before any work starts, against
the server's budget.

An estimate follows the allocations of the code that will run, step by step: each step
keeps some arrays until the request ends (the neighbour table, per-sample values) and
works in others that it frees (k-NN blocks, sort keys). Its peak is the largest sum of
what is kept so far and one step's working memory. Everything comes from the request's
shapes and options (and the model's shape information), never from running it.

:class:`MemoryBudget` is the server's side: a request whose estimate exceeds the budget is
refused (RESOURCE_EXHAUSTED naming the largest parts, the option that bounds them and
``--max-request-memory-mb``); one that fits holds its estimate of the budget while it
runs, so that requests running together stay within it too.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...protos.options import (
    DEFAULT_CLASSIFICATION,
    DEFAULT_ORDERS,
    DEFAULT_REGRESSION,
    ORDERED_SI,
    ORDERED_SMI,
    IndexOptions,
)
from ..cancellation import Cancellation
from ..graph.head import feature_layer
from ..graph.inspect import LayerInfo, ModelInfo
from ..graph.load import external_bytes
from ..metrics.knn import (
    BYTES_PER_CANDIDATE,
    SELFJOIN_BYTES_PER_ENTRY,
    _choose_search,
    search_plan,
    selfjoin_block,
    selfjoin_fits,
)
from ..runtime.extract import auto_batch_size, batch_bytes_per_sample
from ..runtime.reduce import DEFAULT_PROJECTION, parse_reduction, reduced_width
from .admission import LoadedModel
from .data import Labelled
from .requests import CertifyRequest

MIB = 1 << 20
DEFAULT_SHARE = 0.5  # of the machine's (or the container's) memory
# Python objects per result entry ({label: value} of a per-class dict, its JSON-able copy
# and its protobuf map entry).
ENTRY_BYTES = 200  # measured: ~170
# nearest_1d and the scorer on a block of columns: about 25 float64 (m, c) arrays.
NEAREST_1D_BYTES = 200
# Forward selection beyond its m x m distances: pools, candidate columns, their nearest
# neighbours and scores, each sized by a share of the budget (measured: up to 0.97 budgets).
RANKING_BUDGETS = 1.1
RANKING_ROW_BYTES = 400  # per point, where the budget's shares floor at one row or column
# SmI terms of the ordered families: four (m, K) float64 results and their temporaries.
SMI_TERM_BYTES = 56
# A model's bytes, parsed, shape-inferred (serialised and parsed twice on the way), rewritten
# and serialised for the runtime: about six copies at once (measured: 5 for inference).
MODEL_COPIES = 6
RUNTIME_BYTES = 32 * MIB  # an onnxruntime session beyond its weights (measured: ~30)
# Sorted 1-D target neighbours: 3r + 1 candidates per point, a dozen 8-byte arrays.
TARGET_CANDIDATE_BYTES = 80


class MemoryLimitError(Exception):
    """A request whose estimated memory exceeds the server's budget (RESOURCE_EXHAUSTED)."""


class MemoryBusy(MemoryLimitError):
    """A request that fits the budget, but not beside the requests running now."""


@dataclass(frozen=True)
class Part:
    """``nbytes`` of one kind of array, with the sizes behind it and what bounds it."""

    name: str
    nbytes: int
    detail: str = ""
    hint: str = ""


def _mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.0f} MiB" if nbytes >= MIB else f"{nbytes / MIB:.2f} MiB"


@dataclass
class Estimate:
    """The memory of one request as a sequence of steps (see the module docstring)."""

    what: str
    steps: list[tuple[list[Part], list[Part]]] = field(default_factory=list)

    def step(self, kept: Iterable[Part] = (), working: Iterable[Part] = ()) -> None:
        self.steps.append(([p for p in kept if p.nbytes > 0],
                           [p for p in working if p.nbytes > 0]))

    def then(self, other: Estimate) -> None:
        """Run ``other`` next; what it keeps is freed when it ends (a model of a ranking,
        a layer of an analysis)."""
        self.step(working=other.peak_parts())

    def peak_parts(self) -> list[Part]:
        """The parts held at the peak."""
        kept: list[Part] = []
        best: list[Part] = []
        for keep, work in self.steps:
            kept = kept + keep
            now = kept + work
            if sum(p.nbytes for p in now) > sum(p.nbytes for p in best):
                best = now
        return best

    @property
    def total(self) -> int:
        return sum(p.nbytes for p in self.peak_parts())

    def describe(self, parts: int = 3) -> str:
        """The largest parts at the peak, with their sizes and what bounds them."""
        merged: dict[str, Part] = {}
        for p in self.peak_parts():
            q = merged.get(p.name)
            merged[p.name] = p if q is None else Part(p.name, q.nbytes + p.nbytes, q.detail,
                                                      q.hint)
        top = sorted(merged.values(), key=lambda p: -p.nbytes)[:parts]
        return "; ".join(
            f"{p.name} ~{_mib(p.nbytes)}" + (f" ({p.detail})" if p.detail else "")
            + (f", {p.hint}" if p.hint else "") for p in top)


# ---------------------------------------------------------------------------------------
# Index computations
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexShapes:
    """What the engine will be given: m points of d features (``itemsize`` bytes each as
    sent), labels (``classes`` distinct) or ``target_cols`` targets, and a test set."""

    task: str
    m: int
    d: int
    itemsize: int = 4
    target_cols: int = 1
    classes: int = 2
    n_test: int = 0
    test_classes: int = 2


def _names(task: str, opts: IndexOptions) -> set[str]:
    if opts.indices is not None:
        return set(opts.indices)
    return set(DEFAULT_CLASSIFICATION if task == "classification" else DEFAULT_REGRESSION)


def _orders(opts: IndexOptions, m: int) -> tuple[int, ...]:
    if opts.orders is None:
        return tuple(r for r in DEFAULT_ORDERS if r < m) or (1,)
    return tuple(sorted(set(opts.orders)))


def knn_parts(m: int, d: int, nq: int, k: int, budget: int, *, self_mode: bool,
              search: str, what: str = "", return_distance: bool = False,
              hint: str = "") -> tuple[list[Part], list[Part]]:
    """(kept, working) of one exact k-NN search (``knn``): the (nq, k) neighbour table,
    and float32 copies of the points, their casting chunks and one block of candidates."""
    k = max(1, min(k, m - 1 if self_mode else m))
    width = 16 if return_distance else 8
    kept = [Part(f"{what} neighbour table".strip(), width * nq * k,
                 f"m={nq} x k={k} x {width} B", hint)]
    copies = 4 * d * (m + (0 if self_mode else nq)) + 8 * (m + nq)
    chunk = max(1, budget // (16 * d))
    cast = 20 * d * min(max(m, nq), chunk)
    want, rows = search_plan(m, d, nq, k, self_mode, budget, search)
    per_row = BYTES_PER_CANDIDATE * want + 8 * d + (20 * m if search == "blas" else 0)
    # the block's arrays, and exact distances of its re-ranked pairs (24 B per feature:
    # gathered, widened to float64) or of its fallback rows, each at most half the budget
    block = rows * per_row + min(rows * want * 24 * d, budget // 2)
    working = [Part(f"{what} k-NN float32 copies".strip(), copies, f"{m + nq} x {d} features"),
               Part(f"{what} k-NN blocks".strip(), max(cast, block),
                    f"{rows} rows x {want} candidates", "set by memory_budget_mb")]
    if self_mode and selfjoin_fits(m, want, budget):  # the self-join: every row's
        # candidates, one block pair's product
        side = selfjoin_block(np, m, d, budget)
        working.append(Part(f"{what} self-join".strip(), 12 * m * want + 8 * m
                            + SELFJOIN_BYTES_PER_ENTRY * side * side,
                            f"{m} x {want} candidates, {side} x {side} blocks",
                            "set by memory_budget_mb"))
    return kept, working


def indices_estimate(shapes: IndexShapes, opts: IndexOptions, *, budget_mb: float | None = None,
                     what: str = "the indices", search: str | None = None,
                     per_sample: bool | None = None) -> Estimate:
    """The memory of ``compute_indices`` on these shapes with these options, beyond the
    inputs as they arrive (add the payload yourself). ``budget_mb`` overrides the options'
    memory_budget_mb (paths that do not pass it on)."""
    s = shapes
    m, d, n = max(s.m, 2), max(s.d, 1), max(s.n_test, 0)
    est = Estimate(what)
    names = _names(s.task, opts)
    orders = _orders(opts, m)
    big_k, n_orders = max(orders), len(orders)
    budget = max(int((opts.memory_budget_mb if budget_mb is None else budget_mb) * MIB), MIB)
    search = search or _choose_search("auto", np)
    per_sample = opts.per_sample if per_sample is None else per_sample
    cls = s.task == "classification"

    # validation: NaN checks (two bool arrays), a float64 copy of other dtypes, labels or
    # targets as int64 / float64
    est.step(kept=[Part("features as float64", 8 * d * (m + n) if s.itemsize not in (4, 8)
                        else 0, f"{m + n} x {d} features"),
                   Part("labels and bookkeeping", 8 * (m + n) * (4 + (0 if cls else
                                                                      s.target_cols)))],
             working=[Part("finiteness check", 2 * d * max(m, n))])
    if opts.normalize:
        est.step(kept=[Part("standardised features", 8 * d * (m + n), f"{m + n} x {d} x 8 B",
                            "or leave normalize off")],
                 working=[Part("standardising", 8 * d * max(m, n))])
    ordered = names & set(ORDERED_SI if cls else ORDERED_SMI)
    families = len(ordered)
    knn_names = names & ({"si", *ORDERED_SI, "margin_order"} if cls
                         else {"smi_linear", "smi_exp", *ORDERED_SMI})
    entries = 0  # per-class result entries

    if not cls:
        est.step(*_target_stats_parts(m, m, big_k if ordered else 0, s.target_cols, budget))
    if knn_names:  # the engine's choice of k
        if cls:
            k = big_k if knn_names - {"margin_order"} else 1
            if "margin_order" in names:
                k = max(k, min(opts.margin_cap, m - 1))
        else:
            k = big_k if ordered else 1
        hint = f"lower the orders (the largest is {big_k})" + (
            f" or margin_cap ({opts.margin_cap})" if "margin_order" in names else "")
        kept, working = knn_parts(m, d, m, k, budget, self_mode=True, search=search,
                                  hint=hint)
        est.step(kept=kept, working=working)
        if cls:  # neighbour labels, same-label flags and their running counts
            work = 25 * m * k + 2 * m * min(opts.margin_cap, m)
        else:  # the targets of the neighbours, their distances, the SmI terms
            work = 16 * m * k * s.target_cols + 8 * m * k + (
                SMI_TERM_BYTES * m * k if ordered else 0)
        est.step(kept=[Part("per-sample values", 8 * m * (families * n_orders + 2),
                            f"{families} ordered families x {n_orders} orders x {m} points",
                            "ask for fewer orders")],
                 working=[Part("neighbour labels" if cls else "neighbour targets", work,
                               f"{m} points x {k} neighbours", hint)])
        if cls:
            entries += s.classes * (2 + families * n_orders)
    if cls and "center_si" in names:
        kept, working = knn_parts(s.classes, d, m, 1, budget, self_mode=False, search=search,
                                  what="center_si")
        est.step(kept=[Part("class means", 8 * s.classes * d, f"{s.classes} x {d}"),
                       Part("per-sample values", 8 * m)], working=[*working, *kept])
        entries += s.classes
    single = {"single_feature_si"} if cls else {"single_feature_smi_linear",
                                                 "single_feature_smi_exp"}
    if names & single:
        cols = max(1, min(d, budget // (8 * 24 * m)))
        est.step(working=[Part("single-feature scan", NEAREST_1D_BYTES * m * cols,
                               f"{m} points x {cols} features", "set by memory_budget_mb")])
    if "feature_ranking" in names:
        full = 8 * m * m if 8 * m * m <= budget // 2 else 0
        est.step(working=[Part("feature ranking", full + int(RANKING_BUDGETS * budget)
                               + RANKING_ROW_BYTES * m, f"{m} points x {d} features",
                               "set by memory_budget_mb")])
    if n and cls:
        if names & {"si", *ORDERED_SI}:
            kept, working = knn_parts(m, d, n, big_k, budget, self_mode=False, search=search,
                                      what="test", hint="lower the orders")
            est.step(kept=kept, working=working)
            est.step(kept=[Part("test per-sample values", 8 * n * (families * n_orders + 1))],
                     working=[Part("test neighbour labels", 25 * n * big_k)])
            entries += s.test_classes * (1 + families * n_orders)
        if "center_si" in names:
            kept, working = knn_parts(s.classes, d, n, 1, budget, self_mode=False,
                                      search=search, what="test center_si")
            est.step(kept=[Part("test per-sample values", 8 * n)], working=working + kept)
            entries += s.test_classes
    elif n and names & {"smi_linear", "smi_exp"}:
        kept, working = knn_parts(m, d, n, 1, budget, self_mode=False, search=search,
                                  what="test")
        est.step(kept=kept, working=working)
        est.step(*_target_stats_parts(n, m, 0, s.target_cols, budget, "test targets"))
        est.step(kept=[Part("test per-sample values", 16 * n)],
                 working=[Part("test neighbour targets", 24 * n * s.target_cols)])
    # The result: per-class dicts (and their JSON-able and protobuf copies), per-sample
    # values as tensors (bytes, then the message) when asked for.
    per_point = (m + n) * 8 * (families * n_orders + 3) if per_sample else 0
    est.step(working=[Part("result", ENTRY_BYTES * entries + 2 * per_point,
                           f"{entries} per-class values" + (
                               f", {per_point // MIB} MiB of per-sample values"
                               if per_sample else ""),
                           "ask for fewer orders" + (" or leave per_sample off"
                                                     if per_sample else ""))])
    return est


def _target_stats_parts(n: int, m: int, r: int, cols: int, budget: int,
                        what: str = "target statistics") -> tuple[list[Part], list[Part]]:
    """(kept, working) of ``target_stats``: sorted 1-D targets (3r + 1 candidates per
    point), or row blocks of exact distances for several columns."""
    kept = [Part(what, 24 * n + 16 * n * r, f"{n} points x {r} target neighbours",
                 "lower the orders")]
    if cols == 1 and m > 1:
        work = 160 * (m + n) + TARGET_CANDIDATE_BYTES * n * (3 * r + 1)
        detail = f"{n} points x {3 * r + 1} candidates"
    else:
        rows = max(1, min(n, budget // (8 * m * (cols + 4))))
        work = rows * m * (8 * cols + 40)
        detail = f"{rows} rows x {m} targets"
    hint = "lower the orders" if cols == 1 else "set by memory_budget_mb"
    return kept, [Part(f"{what} (working)", work, detail, hint)]


# ---------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------


def spec_bytes(spec: Mapping[str, Any]) -> int:
    """Bytes of a tensor spec ``{name, dtype, shape}`` (exact integers: no overflow)."""
    try:
        dtype = np.dtype(spec["dtype"])
    except TypeError:
        raise ValueError(f"tensor {spec['name']!r}: unknown dtype {spec['dtype']!r}") from None
    if dtype.kind not in "biuf":
        raise ValueError(f"tensor {spec['name']!r}: dtype {spec['dtype']!r} is not a number "
                         "type (bool, int, uint, float)")
    item = dtype.itemsize
    shape = [int(v) for v in spec["shape"]]
    if any(v < 0 for v in shape):
        raise ValueError(f"tensor {spec['name']!r}: negative dimension in shape {shape}")
    return math.prod(shape) * item


def _rows_and_width(shape: Sequence[int]) -> tuple[int, int]:
    shape = [int(v) for v in shape]
    if not shape:
        return 1, 1
    return shape[0], math.prod(shape[1:]) if len(shape) > 1 else 1


def compute_indices_estimate(specs: Sequence[Mapping[str, Any]], opts: IndexOptions,
                             stored: bool = False) -> UploadEstimate:
    """ComputeIndices: the payload, written once into one buffer, and the engine on it.
    ``stored``: the tensors are a stored dataset's, mapped from its file (page cache the
    system reclaims, not memory of the call), so no payload is counted.

    Before the labels arrive their classes are unknown: the estimate takes two, and
    :func:`with_classes` refines it once they are decoded."""
    by_name = {s["name"]: s for s in specs}
    payload = 0 if stored else sum(spec_bytes(s) for s in specs)
    m, d = _rows_and_width(by_name["features"]["shape"]) if "features" in by_name else (2, 1)
    n = _rows_and_width(by_name["test_features"]["shape"])[0] \
        if "test_features" in by_name else 0
    cols = _rows_and_width(by_name["targets"]["shape"])[1] if "targets" in by_name else 1
    task = "regression" if "targets" in by_name else "classification"
    item = np.dtype(by_name["features"]["dtype"]).itemsize if "features" in by_name else 4
    shapes = IndexShapes(task, m, d, item, cols, 2, n, 2)
    return _with_payload(shapes, opts, payload)


@dataclass
class UploadEstimate(Estimate):
    """An estimate of ComputeIndices, with the shapes and payload it was made from."""

    shapes: IndexShapes = IndexShapes("classification", 2, 1)
    payload: int = 0


def _with_payload(shapes: IndexShapes, opts: IndexOptions, payload: int) -> UploadEstimate:
    est = UploadEstimate("ComputeIndices", shapes=shapes, payload=payload)
    est.step(kept=[Part("the uploaded tensors", payload, "decoded in place",
                        "send fewer points or features")])
    for keep, work in indices_estimate(shapes, opts).steps:
        est.step(keep, work)
    return est


def with_classes(est: UploadEstimate, opts: IndexOptions, arrays: Mapping[str, np.ndarray]
                 ) -> UploadEstimate:
    """The ComputeIndices estimate with the number of classes of the decoded labels."""
    shapes = est.shapes
    if shapes.task != "classification" or "labels" not in arrays:
        return est
    classes = _count_classes(arrays["labels"])
    test = _count_classes(arrays["test_labels"]) if "test_labels" in arrays else 2
    if classes <= 2 and test <= 2:
        return est
    shapes = IndexShapes(shapes.task, shapes.m, shapes.d, shapes.itemsize, shapes.target_cols,
                         classes, shapes.n_test, test)
    return _with_payload(shapes, opts, est.payload)


def _count_classes(labels: np.ndarray) -> int:
    y = np.asarray(labels).reshape(-1)
    if y.dtype.kind not in "iub" or not y.size:
        return 2  # the engine refuses these labels
    return int(len(np.unique(y)))


def layer_widths(info: ModelInfo, layers: Sequence[LayerInfo], reduce: Any, total: int,
                 budget: int) -> list[tuple[LayerInfo, int | None, int | None]]:
    """(layer, elements per sample, reduced width) of each layer, None where the model's
    shape information does not say (as ``extract`` chooses them)."""
    out = []
    acc_budget = budget // 2 // max(1, len(layers))
    for la in layers:
        red = parse_reduction(reduce.get(la.name, "auto") if isinstance(reduce, Mapping)
                              else reduce)
        elems = la.elements_per_sample
        shape = la.shape
        known = shape is not None and all(isinstance(v, int) and v > 0 for v in shape[1:])
        width: int | None
        if red.kind == "project":
            width = red.width or DEFAULT_PROJECTION
            if elems is not None:
                width = min(width, elems)  # extract keeps a narrower layer as it is
        elif red.kind == "auto":
            if elems is not None and total * elems * 4 <= acc_budget:
                width = elems
            else:
                width = int(max(1, min(DEFAULT_PROJECTION, acc_budget // (4 * max(total, 1)))))
                if elems is not None:
                    width = min(width, elems)
        elif known and shape is not None:
            width = reduced_width(tuple(int(v) if isinstance(v, int) else 1 for v in shape),
                                  red, la.channels_first)
        else:
            width = None
        out.append((la, elems, width))
    return out


def extraction_estimate(est: Estimate, info: ModelInfo, layers: Sequence[LayerInfo],
                        sets: Sequence[Mapping[str, Any]], *, reduce: Any, batch_size: int | None,
                        budget_mb: float, model_bytes: int, external_bytes: int = 0,
                        ) -> list[tuple[LayerInfo, int | None]]:
    """Add the steps of ``extract`` to ``est``: the model (parsed, rewritten, serialised,
    in the runtime), one batch of activations of the exposed layers and of the largest
    layer in the model, and each layer's accumulator; return each layer's reduced width."""
    budget = max(int(budget_mb * MIB), MIB)
    total = sum(_count(s) for s in sets)
    widths = layer_widths(info, layers, reduce, total, budget)
    per_sample = [4 * e for _, e, _ in widths if e is not None]
    biggest = max((4 * la.elements_per_sample for la in info.layers
                   if la.elements_per_sample is not None), default=0)
    fixed = next((int(t.shape[0]) for t in info.inputs
                  if t.shape and isinstance(t.shape[0], int) and t.shape[0] > 0), None)
    batch = batch_size or auto_batch_size(budget, per_sample, max(biggest, *per_sample, 0))
    if fixed:
        batch = fixed
    casts = 0  # model_feeds casts an input of another dtype (float64 -> float32, ...)
    for s in sets:
        for t in info.inputs:
            arr = s.get(t.name, s.get("inputs") if len(info.inputs) == 1 else None)
            try:
                want = np.dtype(t.dtype)
            except TypeError:
                continue
            if arr is not None and np.dtype(arr.dtype) != want:
                casts += math.prod(arr.shape) * want.itemsize
    est.step(kept=[Part("the model", MODEL_COPIES * model_bytes + RUNTIME_BYTES,
                        f"{model_bytes} bytes, {MODEL_COPIES} copies, and the runtime"),
                   # weights left in a model set's files: read once by onnxruntime
                   Part("the model's weights in its files", external_bytes),
                   Part("inputs cast to the model's dtypes", casts)])
    accs = [(la, w) for la, _, w in widths]
    est.step(kept=[Part(f"activations of {la.name!r}", 4 * total * w,
                        f"{total} samples x {w} values", "reduce it (mean, project:N)")
                   for la, w in accs if w is not None],
             working=[Part("one batch of activations",
                           batch * batch_bytes_per_sample(per_sample, biggest),
                           f"batch of {batch}", "lower batch_size")])
    return accs


def _count(s: Mapping[str, Any]) -> int:
    for v in s.values():
        shape = getattr(v, "shape", None)
        if shape:
            return int(shape[0])
    return 0


def _classes(y: Any) -> int:
    try:
        return _count_classes(np.asarray(y))
    except (TypeError, ValueError):
        return 2


def _run_layers(info: ModelInfo, chosen: Sequence[LayerInfo]) -> list[LayerInfo]:
    """The chosen layers and the model's float outputs, as ``analyze_layers`` runs them."""
    names = {la.name for la in chosen}
    by_name = {la.name: la for la in info.layers}
    outputs = [by_name.get(t.name) or LayerInfo(t.name, "", "output", t.dtype, t.shape, None,
                                                10**9, False)
               for t in info.outputs if t.name not in names and _is_float(t.dtype)]
    return [*chosen, *outputs]


def _is_float(dtype: str) -> bool:
    try:
        return np.dtype(dtype).kind == "f"
    except TypeError:
        return False


def layer_analysis_estimate(info: ModelInfo, chosen: Sequence[LayerInfo],
                            train: Labelled, test: Labelled | None, *,
                            reduce: Any, batch_size: int | None, probe: bool,
                            opts: IndexOptions, model_bytes: int,
                            extract_mb: float = 1024.0, weights_bytes: int = 0) -> Estimate:
    """A layer-wise analysis: extraction of the chosen layers and the float outputs, then
    the indices of each row in turn (the model's float inputs too), with the engine's
    working memory (``memory_budget_mb``) as ``analyze_layers`` runs them."""
    est = Estimate("the layer analysis")
    inputs = [train.inputs] if test is None else [train.inputs, test.inputs]
    widths = extraction_estimate(est, info, _run_layers(info, chosen), inputs, reduce=reduce,
                                 batch_size=batch_size, budget_mb=extract_mb,
                                 model_bytes=model_bytes, external_bytes=weights_bytes)
    m = len(train.y)
    n = len(test.y) if test is not None else 0
    cols = 1 if train.y.ndim < 2 else int(train.y.shape[1])
    classes = _classes(train.y) if train.task == "classification" else 2
    rows = [w for _, w in widths] + [_rows_and_width(np.shape(v))[1]
                                     for v in train.inputs.values()]
    for w in rows:
        if w is None:
            continue
        shapes = IndexShapes(train.task, m, w, 4, cols, classes, n, classes)
        est.then(indices_estimate(shapes, opts, budget_mb=opts.memory_budget_mb,
                                  what="a layer's indices",
                                  per_sample=False))
        if probe:
            small = min(m, w)
            est.step(working=[Part("ridge probe", 32 * m * w + 24 * small * small,
                                   f"{m} x {w} features", "leave probe off")])
    return est


def ranking_estimate(models: Sequence[LoadedModel], layers: Mapping[str, str],
                     names: Sequence[str], data: Labelled, *, reduce: Any,
                     batch_size: int | None, max_features: int | None, patience: int | None,
                     order: int, baselines: bool, extract_mb: float = 1024.0,
                     budget_mb: float = 256.0) -> Estimate:
    """A ranking: for each model in turn, extraction of its chosen layer (the head rule
    or ``layers[name]``), the indices with forward selection, and the baselines."""
    est = Estimate("the ranking")
    inputs, m, task = data.inputs, len(data.y), data.task
    classes = _classes(data.y) if task == "classification" else 2
    indices = (("si", "soft_order_si", "center_si", "feature_ranking")
               if task == "classification"
               else ("smi_linear", "soft_order_smi_linear", "feature_ranking"))
    opts = IndexOptions(indices=indices, orders=(min(order, max(m - 1, 1)),),
                        max_features=max_features, patience=patience)
    for model, name in zip(models, names, strict=True):
        layer, _ = feature_layer(model.proto, model.info, layers.get(name))
        one = Estimate(f"model {name}")
        widths = extraction_estimate(one, model.info, [layer], [inputs],
                                     reduce={layer.name: reduce}, batch_size=batch_size,
                                     budget_mb=extract_mb, model_bytes=model.proto.ByteSize(),
                                 external_bytes=external_bytes(model.proto))
        w = widths[0][1] or DEFAULT_PROJECTION
        one.then(indices_estimate(IndexShapes(task, m, w, 4, 1, classes), opts,
                                  budget_mb=budget_mb, per_sample=False))
        if baselines:
            # the features' decompositions, and NLEEP's mixture (up to 5 C components) and
            # the class probabilities of SFDA / NCTI (n x C each)
            mix = 24 * m * min(5 * classes, m) + 16 * m * classes
            one.step(working=[Part("baselines", 32 * m * w + 32 * w * w + mix,
                                   f"{m} x {w}, {classes} classes")])
        est.then(one)
    return est


def reference_estimate(model: LoadedModel, layer: str | None, data: Labelled, *,
                       reduce: Any, batch_size: int | None, extract_mb: float = 1024.0,
                       budget_mb: float = 256.0) -> Estimate:
    """BuildReference: extraction of one layer, the dataset guarantee (classification) or
    alpha and smi_linear (regression), and the stored copy of the features."""
    est = Estimate("the reference")
    chosen, _ = feature_layer(model.proto, model.info, layer)
    m, task = len(data.y), data.task
    widths = extraction_estimate(est, model.info, [chosen], [data.inputs],
                                 reduce={chosen.name: reduce}, batch_size=batch_size,
                                 budget_mb=extract_mb, model_bytes=model.proto.ByteSize(),
                                 external_bytes=external_bytes(model.proto))
    w = widths[0][1] or DEFAULT_PROJECTION
    opts = IndexOptions(indices=("si",) if task == "classification" else ("smi_linear",),
                        orders=(1,))
    est.then(indices_estimate(IndexShapes(task, m, w), opts, budget_mb=budget_mb,
                              per_sample=False))
    kept, working = knn_parts(m, w, m, 1, int(budget_mb * MIB), self_mode=False,
                              search=_choose_search("auto", np), return_distance=True)
    est.step(working=[*kept, *working, Part("features of the other labels", 8 * m * w)])
    est.step(working=[Part("the stored features", 8 * m * w + 16 * m, f"{m} x {w}")])
    return est


def certify_estimate(request: CertifyRequest, info: Mapping[str, Any]) -> Estimate:
    """Certify: the queries (the message and one copy out of it), their float32 copy, the
    search of each query's 32 nearest reference points and, for regression, each query's
    neighbourhood (up to every reference point)."""
    est = Estimate("Certify")
    m, d = int(info["n_samples"]), int(info["features"])
    arrays: list[np.ndarray] = []
    which = None
    if request.features is not None:
        which, arrays = "features", [request.features]
    elif request.inputs is not None:
        which, arrays = "inputs", list(request.inputs.values())
    sizes = [int(a.nbytes) for a in arrays]
    n = max((int(a.shape[0]) for a in arrays if a.ndim), default=1)
    est.step(kept=[Part("the queries", 2 * sum(sizes), "the message and one copy",
                        "send fewer queries per request")])
    if which == "inputs":  # one batch through the model up to the reference's layer
        est.step(working=[Part("the model's activations", 2 * sum(sizes) + 16 * n * d)])
    kept, working = knn_parts(m, d, n, 32, 256 * MIB, self_mode=False,
                              search=_choose_search("auto", np), return_distance=True)
    est.step(kept=kept, working=working)
    if info.get("task") == "regression":
        est.step(working=[Part("neighbourhoods", 200 * m + 32 * m * d, f"{m} points")])
    est.step(working=[Part("results", 200 * n)])
    return est


def model_estimate(size: int) -> Estimate:
    """UploadModel: the received model read, parsed and shape-inferred to describe it."""
    est = Estimate("the model upload")
    est.step(working=[Part("the model", MODEL_COPIES * size,
                           f"{size} bytes read, parsed and shape-inferred",
                           "upload a smaller model")])
    return est


def machine_memory() -> int | None:
    """Bytes of memory this process may use: MemTotal, capped by a cgroup limit."""
    total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                total = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            total = int(text) if total is None else min(total, int(text))
    return total


def default_budget_mb() -> float:
    """Half the machine's (or the container's) memory; 4096 MiB where it cannot be read."""
    total = machine_memory()
    return DEFAULT_SHARE * total / MIB if total else 4096.0


class MemoryBudget:
    """The memory all running requests may take together, ``limit`` bytes.

    ``admit`` refuses a request larger than the whole budget; ``hold`` reserves a
    request's estimate while it runs, at once (unary calls: MemoryBusy when the others
    leave no room) or waiting for room (jobs, which stop waiting when cancelled).
    """

    OPTION = "--max-request-memory-mb"

    def __init__(self, limit_mb: float) -> None:
        if not (isinstance(limit_mb, (int, float)) and math.isfinite(limit_mb) and limit_mb > 0):
            raise ValueError(f"{self.OPTION} must be a finite number > 0; got {limit_mb!r}")
        self.limit = int(limit_mb * MIB)
        self.held = 0
        self._cond = threading.Condition()

    @classmethod
    def of(cls, limit_mb: float | None = None) -> MemoryBudget:
        """The budget of ``limit_mb`` MiB, or the default (:func:`default_budget_mb`)."""
        return cls(default_budget_mb() if limit_mb is None else limit_mb)

    def admit(self, est: Estimate) -> Estimate:
        """``est``, or MemoryLimitError when it exceeds the budget."""
        total = est.total
        if total > self.limit:
            raise MemoryLimitError(
                f"{est.what} needs about {_mib(total)} of memory, above the {_mib(self.limit)} "
                f"this server admits ({self.OPTION}). The largest parts: {est.describe()}")
        return est

    @contextlib.contextmanager
    def hold(self, est: Estimate, cancel: Cancellation | None = None,
             waiting: Callable[[], None] | None = None) -> Iterator[Callable[[Estimate], None]]:
        """Reserve ``est`` while the block runs; yields ``resize(new_estimate)`` (a refined
        estimate, admitted and reserved the same way).

        Without ``cancel`` a request that does not fit beside the others gets MemoryBusy at
        once; with it, it waits (``waiting()`` is called once) until they leave room or
        ``cancel`` stops it.
        """
        held = [0]

        def take(e: Estimate) -> None:
            need = self.admit(e).total
            with self._cond:
                if self._fits(need - held[0]):
                    self._reserve(held, need)
                    return
                if cancel is None:
                    raise MemoryBusy(
                        f"{e.what} needs about {_mib(need)}; requests running now hold "
                        f"{_mib(self.held - held[0])} of this server's {_mib(self.limit)} "
                        f"({self.OPTION}); retry later")
            if waiting is not None:
                waiting()
            with self._cond:
                while not self._fits(need - held[0]):
                    cancel.check()
                    self._cond.wait(0.5)  # then look at cancel again
                self._reserve(held, need)

        take(est)
        try:
            yield take
        finally:
            with self._cond:
                self.held -= held[0]
                self._cond.notify_all()

    def _fits(self, more: int) -> bool:
        return self.held + more <= self.limit

    def _reserve(self, held: list[int], need: int) -> None:
        """Hold ``need`` bytes where ``held[0]`` were held (the lock is taken)."""
        self.held += need - held[0]
        if need < held[0]:
            self._cond.notify_all()
        held[0] = need

    def job(self, est: Estimate, work: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        """``work`` of a job, admitted now and holding ``est`` once it runs."""
        self.admit(est)

        def run(progress: Any, cancel: Cancellation) -> Any:
            with self.hold(est, cancel, lambda: progress("waiting for memory", 0, 1)):
                return work(progress, cancel)

        return run


__all__ = [
    "Estimate", "IndexShapes", "MemoryBudget", "MemoryBusy", "MemoryLimitError", "Part",
    "UploadEstimate", "certify_estimate", "compute_indices_estimate", "default_budget_mb",
    "extraction_estimate", "indices_estimate", "knn_parts", "layer_analysis_estimate",
    "machine_memory", "model_estimate", "ranking_estimate", "reference_estimate",
    "spec_bytes", "with_classes",
]
