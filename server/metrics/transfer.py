"""Transferability scores: how well a frozen pre-trained representation suits a target task.

Four established scores, each computed from one forward pass of the source model over the
labelled target data, without fine-tuning:

* :func:`logme` / :func:`logme_regression` -- LogME (You, Liu, Wang, Long, ICML 2021,
  "LogME: Practical Assessment of Pre-trained Models for Transfer Learning"): the maximised
  log evidence of a Bayesian linear model on the features, per sample.
* :func:`leep` -- LEEP (Nguyen, Hassner, Seeger, Archambeau, ICML 2020, "LEEP: A New Measure
  to Evaluate Transferability of Learned Representations"): the log expected empirical
  prediction of the source model's class probabilities pushed through P(y | z).
* :func:`nce` -- NCE (Tran, Nguyen, Hassner, ICCV 2019, "Transferability and Hardness of
  Supervised Classification Tasks"): the negative conditional entropy -H(Y | Z) of the target
  labels given the source model's predicted labels.
* :func:`h_score` -- H-score (Bao, Li, Huang, Zheng, Zamir, Guibas, ICIP 2019, "An
  Information-Theoretic Approach to Transferability in Task Transfer Learning").

Higher is better for all four. Every function validates its inputs at the boundary and raises
``ValueError`` with a message naming the argument; inside, all arithmetic is float64 NumPy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import validation as v

__all__ = [
    "H_SCORE_RCOND",
    "PROBABILITY_SUM_ATOL",
    "h_score",
    "leep",
    "logme",
    "logme_regression",
    "nce",
    "transferability_scores",
]

#: Relative cutoff handed to ``np.linalg.pinv`` in :func:`h_score`: eigenvalues of the feature
#: covariance below ``H_SCORE_RCOND * largest eigenvalue`` are treated as zero. Directions
#: that carry rounding noise only (duplicated or constant features, rank-deficient data) are
#: thereby dropped; genuine directions whose variance is more than 1e10 times smaller than
#: the largest are dropped too, so rescale such features first.
H_SCORE_RCOND = 1e-10

#: How far each row of ``probabilities`` may sum from 1 (absolute), to allow float32 softmax.
PROBABILITY_SUM_ATOL = 1e-4

# Lower bound, relative to ||y||^2, on m^T m and on ||y - F m||^2 in the LogME fixed point.
# A target orthogonal to every feature drives m to 0 (alpha -> inf) and a target the features
# fit exactly drives the residual to 0 (beta -> inf); the floor keeps both finite.
_LOGME_FLOOR = 1e-12

_LOG_2PI = math.log(2.0 * math.pi)


# --- validation ---------------------------------------------------------------------------------


def _as_features(features: Any, name: str = "features", min_samples: int = 2) -> np.ndarray:
    """Return ``features`` as a finite float64 array (n, d); refuse anything else."""
    arr = np.asarray(features)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (samples, features); got {arr.ndim}-D shape {arr.shape}"
        )
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} must hold at least {min_samples} samples; got {arr.shape[0]}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no features per sample (shape {arr.shape})")
    out = arr.astype(np.float64, copy=False)
    v.check_finite(out, name)
    return out


def _as_labels(labels: Any, n: int | None, name: str = "labels", other: str = "") -> np.ndarray:
    """Return ``labels`` as an int64 vector, of length ``n`` when ``n`` is given."""
    return v.as_labels(labels, n, name, other)


def _as_probabilities(probabilities: Any, name: str = "probabilities") -> np.ndarray:
    """Return ``probabilities`` as float64 (n, Z): finite, non-negative rows summing to ~1."""
    arr = np.asarray(probabilities)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (samples, source classes); got shape {arr.shape}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have at least one sample and one class; got {arr.shape}")
    out = arr.astype(np.float64, copy=False)
    v.check_finite(out, name)
    if (out < 0).any():
        row = int(np.argmax((out < 0).any(axis=1)))
        raise ValueError(f"{name} must be non-negative; row {row} has a negative entry")
    sums = out.sum(axis=1)
    off = np.abs(sums - 1.0) > PROBABILITY_SUM_ATOL
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{name} rows must sum to 1 (within {PROBABILITY_SUM_ATOL}); row {row} sums to "
            f"{sums[row]!r} (apply a softmax to logits first)"
        )
    return out


def _check_iterations(max_iter: int, tol: float) -> None:
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1; got {max_iter!r}")
    if not (isinstance(tol, (int, float, np.floating)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0; got {tol!r}")


# --- LogME ---------------------------------------------------------------------------------------


def _logme_columns(features: np.ndarray, targets: np.ndarray, max_iter: int, tol: float) -> float:
    """Mean over the columns of ``targets`` of the maximised log evidence divided by n.

    With the thin SVD F = U diag(s) V^T (k = min(n, d) singular values) and z = U^T y, every
    quantity of the fixed point is diagonal in the singular basis:

        gamma    = sum_i beta s_i^2 / (alpha + beta s_i^2)
        m^T m    = sum_i (beta s_i z_i / (alpha + beta s_i^2))^2
        |y-Fm|^2 = sum_i (alpha z_i / (alpha + beta s_i^2))^2 + |y - U z|^2
        log|A|   = sum_i log(alpha + beta s_i^2) + (d - k) log alpha

    All target columns are iterated together, as arrays of shape (t,).
    """
    n, d = features.shape
    u, s, _ = np.linalg.svd(features, full_matrices=False)
    s2 = s * s  # (k,)
    k = s2.shape[0]
    z = u.T @ targets  # (k, t)
    outside = np.sum((targets - u @ z) ** 2, axis=0)  # the part of y outside span(U)
    y_sq = np.sum(targets * targets, axis=0)
    floor = _LOGME_FLOOR * np.where(y_sq > 0, y_sq, 1.0)

    def statistics(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, ...]:
        denom = alpha[None, :] + beta[None, :] * s2[:, None]  # (k, t)
        gamma = np.sum(beta[None, :] * s2[:, None] / denom, axis=0)
        m_sq = np.sum((beta[None, :] * s[:, None] * z / denom) ** 2, axis=0)
        res = np.sum((alpha[None, :] * z / denom) ** 2, axis=0) + outside
        return denom, gamma, m_sq, res

    t = targets.shape[1]
    alpha = np.ones(t)
    beta = np.ones(t)
    for _ in range(max_iter):
        _, gamma, m_sq, res = statistics(alpha, beta)
        new_alpha = gamma / np.maximum(m_sq, floor)
        new_beta = np.maximum(n - gamma, 0.0) / np.maximum(res, floor)
        new_beta = np.maximum(new_beta, np.finfo(np.float64).tiny)
        done = np.all(np.abs(new_alpha - alpha) <= tol * np.abs(new_alpha)) and np.all(
            np.abs(new_beta - beta) <= tol * np.abs(new_beta)
        )
        alpha, beta = new_alpha, new_beta
        if done:
            break

    denom, _, m_sq, res = statistics(alpha, beta)
    log_det = np.sum(np.log(denom), axis=0) + (d - k) * np.log(alpha)
    evidence = (
        0.5 * n * np.log(beta)
        + 0.5 * d * np.log(alpha)
        - 0.5 * n * _LOG_2PI
        - 0.5 * beta * res
        - 0.5 * alpha * m_sq
        - 0.5 * log_det
    )
    return float(np.mean(evidence) / n)


def logme(
    features: np.ndarray, labels: np.ndarray, max_iter: int = 100, tol: float = 1e-6
) -> float:
    """LogME for classification (You, Liu, Wang, Long, ICML 2021).

    The labels become one-hot targets, one column per class present in ``labels``. For each
    column y (n,) and features F (n, d), the Bayesian linear model y = F w + noise with prior
    w ~ N(0, alpha^-1 I) and noise ~ N(0, beta^-1) has log evidence

        L(alpha, beta) = n/2 log beta + d/2 log alpha - n/2 log 2 pi
                         - beta/2 ||y - F m||^2 - alpha/2 m^T m - 1/2 log |A|

    with A = alpha I + beta F^T F and posterior mean m = beta A^-1 F^T y. It is maximised by
    the paper's fixed-point iteration (MacKay's updates), starting from alpha = beta = 1 and
    using the SVD F = U diag(s) V^T:

        gamma = sum_i beta s_i^2 / (alpha + beta s_i^2)
        alpha <- gamma / (m^T m),     beta <- (n - gamma) / ||y - F m||^2

    until alpha and beta both change by at most ``tol`` (relative) or after ``max_iter``
    rounds. The score is the mean over target columns of L(alpha*, beta*) / n; higher means
    the features explain the labels linearly with better evidence. The features are used as
    given (no centring, no bias column), as in the paper.
    """
    x = _as_features(features)
    y = _as_labels(labels, x.shape[0], other="features")
    _check_iterations(max_iter, tol)
    classes, codes = np.unique(y, return_inverse=True)
    onehot = np.zeros((x.shape[0], classes.shape[0]))
    onehot[np.arange(x.shape[0]), codes.reshape(-1)] = 1.0
    return _logme_columns(x, onehot, max_iter, tol)


def logme_regression(
    features: np.ndarray, targets: np.ndarray, max_iter: int = 100, tol: float = 1e-6
) -> float:
    """LogME for real-valued targets (You, Liu, Wang, Long, ICML 2021).

    ``targets`` has shape (n,) or (n, t); each column is scored with the same maximised
    Bayesian linear-model evidence as :func:`logme` (see there for the formula and the
    fixed-point iteration), and the mean over columns of L(alpha*, beta*) / n is returned.
    A column that is identically zero has unbounded evidence; a floor on m^T m and on the
    residual keeps the result finite but arbitrary, so drop such columns first.
    """
    x = _as_features(features)
    arr = np.asarray(targets)
    if arr.dtype == object or arr.dtype.kind not in "fiub":
        raise ValueError(f"targets must be a numeric array; got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise ValueError(f"targets must have shape (n,) or (n, t); got shape {arr.shape}")
    if arr.shape[0] != x.shape[0]:
        raise ValueError(
            f"targets has {arr.shape[0]} rows but features has {x.shape[0]} samples; "
            "they must match"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"targets has zero columns (shape {arr.shape})")
    y = arr.astype(np.float64, copy=False)
    v.check_finite(y, "targets")
    _check_iterations(max_iter, tol)
    return _logme_columns(x, y, max_iter, tol)


# --- LEEP and NCE --------------------------------------------------------------------------------


def leep(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """LEEP (Nguyen, Hassner, Seeger, Archambeau, ICML 2020).

    ``probabilities`` (n, Z) holds the source model's class probabilities theta(x_i) and
    ``labels`` (n,) the target labels y_i. With the empirical joint and marginal

        P(y, z) = 1/n sum_i theta_z(x_i) [y_i = y],    P(z) = sum_y P(y, z),
        P(y | z) = P(y, z) / P(z),

    the score is the mean log-likelihood of the expected empirical predictor:

        LEEP = 1/n sum_i log( sum_z P(y_i | z) theta_z(x_i) )   (natural log, always <= 0).

    A source class z that no sample puts mass on (P(z) = 0) contributes nothing.
    """
    theta = _as_probabilities(probabilities)
    n = theta.shape[0]
    y = _as_labels(labels, n, other="probabilities")
    _, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    joint = np.zeros((int(codes.max()) + 1, theta.shape[1]))  # (Y, Z), unnormalised by n
    np.add.at(joint, codes, theta)
    marginal = joint.sum(axis=0)  # n P(z)
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    eep = np.sum(conditional[codes] * theta, axis=1)
    return float(np.mean(np.log(eep)))


def nce(source_labels: np.ndarray, labels: np.ndarray) -> float:
    """NCE, negative conditional entropy (Tran, Nguyen, Hassner, ICCV 2019).

    ``source_labels`` (n,) are the source model's predicted labels z_i (e.g. the argmax of its
    outputs) and ``labels`` (n,) the target labels y_i. From the empirical joint
    P(y, z) = #{i : y_i = y, z_i = z} / n and P(z) = #{i : z_i = z} / n,

        NCE = -H(Y | Z) = sum_{y, z} P(y, z) log( P(y, z) / P(z) )   (natural log).

    NCE <= 0, with equality exactly when each source label determines the target label.
    """
    z = _as_labels(source_labels, None, name="source_labels")
    y = _as_labels(labels, z.shape[0], other="source_labels")
    n = y.shape[0]
    _, zc = np.unique(z, return_inverse=True)
    _, yc = np.unique(y, return_inverse=True)
    zc, yc = zc.reshape(-1), yc.reshape(-1)
    joint = np.zeros((int(yc.max()) + 1, int(zc.max()) + 1))
    np.add.at(joint, (yc, zc), 1.0)
    marginal = joint.sum(axis=0)
    cells = joint > 0
    conditional = (joint / marginal[None, :])[cells]
    return float(np.sum(joint[cells] * np.log(conditional)) / n)


# --- H-score -------------------------------------------------------------------------------------


def h_score(features: np.ndarray, labels: np.ndarray) -> float:
    """H-score (Bao, Li, Huang, Zheng, Zamir, Guibas, ICIP 2019).

    With f the features centred over the samples and g_i = E[f | y = y_i] the mean of the
    centred features over the class of sample i,

        H(f) = tr( cov(f)^-1 cov(g) ),   cov(f) = f^T f / n,   cov(g) = g^T g / n
                                                              = sum_c (n_c / n) mu_c mu_c^T.

    cov(f)^-1 is ``np.linalg.pinv(cov(f), rcond=H_SCORE_RCOND, hermitian=True)``, so singular
    covariances (duplicated, constant or fewer samples than features) are handled; for an
    invertible covariance the score is invariant to any invertible linear map of the features.
    It lies in [0, min(d, classes - 1)].
    """
    x = _as_features(features)
    y = _as_labels(labels, x.shape[0], other="features")
    n = x.shape[0]
    f = x - x.mean(axis=0)
    cov_f = (f.T @ f) / n
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    codes = codes.reshape(-1)
    sums = np.zeros((counts.shape[0], f.shape[1]))
    np.add.at(sums, codes, f)
    means = sums / counts[:, None]
    cov_g = (means.T * (counts / n)) @ means
    inv = np.linalg.pinv(cov_f, rcond=H_SCORE_RCOND, hermitian=True)
    return float(np.sum(inv * cov_g.T))


# --- all together ------------------------------------------------------------------------------


def transferability_scores(
    features: np.ndarray, labels: np.ndarray, probabilities: np.ndarray | None = None
) -> dict[str, float | None]:
    """All four scores for one representation of a labelled target set.

    Returns ``{"logme", "leep", "nce", "h_score"}``: LogME and H-score from ``features``
    (n, d); LEEP from the source model's class ``probabilities`` (n, Z) and NCE from their
    argmax as source labels. ``leep`` and ``nce`` are ``None`` when ``probabilities`` is None.
    """
    x = _as_features(features)
    y = _as_labels(labels, x.shape[0], other="features")
    out: dict[str, float | None] = {
        "logme": logme(x, y),
        "leep": None,
        "nce": None,
        "h_score": h_score(x, y),
    }
    if probabilities is not None:
        theta = _as_probabilities(probabilities)
        if theta.shape[0] != x.shape[0]:
            raise ValueError(
                f"probabilities has {theta.shape[0]} rows but features has {x.shape[0]} "
                "samples; they must match"
            )
        out["leep"] = leep(theta, y)
        out["nce"] = nce(np.argmax(theta, axis=1), y)
    return out



# The stronger baselines and the registry of every score by name live in .baselines (which
# imports this module); they are re-exported here lazily.
_REEXPORTED = ("BASELINES", "compute_baselines", "gbc", "ncti", "nleep", "resolve_baselines",
               "sfda", "shrinkage_h_score", "transrate")


def __getattr__(name: str) -> Any:
    if name in _REEXPORTED:
        from . import baselines

        return getattr(baselines, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
