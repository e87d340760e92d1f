"""Bad input is refused with a ValueError whose message names the problem; good input is
never modified.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from layerscope.server.metrics import compute_indices


def classification(m: int = 12, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), np.arange(m) % 3


def regression(m: int = 12, d: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), rng.normal(size=(m, 2))


# --- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [0, 1])
def test_fewer_than_two_points_is_refused(m: int) -> None:
    with pytest.raises(ValueError, match=rf"at least 2 points.*got {m}"):
        compute_indices(np.zeros((m, 3)), labels=np.zeros(m, dtype=int))


def test_an_empty_test_set_is_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="test_features has no samples"):
        compute_indices(x, labels, test_features=np.zeros((0, 3)), test_labels=np.zeros(0, int))


def test_fewer_than_two_points_is_refused_for_regression() -> None:
    with pytest.raises(ValueError, match="at least 2 points"):
        compute_indices(np.zeros((1, 3)), targets=np.zeros(1))


def test_labels_of_a_different_length_are_refused() -> None:
    x, labels = classification(m=12)
    with pytest.raises(ValueError, match=r"labels has 11 entries.*12 samples"):
        compute_indices(x, labels[:11])


def test_targets_of_a_different_length_are_refused() -> None:
    x, y = regression(m=12)
    with pytest.raises(ValueError, match=r"targets has 13 rows.*12 samples"):
        compute_indices(x, targets=np.concatenate([y, y[:1]]))


def test_test_labels_of_a_different_length_are_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=r"test_labels has 3 entries.*4 samples"):
        compute_indices(x, labels, test_features=x[:4], test_labels=labels[:3])


# --- non-finite values ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_refused_with_count_and_first_position(bad: float) -> None:
    x, labels = classification(m=12, d=3)
    x[4, 1] = bad
    x[7, 0] = bad
    x[9, 2] = np.nan
    with pytest.raises(ValueError, match="features") as err:
        compute_indices(x, labels)
    msg = str(err.value)
    assert "3 non-finite" in msg
    assert "sample 4" in msg
    assert "feature 1" in msg


def test_non_finite_float32_features_are_refused() -> None:
    x, labels = classification()
    x = x.astype(np.float32)
    x[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"1 non-finite.*sample 2"):
        compute_indices(x, labels)


def test_non_finite_test_features_are_refused_and_named() -> None:
    x, labels = classification()
    xt = x[:5].copy()
    xt[3, 2] = np.inf
    with pytest.raises(ValueError, match=r"test_features.*1 non-finite.*sample 3"):
        compute_indices(x, labels, test_features=xt, test_labels=labels[:5])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_targets_are_refused_with_count_and_first_position(bad: float) -> None:
    x, y = regression(m=12)
    y[6, 1] = bad
    y[10, 0] = bad
    with pytest.raises(ValueError, match="targets") as err:
        compute_indices(x, targets=y)
    msg = str(err.value)
    assert "2 non-finite" in msg
    assert "sample 6" in msg


def test_non_finite_one_dimensional_targets_are_refused() -> None:
    x, _ = regression(m=12)
    y = np.arange(12.0)
    y[5] = np.nan
    with pytest.raises(ValueError, match=r"targets.*1 non-finite.*sample 5"):
        compute_indices(x, targets=y)


@pytest.mark.parametrize("shape", [(500,), (300, 7), (40, 3, 5)])
@pytest.mark.parametrize("chunk", [8, 64, 1 << 20])
def test_the_finiteness_check_counts_and_places_across_chunks(
        shape: tuple[int, ...], chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads a chunk of samples at a time (the uploads' mapped datasets and the
    engine's arrays alike): the count, the first sample and its position inside the sample
    are those of the whole array, whatever the chunks, computed here with np.argwhere."""
    from layerscope.server.metrics import validation

    monkeypatch.setattr(validation, "FINITE_CHUNK_BYTES", chunk)
    rng = np.random.default_rng(4)
    a = rng.normal(size=shape).astype(np.float32)
    validation.check_finite(a, "x")  # all finite: no error
    flat = a.reshape(shape[0], -1)
    for row, col, value in ((shape[0] - 1, 0, np.inf), (shape[0] // 3, flat.shape[1] - 1,
                                                        np.nan), (shape[0] // 3 + 1, 0, -np.inf)):
        flat[row, col] = value
    bad = np.argwhere(~np.isfinite(flat))
    sample, inside = bad[0]
    where = {1: "", 2: f", feature {inside}"}.get(a.ndim, f", value {inside} of it (flattened)")
    with pytest.raises(KeyError) as err:
        validation.check_finite(a, "tensor 'x'", KeyError)
    assert err.value.args[0] == (f"tensor 'x' contains {len(bad)} non-finite value(s) (NaN or "
                                 f"Inf); the first is at sample {sample}{where}")
    validation.check_finite(np.full(shape, 7, np.int64), "ints")  # integers are finite


# --- orders -----------------------------------------------------------------------------------


@pytest.mark.parametrize("order", [12, 13, 100])
def test_an_order_of_m_or_more_is_refused(order: int) -> None:
    x, labels = classification(m=12)
    with pytest.raises(ValueError, match=rf"order {order}.*12 points.*below 12"):
        compute_indices(x, labels, orders=[1, order])


def test_an_order_of_m_or_more_is_refused_for_regression() -> None:
    x, y = regression(m=12)
    with pytest.raises(ValueError, match="order 12"):
        compute_indices(x, targets=y, orders=12)


@pytest.mark.parametrize("order", [0, -1])
def test_an_order_below_one_is_refused(order: int) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=rf"orders must be integers >= 1; got {order}"):
        compute_indices(x, labels, orders=[order])


def test_a_non_integer_order_is_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=r"orders must be integers.*2\.5"):
        compute_indices(x, labels, orders=[2.5])


