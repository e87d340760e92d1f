"""Properties every result must have, checked on generated data (hypothesis).

Invariances (METRICS.md sections 0-2): the indices depend on the points only through the
neighbour order, which the float64 squared distances and the index tie-break decide.

- Permuting the points permutes the per-sample values along. The tie-break by index is
  legitimately changed by a permutation (which of two equidistant neighbours has the lower
  index), so this uses continuous data with no exact distance ties.
- Scaling the features by a power of two scales every float64 operation exactly (no
  rounding changes), so the results are bit-identical even with ties and duplicates.
  A general positive factor rounds differently, so that one uses tie-free data whose
  neighbour distances are clearly apart.
- Translating integer-valued features by an integer keeps every coordinate difference
  exact (all values far below 2^53), so every distance is bit-identical and so is every
  neighbour, ties included.

Relations between the indices: ``si == high_order_si[1] == soft_order_si[1]``,
``high_order_si[r] <= soft_order_si[r]``, ``anti_si[r] + high_order_si[r] <= 1``, per-sample
SI values in [0, 1]; ``high_order_smi_*[1] == smi_*``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from layerscope.server.metrics import compute_indices

PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)

SI_NAMES = ["si", "high_order_si", "soft_order_si", "anti_si", "center_si", "margin_order"]
SMI_NAMES = [
    "smi_linear",
    "smi_exp",
    "high_order_smi_linear",
    "high_order_smi_exp",
    "soft_order_smi_linear",
    "soft_order_smi_exp",
    "anti_smi_linear",
    "anti_smi_exp",
]
SMI_LINEAR = [n for n in SMI_NAMES if n.endswith("linear")]


# --- helpers --------------------------------------------------------------------------------


def sqdist(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return ((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2)


def sorted_other_distances(x: np.ndarray) -> np.ndarray:
    """Each row's distances to the other points, ascending."""
    d = sqdist(x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :-1]


def has_distance_ties(x: np.ndarray) -> bool:
    s = sorted_other_distances(x)
    return bool((s[:, 1:] == s[:, :-1]).any())


def clearly_apart(x: np.ndarray, rel: float = 1e-9) -> bool:
    """True when consecutive neighbour distances of every row differ by more than rel."""
    s = sorted_other_distances(x)
    return bool((s[:, 0] > 0).all() and (np.diff(s, axis=1) > rel * s[:, 1:]).all())


