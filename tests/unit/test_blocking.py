"""Blocked computation gives the same results as one block.

Block sizes are an implementation detail set by ``block_rows`` (knn) or by
``memory_budget_mb`` (everything): the numbers must not depend on them. A large budget
(1024 MiB) holds every working array of these small sets in one block; the small budgets
force row blocks of one or a few points, column chunks of one feature, and the blocked
(recomputed) subset distances of the feature ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from layerscope.server.metrics import compute_indices, knn

SMALL_BUDGETS = (0.01, 0.1, 1.0)
LARGE_BUDGET = 1024.0


def assert_same_values(a: Any, b: Any, where: str = "") -> None:
    """Recursively assert equal dicts / arrays / floats / lists (exact, NaN-aware)."""
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_values(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    elif isinstance(a, (list, tuple)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=where)
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def knn_data() -> np.ndarray:
    rng = np.random.default_rng(100)
    x = np.concatenate(
        [
            rng.normal(size=(150, 5)),
            np.repeat(rng.normal(size=(2, 5)), 18, axis=0),  # duplicate groups: fallback rows
            rng.integers(0, 2, size=(40, 5)).astype(np.float64),  # ties
        ]
    )
    return rng.permutation(x)


@pytest.mark.parametrize("search", ["selfjoin", "faiss", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_block_rows_do_not_change_the_neighbours(search: str, dtype: type) -> None:
    x = knn_data().astype(dtype)
    m = x.shape[0]
    results = {b: knn(x, 6, block_rows=b, candidate_search=search) for b in (1, 7, 64, m)}
    for b in (1, 7, 64):
        np.testing.assert_array_equal(results[b].indices, results[m].indices, err_msg=f"{b}")
    assert results[m].fallback_rows > 0  # the blocks include fallback rows


@pytest.mark.parametrize("search", ["faiss", "blas"])
def test_knn_block_rows_do_not_change_query_neighbours_or_distances(search: str) -> None:
    x = knn_data()
    q = np.random.default_rng(101).integers(0, 2, size=(50, 5)).astype(np.float64)
    one = knn(x, 4, queries=q, block_rows=50, return_distance=True, candidate_search=search)
    for b in (1, 7, 64):
        got = knn(x, 4, queries=q, block_rows=b, return_distance=True, candidate_search=search)
        np.testing.assert_array_equal(got.indices, one.indices)
        np.testing.assert_array_equal(got.sqdist, one.sqdist)


@pytest.mark.parametrize("budget", [1.0, 4.0])
def test_knn_memory_budget_does_not_change_the_neighbours(budget: float) -> None:
    x = knn_data()
    big = knn(x, 6, memory_budget_mb=LARGE_BUDGET, candidate_search="blas")
    small = knn(x, 6, memory_budget_mb=budget, candidate_search="blas")
    np.testing.assert_array_equal(small.indices, big.indices)


# --- compute_indices ------------------------------------------------------------------------


def classification_data() -> dict[str, Any]:
    rng = np.random.default_rng(200)
    m, d = 260, 6
    labels = rng.choice(np.array([-3, 0, 7, 42]), size=m)
    x = rng.normal(size=(m, d)) + labels[:, None] * np.array([0.05, 0.02, 0, 0, 0.01, 0])
    x[:30] = np.round(x[:30])  # some ties
    x[30:50] = x[50]  # a duplicate group larger than k + 8
    x[:, 3] = np.round(x[:, 3] * 2)  # a feature with many equal values
    xt = rng.normal(size=(40, d))
    lt = rng.choice(np.array([-3, 0, 7, 42]), size=40)
    return {"features": x, "labels": labels, "test_features": xt, "test_labels": lt}


CLASSIFICATION_NAMES = [
    "si",
    "high_order_si",
    "soft_order_si",
    "anti_si",
    "center_si",
    "margin_order",
    "single_feature_si",
    "feature_ranking",
]


@pytest.fixture(scope="module")
def classification_large() -> Any:
    return compute_indices(
        **classification_data(), indices=CLASSIFICATION_NAMES, orders=[1, 2, 5, 9],
        margin_cap=20, memory_budget_mb=LARGE_BUDGET,
    )


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
def test_classification_per_sample_values_do_not_depend_on_the_budget(
    budget: float, classification_large: Any
) -> None:
    small = compute_indices(
        **classification_data(), indices=CLASSIFICATION_NAMES, orders=[1, 2, 5, 9],
        margin_cap=20, memory_budget_mb=budget,
    )
    big = classification_large
    assert set(big.train.per_sample) >= {"si", "center_si", "margin_order", "high_order_si"}
    assert_same_values(small.train.per_sample, big.train.per_sample, "train.per_sample")
    assert_same_values(small.train.dataset, big.train.dataset, "train.dataset")
    assert_same_values(small.train.per_class, big.train.per_class, "train.per_class")
    assert_same_values(small.cross.per_sample, big.cross.per_sample, "cross.per_sample")


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
def test_single_feature_si_does_not_depend_on_the_budget(
    budget: float, classification_large: Any
) -> None:
    small = compute_indices(
        **classification_data(), indices=["single_feature_si"], memory_budget_mb=budget
    )
    np.testing.assert_array_equal(
        small.train.dataset["single_feature_si"],
        classification_large.train.dataset["single_feature_si"],
    )


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
def test_classification_feature_ranking_does_not_depend_on_the_budget(
    budget: float, classification_large: Any
) -> None:
    small = compute_indices(
        **classification_data(), indices=["feature_ranking"], memory_budget_mb=budget
    )
    assert small.feature_ranking is not None
    assert small.feature_ranking.to_dict() == classification_large.feature_ranking.to_dict()
    assert len(small.feature_ranking.order) == 6


def regression_data() -> dict[str, Any]:
    rng = np.random.default_rng(300)
    m, d = 220, 5
    x = rng.normal(size=(m, d))
    y = np.stack([np.sin(x[:, 0]) + 0.1 * rng.normal(size=m), x[:, 1] * x[:, 2]], axis=1)
    x[:20] = x[20]  # duplicate inputs with different targets
    y[40:60] = y[60]  # equal targets: ties in target space and zero Dmin
    xt = rng.normal(size=(30, d))
    yt = rng.normal(size=(30, 2))
    return {"features": x, "targets": y, "test_features": xt, "test_targets": yt}


SMI_FAMILY = [
    "smi_linear",
    "smi_exp",
    "high_order_smi_linear",
    "high_order_smi_exp",
    "soft_order_smi_linear",
    "soft_order_smi_exp",
    "anti_smi_linear",
    "anti_smi_exp",
]


@pytest.fixture(scope="module")
def regression_large() -> Any:
    return compute_indices(
        **regression_data(), indices=SMI_FAMILY, orders=[1, 3, 7], gamma=0.5,
        memory_budget_mb=LARGE_BUDGET,
    )


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
def test_smi_family_values_do_not_depend_on_the_budget(
    budget: float, regression_large: Any
) -> None:
    small = compute_indices(
        **regression_data(), indices=SMI_FAMILY, orders=[1, 3, 7], gamma=0.5,
        memory_budget_mb=budget,
    )
    big = regression_large
    assert set(big.train.per_sample) == set(SMI_FAMILY)
    assert set(big.train.per_sample["high_order_smi_exp"]) == {1, 3, 7}
    assert_same_values(small.train.per_sample, big.train.per_sample, "train.per_sample")
    assert_same_values(small.train.dataset, big.train.dataset, "train.dataset")
    assert_same_values(small.cross.per_sample, big.cross.per_sample, "cross.per_sample")
    assert_same_values(small.cross.dataset, big.cross.dataset, "cross.dataset")


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
@pytest.mark.parametrize("name", ["single_feature_smi_linear", "single_feature_smi_exp"])
def test_single_feature_smi_does_not_depend_on_the_budget(budget: float, name: str) -> None:
    # Each entry is the mean over the points of a per-point value that does not depend on
    # the budget, so the entry must not either (bit for bit, as for every other index).
    small = compute_indices(**regression_data(), indices=[name], memory_budget_mb=budget)
    big = compute_indices(**regression_data(), indices=[name], memory_budget_mb=LARGE_BUDGET)
    np.testing.assert_array_equal(small.train.dataset[name], big.train.dataset[name])


@pytest.mark.parametrize("budget", SMALL_BUDGETS)
@pytest.mark.parametrize("criterion", ["smi_linear", "smi_exp"])
def test_regression_feature_ranking_path_does_not_depend_on_the_budget(
    budget: float, criterion: str
) -> None:
    kw: dict[str, Any] = dict(indices=["feature_ranking"], criterion=criterion, gamma=2.0)
    small = compute_indices(**regression_data(), memory_budget_mb=budget, **kw)
    big = compute_indices(**regression_data(), memory_budget_mb=LARGE_BUDGET, **kw)
    assert small.feature_ranking.criterion == criterion
    assert small.feature_ranking.order == big.feature_ranking.order
    assert small.feature_ranking.best_subset == big.feature_ranking.best_subset
    # scores to the last bits are pinned by the two single-feature tests around this one
    np.testing.assert_allclose(
        small.feature_ranking.scores, big.feature_ranking.scores, rtol=1e-13, atol=0
    )


def mirrored_regression() -> tuple[np.ndarray, np.ndarray]:
    """Two features whose SmI values are the same numbers, point for point rotated.

    Targets ``[t, -t]``: swapping the halves preserves every target distance. Feature 1 is
    feature 0 with its halves swapped, so the per-point ``smi_linear`` of feature 1 at point
    i equals that of feature 0 at point i +- n: the two features' indices are exactly equal.
    """
    rng = np.random.default_rng(5)
    n = 40
    t = rng.normal(size=n) + 3.0
    a, b = rng.normal(size=n), rng.normal(size=n)
    x = np.stack([np.concatenate([a, b]), np.concatenate([b, a])], axis=1)
    return x, np.concatenate([t, -t])


def test_mirrored_features_really_have_equal_smi() -> None:
    x, y = mirrored_regression()
    p0 = compute_indices(x[:, :1], targets=y, indices=["smi_linear"]).train.per_sample
    p1 = compute_indices(x[:, 1:], targets=y, indices=["smi_linear"]).train.per_sample
    np.testing.assert_array_equal(p1["smi_linear"], np.roll(p0["smi_linear"], 40))


@pytest.mark.parametrize("budget", [0.01, LARGE_BUDGET])
def test_tied_smi_features_are_ranked_lowest_index_first_at_any_budget(budget: float) -> None:
    # METRICS.md section 1: the feature with the highest index is added, ties to the lowest
    # feature index. The two features tie exactly, so feature 0 must come first and the
    # single-feature entries must be equal, whatever the block sizes.
    x, y = mirrored_regression()
    res = compute_indices(
        x, targets=y, indices=["single_feature_smi_linear", "feature_ranking"],
        max_features=1, memory_budget_mb=budget,
    )
    assert res.feature_ranking.order == [0]
    single = res.train.dataset["single_feature_smi_linear"]
    assert single[0] == single[1]
