"""knn against an independent brute-force float64 reference.

The contract (METRICS.md section 0): neighbours are ordered by the float64 squared distance
``((q - b) ** 2).sum()`` of the inputs (float32 inputs are widened to float64 first), ties
by the lower index; in self mode (``queries=None``) a point is never its own neighbour.
The reference below computes the full distance matrix and sorts every row with
``np.lexsort`` by (distance, index); every test compares indices for exact equality.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from typing import Any

import numpy as np
import pytest

from layerscope.server.metrics import knn
from layerscope.server.metrics.knn import topk_exact

SEARCHES = ("selfjoin", "faiss", "blas")
QUERY_SEARCHES = ("faiss", "blas")  # the self-join searches a set against itself only


def reference_sqdist(base: np.ndarray, queries: np.ndarray | None = None) -> np.ndarray:
    """Full (n, m) matrix of float64 ``((q - b) ** 2).sum()``."""
    b = np.asarray(base, dtype=np.float64)
    q = b if queries is None else np.asarray(queries, dtype=np.float64)
    return ((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def reference_knn(
    base: np.ndarray, k: int, queries: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (indices, sqdist) of the k nearest by (distance, index), self excluded."""
    dist = reference_sqdist(base, queries)
    n, m = dist.shape
    cols = np.arange(m)
    idx = np.empty((n, k), dtype=np.int64)
    for i in range(n):
        row = dist[i].copy()
        if queries is None:
            row[i] = np.inf
        idx[i] = np.lexsort((cols, row))[:k]
    return idx, np.take_along_axis(dist, idx, axis=1)


def has_ties(dist: np.ndarray, self_mode: bool) -> bool:
    d = dist.copy()
    if self_mode:
        np.fill_diagonal(d, np.inf)
    s = np.sort(d, axis=1)
    return bool((s[:, 1:] == s[:, :-1]).any())


# --- generic data -----------------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("k", [1, 3, 10])
def test_random_float64_matches_reference(search: str, k: int) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 7))
    nb = knn(x, k, candidate_search=search)
    expected, _ = reference_knn(x, k)
    np.testing.assert_array_equal(nb.indices, expected)
    assert nb.indices.shape == (120, k)
    assert nb.indices.dtype == np.int64


@pytest.mark.parametrize("search", SEARCHES)
def test_random_float32_matches_float64_rule_on_float32_values(search: str) -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(150, 5)).astype(np.float32)
    nb = knn(x, 6, candidate_search=search)
    expected, _ = reference_knn(x, 6)  # float32 values widened to float64, then summed
    np.testing.assert_array_equal(nb.indices, expected)


def test_point_is_never_its_own_neighbour_in_self_mode() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 3))
    nb = knn(x, 59)
    assert not (nb.indices == np.arange(60)[:, None]).any()


# --- ties and duplicates ------------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
def test_exact_duplicates_are_ordered_by_lower_index(search: str) -> None:
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(30, 4))
    x = np.concatenate([pts, pts[:10], pts[5:8], pts[5:8]])  # pairs and quadruples
    nb = knn(x, 4, candidate_search=search)
    expected, _ = reference_knn(x, 4)
    np.testing.assert_array_equal(nb.indices, expected)
    # point 0's twin is 30: distance 0 puts it first
    assert nb.indices[0, 0] == 30
    assert nb.indices[30, 0] == 0


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_big_duplicate_groups_use_the_fallback_and_stay_exact(search: str, dtype: type) -> None:
    rng = np.random.default_rng(5)
    k = 5
    group = k + 8 + 12  # more duplicates than the candidate list can hold
    centers = rng.normal(size=(3, 4))
    x = np.concatenate([np.repeat(centers, group, axis=0), rng.normal(size=(25, 4))])
    x = rng.permutation(x).astype(dtype)  # groups scattered over the index range
    nb = knn(x, k, candidate_search=search)
    expected, _ = reference_knn(x, k)
    assert nb.fallback_rows > 0
    np.testing.assert_array_equal(nb.indices, expected)


