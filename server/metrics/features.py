"""Feature-level indices: single-feature SI/SmI and greedy forward feature ranking.

Single-feature indices sort each feature once (O(m log m)): in one dimension a point's
nearest neighbour is a point of equal value (the lowest such index) or the lowest-index point
of the adjacent distinct value on either side.

Forward selection keeps, per step, each point's ``pool`` nearest neighbours under the
selected subset S and the squared distance ``tau`` of the next one. Adding feature f only
increases distances, so if the best pool distance under S + f is below ``tau`` the nearest
neighbour is in the pool; only the rows where that fails are scanned in full. Distances
under S are accumulated feature by feature in selection order (float64), in one m x m
array when it fits the memory budget and recomputed block by block otherwise; both give
the same bits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from .backend import argsort_stable
from .knn import MIB, topk_exact
from .smoothness import TargetStats, pair_distance

POOL = 32
CACHE_BYTES = 512 << 10


def nearest_1d(xp: ModuleType, cols: Any) -> Any:
    """Return (m, c) int64: the nearest neighbour of each point along each column alone.

    Distances are ``(x_i - x_j)^2`` in float64; ties go to the lower index.
    """
    m, c = cols.shape
    v = cols.astype(xp.float64, copy=False)
    order = argsort_stable(xp, v, axis=0)  # equal values stay in index order
    sv = xp.take_along_axis(v, order, axis=0)
    new = xp.ones((m, c), dtype=bool)
    new[1:] = sv[1:] != sv[:-1]
    # Start of each position's group of equal values: number positions column-major so
    # that groups never span two columns, then look each group's first position up.
    flat_new = new.T.ravel()
    starts = xp.nonzero(flat_new)[0]
    gid = xp.cumsum(flat_new) - 1
    offset = (xp.arange(c) * m)[:, None]
    gstart = (starts[gid].reshape(c, m) - offset).T
    pos = xp.arange(m)[:, None]
    nxt = xp.minimum(pos + 1, m - 1)
    prv = xp.maximum(pos - 1, 0)
    has_twin = ~new | xp.concatenate([~new[1:], xp.zeros((1, c), dtype=bool)], axis=0)
    first = xp.take_along_axis(order, gstart, axis=0)
    second = xp.take_along_axis(order, xp.minimum(gstart + 1, m - 1), axis=0)
    twin_nn = xp.where(first == order, second, first)
    # A point alone at its value: the previous group's lowest index or the next one's.
    prev_start = xp.take_along_axis(gstart, xp.broadcast_to(prv, (m, c)), axis=0)
    left = xp.take_along_axis(order, prev_start, axis=0)
    right = xp.take_along_axis(order, xp.broadcast_to(nxt, (m, c)), axis=0)
    dl = sv - xp.take_along_axis(sv, xp.broadcast_to(prv, (m, c)), axis=0)
    dr = xp.take_along_axis(sv, xp.broadcast_to(nxt, (m, c)), axis=0) - sv
    dl = xp.where(pos == 0, xp.inf, dl * dl)
    dr = xp.where(pos == m - 1, xp.inf, dr * dr)
    pick_left = (dl < dr) | ((dl == dr) & (left < right))
    nn_sorted = xp.where(has_twin, twin_nn, xp.where(pick_left, left, right))
    out = xp.empty_like(nn_sorted)
    out[order, xp.arange(c)[None, :]] = nn_sorted  # back from sorted to original positions
    return out


def _column_chunks(m: int, d: int, budget: int) -> int:
    return int(max(1, min(d, budget // (8 * 24 * m))))


RowScore = Callable[[Any, Any], Any]


def single_feature_scores(
    xp: ModuleType,
    x: Any,
    row_score: RowScore,
    *,
    memory_budget_mb: float,
    features: Sequence[int] | None = None,
) -> Any:
    """Return, for each feature (or each of ``features``), the index computed on it alone.

    ``row_score(rows, nn)`` maps neighbour indices (b, c) of the points ``rows`` to their
    per-point values; the index is the mean over all points.
    """
    m = x.shape[0]
    feats = list(range(x.shape[1])) if features is None else list(features)
    out = xp.empty(len(feats), dtype=xp.float64)
    step = _column_chunks(m, len(feats), int(memory_budget_mb * MIB))
    rows = xp.arange(m)
    for s in range(0, len(feats), step):
        nn = nearest_1d(xp, x[:, feats[s : s + step]])
        out[s : s + step] = _column_means(xp, row_score(rows, nn))
    return out


def _column_means(xp: ModuleType, values: Any) -> Any:
    """Mean of each column, summed the same way whatever the number of columns.

    Each column is made contiguous and reduced on its own, so a feature's score never
    depends on how many features share its block (and so on the memory budget).
    """
    return xp.ascontiguousarray(values.T).sum(axis=1) / values.shape[0]


def si_rows(xp: ModuleType, labels: Any) -> RowScore:
    """Return the per-point SI scorer: 1.0 where the neighbour shares the point's label."""

    def score(rows: Any, nn: Any) -> Any:
        return (labels[nn] == labels[rows][:, None]).astype(xp.float64)

    return score


