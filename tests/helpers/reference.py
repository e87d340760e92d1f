"""Naive float64 reference for every index of METRICS.md sections 1 and 2.

Written from METRICS.md alone, on purpose: nothing here imports or mirrors the engine
(``layerscope.server``), so the conformance tests can catch the engine's bugs. Every
function is a plain loop over the formula; speed is not a goal (keep ``m`` in the hundreds).

Conventions shared by all functions:

- Features are cast to float64 first. The squared distance between points ``i`` and ``j`` is
  ``((x_i - x_j) ** 2).sum()`` in float64; neighbours are ordered by (distance, index) and a
  point is never its own neighbour (within one set). Cross neighbours (test against train)
  are train points, with no exclusion.
- A "result" is a dict with three dicts: ``dataset`` (index name -> mean over points),
  ``per_class`` (index name -> {label: mean over the points of that class}) and
  ``per_sample`` (index name -> array). Ordered families (``high_order_si`` ...) hold one
  more level keyed by the order ``r``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

# ---------------------------------------------------------------------------------------
# Neighbours (METRICS section 0)
# ---------------------------------------------------------------------------------------


def as_f64_2d(a: np.ndarray) -> np.ndarray:
    """Return ``a`` as a float64 2-D array (a 1-D array becomes one column)."""
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(len(a), -1)


def squared_distances_to(points: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Return the float64 ``((points_j - p) ** 2).sum()`` for every row j of ``points``."""
    return ((as_f64_2d(points) - np.asarray(p, dtype=np.float64)) ** 2).sum(axis=1)


def order_by_distance_then_index(sqdist: np.ndarray) -> np.ndarray:
    """Return the indices sorted by (squared distance, index), both ascending."""
    return np.lexsort((np.arange(len(sqdist)), sqdist))


def neighbour_order(x: np.ndarray) -> np.ndarray:
    """Return (m, m-1): row i lists the other points of ``x`` from nearest to farthest."""
    x = as_f64_2d(x)
    m = len(x)
    out = np.empty((m, m - 1), dtype=np.int64)
    for i in range(m):
        order = order_by_distance_then_index(squared_distances_to(x, x[i]))
        out[i] = order[order != i]
    return out


