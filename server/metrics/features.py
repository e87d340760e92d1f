"""Feature-level indices: single-feature SI/SmI and greedy forward feature ranking.

Single-feature indices sort each feature once (O(m log m)): in one dimension a point's
nearest neighbour is a point of equal value (the lowest such index) or the lowest-index point
of the adjacent distinct value on either side.

Forward selection asks, at every step, for each point's nearest neighbour under the
selected subset S plus each remaining candidate f. Adding f only increases distances, so a
point's pool of nearest points under S, scanned nearest first, settles the pair (point, f)
as soon as the best distance found is below the subset distance of every point not yet
scanned. Pools are kept from step to step (adding the chosen feature updates them), most
pairs settle after scanning a few members over dense (points x candidates) arrays, and the
rest scan further, with the pools extended where they run out (``_CandidateSearch``).
Distances under S are accumulated feature by feature in selection order (float64), in one
m x m array when it fits the memory budget and recomputed block by block otherwise; both
give the same bits, and every comparison breaks ties by the lower index, so the result is
the definition's, whatever path a pair took.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from ..cancellation import Cancellation
from .backend import argsort_stable
from .knn import MIB
from .smoothness import TargetStats, pair_distance

POOL = 32  # smallest pool: nearest points kept per point
REFILL = 16  # a point left with fewer pool members than this gets a new pool
FIRST_STAGE = 4  # smallest first scan: members every (point, candidate) pair scans
STAGE_GROWTH = 4  # each later scan covers up to this many times the members before it
POOL_GROWTH = 8  # a pool that ran out before settling its pairs grows by this factor
# Time to scan one member for every pair over dense arrays, over the time to settle one
# open pair on its own (measured: ~2 ns and ~350 ns on the reference CPU). It sets how
# many pairs may stay open after the dense scans; it changes the speed, never the result.
DENSE_COST_RATIO = 1 / 175
CACHE_BYTES = 512 << 10  # working set of one block on the CPU (about an L2 cache)


def _block_bytes(xp: ModuleType, budget: int) -> int:
    """Bytes one block of a scan may touch: cache-sized on the CPU; on a GPU, where each
    block is a kernel launch, a sixteenth of the budget."""
    return CACHE_BYTES if xp is np else int(max(CACHE_BYTES, budget // 16))


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
    cancel: Cancellation | None = None,
) -> Any:
    """Return, for each feature (or each of ``features``), the index computed on it alone.

    ``row_score(rows, nn)`` maps neighbour indices (b, c) of the points ``rows`` to their
    per-point values; the index is the mean over all points. ``cancel`` is checked before
    each block of features.
    """
    m = x.shape[0]
    feats = list(range(x.shape[1])) if features is None else list(features)
    out = xp.empty(len(feats), dtype=xp.float64)
    step = _column_chunks(m, len(feats), int(memory_budget_mb * MIB))
    rows = xp.arange(m)
    for s in range(0, len(feats), step):
        if cancel is not None:
            cancel.check()
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
    """Squared distances under the selected features, accumulated in selection order.

    One m x m array when it fits half the budget (a point's own entry held at ``inf``),
    else recomputed for the rows asked; both give the same bits.
    """

    def __init__(self, xp: ModuleType, x: Any, budget: int) -> None:
        self.xp, self.x, self.budget = xp, x, budget
        m = x.shape[0]
        self.selected: list[int] = []
        self.full = None
        if 8 * m * m <= budget // 2:
            self.full = xp.zeros((m, m), dtype=xp.float64)
            self.full[xp.arange(m), xp.arange(m)] = xp.inf

    def column(self, f: int) -> Any:
        return self.x[:, f].astype(self.xp.float64)

    def add(self, f: int) -> None:
        self.selected.append(f)
        if self.full is not None:
            col = self.column(f)
            m = len(col)
            step = int(max(1, _block_bytes(self.xp, self.budget) // (8 * m)))  # rows in cache
            for s in range(0, m, step):
                diff = col[s : s + step, None] - col[None, :]
                diff *= diff
                self.full[s : s + step] += diff

    def rows(self, r: Any) -> Any:
        """A new (len(r), m) array: the distances of points ``r`` to every point, their
        own entries ``inf``."""
        xp = self.xp
        if self.full is not None:
            return self.full[r]
        m = self.x.shape[0]
        cols = xp.ascontiguousarray(self.x[:, self.selected].T.astype(xp.float64))  # (t, m)
        out = xp.zeros((len(r), m), dtype=xp.float64)
        step = int(max(1, _block_bytes(xp, self.budget) // (8 * m)))
        for s in range(0, len(r), step):  # a few rows at a time, summed in cache
            rows, acc = r[s : s + step], out[s : s + step]
            for col in cols:
                diff = col[rows][:, None] - col[None, :]
                diff *= diff
                acc += diff
        out[xp.arange(len(r)), r] = xp.inf
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
    cancel: Cancellation | None = None,
) -> Ranking:
    """Return the greedy forward selection that maximises a nearest-neighbour index.

    ``row_score(rows, nn)`` maps neighbour indices (b, c) to per-point values whose mean
    over all points is the index. Ties between candidates go to the lower feature index.
    ``cancel`` is checked before each step and each block of candidates.
    """
    m, d = x.shape
    cands = list(range(d)) if candidates is None else sorted(set(int(c) for c in candidates))
    limit = len(cands) if max_features is None else min(max_features, len(cands))
    budget = int(memory_budget_mb * MIB)
    ranking = Ranking(criterion)
    dist = _SubsetDistances(xp, x, budget)
    search = _CandidateSearch(xp, dist, budget)
    remaining = list(cands)
    best_so_far = -float("inf")
    since_best = 0
    while remaining and len(ranking.order) < limit:
        if cancel is not None:
            cancel.check()
        if not ranking.order:
            scores = single_feature_scores(
                xp, x, row_score, memory_budget_mb=memory_budget_mb, features=remaining,
                cancel=cancel,
            )
        else:
            scores = search.score(remaining, row_score, cancel)
        scores_h = [float(v) for v in scores.tolist()]
        pick = max(range(len(remaining)), key=lambda i: (scores_h[i], -remaining[i]))
        f = remaining.pop(pick)
        ranking.order.append(f)
        ranking.scores.append(scores_h[pick])
        dist.add(f)
        search.advance(f)
        if progress is not None:
            progress(len(ranking.order), limit)
        if scores_h[pick] > best_so_far:
            best_so_far, since_best = scores_h[pick], 0
        else:
            since_best += 1
            if patience is not None and since_best >= patience:
                break
    return ranking


@dataclass
class _Pool:
    """Some points' nearest points under the selected subset, nearest first.

    ``ids`` and ``d`` (n, size): members of each of the n points ``rows`` (``None``:
    every point, in order) and their squared distances, ascending; ``tau`` (n,): a lower
    bound on the distance of every point left out (``inf`` when none is). Unused slots
    (members dropped since the pool was built, or none left to take) hold ``inf`` and the
    point itself. So every point from rank r on is at ``min(d[:, r], tau)`` or beyond.

    An extension pool holds more points that earlier pools of the same points (all of
    whose members were scanned) left out: the next nearest (``build``), or all of them up
    to a limit (``within``).
    """

    ids: Any
    d: Any
    tau: Any
    rows: Any | None = None

    @property
    def size(self) -> int:
        return int(self.ids.shape[1])

    @classmethod
    def build(cls, xp: ModuleType, dist: _SubsetDistances, rows: Any | None, size: int,
              budget: int, leave_out: Sequence[_Pool] = ()) -> _Pool:
        """The ``size`` nearest of each of ``rows`` among the points no pool of
        ``leave_out`` holds for it."""
        m = dist.x.shape[0]
        size = min(size, m - 1)
        n = m if rows is None else len(rows)
        parts = []
        # Blocks of rows a few cache sizes large: no big temporaries to fault in.
        block = int(max(1, min(n, budget // (8 * m * 6), 4 * _block_bytes(xp, budget) // (16 * m))))
        for s in range(0, n, block):
            points = xp.arange(s, min(s + block, n)) if rows is None else rows[s : s + block]
            sub = dist.rows(points)
            for other in leave_out:
                other.leave_out_of(xp, sub, points)
            parts.append(cls.from_distances(xp, sub, points, size))
        if len(parts) == 1:
            return cls(parts[0].ids, parts[0].d, parts[0].tau, rows)
        return cls(xp.concatenate([p.ids for p in parts]), xp.concatenate([p.d for p in parts]),
                   xp.concatenate([p.tau for p in parts]), rows)

    @classmethod
    def from_distances(cls, xp: ModuleType, sub: Any, points: Any, size: int) -> _Pool:
        """The pool of ``points`` from their distance rows ``sub`` (len(points), m), in
        which ``inf`` marks the points to leave out (the point itself among them)."""
        size = min(size, sub.shape[1] - 1)
        # The size nearest in any order, then the next one's distance (inf if none).
        part = xp.argpartition(sub, size, axis=1)
        tau = xp.take_along_axis(sub, part[:, size : size + 1], axis=1)[:, 0]
        vals = xp.take_along_axis(sub, part[:, :size], axis=1)
        order = xp.argsort(vals, axis=1)  # equal distances in any order
        ids = xp.take_along_axis(part[:, :size], order, axis=1)
        d = xp.take_along_axis(vals, order, axis=1)
        unused = xp.isinf(d)
        ids[unused] = xp.broadcast_to(points[:, None], d.shape)[unused]
        return cls(ids, d, tau, points)

    @classmethod
    def within(cls, xp: ModuleType, sub: Any, inside: Any, points: Any, limit: Any,
               size: int) -> _Pool:
        """The pool of ``points`` holding the entries of their distance rows ``sub`` that
        ``inside`` marks (those up to ``limit``; at most ``size`` per row): every point
        left out is beyond ``limit``."""
        n = len(points)
        size = max(size, 1)
        rr, cc = xp.nonzero(inside)  # row by row, so each row's entries are consecutive
        counts = inside.sum(axis=1)
        slot = xp.arange(len(rr)) - (xp.cumsum(counts) - counts)[rr]
        ids = xp.broadcast_to(points[:, None], (n, size)).copy()
        d = xp.full((n, size), xp.inf)
        ids[rr, slot], d[rr, slot] = cc, sub[rr, cc]
        order = xp.argsort(d, axis=1)
        tau = xp.nextafter(limit, xp.inf)  # the smallest float beyond the limit
        return cls(xp.take_along_axis(ids, order, axis=1), xp.take_along_axis(d, order, axis=1),
                   tau, points)

    def leave_out_of(self, xp: ModuleType, sub: Any, points: Any) -> None:
        """Set the entries of this pool's members to ``inf`` in the distance rows ``sub``
        of ``points`` (which it must hold)."""
        xp.put_along_axis(sub, self.ids[self.locate(xp, points)], xp.inf, axis=1)

    def locate(self, xp: ModuleType, pr: Any) -> Any:
        """Positions in this pool of the points ``pr`` (which it must hold)."""
        return pr if self.rows is None else xp.searchsorted(self.rows, pr)

    def bound(self, xp: ModuleType, q: Any, rank: int) -> Any:
        """Lower bound on the distance of every point from ``rank`` on, for positions q."""
        tau = self.tau[q]
        return tau if rank >= self.size else xp.minimum(self.d[q, rank], tau)

    def advance(self, xp: ModuleType, col: Any) -> None:
        """Add a feature (its float64 column) to the subset: members' distances grow by
        their squared difference along it, and members now at ``tau`` or beyond leave."""
        diff = col[:, None] - col[self.ids]
        diff *= diff
        d = self.d + diff
        gone = ~(d < self.tau[:, None])
        d[gone] = xp.inf
        ids = xp.where(gone, xp.arange(len(d))[:, None], self.ids)
        order = xp.argsort(d, axis=1)
        self.ids = xp.take_along_axis(ids, order, axis=1)
        self.d = xp.take_along_axis(d, order, axis=1)

    def update(self, xp: ModuleType, other: _Pool) -> None:
        """Take the rows of ``other`` (built for some of this pool's points, same size)."""
        self.ids[other.rows], self.d[other.rows], self.tau[other.rows] = (
            other.ids, other.d, other.tau)


class _CandidateSearch:
    """Each point's nearest neighbour under the selected subset plus each candidate.

    Adding a feature only increases distances, so for a pair (point, candidate) a pool
    member whose subset distance is already beyond the best found cannot win: scanning
    the pool nearest first, the pair is settled as soon as its best is below the bound of
    the members not yet scanned. The pools (the POOL nearest points of each point) are
    kept from step to step: adding the chosen feature updates their distances and drops
    members that pass ``tau``; points left with few members get new pools.

    Every pair first scans the ``width`` nearest members (in index order, so that the
    first strict minimum is the lowest index among equals) over dense arrays. While many
    pairs stay open the next members are scanned the same way, extending every point's
    pool when it runs out; the pairs left scan further on their own (``_settle``), and
    those their pools leave open get an extension per point (``_extend``). ``width`` and
    the pool size follow the data from step to step: they change the speed, never the
    result.
    """

    def __init__(self, xp: ModuleType, dist: _SubsetDistances, budget: int) -> None:
        self.xp, self.dist, self.budget = xp, dist, budget
        m = dist.x.shape[0]
        # The pools of every point take at most a quarter of the budget.
        self.max_size = int(max(1, min(m - 1, budget // (4 * 16 * m))))
        self.size = min(POOL, self.max_size)
        self.width = min(FIRST_STAGE, self.size)
        self.pool: _Pool | None = None

    def advance(self, f: int) -> None:
        if self.pool is not None:
            self.pool.advance(self.xp, self.dist.column(f))

    def _prepare(self) -> _Pool:
        xp = self.xp
        pool = self.pool
        if pool is None or pool.size < self.size:
            pool = _Pool.build(xp, self.dist, None, self.size, self.budget)
        elif pool.size > self.size:  # shrink: the dropped members bound the rest
            pool = _Pool(pool.ids[:, : self.size].copy(), pool.d[:, : self.size].copy(),
                         xp.minimum(pool.tau, pool.d[:, self.size]))
        few = xp.nonzero(xp.isinf(pool.d[:, min(self.size, REFILL) - 1]))[0]
        if len(few):
            pool.update(xp, _Pool.build(xp, self.dist, few, pool.size, self.budget))
        self.pool = pool
        return pool

    def score(self, feats: list[int], row_score: RowScore,
              cancel: Cancellation | None = None) -> Any:
        """Return the index of the selected subset plus each candidate feature; ``cancel``
        is checked before each block of candidates."""
        xp = self.xp
        rows = xp.arange(self.dist.x.shape[0])
        scores = xp.empty(len(feats), dtype=xp.float64)
        for part, nn in self.neighbours(feats, cancel):
            scores[part] = _column_means(xp, row_score(rows, nn))
        return scores

    def neighbours(self, feats: list[int], cancel: Cancellation | None = None
                   ) -> Iterator[tuple[slice, Any]]:
        """Yield ``(part, nn)``: for the candidates ``feats[part]``, each point's nearest
        neighbour (m, len) under the selected subset plus that candidate."""
        xp, dist = self.xp, self.dist
        m = dist.x.shape[0]
        self._prepare()
        cchunk = int(max(1, min(len(feats), self.budget // (8 * m * 8))))
        opened = 0.0
        for a in range(0, len(feats), cchunk):
            if cancel is not None:
                cancel.check()
            part = slice(a, min(a + cchunk, len(feats)))
            cols = xp.stack([dist.column(f) for f in feats[part]], axis=1)
            nn, frac = self._nearest(cols)
            opened += frac * cols.shape[1]
            yield part, nn
        opened /= len(feats)
        # Widen the first scan when doubling it would likely (the open share roughly
        # halving) cost less than settling the pairs it leaves open; narrow it when
        # halving it would.
        if opened > 2 * DENSE_COST_RATIO * self.width and self.width < self.max_size:
            self.width = min(2 * self.width, self.max_size)
        elif opened < DENSE_COST_RATIO * self.width / 2 and self.width > FIRST_STAGE:
            self.width //= 2
        # The pool holds enough members for the first scan and the next stages; a pool
        # grown for a hard step shrinks again once it is over twice that.
        target = max(min(POOL, self.max_size), min(self.width * 8, self.max_size))
        if self.pool is not None and (target > self.pool.size or 2 * target < self.pool.size):
            self.size = target

    def _nearest(self, cols: Any) -> tuple[Any, float]:
        """Return (m, c) nearest neighbours for the columns ``cols`` and the fraction of
        pairs the first dense scan left open."""
        xp = self.xp
        assert self.pool is not None
        m, c = cols.shape
        best_d = xp.empty((m, c), dtype=xp.float64)
        best_i = xp.empty((m, c), dtype=xp.int64)
        everyone = xp.arange(m)
        chain = [self.pool]
        covered = self.pool.size  # members per point in the chain
        lo, hi, first_open = 0, min(self.width, self.pool.size), None
        while True:
            pool = chain[-1]
            seg = xp.argsort(pool.ids[:, lo:hi], axis=1)  # each row's members by index
            _dense_scan(xp, cols, xp.take_along_axis(pool.ids[:, lo:hi], seg, axis=1),
                        xp.take_along_axis(pool.d[:, lo:hi], seg, axis=1), best_d, best_i,
                        merge=first_open is not None, budget=self.budget)
            open_ = ~(best_d < pool.bound(xp, everyone, hi)[:, None])
            frac = float(open_.mean())
            if first_open is None:
                first_open = frac
            lo = hi
            # Scan the next members densely while that costs less than settling the
            # open pairs one by one. When the pool ran out, that means extending it: for
            # every point at once, as also when most points would need an extension of
            # their own (each costs a pass over the point's distances either way).
            grow = lo >= pool.size
            nxt = (min(covered * (POOL_GROWTH - 1), self.max_size - covered) if grow
                   else min(lo * STAGE_GROWTH, pool.size) - lo)
            if nxt <= 0:
                break
            if frac <= DENSE_COST_RATIO * nxt and not (
                    grow and float(open_.any(axis=1).mean()) > 0.5):
                break
            if grow:
                chain.append(_Pool.build(xp, self.dist, None, nxt, self.budget, chain))
                covered += nxt
                lo, hi = 0, min(covered // POOL_GROWTH, nxt)
            else:
                hi = lo + nxt
        pc, pr = xp.nonzero(open_.T)  # by column: the pairs of a chunk share columns
        flat = xp.ascontiguousarray(cols.T).ravel()
        _settle(xp, flat, self.dist, chain, pr, pc, lo, best_d, best_i, self.budget)
        return best_i, first_open


def _dense_scan(xp: ModuleType, cols: Any, ids: Any, d: Any, best_d: Any, best_i: Any,
                merge: bool, budget: int) -> None:
    """Scan members ``ids``/``d`` (m, w), each row in index order, for every pair.

    Sets ``best_d``/``best_i`` (m, c) in place, or with ``merge`` keeps what they hold
    where it is better (ties to the lower index). Within the scan only arithmetic runs per
    member (masked copies cost ten times as much): the minimum by ``minimum``, and the
    member's rank by ``maximum``, since ranks only grow and each strict improvement
    (the first of equals, so the lowest index) records its rank.
    """
    m, c = cols.shape
    w = ids.shape[1]
    rank_t = xp.uint16 if w <= 0xFFFF else xp.int64
    rblock = int(max(1, min(m, _block_bytes(xp, budget) // (8 * c))))
    v = xp.empty((rblock, c), dtype=xp.float64)
    less = xp.empty((rblock, c), dtype=bool)
    ranks = xp.empty((rblock, c), dtype=rank_t)
    tmp = xp.empty((rblock, c), dtype=rank_t)
    for s in range(0, m, rblock):
        e = min(s + rblock, m)
        n = e - s
        own, vv, lt, rk, tt = cols[s:e], v[:n], less[:n], ranks[:n], tmp[:n]
        bd = xp.empty((n, c), dtype=xp.float64) if merge else best_d[s:e]
        for p in range(w):
            xp.take(cols, ids[s:e, p], axis=0, out=vv)
            xp.subtract(own, vv, out=vv)
            vv *= vv
            vv += d[s:e, p][:, None]
            if p == 0:
                bd[...] = vv
                rk[...] = 0
                continue
            xp.less(vv, bd, out=lt)
            xp.minimum(bd, vv, out=bd)
            xp.multiply(lt, rank_t(p), out=tt)
            xp.maximum(rk, tt, out=rk)
        bi = xp.take_along_axis(ids[s:e], rk.astype(xp.int64), axis=1)
        if not merge:
            best_i[s:e] = bi
            continue
        old_d, old_i = best_d[s:e], best_i[s:e]
        upd = (bd < old_d) | ((bd == old_d) & (bi < old_i))
        best_d[s:e] = xp.where(upd, bd, old_d)
        best_i[s:e] = xp.where(upd, bi, old_i)


def _extend(xp: ModuleType, flat: Any, dist: _SubsetDistances, chain: list[_Pool], pr: Any,
            pc: Any, best_d: Any, best_i: Any, budget: int) -> None:
    """Settle the pairs (pr, pc) that ``chain`` left open.

    Only points within a pair's best distance (under the subset) can still beat it, so
    each point of ``pr`` gets one extension holding every point the chain left out up to
    the largest best distance of its pairs; points with similar counts share a pool
    size. Scanned in full, it settles every pair; scanned nearest first, most pairs settle
    early.
    """
    m = best_d.shape[0]
    by_row = argsort_stable(xp, pr)  # by point, each point's pairs still by column
    pr, pc = pr[by_row], pc[by_row]
    points = xp.unique(pr)
    # At least the best of each open pair of the point; in practice the largest best of
    # its row belongs to an open pair (a settled pair's best is below the bound the open
    # ones are still above).
    limit = best_d[points].max(axis=1)
    # Blocks of points whose distance rows stay a few MB: no big temporaries to fault in.
    step = int(max(1, min(len(points), budget // (32 * m), _block_bytes(xp, budget) // m)))
    for s in range(0, len(points), step):
        block, lim = points[s : s + step], limit[s : s + step]
        a = int(xp.searchsorted(pr, block[0], side="left"))
        b = int(xp.searchsorted(pr, block[-1], side="right"))
        bpr, bpc = pr[a:b], pc[a:b]
        rows = dist.rows(block)
        for p in chain:
            p.leave_out_of(xp, rows, block)
        inside = rows <= lim[:, None]
        within = inside.sum(axis=1)
        by_count = xp.argsort(within)
        counts = [int(v) for v in within[by_count].tolist()]
        g0 = 0
        while g0 < len(counts):  # groups whose counts stay within a factor STAGE_GROWTH
            g1 = g0 + 1
            while g1 < len(counts) and counts[g1] <= STAGE_GROWTH * max(counts[g0], 16):
                g1 += 1
            pos = xp.sort(by_count[g0:g1])
            group = block[pos]
            ext = _Pool.within(xp, rows[pos], inside[pos], group, lim[pos], counts[g1 - 1])
            mine = xp.nonzero(xp.isin(bpr, group))[0]
            mine = mine[argsort_stable(xp, bpc[mine])]  # by column again
            _settle(xp, flat, dist, [*chain, ext], bpr[mine], bpc[mine], 0, best_d, best_i,
                    budget)
            g0 = g1


def _settle(xp: ModuleType, flat: Any, dist: _SubsetDistances, chain: list[_Pool], pr: Any,
            pc: Any, lo: int, best_d: Any, best_i: Any, budget: int) -> None:
    """Settle the pairs (pr, pc), scanning the last pool of ``chain`` from rank ``lo`` on
    (the earlier ones were scanned), then an extension (``_extend``).

    ``flat`` is the candidate columns one after the other (column k's value of point i at
    ``k * m + i``); pairs sorted by column keep each chunk's gathers within few columns.
    Updates ``best_d``/``best_i`` in place; ties go to the lower index.
    """
    m, c = best_d.shape
    best_d_flat, best_i_flat = best_d.reshape(-1), best_i.reshape(-1)  # views
    pool = chain[-1]
    while len(pr):
        if lo >= pool.size:  # the chain ran out
            _extend(xp, flat, dist, chain, pr, pc, best_d, best_i, budget)
            return
        hi = min(max(lo * STAGE_GROWTH, 1), pool.size)
        w = hi - lo
        # Cache-sized chunks of pairs; each gathers from one column held contiguously.
        chunk = int(max(1, min(budget // (8 * 6 * w), 4 * _block_bytes(xp, budget) // (8 * w))))
        for s in range(0, len(pr), chunk):
            r, k = pr[s : s + chunk], pc[s : s + chunk]
            q = pool.locate(xp, r)
            ids = pool.ids[q, lo:hi]  # (n, w)
            base = k * m
            diff = flat[base + r][:, None] - flat[base[:, None] + ids]
            diff *= diff
            cand = pool.d[q, lo:hi] + diff
            low = cand.min(axis=1)
            # The lowest index among the minima, by arithmetic (a masked choice costs
            # ten times as much): members above the minimum count m beyond any index.
            low_i = (ids + (cand != low[:, None]) * m).min(axis=1)
            at = r * c + k
            bd, bi = best_d_flat[at], best_i_flat[at]
            upd = (low < bd) | ((low == bd) & (low_i < bi))
            best_d_flat[at] = xp.where(upd, low, bd)
            best_i_flat[at] = xp.where(upd, low_i, bi)
        open_ = ~(best_d_flat[pr * c + pc] < pool.bound(xp, pool.locate(xp, pr), hi))
        pr, pc, lo = pr[open_], pc[open_], hi
