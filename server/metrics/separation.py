"""The separation index (SI) family, derived from a neighbour table (METRICS.md section 1)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from ...protos.options import ORDERED_SI
from .knn import knn


def class_means(xp: ModuleType, x: Any, labels: Any, classes: Any) -> Any:
    """Return the float64 mean vector of each class, rows in the order of ``classes``."""
    means = xp.empty((len(classes), x.shape[1]), dtype=xp.float64)
    for i, c in enumerate(classes.tolist()):
        means[i] = x[labels == c].mean(axis=0, dtype=xp.float64)
    return means


def si_per_sample(
    xp: ModuleType,
    neighbor_labels: Any,
    own_labels: Any,
    orders: Sequence[int],
    names: set[str],
    margin_cap: int | None = None,
) -> dict[str, Any]:
    """Return per-sample SI values from the labels of each point's ordered neighbours.

    ``neighbor_labels`` (n, K) holds the labels of neighbours 1..K of each point; K must be
    at least ``max(orders)`` (and the margin cap when ``margin_order`` is asked for).
    Values are float64 arrays; ordered families are ``{order: array}``.
    """
    same = neighbor_labels == own_labels[:, None]
    hits = xp.cumsum(same, axis=1)
    out: dict[str, Any] = {}
    if "si" in names:
        out["si"] = same[:, 0].astype(xp.float64)
    for name in ORDERED_SI:
        if name not in names:
            continue
        fam = {}
        for r in orders:
            h = hits[:, r - 1]
            if name == "high_order_si":
                fam[r] = (h == r).astype(xp.float64)
            elif name == "soft_order_si":
                fam[r] = h.astype(xp.float64) / r
            else:
                fam[r] = (h == 0).astype(xp.float64)
        out[name] = fam
    if "margin_order" in names:
        cap = neighbor_labels.shape[1] if margin_cap is None else margin_cap
        run_of = same[:, :cap]
        changed = run_of != run_of[:, :1]
        run = xp.where(changed.any(axis=1), xp.argmax(changed, axis=1), cap)
        out["margin_order"] = xp.where(run_of[:, 0], run, -run).astype(xp.int64)
    return out


def center_si_per_sample(
    xp: ModuleType,
    x: Any,
    own_labels: Any,
    means: Any,
    classes: Any,
    *,
    memory_budget_mb: float,
    precision: str,
) -> Any:
    """Return 1.0 where the nearest class mean (ties: lowest label) is the point's own."""
    nearest = knn(
        means, 1, queries=x, xp=xp, memory_budget_mb=memory_budget_mb, precision=precision
    ).indices[:, 0]
    return (classes[nearest] == own_labels).astype(xp.float64)


def per_class_means(values: Any, labels: np.ndarray, classes: np.ndarray) -> dict[int, float]:
    """Return ``{label: mean of values over the points with that label}`` (host arrays)."""
    out = {}
    for c in classes.tolist():
        sel = labels == c
        out[int(c)] = float(values[sel].mean()) if sel.any() else float("nan")
    return out
