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

import contextlib
import copy
import math
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    ``fallback_rows`` an exact pass over all points. ``products``: the block matrix
    products of the symmetric self-join (each block pair once; 0 for the other searches).
    """

    indices: Any
    sqdist: Any | None
    precision: str
    candidate_search: str
    certified_rows: int
    reranked_rows: int
    fallback_rows: int
    products: int = 0


def sort_by_distance_then_index(xp: ModuleType, dist: Any, idx: Any) -> tuple[Any, Any]:
    """Return ``(dist, idx)`` with each row ordered by distance, ties by lower index."""
    by_idx = xp.argsort(idx, axis=1)
    idx = xp.take_along_axis(idx, by_idx, axis=1)
    dist = xp.take_along_axis(dist, by_idx, axis=1)
    order = argsort_stable(xp, dist, axis=1)
    return xp.take_along_axis(dist, order, axis=1), xp.take_along_axis(idx, order, axis=1)


def smallest_per_row(xp: ModuleType, dist: Any, k: int) -> tuple[Any, Any]:
    """Return ``(vals, cols)`` of the k smallest entries of each row of ``dist`` (r, n),
    ascending, ties by lower column: a top-k for a GPU, where ``argpartition`` is a sort.

    A strided sample of 4k (at least 1024) columns gives each row a threshold, its k-th
    smallest sampled value: at least k entries are not above it, and every entry above it
    is out. Only the entries up to it (about k n / sample of a row) are sorted, by (row,
    value, column). Linear in r * n, plus the sort of those few.
    """
    r, n = dist.shape
    sample = xp.unique(xp.linspace(0, n - 1, min(n, max(4 * k, 1024))).astype(xp.int64))
    thr = xp.sort(dist[:, sample], axis=1)[:, k - 1 : k]
    flat = xp.flatnonzero(dist <= thr)  # row-major: columns ascending within a row
    rows, cols, vals = flat // n, flat % n, dist.ravel()[flat]
    order = argsort_stable(xp, vals)
    order = order[argsort_stable(xp, rows[order])]
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = xp.arange(len(rows), dtype=xp.int64) - xp.searchsorted(rows, rows)
    keep = xp.flatnonzero(rank < k)
    out_v = xp.empty((r, k), dtype=dist.dtype)
    out_c = xp.empty((r, k), dtype=xp.int64)
    out_v[rows[keep], rank[keep]] = vals[keep]
    out_c[rows[keep], rank[keep]] = cols[keep]
    return out_v, out_c


def topk_exact(xp: ModuleType, dist: Any, k: int) -> tuple[Any, Any]:
    """Return ``(dist, idx)`` of the k smallest entries of each row, ties by lower index.

    ``dist`` (r, n) holds exact values (``inf`` marks excluded entries). Linear in r * n.
    """
    r, n = dist.shape
    if xp is not np and 1 < k < n:
        return smallest_per_row(xp, dist, k)
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
    """Prefix maximum along axis 1: ``out[:, j] = max(a[:, :j + 1])``."""
    if xp is np:
        return np.maximum.accumulate(a, axis=1)
    # A log-step scan (Hillis-Steele): log2(columns) kernels, not one per column.
    out, step = a.copy(), 1
    while step < a.shape[1]:
        out[:, step:] = xp.maximum(out[:, step:], out[:, :-step])
        step *= 2
    return out


def _cummin_cols_reversed(xp: ModuleType, a: Any) -> Any:
    """Suffix minimum along axis 1: ``out[:, j] = min(a[:, j:])``."""
    if xp is np:
        return np.minimum.accumulate(a[:, ::-1], axis=1)[:, ::-1]
    out, step = a.copy(), 1
    while step < a.shape[1]:
        out[:, :-step] = xp.minimum(out[:, :-step], out[:, step:])
        step *= 2
    return out


class _Prepared:
    """Centred, power-of-two-scaled float32 copies of base and queries, and their norms."""

    def __init__(self, xp: ModuleType, base: Any, queries: Any | None, chunk: int,
                 augment: bool = False) -> None:
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
        # w: the self-join's [z, -n/2, 1] rows (see _augmented), z the same buffer as base32.
        self.base32, self.base_n, self.w = self._cast(xp, base, mu, chunk, augment)
        if queries is None:
            self.query32, self.query_n = self.base32, self.base_n
        else:
            self.query32, self.query_n, _ = self._cast(xp, queries, mu, chunk)
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
        other.query32, other.query_n, _ = self._cast(xp, queries, self.mu, self.chunk)
        return other

    def _cast(self, xp: ModuleType, x: Any, mu: Any, chunk: int,
              augment: bool = False) -> tuple[Any, Any, Any]:
        m, d = x.shape
        full = xp.empty((m, d + 2) if augment else (m, d), dtype=xp.float32)
        out = full[:, :d] if augment else full
        norms = xp.empty(m, dtype=xp.float64)
        # Norms only enter the error bounds, so a float32 sum inflated by its own error
        # bound (1 + (d + 2) u) is used: an upper bound of the exact value, one pass cheaper.
        grow = 1.0 + (d + 2) * _U32
        if xp is np:  # one float64 temporary of about 1 MB, reused: in the caches, and no
            chunk = min(chunk, max(1, MIB // (8 * d)))  # fresh pages (2 ms a MB at first)
        centred = xp.empty((min(chunk, m), d), dtype=xp.float64)
        for s in range(0, m, chunk):
            n = min(chunk, m - s)
            # centred and scaled in float64, rounded once into out
            xp.subtract(x[s : s + n], mu, out=centred[:n])
            centred[:n] *= self.scale
            out[s : s + n] = centred[:n]
            z = out[s : s + n]
            norms[s : s + n] = xp.einsum("ij,ij->i", z, z).astype(xp.float64) * grow
            if augment:  # -fl32(|z|^2) / 2 from a float64 sum, for the self-join's product
                full[s : s + n, d] = (_sumsq64(xp, z) * -0.5).astype(xp.float32)
        if augment:
            full[:, d + 1] = 1.0
        return out, norms, full if augment else None


def _sumsq64(xp: ModuleType, z: Any) -> Any:
    """Each row's sum of squares in float64 (einsum's own float64 loop: no float64 copy)."""
    try:
        return xp.einsum("ij,ij->i", z, z, dtype=xp.float64)
    except TypeError:  # an einsum without ``dtype``
        z64 = z.astype(xp.float64)
        return xp.einsum("ij,ij->i", z64, z64)


def _faiss_module() -> ModuleType | None:
    try:
        import faiss  # noqa: PLC0415 - optional, imported on first use
    except ImportError:
        return None
    return faiss  # type: ignore[no-any-return]


def _candidates_faiss(
    faiss: ModuleType, prep: _Prepared, rows: Any, want: int, self_mode: bool
) -> tuple[Any, Any]:
    """Return (idx, d32) of the ``want`` best candidates per row (``rows``: consecutive),
    self excluded, ascending."""
    q = prep.query32[_span(rows)]  # a view: the rows' copy was 20 MB at 20 000 x 256
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
    q = prep.query32[_span(rows)]
    base = prep.base32
    d32 = base.dtype.type(-2.0) * (q @ base.T)
    d32 += prep.query_n[rows].astype(xp.float32)[:, None]
    d32 += prep.base_n.astype(xp.float32)[None, :]
    if self_mode:
        d32[xp.arange(len(rows)), rows] = xp.inf
    n = base.shape[0]
    if want < n and xp is not np:
        order, vals = smallest_per_row(xp, d32, want)[::-1]
        return order, vals
    if want < n:
        part = xp.argpartition(d32, want - 1, axis=1)[:, :want]
    else:
        part = xp.broadcast_to(xp.arange(n, dtype=xp.int64), (len(rows), n))
    vals = xp.take_along_axis(d32, part, axis=1)
    order = xp.argsort(vals, axis=1)
    return xp.take_along_axis(part, order, axis=1), xp.take_along_axis(vals, order, axis=1)


def _span(rows: Any) -> slice:
    """The slice of consecutive row numbers ``rows`` (a block of a search): the rows of an
    array as a view, where indexing by ``rows`` would copy them. Its ends are read from the
    array's length and its first element, one value (on a GPU, one small copy to the host)."""
    start = int(rows[0]) if len(rows) else 0
    return slice(start, start + len(rows))


