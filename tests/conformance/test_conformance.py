"""Conformance of the index engine with METRICS.md sections 1 and 2.

Every expected value comes from ``tests/reference.py``, a naive float64 loop over the
formulas written from METRICS.md alone, or from a hand calculation. Counts-based
(classification) indices must match exactly; SmI values to a relative 1e-9.
"""

from __future__ import annotations

import inspect
from functools import cache

import numpy as np
import pytest
from helpers import reference as ref
from sklearn.datasets import load_diabetes, load_digits

from layerscope.server.metrics import (
    CLASSIFICATION_INDICES,
    REGRESSION_INDICES,
    compute_indices,
    knn,
)

ORDERS = (1, 3, 7)
SMALL_MARGIN_CAP = 3
SEPARATION_FAMILIES = ("si", "high_order_si", "soft_order_si", "anti_si", "center_si")
ORDERED_SEPARATION = ("high_order_si", "soft_order_si", "anti_si")
SMOOTHNESS_FAMILIES = (
    "smi_linear",
    "smi_exp",
    "high_order_smi_linear",
    "high_order_smi_exp",
    "soft_order_smi_linear",
    "soft_order_smi_exp",
    "anti_smi_linear",
    "anti_smi_exp",
)
ALL_BUT_RANKING_CLS = tuple(i for i in CLASSIFICATION_INDICES if i != "feature_ranking")
ALL_BUT_RANKING_REG = tuple(i for i in REGRESSION_INDICES if i != "feature_ranking")
SMI_RTOL, SMI_ATOL = 1e-9, 1e-12


# ---------------------------------------------------------------------------------------
# Data sets: each builder returns (train x, train labels/targets, test x, test labels/targets)
# ---------------------------------------------------------------------------------------


def _gaussian_classes(rng, m, d, labels_pool, spread=1.0):
    labels = rng.choice(labels_pool, size=m)
    centres = {c: rng.normal(scale=spread, size=d) for c in labels_pool}
    x = np.stack([centres[c] for c in labels]) + rng.normal(size=(m, d))
    return x, labels.astype(np.int64)


def cls_gaussian_arbitrary_labels():
    rng = np.random.default_rng(1)
    x, labels = _gaussian_classes(rng, 280, 5, [-3, 7, 100])
    return x[:200], labels[:200], x[200:], labels[200:]


def cls_float32_features():
    rng = np.random.default_rng(2)
    x, labels = _gaussian_classes(rng, 260, 6, [0, 5, 9, 11])
    x = x.astype(np.float32)
    return x[:200], labels[:200], x[200:], labels[200:]


def cls_duplicate_rows():
    rng = np.random.default_rng(3)
    x, labels = _gaussian_classes(rng, 150, 4, [-1, 2, 40])
    copies = rng.choice(150, size=60, replace=False)
    # Half the copies keep their label, half get another one: exact zero distances across
    # classes, decided by index alone.
    copy_labels = labels[copies].copy()
    copy_labels[30:] = np.where(copy_labels[30:] == 2, -1, 2)
    x_all = np.concatenate([x, x[copies]])
    labels_all = np.concatenate([labels, copy_labels])
    perm = rng.permutation(len(x_all))
    x_all, labels_all = x_all[perm], labels_all[perm]
    test = x[rng.choice(150, size=40)]  # test points that coincide with train points
    test_labels = rng.choice([-1, 2, 40], size=40)
    return x_all, labels_all, test, test_labels


def cls_integer_features_with_ties():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 3, size=(260, 3)).astype(np.float64)
    labels = (x[:, 0] + rng.integers(0, 2, size=260)).astype(np.int64) * 10 - 5
    return x[:200], labels[:200], x[200:], labels[200:]


def cls_large_offset_float32():
    # Candidate search in float32 matrix products cannot resolve these distances: the
    # final order must still be the float64 one.
    rng = np.random.default_rng(5)
    x, labels = _gaussian_classes(rng, 240, 8, [1, 2, 3], spread=0.5)
    x = (1000.0 + 0.01 * x).astype(np.float32)
    return x[:180], labels[:180], x[180:], labels[180:]


def cls_single_point_class():
    rng = np.random.default_rng(6)
    x, labels = _gaussian_classes(rng, 160, 4, [0, 3])
    labels[17] = 42
    test_x, test_labels = _gaussian_classes(rng, 40, 4, [0, 3])
    return x, labels, test_x, test_labels


