"""Confidence, guarantees and certified radii (METRICS.md section 3).

Distances are Euclidean: the square root of the exact float64 squared distances of the
neighbour search. ``uncertainty`` is the largest measuring error of a query in the
analysed layer's feature space (``||x_true - x|| < uncertainty``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from ..cancellation import Cancellation, checker
from . import validation as v
from .backend import get_backend, to_host
from .engine import compute_indices
from .knn import ExactIndex, Neighbors, knn

OTHER_K = 32  # neighbours searched for the nearest point of another label before falling back


def _sq(nb: Any) -> np.ndarray:
    """The exact squared distances of a search that was asked for them."""
    assert nb.sqdist is not None
    return np.asarray(nb.sqdist)


def _host(nb: Neighbors) -> Neighbors:
    """A search's result with its arrays on the host (it may have run on the GPU)."""
    return dataclasses.replace(nb, indices=to_host(nb.indices),
                               sqdist=None if nb.sqdist is None else to_host(nb.sqdist))


def _rule(confidence: float, u: float, dp: Any, dn: Any) -> Any:
    """guarantee in {-1, 0, +1}: 0 unless the confidence index is exactly 1; then the sign
    of ``0.5 * (dn - dp) - u`` (an infinite dn counts as +)."""
    if confidence != 1.0:
        return np.zeros(np.shape(dp), dtype=np.int64)
    half = 0.5 * (np.asarray(dn, dtype=np.float64) - np.asarray(dp, dtype=np.float64))
    return np.sign(half - u).astype(np.int64)


def _check_uncertainty(u: float) -> float:
    if not (isinstance(u, (int, float)) and math.isfinite(u) and u >= 0):
        raise ValueError(f"uncertainty must be a finite number >= 0; got {u!r}")
    return float(u)


def dataset_guarantee(
    features: Any, labels: Any, uncertainty: float = 0.0, order: int = 1,
    cancel: Cancellation | None = None, device: str | None = None,
) -> dict[str, Any]:
    """Return the dataset-level guarantee: dw_max, db_min, confidence, max_uncertainty.

    ``dw_max`` is the largest distance from a point to its nearest same-label neighbour,
    ``db_min`` the smallest distance between points of different labels; ``confidence`` is
    ``si`` (``high_order_si[order]`` for order > 1). Infinite values (one label only, or
    no class with two points) are None with a warning. ``cancel`` is checked between
    blocks of the neighbour searches. The searches run on ``device`` (as the engine's).
    """
    xp = get_backend(device)[1]
    x = to_host(v.as_features(features))
    y = v.as_labels(labels, x.shape[0])
    v.check_min_points(x.shape[0])
    u = _check_uncertainty(uncertainty)
    warnings: list[str] = []
    classes = np.unique(y)
    dw, db = 0.0, math.inf
    lonely: list[int] = []
    for c in classes:
        inside = x[y == c]
        if len(inside) >= 2:
            nb = _host(knn(xp.asarray(inside), 1, return_distance=True, xp=xp,
                           cancel=cancel))
            dw = max(dw, float(np.sqrt(_sq(nb).max())))
        else:
            lonely.append(int(c))
        if len(classes) > 1:
            nb = _host(knn(xp.asarray(x[y != c]), 1, queries=xp.asarray(inside),
                           return_distance=True, xp=xp, cancel=cancel))
            db = min(db, float(np.sqrt(_sq(nb).min())))
    if lonely:  # such a point's nearest same-label neighbour is infinitely far
        dw = math.inf
        warnings.append(f"class(es) {lonely} have a single point and no same-label neighbour: "
                        "dw_max is infinite")
    if len(classes) == 1:
        warnings.append("one label only: there is no point of another label (db_min infinite)")
    confidence = _confidence(x, y, order, cancel, device)
    max_u = 0.5 * (db - dw) if math.isfinite(db) or math.isfinite(dw) else math.nan
    guarantee = int(_rule(confidence, u, dw, db))
    return {
        "dw_max": None if math.isinf(dw) else dw, "db_min": None if math.isinf(db) else db,
        "confidence": confidence,
        "confidence_index": "si" if order == 1 else f"high_order_si[{order}]",
        "uncertainty": u, "max_uncertainty": None if not math.isfinite(max_u) else max_u,
        "guarantee": guarantee, "warnings": warnings,
    }


def _confidence(x: np.ndarray, y: np.ndarray, order: int,
                cancel: Cancellation | None = None, device: str | None = None) -> float:
    if order == 1:
        return float(compute_indices(x, y, indices=["si"], orders=[1], cancel=cancel,
                                     device=device)["si"])
    res = compute_indices(x, y, indices=["high_order_si"], orders=[order], cancel=cancel,
                          device=device)
    return float(res["high_order_si"][order])