def _augmented(prep: _Prepared) -> Any:
    """Return ``W = [z, -n/2, 1]`` (m, d + 2) float32, ``n = fl32(|z|^2)`` (``_Prepared``
    with ``augment``; ``z`` is the same buffer as ``base32``, so no second copy).

    ``W_i . swap(W_j) = z_i . z_j - n_i / 2 - n_j / 2 = -D_ij / 2``: one product gives the
    halved, negated float32 distance with no pass over the block for the norms. Its error:
    ``gamma_(d+2)`` times ``sum |z_ik z_jk| + n_i / 2 + n_j / 2 <= |z_i|^2 + |z_j|^2`` (1 + u),
    doubled, plus ``u`` for rounding each float64 norm to float32: ``(2d + 9) u`` in all,
    inside the bound ``c`` of the module docstring.
    """
    if prep.w is None:
        raise ValueError("the self-join needs the base prepared with augment=True")
    return prep.w


def _column_operand(xp: ModuleType, w: Any, pool: ThreadPoolExecutor | None = None,
                    parts: int = 1) -> Any:
    """``swap(w)^T``, C-contiguous ((d + 2), n): the right operand of a block's product,
    built once per column block (a plain ``a @ b`` is the faster BLAS layout); with
    ``pool``, ``parts`` slices of the columns, one task each."""
    out = xp.empty((w.shape[1], w.shape[0]), dtype=w.dtype)

    def columns(cs: slice) -> None:
        # on the CPU by bands of 16: a whole transposed copy misses the caches (4x slower)
        step = 16 if xp is np else w.shape[0]
        for i in range(cs.start, cs.stop, step):
            j = min(i + step, cs.stop)
            out[:-2, i:j] = w[i:j, :-2].T
        out[-2, cs], out[-1, cs] = w[cs, -1], w[cs, -2]

    if pool is None:
        columns(slice(0, w.shape[0]))
    else:
        _run_all(pool, [(columns, cs) for cs in _split(w.shape[0], parts)])
    return out


