"""Stronger transferability baselines and the one registry of every baseline by name.

Beside LogME, LEEP, NCE and H-score (:mod:`.transfer`), each implemented from its paper:

* :func:`nleep` -- NLEEP (Li et al., CVPR 2021, "Ranking Neural Checkpoints"): LEEP with the
  posteriors of a Gaussian mixture fitted on PCA-reduced features as the source probabilities.
* :func:`sfda` -- SFDA (Shao et al., ECCV 2022, "Not All Models Are Equal: Predicting Model
  Transferability in a Self-challenging Fisher Space").
* :func:`ncti` -- NCTI (Wang et al., CVPR 2023, "How Far Pre-trained Models Are from Neural
  Collapse on the Target Dataset Informs their Transferability"); its three terms are
  normalised across the candidate models by :func:`combine_across_models`.
* :func:`gbc` -- GBC (Pandy et al., CVPR 2022, "Transferability Estimation using
  Bhattacharyya Class Separability").
* :func:`transrate` -- TransRate (Huang et al., ICML 2022, "Frustratingly Easy
  Transferability Estimation").
* :func:`shrinkage_h_score` -- the H-score with a Ledoit-Wolf shrunk covariance (Ibrahim,
  Ponomareva, Mazumder, 2022, "Newer is not always better: Rethinking transferability
  metrics, their peculiarities, stability and performance").

Higher is better for every score. All randomness (the mixture's initialisation) is seeded,
so every score is deterministic. docs/ranking-and-certification.md states each formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .transfer import (
    _as_features,
    _as_labels,
    _as_probabilities,
    h_score,
    leep,
    logme,
    logme_regression,
    nce,
)

__all__ = [
    "BASELINES",
    "Baseline",
    "UnknownBaselineError",
    "baseline_names",
    "combine_across_models",
    "compute_baselines",
    "gbc",
    "ledoit_wolf_shrinkage",
    "ncti",
    "ncti_terms",
    "nleep",
    "resolve_baselines",
    "sfda",
    "shrinkage_h_score",
    "transrate",
]

_LOG_2PI = math.log(2.0 * math.pi)


class UnknownBaselineError(ValueError):
    """A baseline name that is not in :data:`BASELINES`."""


def _classes(features: Any, labels: Any, name: str, min_per_class: int = 1
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (features float64, class codes 0..C-1, counts); refuse one class or tiny ones."""
    x = _as_features(features)
    y = _as_labels(labels, x.shape[0], other="features")
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 classes in labels; got 1")
    if x.shape[0] <= counts.shape[0]:
        raise ValueError(f"{name} needs more samples than classes; got {x.shape[0]} samples "
                         f"for {counts.shape[0]} classes")
    if counts.min() < min_per_class:
        raise ValueError(f"{name} needs at least {min_per_class} samples of every class; a "
                         f"class has {int(counts.min())}")
    return x, codes.reshape(-1), counts


def _pca(x: np.ndarray, *, variance: float | None = None, dims: int | None = None
         ) -> np.ndarray:
    """Centred ``x`` projected on its leading principal axes: ``dims`` of them, or the fewest
    that keep the fraction ``variance`` of the total variance (deterministic: an SVD)."""
    c = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(c, full_matrices=False)
    var = s * s
    total = var.sum()
    if total <= 0:
        raise ValueError("features are constant: every sample has the same features")
    if dims is None:
        assert variance is not None
        dims = int(np.searchsorted(np.cumsum(var) / total, variance - 1e-12) + 1)
    dims = max(1, min(dims, int(np.sum(var > var[0] * 1e-12))))
    return np.asarray(u[:, :dims] * s[:dims])


def _softmax_rows(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))


# --- NLEEP -------------------------------------------------------------------------------------