def test_an_order_of_m_minus_one_is_accepted() -> None:
    x, labels = classification(m=12)
    res = compute_indices(x, labels, orders=[11])
    assert set(res.train.dataset["high_order_si"]) == {11}


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_labels_are_refused(dtype: type) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=r"labels must be an integer array.*float"):
        compute_indices(x, labels.astype(dtype))


def test_string_labels_are_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="labels must be an integer array"):
        compute_indices(x, labels.astype(str))


def test_a_test_label_absent_from_train_is_refused_and_named() -> None:
    x, labels = classification()  # labels 0, 1, 2
    lt = np.array([0, 1, 17, 2])
    with pytest.raises(ValueError, match=r"absent from the training labels: 17"):
        compute_indices(x, labels, test_features=x[:4], test_labels=lt)


def test_test_features_without_test_labels_are_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="test_labels"):
        compute_indices(x, labels, test_features=x[:4])


def test_labels_and_targets_together_are_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=r"exactly one of labels.*targets.*both"):
        compute_indices(x, labels, targets=np.zeros(len(x)))


def test_neither_labels_nor_targets_is_refused() -> None:
    x, _ = classification()
    with pytest.raises(ValueError, match=r"exactly one of labels.*targets.*neither"):
        compute_indices(x)


# --- test set shape ---------------------------------------------------------------------------


def test_a_test_set_of_another_feature_width_is_refused() -> None:
    x, labels = classification(d=3)
    with pytest.raises(ValueError, match=r"test_features have 4 features.*features have 3"):
        compute_indices(x, labels, test_features=np.zeros((5, 4)), test_labels=labels[:5])


def test_a_regression_test_set_of_another_feature_width_is_refused() -> None:
    x, y = regression(d=3)
    with pytest.raises(ValueError, match=r"test_features have 2 features"):
        compute_indices(x, targets=y, test_features=np.zeros((5, 2)), test_targets=y[:5])


def test_test_targets_with_another_number_of_columns_are_refused() -> None:
    x, y = regression()
    with pytest.raises(ValueError, match=r"test_targets have 1 columns but targets have 2"):
        compute_indices(x, targets=y, test_features=x[:5], test_targets=y[:5, 0])


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("hihg_order_si", "high_order_si"), ("center_sI", "center_si"), ("smi", "si")],
)
def test_an_unknown_index_name_is_refused_with_the_close_match(name: str, suggestion: str) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=re.escape(repr(name))) as err:
        compute_indices(x, labels, indices=[name])
    assert f"did you mean {suggestion}" in str(err.value)


def test_a_regression_index_name_for_classification_is_refused() -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="unknown index 'smi_linear' for classification"):
        compute_indices(x, labels, indices=["smi_linear"])


def test_an_unknown_regression_index_name_suggests_the_close_match() -> None:
    x, y = regression()
    with pytest.raises(ValueError, match="did you mean smi_linear") as err:
        compute_indices(x, targets=y, indices=["smi_lineer"])
    assert "'smi_lineer'" in str(err.value)


@pytest.mark.parametrize("gamma", [0.0, -1.0, float("nan"), float("inf")])
def test_gamma_must_be_positive_and_finite(gamma: float) -> None:
    x, y = regression()
    with pytest.raises(ValueError, match="gamma must be a finite number > 0"):
        compute_indices(x, targets=y, gamma=gamma)


@pytest.mark.parametrize("precision", ["float32", "EXACT", ""])
def test_precision_other_than_exact_or_fast_is_refused(precision: str) -> None:
    x, labels = classification()
    expected = rf"precision must be 'exact' or 'fast'; got '{precision}'"
    with pytest.raises(ValueError, match=expected):
        compute_indices(x, labels, precision=precision)


def test_fast_precision_is_accepted_and_said_in_the_warnings() -> None:
    x, labels = classification()
    res = compute_indices(x, labels, precision="fast")
    assert res.options["precision"] == "fast"
    assert any("fast" in w for w in res.warnings)


