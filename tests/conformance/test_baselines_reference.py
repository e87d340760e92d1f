"""Transferability baselines against independent references: SFDA's Fisher classifier against
scikit-learn's shrinkage LDA, NLEEP's mixture against scikit-learn's GaussianMixture and PCA,
GBC's closed-form Bhattacharyya coefficients against numerical integration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerscope.server.metrics import baselines as B

sklearn = pytest.importorskip("sklearn", reason="scikit-learn is the reference")


def overlapping(n: int = 240, c: int = 3, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    return rng.normal(size=(c, d))[y] * 2.5 + rng.normal(size=(n, d)), y


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.9])
def test_sfda_fisher_probabilities_equal_scikit_learns_shrinkage_lda(lam: float) -> None:
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    x, y = overlapping()
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    got, used = B._fisher_probabilities(x, codes, counts, 1.0, lam)
    assert used == lam
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage=lam).fit(x, y)
    # the top C-1 Fisher directions carry every difference between the classes, so the
    # projected classifier equals LDA with the full shrunk covariance
    np.testing.assert_allclose(got, lda.predict_proba(x), atol=1e-8)


def test_nleep_equals_leep_of_scikit_learns_mixture_on_its_pca() -> None:
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    from layerscope.server.metrics.transfer import leep

    x, y = overlapping(n=300, d=6, seed=4)
    z = PCA(n_components=0.8, svd_solver="full").fit_transform(x)
    gm = GaussianMixture(n_components=3, covariance_type="full", reg_covar=1e-6 * np.mean(
        np.var(z, axis=0)), tol=1e-8, max_iter=1000, n_init=5, random_state=0).fit(z)
    want = leep(gm.predict_proba(z), y)
    assert B.nleep(x, y, components_per_class=1) == pytest.approx(want, abs=2e-3)


def test_gbc_equals_numerically_integrated_bhattacharyya_coefficients() -> None:
    from scipy import integrate, stats

    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], [30, 40, 50])
    x = (np.array([0.0, 1.0, 3.0])[y] + rng.normal(size=120) * np.array([0.7, 1.0, 1.6])[y])
    x = x[:, None]
    z = x[:, 0] - x[:, 0].mean()  # the PCA of one feature: the centred feature
    mu = [z[y == c].mean() for c in range(3)]
    sd = [z[y == c].std() for c in range(3)]
    total = 0.0
    for i in range(3):
        for j in range(3):
            if i != j:
                bc, _ = integrate.quad(lambda t, i=i, j=j: math.sqrt(
                    stats.norm.pdf(t, mu[i], sd[i]) * stats.norm.pdf(t, mu[j], sd[j])),
                    -30, 30, epsabs=1e-12, limit=200)
                total += bc
    assert B.gbc(x, y) == pytest.approx(-total, rel=1e-7)
