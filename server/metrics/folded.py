"""Out-of-sample SI of a selected feature subset: select on some folds, score on the rest.

The seed's Algorithm 2 scores the selected subset on the samples it was selected on, which
inflates the score unevenly (wide layers have more features to overfit with). Here the
samples are split into ``folds`` folds; for each fold, the forward selection of METRICS.md
section 1 runs on the other folds, and the fold's samples are scored with the cross indices
(their nearest neighbours among the other folds, under the selected subset). Every sample is
scored exactly once, by a subset that never saw it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..cancellation import Cancellation
from .backend import to_host
from .features import forward_selection, si_rows
from .knn import knn
from .separation import si_per_sample

FOLDED_INDICES = ("si", "soft_order_si", "high_order_si")


def fold_ids(labels: np.ndarray, folds: int) -> np.ndarray:
    """Return each sample's fold: the j-th sample of each class (in index order) goes to
    fold ``j % folds``, so every fold holds every class with at least ``folds`` samples."""
    labels = np.asarray(labels)
    out = np.empty(labels.shape[0], dtype=np.int64)
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        out[where] = np.arange(where.size) % folds
    return out


@dataclass
class FoldedScore:
    """Per-sample cross SI values (``si``, ``soft_order_si``, ``high_order_si`` at ``order``),
    the fold of each sample and the subset selected without each fold."""

    folds: int

    order: int
    fold: np.ndarray
    per_sample: dict[str, np.ndarray]
    subsets: list[list[int]]

    @property
    def values(self) -> dict[str, float]:
        """The dataset values: the mean of each per-sample array."""
        return {name: float(v.mean()) for name, v in self.per_sample.items()}


def folded_si(
    xp: ModuleType,
    x: np.ndarray,
    labels: np.ndarray,
    *,
    folds: int,
    order: int,
    max_features: int | None,
    patience: int | None,
    candidates: Sequence[int] | None,
    memory_budget_mb: float,
    precision: str = "exact",
    candidate_search: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    cancel: Cancellation | None = None,
) -> FoldedScore:
    """Return the out-of-sample SI family of the forward-selected subset, K-folded.

    ``folds`` is capped at the largest class's size (no fold is left empty).

    For fold k: ``S_k`` = forward selection (criterion ``si``) on the samples outside fold
    k; each sample t of fold k gets ``si``, ``soft_order_si[order]`` and
    ``high_order_si[order]`` from its ``order`` nearest neighbours among the samples outside
    fold k, distances taken over the features ``S_k``, and its own label (METRICS.md
    section 1, cross indices).
    """
    m = x.shape[0]
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2:
        raise ValueError(f"folds must be an integer >= 2; got {folds!r}")
    # More folds than the largest class has samples would leave folds empty.
    folds = min(int(folds), int(np.unique(labels, return_counts=True)[1].max()))
    fold = fold_ids(labels, folds)
    sizes = np.bincount(fold, minlength=folds)
    if folds < 2 or m - int(sizes.max()) < order:
        raise ValueError(f"folded scoring with order {order} needs a class of at least 2 "
                         f"samples and at least {order} samples outside each fold; got {m} "
                         f"samples in {folds} fold(s) of up to {int(sizes.max())}")
    per_sample = {name: np.zeros(m, dtype=np.float64) for name in FOLDED_INDICES}
    subsets: list[list[int]] = []
    for k in range(folds):
        if cancel is not None:
            cancel.check()
        rest, held = np.flatnonzero(fold != k), np.flatnonzero(fold == k)
        x_rest, y_rest = xp.asarray(x[rest]), xp.asarray(labels[rest])
        ranking = forward_selection(
            xp, x_rest, si_rows(xp, y_rest), "si", max_features=max_features,
            patience=patience, candidates=candidates, memory_budget_mb=memory_budget_mb,
            cancel=cancel)
        subset = ranking.best_subset or list(range(x.shape[1]))
        subsets.append([int(f) for f in subset])
        cols = np.asarray(subset)
        nb = knn(xp.asarray(x[rest][:, cols]), order, queries=xp.asarray(x[held][:, cols]),
                 precision=precision, memory_budget_mb=memory_budget_mb,
                 candidate_search=candidate_search, xp=xp, cancel=cancel)
        got: dict[str, Any] = si_per_sample(xp, y_rest[nb.indices], xp.asarray(labels[held]),
                                            [order], set(FOLDED_INDICES))
        per_sample["si"][held] = to_host(got["si"])
        per_sample["soft_order_si"][held] = to_host(got["soft_order_si"][order])
        per_sample["high_order_si"][held] = to_host(got["high_order_si"][order])
        if progress is not None:
            progress(k + 1, folds)
    return FoldedScore(folds, order, fold, per_sample, subsets)