def cls_digits():
    x, labels = load_digits(return_X_y=True)  # integer pixels 0..16: many exact ties
    return x[:1400], labels[:1400], x[1400:], labels[1400:]


CLS_CASES = {
    f.__name__.removeprefix("cls_"): f
    for f in (
        cls_gaussian_arbitrary_labels,
        cls_float32_features,
        cls_duplicate_rows,
        cls_integer_features_with_ties,
        cls_large_offset_float32,
        cls_single_point_class,
        cls_digits,
    )
}


def reg_gaussian_1d_target():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(240, 4))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] + 0.1 * rng.normal(size=240)
    return x[:180], y[:180], x[180:], y[180:]


def reg_gaussian_2d_targets():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(240, 5))
    y = np.stack([x[:, 0] - x[:, 2], np.cos(x[:, 1])], axis=1) + 0.1 * rng.normal(size=(240, 2))
    return x[:180], y[:180], x[180:], y[180:]


def reg_integer_targets_with_ties():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(240, 3))
    y = np.clip(np.round(x[:, 0]), -1, 1) + rng.integers(0, 2, size=240)
    return x[:180], y[:180], x[180:], y[180:]


def reg_integer_features_and_2d_targets():
    rng = np.random.default_rng(14)
    x = rng.integers(0, 3, size=(240, 3)).astype(np.float64)
    y = np.stack([x[:, 0] + rng.integers(0, 2, size=240), rng.integers(0, 2, size=240)], axis=1)
    return x[:180], y[:180].astype(np.float64), x[180:], y[180:].astype(np.float64)


def reg_duplicate_rows():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(150, 4))
    y = x[:, 0] ** 2 + 0.1 * rng.normal(size=150)
    copies = rng.choice(150, size=50, replace=False)
    x_all = np.concatenate([x, x[copies]])
    y_all = np.concatenate([y, y[copies] + rng.choice([0.0, 1.0], size=50)])
    perm = rng.permutation(len(x_all))
    test = rng.choice(150, size=40)
    return x_all[perm], y_all[perm], x[test], y[test]


def reg_constant_target():
    rng = np.random.default_rng(16)
    x = rng.normal(size=(160, 3))
    y = np.full(160, 2.5)
    return x[:120], y[:120], x[120:], y[120:]


def reg_float32_features():
    rng = np.random.default_rng(17)
    x = rng.normal(size=(220, 4)).astype(np.float32)
    y = x[:, 0].astype(np.float64) * 2 + 0.2 * rng.normal(size=220)
    return x[:170], y[:170], x[170:], y[170:]


def reg_diabetes():
    x, y = load_diabetes(return_X_y=True)  # integer targets: exact ties
    return x[:342], y[:342], x[342:], y[342:]


REG_CASES = {
    f.__name__.removeprefix("reg_"): f
    for f in (
        reg_gaussian_1d_target,
        reg_gaussian_2d_targets,
        reg_integer_targets_with_ties,
        reg_integer_features_and_2d_targets,
        reg_duplicate_rows,
        reg_constant_target,
        reg_float32_features,
        reg_diabetes,
    )
}
GAMMAS = (1.0, 0.3)


# ---------------------------------------------------------------------------------------
# Cached engine and reference results (each is computed once per module run)
# ---------------------------------------------------------------------------------------


@cache
def cls_data(case):
    return CLS_CASES[case]()


@cache
def cls_engine(case, margin_cap=64):
    x, labels, xt, lt = cls_data(case)
    return compute_indices(
        x,
        labels,
        test_features=xt,
        test_labels=lt,
        indices=ALL_BUT_RANKING_CLS,
        orders=ORDERS,
        margin_cap=margin_cap,
    )


@cache
def cls_reference(case):
    x, labels, _, _ = cls_data(case)
    return ref.separation(x, labels, ORDERS)


@cache
def cls_cross_reference(case):
    x, labels, xt, lt = cls_data(case)
    return ref.cross_separation(x, labels, xt, lt, ORDERS)


@cache
def reg_data(case):
    return REG_CASES[case]()


@cache
def reg_engine(case, gamma):
    x, y, xt, yt = reg_data(case)
    return compute_indices(
        x,
        targets=y,
        test_features=xt,
        test_targets=yt,
        indices=ALL_BUT_RANKING_REG,
        orders=ORDERS,
        gamma=gamma,
    )