def class_means_clearly_apart(x: np.ndarray, labels: np.ndarray, rel: float = 1e-9) -> bool:
    """True when every point's nearest class mean is clearly nearer than the next one."""
    classes = np.unique(labels)
    if len(classes) < 2:
        return True
    means = np.stack([x[labels == c].mean(axis=0) for c in classes])
    d = np.sort(((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2), axis=1)
    return bool((d[:, 1] - d[:, 0] > rel * d[:, 1]).all())


def flatten(tree: dict[Any, Any], prefix: str = "") -> dict[str, float]:
    """{"name/order/label": value} of a nested dict of floats."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path))
        else:
            out[path] = float(value)
    return out


def assert_per_sample_equal(a: dict[str, Any], b: dict[str, Any], perm: Any = None) -> None:
    """a[name] == b[name][perm] exactly, for plain and ordered ({order: array}) values."""
    assert a.keys() == b.keys()
    for name in a:
        va, vb = a[name], b[name]
        pairs = va.items() if isinstance(va, dict) else [(None, va)]
        for r, arr in pairs:
            other = vb if r is None else vb[r]
            if perm is not None:
                other = other[perm]
            np.testing.assert_array_equal(arr, other, err_msg=f"{name}[{r}]")


def assert_per_sample_close(a: dict[str, Any], b: dict[str, Any], perm: Any = None) -> None:
    for name in a:
        va, vb = a[name], b[name]
        pairs = va.items() if isinstance(va, dict) else [(None, va)]
        for r, arr in pairs:
            other = vb if r is None else vb[r]
            if perm is not None:
                other = other[perm]
            np.testing.assert_allclose(arr, other, rtol=1e-12, atol=1e-15, err_msg=f"{name}")


# --- strategies -------------------------------------------------------------------------------


@st.composite
def integer_classification(draw: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Small-integer features (many ties and duplicates) and labels with up to 4 classes."""
    m = draw(st.integers(3, 30))
    d = draw(st.integers(1, 4))
    x = draw(arrays(np.int64, (m, d), elements=st.integers(-3, 3))).astype(np.float64)
    labels = draw(arrays(np.int64, (m,), elements=st.sampled_from([-1, 0, 2, 5])))
    orders = draw(st.lists(st.integers(1, m - 1), min_size=1, max_size=3))
    return x, labels, orders


@st.composite
def integer_classification_power_of_two_classes(
    draw: Any,
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """As above, each class of 1, 2, 4 or 8 points, so class means of integers are exact."""
    sizes = draw(st.lists(st.sampled_from([1, 2, 4, 8]), min_size=1, max_size=3))
    assume(sum(sizes) >= 3)
    labels = np.concatenate([np.full(s, c, dtype=np.int64) for c, s in enumerate(sizes)])
    labels = np.array(draw(st.permutations(labels.tolist())), dtype=np.int64)
    m = len(labels)
    d = draw(st.integers(1, 3))
    x = draw(arrays(np.int64, (m, d), elements=st.integers(-4, 4))).astype(np.float64)
    orders = draw(st.lists(st.integers(1, m - 1), min_size=1, max_size=3))
    return x, labels, orders


@st.composite
def integer_regression(draw: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    m = draw(st.integers(3, 25))
    d = draw(st.integers(1, 3))
    t = draw(st.integers(1, 2))
    x = draw(arrays(np.int64, (m, d), elements=st.integers(-3, 3))).astype(np.float64)
    y = draw(arrays(np.int64, (m, t), elements=st.integers(-3, 3))).astype(np.float64)
    orders = draw(st.lists(st.integers(1, m - 1), min_size=1, max_size=3))
    return x, y, orders


@st.composite
def continuous_classification(draw: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Gaussian features (tie-free almost surely: checked by the tests that need it)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = draw(st.integers(3, 35))
    d = draw(st.integers(1, 4))
    labels = rng.integers(0, draw(st.integers(1, 4)), size=m) * 3 - 2
    x = rng.normal(size=(m, d)) + labels[:, None] * 0.3
    orders = draw(st.lists(st.integers(1, m - 1), min_size=1, max_size=3))
    return x, labels, orders


@st.composite
def continuous_regression(draw: Any) -> tuple[np.ndarray, np.ndarray, list[int]]:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    m = draw(st.integers(3, 30))
    d = draw(st.integers(1, 4))
    t = draw(st.integers(1, 3))
    x = rng.normal(size=(m, d))
    y = np.tanh(x[:, :1]) + 0.3 * rng.normal(size=(m, t))
    orders = draw(st.lists(st.integers(1, m - 1), min_size=1, max_size=3))
    return x, y, orders


# These properties are about the indices, not the candidate search (test_knn.py checks that
# faiss and blas give the reference neighbours); on these tiny sets the blas search avoids
# faiss's per-call thread start-up, which dominates the run time on a busy 2-core machine.
SEARCH = "blas"


def classify(x: np.ndarray, labels: np.ndarray, orders: list[int], names: Any = None) -> Any:
    return compute_indices(
        x, labels, indices=names or SI_NAMES, orders=orders, candidate_search=SEARCH
    )


def regress(x: np.ndarray, y: np.ndarray, orders: list[int], gamma: float = 1.0) -> Any:
    return compute_indices(
        x, targets=y, indices=SMI_NAMES, orders=orders, gamma=gamma, candidate_search=SEARCH
    )


# --- permutation ----------------------------------------------------------------------------


@PROPERTY
@given(data=continuous_classification(), perm_seed=st.integers(0, 2**32 - 1))
def test_permuting_points_permutes_per_sample_si_values(data: Any, perm_seed: int) -> None:
    x, labels, orders = data
    # the index tie-break depends on the numbering: exact ties would legitimately change
    assume(not has_distance_ties(x))
    assume(class_means_clearly_apart(x, labels))  # class means are re-summed in a new order
    perm = np.random.default_rng(perm_seed).permutation(len(x))
    a = classify(x, labels, orders)
    b = classify(x[perm], labels[perm], orders)
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample, perm)
    # means over the points: soft_order_si values are multiples of 1/r, whose mean is
    # rounded differently when summed in another order
    assert flatten(b.train.dataset) == pytest.approx(flatten(a.train.dataset), rel=1e-12)
    assert flatten(b.train.per_class) == pytest.approx(flatten(a.train.per_class), rel=1e-12)


@PROPERTY
@given(data=continuous_regression(), perm_seed=st.integers(0, 2**32 - 1))
def test_permuting_points_permutes_per_sample_smi_values(data: Any, perm_seed: int) -> None:
    x, y, orders = data
    assume(not has_distance_ties(x))  # input-space ties
    assume(not has_distance_ties(y))  # target-space ties
    perm = np.random.default_rng(perm_seed).permutation(len(x))
    a = regress(x, y, orders)
    b = regress(x[perm], y[perm], orders)
    # linear variants use only max, min and single distances: exact in any order
    lin_a = {n: a.train.per_sample[n] for n in SMI_LINEAR}
    lin_b = {n: b.train.per_sample[n] for n in SMI_LINEAR}
    assert_per_sample_equal(lin_b, lin_a, perm)
    # exp variants divide by Dmean, a sum whose rounding depends on the summation order
    assert_per_sample_close(b.train.per_sample, a.train.per_sample, perm)


# --- scaling --------------------------------------------------------------------------------


@PROPERTY
@given(data=integer_classification_power_of_two_classes(), power=st.integers(-20, 20))
def test_power_of_two_feature_scaling_leaves_si_unchanged(data: Any, power: int) -> None:
    x, labels, orders = data
    a = classify(x, labels, orders)
    b = classify(x * 2.0**power, labels, orders)
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)
    assert b.train.dataset == a.train.dataset


@PROPERTY
@given(data=integer_regression(), power=st.integers(-20, 20), gamma=st.sampled_from([0.5, 2.0]))
def test_power_of_two_scaling_of_features_or_targets_leaves_smi_unchanged(
    data: Any, power: int, gamma: float
) -> None:
    x, y, orders = data
    a = regress(x, y, orders, gamma)
    b = regress(x * 2.0**power, y, orders, gamma)
    c = regress(x, y * 2.0**power, orders, gamma)  # every SmI term is a ratio of distances
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)
    assert_per_sample_equal(c.train.per_sample, a.train.per_sample)


@PROPERTY
@given(data=continuous_classification(), factor=st.floats(0.01, 100.0))
def test_positive_feature_scaling_leaves_si_unchanged_on_tie_free_data(
    data: Any, factor: float
) -> None:
    x, labels, orders = data
    # scaling by a general factor rounds every distance: near-ties could swap, so the
    # neighbour distances of the data must be clearly apart
    assume(clearly_apart(x))
    assume(class_means_clearly_apart(x, labels))
    a = classify(x, labels, orders)
    b = classify(x * factor, labels, orders)
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)


