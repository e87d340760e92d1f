"""The stronger transferability baselines (NLEEP, SFDA, NCTI, GBC, TransRate, shrinkage H-score)
and the registry, against worked examples and properties derived here independently: direct
log-determinants, hand-written Bhattacharyya distances, scikit-learn's Ledoit-Wolf, and the
invariances each paper implies.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from layerscope.server.metrics import baselines as B
from layerscope.server.metrics.transfer import h_score


def blobs(n: int = 300, c: int = 4, d: int = 16, spread: float = 6.0, seed: int = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = rng.normal(size=(c, d)) * spread
    return centres[y] + rng.normal(size=(n, d)), y


def noise(n: int = 300, c: int = 4, d: int = 16, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % c


# --- TransRate ---------------------------------------------------------------------------------


def rate_by_slogdet(z: np.ndarray, eps: float) -> float:
    n, d = z.shape
    sign, logdet = np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * z.T @ z)
    assert sign > 0
    return 0.5 * logdet


@pytest.mark.parametrize("eps", [1e-4, 0.5])
def test_transrate_equals_a_direct_log_det_computation(eps: float) -> None:
    x, y = blobs(n=90, c=3, d=7)
    z = x - x.mean(axis=0)
    cond = sum((np.sum(y == c) / len(y)) * rate_by_slogdet(z[y == c], eps) for c in range(3))
    expected = rate_by_slogdet(z, eps) - cond
    assert B.transrate(x, y, eps=eps) == pytest.approx(expected, rel=1e-9)


def test_transrate_is_higher_for_class_structured_features() -> None:
    assert B.transrate(*blobs(), eps=0.5) > B.transrate(*noise(), eps=0.5)


# --- GBC ---------------------------------------------------------------------------------------


def test_gbc_of_a_one_dimensional_pair_is_the_hand_written_bhattacharyya_coefficient() -> None:
    a = np.array([0.0, 1.0, 2.0, 3.0])  # mean 1.5, var 1.25
    b = np.array([4.0, 6.0, 8.0])  # mean 6, var 8/3
    x = np.concatenate([a, b])[:, None]
    y = np.array([0] * 4 + [1] * 3)
    # PCA of one feature is the centred feature: the same means difference and variances
    s = (1.25 + 8 / 3) / 2
    db = (1.5 - 6) ** 2 / (8 * s) + 0.5 * math.log(s / math.sqrt(1.25 * 8 / 3))
    assert B.gbc(x, y) == pytest.approx(-2 * math.exp(-db), rel=1e-12)


def test_gbc_is_minus_c_times_c_minus_1_for_identical_class_distributions() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 5))
    x = np.concatenate([base, base, base])  # every class holds the very same samples
    y = np.repeat([0, 1, 2], 40)
    assert B.gbc(x, y) == pytest.approx(-6.0, abs=1e-9)


def test_gbc_of_well_separated_classes_is_near_zero_and_above_overlapping_ones() -> None:
    sep = B.gbc(*blobs(spread=50.0))
    assert -1e-6 < sep <= 0
    assert sep > B.gbc(*noise())


def test_gbc_needs_two_samples_per_class() -> None:
    x = np.arange(10.0).reshape(5, 2)
    with pytest.raises(ValueError, match="at least 2 samples of every class"):
        B.gbc(x, np.array([0, 0, 0, 0, 1]))


# --- shrinkage H-score -------------------------------------------------------------------------


def test_ledoit_wolf_shrinkage_equals_scikit_learns() -> None:
    covariance = pytest.importorskip("sklearn.covariance", reason="scikit-learn is the reference")
    x, _ = blobs(n=60, d=30)
    f = x - x.mean(axis=0)
    _, expected = covariance.ledoit_wolf(x)
    assert B.ledoit_wolf_shrinkage(f) == pytest.approx(expected, rel=1e-9)


def test_shrinkage_h_score_tends_to_the_plain_h_score_as_shrinkage_tends_to_zero() -> None:
    x, y = blobs(d=8)
    assert B.shrinkage_h_score(x, y, shrinkage=0.0) == pytest.approx(h_score(x, y), rel=1e-12)
    assert B.shrinkage_h_score(x, y, shrinkage=1e-9) == pytest.approx(h_score(x, y), rel=1e-6)


def test_shrinkage_h_score_does_not_saturate_at_c_minus_1_on_wide_features() -> None:
    good, y = blobs(n=40, c=4, d=400, spread=1.0)
    bad, _ = noise(n=40, c=4, d=400)
    # with more features than samples the plain H-score is C - 1 whatever the features
    assert h_score(good, y) == pytest.approx(3.0, rel=1e-6)
    assert h_score(bad, y) == pytest.approx(3.0, rel=1e-6)
    sg, sb = B.shrinkage_h_score(good, y), B.shrinkage_h_score(bad, y)
    assert sb < sg < 3.0 - 1e-3


# --- NLEEP -------------------------------------------------------------------------------------


def test_nleep_is_zero_on_perfectly_clustered_data() -> None:
    x, y = blobs(n=200, c=4, d=6, spread=200.0)
    assert B.nleep(x, y, components_per_class=1) == pytest.approx(0.0, abs=1e-9)
    assert B.nleep(x, y) == pytest.approx(0.0, abs=1e-9)  # 5 components per class, still pure


def test_nleep_ranks_clustered_features_above_noise_and_is_at_most_zero() -> None:
    good, bad = B.nleep(*blobs(spread=3.0)), B.nleep(*noise())
    assert bad < good <= 1e-12
    assert bad == pytest.approx(-math.log(4), abs=0.3)  # labels independent of the clusters


def test_nleep_is_invariant_to_label_permutation_and_feature_scaling() -> None:
    x, y = blobs(spread=1.5)
    ref = B.nleep(x, y)
    perm = np.array([2, 0, 3, 1])
    assert B.nleep(x, perm[y] + 10) == pytest.approx(ref, abs=1e-9)
    assert B.nleep(x * 1000.0, y) == pytest.approx(ref, abs=1e-6)


def test_nleep_is_deterministic_for_a_seed() -> None:
    x, y = blobs(spread=1.0)
    assert B.nleep(x, y, seed=7) == B.nleep(x, y, seed=7)


# --- SFDA --------------------------------------------------------------------------------------


def test_sfda_is_one_on_separable_classes_and_lower_on_noise() -> None:
    good = B.sfda(*blobs(spread=20.0))
    assert good == pytest.approx(1.0, abs=1e-6)
    assert B.sfda(*noise()) < 0.6 < good


def test_sfda_is_invariant_to_label_permutation() -> None:
    x, y = blobs(spread=1.0)
    perm = np.array([3, 1, 0, 2])
    assert B.sfda(x, perm[y]) == pytest.approx(B.sfda(x, y), rel=1e-9)


def test_sfda_is_a_probability_average() -> None:
    s = B.sfda(*blobs(spread=0.5))
    assert 0.0 < s < 1.0


# --- NCTI --------------------------------------------------------------------------------------


def test_ncti_terms_on_collapsed_features() -> None:
    # every sample sits on its class mean plus a tiny jitter: variability ~ 0, NCC ~ certain
    x, y = blobs(n=120, c=3, d=5, spread=10.0)
    centres = np.array([x[y == c].mean(axis=0) for c in range(3)])
    collapsed = centres[y] + 1e-6 * np.random.default_rng(0).normal(size=x.shape)
    t = B.ncti_terms(collapsed, y)
    assert t["vc"] < 1e-9
    assert t["ncc"] == pytest.approx(0.0, abs=1e-9)
    assert 1.0 <= t["seli"] <= math.sqrt(3) + 1e-9
    loose = B.ncti_terms(*noise(n=120, c=3, d=5))
    assert loose["vc"] > 1.0 and loose["ncc"] < -0.5


def test_ncti_within_class_variability_is_papyans_nc1_written_out() -> None:
    x, y = blobs(n=60, c=3, d=3, spread=2.0)  # d = C: the PCA keeps every dimension
    z = x - x.mean(axis=0)
    mu = np.array([z[y == c].mean(axis=0) for c in range(3)])
    sw = sum(np.outer(z[i] - mu[y[i]], z[i] - mu[y[i]]) for i in range(60)) / 60
    sb = sum(np.outer(mu[c], mu[c]) * np.mean(y == c) for c in range(3))
    # PCA is a rotation here, which leaves tr(S_W S_B^+) unchanged
    assert B.ncti_terms(x, y)["vc"] == pytest.approx(np.trace(sw @ np.linalg.pinv(sb)) / 3,
                                                     rel=1e-6)


def test_ncti_across_models_is_the_sum_of_min_max_normalised_terms() -> None:
    rows: list[dict[str, float | None]] = [
        {"ncti.vc": 1.0, "ncti.seli": 1.0, "ncti.ncc": -2.0, "ncti": 0.0},
        {"ncti.vc": 3.0, "ncti.seli": 2.0, "ncti.ncc": -1.0, "ncti": 0.0},
        {"ncti.vc": 2.0, "ncti.seli": 1.5, "ncti.ncc": -1.5, "ncti": 0.0},
    ]
    B.combine_across_models(rows)
    assert [r["ncti"] for r in rows] == pytest.approx([0 + 0 - 0, 1 + 1 - 1, 0.5 + 0.5 - 0.5])


# --- degenerate input and the registry ----------------------------------------------------------

FEATURE_SCORES = [B.nleep, B.sfda, B.ncti, B.gbc, B.transrate, B.shrinkage_h_score]


@pytest.mark.parametrize("fn", FEATURE_SCORES, ids=lambda f: f.__name__)
def test_one_class_is_refused(fn) -> None:
    with pytest.raises(ValueError, match="at least 2 classes"):
        fn(np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10, dtype=int))


@pytest.mark.parametrize("fn", FEATURE_SCORES, ids=lambda f: f.__name__)
def test_no_more_samples_than_classes_is_refused(fn) -> None:
    with pytest.raises(ValueError, match="more samples than classes"):
        fn(np.random.default_rng(0).normal(size=(3, 3)), np.array([0, 1, 2]))


@pytest.mark.parametrize("fn", FEATURE_SCORES, ids=lambda f: f.__name__)
def test_non_finite_features_are_refused(fn) -> None:
    x, y = blobs(n=20)
    x[3, 2] = np.nan
    with pytest.raises(ValueError, match="features"):
        fn(x, y)


def test_resolve_baselines_expands_all_and_refuses_unknown_names() -> None:
    assert B.resolve_baselines("all") == tuple(B.BASELINES)
    assert B.resolve_baselines("gbc, nleep,gbc") == ("gbc", "nleep")
    with pytest.raises(B.UnknownBaselineError, match="unknown baseline 'logmee'.*sfda"):
        B.resolve_baselines(["logmee"])


def test_compute_baselines_gives_each_named_score_and_none_where_undefined() -> None:
    x, y = blobs(n=80)
    got = B.compute_baselines(["transrate", "leep", "ncti"], x, labels=y)
    assert got["transrate"] == pytest.approx(B.transrate(x, y))
    assert got["leep"] is None  # no source probabilities
    assert got["ncti"] == pytest.approx(B.ncti(x, y))
    reg = B.compute_baselines(["logme", "gbc"], x, targets=x[:, 0])
    assert reg["gbc"] is None and reg["logme"] is not None


def test_sfda_on_singular_within_class_scatter_ignores_its_null_directions():
    # Large features make lambda = exp(-sigma_max) vanish, so the regularised S_W keeps the
    # null directions of a constant column (or of fewer samples than features): the score
    # is that of the features without them, not a factorisation error.
    rng = np.random.default_rng(11)
    y = np.repeat(np.arange(3), 20)
    x = (rng.normal(size=(60, 5)) + y[:, None]) * 100.0
    with_constant = np.hstack([x, np.full((60, 1), 7.0)])
    base = B.sfda(x, y)
    assert np.isfinite(base)
    assert B.sfda(with_constant, y) == pytest.approx(base, rel=1e-9)
    wide = np.hstack([x, np.zeros((60, 80))])  # more features than samples
    assert B.sfda(wide, y) == pytest.approx(base, rel=1e-9)