@cache
def reg_reference(case, gamma):
    x, y, _, _ = reg_data(case)
    return ref.smoothness(x, y, ORDERS, gamma)


@cache
def reg_cross_reference(case, gamma):
    x, y, xt, yt = reg_data(case)
    return ref.cross_smoothness(x, y, xt, yt, gamma)


# ---------------------------------------------------------------------------------------
# Comparison helpers
# ---------------------------------------------------------------------------------------


def _on_labels_of(per_class, expected):
    """Return ``per_class`` restricted to the labels of ``expected``: the key sets
    themselves are checked by the tests on per-class keys."""
    return {c: per_class.get(c) for c in expected}


def assert_counts_equal(got, expected, name):
    """Per-sample arrays equal, dataset values ==, per-class values == on every label."""
    assert np.array_equal(got.per_sample[name], expected["per_sample"][name]), name
    assert got.dataset[name] == expected["dataset"][name], name
    exp_pc = expected["per_class"][name]
    assert _on_labels_of(got.per_class[name], exp_pc) == exp_pc, name


def assert_ordered_counts_equal(got, expected, name):
    assert sorted(got.per_sample[name]) == sorted(expected["per_sample"][name]), name
    for r in expected["per_sample"][name]:
        assert np.array_equal(got.per_sample[name][r], expected["per_sample"][name][r]), (name, r)
        assert got.dataset[name][r] == expected["dataset"][name][r], (name, r)
        exp_pc = expected["per_class"][name][r]
        assert _on_labels_of(got.per_class[name][r], exp_pc) == exp_pc, (name, r)


def assert_smi_close(got, expected, name):
    exp_ps, got_ps = expected["per_sample"][name], got.per_sample[name]
    if isinstance(exp_ps, dict):
        assert sorted(got_ps) == sorted(exp_ps), name
        for r in exp_ps:
            np.testing.assert_allclose(
                got_ps[r], exp_ps[r], rtol=SMI_RTOL, atol=SMI_ATOL, err_msg=f"{name}[{r}]"
            )
            np.testing.assert_allclose(
                got.dataset[name][r], expected["dataset"][name][r], rtol=SMI_RTOL, atol=SMI_ATOL
            )
    else:
        np.testing.assert_allclose(got_ps, exp_ps, rtol=SMI_RTOL, atol=SMI_ATOL, err_msg=name)
        np.testing.assert_allclose(
            got.dataset[name], expected["dataset"][name], rtol=SMI_RTOL, atol=SMI_ATOL
        )


cls_cases = pytest.mark.parametrize("case", list(CLS_CASES))
reg_cases = pytest.mark.parametrize("case", list(REG_CASES))
gammas = pytest.mark.parametrize("gamma", GAMMAS)


# ---------------------------------------------------------------------------------------
# Separation indices, train set
# ---------------------------------------------------------------------------------------


@cls_cases
def test_si_matches_reference(case):
    assert_counts_equal(cls_engine(case).train, cls_reference(case), "si")


@cls_cases
@pytest.mark.parametrize("name", ORDERED_SEPARATION)
def test_ordered_separation_family_matches_reference_at_every_order(case, name):
    assert_ordered_counts_equal(cls_engine(case).train, cls_reference(case), name)


@cls_cases
def test_center_si_matches_reference(case):
    assert_counts_equal(cls_engine(case).train, cls_reference(case), "center_si")


@cls_cases
def test_per_class_results_are_keyed_by_the_original_labels(case):
    _, labels, _, _ = cls_data(case)
    expected = sorted(int(c) for c in np.unique(labels))
    for name in SEPARATION_FAMILIES:
        per_class = cls_engine(case).train.per_class[name]
        if name in ORDERED_SEPARATION:
            assert all(sorted(v) == expected for v in per_class.values()), name
        else:
            assert sorted(per_class) == expected, name


@cls_cases
def test_margin_order_matches_reference_with_default_cap(case):
    got = cls_engine(case).train.per_sample["margin_order"]
    expected = cls_reference(case)["per_sample"]["margin_order"]
    assert np.issubdtype(got.dtype, np.integer)
    assert np.array_equal(got, expected)


@cls_cases
def test_margin_order_matches_reference_with_small_cap(case):
    x, labels, _, _ = cls_data(case)
    res = cls_engine(case, margin_cap=SMALL_MARGIN_CAP)
    expected = ref.separation(x, labels, (), margin_cap=SMALL_MARGIN_CAP)
    got = res.train.per_sample["margin_order"]
    assert np.array_equal(got, expected["per_sample"]["margin_order"])
    assert res.options["margin_order_cap"] == SMALL_MARGIN_CAP