def test_duplicate_group_neighbours_are_the_lowest_other_indices_of_the_group() -> None:
    x = np.zeros((40, 2))
    x[35:] = 1.0  # 35 identical points, then 5 identical points
    nb = knn(x, 3)
    assert nb.fallback_rows > 0
    np.testing.assert_array_equal(nb.indices[0], [1, 2, 3])
    np.testing.assert_array_equal(nb.indices[2], [0, 1, 3])
    np.testing.assert_array_equal(nb.indices[34], [0, 1, 2])
    np.testing.assert_array_equal(nb.indices[39], [35, 36, 37])


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_integer_valued_data_with_many_ties(search: str, dtype: type) -> None:
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, size=(90, 2)).astype(dtype)  # 9 distinct points, many ties
    expected, _ = reference_knn(x, 12)
    assert has_ties(reference_sqdist(x), self_mode=True)
    nb = knn(x, 12, candidate_search=search)
    np.testing.assert_array_equal(nb.indices, expected)


@pytest.mark.parametrize("search", SEARCHES)
def test_equidistant_points_on_a_lattice(search: str) -> None:
    # every interior point of the grid has 4 neighbours at distance 1: pure index tie-break
    g = np.stack(np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij"), -1).reshape(-1, 2)
    nb = knn(g, 8, candidate_search=search)
    expected, _ = reference_knn(g, 8)
    np.testing.assert_array_equal(nb.indices, expected)


# --- precision-sensitive data ---------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
def test_large_common_offset_keeps_the_float64_order(search: str) -> None:
    rng = np.random.default_rng(7)
    x = 1e6 + rng.normal(scale=1e-3, size=(80, 4))
    expected, _ = reference_knn(x, 5)
    # float32 alone cannot see the noise (its spacing at 1e6 is 0.0625): the naive float32
    # order is a different one, so this data really tests the float64 rule
    naive, _ = reference_knn(x.astype(np.float32), 5)
    assert not np.array_equal(naive, expected)
    nb = knn(x, 5, candidate_search=search)
    np.testing.assert_array_equal(nb.indices, expected)


@pytest.mark.parametrize("search", SEARCHES)
def test_near_ties_below_float32_resolution(search: str) -> None:
    # pairs whose distances differ in the last bits of float64 only
    rng = np.random.default_rng(8)
    x = rng.normal(size=(50, 3))
    eps = np.array([1e-13, 0.0, 0.0])
    x = np.concatenate([x, x + eps, x - eps])
    nb = knn(x, 4, candidate_search=search)
    expected, _ = reference_knn(x, 4)
    np.testing.assert_array_equal(nb.indices, expected)


@pytest.mark.parametrize("search", SEARCHES)
def test_tiny_differences_next_to_a_huge_outlier(search: str) -> None:
    rng = np.random.default_rng(23)
    x = rng.normal(size=(40, 3)) * 1e-30
    x[0] = 1e10  # the float32 candidate stage sees the cluster as one point
    nb = knn(x, 5, candidate_search=search)
    expected, _ = reference_knn(x, 5)
    np.testing.assert_array_equal(nb.indices, expected)


@pytest.mark.parametrize("search", SEARCHES)
def test_float32_values_whose_squares_overflow_float32(search: str) -> None:
    rng = np.random.default_rng(24)
    x = (rng.normal(size=(40, 3)) * 1e30).astype(np.float32)
    nb = knn(x, 5, candidate_search=search, return_distance=True)
    expected, dist = reference_knn(x, 5)
    np.testing.assert_array_equal(nb.indices, expected)
    np.testing.assert_array_equal(nb.sqdist, dist)


@pytest.mark.parametrize("search", SEARCHES)
def test_all_points_identical_gives_index_order(search: str) -> None:
    x = np.full((30, 4), 2.5)
    nb = knn(x, 29, candidate_search=search)
    for i, row in enumerate(nb.indices):
        assert row.tolist() == [j for j in range(30) if j != i]


@pytest.mark.parametrize("search", SEARCHES)
def test_high_dimensional_binary_data(search: str) -> None:
    rng = np.random.default_rng(25)
    x = rng.integers(0, 2, size=(60, 300)).astype(np.float32)
    nb = knn(x, 7, candidate_search=search)
    expected, _ = reference_knn(x, 7)
    np.testing.assert_array_equal(nb.indices, expected)


def test_squared_distances_that_underflow_to_zero_tie_and_go_by_index() -> None:
    # Differences of 1e-300 square to 0.0 in float64: by the float64 rule all the distances
    # are equal, so each point's neighbours are the others in index order.
    x = np.array([[0.0], [3e-300], [1e-300], [2e-300]])
    assert (reference_sqdist(x) == 0).all()
    nb = knn(x, 3)
    np.testing.assert_array_equal(nb.indices, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]])


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("scale", [1e-300, 1e-161])
def test_subnormal_squared_distances_follow_the_float64_rule(search: str, scale: float) -> None:
    # at 1e-161 the squares are subnormal: float64 rounds many of them to equal values
    rng = np.random.default_rng(26)
    x = rng.normal(size=(30, 2)) * scale
    nb = knn(x, 4, candidate_search=search)
    expected, _ = reference_knn(x, 4)
    np.testing.assert_array_equal(nb.indices, expected)