@pytest.mark.parametrize("candidates", [[0, 3], [-1], [7, 1, 9]])
def test_ranking_candidates_outside_the_features_are_refused(candidates: list[int]) -> None:
    x, labels = classification(d=3)
    bad = [c for c in candidates if not 0 <= c < 3]
    with pytest.raises(ValueError, match=r"candidates must be feature indices in 0\.\.2") as err:
        compute_indices(x, labels, indices=["feature_ranking"], candidates=candidates)
    assert str(bad) in str(err.value)


def test_empty_ranking_candidates_are_refused() -> None:
    x, labels = classification(d=3)
    with pytest.raises(ValueError, match="candidates.*empty"):
        compute_indices(x, labels, indices=["feature_ranking"], candidates=[])


def test_regression_ranking_candidates_outside_the_features_are_refused() -> None:
    x, y = regression(d=3)
    with pytest.raises(ValueError, match=r"candidates must be feature indices in 0\.\.2"):
        compute_indices(x, targets=y, indices=["feature_ranking"], candidates=[5])


def test_ranking_candidates_inside_the_features_are_accepted() -> None:
    x, labels = classification(d=3)
    res = compute_indices(x, labels, indices=["feature_ranking"], candidates=[2, 0])
    assert sorted(res.feature_ranking.order) == [0, 2]


@pytest.mark.parametrize("criterion", ["smi_linear", "accuracy"])
def test_a_criterion_foreign_to_classification_is_refused(criterion: str) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match=rf"criterion.*'si'.*{criterion}"):
        compute_indices(x, labels, indices=["feature_ranking"], criterion=criterion)


def test_a_criterion_foreign_to_regression_is_refused() -> None:
    x, y = regression()
    with pytest.raises(ValueError, match="criterion for regression.*'si'"):
        compute_indices(x, targets=y, indices=["feature_ranking"], criterion="si")


@pytest.mark.parametrize("budget", [0, -5.0, float("nan"), float("inf")])
def test_memory_budget_must_be_finite_and_positive(budget: float) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="memory_budget_mb must be a finite number > 0"):
        compute_indices(x, labels, memory_budget_mb=budget)


@pytest.mark.parametrize("cap", [0, 2.5, True])
def test_margin_cap_must_be_a_positive_integer(cap: Any) -> None:
    x, labels = classification()
    with pytest.raises(ValueError, match="margin_cap must be an integer >= 1"):
        compute_indices(x, labels, indices=["margin_order"], margin_cap=cap)


def test_non_numeric_features_are_refused() -> None:
    _, labels = classification()
    with pytest.raises(ValueError, match="features must be a numeric array"):
        compute_indices(np.array([["a", "b"]] * 12), labels)


# --- inputs are never modified --------------------------------------------------------------


def _snapshot(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.copy() for k, v in arrays.items()}


def _assert_unchanged(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> None:
    for k in before:
        assert after[k].dtype == before[k].dtype, k
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_classification_does_not_modify_the_callers_arrays(normalize: bool, dtype: type) -> None:
    rng = np.random.default_rng(1)
    arrays = {
        "features": (5.0 + 3.0 * rng.normal(size=(30, 4))).astype(dtype),
        "labels": rng.integers(-2, 3, size=30),
        "test_features": (5.0 + 3.0 * rng.normal(size=(10, 4))).astype(dtype),
        "test_labels": rng.integers(-2, 3, size=10),
    }
    before = _snapshot(arrays)
    compute_indices(
        **arrays, normalize=normalize, orders=[1, 3],
        indices=["si", "high_order_si", "center_si", "margin_order", "single_feature_si",
                 "feature_ranking"],
    )
    _assert_unchanged(before, arrays)


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_regression_does_not_modify_the_callers_arrays(normalize: bool, dtype: type) -> None:
    rng = np.random.default_rng(2)
    arrays = {
        "features": (5.0 + 3.0 * rng.normal(size=(30, 4))).astype(dtype),
        "targets": rng.normal(size=(30, 2)),
        "test_features": (5.0 + 3.0 * rng.normal(size=(10, 4))).astype(dtype),
        "test_targets": rng.normal(size=(10, 2)),
    }
    before = _snapshot(arrays)
    compute_indices(
        **arrays, normalize=normalize, orders=[1, 3],
        indices=["smi_linear", "high_order_smi_exp", "single_feature_smi_linear",
                 "feature_ranking"],
    )
    _assert_unchanged(before, arrays)


def test_integer_features_and_column_labels_are_not_modified() -> None:
    rng = np.random.default_rng(3)
    arrays = {
        "features": rng.integers(0, 4, size=(20, 3)),
        "labels": rng.integers(0, 2, size=(20, 1)),
    }
    before = _snapshot(arrays)
    compute_indices(**arrays, normalize=True)
    _assert_unchanged(before, arrays)