def test_margin_order_cap_above_m_minus_1_is_reduced_to_m_minus_1():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [10.0]])
    labels = np.array([4, 4, 4, 4, 9])
    res = compute_indices(x, labels, indices=["margin_order"], margin_cap=64)
    # Points 0..3 see their three classmates first, then the lone point: +3. The lone point
    # sees four points of another label and nothing after them: the run reaches K = m-1 = 4.
    assert res.options["margin_order_cap"] == 4
    assert res.train.per_sample["margin_order"].tolist() == [3, 3, 3, 3, -4]


@cls_cases
def test_order_one_families_equal_si_and_high_order_never_exceeds_soft_order(case):
    train = cls_engine(case).train
    si = train.per_sample["si"]
    assert np.array_equal(train.per_sample["high_order_si"][1], si)
    assert np.array_equal(train.per_sample["soft_order_si"][1], si)
    for r in ORDERS:
        assert np.all(train.per_sample["high_order_si"][r] <= train.per_sample["soft_order_si"][r])


@cls_cases
def test_single_feature_si_matches_reference(case):
    x, labels, _, _ = cls_data(case)
    if x.shape[1] > 8:
        x = x[:, 18:26]  # digits: eight middle-row pixels keep the reference cheap
    res = compute_indices(x, labels, indices=["single_feature_si"])
    got = res.train.dataset["single_feature_si"]
    expected = ref.single_feature_si(x, labels)
    assert got.shape == (x.shape[1],)
    assert np.array_equal(got, expected)


TIED_ONE_FEATURE_CASES = [
    # (values, labels, per-sample si worked out by hand)
    # zero-distance partners: the lowest other index among equal values wins
    ([1, 0, 1, 2, 1, 0, 2], [0, 1, 1, 1, 0, 0, 1], [0, 0, 0, 1, 1, 0, 1]),
    # point 0 has its left (index 1) and right (index 2) neighbours equally far
    ([1, 0, 2], [0, 1, 0], [0, 0, 1]),
    # point 0 has four neighbours at distance 1; index 1, on its right, comes first
    ([1, 2, 0, 2, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0]),
]


@pytest.mark.parametrize(("values", "labels", "expected"), TIED_ONE_FEATURE_CASES)
def test_single_feature_si_breaks_value_ties_by_index(values, labels, expected):
    x = np.array(values, dtype=np.float64)[:, None]
    res = compute_indices(x, np.array(labels), indices=["single_feature_si", "si"])
    assert res.train.per_sample["si"].tolist() == expected
    assert res.train.dataset["single_feature_si"][0] == np.mean(expected)


def test_distance_ties_go_to_the_lower_index():
    # Point 0 has points 1 and 2 at the same distance: point 1 (another label) comes first.
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0], [3.0, 3.0], [3.0, 3.0]])
    labels = np.array([5, 6, 5, 6, 5])
    res = compute_indices(x, labels, indices=["si"], orders=[1])
    # 0 -> 1 (differs); 1 -> 0 (differs); 2 -> 0 (same); 3 -> 4 (differs); 4 -> 3 (differs)
    assert res.train.per_sample["si"].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_center_si_tie_goes_to_the_lowest_label():
    # Class means 1.0 (label 3) and 4.0 (label 8); both points at 2.5 are equally far.
    x = np.array([[0.0], [2.0], [2.5], [3.0], [5.0], [2.5]])
    labels = np.array([3, 3, 8, 8, 8, 3])
    # means: label 3 -> (0+2+2.5)/3 = 1.5; label 8 -> (2.5+3+5)/3 = 3.5; 2.5 is 1.0 from both
    res = compute_indices(x, labels, indices=["center_si"])
    assert res.train.per_sample["center_si"].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]


# ---------------------------------------------------------------------------------------
# A class with a single point
# ---------------------------------------------------------------------------------------


def test_single_point_class_is_named_in_a_warning():
    res = cls_engine("single_point_class")
    assert any("42" in w for w in res.warnings), res.warnings


def test_single_point_class_counts_zero_in_si():
    res = cls_engine("single_point_class")
    assert res.train.per_class["si"][42] == 0.0
    assert res.train.per_sample["si"][17] == 0.0