def _kmeans_pp(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeds, then Lloyd iterations; returns the assignment of each row."""
    n = x.shape[0]
    centres = [x[int(rng.integers(n))]]
    d2 = np.sum((x - centres[0]) ** 2, axis=1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(n, 1.0 / n)
        centres.append(x[int(rng.choice(n, p=p))])
        d2 = np.minimum(d2, np.sum((x - centres[-1]) ** 2, axis=1))
    c = np.array(centres)
    assign = np.zeros(n, dtype=np.int64)
    for it in range(20):
        dist = np.sum(x * x, axis=1)[:, None] - 2 * x @ c.T + np.sum(c * c, axis=1)[None, :]
        new = np.argmin(dist, axis=1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                c[j] = x[members].mean(axis=0)
    return assign


def gmm_posteriors(x: np.ndarray, components: int, *, seed: int = 0, max_iter: int = 100,
                   tol: float = 1e-3, reg: float = 1e-6) -> np.ndarray:
    """Posterior probabilities (n, components) of a full-covariance Gaussian mixture fitted
    by EM, initialised from seeded k-means++; ``reg`` times the mean feature variance is
    added to every covariance's diagonal (so the fit is equivariant to a feature scaling);
    stops when the mean log-likelihood changes by less than ``tol``."""
    n, d = x.shape
    rng = np.random.default_rng(seed)
    resp = np.zeros((n, components))
    resp[np.arange(n), _kmeans_pp(x, components, rng)] = 1.0
    floor = reg * float(np.mean(np.var(x, axis=0))) or reg
    previous = -np.inf
    for _ in range(max_iter):
        nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
        means = (resp.T @ x) / nk[:, None]
        log_p = np.empty((n, components))
        for j in range(components):
            diff = x - means[j]
            cov = (resp[:, j, None] * diff).T @ diff / nk[j]
            cov[np.diag_indices(d)] += floor
            chol = np.linalg.cholesky(cov)
            sol = np.linalg.solve(chol, diff.T)
            log_det = 2.0 * np.sum(np.log(np.diag(chol)))
            log_p[:, j] = (math.log(nk[j] / n) - 0.5 * (d * _LOG_2PI + log_det)
                           - 0.5 * np.sum(sol * sol, axis=0))
        top = log_p.max(axis=1, keepdims=True)
        lse = top[:, 0] + np.log(np.sum(np.exp(log_p - top), axis=1))
        resp = np.exp(log_p - lse[:, None])
        bound = float(np.mean(lse))
        if abs(bound - previous) < tol:
            break
        previous = bound
    return resp


def nleep(features: np.ndarray, labels: np.ndarray, *, variance: float = 0.8,
          components_per_class: int = 5, seed: int = 0) -> float:
    """NLEEP (Li et al., CVPR 2021): LEEP of the posteriors of a Gaussian mixture.

    The centred features are reduced by PCA to the fewest principal axes that keep
    ``variance`` (0.8, as the paper) of the total variance; a full-covariance Gaussian
    mixture with ``components_per_class`` x C components (5 x C as the authors' code; fewer,
    in steps of C, while that is not below the number of samples) is fitted by EM
    (:func:`gmm_posteriors`, seeded); its posteriors p(v | x_i) replace the source model's
    probabilities in LEEP: NLEEP = 1/n sum_i log sum_v P(y_i | v) p(v | x_i).
    """
    x, codes, counts = _classes(features, labels, "nleep")
    if not 0 < variance <= 1:
        raise ValueError(f"variance must be in (0, 1]; got {variance!r}")
    if isinstance(components_per_class, bool) or components_per_class < 1:
        raise ValueError(f"components_per_class must be an integer >= 1; got "
                         f"{components_per_class!r}")
    c = counts.shape[0]
    k = components_per_class * c
    while k >= x.shape[0] and k > c:
        k -= c
    z = _pca(x, variance=variance)
    return leep(gmm_posteriors(z, min(k, x.shape[0] - 1), seed=seed), codes)


# --- SFDA --------------------------------------------------------------------------------------


def _scatter(x: np.ndarray, codes: np.ndarray, counts: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(class means (C, d), within-class covariance S_W, between-class S_B), both / n."""
    n, d = x.shape
    means = np.zeros((counts.shape[0], d))
    np.add.at(means, codes, x)
    means /= counts[:, None]
    w = x - means[codes]
    s_w = w.T @ w / n
    centred = means - x.mean(axis=0)
    s_b = (centred.T * (counts / n)) @ centred
    return means, s_w, s_b


def _fisher_probabilities(x: np.ndarray, codes: np.ndarray, counts: np.ndarray, a: float,
                          lam: float | None = None) -> tuple[np.ndarray, float]:
    """Class probabilities of the regularised Fisher classifier, and the lambda it used."""
    from scipy import linalg

    n, d = x.shape
    c = counts.shape[0]
    means, s_w, s_b = _scatter(x, codes, counts)
    if lam is None:
        lam = math.exp(-a * float(np.linalg.eigvalsh(s_w)[-1]))
    reg = (1.0 - lam) * s_w
    reg[np.diag_indices(d)] += lam * max(float(np.trace(s_w)) / d, np.finfo(np.float64).tiny)
    # The generalised problem S_B u = mu S_W' u, solved in the range of S_W': with fewer
    # samples than features (or constant features) and a tiny lambda, S_W' is singular and
    # a Cholesky-based solver fails. Whitening by S_W'^(-1/2) on its non-null eigenvectors
    # gives the same directions (normalised to u^T S_W' u = 1) wherever S_W' is definite.
    w, v = linalg.eigh(reg)
    keep = w > max(float(w[-1]), np.finfo(np.float64).tiny) * d * np.finfo(np.float64).eps
    white = v[:, keep] / np.sqrt(w[keep])[None, :]
    k = min(c - 1, int(keep.sum()))
    _, u = linalg.eigh(white.T @ s_b @ white)
    vecs = white @ u[:, u.shape[1] - k:]
    z, mz = x @ vecs, means @ vecs  # in this space the regularised S_W is the identity
    logits = z @ mz.T - 0.5 * np.sum(mz * mz, axis=1)[None, :] + np.log(counts / n)[None, :]
    return _softmax_rows(logits), lam


def sfda(features: np.ndarray, labels: np.ndarray, *, a: float = 1.0) -> float:
    """SFDA (Shao et al., ECCV 2022): accuracy of a self-challenged regularised Fisher space.

    1. Regularised FDA: U maximises tr(U^T S_B U) / tr(U^T S_W' U) with
       S_W' = (1 - lambda) S_W + lambda (tr S_W / d) I and lambda = exp(-a sigma_max(S_W))
       (S_W, S_B the within and between-class covariances); U = the top min(C-1, d)
       generalised eigenvectors. In U's space S_W' is the identity, so the class
       probabilities are a softmax of z^T mu_c - |mu_c|^2 / 2 + log pi_c.
    2. Self-challenging (ConfMix): each sample's confidence p_i = softmax(probabilities)_y_i
       (the probabilities softened once more, as the authors do) mixes it with the mean of
       the other classes: x_i <- p_i x_i + (1 - p_i) mean(x_j : y_j != y_i).
    3. The Fisher classifier is fitted again on the mixed features with the same lambda;
       SFDA = 1/n sum_i p(y_i | x_i) (no log, as the paper).
    """
    x, codes, counts = _classes(features, labels, "sfda")
    if not (math.isfinite(a) and a > 0):
        raise ValueError(f"a must be a finite number > 0; got {a!r}")
    probs, lam = _fisher_probabilities(x, codes, counts, a)
    soft = _softmax_rows(probs)
    conf = soft[np.arange(x.shape[0]), codes][:, None]
    total = x.sum(axis=0)
    sums = np.zeros((counts.shape[0], x.shape[1]))
    np.add.at(sums, codes, x)
    others = (total[None, :] - sums) / (x.shape[0] - counts)[:, None]
    mixed = conf * x + (1.0 - conf) * others[codes]
    probs, _ = _fisher_probabilities(mixed, codes, counts, a, lam)
    return float(np.mean(probs[np.arange(x.shape[0]), codes]))


# --- NCTI --------------------------------------------------------------------------------------


def ncti_terms(features: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The three neural-collapse terms of NCTI (Wang et al., CVPR 2023) for one model.

    On the features reduced by PCA to min(C, d) dimensions (the rank a collapsed
    representation of C classes has):

    * ``vc`` (within-class variability, Papyan's NC1): tr(S_W S_B^+) / C, lower = more
      collapsed;
    * ``seli`` (simplex/SELI geometry): the nuclear norm of the samples normalised to unit
      length, divided by sqrt(n), in [1, sqrt(min(C, d))]: larger when the classes spread over
      every dimension, as an equiangular simplex does;
    * ``ncc`` (nearest-centre classifier): 1/n sum_i log p(y_i | x_i) with
      p(c | x) proportional to pi_c exp(-|x - mu_c|^2 / (2 s^2)) and s^2 the pooled
      within-class variance per dimension.
    """
    x, codes, counts = _classes(features, labels, "ncti")
    c = counts.shape[0]
    z = _pca(x, dims=min(c, x.shape[1]))
    n, d = z.shape
    means, s_w, s_b = _scatter(z, codes, counts)
    vc = float(np.trace(s_w @ np.linalg.pinv(s_b, rcond=1e-10, hermitian=True))) / c
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    unit = z / np.where(norms > 0, norms, 1.0)
    seli = float(np.sum(np.linalg.svd(unit, compute_uv=False))) / math.sqrt(n)
    s2 = max(float(np.trace(s_w)) / d, np.finfo(np.float64).tiny)
    d2 = np.maximum(np.sum(z * z, axis=1)[:, None] - 2 * z @ means.T
                    + np.sum(means * means, axis=1)[None, :], 0.0)  # (n, C), never (n, C, d)
    logits = -d2 / (2 * s2) + np.log(counts / n)[None, :]
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - top - np.log(np.sum(np.exp(logits - top), axis=1, keepdims=True))
    ncc = float(np.mean(log_p[np.arange(n), codes]))
    return {"vc": vc, "seli": seli, "ncc": ncc}


def ncti(features: np.ndarray, labels: np.ndarray) -> float:
    """NCTI of one model alone: seli + ncc - vc of :func:`ncti_terms`, unnormalised.

    The paper normalises each term across the candidate models before adding them
    (:func:`combine_across_models` does so when several models are ranked together).
    """
    t = ncti_terms(features, labels)
    return t["seli"] + t["ncc"] - t["vc"]


def _minmax(values: Sequence[float]) -> list[float]:
    lo, hi = min(values), max(values)
    return [0.0 if hi == lo else (v - lo) / (hi - lo) for v in values]


def combine_across_models(rows: Sequence[dict[str, float | None]]) -> None:
    """Replace each row's ``ncti`` by the paper's combination across the candidate models:
    minmax(seli) + minmax(ncc) - minmax(vc), each term min-max normalised over the rows
    (from the ``ncti.vc``, ``ncti.seli``, ``ncti.ncc`` entries); rows without them stay."""
    have = [r for r in rows if all(r.get(f"ncti.{t}") is not None for t in ("vc", "seli", "ncc"))]
    if len(have) < 2:
        return
    terms = {t: _minmax([float(r[f"ncti.{t}"]) for r in have])  # type: ignore[arg-type]
             for t in ("vc", "seli", "ncc")}
    for i, r in enumerate(have):
        r["ncti"] = terms["seli"][i] + terms["ncc"][i] - terms["vc"][i]


# --- GBC ---------------------------------------------------------------------------------------


def gbc(features: np.ndarray, labels: np.ndarray, *, dims: int = 64) -> float:
    """GBC (Pandy et al., CVPR 2022): minus the summed Bhattacharyya coefficients of classes.

    The features are reduced by PCA to min(``dims``, d) dimensions (64, as the paper); each
    class c is a Gaussian N(mu_c, diag(sigma_c^2)) (the paper's diagonal variant, per-class
    variances with ddof=0). For classes i != j, with sigma^2 = (sigma_i^2 + sigma_j^2) / 2,

        D_B = 1/8 sum_k (mu_ik - mu_jk)^2 / sigma_k^2
              + 1/2 sum_k log( sigma_k^2 / sqrt(sigma_ik^2 sigma_jk^2) ),
        BC  = exp(-D_B),       GBC = - sum_{i != j} BC(i, j)   (ordered pairs; <= 0).

    Every class needs at least 2 samples; a variance of zero is floored at 1e-12 times the
    mean variance.
    """
    x, codes, counts = _classes(features, labels, "gbc", min_per_class=2)
    if isinstance(dims, bool) or dims < 1:
        raise ValueError(f"dims must be an integer >= 1; got {dims!r}")
    z = _pca(x, dims=min(dims, x.shape[1]))
    c = counts.shape[0]
    means = np.zeros((c, z.shape[1]))
    np.add.at(means, codes, z)
    means /= counts[:, None]
    var = np.zeros_like(means)
    np.add.at(var, codes, (z - means[codes]) ** 2)
    var /= counts[:, None]
    var = np.maximum(var, 1e-12 * max(float(np.mean(np.var(z, axis=0))), 1e-300))
    log_var = np.log(var)
    total = 0.0
    for i in range(c - 1):  # class i against every later class at once
        s = 0.5 * (var[i] + var[i + 1:])
        db = (0.125 * np.sum((means[i] - means[i + 1:]) ** 2 / s, axis=1)
              + 0.5 * np.sum(np.log(s) - 0.5 * (log_var[i] + log_var[i + 1:]), axis=1))
        total += 2.0 * float(np.sum(np.exp(-db)))
    return -total


# --- TransRate ---------------------------------------------------------------------------------


def _coding_rate(z: np.ndarray, eps: float) -> float:
    """R(Z, eps) = 1/2 log det(I_d + d / (n eps^2) Z^T Z), through Z's singular values."""
    n, d = z.shape
    s = np.linalg.svd(z, compute_uv=False)
    return 0.5 * float(np.sum(np.log1p(d / (n * eps * eps) * s * s)))


def transrate(features: np.ndarray, labels: np.ndarray, *, eps: float = 1e-4) -> float:
    """TransRate (Huang et al., ICML 2022): the coding-rate gain of knowing the labels.

    With Z the features centred over the samples (n, d) and Z_c the rows of class c,

        R(Z, eps)     = 1/2 log det(I_d + d / (n eps^2) Z^T Z)
        R(Z, eps | Y) = sum_c (n_c / n) 1/2 log det(I_d + d / (n_c eps^2) Z_c^T Z_c)
        TransRate     = R(Z, eps) - R(Z, eps | Y).

    The score depends on the scale of the features relative to ``eps`` (as in the paper).
    """
    x, codes, counts = _classes(features, labels, "transrate")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0; got {eps!r}")
    z = x - x.mean(axis=0)
    n = z.shape[0]
    conditional = sum((counts[c] / n) * _coding_rate(z[codes == c], eps)
                      for c in range(counts.shape[0]))
    return _coding_rate(z, eps) - float(conditional)


# --- shrinkage H-score -------------------------------------------------------------------------


def ledoit_wolf_shrinkage(centred: np.ndarray) -> float:
    """The Ledoit-Wolf (2004) optimal shrinkage of S = Z^T Z / n towards mu I (mu = tr S / d):
    min(b^2, d^2) / d^2 with d^2 = |S - mu I|_F^2 and
    b^2 = 1/n^2 sum_i |z_i z_i^T - S|_F^2 = (sum_i |z_i|^4 - n |S|_F^2) / n^2."""
    n, d = centred.shape
    s = centred.T @ centred / n
    mu = float(np.trace(s)) / d
    dist = float(np.sum(s * s)) - 2 * mu * float(np.trace(s)) + mu * mu * d
    if dist <= 0:
        return 0.0
    b2 = (float(np.sum(np.sum(centred * centred, axis=1) ** 2)) - n * float(np.sum(s * s)))
    return min(max(b2 / (n * n), 0.0), dist) / dist


def shrinkage_h_score(features: np.ndarray, labels: np.ndarray, *,
                      shrinkage: float | None = None) -> float:
    """The shrinkage H-score (Ibrahim, Ponomareva, Mazumder 2022).

    With cov(f) and cov(g) as in :func:`h_score`, alpha the Ledoit-Wolf shrinkage
    (:func:`ledoit_wolf_shrinkage`, or ``shrinkage`` when given) and mu = tr cov(f) / d,

        H_alpha(f) = tr( ((1 - alpha) cov(f) + alpha mu I)^-1 (1 - alpha) cov(g) ).

    alpha = 0 is the plain H-score; unlike it, H_alpha does not saturate at C - 1 when the
    features outnumber the samples.
    """
    x, codes, counts = _classes(features, labels, "shrinkage_h_score")
    if shrinkage is not None and not (0 <= shrinkage < 1):
        raise ValueError(f"shrinkage must be in [0, 1); got {shrinkage!r}")
    n, d = x.shape
    f = x - x.mean(axis=0)
    alpha = ledoit_wolf_shrinkage(f) if shrinkage is None else float(shrinkage)
    if alpha == 0:
        return h_score(x, codes)
    cov_f = f.T @ f / n
    mu = float(np.trace(cov_f)) / d
    sums = np.zeros((counts.shape[0], d))
    np.add.at(sums, codes, f)
    means = sums / counts[:, None]
    cov_g = (means.T * (counts / n)) @ means
    shrunk = (1 - alpha) * cov_f
    shrunk[np.diag_indices(d)] += alpha * mu
    return float(np.trace(np.linalg.solve(shrunk, (1 - alpha) * cov_g)))


# --- the registry ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Baseline:
    """One score: ``needs`` is "features" (features and labels/targets) or "probabilities"
    (the source model's class probabilities and labels); ``tasks`` those it is defined on."""

    name: str
    needs: str
    tasks: tuple[str, ...]
    reference: str
    classification: Callable[..., Any] | None = None
    regression: Callable[..., float] | None = None


_CLS = ("classification",)
BASELINES: dict[str, Baseline] = {b.name: b for b in (
    Baseline("logme", "features", ("classification", "regression"), "You et al., ICML 2021",
             logme, logme_regression),
    Baseline("leep", "probabilities", _CLS, "Nguyen et al., ICML 2020", leep),
    Baseline("nce", "probabilities", _CLS, "Tran et al., ICCV 2019",
             lambda p, y: nce(np.argmax(p, axis=1), y)),
    Baseline("h_score", "features", _CLS, "Bao et al., ICIP 2019", h_score),
    Baseline("nleep", "features", _CLS, "Li et al., CVPR 2021", nleep),
    Baseline("sfda", "features", _CLS, "Shao et al., ECCV 2022", sfda),
    Baseline("ncti", "features", _CLS, "Wang et al., CVPR 2023", ncti_terms),
    Baseline("gbc", "features", _CLS, "Pandy et al., CVPR 2022", gbc),
    Baseline("transrate", "features", _CLS, "Huang et al., ICML 2022", transrate),
    Baseline("shrinkage_h_score", "features", _CLS, "Ibrahim et al., 2022", shrinkage_h_score),
)}
#: What ``baselines=True`` (the request's old boolean) computes.
LEGACY = ("logme", "leep", "nce", "h_score")


def baseline_names() -> list[str]:
    """Every baseline name, in the registry's order."""
    return list(BASELINES)


def resolve_baselines(names: Iterable[str] | str | None) -> tuple[str, ...]:
    """The registry names asked for: a comma list or names, ``all`` meaning every one;
    an unknown name is refused, naming the valid ones."""
    if names is None:
        return ()
    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[str] = []
    for raw in items:
        if not isinstance(raw, str):
            raise UnknownBaselineError(f"baseline names must be strings; got {raw!r}")
        name = raw.strip().lower()
        if not name:
            continue
        if name == "all":
            out.extend(BASELINES)
        elif name in BASELINES:
            out.append(name)
        else:
            raise UnknownBaselineError(f"unknown baseline {raw.strip()!r}; valid names: "
                                       f"{', '.join(BASELINES)} (or all)")
    return tuple(dict.fromkeys(out))


def compute_baselines(names: Sequence[str], features: np.ndarray, labels: Any = None,
                      targets: Any = None, probabilities: np.ndarray | None = None
                      ) -> dict[str, float | None]:
    """The named scores of one representation: ``None`` where a score is not defined (a
    regression target, or no source probabilities). NCTI also records its three terms as
    ``ncti.vc``, ``ncti.seli``, ``ncti.ncc`` for :func:`combine_across_models`."""
    task = "classification" if labels is not None else "regression"
    y = labels if labels is not None else targets
    theta = _as_probabilities(probabilities) if probabilities is not None else None
    out: dict[str, float | None] = {}
    for name in resolve_baselines(names):
        b = BASELINES[name]
        fn = b.classification if task == "classification" else b.regression
        if fn is None or (b.needs == "probabilities" and theta is None):
            out[name] = None
            continue
        value = fn(theta if b.needs == "probabilities" else features, y)
        if isinstance(value, Mapping):
            out.update({f"{name}.{k}": float(v) for k, v in value.items()})
            value = value["seli"] + value["ncc"] - value["vc"]
        out[name] = float(value)
    return out
