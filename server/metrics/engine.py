"""``compute_indices``: every SI / SmI index of a dataset from one exact k-NN pass.

The neighbours of every point are found once, up to the largest order asked for (and the
margin-order cap), and every index is derived from that table. Names are the canonical
names of METRICS.md, unchanged.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...protos.options import (
    CLASSIFICATION_INDICES,
    DEFAULT_CLASSIFICATION,
    DEFAULT_GAMMA,
    DEFAULT_MARGIN_CAP,
    DEFAULT_MEMORY_BUDGET_MB,
    DEFAULT_ORDERS,
    DEFAULT_REGRESSION,
    ORDERED_SI,
    ORDERED_SMI,
    REGRESSION_INDICES,
)
from ..cancellation import Cancellation, checker
from . import validation as v
from .backend import get_backend, to_host
from .features import Ranking, forward_selection, si_rows, single_feature_scores, smi_rows
from .knn import knn
from .separation import (
    center_si_per_sample,
    class_means,
    per_class_means,
    si_per_sample,
)
from .smoothness import pair_distance, smi_per_sample, target_stats

if TYPE_CHECKING:
    from ..cluster import Executor

# The names and defaults are the contract's (protos/options.py), imported, never copied.
ORDERED = frozenset(ORDERED_SI + ORDERED_SMI)
_CROSS_CLASSIFICATION = frozenset(("si", *ORDERED_SI, "center_si"))
_CROSS_REGRESSION = frozenset(("smi_linear", "smi_exp"))

ProgressFn = Callable[[str, int, int], None]


@dataclass
class IndexSet:
    """The values of one set of points (the training set, or a test set against it).

    ``dataset[name]`` is a float, ``{order: float}`` for ordered families, or a list per
    feature for single-feature indices; ``per_class[name]`` is ``{label: float}`` (or
    ``{order: {label: float}}``); ``per_sample[name]`` is an array (or ``{order: array}``).
    """

    n_samples: int
    dataset: dict[str, Any] = field(default_factory=dict)
    per_class: dict[str, Any] = field(default_factory=dict)
    per_sample: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, per_class: bool = True, per_sample: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"n_samples": self.n_samples}
        for name, value in self.dataset.items():
            out[name] = _jsonable(value)
        if per_class:
            for name, value in self.per_class.items():
                out[f"{name}_per_class"] = _jsonable(value)
        if per_sample:
            for name, value in self.per_sample.items():
                out[f"{name}_per_sample"] = _jsonable(value)
        return out


@dataclass
class IndexResult:
    """Everything :func:`compute_indices` computed, with the options that were applied."""

    task: str
    n_features: int
    train: IndexSet
    cross: IndexSet | None = None
    feature_ranking: Ranking | None = None
    classes: list[int] | None = None
    warnings: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        """Return the dataset-level value of ``name`` on the training set."""
        return self.train.dataset[name]

    def to_dict(self, per_class: bool = True, per_sample: bool = False) -> dict[str, Any]:
        """Return a JSON-able dict keyed by the canonical names (orders and labels as strings)."""
        out: dict[str, Any] = {"task": self.task, "n_features": self.n_features}
        out.update(self.train.to_dict(per_class, per_sample))
        if self.feature_ranking is not None:
            out["feature_ranking"] = self.feature_ranking.to_dict()
        if self.classes is not None:
            out["classes"] = list(self.classes)
        if self.cross is not None:
            out["cross"] = self.cross.to_dict(per_class, per_sample)
        out["options"] = _jsonable(self.options)
        out["warnings"] = list(self.warnings)
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(x) for x in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _names(indices: Iterable[str] | None, task: str) -> set[str]:
    valid = CLASSIFICATION_INDICES if task == "classification" else REGRESSION_INDICES
    if indices is None:
        return set(DEFAULT_CLASSIFICATION if task == "classification" else DEFAULT_REGRESSION)
    if isinstance(indices, str):
        indices = [indices]
    names = set()
    for name in indices:
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown index {name!r} for {task}{hint} (valid: {', '.join(valid)})"
            )
        names.add(name)
    if not names:
        raise ValueError("indices is empty; name at least one index")
    return names


def check_index_options(task: str, indices: Iterable[str] | None,
                        gamma: float = DEFAULT_GAMMA) -> None:
    """Raise ValueError for unknown index names or a bad gamma, before any work starts."""
    _names(indices, task)
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0; got {gamma!r}")


def _standardize(x: np.ndarray, test: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    mean = x.mean(axis=0, dtype=np.float64)  # a dtype CuPy takes as well
    std = x.std(axis=0, ddof=1, dtype=np.float64) + 1e-10
    xs = (x - mean) / std
    return xs, None if test is None else (test - mean) / std


def compute_indices(
    features: Any,
    labels: Any = None,
    targets: Any = None,
    *,
    test_features: Any = None,
    test_labels: Any = None,
    test_targets: Any = None,
    indices: Iterable[str] | None = None,
    orders: Iterable[int] | int | None = None,
    gamma: float = DEFAULT_GAMMA,
    normalize: bool = False,
    margin_cap: int = DEFAULT_MARGIN_CAP,
    max_features: int | None = None,
    patience: int | None = None,
    candidates: Sequence[int] | None = None,
    criterion: str | None = None,
    precision: str = "exact",
    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
    device: str | None = None,
    candidate_search: str = "auto",
    progress: ProgressFn | None = None,
    cancel: Cancellation | None = None,
    executor: Executor | None = None,
) -> IndexResult:
    """Return the SI (``labels``) or SmI (``targets``) indices of a set of feature vectors.

    Parameters
    ----------
    features : (m, ...) array; each sample is flattened to a vector.
    labels : (m,) integer labels (classification), or
    targets : (m,) or (m, t) real targets (regression). Exactly one of the two.
    test_features, test_labels / test_targets : a second set; its cross indices against the
        first are returned in ``result.cross``.
    indices : names to compute (METRICS.md); default: the SI family and ``center_si``, or
        the SmI family.
    orders : orders r of the ordered families (default 1 and 5, those below m).
    gamma : sharpness of the exp variants of SmI (> 0).
    normalize : standardise each feature with the training mean and std (ddof=1) + 1e-10.
    margin_cap : cap K of ``margin_order``.
    max_features, patience, candidates, criterion : options of ``feature_ranking``;
        ``criterion`` is ``si`` (classification) or ``smi_linear`` / ``smi_exp``.
    precision : ``"exact"`` (METRICS.md section 0) or ``"fast"`` (float32 order, said so).
    memory_budget_mb : working memory beyond the inputs; sets the block sizes.
    device : ``auto``, ``cpu`` or ``gpu`` (default ``$LAYERSCOPE_DEVICE`` or auto).
    progress : called as ``progress(stage, done, total)``.
    cancel : checked between blocks of the k-NN search and the feature-level indices, and
        between steps of the forward selection; raises ``Stopped``.
    executor : where the k-NN searches and target statistics run (None: here; a Ray
        executor gives the same numbers, see docs/scale.md).
    """
    started = time.perf_counter()
    if (labels is None) == (targets is None):
        raise ValueError(
            "give exactly one of labels (classification) or targets (regression); "
            f"got {'both' if labels is not None else 'neither'}"
        )
    task = "classification" if labels is not None else "regression"
    x = v.as_features(features)
    m = x.shape[0]
    v.check_min_points(m)
    names = _names(indices, task)
    orders_t = v.as_orders(orders, m, DEFAULT_ORDERS)
    if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma > 0):
        raise ValueError(f"gamma must be a finite number > 0; got {gamma!r}")
    if isinstance(margin_cap, bool) or not isinstance(margin_cap, (int, np.integer)) or (
        margin_cap < 1
    ):
        raise ValueError(f"margin_cap must be an integer >= 1; got {margin_cap!r}")
    if not (isinstance(memory_budget_mb, (int, float)) and math.isfinite(memory_budget_mb)
            and memory_budget_mb > 0):
        raise ValueError(f"memory_budget_mb must be a finite number > 0; got "
                         f"{memory_budget_mb!r}")
    if precision not in ("exact", "fast"):
        raise ValueError(f"precision must be 'exact' or 'fast'; got {precision!r}")

    if test_features is None and (test_labels is not None or test_targets is not None):
        raise ValueError("test_labels / test_targets were given without test_features")
    xt = None
    if test_features is not None:
        xt = v.as_features(test_features, "test_features")
        v.check_same_width(x, xt)
        if xt.shape[0] < 1:
            raise ValueError("test_features has no samples")

    warnings: list[str] = []
    dev, xp = get_backend(device)
    # On the device the search runs on: a GPU array stays there, a host one goes there once.
    x = to_host(x) if xp is np else xp.asarray(x)
    xt = None if xt is None else (to_host(xt) if xp is np else xp.asarray(xt))
    if normalize:
        x, xt = _standardize(x, xt)
    options: dict[str, Any] = {
        "orders": list(orders_t),
        "normalize": bool(normalize),
        "precision": precision,
        "memory_budget_mb": float(memory_budget_mb),
        "device": dev,
    }
    if precision == "fast":
        warnings.append(
            "precision='fast': neighbour order decided by float32 distances without the "
            "float64 re-rank; ties and near-ties may differ from the exact definition"
        )

    def report(stage: str) -> Callable[[int, int], None] | None:
        if progress is None:
            return None
        return lambda done, total: progress(stage, done, total)

    cancel = checker(cancel)
    cancel.check()
    common = dict(memory_budget_mb=memory_budget_mb, precision=precision, xp=xp,
                  candidate_search=candidate_search, cancel=cancel)
    ctx = _Context(orders_t, margin_cap, gamma, max_features, patience, candidates, criterion,
                   common, report, warnings, options,
                   knn if executor is None else executor.knn,
                   target_stats if executor is None else executor.target_stats)
    if executor is not None:
        options["executor"] = executor.name
    if task == "classification":
        result = _classification(x, v.as_labels(labels, m), xt, test_labels, names, ctx)
    else:
        result = _regression(x, v.as_targets(targets, m), xt, test_targets, names, ctx)
    options["seconds"] = round(time.perf_counter() - started, 6)
    return result


@dataclass
class _Context:
    """The validated options and the bookkeeping shared by both tasks."""

    orders: tuple[int, ...]
    margin_cap: int
    gamma: float
    max_features: int | None
    patience: int | None
    candidates: Sequence[int] | None
    criterion: str | None
    common: dict[str, Any]
    report: Callable[[str], Callable[[int, int], None] | None]
    warnings: list[str]
    options: dict[str, Any]
    knn: Callable[..., Any] = knn
    target_stats: Callable[..., Any] = target_stats


def _knn_stats(options: dict[str, Any], key: str, nb: Any) -> None:
    options.setdefault("knn", {})[key] = {
        "candidate_search": nb.candidate_search,
        "certified_rows": nb.certified_rows,
        "reranked_rows": nb.reranked_rows,
        "fallback_rows": nb.fallback_rows,
        "products": nb.products,
    }


def _fill(
    target: IndexSet,
    per_sample: dict[str, Any],
    labels: np.ndarray | None,
    classes: np.ndarray | None,
) -> None:
    """Convert per-sample values to host arrays, then derive dataset and per-class values."""
    for name, value in per_sample.items():
        if isinstance(value, dict):
            host = {r: to_host(a) for r, a in value.items()}
            target.per_sample[name] = host
            target.dataset[name] = {r: float(a.mean()) for r, a in host.items()}
            if labels is not None and classes is not None:
                target.per_class[name] = {
                    r: per_class_means(a, labels, classes) for r, a in host.items()
                }
        else:
            a = to_host(value)
            target.per_sample[name] = a
            if name == "margin_order":  # per sample only (METRICS.md section 1)
                continue
            target.dataset[name] = float(a.mean())
            if labels is not None and classes is not None:
                target.per_class[name] = per_class_means(a, labels, classes)


def _ranking_options(
    max_features: int | None, patience: int | None, candidates: Sequence[int] | None, d: int
) -> tuple[int | None, int | None, list[int] | None]:
    for label, value in (("max_features", max_features), ("patience", patience)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise ValueError(f"{label} must be an integer >= 1 or None; got {value!r}")
    cands = None
    if candidates is not None:
        cands = [int(c) for c in candidates]
        bad = [c for c in cands if not 0 <= c < d]
        if bad or not cands:
            raise ValueError(
                f"candidates must be feature indices in 0..{d - 1}; got {bad or 'an empty list'}"
            )
    return max_features, patience, cands


def _classification(
    x: np.ndarray,
    labels: np.ndarray,
    xt: np.ndarray | None,
    test_labels: Any,
    names: set[str],
    ctx: _Context,
) -> IndexResult:
    orders, margin_cap, common, report = ctx.orders, ctx.margin_cap, ctx.common, ctx.report
    warnings, options = ctx.warnings, ctx.options
    xp = common["xp"]
    m, d = x.shape
    classes, counts = np.unique(labels, return_counts=True)
    lonely = classes[counts == 1]
    if len(lonely) and names & {"si", *ORDERED_SI, "margin_order"}:
        warnings.append(
            f"class(es) {', '.join(map(str, lonely.tolist()))} have a single point: it has no "
            "same-label neighbour and counts 0 in si"
        )
    lt = None
    if xt is not None:
        if test_labels is None:
            raise ValueError("test_features were given without test_labels")
        lt = v.as_labels(test_labels, xt.shape[0], "test_labels")
        missing = np.setdiff1d(np.unique(lt), classes)
        if len(missing):
            raise ValueError(
                f"test_labels contain label(s) absent from the training labels: "
                f"{', '.join(map(str, missing[:10].tolist()))}"
            )
    if ctx.criterion not in (None, "si"):
        raise ValueError(f"criterion for classification must be 'si'; got {ctx.criterion!r}")

    labels_x = xp.asarray(labels)
    classes_x = xp.asarray(classes)
    x_x = xp.asarray(x)
    result = IndexResult(task="classification", n_features=d, train=IndexSet(m),
                         classes=[int(c) for c in classes], warnings=warnings, options=options)
    knn_names = names & {"si", *ORDERED_SI, "margin_order"}
    cap = min(margin_cap, m - 1)
    if "margin_order" in names:
        options["margin_order_cap"] = cap
    per_sample: dict[str, Any] = {}
    if knn_names:
        k = max(orders) if knn_names - {"margin_order"} else 1
        if "margin_order" in names:
            k = max(k, cap)
        nb = ctx.knn(x_x, k, progress=report("knn"), **common)
        _knn_stats(options, "train", nb)
        per_sample.update(
            si_per_sample(xp, labels_x[nb.indices], labels_x, orders, knn_names, cap)
        )
    means = class_means(xp, x_x, labels_x, classes_x) if "center_si" in names else None
    if means is not None:
        per_sample["center_si"] = center_si_per_sample(
            xp, x_x, labels_x, means, classes_x,
            memory_budget_mb=common["memory_budget_mb"], precision=common["precision"],
        )
    _fill(result.train, per_sample, labels, classes)

    if "single_feature_si" in names:
        scores = single_feature_scores(
            xp, x_x, si_rows(xp, labels_x), memory_budget_mb=common["memory_budget_mb"],
            cancel=common["cancel"],
        )
        result.train.dataset["single_feature_si"] = to_host(scores)
    if "feature_ranking" in names:
        mf, pat, cands = _ranking_options(ctx.max_features, ctx.patience, ctx.candidates, d)
        result.feature_ranking = forward_selection(
            xp, x_x, si_rows(xp, labels_x), "si", max_features=mf, patience=pat,
            candidates=cands, memory_budget_mb=common["memory_budget_mb"],
            progress=report("feature_ranking"), cancel=common["cancel"],
        )

    if xt is not None and lt is not None:
        cross_names = names & _CROSS_CLASSIFICATION
        result.cross = IndexSet(xt.shape[0])
        xt_x, lt_x = xp.asarray(xt), xp.asarray(lt)
        cross_ps: dict[str, Any] = {}
        if cross_names - {"center_si"}:
            nbt = ctx.knn(x_x, max(orders), queries=xt_x, progress=report("cross_knn"), **common)
            _knn_stats(options, "cross", nbt)
            cross_ps.update(si_per_sample(xp, labels_x[nbt.indices], lt_x, orders, cross_names))
        if "center_si" in cross_names and means is not None:
            cross_ps["center_si"] = center_si_per_sample(
                xp, xt_x, lt_x, means, classes_x,
                memory_budget_mb=common["memory_budget_mb"], precision=common["precision"],
            )
        _fill(result.cross, cross_ps, lt, np.unique(lt))  # classes present in the test set
    return result


def _regression(
    x: np.ndarray,
    y: np.ndarray,
    xt: np.ndarray | None,
    test_targets: Any,
    names: set[str],
    ctx: _Context,
) -> IndexResult:
    orders, gamma, common, report = ctx.orders, ctx.gamma, ctx.common, ctx.report
    warnings, options, criterion = ctx.warnings, ctx.options, ctx.criterion
    xp = common["xp"]
    budget = common["memory_budget_mb"]
    m, d = x.shape
    yt = None
    if xt is not None:
        if test_targets is None:
            raise ValueError("test_features were given without test_targets")
        yt = v.as_targets(test_targets, xt.shape[0], "test_targets")
        if yt.shape[1] != y.shape[1]:
            raise ValueError(
                f"test_targets have {yt.shape[1]} columns but targets have {y.shape[1]}"
            )
    if criterion not in (None, "smi_linear", "smi_exp"):
        raise ValueError(
            f"criterion for regression must be 'smi_linear' or 'smi_exp'; got {criterion!r}"
        )
    options["gamma"] = float(gamma)
    x_x, y_x = xp.asarray(x), xp.asarray(y)
    result = IndexResult(task="regression", n_features=d, train=IndexSet(m),
                         warnings=warnings, options=options)
    ordered = names & set(ORDERED_SMI)
    knn_names = names & {"smi_linear", "smi_exp", *ORDERED_SMI}
    stats = ctx.target_stats(xp, y_x, y_x, max(orders) if ordered else 0, self_mode=True,
                         memory_budget_mb=budget)
    per_sample: dict[str, Any] = {}
    if knn_names:
        nb = ctx.knn(x_x, max(orders) if ordered else 1, progress=report("knn"), **common)
        _knn_stats(options, "train", nb)
        d_star = pair_distance(xp, y_x, y_x, nb.indices)
        per_sample.update(smi_per_sample(xp, d_star, stats, orders, knn_names, gamma))
    _fill(result.train, per_sample, None, None)
    for variant in ("linear", "exp"):
        name = f"single_feature_smi_{variant}"
        if name in names:
            scores = single_feature_scores(
                xp, x_x, smi_rows(xp, y_x, stats, variant, gamma), memory_budget_mb=budget,
                cancel=common["cancel"],
            )
            result.train.dataset[name] = to_host(scores)
    if "feature_ranking" in names:
        crit = criterion or "smi_linear"
        mf, pat, cands = _ranking_options(ctx.max_features, ctx.patience, ctx.candidates, d)
        result.feature_ranking = forward_selection(
            xp, x_x, smi_rows(xp, y_x, stats, crit.split("_")[1], gamma), crit,
            max_features=mf, patience=pat, candidates=cands, memory_budget_mb=budget,
            progress=report("feature_ranking"), cancel=common["cancel"],
        )
    if xt is not None and yt is not None:
        cross_names = names & _CROSS_REGRESSION
        result.cross = IndexSet(xt.shape[0])
        if cross_names:
            xt_x, yt_x = xp.asarray(xt), xp.asarray(yt)
            nbt = ctx.knn(x_x, 1, queries=xt_x, progress=report("cross_knn"), **common)
            _knn_stats(options, "cross", nbt)
            tstats = ctx.target_stats(xp, yt_x, y_x, 0, self_mode=False, memory_budget_mb=budget)
            d_star = pair_distance(xp, yt_x, y_x, nbt.indices)
            _fill(result.cross, smi_per_sample(xp, d_star, tstats, (), cross_names, gamma),
                  None, None)
    return result