@dataclass
class ClassificationReference:
    """A reference set (training features and labels) ready for per-query certification."""

    features: np.ndarray
    labels: np.ndarray
    device: str | None = None  # where the searches run (as the engine's device)
    index: ExactIndex = field(init=False)
    _other: dict[int, ExactIndex] = field(init=False, default_factory=dict)
    _confidence: dict[int, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.features = to_host(v.as_features(self.features, "reference features"))
        self.labels = v.as_labels(self.labels, self.features.shape[0], "reference labels")
        v.check_min_points(self.features.shape[0], "reference features")
        self.xp = get_backend(self.device)[1]
        self.index = ExactIndex(self.features, xp=self.xp)
        self.classes = np.unique(self.labels)

    def confidence(self, order: int = 1, cancel: Cancellation | None = None) -> float:
        """``si`` of the reference set (``high_order_si[order]`` for order > 1), cached."""
        if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or order < 1:
            raise ValueError(f"order must be an integer >= 1; got {order!r}")
        if order >= len(self.labels):
            raise ValueError(
                f"order {order} needs {order} neighbours but the reference set has "
                f"{len(self.labels)} points; use an order below {len(self.labels)}"
            )
        if order not in self._confidence:
            self._confidence[order] = _confidence(self.features, self.labels, order, cancel,
                                                  self.device)
        return self._confidence[order]

    def _others(self, c: int) -> ExactIndex:
        if c not in self._other:
            self._other[c] = ExactIndex(self.features[self.labels != c], xp=self.xp)
        return self._other[c]

    def certify(
        self, queries: Any, uncertainty: float = 0.0, order: int = 1,
        cancel: Cancellation | None = None,
    ) -> dict[str, Any]:
        """Per query: nn_label, dp, dn, confidence, guarantee, certified_radius.

        ``dn`` and ``certified_radius`` are ``inf`` where the reference has one label.
        ``cancel`` is checked between blocks of the searches.
        """
        q = to_host(v.as_features(queries, "queries"))
        if q.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"queries have {q.shape[1]} features but the reference has "
                f"{self.features.shape[1]}"
            )
        u = _check_uncertainty(uncertainty)
        conf = self.confidence(order, cancel)
        k = min(OTHER_K, len(self.labels))
        nb = _host(self.index.search(q, k, return_distance=True, cancel=cancel))
        lab = self.labels[nb.indices]
        nn_label = lab[:, 0]
        dist = np.sqrt(_sq(nb))
        other = lab != nn_label[:, None]
        found = other.any(axis=1)
        dn = np.full(len(q), np.inf)
        rows = np.nonzero(found)[0]
        dn[rows] = dist[rows, np.argmax(other[rows], axis=1)]
        if len(self.classes) > 1:
            # No other label among the k nearest (the usual case for a clean reference):
            # search the other labels' points, once per nearest label for all such rows.
            missing = np.nonzero(~found)[0]
            for c in np.unique(nn_label[missing]):
                rows = missing[nn_label[missing] == c]
                far = _host(self._others(int(c)).search(q[rows], 1, return_distance=True,
                                                        cancel=cancel))
                dn[rows] = np.sqrt(_sq(far)[:, 0])
        dp = dist[:, 0]
        return {
            "nn_label": nn_label, "dp": dp, "dn": dn,
            "confidence": np.full(len(q), conf),
            "guarantee": _rule(conf, u, dp, dn),
            "certified_radius": 0.5 * (dn - dp),
            "nn_index": nb.indices[:, 0],
        }