def smi_rows(
    xp: ModuleType, targets: Any, stats: TargetStats, variant: str, gamma: float
) -> RowScore:
    """Return the per-point ``smi_linear`` (variant ``"linear"``) or ``smi_exp`` scorer."""

    def score(rows: Any, nn: Any) -> Any:
        d1 = pair_distance(xp, targets[rows], targets, nn)
        dmax, dmin = stats.dmax[rows][:, None], stats.dmin[rows][:, None]
        dmean = stats.dmean[rows][:, None]
        if variant == "linear":
            den = dmax - dmin
            return xp.where(den == 0, 1.0, (dmax - d1) / xp.where(den == 0, 1.0, den))
        ratio = (d1 - dmin) / xp.where(dmean == 0, 1.0, dmean)
        return xp.where(dmean == 0, 1.0, xp.exp(-gamma * ratio))

    return score


@dataclass
class Ranking:
    """Greedy forward selection: ``order`` of features, ``scores`` after each step, and
    ``best_subset``, the shortest prefix that attains the maximum score."""

    criterion: str
    order: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)

    @property
    def best_subset(self) -> list[int]:
        if not self.scores:
            return []
        best = max(self.scores)
        return self.order[: self.scores.index(best) + 1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "order": list(self.order),
            "scores": list(self.scores),
            "best_subset": self.best_subset,
        }


class _SubsetDistances:
    """Squared distances under the selected features, accumulated in selection order."""

    def __init__(self, xp: ModuleType, x: Any, budget: int) -> None:
        self.xp, self.x = xp, x
        m = x.shape[0]
        self.selected: list[int] = []
        self.full = xp.zeros((m, m), dtype=xp.float64) if 8 * m * m <= budget // 2 else None

    def add(self, f: int) -> None:
        self.selected.append(f)
        if self.full is not None:
            col = self.x[:, f].astype(self.xp.float64)
            diff = col[:, None] - col[None, :]
            self.full += diff * diff

    def rows(self, r: Any) -> Any:
        xp = self.xp
        if self.full is not None:
            return self.full[r]
        out = xp.zeros((len(r), self.x.shape[0]), dtype=xp.float64)
        for f in self.selected:
            col = self.x[:, f].astype(xp.float64)
            diff = col[r][:, None] - col[None, :]
            out += diff * diff
        return out


def forward_selection(
    xp: ModuleType,
    x: Any,
    row_score: RowScore,
    criterion: str,
    *,
    max_features: int | None,
    patience: int | None,
    candidates: Sequence[int] | None,
    memory_budget_mb: float,
    progress: Callable[[int, int], None] | None = None,
) -> Ranking:
    """Return the greedy forward selection that maximises a nearest-neighbour index.

    ``row_score(rows, nn)`` maps neighbour indices (b, c) to per-point values whose mean
    over all points is the index. Ties between candidates go to the lower feature index.
    """
    m, d = x.shape
    cands = list(range(d)) if candidates is None else sorted(set(int(c) for c in candidates))
    limit = len(cands) if max_features is None else min(max_features, len(cands))
    budget = int(memory_budget_mb * MIB)
    ranking = Ranking(criterion)
    dist = _SubsetDistances(xp, x, budget)
    remaining = list(cands)
    best_so_far = -float("inf")
    since_best = 0
    while remaining and len(ranking.order) < limit:
        if not ranking.order:
            scores = single_feature_scores(
                xp, x, row_score, memory_budget_mb=memory_budget_mb, features=remaining
            )
        else:
            scores = _score_candidates(xp, x, dist, remaining, row_score, budget)
        scores_h = [float(v) for v in scores.tolist()]
        pick = max(range(len(remaining)), key=lambda i: (scores_h[i], -remaining[i]))
        f = remaining.pop(pick)
        ranking.order.append(f)
        ranking.scores.append(scores_h[pick])
        dist.add(f)
        if progress is not None:
            progress(len(ranking.order), limit)
        if scores_h[pick] > best_so_far:
            best_so_far, since_best = scores_h[pick], 0
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    return ranking