@PROPERTY
@given(data=continuous_regression(), factor=st.floats(0.01, 100.0))
def test_positive_feature_scaling_leaves_smi_unchanged_on_tie_free_data(
    data: Any, factor: float
) -> None:
    x, y, orders = data
    assume(clearly_apart(x))
    a = regress(x, y, orders)
    b = regress(x * factor, y, orders)  # targets untouched: same neighbours, same values
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)


# --- translation ----------------------------------------------------------------------------


@PROPERTY
@given(
    data=integer_classification_power_of_two_classes(),
    shift=arrays(np.int64, 3, elements=st.integers(-(2**20), 2**20)),
)
def test_integer_translation_leaves_si_unchanged(data: Any, shift: np.ndarray) -> None:
    x, labels, orders = data
    # integers far below 2^53: x + shift and every difference of such values are exact, so
    # every distance is bit-identical (ties too); class sizes are powers of two so the class
    # means, sums of integers divided by the size, are exact and move by the shift exactly
    t = shift[: x.shape[1]].astype(np.float64)
    a = classify(x, labels, orders)
    b = classify(x + t, labels, orders)
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)
    assert b.train.dataset == a.train.dataset


@PROPERTY
@given(
    data=integer_regression(),
    shift=arrays(np.int64, 3, elements=st.integers(-(2**20), 2**20)),
)
def test_integer_translation_of_features_or_targets_leaves_smi_unchanged(
    data: Any, shift: np.ndarray
) -> None:
    x, y, orders = data
    a = regress(x, y, orders)
    b = regress(x + shift[: x.shape[1]], y, orders)
    c = regress(x, y + shift[: y.shape[1]], orders)  # target differences are exact too
    assert_per_sample_equal(b.train.per_sample, a.train.per_sample)
    assert_per_sample_equal(c.train.per_sample, a.train.per_sample)


# --- relations between the SI indices -------------------------------------------------------


@PROPERTY
@given(data=integer_classification())
def test_si_equals_first_order_high_and_soft_si(data: Any) -> None:
    x, labels, orders = data
    res = classify(x, labels, sorted({1, *orders}))
    ps, ds = res.train.per_sample, res.train.dataset
    np.testing.assert_array_equal(ps["si"], ps["high_order_si"][1])
    np.testing.assert_array_equal(ps["si"], ps["soft_order_si"][1])
    assert ds["si"] == ds["high_order_si"][1] == ds["soft_order_si"][1]


