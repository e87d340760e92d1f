"""Linear probes of the layer analysis: the ridge penalty chosen by exact leave-one-out equals a
brute-force leave-one-out loop written here, and the logistic probe agrees with
scikit-learn's LogisticRegression (same C, lbfgs)."""

from __future__ import annotations

import numpy as np
import pytest

from layerscope.server.analysis import analyze_layers
from layerscope.server.analysis.probe import (
    RIDGE_ALPHAS,
    choose_ridge_alpha,
    fit_logistic,
    logistic_probe,
    ridge_loo,
    ridge_probe,
)


def wide_problem(m: int = 60, d: int = 50, c: int = 3, seed: int = 0, signal: float = 1.5):
    """About as many noisy features as samples, a few informative ones: alpha = 1 overfits."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % c
    x = rng.normal(size=(m, d))
    x[:, :3] += signal * np.eye(c)[y]
    return x, y


def brute_force_loo(x: np.ndarray, target: np.ndarray, alpha: float) -> np.ndarray:
    """Leave each sample out, fit ridge with an unpenalised intercept on the rest by the
    normal equations of the augmented system [1, X], and predict the sample left out."""
    m, d = x.shape
    out = np.empty_like(target)
    for i in range(m):
        keep = np.arange(m) != i
        z = np.hstack([np.ones((m - 1, 1)), x[keep]])
        pen = alpha * np.eye(d + 1)
        pen[0, 0] = 0.0
        w = np.linalg.solve(z.T @ z + pen, z.T @ target[keep])
        out[i] = np.concatenate([[1.0], x[i]]) @ w
    return out


def test_ridge_loo_predictions_equal_a_brute_force_leave_one_out_loop() -> None:
    x, y = wide_problem(m=40, d=30)
    xs = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-10)
    target = np.eye(3)[y]
    grid = (0.1, 10.0, 1000.0)
    loo, *_ = ridge_loo(xs, target, grid)
    for a, alpha in enumerate(grid):
        np.testing.assert_allclose(loo[a], brute_force_loo(xs, target, alpha), atol=1e-9)


def test_ridge_probe_chooses_the_alpha_a_brute_force_loo_accuracy_chooses() -> None:
    x, y = wide_problem()
    xs = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-10)
    target = np.eye(3)[y]
    best = None
    for alpha in RIDGE_ALPHAS:
        pred = brute_force_loo(xs, target, alpha)
        key = (np.mean(np.argmax(pred, axis=1) == y), -np.sum((pred - target) ** 2), alpha)
        best = key if best is None or key > best else best
    out = ridge_probe(x, y, None, None, "classification")
    assert out["alpha"] == pytest.approx(best[2])
    assert out["alpha_grid"] == pytest.approx(list(RIDGE_ALPHAS))
    assert out["alpha_selection"] == "loo" and out["model"] == "ridge"
    assert out["alpha"] > 1.0  # the fixed alpha = 1 of before overfits this problem


def test_ridge_loo_choice_beats_the_fixed_alpha_on_held_out_data() -> None:
    x, y = wide_problem(m=400, d=150, seed=3, signal=3.0)  # as many features as samples
    tr, te = slice(0, 150), slice(150, 400)
    chosen = ridge_probe(x[tr], y[tr], x[te], y[te], "classification")
    fixed = ridge_probe(x[tr], y[tr], x[te], y[te], "classification", alpha=1.0)
    assert fixed["alpha_selection"] == "fixed"
    assert chosen["test_accuracy"] > fixed["test_accuracy"] + 0.05


def test_choose_ridge_alpha_regression_minimises_loo_squared_error() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(50, 8))
    t = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=50))[:, None]
    grid = (1e-2, 1.0, 1e2, 1e4)
    loo, *_ = ridge_loo(x - x.mean(axis=0), t, grid)
    errs = [np.sum((brute_force_loo(x - x.mean(axis=0), t, a) - t) ** 2) for a in grid]
    assert choose_ridge_alpha(loo, t, False, grid) == int(np.argmin(errs))


@pytest.fixture(scope="module")
def blobs4():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn is the reference")
    x, y = datasets.make_classification(n_samples=300, n_features=12, n_informative=6,
                                        n_classes=4, n_clusters_per_class=1, random_state=0)
    return x, y


@pytest.mark.parametrize("c_value", [0.1, 1.0, 10.0])
def test_fit_logistic_coefficients_agree_with_scikit_learn(blobs4, c_value: float) -> None:
    lm = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is the reference")
    x, y = blobs4
    xs = (x - x.mean(axis=0)) / x.std(axis=0)
    ref = lm.LogisticRegression(C=c_value, solver="lbfgs", tol=1e-12, max_iter=20000).fit(xs, y)
    wb = fit_logistic(xs, y, 4, 1.0 / c_value)
    # softmax weights are defined up to a per-row constant; the L2 penalty fixes the
    # weights' (sum 0 across classes), the intercepts are compared centred
    np.testing.assert_allclose(wb[:-1].T, ref.coef_, atol=2e-4, rtol=1e-3)
    np.testing.assert_allclose(wb[-1] - wb[-1].mean(), ref.intercept_ - ref.intercept_.mean(),
                               atol=2e-4)


def test_logistic_probe_accuracy_agrees_with_scikit_learn(blobs4) -> None:
    lm = pytest.importorskip("sklearn.linear_model", reason="scikit-learn is the reference")
    x, y = blobs4
    tr, te = slice(0, 200), slice(200, 300)
    out = logistic_probe(x[tr], y[tr], x[te], y[te], "classification", alpha=0.5)
    mean, std = x[tr].mean(axis=0), x[tr].std(axis=0) + 1e-10
    ref = lm.LogisticRegression(C=2.0, solver="lbfgs", tol=1e-12, max_iter=20000)
    ref.fit((x[tr] - mean) / std, y[tr])
    assert out["train_accuracy"] == pytest.approx(ref.score((x[tr] - mean) / std, y[tr]))
    assert out["test_accuracy"] == pytest.approx(ref.score((x[te] - mean) / std, y[te]))
    assert out["model"] == "logistic" and out["alpha_selection"] == "fixed"


def test_logistic_probe_chooses_its_penalty_on_a_held_out_split_and_is_deterministic() -> None:
    x, y = wide_problem(m=200, d=150, seed=5)
    a = logistic_probe(x, y, None, None, "classification")
    assert a["alpha_selection"] == "holdout" and a["alpha"] in a["alpha_grid"]
    assert a == logistic_probe(x, y, None, None, "classification")


def test_logistic_probe_refuses_regression() -> None:
    with pytest.raises(ValueError, match="logistic.*classification"):
        logistic_probe(np.zeros((10, 2)), np.arange(10.0), None, None, "regression")


# --- through the layer analysis --------------------------------------------------------------


def test_layer_analysis_fits_the_named_probe_per_layer(cnn) -> None:
    x, y = {"image": cnn.train["image"][:120]}, cnn.y[:120]
    xt, yt = {"image": cnn.test["image"][:60]}, cnn.yt[:60]
    res = analyze_layers(cnn.path, x, labels=y, test=xt, test_labels=yt, layers="auto",
                         reduce="mean", probe=True, probe_model="logistic",
                         include_inputs=False)
    probes = [la.probe for la in res.layers if la.error is None]
    assert probes and all(p["model"] == "logistic" for p in probes)
    assert res.options["probe_model"] == "logistic"
    ridge = analyze_layers(cnn.path, x, labels=y, layers="auto", reduce="mean", probe=True,
                           include_inputs=False)
    assert all(la.probe["alpha_selection"] == "loo" for la in ridge.layers if la.probe)


def test_probe_model_without_probe_is_refused(cnn) -> None:
    with pytest.raises(ValueError, match="probe_model.*without probe"):
        analyze_layers(cnn.path, {"image": cnn.train["image"][:20]}, labels=cnn.y[:20],
                       probe_model="logistic")
