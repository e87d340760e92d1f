"""The smoothness index (SmI) family for regression (METRICS.md section 2).

``e_ij = ||y_i - y_j||`` is the target distance. Per point, ``Dmax``, ``Dmin`` (other points
only), ``Dmean`` (over all m points, the zero self-distance included) and the target-space
neighbours are computed in row blocks of exact float64 distances: O(block * m) memory.

One-dimensional targets (the usual regression case) are sorted once instead, O(m log m):
a target's farthest targets are the smallest and the largest, its nearest other target
is adjacent in sorted order, and its r nearest lie among its equal targets and the r sorted
positions on either side (each value's first members): O(m r) memory. These give the same
bits as the row blocks (every distance is computed by the same float64 operations, rounding
is monotone, ties go to the lower index); ``Dmean`` comes from prefix sums of the sorted
targets instead of a row sum, equal to it up to rounding (relative ~1e-15 for a million
points).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ...protos.options import ORDERED_SMI
from .backend import argsort_stable
from .knn import MIB, exact_sqdist, sort_by_distance_then_index, topk_exact


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
    m, t = y_base.shape[0], y_base.shape[1]
    if t == 1 and m > 1:
        return _target_stats_1d(xp, y_query[:, 0], y_base[:, 0], r, self_mode=self_mode,
                                memory_budget_mb=memory_budget_mb)
    return _target_stats_rows(xp, y_query, y_base, r, self_mode=self_mode,
                              memory_budget_mb=memory_budget_mb)


def _target_stats_rows(
    xp: ModuleType,
    y_query: Any,
    y_base: Any,
    r: int,
    *,
    self_mode: bool,
    memory_budget_mb: float,
    rows: Any | None = None,
) -> TargetStats:
    """:func:`target_stats` by row blocks of exact distances (for the queries ``rows``
    when given)."""
    if rows is not None:
        y_query = y_query[rows]
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
            own = xp.arange(s, s + e) if rows is None else rows[s : s + e]
            sq[xp.arange(e), own] = xp.inf
        dmin[s : s + e] = xp.sqrt(sq.min(axis=1))
        if r:
            vals, idx = topk_exact(xp, sq, r)
            nbr[s : s + e] = idx  # type: ignore[index]
            nbr_dist[s : s + e] = xp.sqrt(vals)  # type: ignore[index]
    return TargetStats(dmax, dmin, dmean, nbr, nbr_dist)


# Differences between 2^-511 and 2^511 square to normal floats: no underflow, no overflow.
_SAFE_LOW, _SAFE_HIGH = 2.0**-511, 2.0**511


def _sq(xp: ModuleType, a: Any, b: Any) -> Any:
    """Squared differences, the operations :func:`exact_sqdist` runs for one column."""
    diff = a - b
    diff *= diff
    return diff


def _target_stats_1d(
    xp: ModuleType, yq: Any, yb: Any, r: int, *, self_mode: bool, memory_budget_mb: float
) -> TargetStats:
    """:func:`target_stats` for one-dimensional targets, by sorting (see the module)."""
    yq = yq.astype(xp.float64, copy=False)
    yb = yb.astype(xp.float64, copy=False)
    m = len(yb)
    order = argsort_stable(xp, yb)  # equal targets in index order
    sv = yb[order]
    gaps = sv[1:] - sv[:-1]
    gaps = gaps[gaps > 0]
    # The widest difference, queries included (they may lie outside the targets' range).
    ends = xp.concatenate([sv[[0, -1]], yq])
    span = float(ends.max() - ends.min())
    if (len(gaps) and float(gaps.min()) < _SAFE_LOW) or span > _SAFE_HIGH:
        # Squared differences would underflow or overflow (the row blocks' distances are
        # then 0 or inf where the sums below would not be): do it by rows.
        return _target_stats_rows(xp, yq[:, None], yb[:, None], r, self_mode=self_mode,
                                  memory_budget_mb=memory_budget_mb)
    dmax = xp.sqrt(xp.maximum(_sq(xp, yq, sv[0]), _sq(xp, yq, sv[-1])))
    below = xp.searchsorted(sv, yq, side="left")  # sorted targets below each query
    # The nearest other target is next to the query's own sorted position (self mode) or
    # to where it would be inserted before equal targets.
    if self_mode:
        pos = xp.empty(m, dtype=xp.int64)
        pos[order] = xp.arange(m)
        left, right = pos - 1, pos + 1
    else:
        left, right = below - 1, below
    near = xp.minimum(
        xp.where(left >= 0, _sq(xp, yq, sv[xp.clip(left, 0, m - 1)]), xp.inf),
        xp.where(right < m, _sq(xp, yq, sv[xp.clip(right, 0, m - 1)]), xp.inf),
    )
    dmin = xp.sqrt(near)
    dmean = _mean_abs_difference(xp, yq, sv, below) / m
    nbr = nbr_dist = None
    if r:
        nbr, nbr_dist = _neighbours_1d(xp, yq, yb, order, sv, below, r, self_mode,
                                       memory_budget_mb)
    return TargetStats(dmax, dmin, dmean, nbr, nbr_dist)


def _mean_abs_difference(xp: ModuleType, yq: Any, sv: Any, k: Any) -> Any:
    """``sum_j |yq_i - sv_j|`` for sorted ``sv`` (``k[i]`` of them below ``yq[i]``), by
    prefix sums of the targets centred on their median, in blocks (so rounding grows with
    about sqrt(m) terms, not m)."""
    m = len(sv)
    z = sv - sv[m // 2]
    zq = yq - sv[m // 2]
    width = max(1, int(m**0.5))
    pad = (-m) % width
    blocks = xp.concatenate([z, xp.zeros(pad)]).reshape(-1, width)
    within = xp.cumsum(blocks, axis=1)
    before = xp.concatenate([xp.zeros(1), xp.cumsum(blocks.sum(axis=1))[:-1]])
    prefix = xp.concatenate([xp.zeros(1), (within + before[:, None]).ravel()[:m]])
    below = k * zq - prefix[k]  # equal targets add nothing
    above = (prefix[m] - prefix[k]) - (m - k) * zq
    return xp.maximum(below, 0.0) + xp.maximum(above, 0.0)


def _neighbours_1d(
    xp: ModuleType,
    yq: Any,
    yb: Any,
    order: Any,
    sv: Any,
    k: Any,
    r: int,
    self_mode: bool,
    memory_budget_mb: float,
) -> tuple[Any, Any]:
    """The r nearest targets of each query (ties to the lower index), by sorting; ``k[i]``
    sorted targets lie below ``yq[i]``.

    Candidates, 3r + 1 per query: the first r + 1 targets equal to the query, and the r
    sorted positions on either side of that group (or of the query's insertion point). Equal
    targets sit in index order, so the window's members of a value reaching past its left
    end are replaced by that value's first members; on the right a window already holds
    each value's first members. The choice is proven unless the nearest value beyond a
    window is as close as the r-th neighbour (distinct values whose distances round to the
    same float); those queries, and any with fewer than r candidates, are done by rows.
    """
    n, m = len(yq), len(sv)
    new = xp.ones(m, dtype=bool)
    new[1:] = sv[1:] != sv[:-1]
    starts = xp.nonzero(new)[0]  # first sorted position of each distinct value
    groups = len(starts)
    ends = xp.concatenate([starts[1:], xp.asarray([m])])
    gid = xp.cumsum(new) - 1
    k_c = xp.clip(k, 0, m - 1)
    has_own = (k < m) & (sv[k_c] == yq)
    own = gid[k_c]
    a = xp.where(has_own, starts[own], k)  # the window on the left ends before a
    b = xp.where(has_own, ends[own], k)  # the window on the right starts at b
    steps = xp.arange(r)
    own_p = starts[own][:, None] + xp.arange(r + 1)
    own_ok = has_own[:, None] & (own_p < ends[own][:, None])
    lo = a - r  # first position of the left window
    left_p = lo[:, None] + steps
    left_ok = left_p >= 0
    left_g = gid[xp.clip(left_p, 0, m - 1)]
    first = starts[left_g]
    left_p = xp.where(first < lo[:, None], first + steps, left_p)  # a value's first members
    right_p = b[:, None] + steps
    right_ok = right_p < m
    pos = xp.concatenate([own_p, left_p, right_p], axis=1)
    ok = xp.concatenate([own_ok, left_ok, right_ok], axis=1)
    cand = order[xp.clip(pos, 0, m - 1)]
    sq = xp.where(ok, _sq(xp, yq[:, None], sv[xp.clip(pos, 0, m - 1)]), xp.inf)
    if self_mode:
        sq = xp.where(cand == xp.arange(n)[:, None], xp.inf, sq)
    sq, cand = sort_by_distance_then_index(xp, sq, cand)
    sq, cand = sq[:, :r], cand[:, :r].copy()  # not a view that keeps all 3r + 1
    # The nearest value beyond each window must be farther than the r-th neighbour.
    g_left = gid[xp.clip(lo, 0, m - 1)] - 1  # the value below the window's first one
    g_right = gid[xp.clip(b + r - 1, 0, m - 1)] + 1  # the value above its last one
    beyond = xp.full(n, xp.inf)
    for g, inside in ((g_left, (lo >= 0) & (g_left >= 0)),
                      (g_right, (b + r - 1 < m) & (g_right < groups))):
        beyond = xp.minimum(beyond, xp.where(
            inside, _sq(xp, yq, sv[starts[xp.clip(g, 0, groups - 1)]]), xp.inf))
    dist = xp.sqrt(sq)
    redo = xp.nonzero(~(sq[:, -1] < beyond))[0]
    if len(redo):
        exact = _target_stats_rows(xp, yq[:, None], yb[:, None], r, self_mode=self_mode,
                                   memory_budget_mb=memory_budget_mb, rows=redo)
        cand[redo], dist[redo] = exact.nbr, exact.nbr_dist
    return cand, dist


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