# --- queries mode ---------------------------------------------------------------------------


@pytest.mark.parametrize("search", QUERY_SEARCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_queries_against_train_match_reference(search: str, dtype: type) -> None:
    rng = np.random.default_rng(9)
    train = rng.normal(size=(100, 6)).astype(dtype)
    test = rng.normal(size=(40, 6)).astype(dtype)
    nb = knn(train, 7, queries=test, candidate_search=search)
    expected, _ = reference_knn(train, 7, queries=test)
    np.testing.assert_array_equal(nb.indices, expected)
    assert nb.indices.shape == (40, 7)


@pytest.mark.parametrize("search", QUERY_SEARCHES)
def test_queries_equal_to_train_points_find_them_first_without_exclusion(search: str) -> None:
    rng = np.random.default_rng(10)
    train = rng.integers(0, 4, size=(60, 2)).astype(np.float64)
    test = train[[0, 5, 17, 59]]
    nb = knn(train, 5, queries=test, candidate_search=search)
    expected, _ = reference_knn(train, 5, queries=test)
    np.testing.assert_array_equal(nb.indices, expected)
    # the lowest-index copy of each query's value comes first (distance 0)
    for row, q in zip(nb.indices, test, strict=True):
        first_copy = int(np.flatnonzero((train == q).all(axis=1))[0])
        assert row[0] == first_copy


def test_queries_mode_allows_k_equal_to_m() -> None:
    rng = np.random.default_rng(11)
    train = rng.normal(size=(20, 3))
    test = rng.normal(size=(5, 3))
    nb = knn(train, 20, queries=test)
    expected, _ = reference_knn(train, 20, queries=test)
    np.testing.assert_array_equal(nb.indices, expected)


# --- k at its limit ---------------------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
def test_k_equal_to_m_minus_one_is_a_full_ordering(search: str) -> None:
    rng = np.random.default_rng(12)
    x = rng.integers(0, 3, size=(25, 2)).astype(np.float64)
    nb = knn(x, 24, candidate_search=search)
    expected, _ = reference_knn(x, 24)
    np.testing.assert_array_equal(nb.indices, expected)
    for i, row in enumerate(nb.indices):  # every other point exactly once
        assert sorted(row.tolist()) == [j for j in range(25) if j != i]


def test_two_points_are_each_others_neighbour() -> None:
    nb = knn(np.array([[0.0], [1.0]]), 1)
    np.testing.assert_array_equal(nb.indices, [[1], [0]])


@pytest.mark.parametrize("k", [0, 10])
def test_k_outside_one_to_m_minus_one_is_rejected(k: int) -> None:
    with pytest.raises(ValueError, match="k must be in 1..9"):
        knn(np.zeros((10, 2)), k)


# --- distances ------------------------------------------------------------------------------


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_return_distance_equals_reference_distances_exactly(search: str, dtype: type) -> None:
    rng = np.random.default_rng(13)
    x = (1e3 + rng.normal(size=(70, 9))).astype(dtype)
    nb = knn(x, 6, return_distance=True, candidate_search=search)
    idx, dist = reference_knn(x, 6)
    np.testing.assert_array_equal(nb.indices, idx)
    assert nb.sqdist is not None
    assert nb.sqdist.dtype == np.float64
    np.testing.assert_array_equal(nb.sqdist, dist)


def test_return_distance_in_queries_mode_equals_reference() -> None:
    rng = np.random.default_rng(14)
    train = rng.normal(size=(50, 4))
    test = rng.normal(size=(15, 4))
    nb = knn(train, 3, queries=test, return_distance=True)
    _, dist = reference_knn(train, 3, queries=test)
    np.testing.assert_array_equal(nb.sqdist, dist)


def test_distances_are_not_returned_unless_asked() -> None:
    nb = knn(np.random.default_rng(15).normal(size=(10, 2)), 2)
    assert nb.sqdist is None


# --- candidate search and precision ---------------------------------------------------------


@pytest.mark.parametrize("seed", [16, 17])
def test_faiss_and_blas_candidate_search_give_identical_indices(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate(
        [rng.normal(size=(200, 8)), np.repeat(rng.normal(size=(2, 8)), 20, axis=0)]
    ).astype(np.float32)
    a = knn(x, 9, candidate_search="faiss")
    b = knn(x, 9, candidate_search="blas")
    assert a.candidate_search == "faiss"
    assert b.candidate_search == "blas"
    np.testing.assert_array_equal(a.indices, b.indices)
    q = rng.normal(size=(30, 8))
    np.testing.assert_array_equal(
        knn(x, 9, queries=q, candidate_search="faiss").indices,
        knn(x, 9, queries=q, candidate_search="blas").indices,
    )


def test_row_accounting_covers_every_row_once() -> None:
    rng = np.random.default_rng(18)
    x = rng.integers(0, 3, size=(80, 2)).astype(np.float64)
    nb = knn(x, 5)
    # fallback rows are a subset of the re-ranked ones
    assert nb.certified_rows + nb.reranked_rows == 80
    assert 0 <= nb.fallback_rows <= nb.reranked_rows


def test_exact_precision_reports_itself() -> None:
    nb = knn(np.random.default_rng(19).normal(size=(30, 3)), 2)
    assert nb.precision == "exact"


@pytest.mark.parametrize("search", SEARCHES)
def test_fast_precision_reports_itself(search: str) -> None:
    rng = np.random.default_rng(20)
    nb = knn(rng.normal(size=(40, 3)), 3, precision="fast", candidate_search=search)
    assert nb.precision == "fast"
    assert nb.indices.shape == (40, 3)
    assert nb.reranked_rows == 0
    assert nb.fallback_rows == 0


def test_fast_precision_agrees_with_reference_when_there_are_no_near_ties() -> None:
    # well-separated integer lattice points scaled apart: float32 order is the exact order
    rng = np.random.default_rng(21)
    x = rng.permutation(np.arange(64, dtype=np.float64) ** 1.5)[:, None]
    nb = knn(x, 3, precision="fast")
    expected, _ = reference_knn(x, 3)
    np.testing.assert_array_equal(nb.indices, expected)


def test_unknown_precision_is_rejected() -> None:
    with pytest.raises(ValueError, match="precision"):
        knn(np.zeros((5, 2)), 1, precision="half")


def test_unknown_candidate_search_is_rejected() -> None:
    with pytest.raises(ValueError, match="candidate_search"):
        knn(np.zeros((5, 2)), 1, candidate_search="annoy")


def test_knn_does_not_modify_its_inputs() -> None:
    rng = np.random.default_rng(22)
    base = rng.normal(size=(40, 3))
    q = rng.normal(size=(10, 3)).astype(np.float32)
    base0, q0 = base.copy(), q.copy()
    knn(base, 4, return_distance=True)
    knn(base, 4, queries=q, return_distance=True)
    np.testing.assert_array_equal(base, base0)
    np.testing.assert_array_equal(q, q0)


@pytest.mark.parametrize("seed", range(5))
def test_topk_exact_orders_equal_distances_by_index(seed: int) -> None:
    """Not only the set at the k-th value: inside the k best, equal distances also come in
    index order (positions matter to the ordered indices)."""
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(3, 200))
        k = int(rng.integers(1, n + 1))
        dist = rng.integers(0, 4, size=(4, n)).astype(np.float64)
        vals, idx = topk_exact(np, dist, k)
        want = np.lexsort((np.broadcast_to(np.arange(n), dist.shape), dist), axis=1)[:, :k]
        np.testing.assert_array_equal(idx, want)
        np.testing.assert_array_equal(vals, np.take_along_axis(dist, want, axis=1))


@pytest.mark.parametrize("search", ["faiss", "blas"])
@pytest.mark.parametrize("m,d", [(150_000, 512), (50_000, 512), (2_000, 8)])
def test_a_block_is_bounded_in_work_as_well_as_memory(search: str, m: int, d: int) -> None:
    """Query rows per block keep the block's product within MAX_BLOCK_WORK multiply-adds
    (a cancel or deadline waits at most one block), and stay within half the budget."""
    from layerscope.server.metrics.knn import (
        BYTES_PER_CANDIDATE,
        MAX_BLOCK_WORK,
        search_plan,
    )

    budget = 1 << 30
    want, rows = search_plan(m, d, m, 5, True, budget, search)
    assert rows * m * d <= MAX_BLOCK_WORK or rows == 1
    assert rows * (BYTES_PER_CANDIDATE * want + 8 * d) <= budget // 2
    if m * d * 64 <= MAX_BLOCK_WORK and search == "faiss":
        assert rows >= 64  # small problems keep large blocks


# --- the symmetric self-join --------------------------------------------------------------


@pytest.mark.parametrize("block", [16, 23, 100])
def test_self_join_computes_each_block_pair_once(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The self-join's products cover the upper triangle of X X^T: nb (nb + 1) / 2 block
    products (faiss's knn and the blas search compute nb^2), each unordered pair of blocks
    once, and the neighbours are still exactly the reference's."""
    knn_module = importlib.import_module("layerscope.server.metrics.knn")
    rng = np.random.default_rng(7)
    m = 100
    x = rng.normal(size=(m, 6))
    seen: list[tuple[int, int]] = []
    real = knn_module.block_product

    def counting(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None,
                 pool: Any = None, parts: int = 1) -> np.ndarray:
        # The last two columns of a row block are (-|z|^2 / 2, 1), the last two rows of a
        # column block's operand (1, -|z|^2 / 2): a block is known by its first point's norm.
        seen.append((round(float(a[0, -2]), 12), round(float(bt[-1, 0]), 12)))
        return real(a, bt, out, pool, parts)

    monkeypatch.setattr(knn_module, "block_product", counting)
    nb = knn(x, 5, candidate_search="selfjoin", block_rows=block)
    n_blocks = -(-m // block)
    assert len(seen) == n_blocks * (n_blocks + 1) // 2 == nb.products
    assert len({frozenset(p) for p in seen}) == len(seen)  # no pair twice, either way round
    np.testing.assert_array_equal(nb.indices, reference_knn(x, 5)[0])


@pytest.mark.parametrize(("panels", "with_faiss"), [(4, True), (3, True), (4, False),
                                                   (9, False)])
def test_a_diagonal_block_computes_the_upper_triangle_of_its_panels(
    panels: int, with_faiss: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diagonal block is computed as panels of its rows, each against the columns from
    its own first row on: every pair of points is computed once, except the pairs inside
    one panel (its square at the diagonal, twice); the panels are consecutive rows of
    sizes within one. The neighbours are still exactly the reference's, with duplicates
    and ties too, on faiss's heaps and on the NumPy pools (rows and columns offered from
    panels that do not start a block)."""
    knn_module = importlib.import_module("layerscope.server.metrics.knn")
    monkeypatch.setattr(knn_module, "DIAGONAL_PANELS", panels)
    monkeypatch.setattr(knn_module, "DIAGONAL_PANEL_MIN", 3)
    if not with_faiss:
        monkeypatch.setattr(knn_module, "_faiss_module", lambda: None)
    rng = np.random.default_rng(11)
    m, block = 110, 40  # blocks of 40, 40 and 30 points
    x = rng.normal(size=(m, 5))
    computed = np.zeros((m, m), dtype=np.int64)
    real = knn_module.block_product

    def counting(a: np.ndarray, bt: np.ndarray, out: np.ndarray | None = None,
                 pool: Any = None, parts: int = 1) -> np.ndarray:
        # a point is known by its norm: the row operand's column -|z|^2 / 2, the column
        # operand's last row
        rows = np.searchsorted(key_sorted, a[:, -2])
        cols = np.searchsorted(key_sorted, bt[-1])
        assert (key_sorted[rows] == a[:, -2]).all() and (key_sorted[cols] == bt[-1]).all()
        computed[np.ix_(order[rows], order[cols])] += 1
        return real(a, bt, out, pool, parts)

    prep = knn_module._Prepared(np, x, None, chunk=m, augment=True)
    keys = prep.w[:, -2].copy()
    order = np.argsort(keys)
    key_sorted = keys[order]
    assert len(np.unique(keys)) == m
    monkeypatch.setattr(knn_module, "block_product", counting)
    nb = knn(x, 6, candidate_search="selfjoin", block_rows=block)

    both = computed + computed.T
    np.testing.assert_array_equal(np.diag(computed), 1)
    twice = both == 2
    np.fill_diagonal(twice, True)
    assert set(np.unique(both[~twice])) == {1}  # every other pair once, none left out
    for start, size in [(0, 40), (40, 40), (80, 30)]:
        # the pairs computed twice: squares of consecutive points, inside their block
        sub = twice[start : start + size, start : start + size]
        assert not twice[start : start + size].sum() - sub.sum()
        cuts = [0] + [i for i in range(1, size) if not sub[i, i - 1]] + [size]
        sizes = np.diff(cuts)
        assert len(sizes) == min(panels, size // 3) and sizes.max() - sizes.min() <= 1
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            assert sub[a:b, a:b].all()
            assert not sub[a:b, b:].any()
    assert nb.products == 3 * 4 // 2  # block pairs, as before
    np.testing.assert_array_equal(nb.indices, reference_knn(x, 6)[0])
    # duplicates and ties (points the product cannot tell apart, so not counted above)
    monkeypatch.setattr(knn_module, "block_product", real)
    y = np.concatenate([x[:60], np.repeat(x[60:64], 5, 0),
                        rng.integers(0, 2, size=(30, 5)).astype(np.float64)])
    y = y[rng.permutation(len(y))]
    np.testing.assert_array_equal(knn(y, 6, candidate_search="selfjoin", block_rows=block).indices,
                                  reference_knn(y, 6)[0])


@pytest.mark.parametrize(("with_faiss", "threads"), [(True, None), (True, 3), (True, 7),
                                                    (False, None)])
def test_self_join_is_exact_with_and_without_faiss_heaps(
    with_faiss: bool, threads: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many blocks, duplicates and ties: the threaded join on faiss's heaps (as many
    threads as BLAS had: 3 and 7 forced here, slices of unequal sizes) and the NumPy
    pools (no faiss: one thread) give the reference's neighbours."""
    knn_module = importlib.import_module("layerscope.server.metrics.knn")
    if not with_faiss:
        monkeypatch.setattr(knn_module, "_faiss_module", lambda: None)
    if threads is not None:
        monkeypatch.setattr(knn_module, "_one_blas_thread",
                            lambda: contextlib.nullcontext(threads))
    rng = np.random.default_rng(21)
    x = np.concatenate([rng.normal(size=(300, 9)), np.repeat(rng.normal(size=(3, 9)), 15, 0),
                        rng.integers(0, 2, size=(120, 9)).astype(np.float64)])
    nb = knn(x, 7, candidate_search="selfjoin", block_rows=64)
    assert nb.products == 8 * 9 // 2
    np.testing.assert_array_equal(nb.indices, reference_knn(x, 7)[0])


def test_blas_is_limited_to_one_thread_while_joins_run_and_restored_after() -> None:
    """The join's own threads run BLAS one thread per call; the process's setting is
    shared by concurrent joins and restored when the last one ends."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    knn_module = importlib.import_module("layerscope.server.metrics.knn")

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas"}

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("this machine's BLAS runs on one thread only")
        first = knn_module._one_blas_thread()
        second = knn_module._one_blas_thread()
        first.__enter__()
        assert blas_threads() == {1}
        second.__enter__()
        first.__exit__(None, None, None)
        assert blas_threads() == {1}  # the second join still runs
        second.__exit__(None, None, None)
        assert blas_threads() == {2}


def test_the_blas_limit_holds_in_every_thread_that_runs_a_join() -> None:
    """A server runs its joins in its handlers' threads. threadpoolctl (3.8 on) lets only
    the first thread that set an OpenBLAS limit change it again, silently: a join run in
    another thread than the first join's ran its products with BLAS's threads on top of
    its own (20-30% slower). Joins entered and ended in different threads, one after the
    other and overlapping, each run with BLAS on one thread, and the last restores it.
    (The process-wide pools: an OpenMP-built BLAS, as faiss's, is limited per thread.)"""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    knn_module = importlib.import_module("layerscope.server.metrics.knn")

    def blas_threads() -> set[int]:
        return {p["num_threads"] for p in threadpoolctl.threadpool_info()
                if p["user_api"] == "blas" and p.get("threading_layer") != "openmp"}

    def in_thread(fn: Any) -> Any:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(fn()))
        t.start()
        t.join()
        return out[0]

    def one_join() -> set[int]:
        with knn_module._one_blas_thread():
            return blas_threads()

    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if blas_threads() != {2}:
            pytest.skip("this machine's BLAS runs on one thread only")
        assert one_join() == {1}  # this thread first
        assert in_thread(one_join) == {1}  # then another
        assert in_thread(one_join) == {1}  # and a third
        assert blas_threads() == {2}
        first = knn_module._one_blas_thread()
        in_thread(first.__enter__)  # a join starts in one thread ...
        second = knn_module._one_blas_thread()
        second.__enter__()  # ... another joins it here ...
        in_thread(lambda: first.__exit__(None, None, None))  # ... the first ends there
        assert blas_threads() == {1}
        second.__exit__(None, None, None)  # the last restores, from another thread
        assert blas_threads() == {2}
        assert one_join() == {1}


def test_self_mode_searches_with_the_self_join_by_default() -> None:
    x = np.random.default_rng(3).normal(size=(300, 4))
    nb = knn(x, 3)
    assert nb.candidate_search == "selfjoin"
    assert nb.products == 1  # one block holds these 300 points
    np.testing.assert_array_equal(nb.indices, reference_knn(x, 3)[0])


def test_self_join_is_refused_with_queries() -> None:
    x = np.zeros((10, 2))
    with pytest.raises(ValueError, match="against itself"):
        knn(x, 2, queries=x, candidate_search="selfjoin")


def test_auto_computes_every_distance_when_every_base_point_is_a_candidate() -> None:
    """Queries against a few points (class means): every base point is a candidate (k = 1
    keeps 10), so ``auto`` takes the product alone, not faiss's heaps; against more points,
    faiss when installed. Both give the reference's neighbours."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(5)
    q = rng.normal(size=(500, 8))
    for m, expected in ((3, "blas"), (10, "blas"), (11, "faiss"), (200, "faiss")):
        base = np.concatenate([rng.normal(size=(m - 2, 8)), q[:2]])  # two at distance 0
        nb = knn(base, 1, queries=q)
        assert nb.candidate_search == expected, m
        np.testing.assert_array_equal(nb.indices, reference_knn(base, 1, q)[0])


def test_cpu_self_join_blocks_are_even_and_never_a_multiple_of_1024_rows() -> None:
    """The CPU self-join's block: no more blocks than the budget's side allows, of about
    one size (up to 31 rows above the fewest blocks' equal size; at the default side no
    last block under a quarter of the others), a multiple of 16 rows, never of 1024 (rows of
    4 KiB multiples alias in the caches)."""
    knn_module = importlib.import_module("layerscope.server.metrics.knn")
    for side in (100, 1000, 2048):
        for m in [*range(side - 3, side + 3), 2 * side, 10 * side + 1, 4096, 8192, 16_384,
                  20_000, 20_480, 50_000, 65_536, 200_000, 1_000_000]:
            rows = knn_module._even_block(m, side)
            if m <= side:
                assert rows == m
                continue
            fewest = -(-m // side)
            even = -(-m // fewest)  # the fewest blocks' equal size
            assert rows % 16 == 0 and rows % 1024, (m, side, rows)
            assert even <= rows <= even + 31, (m, side, rows)
            blocks = -(-m // rows)
            assert blocks <= fewest, (m, side, rows)
            if side == 2048:  # the default: no tiny last block
                assert m - (blocks - 1) * rows >= rows // 4, (m, side, rows)
    assert knn_module._even_block(20_000, 2048) == 2000  # ten blocks, not 9 x 2048 + 1568
    assert knn_module._even_block(4096, 2048) == 2064  # 2064 + 2032, not 2 x 2032 + 32
    budget = 256 * knn_module.MIB
    assert knn_module.selfjoin_block(np, 50_000, 512, budget) == 2000
    assert knn_module.selfjoin_block(np, 50_000, 512, 1024) == 64  # a tiny budget: 64 rows