def test_no_single_point_warning_when_every_class_has_two_points():
    res = cls_engine("gaussian_arbitrary_labels")
    assert not any("single point" in w for w in res.warnings), res.warnings


# ---------------------------------------------------------------------------------------
# Cross separation indices
# ---------------------------------------------------------------------------------------


@cls_cases
def test_cross_si_matches_reference(case):
    assert_counts_equal(cls_engine(case).cross, cls_cross_reference(case), "si")


@cls_cases
@pytest.mark.parametrize("name", ORDERED_SEPARATION)
def test_cross_ordered_separation_family_matches_reference(case, name):
    assert_ordered_counts_equal(cls_engine(case).cross, cls_cross_reference(case), name)


@cls_cases
def test_cross_center_si_uses_train_class_means(case):
    assert_counts_equal(cls_engine(case).cross, cls_cross_reference(case), "center_si")


@cls_cases
def test_cross_per_class_has_exactly_the_labels_present_in_the_test_set(case):
    # A train class with no test point has no mean over test points: no entry (not NaN).
    _, _, _, test_labels = cls_data(case)
    expected = sorted(int(c) for c in np.unique(test_labels))
    per_class = cls_engine(case).cross.per_class
    assert sorted(per_class["si"]) == expected
    assert sorted(per_class["center_si"]) == expected
    for name in ORDERED_SEPARATION:
        assert all(sorted(v) == expected for v in per_class[name].values()), name


def test_cross_test_label_absent_from_train_is_an_error():
    x, labels, xt, lt = cls_data("gaussian_arbitrary_labels")
    lt = lt.copy()
    lt[0] = 555
    with pytest.raises(ValueError, match="555"):
        compute_indices(x, labels, test_features=xt, test_labels=lt)


# ---------------------------------------------------------------------------------------
# Smoothness indices
# ---------------------------------------------------------------------------------------


@reg_cases
@gammas
@pytest.mark.parametrize("name", SMOOTHNESS_FAMILIES)
def test_smoothness_family_matches_reference(case, gamma, name):
    assert_smi_close(reg_engine(case, gamma).train, reg_reference(case, gamma), name)


@reg_cases
@gammas
@pytest.mark.parametrize("name", ["smi_linear", "smi_exp"])
def test_cross_smoothness_matches_reference(case, gamma, name):
    assert_smi_close(reg_engine(case, gamma).cross, reg_cross_reference(case, gamma), name)


def test_constant_target_gives_one_for_smoothness_and_zero_for_anti():
    train = reg_engine("constant_target", 1.0).train
    for name in SMOOTHNESS_FAMILIES:
        values = train.per_sample[name]
        for v in values.values() if isinstance(values, dict) else [values]:
            assert np.all(v == (0.0 if name.startswith("anti") else 1.0)), name


def test_constant_target_cross_smoothness_is_one():
    cross = reg_engine("constant_target", 1.0).cross
    assert np.all(cross.per_sample["smi_linear"] == 1.0)
    assert np.all(cross.per_sample["smi_exp"] == 1.0)


def test_smi_exp_dmean_counts_the_zero_self_distance():
    x = np.array([[0.0], [1.0], [-0.5]])
    y = np.array([0.0, 1.0, 3.0])
    res = compute_indices(x, targets=y, indices=["smi_exp", "smi_linear"], gamma=2.0)
    # Point 2: nearest input neighbour is point 0, so d* = 3; its target distances are
    # (3, 2, 0): Dmax = 3, Dmin = 2 and Dmean = 5/3 (over all three points, not 5/2).
    np.testing.assert_allclose(
        res.train.per_sample["smi_exp"][2], np.exp(-2.0 * (3.0 - 2.0) / (5.0 / 3.0)), rtol=1e-12
    )
    assert res.train.per_sample["smi_linear"][2] == 0.0


@pytest.mark.parametrize("gamma", [1.0, 0.3])
def test_single_feature_smi_matches_reference(gamma):
    x, y, _, _ = reg_data("diabetes")
    x, y = x[:150, :6], y[:150]
    res = compute_indices(
        x, targets=y, indices=["single_feature_smi_linear", "single_feature_smi_exp"], gamma=gamma
    )
    for variant in ("linear", "exp"):
        got = res.train.dataset[f"single_feature_smi_{variant}"]
        expected = ref.single_feature_smi(x, y, variant, gamma)
        assert got.shape == (x.shape[1],)
        np.testing.assert_allclose(got, expected, rtol=SMI_RTOL, atol=SMI_ATOL)