@PROPERTY
@given(data=integer_classification())
def test_high_order_si_never_exceeds_soft_order_si(data: Any) -> None:
    x, labels, orders = data
    res = classify(x, labels, orders)
    ps, ds = res.train.per_sample, res.train.dataset
    for r in orders:
        assert (ps["high_order_si"][r] <= ps["soft_order_si"][r]).all()
        assert ds["high_order_si"][r] <= ds["soft_order_si"][r]


@PROPERTY
@given(data=integer_classification())
def test_anti_si_and_high_order_si_exclude_each_other(data: Any) -> None:
    x, labels, orders = data
    res = classify(x, labels, orders)
    ps, ds = res.train.per_sample, res.train.dataset
    for r in orders:
        assert (ps["anti_si"][r] + ps["high_order_si"][r] <= 1).all()
        assert ds["anti_si"][r] + ds["high_order_si"][r] <= 1


@PROPERTY
@given(data=integer_classification())
def test_per_sample_si_values_lie_in_zero_one(data: Any) -> None:
    x, labels, orders = data
    res = classify(x, labels, orders)
    ps = res.train.per_sample
    for name in ("si", "center_si"):
        assert ((ps[name] >= 0) & (ps[name] <= 1)).all(), name
    for name in ("high_order_si", "soft_order_si", "anti_si"):
        for r in orders:
            assert ((ps[name][r] >= 0) & (ps[name][r] <= 1)).all(), (name, r)
    for name in ("si", "high_order_si", "anti_si", "center_si"):
        values = ps[name] if isinstance(ps[name], np.ndarray) else np.concatenate(
            list(ps[name].values())
        )
        assert np.isin(values, [0.0, 1.0]).all(), name  # 0/1 indicators


@PROPERTY
@given(data=integer_classification())
def test_margin_order_sign_agrees_with_si_and_is_bounded_by_the_cap(data: Any) -> None:
    x, labels, orders = data
    m = len(x)
    res = compute_indices(
        x, labels, indices=["si", "margin_order"], margin_cap=5, candidate_search=SEARCH
    )
    margin, si = res.train.per_sample["margin_order"], res.train.per_sample["si"]
    cap = min(5, m - 1)
    assert (np.abs(margin) >= 1).all()
    assert (np.abs(margin) <= cap).all()
    np.testing.assert_array_equal(margin > 0, si == 1)


# --- relations between the SmI indices ------------------------------------------------------


@PROPERTY
@given(data=integer_regression(), gamma=st.sampled_from([0.25, 1.0, 3.0]))
def test_first_order_high_and_soft_smi_equal_smi(data: Any, gamma: float) -> None:
    x, y, orders = data
    res = regress(x, y, sorted({1, *orders}), gamma)
    ps, ds = res.train.per_sample, res.train.dataset
    for variant in ("linear", "exp"):
        base = ps[f"smi_{variant}"]
        np.testing.assert_array_equal(ps[f"high_order_smi_{variant}"][1], base)
        np.testing.assert_array_equal(ps[f"soft_order_smi_{variant}"][1], base)
        assert ds[f"high_order_smi_{variant}"][1] == ds[f"smi_{variant}"]


@PROPERTY
@given(data=continuous_regression(), gamma=st.sampled_from([0.25, 1.0, 3.0]))
def test_first_order_anti_smi_complements_smi(data: Any, gamma: float) -> None:
    x, y, orders = data
    res = regress(x, y, sorted({1, *orders}), gamma)
    ps = res.train.per_sample
    for variant in ("linear", "exp"):
        np.testing.assert_allclose(
            ps[f"anti_smi_{variant}"][1] + ps[f"smi_{variant}"], 1.0, rtol=0, atol=1e-12
        )


@PROPERTY
@given(data=integer_regression())
def test_high_order_smi_never_exceeds_soft_order_smi(data: Any) -> None:
    x, y, orders = data
    res = regress(x, y, orders)
    ps = res.train.per_sample
    for variant in ("linear", "exp"):
        for r in orders:
            high, soft = ps[f"high_order_smi_{variant}"][r], ps[f"soft_order_smi_{variant}"][r]
            assert (high <= soft + 1e-12).all()  # a minimum never exceeds the mean


@PROPERTY
@given(data=integer_regression())
def test_first_order_smi_values_lie_in_zero_one_and_are_finite(data: Any) -> None:
    x, y, orders = data
    res = regress(x, y, orders)
    ps = res.train.per_sample
    for name in ("smi_linear", "smi_exp"):
        assert np.isfinite(ps[name]).all()
        assert ((ps[name] >= 0) & (ps[name] <= 1)).all(), name
    for name in SMI_NAMES[2:]:
        for r in orders:
            assert np.isfinite(ps[name][r]).all(), (name, r)  # zero denominators handled
