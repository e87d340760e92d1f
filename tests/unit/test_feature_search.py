"""The neighbour search behind forward selection (``features._CandidateSearch``) against
brute force.

For a sequence of selected features, every point's nearest neighbour under the selected
subset plus each candidate must equal ``argmin`` (the first minimum: the lowest index) of
distances recomputed here from scratch in float64, step after step. The search's knobs
(pool sizes, first scan width, when to scan densely, cache blocks, memory budget) change
which of its paths run (dense scans, pool extensions for every point, per-pair settling
with extensions for some points, refilled and shrunk pools, distances recomputed block by
block): the neighbours must never change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from layerscope.server.metrics import features
from layerscope.server.metrics.knn import MIB


def brute_neighbours(x: np.ndarray, selected: list[int], cands: list[int]) -> np.ndarray:
    """(m, len(cands)): nearest neighbour under ``selected`` plus each candidate."""
    x = x.astype(np.float64)
    m = x.shape[0]
    base = np.zeros((m, m))
    for f in selected:  # accumulated in selection order, as the definition sums
        base += (x[:, f][:, None] - x[:, f][None, :]) ** 2
    out = np.empty((m, len(cands)), dtype=np.int64)
    for k, f in enumerate(cands):
        dist = base + (x[:, f][:, None] - x[:, f][None, :]) ** 2
        np.fill_diagonal(dist, np.inf)
        out[:, k] = np.argmin(dist, axis=1)
    return out


KNOBS: dict[str, dict[str, Any]] = {
    "defaults": {},
    # Tiny pools and first scans: pools run out at once, extensions everywhere.
    "tiny-pools": {"POOL": 2, "REFILL": 1, "FIRST_STAGE": 1},
    # Never scan densely beyond the first scan: every open pair settles on its own.
    "settle-only": {"POOL": 4, "REFILL": 2, "FIRST_STAGE": 1, "DENSE_COST_RATIO": 1e9},
    # Always scan densely: pools extended for every point until every pair is settled.
    "dense-only": {"POOL": 3, "REFILL": 2, "FIRST_STAGE": 2, "DENSE_COST_RATIO": 0.0},
    # Row blocks of a few points in the dense scan and the per-pair chunks.
    "small-cache": {"POOL": 8, "REFILL": 8, "CACHE_BYTES": 256},
}


def _data(kind: str, m: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "levels":  # few values: equal distances everywhere, duplicate points
        return rng.integers(0, 3, size=(m, d)).astype(np.float32)
    if kind == "clusters":  # tight groups far apart: pools full of near-equal members
        centres = rng.normal(scale=50.0, size=(5, d))
        return (centres[rng.integers(0, 5, m)] + rng.normal(size=(m, d))).astype(np.float32)
    return rng.standard_normal((m, d)).astype(np.float32)


@pytest.mark.parametrize("knobs", list(KNOBS), ids=list(KNOBS))
@pytest.mark.parametrize("kind", ["normal", "levels", "clusters"])
@pytest.mark.parametrize("m,budget_mb", [(2, 64.0), (3, 64.0), (40, 64.0), (300, 64.0),
                                         (300, 0.05), (700, 64.0)])
def test_neighbours_equal_brute_force_step_after_step(
    monkeypatch: pytest.MonkeyPatch, knobs: str, kind: str, m: int, budget_mb: float
) -> None:
    for name, value in KNOBS[knobs].items():
        monkeypatch.setattr(features, name, value)
    d = 9
    x = _data(kind, m, d, seed=m + d)
    budget = int(budget_mb * MIB)
    dist = features._SubsetDistances(np, x, budget)
    assert (dist.full is None) == (budget_mb < 1)  # both ways of holding the distances
    search = features._CandidateSearch(np, dist, budget)
    order = list(np.random.default_rng(m).permutation(d)[:6])
    for step, f in enumerate(order):
        dist.add(int(f))
        search.advance(int(f))
        selected = [int(v) for v in order[: step + 1]]
        cands = [c for c in range(d) if c not in selected]
        got = np.concatenate([nn for _, nn in search.neighbours(cands)], axis=1)
        want = brute_neighbours(x, selected, cands)
        np.testing.assert_array_equal(got, want, err_msg=f"step {step + 1}, {selected}")


def test_a_hard_first_step_extends_the_pools_and_later_steps_shrink_them() -> None:
    """With one feature selected, 2-D neighbours lie far down the 1-D pools: the search
    widens and extends, then narrows again as the subset grows; neighbours stay exact."""
    x = _data("normal", 1500, 40, seed=3)
    budget = 256 * MIB
    dist = features._SubsetDistances(np, x, budget)
    search = features._CandidateSearch(np, dist, budget)
    sizes, widths = [], []
    order = list(range(12))
    for step, f in enumerate(order):
        dist.add(f)
        search.advance(f)
        cands = list(range(step + 1, 40))
        got = np.concatenate([nn for _, nn in search.neighbours(cands)], axis=1)
        if step in (0, 1, 11):
            np.testing.assert_array_equal(got, brute_neighbours(x, order[: step + 1], cands))
        sizes.append(search.size)
        widths.append(search.width)
    assert max(widths[:3]) > features.FIRST_STAGE  # widened on the hard early steps
    assert widths[-1] < max(widths)  # and narrowed again


@pytest.mark.parametrize("budget_mb", [64.0, 0.5])
@pytest.mark.parametrize("kind", ["normal", "levels"])
def test_forward_selection_on_hundreds_of_points_equals_brute_force_greedy(
    kind: str, budget_mb: float
) -> None:
    """Past the pool sizes, end to end: si and smi_linear rankings equal a brute-force
    greedy loop (helpers.rank), whatever the search's paths did along the way."""
    from helpers import rank as H

    from layerscope.server.metrics import compute_indices

    m, d = 400, 7
    x = _data(kind, m, d, seed=11)
    rng = np.random.default_rng(12)
    labels = ((x[:, 2] > np.median(x[:, 2])) ^ (rng.random(m) < 0.2)).astype(np.int64)
    targets = (x[:, 4] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=m)).astype(np.float64)
    si = compute_indices(x, labels=labels, indices=["feature_ranking"],
                         memory_budget_mb=budget_mb).feature_ranking
    smi = compute_indices(x, targets=targets, indices=["feature_ranking"],
                          memory_budget_mb=budget_mb).feature_ranking
    assert si is not None and smi is not None
    for got, score in ((si, lambda s: H.si(s, labels)), (smi, lambda s: H.smi_linear(s, targets))):
        want = H.brute_forward(x, score, list(range(d)), None, None)
        assert got.order == want["order"]
        np.testing.assert_allclose(got.scores, want["scores"], rtol=1e-12, atol=1e-15)
