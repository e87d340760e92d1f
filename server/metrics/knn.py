"""Exact, memory-bounded k-nearest-neighbour search.

The neighbour order is the one METRICS.md section 0 defines: squared Euclidean distance
decided in float64 as ``sum_k (x_ik - x_jk)^2`` of the inputs, ties broken by the lower
index, a point never its own neighbour.

How it gets there fast:

1. Candidates. The data are centred, scaled by a power of two and cast to float32; each
   query block gets its ``k' = k + slack`` best candidates by float32 distance
   (``||a||^2 + ||b||^2 - 2 a.b`` through a matrix product), from faiss's exhaustive search
   on the CPU when faiss is installed, else from our own blocked matrix products (the same
   code on NumPy and CuPy). Never an m x m array: one block of rows at a time.
2. Proof. Each float32 distance is within ``E_ij = c * (|z_i|^2 + |z_j|^2)`` of the exact
   value, ``c = 1.01 * (2d + 16) * 2^-24``: the float32 bound ``gamma_d`` on each norm and
   on the dot product (``2|a.b| <= |a|^2 + |b|^2``), the float64 -> float32 cast of the
   centred data (``4u (|a|^2 + |b|^2)``), the two final float32 sums, and 1% for the
   second-order terms. Sorted by float32 distance, a row splits into segments at every
   position p where the largest upper bound up to p is below the smallest lower bound
   after it (and of every point outside the list): across a cut the order is proven.
   A row whose k first positions are all cut off from each other is done as it is.
3. Re-rank. In the other rows only the candidates of the segments that reach into the k
   first positions get exact float64 distances and are sorted within their segment by
   (distance, index). If the k-th one's segment runs past the candidate list, its exact
   distance must be below the lower bound of every point outside the list.
4. Fallback. The rare rows left (large groups of duplicates, say) are computed exactly
   against every point.

``precision="fast"`` stops after step 1 and says so.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..cancellation import Cancellation
from .backend import argsort_stable

_U32 = 2.0**-24
_MAX_SCALE_EXP = 500
MIB = 1 << 20

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Neighbors:
    """The result of :func:`knn`.

    ``indices`` (n, k) int64 and, when asked, ``sqdist`` (n, k) exact float64 squared
    distances, both in the array module the search ran on. ``certified_rows`` were proven
    from float32 alone, ``reranked_rows`` needed float64 distances of their candidates,
    ``fallback_rows`` an exact pass over all points.
    """

    indices: Any
    sqdist: Any | None
    precision: str
    candidate_search: str
    certified_rows: int
    reranked_rows: int
    fallback_rows: int


def sort_by_distance_then_index(xp: ModuleType, dist: Any, idx: Any) -> tuple[Any, Any]:
    """Return ``(dist, idx)`` with each row ordered by distance, ties by lower index."""
    by_idx = xp.argsort(idx, axis=1)
    idx = xp.take_along_axis(idx, by_idx, axis=1)
    dist = xp.take_along_axis(dist, by_idx, axis=1)
    order = argsort_stable(xp, dist, axis=1)
    return xp.take_along_axis(dist, order, axis=1), xp.take_along_axis(idx, order, axis=1)


def topk_exact(xp: ModuleType, dist: Any, k: int) -> tuple[Any, Any]:
    """Return ``(dist, idx)`` of the k smallest entries of each row, ties by lower index.

    ``dist`` (r, n) holds exact values (``inf`` marks excluded entries). Linear in r * n.
    """
    r, n = dist.shape
    if k == 1:  # argmin returns the first (lowest-index) minimum
        cols = xp.argmin(dist, axis=1)[:, None]
        return xp.take_along_axis(dist, cols, axis=1), cols
    if k < n:
        # The k smallest, ties at the k-th value in any order; exact as they are wherever
        # no other entry equals the k-th value (one counting pass says where).
        cols = xp.argpartition(dist, k - 1, axis=1)[:, :k]
        kth = xp.take_along_axis(dist, cols, axis=1).max(axis=1, keepdims=True)
        tied = xp.nonzero((dist <= kth).sum(axis=1) != k)[0]
        if len(tied):  # rows with a tie across the boundary: lowest indices among equals
            sub, kt = dist[tied], kth[tied]
            less = sub < kt
            eq = sub == kt
            need = k - less.sum(axis=1, keepdims=True)
            take = less | (eq & (xp.cumsum(eq, axis=1) <= need))
            cols[tied] = xp.nonzero(take)[1].reshape(len(tied), k)
    else:
        cols = xp.broadcast_to(xp.arange(n, dtype=xp.int64), (r, n)).copy()
    cols = xp.sort(cols, axis=1)  # index order, kept among equal distances by the stable sort
    vals = xp.take_along_axis(dist, cols, axis=1)
    order = argsort_stable(xp, vals, axis=1)
    return xp.take_along_axis(vals, order, axis=1), xp.take_along_axis(cols, order, axis=1)


def exact_sqdist(xp: ModuleType, q: Any, b: Any) -> Any:
    """Return float64 ``sum_k (q_k - b_k)^2`` by the definition's rule.

    ``q`` (r, d) against ``b`` (r, c, d) gives (r, c); against ``b`` (n, d) gives (r, n).
    """
    q64 = q.astype(xp.float64, copy=False)
    b64 = b.astype(xp.float64, copy=False)
    diff = q64[:, None, :] - (b64 if b64.ndim == 3 else b64[None, :, :])
    diff *= diff
    return diff.sum(axis=-1)


def _cummax_cols(xp: ModuleType, a: Any) -> Any:
    if xp is np:
        return np.maximum.accumulate(a, axis=1)
    out = a.copy()
    for j in range(1, a.shape[1]):
        out[:, j] = xp.maximum(out[:, j - 1], a[:, j])
    return out


def _cummin_cols_reversed(xp: ModuleType, a: Any) -> Any:
    """Suffix minimum along axis 1: ``out[:, j] = min(a[:, j:])``."""
    if xp is np:
        return np.minimum.accumulate(a[:, ::-1], axis=1)[:, ::-1]
    out = a.copy()
    for j in range(a.shape[1] - 2, -1, -1):
        out[:, j] = xp.minimum(out[:, j + 1], a[:, j])
    return out


class _Prepared:
    """Centred, power-of-two-scaled float32 copies of base and queries, and their norms."""

    def __init__(self, xp: ModuleType, base: Any, queries: Any | None, chunk: int) -> None:
        mu = base.mean(axis=0, dtype=xp.float64)
        lo = base.min(axis=0).astype(xp.float64)
        hi = base.max(axis=0).astype(xp.float64)
        if queries is not None:
            lo = xp.minimum(lo, queries.min(axis=0).astype(xp.float64))
            hi = xp.maximum(hi, queries.max(axis=0).astype(xp.float64))
        amax = float(xp.maximum(xp.abs(hi - mu), xp.abs(lo - mu)).max())
        # A power of two keeps the scaling exact; capped so that scale**2 stays finite.
        exponent = -math.ceil(math.log2(amax)) if amax > 0 else 0
        self.scale = 2.0 ** min(exponent, _MAX_SCALE_EXP)
        self.mu, self.chunk = mu, chunk
        self.base32, self.base_n = self._cast(xp, base, mu, chunk)
        if queries is None:
            self.query32, self.query_n = self.base32, self.base_n
        else:
            self.query32, self.query_n = self._cast(xp, queries, mu, chunk)
        d = base.shape[1]
        self.c = 1.01 * (2 * d + 16) * _U32
        # Absolute terms: float32 underflow of products far below the scale (flushed to zero
        # at worst), and the float64 rule's own underflow for tiny inputs (at most 2^-1074
        # per square and per sum), carried into the scaled units.
        self.abs_err = d * 2.0**-120 + 2 * d * 2.0**-1074 * self.scale * self.scale
        self.base_nmax = float(self.base_n.max())

    def for_queries(self, xp: ModuleType, queries: Any) -> _Prepared:
        """The same base with other queries, cast with the base's centre and scale."""
        other = copy.copy(self)
        other.query32, other.query_n = self._cast(xp, queries, self.mu, self.chunk)
        return other

    def _cast(self, xp: ModuleType, x: Any, mu: Any, chunk: int) -> tuple[Any, Any]:
        out = xp.empty(x.shape, dtype=xp.float32)
        norms = xp.empty(x.shape[0], dtype=xp.float64)
        # Norms only enter the error bounds, so a float32 sum inflated by its own error
        # bound (1 + (d + 2) u) is used: an upper bound of the exact value, one pass cheaper.
        grow = 1.0 + (x.shape[1] + 2) * _U32
        for s in range(0, x.shape[0], chunk):
            z = ((x[s : s + chunk] - mu) * self.scale).astype(xp.float32)
            out[s : s + chunk] = z
            norms[s : s + chunk] = xp.einsum("ij,ij->i", z, z).astype(xp.float64) * grow
        return out, norms


