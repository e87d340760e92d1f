"""Linear probes of a layer's features: ridge with its penalty chosen by exact leave-one-out,
and multinomial logistic regression with L2 (classification).

Both standardise the features with the training mean and std and leave the intercept
unpenalised. docs/layers.md says which to use and why.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: The ridge penalties leave-one-out chooses from (features standardised: alpha is relative
#: to a per-feature variance of 1): half-decades 10^-2 .. 10^6.
RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
#: The logistic penalties (alpha = 1 / C of scikit-learn) the held-out split chooses from.
LOGISTIC_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)
#: Fraction of each class held out to choose the logistic penalty, and the split's seed.
HOLDOUT_FRACTION = 0.2
HOLDOUT_SEED = 0
#: Fewer training samples per class than this and the logistic penalty is fixed at 1.
HOLDOUT_MIN_PER_CLASS = 5
#: L-BFGS iterations of each fit on the grid (warm-started) and of the final fit.
GRID_ITERATIONS = 200
FINAL_ITERATIONS = 1000


def _standardise(train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = train.astype(np.float64)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-10
    return (x - mean) / std, mean, std


def _targets(y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    if task == "classification":
        classes = np.unique(y)
        return (y[:, None] == classes[None, :]).astype(np.float64), classes
    return y.reshape(len(y), -1).astype(np.float64), None


def ridge_loo(x: np.ndarray, target: np.ndarray, alphas: tuple[float, ...] = RIDGE_ALPHAS
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact leave-one-out predictions of ridge with an unpenalised intercept, per alpha.

    For centred X = U diag(s) V^T and the hat matrix H = 11^T/m + U diag(s^2/(s^2+a)) U^T,
    the leave-one-out residual of sample i is (t_i - (H t)_i) / (1 - H_ii): one SVD serves
    every alpha. Returns (loo predictions (A, m, t), U, s, V^T) for ``x`` centred.
    """
    m = x.shape[0]
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    t_mean = target.mean(axis=0)
    z = u.T @ (target - t_mean)
    out = np.empty((len(alphas), *target.shape))
    s2 = s * s
    for a, alpha in enumerate(alphas):
        shrink = s2 / (s2 + alpha)
        fitted = t_mean + u @ (shrink[:, None] * z)
        h = 1.0 / m + np.einsum("ij,j,ij->i", u, shrink, u)
        out[a] = target - (target - fitted) / (1.0 - h)[:, None]
    return out, u, s, vt


def _score(pred: np.ndarray, truth: np.ndarray, classes: np.ndarray | None) -> float:
    if classes is not None:
        return float(np.mean(classes[np.argmax(pred, axis=1)] == truth))
    t = truth.reshape(len(truth), -1)
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean(axis=0)) ** 2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0


def choose_ridge_alpha(loo: np.ndarray, target: np.ndarray, classification: bool,
                       alphas: tuple[float, ...] = RIDGE_ALPHAS) -> int:
    """Index of the alpha with the best leave-one-out score: accuracy of the arg max
    (classification; ties by squared error) or squared error (regression); remaining ties
    go to the larger alpha."""
    err = np.sum((loo - target[None]) ** 2, axis=(1, 2))
    acc = (np.mean(np.argmax(loo, axis=2) == np.argmax(target, axis=1)[None], axis=1)
           if classification else np.zeros(len(alphas)))
    return max(range(len(alphas)), key=lambda a: (acc[a], -err[a], alphas[a]))


def ridge_probe(
    train: np.ndarray, y: np.ndarray, test: np.ndarray | None, yt: np.ndarray | None,
    task: str, alpha: float | None = None,
) -> dict[str, Any]:
    """Fit a ridge linear probe on standardised features; return its scores.

    Classification regresses one-hot labels and predicts the arg max (``train_accuracy``,
    ``test_accuracy``); regression reports R^2 (``train_r2``, ``test_r2``). The penalty is
    chosen per layer from ``alpha_grid`` (:data:`RIDGE_ALPHAS`) by exact leave-one-out
    (:func:`ridge_loo`, :func:`choose_ridge_alpha`), or is ``alpha`` when given.
    """
    x, mean, std = _standardise(train)
    target, classes = _targets(y, task)
    grid = RIDGE_ALPHAS if alpha is None else (float(alpha),)
    loo, u, s, vt = ridge_loo(x, target, grid)
    best = choose_ridge_alpha(loo, target, classes is not None, grid)
    chosen = grid[best]
    t_mean = target.mean(axis=0)
    w = vt.T @ ((s / (s * s + chosen))[:, None] * (u.T @ (target - t_mean)))

    def predict(feats: np.ndarray) -> np.ndarray:
        return np.asarray(((feats.astype(np.float64) - mean) / std) @ w + t_mean)

    key = "accuracy" if task == "classification" else "r2"
    out: dict[str, Any] = {f"train_{key}": _score(predict(train), y, classes), "alpha": chosen,
                           "model": "ridge", "alpha_grid": list(grid),
                           "alpha_selection": "loo" if alpha is None else "fixed"}
    if test is not None and yt is not None:
        out[f"test_{key}"] = _score(predict(test), yt, classes)
    return out


# --- logistic ----------------------------------------------------------------------------------


