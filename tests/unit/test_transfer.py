"""Transferability scores (LogME, LEEP, NCE, H-score) against worked examples computed here by
another route: exact fractions by hand, explicit loops with dict counting, a matrix-inverse
evaluation of the definitions, and a brute-force grid maximisation of the LogME evidence.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable
from fractions import Fraction as Fr

import numpy as np
import pytest

from layerscope.server.metrics.transfer import (
    h_score,
    leep,
    logme,
    logme_regression,
    nce,
    transferability_scores,
)

# --- NCE ------------------------------------------------------------------------------------------


def nce_by_counting(source: list[int], target: list[int]) -> float:
    """-H(Y|Z) = sum_{y,z} P(y,z) log P(y|z), by dict counting and exact fractions."""
    n = len(target)
    pairs = Counter(zip(target, source, strict=True))
    per_z = Counter(source)
    total = 0.0
    for (_y, z), count in pairs.items():
        p_joint = Fr(count, n)
        p_cond = Fr(count, per_z[z])
        total += float(p_joint) * math.log(p_cond)
    return total


def test_nce_worked_example_by_hand() -> None:
    z = [0, 0, 0, 1, 1, 2]
    y = [0, 0, 1, 1, 1, 0]
    # joint counts: (y0,z0)=2, (y1,z0)=1, (y1,z1)=2, (y0,z2)=1; #z0=3, #z1=2, #z2=1
    expected = (
        float(Fr(2, 6)) * math.log(Fr(2, 3))
        + float(Fr(1, 6)) * math.log(Fr(1, 3))
        + float(Fr(2, 6)) * math.log(Fr(2, 2))
        + float(Fr(1, 6)) * math.log(Fr(1, 1))
    )
    assert nce(np.array(z), np.array(y)) == pytest.approx(expected, rel=1e-12)
    assert nce_by_counting(z, y) == pytest.approx(expected, rel=1e-12)


def test_nce_matches_counting_on_random_labels() -> None:
    rng = np.random.default_rng(1)
    z = rng.integers(0, 5, size=40)
    y = rng.integers(0, 3, size=40) + 10  # non-contiguous class values
    assert nce(z, y) == pytest.approx(nce_by_counting(z.tolist(), y.tolist()), rel=1e-12)


def test_nce_is_non_positive_and_zero_when_source_determines_target() -> None:
    rng = np.random.default_rng(2)
    for _ in range(5):
        z = rng.integers(0, 6, size=30)
        y = rng.integers(0, 4, size=30)
        assert nce(z, y) <= 0.0
    z = rng.integers(0, 6, size=30)
    assert nce(z, (z * 7) % 3) == 0.0  # several source labels may share one target label
    assert nce(z, np.zeros(30, dtype=int)) == 0.0


# --- LEEP -----------------------------------------------------------------------------------------


def leep_by_loops(theta: list[list[Fr]], target: list[int]) -> float:
    """LEEP from the definition with explicit loops over samples and classes."""
    n = len(target)
    n_src = len(theta[0])
    joint: defaultdict[tuple[int, int], Fr] = defaultdict(Fr)
    for row, y in zip(theta, target, strict=True):
        for z in range(n_src):
            joint[(y, z)] += row[z] / n
    p_z = [sum((joint[(y, z)] for y in set(target)), Fr(0)) for z in range(n_src)]
    total = 0.0
    for row, y in zip(theta, target, strict=True):
        eep = Fr(0)
        for z in range(n_src):
            if p_z[z] > 0:
                eep += joint[(y, z)] / p_z[z] * row[z]
        total += math.log(eep)
    return total / n


def test_leep_worked_example_by_hand() -> None:
    theta = [[Fr(1, 2), Fr(1, 2)], [Fr(1, 4), Fr(3, 4)], [Fr(1), Fr(0)]]
    y = [0, 1, 0]
    # n P(y,z): y0 -> (3/2, 1/2), y1 -> (1/4, 3/4); n P(z) = (7/4, 5/4)
    # P(y|z): P(0|z0)=6/7, P(1|z0)=1/7, P(0|z1)=2/5, P(1|z1)=3/5
    # EEP per sample: 6/7*1/2 + 2/5*1/2 = 22/35; 1/7*1/4 + 3/5*3/4 = 17/35; 6/7*1 = 30/35
    expected = (math.log(Fr(22, 35)) + math.log(Fr(17, 35)) + math.log(Fr(30, 35))) / 3
    probs = np.array([[float(p) for p in row] for row in theta])
    assert leep(probs, np.array(y)) == pytest.approx(expected, rel=1e-12)
    assert leep_by_loops(theta, y) == pytest.approx(expected, rel=1e-12)


def test_leep_matches_loops_on_random_probabilities() -> None:
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, size=(25, 4))
    counts[:, 0] += 1  # every row has some mass
    counts[:, 3] = 0  # a source class nobody predicts
    theta = [[Fr(int(c), int(row.sum())) for c in row] for row in counts]
    y = rng.integers(0, 3, size=25)
    probs = counts / counts.sum(axis=1, keepdims=True)
    assert leep(probs, y) == pytest.approx(leep_by_loops(theta, y.tolist()), rel=1e-12)


def test_leep_is_non_positive() -> None:
    rng = np.random.default_rng(4)
    for _ in range(5):
        logits = rng.normal(size=(50, 7)) * 3
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        assert leep(probs, rng.integers(0, 4, size=50)) <= 0.0


def test_leep_on_one_hot_probabilities_equals_nce() -> None:
    rng = np.random.default_rng(5)
    z = rng.integers(0, 5, size=40)
    y = rng.integers(0, 3, size=40)
    assert leep(np.eye(5)[z], y) == pytest.approx(nce(z, y), rel=1e-12)


# --- H-score --------------------------------------------------------------------------------------


def h_score_by_definition(x: np.ndarray, labels: np.ndarray) -> float:
    """tr(cov(f)^-1 cov(E[f|y])) with per-class loops and an explicit inverse."""
    n, d = x.shape
    f = x - x.mean(axis=0)
    cov_f = np.zeros((d, d))
    for i in range(n):
        cov_f += np.outer(f[i], f[i]) / n
    g = np.zeros_like(f)
    for c in set(labels.tolist()):
        members = [i for i in range(n) if labels[i] == c]
        mean = sum((f[i] for i in members), np.zeros(d)) / len(members)
        for i in members:
            g[i] = mean
    cov_g = np.zeros((d, d))
    for i in range(n):
        cov_g += np.outer(g[i], g[i]) / n
    return float(np.trace(np.linalg.inv(cov_f) @ cov_g))


def test_h_score_worked_example_by_hand() -> None:
    # f = (0, 2, 4, 6) centres to (-3, -1, 1, 3): var = 20/4 = 5; class means -2, 2: var 4
    x = np.array([[0.0], [2.0], [4.0], [6.0]])
    assert h_score(x, np.array([0, 0, 1, 1])) == pytest.approx(4 / 5, rel=1e-12)


def test_h_score_matches_definition() -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=60)
    x = rng.normal(size=(60, 4)) + labels[:, None] * np.array([1.0, -0.5, 0.0, 0.3])
    assert h_score(x, labels) == pytest.approx(h_score_by_definition(x, labels), rel=1e-10)


def test_h_score_is_invariant_to_an_invertible_linear_map() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 4, size=80)
    x = rng.normal(size=(80, 5)) + labels[:, None]
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    a = q @ np.diag([0.5, 1.0, 2.0, 3.0, 4.0]) @ q.T + 0.3 * rng.normal(size=(5, 5))
    assert abs(np.linalg.det(a)) > 1e-3
    assert h_score(x @ a, labels) == pytest.approx(h_score(x, labels), rel=1e-9)
    # a duplicated feature makes the covariance singular; the pseudo-inverse ignores it
    dup = np.hstack([x, x[:, :1]])
    assert h_score(dup, labels) == pytest.approx(h_score(x, labels), rel=1e-8)
    assert 0.0 <= h_score(x, labels) <= 3.0 + 1e-12  # at most classes - 1


# --- LogME ----------------------------------------------------------------------------------------


def log_evidence_grid(
    x: np.ndarray, y: np.ndarray, alphas: np.ndarray, betas: np.ndarray
) -> np.ndarray:
    """log p(y | F, alpha, beta) / n on a grid, straight from the formula (no SVD)."""
    n, d = x.shape
    a, b = np.meshgrid(alphas, betas, indexing="ij")
    a, b = a.ravel(), b.ravel()
    big_a = a[:, None, None] * np.eye(d) + b[:, None, None] * (x.T @ x)
    rhs = np.broadcast_to(x.T @ y, (a.size, d))[..., None]
    m = b[:, None] * np.linalg.solve(big_a, rhs)[..., 0]
    resid = ((y[None, :] - m @ x.T) ** 2).sum(axis=1)
    _, logdet = np.linalg.slogdet(big_a)
    ev = (
        n / 2 * np.log(b)
        + d / 2 * np.log(a)
        - n / 2 * np.log(2 * np.pi)
        - b / 2 * resid
        - a / 2 * (m * m).sum(axis=1)
        - logdet / 2
    )
    return (ev / n).reshape(alphas.size, betas.size)


def brute_force_max(x: np.ndarray, y: np.ndarray) -> float:
    """Coarse log grid over (alpha, beta), then a fine grid around the coarse maximum."""
    coarse = np.logspace(-4, 4, 401)
    ev = log_evidence_grid(x, y, coarse, coarse)
    i, j = np.unravel_index(int(np.argmax(ev)), ev.shape)
    assert 0 < i < coarse.size - 1 and 0 < j < coarse.size - 1, "maximum on the grid's edge"
    fine_a = np.logspace(np.log10(coarse[i - 1]), np.log10(coarse[i + 1]), 201)
    fine_b = np.logspace(np.log10(coarse[j - 1]), np.log10(coarse[j + 1]), 201)
    return float(log_evidence_grid(x, y, fine_a, fine_b).max())


def test_logme_regression_reaches_the_brute_force_maximum() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(size=(12, 2))
    y = x @ np.array([1.5, -0.7]) + 0.5 * rng.normal(size=12)
    best = brute_force_max(x, y)
    got = logme_regression(x, y)
    assert got >= best - 1e-9
    assert got - best < 1e-6


def test_logme_classification_reaches_the_brute_force_maximum_per_column() -> None:
    rng = np.random.default_rng(9)
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1, 0])
    x = rng.normal(size=(10, 2)) + labels[:, None] * np.array([1.0, 0.5]) + 0.5
    columns = [(labels == c).astype(float) for c in (0, 1)]
    best = float(np.mean([brute_force_max(x, col) for col in columns]))
    got = logme(x, labels)
    assert got >= best - 1e-9
    assert got - best < 1e-6
    # classification is the regression score of the one-hot columns
    assert got == pytest.approx(logme_regression(x, np.stack(columns, axis=1)), rel=1e-12)


def test_logme_prefers_features_that_separate_the_classes() -> None:
    rng = np.random.default_rng(10)
    labels = np.repeat(np.arange(3), 40)
    separating = np.eye(3)[labels] * 4 + 0.3 * rng.normal(size=(120, 3))
    separating = np.hstack([separating, rng.normal(size=(120, 5))])
    noise = rng.normal(size=(120, 8))
    assert logme(separating, labels) > logme(noise, labels)


def test_logme_handles_more_features_than_samples_and_rank_deficiency() -> None:
    rng = np.random.default_rng(11)
    labels = np.arange(6) % 2
    wide = rng.normal(size=(6, 20))
    assert np.isfinite(logme(wide, labels))
    deficient = np.hstack([wide[:, :3], wide[:, :3]])
    assert np.isfinite(logme(deficient, labels))
    # degenerate targets: an exact linear fit (beta -> inf) and an all-zero column
    x = rng.normal(size=(30, 3))
    assert np.isfinite(logme_regression(x, x @ np.array([1.0, 2.0, 3.0])))
    assert np.isfinite(logme_regression(x, np.zeros(30)))


# --- all together ---------------------------------------------------------------------------------


def test_transferability_scores_collects_the_four_scores() -> None:
    rng = np.random.default_rng(12)
    labels = rng.integers(0, 3, size=30)
    x = rng.normal(size=(30, 4)) + labels[:, None]
    logits = rng.normal(size=(30, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    before = (x.copy(), labels.copy(), probs.copy())
    out = transferability_scores(x, labels, probs)
    assert set(out) == {"logme", "leep", "nce", "h_score"}
    assert out["logme"] == logme(x, labels)
    assert out["h_score"] == h_score(x, labels)
    assert out["leep"] == leep(probs, labels)
    assert out["nce"] == nce(np.argmax(probs, axis=1), labels)
    for a, b in zip(before, (x, labels, probs), strict=True):
        np.testing.assert_array_equal(a, b)
    without = transferability_scores(x, labels)
    assert without["leep"] is None and without["nce"] is None
    assert without["logme"] == out["logme"]


# --- validation -----------------------------------------------------------------------------------

X = np.arange(12.0).reshape(6, 2)
Y = np.array([0, 1, 0, 1, 0, 1])
P = np.full((6, 3), 1 / 3)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: logme(X[:, 0], Y), "features must be a 2-D"),
        (lambda: logme(X.reshape(6, 2, 1), Y), "features must be a 2-D"),
        (lambda: logme(np.where(X == 3, np.nan, X), Y), "features contains 1 non-finite"),
        (lambda: logme(X.astype(str), Y), "features must be a numeric"),
        (lambda: logme(X[:1], Y[:1]), "features must hold at least 2"),
        (lambda: logme(X, Y.astype(float)), "labels must be an integer"),
        (lambda: logme(X, Y[:5]), "labels has 5 entries but features has 6"),
        (lambda: logme(X, Y, max_iter=0), "max_iter must be"),
        (lambda: logme(X, Y, tol=-1.0), "tol must be"),
        (lambda: logme_regression(X, np.ones(5)), "targets has 5 rows"),
        (lambda: logme_regression(X, np.full(6, np.inf)), "targets contains 6 non-finite"),
        (lambda: h_score(X, Y[:4]), "labels has 4 entries but features has 6"),
        (lambda: h_score(np.full((6, 2), np.inf), Y), "features contains"),
        (lambda: leep(P[:, 0], Y), "probabilities must be a 2-D"),
        (lambda: leep(P - 0.5, Y), "probabilities must be non-negative"),
        (lambda: leep(P * 2, Y), "probabilities rows must sum to 1"),
        (lambda: leep(P, Y[:3]), "labels has 3 entries but probabilities has 6"),
        (lambda: leep(P, Y * 1.0), "labels must be an integer"),
        (lambda: nce(Y.astype(float), Y), "source_labels must be an integer"),
        (lambda: nce(Y, Y[:2]), "labels has 2 entries but source_labels has 6"),
        (lambda: nce(Y[:0], Y[:0]), "source_labels is empty"),
        (lambda: transferability_scores(X, Y, P[:4]), "probabilities has 4 rows"),
    ],
)
def test_bad_input_is_refused_with_a_message_naming_the_argument(
    call: Callable[[], object], pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        call()