def _faiss_module() -> ModuleType | None:
    try:
        import faiss  # noqa: PLC0415 - optional, imported on first use
    except ImportError:
        return None
    return faiss  # type: ignore[no-any-return]


def _candidates_faiss(
    faiss: ModuleType, prep: _Prepared, rows: Any, want: int, self_mode: bool
) -> tuple[Any, Any]:
    """Return (idx, d32) of the ``want`` best candidates per row, self excluded, ascending."""
    q = np.ascontiguousarray(prep.query32[rows])
    kq = min(want + (1 if self_mode else 0), prep.base32.shape[0])
    d32, idx = faiss.knn(q, prep.base32, kq)
    if self_mode:
        keep = idx != rows[:, None]
        keep[keep.all(axis=1), -1] = False  # self not returned (duplicates): drop the last
        idx = idx[keep].reshape(len(rows), kq - 1)
        d32 = d32[keep].reshape(len(rows), kq - 1)
    return idx.astype(np.int64, copy=False), d32


def _candidates_blas(
    xp: ModuleType, prep: _Prepared, rows: Any, want: int, self_mode: bool
) -> tuple[Any, Any]:
    q = prep.query32[rows]
    base = prep.base32
    d32 = base.dtype.type(-2.0) * (q @ base.T)
    d32 += prep.query_n[rows].astype(xp.float32)[:, None]
    d32 += prep.base_n.astype(xp.float32)[None, :]
    if self_mode:
        d32[xp.arange(len(rows)), rows] = xp.inf
    n = base.shape[0]
    if want < n:
        part = xp.argpartition(d32, want - 1, axis=1)[:, :want]
    else:
        part = xp.broadcast_to(xp.arange(n, dtype=xp.int64), (len(rows), n))
    vals = xp.take_along_axis(d32, part, axis=1)
    order = xp.argsort(vals, axis=1)
    return xp.take_along_axis(part, order, axis=1), xp.take_along_axis(vals, order, axis=1)