def test_single_feature_smi_with_tied_feature_values_matches_reference():
    rng = np.random.default_rng(21)
    x = rng.integers(0, 4, size=(120, 3)).astype(np.float64)
    y = np.stack([x[:, 0] + rng.integers(0, 2, size=120), rng.normal(size=120)], axis=1)
    res = compute_indices(x, targets=y, indices=["single_feature_smi_linear"])
    np.testing.assert_allclose(
        res.train.dataset["single_feature_smi_linear"],
        ref.single_feature_smi(x, y, "linear"),
        rtol=SMI_RTOL,
        atol=SMI_ATOL,
    )


# ---------------------------------------------------------------------------------------
# Feature ranking (greedy forward selection)
# ---------------------------------------------------------------------------------------


def _ranking_cls_data(kind):
    rng = np.random.default_rng(31)
    m, d = 110, 7
    labels = rng.choice([-2, 4, 13], size=m)
    if kind == "plateau":
        # Feature 1 alone separates the classes (si = 1) and every later step keeps si = 1:
        # equal scores are not a new maximum for ``patience`` nor for ``best_subset``.
        x = rng.normal(size=(m, d))
        x[:, 1] = 10.0 * labels
        x[:, 3] = 0.0
    elif kind == "integer":
        # Integer features: many equal si values between features, so ties by index matter.
        x = rng.integers(0, 3, size=(m, d)).astype(np.float64)
        x[:, 3] += (labels == 4)
        x[:, 5] += (labels == 4)  # a duplicate of the informative pattern, higher index
    else:
        x = rng.normal(size=(m, d))
        x[:, 2] += 1.5 * (labels == 4)
        x[:, 6] += 1.5 * (labels == 13)
    return x, labels


RANKING_OPTIONS = [
    {},
    {"max_features": 3},
    {"patience": 1},
    {"patience": 2},
    {"candidates": [6, 1, 3, 5]},
]


@pytest.mark.parametrize("kind", ["gaussian", "integer", "plateau"])
@pytest.mark.parametrize("options", RANKING_OPTIONS, ids=lambda o: str(o) or "defaults")
def test_feature_ranking_with_si_matches_reference(kind, options):
    x, labels = _ranking_cls_data(kind)
    res = compute_indices(x, labels, indices=["feature_ranking"], **options)
    order, scores, best = ref.feature_ranking_si(x, labels, **options)
    assert res.feature_ranking.order == order
    assert res.feature_ranking.scores == scores
    assert res.feature_ranking.best_subset == best


def _ranking_reg_data():
    rng = np.random.default_rng(32)
    x = rng.normal(size=(90, 6))
    y = np.stack([x[:, 4] + 0.3 * x[:, 1], np.round(x[:, 0])], axis=1)
    return x, y


@pytest.mark.parametrize(
    ("criterion", "gamma", "options"),
    [
        (None, 1.0, {}),
        ("smi_linear", 1.0, {"max_features": 2}),
        ("smi_linear", 1.0, {"candidates": [5, 0, 4]}),
        ("smi_exp", 0.5, {}),
        ("smi_exp", 2.0, {"patience": 1}),
    ],
)
def test_feature_ranking_with_smi_matches_reference(criterion, gamma, options):
    x, y = _ranking_reg_data()
    res = compute_indices(
        x, targets=y, indices=["feature_ranking"], criterion=criterion, gamma=gamma, **options
    )
    variant = "exp" if criterion == "smi_exp" else "linear"
    order, scores, best = ref.feature_ranking_smi(x, y, variant, gamma, **options)
    assert res.feature_ranking.order == order
    np.testing.assert_allclose(res.feature_ranking.scores, scores, rtol=SMI_RTOL, atol=SMI_ATOL)
    assert res.feature_ranking.best_subset == best


def test_feature_ranking_regression_criterion_defaults_to_smi_linear():
    x, y = _ranking_reg_data()
    res = compute_indices(x, targets=y, indices=["feature_ranking"], max_features=1)
    assert res.feature_ranking.criterion == "smi_linear"