@dataclass
class RegressionReference:
    """A regression reference set: features, targets and each point's ``alpha``
    (``cancel`` stops the neighbour searches that prepare it)."""

    features: np.ndarray
    targets: np.ndarray
    index: ExactIndex = field(init=False)
    cancel: InitVar[Cancellation | None] = None
    device: str | None = None  # where the searches run (as the engine's device)

    def __post_init__(self, cancel: Cancellation | None) -> None:
        self.features = to_host(v.as_features(self.features, "reference features"))
        self.targets = v.as_targets(self.targets, self.features.shape[0], "reference targets")
        v.check_min_points(self.features.shape[0], "reference features")
        xp = get_backend(self.device)[1]
        self.index = ExactIndex(self.features, xp=xp)
        nearest = to_host(knn(xp.asarray(self.features), 1, xp=xp, cancel=cancel).indices)[:, 0]
        diff = self.targets - self.targets[nearest]
        self.alpha = np.sqrt((diff * diff).sum(axis=1))
        self.smi_linear = float(compute_indices(
            self.features, targets=self.targets, indices=["smi_linear"], cancel=cancel,
            device=self.device,
        )["smi_linear"])

    def candidates(self, x: np.ndarray, dp: float, u: float) -> np.ndarray:
        """Indices j with ``||x - x_j|| <= dp + 2u`` (the conservative superset)."""
        m = len(self.alpha)
        k = min(m, 64)
        # (dp + 2u)^2 from the rounded square root dp can fall just below the nearest
        # point's own squared distance: never below it, so p is always kept.
        sq_p = float(_sq(_host(self.index.search(x[None, :], 1, return_distance=True)))[0, 0])
        limit = max((dp + 2 * u) ** 2, sq_p)
        while True:
            nb = _host(self.index.search(x[None, :], k, return_distance=True))
            if _sq(nb)[0, -1] > limit or k == m:
                keep = _sq(nb)[0] <= limit
                return np.asarray(nb.indices[0][keep])
            k = min(m, 4 * k)

    def certify(self, queries: Any, uncertainty: float = 0.0, mode: str = "conservative",
                cancel: Cancellation | None = None) -> dict[str, Any]:
        """Per query: error_bound, the size of N_u(x), the mode, dp and the nearest point;
        ``cancel`` is checked between blocks of the search and between queries."""
        if mode not in ("conservative", "exact"):
            raise ValueError(f"mode must be 'conservative' or 'exact'; got {mode!r}")
        q = to_host(v.as_features(queries, "queries"))
        if q.shape[1] != self.features.shape[1]:
            raise ValueError(
                f"queries have {q.shape[1]} features but the reference has "
                f"{self.features.shape[1]}"
            )
        u = _check_uncertainty(uncertainty)
        cancel = checker(cancel)
        nb = _host(self.index.search(q, 1, return_distance=True, cancel=cancel))
        p_idx = nb.indices[:, 0]
        dp = np.sqrt(_sq(nb)[:, 0])
        bounds = np.empty(len(q))
        sizes = np.empty(len(q), dtype=np.int64)
        members: list[np.ndarray] = []
        for i in range(len(q)):
            cancel.check()
            cand = self.candidates(q[i], float(dp[i]), u)
            if mode == "exact" and u > 0:
                cand = np.asarray([j for j in cand
                                   if _cell_meets_ball(self.features, cand, int(j), q[i], u)],
                                  dtype=np.int64)
            members.append(cand)
            yd = self.targets[cand] - self.targets[p_idx[i]]
            bounds[i] = float((np.sqrt((yd * yd).sum(axis=1)) + self.alpha[cand]).max())
            sizes[i] = len(cand)
        return {"error_bound": bounds, "neighbourhood_size": sizes, "dp": dp,
                "nn_index": p_idx, "mode": mode, "members": members,
                "confidence": np.full(len(q), self.smi_linear)}


def _cell_meets_ball(
    points: np.ndarray, others: np.ndarray, j: int, x: np.ndarray, u: float
) -> bool:
    """Whether the Voronoi cell of point j meets the closed ball B(x, u).

    Only the points in ``others`` (the conservative set, which holds the nearest point)
    can bound the cell inside the ball, so their bisectors are the constraints. The
    distance from x to the cell is found by SLSQP from x_j (inside the cell); the
    membership test leans to inclusion within a small tolerance, so a solver's imprecision
    can only make the bound looser, never unsound.
    """
    from scipy.optimize import minimize  # noqa: PLC0415

    xj = points[j].astype(np.float64)
    ks = [int(k) for k in others if int(k) != j]
    if not ks:
        return True
    xk = points[ks].astype(np.float64)
    a = 2.0 * (xk - xj)  # a_k . z <= |x_k|^2 - |x_j|^2
    b = (xk * xk).sum(axis=1) - float(xj @ xj)
    x64 = x.astype(np.float64)
    if float(np.max(a @ x64 - b)) <= 0:
        return True  # x itself lies in the cell
    res = minimize(
        lambda z: float(((z - x64) ** 2).sum()), xj, jac=lambda z: 2.0 * (z - x64),
        constraints=[{"type": "ineq", "fun": lambda z: b - a @ z, "jac": lambda z: -a}],
        method="SLSQP", options={"maxiter": 200, "ftol": 1e-12},
    )
    if not res.success:  # no proven distance: keep j (a looser bound, never an unsound one)
        return True
    dist = math.sqrt(max(float(res.fun), 0.0))
    scale = max(1.0, float(np.abs(x64).max()))
    return dist <= u + 1e-6 * scale
