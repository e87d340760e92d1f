"""Target statistics of the SmI family (``smoothness.target_stats``) against brute force.

One-dimensional targets take a sorted path (O(m log m)); the expected values here come
from the full m x m float64 distance matrix, computed the way METRICS.md section 2 defines
them: ``e_ij = sqrt((y_i - y_j)^2)``, Dmax over all points, Dmin and the r target-space
neighbours over the other points (ties to the lower index), Dmean over all m points. The
data include ties, duplicates, targets far from zero whose differences round to the same
distance, and magnitudes whose squares underflow or overflow.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from layerscope.server.metrics import smoothness
from layerscope.server.metrics.smoothness import target_stats

# The "huge" targets overflow when squared, on purpose (the engine then takes its row path,
# whose float64 squares overflow the same way the definition's do).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def brute(yq: np.ndarray, yb: np.ndarray, r: int, self_mode: bool) -> dict[str, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflowing squares are the point
        sq = (yq[:, None] - yb[None, :]) ** 2
    dist = np.sqrt(sq)
    out = {"dmax": dist.max(axis=1), "dmean": dist.sum(axis=1) / len(yb)}
    other = sq.copy()
    if self_mode:
        np.fill_diagonal(other, np.inf)
    out["dmin"] = np.sqrt(other.min(axis=1))
    if r:
        idx = np.broadcast_to(np.arange(len(yb)), other.shape)
        rank = np.lexsort((idx, other), axis=1)[:, :r]  # by distance, then index
        out["nbr"] = rank
        out["nbr_dist"] = np.sqrt(np.take_along_axis(other, rank, axis=1))
    return out


def _targets(kind: str, m: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=m)
    if kind == "levels":  # many equal targets
        return rng.integers(0, 4, m).astype(np.float64)
    if kind == "far":  # near 1e16 the float spacing is 2: distances round together
        return np.concatenate([[1e16, 1e16 + 2, -1e16], rng.integers(0, 8, m - 3)]).astype(
            np.float64)
    if kind == "tiny":  # squares underflow: the sorted path must not be taken blindly
        return rng.integers(-3, 3, m) * 1e-170
    if kind == "huge":  # squares overflow
        return np.concatenate([rng.integers(0, 3, m - 2), [1e300, -1e300]]).astype(np.float64)
    raise AssertionError(kind)


KINDS = ["normal", "levels", "far", "tiny", "huge"]


def _compare(got, want: dict[str, np.ndarray], r: int) -> None:
    np.testing.assert_array_equal(got.dmax, want["dmax"])
    np.testing.assert_array_equal(got.dmin, want["dmin"])
    # Dmean: prefix sums on the sorted path, a row sum here; equal up to rounding (the
    # brute force's own underflow aside, where both are the same row sum).
    np.testing.assert_allclose(got.dmean, want["dmean"], rtol=1e-12, atol=0)
    if r:
        np.testing.assert_array_equal(got.nbr_dist, want["nbr_dist"])
        # Among equal distances the set is what counts (ties to the lower index at the
        # boundary); compare in (distance, index) order.
        order = np.lexsort((got.nbr, got.nbr_dist), axis=1)
        np.testing.assert_array_equal(np.take_along_axis(got.nbr, order, axis=1), want["nbr"])


# r < m, and "far"/"huge" need room for their special targets.
SELF_CASES = [(kind, m, r) for kind in KINDS for m in (2, 3, 7, 40, 300) for r in (0, 1, 3, 6)
              if r < m and (m >= 4 or kind not in ("far", "huge"))]


@pytest.mark.parametrize("kind,m,r", SELF_CASES)
def test_self_statistics_equal_brute_force(kind: str, m: int, r: int) -> None:
    rng = np.random.default_rng(m * 10 + r)
    y = _targets(kind, m, rng)
    got = target_stats(np, y[:, None], y[:, None], r, self_mode=True, memory_budget_mb=64.0)
    _compare(got, brute(y, y, r, True), r)


@pytest.mark.parametrize("kind,m", [(k, m) for k in KINDS for m in (2, 40, 300)
                                    if m >= 4 or k not in ("far", "huge")])
def test_cross_statistics_equal_brute_force(kind: str, m: int) -> None:
    rng = np.random.default_rng(m)
    y = _targets(kind, m, rng)
    # Queries: some equal to base targets, some between, some outside the range.
    q = np.concatenate([y[: m // 2], y[:3] + 0.5, [y.min() - 1.0, y.max() + 1.0]])
    got = target_stats(np, q[:, None], y[:, None], 0, self_mode=False, memory_budget_mb=64.0)
    _compare(got, brute(q, y, 0, False), 0)


def test_distances_that_round_together_are_redone_by_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Targets near 1e16 are 2 apart as floats, so 1e16 is as far from 0 as from 1: the
    next distinct value can be as close as the r-th neighbour, and the sorted candidates
    alone would miss a lower index. The result must still be the brute force's."""
    y = np.array([1e16, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0, -1.0, 1e16 + 4])
    redone: list[int] = []
    rows_path = smoothness._target_stats_rows

    def spy(*args: object, **kw: object) -> object:
        redone.append(len(kw["rows"]))  # type: ignore[arg-type]
        return rows_path(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(smoothness, "_target_stats_rows", spy)
    for r in range(1, 6):
        got = target_stats(np, y[:, None], y[:, None], r, self_mode=True,
                           memory_budget_mb=64.0)
        _compare(got, brute(y, y, r, True), r)
    assert redone and all(n < len(y) for n in redone)  # only the unproven queries


def test_queries_far_outside_the_targets_overflow_like_the_definition() -> None:
    """A test target whose squared distance to the training targets overflows: Dmax and
    Dmean are inf, as the definition's float64 arithmetic gives them."""
    y = np.array([0.0, 1.0, 2.0, 5.0])
    q = np.array([1.5, 1e200, -3.0])
    got = target_stats(np, q[:, None], y[:, None], 0, self_mode=False, memory_budget_mb=64.0)
    _compare(got, brute(q, y, 0, False), 0)
    assert np.isinf(got.dmean[1]) and np.isfinite(got.dmean[0])


def test_multi_column_targets_still_use_the_rows() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(50, 2))
    got = target_stats(np, y, y, 2, self_mode=True, memory_budget_mb=64.0)
    sq = ((y[:, None, :] - y[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_allclose(got.dmax, np.sqrt(sq).max(axis=1), rtol=1e-15)


# Groups of equal targets larger and smaller than r, r up to m - 1: the windows beside a
# query's own value, and the first members of a value that reaches past a window's end.
LARGE_R_CASES = [(levels, m, r) for levels in (3, 12, 1000) for m in (40, 97)
                 for r in (5, 17, m - 1)]


def _stats_in_bounded_memory(yq: np.ndarray, yb: np.ndarray, r: int, self_mode: bool) -> object:
    """target_stats, checked to take O(n r) memory: about 3r + 1 candidates per query, a
    dozen 8-byte arrays of them (candidates from r values on either side with r members
    each would be 2r^2 + r + 1 per query)."""
    import tracemalloc

    tracemalloc.start()
    try:
        got = target_stats(np, yq[:, None], yb[:, None], r, self_mode=self_mode,
                           memory_budget_mb=64.0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bound = 16 * 8 * (len(yq) * (3 * r + 1) + len(yb)) + 8192  # + sorted copies, prefix sums
    assert peak < bound, (peak, bound)
    return got


@pytest.mark.parametrize("levels,m,r", LARGE_R_CASES)
def test_self_neighbours_of_high_orders_equal_brute_force(levels: int, m: int, r: int) -> None:
    rng = np.random.default_rng(levels + m + r)
    y = rng.integers(0, levels, m).astype(np.float64)
    got = _stats_in_bounded_memory(y, y, r, True)
    _compare(got, brute(y, y, r, True), r)


@pytest.mark.parametrize("levels,r", [(3, 4), (12, 9), (1000, 30)])
def test_query_neighbours_equal_brute_force(levels: int, r: int) -> None:
    rng = np.random.default_rng(levels)
    y = rng.integers(0, levels, 60).astype(np.float64)
    q = np.concatenate([y[:10], y[:5] + 0.5, [y.min() - 1.0, y.max() + 1.0]])
    got = _stats_in_bounded_memory(q, y, r, False)
    _compare(got, brute(q, y, r, False), r)


def test_neighbour_memory_grows_with_r_not_r_squared() -> None:
    """m = 300 points and r = 150: 2 GB with r^2 candidates per point, ~10 MB with 3r + 1."""
    y = np.random.default_rng(0).normal(size=300)
    _stats_in_bounded_memory(y, y, 150, True)