# ---------------------------------------------------------------------------------------
# Options: normalize, candidate search, precision
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["gaussian_arbitrary_labels", "duplicate_rows", "float32_features"]
)
def test_normalize_standardises_with_train_statistics(case):
    x, labels, xt, lt = cls_data(case)
    nx, nxt = ref.normalize(x, xt)
    res = compute_indices(
        x, labels, test_features=xt, test_labels=lt, orders=ORDERS, normalize=True,
        indices=["si", "high_order_si", "soft_order_si", "anti_si", "center_si"],
    )
    expected = ref.separation(nx, labels, ORDERS)
    expected_cross = ref.cross_separation(nx, labels, nxt, lt, ORDERS)
    for name in ("si", "center_si"):
        assert_counts_equal(res.train, expected, name)
        assert_counts_equal(res.cross, expected_cross, name)
    for name in ORDERED_SEPARATION:
        assert_ordered_counts_equal(res.train, expected, name)
        assert_ordered_counts_equal(res.cross, expected_cross, name)


@pytest.mark.parametrize("case", ["gaussian_2d_targets", "duplicate_rows", "diabetes"])
def test_normalize_standardises_regression_features_with_train_statistics(case):
    x, y, xt, yt = reg_data(case)
    nx, nxt = ref.normalize(x, xt)
    res = compute_indices(
        x, targets=y, test_features=xt, test_targets=yt, orders=ORDERS, normalize=True,
        indices=list(SMOOTHNESS_FAMILIES),
    )
    expected = ref.smoothness(nx, y, ORDERS)
    expected_cross = ref.cross_smoothness(nx, y, nxt, yt)
    for name in SMOOTHNESS_FAMILIES:
        assert_smi_close(res.train, expected, name)
    for name in ("smi_linear", "smi_exp"):
        assert_smi_close(res.cross, expected_cross, name)


SEARCH_CASES = ["duplicate_rows", "integer_features_with_ties", "large_offset_float32", "digits"]


@pytest.mark.parametrize("search", ["blas", "faiss"])
@pytest.mark.parametrize("case", SEARCH_CASES)
def test_candidate_search_gives_the_reference_result(case, search):
    x, labels, xt, lt = cls_data(case)
    res = compute_indices(
        x, labels, test_features=xt, test_labels=lt, orders=ORDERS,
        indices=["si", "high_order_si", "soft_order_si", "anti_si", "margin_order"],
        candidate_search=search,
    )
    expected, expected_cross = cls_reference(case), cls_cross_reference(case)
    assert_counts_equal(res.train, expected, "si")
    assert_counts_equal(res.cross, expected_cross, "si")
    for name in ORDERED_SEPARATION:
        assert_ordered_counts_equal(res.train, expected, name)
        assert_ordered_counts_equal(res.cross, expected_cross, name)
    assert np.array_equal(
        res.train.per_sample["margin_order"], expected["per_sample"]["margin_order"]
    )


@pytest.mark.parametrize("search", ["auto", "blas", "faiss"])
@pytest.mark.parametrize("case", SEARCH_CASES)
def test_knn_returns_the_float64_index_tie_order(case, search):
    x, _, xt, _ = cls_data(case)
    k = 7
    got = knn(x, k, candidate_search=search)
    assert np.array_equal(got.indices, ref.neighbour_order(x)[:, :k])
    got_cross = knn(x, k, queries=xt, candidate_search=search)
    assert np.array_equal(got_cross.indices, ref.cross_neighbour_order(x, xt)[:, :k])


@pytest.mark.parametrize("search", ["blas", "faiss"])
def test_knn_in_small_blocks_returns_the_reference_order(search):
    x, _, _, _ = cls_data("integer_features_with_ties")
    got = knn(x, 5, candidate_search=search, block_rows=7)
    assert np.array_equal(got.indices, ref.neighbour_order(x)[:, :5])


def test_precision_exact_is_the_default():
    assert inspect.signature(compute_indices).parameters["precision"].default == "exact"
    x, labels, _, _ = cls_data("gaussian_arbitrary_labels")
    assert compute_indices(x, labels, indices=["si"]).options["precision"] == "exact"


# ---------------------------------------------------------------------------------------
# Serialisation
# ---------------------------------------------------------------------------------------


def test_to_dict_carries_dataset_and_per_class_values_under_metrics_names():
    res = cls_engine("gaussian_arbitrary_labels")
    expected = cls_reference("gaussian_arbitrary_labels")
    out = res.to_dict(per_class=True, per_sample=False)
    assert out["si"] == expected["dataset"]["si"]
    assert {int(k): v for k, v in out["si_per_class"].items()} == expected["per_class"]["si"]
    assert "si_per_sample" not in out