def knn(
    base: Any,
    k: int,
    *,
    queries: Any | None = None,
    precision: str = "exact",
    return_distance: bool = False,
    memory_budget_mb: float = 256.0,
    block_rows: int | None = None,
    candidate_search: str = "auto",
    xp: ModuleType = np,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
) -> Neighbors:
    """Return the k nearest neighbours of every query point among ``base``.

    Parameters
    ----------
    base : (m, d) float32/float64 array, validated by the caller.
    k : number of neighbours, ``1 <= k <= m - 1`` (self search) or ``<= m`` (queries).
    queries : (n, d) array, or None to search ``base`` against itself excluding each point.
    precision : ``"exact"`` (the float64 rule with index ties) or ``"fast"`` (float32 order).
    return_distance : also return the exact float64 squared distances.
    memory_budget_mb : bound on the working memory beyond the inputs; sets the block size.
    block_rows : force the number of query rows per block (tests use it).
    candidate_search : ``"auto"`` (faiss on the CPU when installed), ``"faiss"`` or ``"blas"``.
    xp : NumPy or CuPy; inputs are moved to it.
    cancel : checked before each block of rows (raises ``Stopped``).

    Returns
    -------
    Neighbors, with (n, k) int64 indices into ``base``.
    """
    if precision not in ("exact", "fast"):
        raise ValueError(f"precision must be 'exact' or 'fast'; got {precision!r}")
    self_mode = queries is None
    base = xp.asarray(base)
    queries = None if self_mode else xp.asarray(queries)
    m, d = base.shape
    avail = m - 1 if self_mode else m
    if not 1 <= k <= avail:
        raise ValueError(f"k must be in 1..{avail} for {m} base points; got {k}")

    budget = max(int(memory_budget_mb * MIB), 1 * MIB)
    prep = _Prepared(xp, base, queries, chunk=max(1, budget // (16 * d)))
    return _run_search(xp, prep, base, queries, k, precision=precision,
                       return_distance=return_distance, budget=budget, block_rows=block_rows,
                       search=_choose_search(candidate_search, xp), progress=progress,
                       cancel=cancel)


class ExactIndex:
    """A base set prepared once (centred float32 copy, norms) for many exact searches.

    ``search(queries, k)`` gives what ``knn(base, k, queries=queries)`` gives, without
    preparing the base again: what certification answers per query in milliseconds.
    """

    def __init__(
        self,
        base: Any,
        *,
        xp: ModuleType = np,
        memory_budget_mb: float = 256.0,
        candidate_search: str = "auto",
    ) -> None:
        self.xp = xp
        self.base = xp.asarray(base)
        if self.base.ndim != 2 or self.base.shape[0] < 1:
            raise ValueError(f"base must be a non-empty 2-D array; got shape {self.base.shape}")
        self.budget = max(int(memory_budget_mb * MIB), 1 * MIB)
        self.search_kind = _choose_search(candidate_search, xp)
        chunk = max(1, self.budget // (16 * self.base.shape[1]))
        self.prep = _Prepared(xp, self.base, None, chunk=chunk)

    def __len__(self) -> int:
        return int(self.base.shape[0])

    def search(
        self, queries: Any, k: int, *, return_distance: bool = False, precision: str = "exact",
        cancel: Cancellation | None = None,
    ) -> Neighbors:
        """The k nearest base points of each query (ties: lower index); ``cancel`` is
        checked before each block of queries."""
        q = self.xp.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.base.shape[1]:
            raise ValueError(
                f"queries must have shape (n, {self.base.shape[1]}); got {tuple(q.shape)}"
            )
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be in 1..{len(self)}; got {k}")
        return _run_search(self.xp, self.prep.for_queries(self.xp, q), self.base, q, k,
                           precision=precision, return_distance=return_distance,
                           budget=self.budget, block_rows=None, search=self.search_kind,
                           progress=None, cancel=cancel)


def _run_search(
    xp: ModuleType,
    prep: _Prepared,
    base: Any,
    queries: Any | None,
    k: int,
    *,
    precision: str,
    return_distance: bool,
    budget: int,
    block_rows: int | None,
    search: str,
    progress: Progress | None,
    cancel: Cancellation | None,
) -> Neighbors:
    self_mode = queries is None
    m, d = base.shape
    nq = m if self_mode else queries.shape[0]  # type: ignore[union-attr]
    avail = m - 1 if self_mode else m
    faiss = _faiss_module() if search == "faiss" else None
    want, planned = search_plan(m, d, nq, k, self_mode, budget, search)
    block_rows = planned if block_rows is None else int(max(1, min(nq, block_rows)))
    q_orig: Any = base if self_mode else queries

    out_idx = xp.empty((nq, k), dtype=xp.int64)
    out_d = xp.empty((nq, k), dtype=xp.float64) if return_distance else None
    counts = [0, 0, 0]
    for s in range(0, nq, block_rows):
        if cancel is not None:
            cancel.check()
        rows = xp.arange(s, min(s + block_rows, nq), dtype=xp.int64)
        if faiss is not None:
            idx, d32 = _candidates_faiss(faiss, prep, rows, want, self_mode)
        else:
            idx, d32 = _candidates_blas(xp, prep, rows, want, self_mode)
        if precision == "fast":
            out_idx[s : s + len(rows)] = idx[:, :k]
            counts[0] += len(rows)
        else:
            _resolve_block(xp, prep, base, q_orig, rows, idx, d32, k, want < avail, budget,
                           out_idx, counts, self_mode)
        if out_d is not None:
            chosen = out_idx[s : s + len(rows)]
            out_d[s : s + len(rows)] = exact_sqdist(xp, q_orig[rows], base[chosen])
        if progress is not None:
            progress(int(min(s + block_rows, nq)), nq)
    return Neighbors(
        indices=out_idx,
        sqdist=out_d,
        precision=precision,
        candidate_search=search,
        certified_rows=counts[0],
        reranked_rows=counts[1],
        fallback_rows=counts[2],
    )


# Bytes per candidate of one block row when every row of the block needs its re-rank
# (_resolve_block): the float64 bounds, cut positions and sort keys, the candidate lists,
# and faiss's own result lists (measured: about 150).
BYTES_PER_CANDIDATE = 160
MAX_BLOCK_ROWS = 16384
# Multiply-adds of one block's distance product (rows x m x d), so that a block takes a
# second or two and a cancel, a deadline or a progress report waits no longer than that
# (a 16384-row block of m = 150 000, d = 512 took 25 s).
MAX_BLOCK_WORK = 1 << 36


def search_plan(m: int, d: int, nq: int, k: int, self_mode: bool, budget: int,
                search: str) -> tuple[int, int]:
    """Return ``(want, block_rows)``: candidates kept per query (``k' = k + slack`` and one
    that bounds the rest) and query rows per block, so that a block's arrays stay within
    half the ``budget`` bytes (down to one row) and its product within ``MAX_BLOCK_WORK``
    multiply-adds; the exact distances of its re-rank and fallback rows take the other
    half of the budget."""
    avail = m - 1 if self_mode else m
    want = min(k + max(8, k // 4) + 1, avail)
    per_row = BYTES_PER_CANDIDATE * want + 8 * d  # plus the query rows' float32 copy
    if search == "blas":  # float32 distances, the product and argpartition's int64 output
        per_row += 20 * m
    half = budget // 2
    rows = half // per_row if search == "blas" else min(MAX_BLOCK_ROWS, half // per_row)
    rows = min(rows, MAX_BLOCK_WORK // max(1, m * d))
    return want, int(max(1, min(nq, rows)))


def _choose_search(candidate_search: str, xp: ModuleType) -> str:
    if candidate_search not in ("auto", "faiss", "blas"):
        raise ValueError(f"candidate_search must be auto, faiss or blas; got {candidate_search!r}")
    if candidate_search == "blas":
        return "blas"
    usable = xp is np and _faiss_module() is not None
    if candidate_search == "faiss" and not usable:
        raise ValueError("candidate_search='faiss' needs faiss-cpu installed and the CPU backend")
    return "faiss" if usable else "blas"


def _resolve_block(
    xp: ModuleType,
    prep: _Prepared,
    base: Any,
    q_orig: Any,
    rows: Any,
    idx: Any,
    d32: Any,
    k: int,
    has_outside: bool,
    budget: int,
    out_idx: Any,
    counts: list[int],
    self_mode: bool,
) -> None:
    """Write the exact k best of each row of the block into ``out_idx``."""
    s = int(rows[0])
    qn = prep.query_n[rows][:, None]
    err = prep.c * (qn + prep.base_n[idx]) + prep.abs_err
    d64 = d32.astype(xp.float64)
    if has_outside:
        ncand = idx.shape[1] - 1  # the last one only bounds the points outside the list
        outside = d64[:, -1] - (prep.c * (qn[:, 0] + prep.base_nmax) + prep.abs_err)
    else:
        ncand = idx.shape[1]
        outside = xp.full(len(rows), xp.inf)
    lo = d64[:, :ncand] - err[:, :ncand]
    hi = d64[:, :ncand] + err[:, :ncand]
    # cut[:, p]: every candidate up to position p is proven closer than everything after.
    after = _cummin_cols_reversed(xp, xp.concatenate([lo, outside[:, None]], axis=1))
    cut = _cummax_cols(xp, hi) < after[:, 1:]
    certain = cut[:, :k].all(axis=1)
    out_idx[s : s + len(rows)] = idx[:, :k]
    counts[0] += int(certain.sum())
    unsure = xp.nonzero(~certain)[0]
    if len(unsure) == 0:
        return
    counts[1] += int(len(unsure))
    cut_u = cut[unsure]
    cand = idx[unsure, :ncand]
    nu = len(unsure)
    seg = xp.concatenate(
        [xp.zeros((nu, 1), dtype=xp.int64), xp.cumsum(cut_u[:, :-1], axis=1)], axis=1
    )
    alone = cut_u & xp.concatenate([xp.ones((nu, 1), dtype=bool), cut_u[:, :-1]], axis=1)
    ambiguous = (seg <= seg[:, k - 1 : k]) & ~alone
    pr, pc = xp.nonzero(ambiguous)
    exact = xp.zeros((nu, ncand), dtype=xp.float64)
    chunk = max(1, budget // (48 * base.shape[1]))  # half the budget, beside the block
    for a in range(0, len(pr), chunk):
        r_, c_ = pr[a : a + chunk], pc[a : a + chunk]
        exact[r_, c_] = pair_sqdist(xp, q_orig[rows[unsure[r_]]], base[cand[r_, c_]])
    # Sort each row by (segment, exact distance, index): proven order across segments,
    # the definition's order inside them.
    by_idx = xp.argsort(cand, axis=1)
    keys = [xp.take_along_axis(a_, by_idx, axis=1) for a_ in (cand, exact, seg)]
    order = argsort_stable(xp, keys[1], axis=1)
    keys = [xp.take_along_axis(a_, order, axis=1) for a_ in keys]
    order = argsort_stable(xp, keys[2], axis=1)
    ranked = xp.take_along_axis(keys[0], order, axis=1)
    ranked_d = xp.take_along_axis(keys[1], order, axis=1)
    out_idx[s + unsure] = ranked[:, :k]
    # Rows whose k-th segment is not closed before the outside need the exact check.
    open_end = ~cut_u[:, k - 1 :].any(axis=1)
    scale2 = prep.scale * prep.scale
    bad = open_end & ~(ranked_d[:, k - 1] * scale2 < outside[unsure])
    if bool(bad.any()):
        _fallback_rows(xp, base, q_orig, rows[unsure[bad]], k, budget, out_idx, self_mode)
        counts[2] += int(bad.sum())


def pair_sqdist(xp: ModuleType, a: Any, b: Any) -> Any:
    """Return float64 ``sum_k (a_ik - b_ik)^2`` for each row pair, by the definition's rule."""
    diff = a.astype(xp.float64) - b.astype(xp.float64)
    diff *= diff
    return diff.sum(axis=-1)


def _fallback_rows(
    xp: ModuleType,
    base: Any,
    q_orig: Any,
    rows: Any,
    k: int,
    budget: int,
    out_idx: Any,
    self_mode: bool,
) -> None:
    """Exact k best of ``rows`` against every base point, ties by lower index."""
    m, d = base.shape
    cols = max(1, budget // (32 * d))  # half the budget, beside the block
    for r in rows.tolist():
        q = q_orig[r : r + 1]
        best_d = xp.empty((1, 0), dtype=xp.float64)
        best_i = xp.empty((1, 0), dtype=xp.int64)
        for c in range(0, m, cols):
            dist = exact_sqdist(xp, q, base[c : c + cols])
            if self_mode and c <= r < c + cols:
                dist[0, r - c] = xp.inf
            ids = xp.arange(c, min(c + cols, m), dtype=xp.int64)[None, :]
            cat_d = xp.concatenate([best_d, dist], axis=1)
            cat_i = xp.concatenate([best_i, ids], axis=1)
            kk = min(k, cat_d.shape[1])
            vals, pos = topk_exact(xp, cat_d, kk)
            best_d, best_i = vals, xp.take_along_axis(cat_i, pos, axis=1)
        out_idx[r] = best_i[0, :k]