def cross_neighbour_order(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Return (n, m): row t lists all train points from nearest to farthest of test t."""
    train, test = as_f64_2d(train), as_f64_2d(test)
    return np.stack([order_by_distance_then_index(squared_distances_to(train, p)) for p in test])


def normalize(train: np.ndarray, test: np.ndarray | None = None):
    """Return train (and test) standardised with the train mean and std(ddof=1) + 1e-10."""
    train = as_f64_2d(train)
    mean = train.mean(axis=0)
    scale = train.std(axis=0, ddof=1) + 1e-10
    out_train = (train - mean) / scale
    if test is None:
        return out_train, None
    return out_train, (as_f64_2d(test) - mean) / scale


# ---------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------


def dataset_mean(values: np.ndarray) -> float:
    """Return the mean over points."""
    return float(np.mean(values))


def class_means(values: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    """Return {label: mean of ``values`` over the points with that label}."""
    return {int(c): float(np.mean(values[labels == c])) for c in np.unique(labels)}


def _aggregate(per_sample: dict, labels: np.ndarray | None) -> dict:
    """Return the result dict (dataset, per_class, per_sample) from per-sample values."""
    dataset: dict = {}
    per_class: dict = {}
    for name, value in per_sample.items():
        if isinstance(value, dict):
            dataset[name] = {r: dataset_mean(v) for r, v in value.items()}
            if labels is not None:
                per_class[name] = {r: class_means(v, labels) for r, v in value.items()}
        elif name != "margin_order":
            dataset[name] = dataset_mean(value)
            if labels is not None:
                per_class[name] = class_means(value, labels)
    return {"dataset": dataset, "per_class": per_class, "per_sample": per_sample}


# ---------------------------------------------------------------------------------------
# Separation indices (METRICS section 1)
# ---------------------------------------------------------------------------------------


def _same_label_flags(nbr: np.ndarray, ref_labels: np.ndarray, own_labels: np.ndarray):
    """Return a list per point of booleans: does its j-th neighbour share its label?"""
    return [
        [bool(ref_labels[j] == own_labels[i]) for j in nbr[i]] for i in range(len(own_labels))
    ]


def _separation_per_sample(flags: list, orders: Sequence[int]) -> dict:
    si = np.array([1.0 if f[0] else 0.0 for f in flags])
    high, soft, anti = {}, {}, {}
    for r in orders:
        high[r] = np.array([1.0 if all(f[:r]) else 0.0 for f in flags])
        soft[r] = np.array([sum(f[:r]) / r for f in flags])
        anti[r] = np.array([1.0 if not any(f[:r]) else 0.0 for f in flags])
    return {"si": si, "high_order_si": high, "soft_order_si": soft, "anti_si": anti}


def _center_si_per_sample(
    points: np.ndarray, own_labels: np.ndarray, train: np.ndarray, train_labels: np.ndarray
) -> np.ndarray:
    classes = sorted(int(c) for c in np.unique(train_labels))
    centres = {c: train[train_labels == c].mean(axis=0) for c in classes}
    out = np.empty(len(points))
    for i, p in enumerate(points):
        best_label, best_d = None, None
        for c in classes:  # ascending labels and a strict "<": ties go to the lowest label
            d = ((p - centres[c]) ** 2).sum()
            if best_d is None or d < best_d:
                best_label, best_d = c, d
        out[i] = 1.0 if best_label == own_labels[i] else 0.0
    return out


def margin_order(flags: list, cap: int) -> np.ndarray:
    """Return the signed run length of the leading same/different-label neighbours, capped."""
    out = np.empty(len(flags), dtype=np.int64)
    for i, f in enumerate(flags):
        k = 0
        while k < cap and f[k] == f[0]:
            k += 1
        out[i] = k if f[0] else -k
    return out


def separation(
    x: np.ndarray, labels: np.ndarray, orders: Sequence[int], margin_cap: int = 64
) -> dict:
    """Return si, high/soft/anti-order si, center_si and margin_order of one set."""
    x = as_f64_2d(x)
    labels = np.asarray(labels)
    flags = _same_label_flags(neighbour_order(x), labels, labels)
    per_sample = _separation_per_sample(flags, orders)
    per_sample["center_si"] = _center_si_per_sample(x, labels, x, labels)
    per_sample["margin_order"] = margin_order(flags, min(margin_cap, len(x) - 1))
    return _aggregate(per_sample, labels)


def cross_separation(
    train: np.ndarray,
    train_labels: np.ndarray,
    test: np.ndarray,
    test_labels: np.ndarray,
    orders: Sequence[int],
) -> dict:
    """Return cross_si, cross high/soft/anti-order si and cross_center_si of the test set."""
    train, test = as_f64_2d(train), as_f64_2d(test)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    flags = _same_label_flags(cross_neighbour_order(train, test), train_labels, test_labels)
    per_sample = _separation_per_sample(flags, orders)
    per_sample["center_si"] = _center_si_per_sample(test, test_labels, train, train_labels)
    return _aggregate(per_sample, test_labels)


def si(x: np.ndarray, labels: np.ndarray) -> float:
    """Return the dataset si of ``x``."""
    labels = np.asarray(labels)
    nbr = neighbour_order(x)
    return dataset_mean(np.array([1.0 if labels[n[0]] == labels[i] else 0.0
                                  for i, n in enumerate(nbr)]))


def single_feature_si(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Return the vector whose entry f is the si of feature f alone."""
    x = as_f64_2d(x)
    return np.array([si(x[:, [f]], labels) for f in range(x.shape[1])])


# ---------------------------------------------------------------------------------------
# Smoothness indices (METRICS section 2)
# ---------------------------------------------------------------------------------------


def target_distances_to(targets: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Return the Euclidean distances ``e_j = ||targets_j - y||`` in float64."""
    return np.sqrt(squared_distances_to(targets, y))


def _smi_terms(dmax, dstar, dcirc, dmean, gamma):
    """Return (linear, exp, anti_linear, anti_exp) for one position j."""
    if dmax == dcirc:
        linear, anti_linear = 1.0, 0.0
    else:
        linear = (dmax - dstar) / (dmax - dcirc)
        anti_linear = (dstar - dcirc) / (dmax - dcirc)
    if dmean == 0:
        exp, anti_exp = 1.0, 0.0
    else:
        exp = float(np.exp(-gamma * (dstar - dcirc) / dmean))
        anti_exp = 1.0 - float(np.exp(-gamma * (dstar - dcirc) / dmean))
    return linear, exp, anti_linear, anti_exp


def smoothness(
    x: np.ndarray, targets: np.ndarray, orders: Sequence[int], gamma: float = 1.0
) -> dict:
    """Return smi_linear, smi_exp and the high/soft/anti-order SmI families of one set."""
    x, y = as_f64_2d(x), as_f64_2d(targets)
    m = len(x)
    nbr = neighbour_order(x)
    names = ("linear", "exp", "anti_linear", "anti_exp")
    smi_linear, smi_exp = np.empty(m), np.empty(m)
    high = {n: {r: np.empty(m) for r in orders} for n in names}
    soft = {n: {r: np.empty(m) for r in orders} for n in names}
    for i in range(m):
        e = target_distances_to(y, y[i])
        dmax = e.max()
        dmin = min(e[j] for j in range(m) if j != i)
        dmean = e.sum() / m  # over all m points, the zero self-distance included
        target_order = order_by_distance_then_index(squared_distances_to(y, y[i]))
        target_order = target_order[target_order != i]
        dstar = e[nbr[i]]
        dcirc = e[target_order]

        smi_linear[i] = 1.0 if dmax == dmin else (dmax - dstar[0]) / (dmax - dmin)
        smi_exp[i] = 1.0 if dmean == 0 else float(np.exp(-gamma * (dstar[0] - dmin) / dmean))

        for r in orders:
            terms = [_smi_terms(dmax, dstar[j], dcirc[j], dmean, gamma) for j in range(r)]
            for k, n in enumerate(names):
                column = [t[k] for t in terms]
                high[n][r][i] = min(column)
                soft[n][r][i] = sum(column) / r
    per_sample = {"smi_linear": smi_linear, "smi_exp": smi_exp}
    for n in ("linear", "exp"):
        per_sample[f"high_order_smi_{n}"] = high[n]
        per_sample[f"soft_order_smi_{n}"] = soft[n]
        per_sample[f"anti_smi_{n}"] = high[f"anti_{n}"]  # anti is a min over j, like high
    return _aggregate(per_sample, None)


def cross_smoothness(
    train: np.ndarray,
    train_targets: np.ndarray,
    test: np.ndarray,
    test_targets: np.ndarray,
    gamma: float = 1.0,
) -> dict:
    """Return cross_smi_linear and cross_smi_exp of the test set (named without cross_)."""
    train, test = as_f64_2d(train), as_f64_2d(test)
    y_train, y_test = as_f64_2d(train_targets), as_f64_2d(test_targets)
    nbr = cross_neighbour_order(train, test)
    n = len(test)
    linear, exp = np.empty(n), np.empty(n)
    for t in range(n):
        e = target_distances_to(y_train, y_test[t])  # over the train targets, no exclusion
        dmax, dmin, dmean = e.max(), e.min(), e.sum() / len(e)
        dstar = e[nbr[t, 0]]
        linear[t] = 1.0 if dmax == dmin else (dmax - dstar) / (dmax - dmin)
        exp[t] = 1.0 if dmean == 0 else float(np.exp(-gamma * (dstar - dmin) / dmean))
    return _aggregate({"smi_linear": linear, "smi_exp": exp}, None)


def smi(x: np.ndarray, targets: np.ndarray, variant: str = "linear", gamma: float = 1.0) -> float:
    """Return the dataset ``smi_linear`` or ``smi_exp`` of ``x``."""
    return smoothness(x, targets, orders=(), gamma=gamma)["dataset"][f"smi_{variant}"]


def single_feature_smi(
    x: np.ndarray, targets: np.ndarray, variant: str = "linear", gamma: float = 1.0
) -> np.ndarray:
    """Return the vector whose entry f is ``smi_<variant>`` of feature f alone."""
    x = as_f64_2d(x)
    return np.array([smi(x[:, [f]], targets, variant, gamma) for f in range(x.shape[1])])


# ---------------------------------------------------------------------------------------
# Greedy forward feature selection (METRICS section 1, feature-level indices)
# ---------------------------------------------------------------------------------------


def forward_selection(
    score: Callable[[list[int]], float],
    n_features: int,
    max_features: int | None = None,
    patience: int | None = None,
    candidates: Sequence[int] | None = None,
) -> tuple[list[int], list[float], list[int]]:
    """Return (order, score after each step, best_subset) of greedy forward selection.

    ``score(columns)`` is the criterion of the selected columns. Each step adds the
    feature with the highest score (ties: lowest feature index); it stops when the pool
    is empty, at ``max_features`` features, or after ``patience`` steps in a row without
    a new (strictly higher) maximum. ``best_subset`` is the shortest prefix of the order
    that attains the maximum score along the path.
    """
    pool = sorted(candidates) if candidates is not None else list(range(n_features))
    limit = len(pool) if max_features is None else min(max_features, len(pool))
    order: list[int] = []
    scores: list[float] = []
    best = -np.inf
    steps_without_new_max = 0
    while len(order) < limit:
        step_feature, step_score = None, None
        for f in pool:  # ascending feature index, strict ">": ties go to the lowest index
            if f in order:
                continue
            s = score(order + [f])
            if step_score is None or s > step_score:
                step_feature, step_score = f, s
        order.append(step_feature)
        scores.append(step_score)
        if step_score > best:
            best, steps_without_new_max = step_score, 0
        else:
            steps_without_new_max += 1
        if patience is not None and steps_without_new_max >= patience:
            break
    first_max = scores.index(max(scores))
    return order, scores, order[: first_max + 1]


def feature_ranking_si(x: np.ndarray, labels: np.ndarray, **options) -> tuple:
    """Return forward selection with criterion si."""
    x = as_f64_2d(x)
    return forward_selection(lambda cols: si(x[:, cols], labels), x.shape[1], **options)


def feature_ranking_smi(
    x: np.ndarray, targets: np.ndarray, variant: str = "linear", gamma: float = 1.0, **options
) -> tuple:
    """Return forward selection with criterion ``smi_<variant>``."""
    x = as_f64_2d(x)
    return forward_selection(
        lambda cols: smi(x[:, cols], targets, variant, gamma), x.shape[1], **options
    )


def folded_si(x: np.ndarray, labels: np.ndarray, folds: int, order: int,
              max_features: int | None = None) -> dict:
    """Return the folded out-of-sample SI family (ranking method ``folded``).

    Folds: within each class, samples in index order are dealt to folds 0, 1, ..., folds-1,
    0, ... For each fold, forward selection (criterion si) on the samples of the other
    folds gives a subset; the fold's samples are scored by cross si, soft_order_si[order]
    and high_order_si[order] against the other folds under that subset. Returns
    ``{"fold": (m,), "subsets": [...], name: (m,) per-sample values}``.
    """
    x, labels = as_f64_2d(x), np.asarray(labels)
    m = len(labels)
    fold = np.full(m, -1)
    for c in sorted(set(labels.tolist())):
        dealt = 0
        for i in range(m):
            if labels[i] == c:
                fold[i] = dealt % folds
                dealt += 1
    out = {"fold": fold, "subsets": [], "si": np.full(m, np.nan),
           "soft_order_si": np.full(m, np.nan), "high_order_si": np.full(m, np.nan)}
    for k in range(folds):
        rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        _, _, subset = feature_ranking_si(x[rest], labels[rest], max_features=max_features)
        out["subsets"].append(subset)
        got = cross_separation(x[rest][:, subset], labels[rest], x[held][:, subset],
                               labels[held], [order])["per_sample"]
        out["si"][held] = got["si"]
        out["soft_order_si"][held] = got["soft_order_si"][order]
        out["high_order_si"][held] = got["high_order_si"][order]
    return out
