"""The smoothness index (SmI) family for regression (METRICS.md section 2).

``e_ij = ||y_i - y_j||`` is the target distance. Per point, ``Dmax``, ``Dmin`` (other points
only), ``Dmean`` (over all m points, the zero self-distance included) and the target-space
neighbours are computed in row blocks of exact float64 distances: O(block * m) memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from .knn import MIB, exact_sqdist, topk_exact

ORDERED_SMI = (
    "high_order_smi_linear",
    "high_order_smi_exp",
    "soft_order_smi_linear",
    "soft_order_smi_exp",
    "anti_smi_linear",
    "anti_smi_exp",
)


@dataclass
class TargetStats:
    """Per-point target statistics: ``dmax``, ``dmin``, ``dmean`` (n,) and, when asked,
    the target-space neighbours ``nbr`` (n, r) with their distances ``nbr_dist`` (n, r)."""

    dmax: Any
    dmin: Any
    dmean: Any
    nbr: Any | None
    nbr_dist: Any | None


def target_stats(
    xp: ModuleType,
    y_query: Any,
    y_base: Any,
    r: int,
    *,
    self_mode: bool,
    memory_budget_mb: float,
) -> TargetStats:
    """Return Dmax, Dmin, Dmean and ``r`` target neighbours of each query target.

    With ``self_mode`` the query set is the base set and each point is excluded from its
    own Dmin and neighbours (never from Dmean, whose mean runs over all m points).
    """
    n, m, t = y_query.shape[0], y_base.shape[0], y_base.shape[1]
    block = int(max(1, min(n, memory_budget_mb * MIB // (8 * m * (t + 4)))))
    dmax = xp.empty(n, dtype=xp.float64)
    dmin = xp.empty(n, dtype=xp.float64)
    dmean = xp.empty(n, dtype=xp.float64)
    nbr = xp.empty((n, r), dtype=xp.int64) if r else None
    nbr_dist = xp.empty((n, r), dtype=xp.float64) if r else None
    for s in range(0, n, block):
        e = block if s + block <= n else n - s
        sq = exact_sqdist(xp, y_query[s : s + e], y_base)
        dist = xp.sqrt(sq)
        dmax[s : s + e] = dist.max(axis=1)
        dmean[s : s + e] = dist.sum(axis=1) / m
        if self_mode:
            rows = xp.arange(e)
            sq[rows, rows + s] = xp.inf
        dmin[s : s + e] = xp.sqrt(sq.min(axis=1))
        if r:
            vals, idx = topk_exact(xp, sq, r)
            nbr[s : s + e] = idx  # type: ignore[index]
            nbr_dist[s : s + e] = xp.sqrt(vals)  # type: ignore[index]
    return TargetStats(dmax, dmin, dmean, nbr, nbr_dist)


def pair_distance(xp: ModuleType, y_query: Any, y_base: Any, idx: Any) -> Any:
    """Return ``||y_query[i] - y_base[idx[i, j]]||`` as an (n, K) float64 array."""
    return xp.sqrt(exact_sqdist(xp, y_query, y_base[idx]))


def _ratio(xp: ModuleType, num: Any, den: Any, if_zero: float) -> Any:
    zero = den == 0
    return xp.where(zero, if_zero, num / xp.where(zero, 1.0, den))


def smi_terms(xp: ModuleType, d_star: Any, stats: TargetStats, gamma: float) -> dict[str, Any]:
    """Return the per-point, per-position terms (n, K) of the SmI family.

    ``d_star[:, j]`` is the target distance to the (j+1)-th input-space neighbour and
    ``stats.nbr_dist[:, j]`` to the (j+1)-th target-space neighbour. A zero denominator
    means every other target is equally far: 1 for smoothness terms, 0 for anti terms.
    """
    dmax = stats.dmax[:, None]
    dmean = stats.dmean[:, None]
    d_circ = stats.nbr_dist
    gap = d_star - d_circ
    decay = xp.exp(-gamma * _ratio(xp, gap, xp.broadcast_to(dmean, gap.shape), 0.0))
    zero_mean = xp.broadcast_to(dmean == 0, gap.shape)
    return {
        "linear": _ratio(xp, dmax - d_star, dmax - d_circ, 1.0),
        "exp": xp.where(zero_mean, 1.0, decay),
        "anti_linear": _ratio(xp, gap, dmax - d_circ, 0.0),
        "anti_exp": xp.where(zero_mean, 0.0, 1.0 - decay),
    }


def smi_per_sample(
    xp: ModuleType,
    d_star: Any,
    stats: TargetStats,
    orders: Sequence[int],
    names: set[str],
    gamma: float,
) -> dict[str, Any]:
    """Return per-sample SmI values; ordered families are ``{order: array}``."""
    out: dict[str, Any] = {}
    d1 = d_star[:, 0]
    if "smi_linear" in names:
        out["smi_linear"] = _ratio(xp, stats.dmax - d1, stats.dmax - stats.dmin, 1.0)
    if "smi_exp" in names:
        zero = stats.dmean == 0
        ratio = _ratio(xp, d1 - stats.dmin, stats.dmean, 0.0)
        out["smi_exp"] = xp.where(zero, 1.0, xp.exp(-gamma * ratio))
    wanted = [name for name in ORDERED_SMI if name in names]
    if not wanted:
        return out
    terms = smi_terms(xp, d_star, stats, gamma)
    for name in wanted:
        kind, variant = name.split("_order_smi_") if "_order_" in name else ("anti", name[9:])
        key = variant if kind != "anti" else f"anti_{variant}"
        fam = {}
        for r in orders:
            block = terms[key][:, :r]
            fam[r] = block.mean(axis=1) if kind == "soft" else block.min(axis=1)
        out[name] = fam
    return out


def cross_smi_per_sample(
    xp: ModuleType, d_star: Any, stats: TargetStats, names: set[str], gamma: float
) -> dict[str, Any]:
    """Return per-test-point ``smi_linear``/``smi_exp`` against the train targets."""
    return smi_per_sample(xp, d_star, stats, (), names & {"smi_linear", "smi_exp"}, gamma)