def fit_logistic(x: np.ndarray, codes: np.ndarray, classes: int, alpha: float,
                 start: np.ndarray | None = None, max_iter: int = 1000, tol: float = 1e-8
                 ) -> np.ndarray:
    """Weights (d + 1, C) (the last row the intercept) minimising
    sum_i -log softmax(x_i W + b)_{y_i} + alpha/2 |W|_F^2 by L-BFGS (analytic gradient);
    scikit-learn's multinomial LogisticRegression with C = 1/alpha minimises the same."""
    from scipy.optimize import minimize

    m, d = x.shape
    onehot = np.zeros((m, classes))
    onehot[np.arange(m), codes] = 1.0

    def loss(flat: np.ndarray) -> tuple[float, np.ndarray]:
        wb = flat.reshape(d + 1, classes)
        logits = x @ wb[:d] + wb[d]
        top = logits.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.sum(np.exp(logits - top), axis=1))
        value = float(np.sum(lse) - np.sum(logits[np.arange(m), codes]))
        value += 0.5 * alpha * float(np.sum(wb[:d] ** 2))
        p = np.exp(logits - lse[:, None]) - onehot
        grad = np.vstack([x.T @ p + alpha * wb[:d], p.sum(axis=0)[None, :]])
        return value, grad.ravel()

    x0 = np.zeros((d + 1) * classes) if start is None else start.ravel()
    res = minimize(loss, x0, jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12})
    return np.asarray(res.x.reshape(d + 1, classes))


def _holdout(codes: np.ndarray, classes: int) -> np.ndarray | None:
    """A seeded, stratified held-out mask (HOLDOUT_FRACTION of each class), or None when a
    class has too few samples to spare."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    mask = np.zeros(len(codes), dtype=bool)
    for c in range(classes):
        idx = np.flatnonzero(codes == c)
        if len(idx) < HOLDOUT_MIN_PER_CLASS:
            return None
        mask[rng.permutation(idx)[: max(1, int(len(idx) * HOLDOUT_FRACTION))]] = True
    return mask


def logistic_probe(
    train: np.ndarray, y: np.ndarray, test: np.ndarray | None, yt: np.ndarray | None,
    task: str, alpha: float | None = None,
) -> dict[str, Any]:
    """Fit a multinomial logistic-regression probe (L2) on standardised features.

    The penalty is chosen from ``alpha_grid`` (:data:`LOGISTIC_ALPHAS`) by the accuracy
    (ties: log-loss, then the larger alpha) on a seeded stratified held-out 20% of the
    training set, then the probe is refitted on the whole training set; with fewer than
    :data:`HOLDOUT_MIN_PER_CLASS` samples in a class, or ``alpha`` given, it is fixed.
    """
    if task != "classification":
        raise ValueError("probe_model 'logistic' is for classification; use 'ridge' for "
                         "regression targets")
    x, mean, std = _standardise(train)
    classes, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    c = len(classes)
    held = None if alpha is not None else _holdout(codes, c)
    if held is None:
        grid: tuple[float, ...] = (1.0 if alpha is None else float(alpha),)
        chosen, selection = grid[0], "fixed"
    else:
        grid, selection = LOGISTIC_ALPHAS, "holdout"
        fit_x, fit_c, val_x, val_c = x[~held], codes[~held], x[held], codes[held]
        scores, start = {}, None
        for a in sorted(grid, reverse=True):  # strong to weak penalty, warm-started
            start = fit_logistic(fit_x, fit_c, c, a, start, max_iter=GRID_ITERATIONS)
            logits = val_x @ start[:-1] + start[-1]
            logits -= logits.max(axis=1, keepdims=True)
            log_p = logits - np.log(np.sum(np.exp(logits), axis=1, keepdims=True))
            acc = float(np.mean(np.argmax(logits, axis=1) == val_c))
            scores[a] = (acc, float(np.mean(log_p[np.arange(len(val_c)), val_c])), a)
        chosen = max(grid, key=lambda a: scores[a])
    wb = fit_logistic(x, codes, c, chosen, max_iter=FINAL_ITERATIONS)

    def accuracy(feats: np.ndarray, labels: np.ndarray) -> float:
        z = (feats.astype(np.float64) - mean) / std
        return float(np.mean(classes[np.argmax(z @ wb[:-1] + wb[-1], axis=1)] == labels))

    out: dict[str, Any] = {"train_accuracy": accuracy(train, y), "alpha": chosen,
                           "model": "logistic", "alpha_grid": list(grid),
                           "alpha_selection": selection}
    if test is not None and yt is not None:
        out["test_accuracy"] = accuracy(test, yt)
    return out


def fit_probe(model: str, train: np.ndarray, y: np.ndarray, test: np.ndarray | None,
              yt: np.ndarray | None, task: str) -> dict[str, Any]:
    """The scores of the probe named ``model`` ("ridge" or "logistic")."""
    if model == "ridge":
        return ridge_probe(train, y, test, yt, task)
    if model == "logistic":
        return logistic_probe(train, y, test, yt, task)
    raise ValueError(f"probe_model must be 'ridge' or 'logistic'; got {model!r}")


__all__ = ["HOLDOUT_FRACTION", "LOGISTIC_ALPHAS", "RIDGE_ALPHAS", "choose_ridge_alpha",
           "fit_logistic", "fit_probe", "logistic_probe", "ridge_loo", "ridge_probe"]