def _score_candidates(
    xp: ModuleType,
    x: Any,
    dist: _SubsetDistances,
    feats: list[int],
    row_score: RowScore,
    budget: int,
) -> Any:
    """Return the index of the selected subset plus each candidate feature."""
    m = x.shape[0]
    full_pool = m - 1 <= POOL  # every other point is in the pool: no outside bound
    pool = m - 1 if full_pool else POOL
    pool_d = xp.empty((m, pool), dtype=xp.float64)
    pool_i = xp.empty((m, pool), dtype=xp.int64)
    tau = xp.full(m, xp.inf)
    block = int(max(1, min(m, budget // (8 * m * 6))))
    for s in range(0, m, block):
        r = xp.arange(s, min(s + block, m))
        vals, ids = topk_exact(xp, _rows_without_self(xp, dist, r), pool if full_pool else pool + 1)
        if not full_pool:
            tau[r] = vals[:, pool]
        # Pool in index order, so that the first minimum along it is the lowest index.
        by_idx = xp.argsort(ids[:, :pool], axis=1)
        pool_i[r] = xp.take_along_axis(ids[:, :pool], by_idx, axis=1)
        pool_d[r] = xp.take_along_axis(vals[:, :pool], by_idx, axis=1)
    xf = x[:, feats].astype(xp.float64)
    scores = xp.empty(len(feats), dtype=xp.float64)
    cchunk = int(max(1, min(len(feats), budget // (8 * m * 4))))
    for a in range(0, len(feats), cchunk):
        cols = xf[:, a : a + cchunk]  # (m, c)
        c = cols.shape[1]
        per_point = xp.empty((m, c), dtype=xp.float64)
        # Rows per block: the (rows, pool, c) float64 temporaries stay around 2 MiB, in
        # cache, instead of streaming hundreds of MiB through memory per step.
        rblock = int(max(1, min(m, budget // (8 * 4 * pool * c), CACHE_BYTES // (8 * pool * c))))

        def score_block(s: int, cols: Any = cols, per_point: Any = per_point,
                        rblock: int = rblock) -> None:
            """Score the candidates of ``cols`` for the rows of one cache-sized block."""
            r = xp.arange(s, min(s + rblock, m))
            pi = pool_i[r]
            diff = cols[r][:, None, :] - cols[pi]  # (b, pool, c)
            cand = pool_d[r][:, :, None] + diff * diff
            first = xp.argmin(cand, axis=1)  # (b, c): first minimum = lowest index
            best = xp.take_along_axis(cand, first[:, None, :], axis=1)[:, 0, :]
            nn = xp.take_along_axis(pi, first, axis=1)
            # Distances only grow when a feature is added: a pool minimum below tau is the
            # nearest neighbour. Rows where it is not get a full scan.
            bad_r, bad_c = xp.nonzero(~(best < tau[r][:, None]))
            for p in range(0, len(bad_r), block):
                br, bc = bad_r[p : p + block], bad_c[p : p + block]
                rows = r[br]
                full = _rows_without_self(xp, dist, rows)
                full += (cols[rows, bc][:, None] - cols[:, bc].T) ** 2
                nn[br, bc] = topk_exact(xp, full, 1)[1][:, 0]
            per_point[s : s + len(r)] = row_score(r, nn)

        for s in range(0, m, rblock):
            score_block(s)
        scores[a : a + c] = _column_means(xp, per_point)
    return scores


def _rows_without_self(xp: ModuleType, dist: _SubsetDistances, rows: Any) -> Any:
    """Subset distances of ``rows`` to every point, each row's own entry set to inf."""
    out = dist.rows(rows)
    out[xp.arange(len(rows)), rows] = xp.inf
    return out