def block_product(a: Any, bt: Any, out: Any | None = None,
                  pool: ThreadPoolExecutor | None = None, parts: int = 1) -> Any:
    """``a @ bt``: the one matrix product of a block pair of the self-join (a module
    attribute so that a test can count them). With ``out`` and ``pool`` (NumPy), into
    ``out`` as ``parts`` slices of the rows, one task of ``pool`` each."""
    if out is None or pool is None:
        return a @ bt
    _run_all(pool, [(np.matmul, a[rs], bt, out[rs]) for rs in _split(len(a), parts)])
    return out


def _run_all(pool: ThreadPoolExecutor, calls: list[tuple[Any, ...]]) -> None:
    """Run each ``(function, *args)`` of ``calls`` as a task of ``pool``; return when all
    are done (the first error raised)."""
    for f in [pool.submit(*call) for call in calls]:
        f.result()


def _split(n: int, parts: int, start: int = 0) -> list[slice]:
    """``range(start, n)`` as ``parts`` consecutive slices of sizes within one."""
    cuts = [start + (n - start) * p // parts for p in range(parts + 1)]
    return [slice(cuts[p], cuts[p + 1]) for p in range(parts)]


_blas_lock = threading.Lock()
_blas_joins = 0
_blas_limited: Any = None
_blas_threads = 1


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[int]:
    """BLAS on one thread per call while self-joins run; yields the number of threads
    BLAS had (the parallelism this process allows), which the join then runs itself. The
    setting is the process's: shared by concurrent joins, counted, and the original
    restored when the last one ends, whichever thread runs it. Without threadpoolctl, BLAS
    keeps its threads and the join runs on one."""
    global _blas_joins, _blas_limited, _blas_threads
    with _blas_lock:
        if _blas_joins == 0:
            try:
                from threadpoolctl import threadpool_limits  # noqa: PLC0415
            except ImportError:
                _blas_limited, _blas_threads = None, 1
            else:
                _free_blas_claim()
                _blas_limited = threadpool_limits(1, user_api="blas")
                _blas_threads = max(1, int(
                    _blas_limited.get_original_num_threads().get("blas") or 1))
        _blas_joins += 1
        threads = _blas_threads
    try:
        yield threads
    finally:
        with _blas_lock:
            _blas_joins -= 1
            if _blas_joins == 0 and _blas_limited is not None:
                _free_blas_claim()
                _blas_limited.restore_original_limits()
                _free_blas_claim()
                _blas_limited = None


def _free_blas_claim() -> None:
    """Let this thread's next BLAS limit take effect. threadpoolctl (3.8 on) lets only one
    thread, the first to set a limit, change a process-wide OpenBLAS pool, and silently
    ignores the others until that thread clears its claim, which only its ``with`` blocks
    do. A join's limit outlives the call that set it, and the joins of a server run in its
    handlers' threads: the first join's thread kept the claim, every later join in another
    thread ran its products with BLAS's threads on top of its own (measured: the self-join
    20-30% slower when not run from the thread that first set the limit). Our own lock
    orders every limit this module sets."""
    try:
        from threadpoolctl import OpenBLASController  # noqa: PLC0415
    except ImportError:  # no threadpoolctl (or one without this controller): no claim
        return
    # before 3.8, threadpoolctl has no claim to clear
    clear = getattr(OpenBLASController, "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


class _Pools:
    """Each row's ``want`` best candidates so far (float32 distance and index, any order)
    and its admission threshold on ``-D/2`` (``>=`` is admitted), per block of rows, with
    the entries waiting to be merged. Every entry refused or evicted has a distance >= the
    row's final worst, so the last candidate bounds every point left out."""

    def __init__(self, xp: ModuleType, m: int, want: int, block: int, h0: Any) -> None:
        self.xp, self.want, self.block = xp, want, block
        self.d = xp.full((m, want), xp.inf, dtype=xp.float32)
        self.i = xp.full((m, want), -1, dtype=xp.int64)
        self.h = h0
        self.pending: dict[int, list[tuple[Any, Any, Any]]] = {}
        self.npending: dict[int, int] = {}

    def push_rows(self, s: int, g: Any, j0: int) -> None:
        """Offer every entry of ``g = -D/2`` (rows ``s..``, columns ``j0..``) to its row."""
        xp, nc = self.xp, g.shape[1]
        flat = xp.flatnonzero(g >= self.h[s : s + g.shape[0], None])
        self.push(s // self.block, flat // nc + s % self.block, flat % nc + j0,
                  g.ravel()[flat])

    def push_cols(self, t: int, g: Any, i0: int) -> None:
        """Offer every entry of ``g`` (rows ``i0..``, columns ``t..``) to its column's row."""
        xp, nc = self.xp, g.shape[1]
        flat = xp.flatnonzero(g >= self.h[None, t : t + nc])
        self.push(t // self.block, flat % nc + t % self.block, flat // nc + i0,
                  g.ravel()[flat])

    def result(self) -> tuple[Any, Any]:
        """``(idx, d32)`` of every row, ascending by float32 distance."""
        for b in list(self.pending):
            self.merge(b)
        order = argsort_stable(self.xp, self.d, axis=1)
        return (self.xp.take_along_axis(self.i, order, axis=1),
                self.xp.take_along_axis(self.d, order, axis=1))

    def push(self, b: int, rows: Any, cols: Any, g: Any) -> None:
        """Add candidates ``cols`` to ``rows`` (block-local rows of block ``b``) with
        products ``g = -D/2``."""
        if len(rows) == 0:
            return
        self.pending.setdefault(b, []).append((rows, cols, g * -2.0))
        self.npending[b] = self.npending.get(b, 0) + len(rows)
        if self.npending[b] > self.want * self.block:
            self.merge(b)

    def merge(self, b: int) -> None:
        """Fold block ``b``'s waiting entries into its pools and raise its thresholds."""
        xp, want = self.xp, self.want
        waiting = self.pending.pop(b, [])
        self.npending.pop(b, None)
        if not waiting:
            return
        s = b * self.block
        pd, pi = self.d[s : s + self.block], self.i[s : s + self.block]
        nr = pd.shape[0]
        r = xp.concatenate([xp.repeat(xp.arange(nr, dtype=xp.int64), want)]
                           + [w[0] for w in waiting])
        dist = xp.concatenate([pd.ravel()] + [w[2] for w in waiting])
        ids = xp.concatenate([pi.ravel()] + [w[1] for w in waiting])
        order = xp.argsort((r << 32) | _sortable_bits(xp, dist))
        r, dist, ids = r[order], dist[order], ids[order]
        starts = xp.searchsorted(r, xp.arange(nr, dtype=xp.int64))
        rank = xp.arange(len(r), dtype=xp.int64) - starts[r]
        keep = xp.flatnonzero(rank < want)
        pd[r[keep], rank[keep]] = dist[keep]
        pi[r[keep], rank[keep]] = ids[keep]
        hb = self.h[s : s + self.block]
        hb[...] = xp.maximum(hb, pd.max(axis=1) * -0.5)


class _HeapPools:
    """The same pools as faiss's heaps on the CPU: a row's offers are one fused pass
    (``addn``) instead of a comparison and a merge; a column's offers, grouped by their
    row, go in with their ids. Heap tops are the thresholds (``>`` is admitted). Calls
    on disjoint rows may run in different threads."""

    def __init__(self, faiss: ModuleType, m: int, want: int) -> None:
        self.faiss = faiss
        self.val = np.full((m, want), -np.inf, dtype=np.float32)
        self.ids = np.full((m, want), -1, dtype=np.int64)
        self.heaps = faiss.float_minheap_array_t()
        self.heaps.nh, self.heaps.k = m, want
        self.heaps.val = faiss.swig_ptr(self.val)
        self.heaps.ids = faiss.swig_ptr(self.ids)

    def push_rows(self, s: int, g: Any, j0: int) -> None:
        g = np.ascontiguousarray(g, dtype=np.float32)
        self.heaps.addn(g.shape[1], self.faiss.swig_ptr(g), j0, s, g.shape[0])

    def push_cols(self, t: int, g: Any, i0: int) -> None:
        nc = g.shape[1]
        top = np.ascontiguousarray(self.val[t : t + nc, 0])
        # flatnonzero of the (new, contiguous) mask: 2-D nonzero is 8x slower
        flat = np.flatnonzero(g > top[None, :])
        if len(flat) == 0:
            return
        rows, cols = np.divmod(flat, nc)
        # Grouped by column, row order kept: a stable sort of small integers is a radix
        # sort in NumPy (ten times the int64 merge sort's speed on these sizes).
        order = np.argsort(cols.astype(np.uint16 if nc <= 1 << 16 else np.int64),
                           kind="stable")
        rows, cols = rows[order], cols[order]
        starts = np.concatenate([[0], np.cumsum(np.bincount(cols, minlength=nc))[:-1]])
        rank = np.arange(len(cols)) - starts[cols]
        width = int(rank.max()) + 1
        v = np.full((nc, width), -np.inf, dtype=np.float32)
        ids = np.full((nc, width), -1, dtype=np.int64)
        v[cols, rank] = g[rows, cols]
        ids[cols, rank] = rows + i0
        self.heaps.addn_with_ids(width, self.faiss.swig_ptr(v), self.faiss.swig_ptr(ids),
                                 width, t, nc)

    def result(self) -> tuple[Any, Any]:
        m = self.val.shape[0]
        idx = np.empty_like(self.ids)
        d32 = np.empty_like(self.val)
        step = max(1, (16 * MIB) // (16 * self.val.shape[1]))  # no third copy of the pools
        for s in range(0, m, step):
            v = self.val[s : s + step] * np.float32(-2.0)
            order = np.argsort(v, axis=1, kind="stable")
            idx[s : s + step] = np.take_along_axis(self.ids[s : s + step], order, axis=1)
            d32[s : s + step] = np.take_along_axis(v, order, axis=1)
        return idx, d32


def _sortable_bits(xp: ModuleType, a: Any) -> Any:
    """float32 values as int64 keys in [0, 2^32) with the same order (``-0.0 < 0.0``)."""
    bits = a.astype(xp.float32).view(xp.int32).astype(xp.int64)
    return xp.where(bits < 0, ~bits & 0x7FFFFFFF, bits | 0x80000000)


def _seed_thresholds(xp: ModuleType, prep: _Prepared, w: Any, want: int, block: int) -> Any:
    """Each row's first threshold on ``-D/2``: its want-th best over a strided sample
    (itself excluded), made looser by the float32 bound so that another rounding of the
    same pair in its block cannot refuse a point the sample counted."""
    m = w.shape[0]
    sample = xp.unique(xp.linspace(0, m - 1, min(m, max(8 * want, 256))).astype(xp.int64))
    ns = len(sample)
    h0 = xp.empty(m, dtype=xp.float32)
    slack = prep.c * (prep.query_n + prep.base_nmax) + prep.abs_err
    bt = _column_operand(xp, w[sample])
    for s in range(0, m, block):
        g = w[s : s + block] @ bt
        is_self = sample[None, :] == xp.arange(s, min(s + block, m), dtype=xp.int64)[:, None]
        g[is_self] = -xp.inf
        kth = -xp.partition(-g, min(want, ns - 1) - 1, axis=1)[:, min(want, ns - 1) - 1]
        h0[s : s + block] = (kth - slack[s : s + block]).astype(xp.float32)
    return h0


def _one_omp_thread() -> None:
    """A self-join offer thread's faiss calls run on that thread alone (the setting is the
    calling thread's own): its OpenMP workers would spin against the product's threads."""
    faiss = _faiss_module()
    if faiss is not None:
        faiss.omp_set_num_threads(1)


def _selfjoin_candidates(
    xp: ModuleType, prep: _Prepared, want: int, block: int,
    cancel: Cancellation | None, progress: Progress | None,
) -> tuple[Any, Any, int]:
    """Return ``(idx, d32, products)``: each point's ``want`` best candidates among the
    others by float32 distance (ascending; every point left out is not closer than the last)
    and the number of block pairs computed: each block pair once.

    The upper triangle of ``X X^T`` block by block: block ``(I, J)``, ``I < J``, feeds the
    rows of ``I`` and, through its columns, the rows of ``J``; a diagonal block is the
    upper triangle of panels of its rows (see ``tiles``). A candidate enters a row's
    pool only when it is not worse than the row's current threshold, so a block costs its
    product and two comparisons (on the CPU with faiss, its heaps take the rows' offers).
    """
    w = _augmented(prep)
    m = w.shape[0]
    faiss = _faiss_module() if xp is np else None
    pools: _Pools | _HeapPools
    if faiss is not None:
        pools = _HeapPools(faiss, m, want)
    else:
        pools = _Pools(xp, m, want, block, _seed_thresholds(xp, prep, w, want, block))
    starts = list(range(0, m, block))
    # Column block by column block: its operand is built once, its diagonal block comes
    # first, then the row blocks above it. Every row block meets its own diagonal block
    # before any other, so its first threshold is that of a block of its own.
    order = [(t, [t] + starts[:i]) for i, t in enumerate(starts)]
    n_pairs = len(starts) * (len(starts) + 1) // 2

    def offer(r0: int, c0: int, g: Any, cfrom: int, part: int = 0, parts: int = 1) -> None:
        """Offer product ``g`` (rows ``r0..``, columns ``c0..``) to its rows, a point never
        to itself, and its columns from ``cfrom`` on to theirs; part ``part`` of ``parts``:
        that slice of the rows and of those columns (the parts touch different pools)."""
        nr, nc = g.shape
        rs, cs = _split(nr, parts)[part], _split(nc, parts, cfrom)[part]
        rows = g[rs]
        if r0 + rs.start < c0 + nc and r0 + rs.stop > c0:  # this part meets the diagonal
            i = xp.arange(rs.start, rs.stop, dtype=xp.int64)
            j = i + (r0 - c0)
            on = xp.flatnonzero((j >= 0) & (j < nc))
            rows[i[on] - rs.start, j[on]] = -xp.inf
        pools.push_rows(r0 + rs.start, rows, c0)
        if cs.stop > cs.start:
            pools.push_cols(c0 + cs.start, g[:, cs], r0)

    def tiles(t: int, bt: Any, row_blocks: list[int]
              ) -> Iterator[tuple[int, Any, int, Any, int, bool]]:
        """``(row start, rows, column start, columns' operand, first column offered, last
        product of its block pair)`` of column block ``t``'s products: its diagonal block,
        then the row blocks above it. The diagonal block is the upper triangle of panels
        of its rows (SYRK-like): each panel against the columns from its own first row on,
        the last panel first; a panel's square at the diagonal goes to its rows only (each
        pair there seen from both rows), its columns after the square to theirs, whose
        pools the panels before it have filled (refusing most offers)."""
        nt = bt.shape[1]
        panels = _split(nt, max(1, min(DIAGONAL_PANELS, nt // DIAGONAL_PANEL_MIN)))
        for ps in reversed(panels):
            yield (t + ps.start, w[t + ps.start : t + ps.stop], t + ps.start,
                   bt[:, ps.start :], ps.stop - ps.start, ps.start == 0)
        for s in row_blocks[1:]:
            yield s, w[s : s + block], t, bt, 0, True

    # On the CPU with faiss's heaps, every step runs in threads of the join's own, one per
    # core BLAS would use: a product as slices of its rows (BLAS on one thread per call for
    # the whole join), then its offers, each thread a slice of the rows and one of the
    # columns (different pools). BLAS's own worker threads would spin on their cores after
    # every product while the offers run (measured: the offers then cost 2x their time).
    threaded = isinstance(pools, _HeapPools) and len(starts) > 1
    buf = np.empty(block * block, dtype=np.float32) if threaded else None
    products = 0
    with _one_blas_thread() if threaded else contextlib.nullcontext(1) as parts:
        pool = ThreadPoolExecutor(parts, thread_name_prefix="selfjoin",
                                  initializer=_one_omp_thread) if threaded else None
        try:
            for t, row_blocks in order:
                bt = _column_operand(xp, w[t : t + block], pool, parts)
                for r0, a, c0, bc, cfrom, closes in tiles(t, bt, row_blocks):
                    if cancel is not None:
                        cancel.check()
                    if pool is None or buf is None:
                        offer(r0, c0, block_product(a, bc), cfrom)
                    else:
                        g = block_product(a, bc, buf[: len(a) * bc.shape[1]].reshape(
                            len(a), bc.shape[1]), pool, parts)
                        _run_all(pool, [(offer, r0, c0, g, cfrom, part, parts)
                                        for part in range(parts)])
                    if closes:
                        products += 1
                        if progress is not None:
                            progress(products, n_pairs)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    idx, d32 = pools.result()
    return idx, d32, products


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
    candidate_search : ``"auto"`` (the symmetric self-join without queries, else faiss on
        the CPU when installed, unless every base point is a candidate), ``"selfjoin"``,
        ``"faiss"`` or ``"blas"``.
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

    budget = device_budget(xp, max(int(memory_budget_mb * MIB), 1 * MIB))
    search = _choose_search(candidate_search, xp, self_mode)
    if search == "selfjoin" and candidate_search == "auto" and not selfjoin_fits(
            m, search_plan(m, d, m, k, True, budget, search)[0], budget):
        search = _choose_search("auto", xp, False)  # the row-block searches then
    nq = m if queries is None else queries.shape[0]
    if search == "faiss" and candidate_search == "auto" and search_plan(
            m, d, nq, k, self_mode, budget, search)[0] >= avail:
        # Every base point is a candidate (a few class means): nothing to search, and the
        # product alone is cheaper than faiss's heaps (20 against 27-32 ms for 20 000
        # queries and 10 points).
        search = "blas"
    prep = _Prepared(xp, base, queries, chunk=max(1, budget // (16 * d)),
                     augment=search == "selfjoin")
    return _run_search(xp, prep, base, queries, k, precision=precision,
                       return_distance=return_distance, budget=budget, block_rows=block_rows,
                       search=search, progress=progress, cancel=cancel)


def device_budget(xp: ModuleType, budget: int) -> int:
    """The working-memory bound of a search: ``budget`` bytes on the CPU; on a GPU, a
    quarter of the free device memory when that is more (the host budget would give
    a handful of rows per block at m = 10^6). One query of the device per search."""
    if xp is np:
        return budget
    free, _total = xp.cuda.Device().mem_info
    return max(budget, int(free) // 4)


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
        self.budget = device_budget(xp, max(int(memory_budget_mb * MIB), 1 * MIB))
        self.search_kind = _choose_search(candidate_search, xp, False)
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
    forced = block_rows is not None
    block_rows = planned if block_rows is None else int(max(1, min(nq, block_rows)))
    q_orig: Any = base if self_mode else queries

    out_idx = xp.empty((nq, k), dtype=xp.int64)
    out_d = xp.empty((nq, k), dtype=xp.float64) if return_distance else None
    counts = [0, 0, 0]
    products = 0
    joined: tuple[Any, Any] | None = None
    if search == "selfjoin":
        # Every row's candidates from one pass over the upper triangle; then the same
        # proof and re-rank as the other searches, block by block.
        join_block = block_rows if forced else selfjoin_block(xp, m, d, budget)
        nb = -(-m // join_block)
        units = nb * (nb + 1) // 2 + -(-nq // block_rows)
        join_progress = None if progress is None else (lambda done, _t: progress(done, units))
        cidx, cd32, products = _selfjoin_candidates(
            xp, prep, want, join_block, cancel, join_progress)
        joined = (cidx, cd32)
    for s in range(0, nq, block_rows):
        if cancel is not None:
            cancel.check()
        rows = xp.arange(s, min(s + block_rows, nq), dtype=xp.int64)
        if joined is not None:
            idx, d32 = joined[0][s : s + block_rows], joined[1][s : s + block_rows]
        elif faiss is not None:
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
            if joined is not None:
                progress(units - len(range(s + block_rows, nq, block_rows)), units)
            else:
                progress(int(min(s + block_rows, nq)), nq)
    return Neighbors(
        indices=out_idx,
        sqdist=out_d,
        precision=precision,
        candidate_search=search,
        certified_rows=counts[0],
        reranked_rows=counts[1],
        fallback_rows=counts[2],
        products=products,
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


def _choose_search(candidate_search: str, xp: ModuleType, self_mode: bool = False) -> str:
    if candidate_search not in ("auto", "faiss", "blas", "selfjoin"):
        raise ValueError("candidate_search must be auto, selfjoin, faiss or blas; got "
                         f"{candidate_search!r}")
    if candidate_search == "selfjoin" and not self_mode:
        raise ValueError("candidate_search='selfjoin' searches a set against itself "
                         "(no queries)")
    if candidate_search == "blas":
        return "blas"
    if self_mode and candidate_search in ("auto", "selfjoin"):
        return "selfjoin"
    usable = xp is np and _faiss_module() is not None
    if candidate_search == "faiss" and not usable:
        raise ValueError("candidate_search='faiss' needs faiss-cpu installed and the CPU backend")
    return "faiss" if usable else "blas"


# Rows (= columns) of one self-join block: the product (float32), two masks and their
# hits fit in a quarter of the budget; on the CPU no more than the caches serve well,
# on a GPU as many as a fifth of the free device memory holds.
SELFJOIN_CPU_BLOCK = 2048
# A diagonal block is computed as the upper triangle of up to DIAGONAL_PANELS panels of at
# least DIAGONAL_PANEL_MIN rows: 4 panels compute 5/8 of its square (the whole square, as
# before, was 9% of all the products at m = 20 000; thinner panels run BLAS less well).
DIAGONAL_PANELS = 4
DIAGONAL_PANEL_MIN = 256
SELFJOIN_BYTES_PER_ENTRY = 4 + 2 + 8  # the product, a mask, a hit's flat index (worst case)


def selfjoin_fits(m: int, want: int, budget: int) -> bool:
    """Whether every row's candidates (float32 and int64, and their sorted copy) fit in
    half the budget: the self-join holds them all until the end (``auto`` falls back to
    the row-block searches otherwise, which hold one block's)."""
    return 2 * 12 * m * want <= budget // 2


def selfjoin_block(xp: ModuleType, m: int, d: int, budget: int) -> int:
    """Return the rows of one self-join block: from the host budget on the CPU, from the
    free device memory on a GPU (one query of the device, not one per block)."""
    per_entry = SELFJOIN_BYTES_PER_ENTRY
    if xp is np:
        side = int(math.isqrt(max(1, budget // 4 // per_entry)))
        side = min(side, SELFJOIN_CPU_BLOCK)
        return _even_block(m, max(64, side))
    else:
        free, _total = xp.cuda.Device().mem_info
        side = int(math.isqrt(max(1, int(free) // 5 // per_entry)))
        side = min(side, 32768)
    return int(max(min(m, 64), min(m, side)))


def _even_block(m: int, side: int) -> int:
    """Rows of a CPU self-join block, about ``side`` at most: the fewest blocks of one
    size (not 9 x 2048 and 1568 for m = 20 000, but 10 x 2000), rounded up to a multiple
    of 16 rows and, from a multiple of 1024, 16 rows more (a product's rows of 4 KiB
    multiples alias in the caches: m = 20 000 took 4-6% longer in blocks of 2048 than of
    2000, and as much more CPU time; m = 50 000, d = 512 5-8%). Up to 31 rows above the
    equal size, never fewer: the blocks stay as many, the last one a little smaller (m =
    4096: 2064 and 2032 rows, not 2032, 2032 and 32)."""
    if m <= side:
        return max(1, m)
    even = -(-m // -(-m // side))
    rows = 16 * -(-even // 16)
    return rows + 16 if rows % 1024 == 0 else rows


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
    if xp is np:  # temporaries of a few MB, reused from the allocator: fresh pages of tens
        chunk = min(chunk, max(1, 4 * MIB // (24 * base.shape[1])))  # of MB cost 2 ms a MB
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
