"""Confidence, guarantees, certified radii and regression error bounds (METRICS.md section 3).

Expected values are brute force in float64 (``helpers.rank``); soundness is checked by
perturbing queries (random directions and adversarial ones) and recomputing the nearest
neighbour by brute force.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import rank as H
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layerscope.server.metrics.guarantee import (
    ClassificationReference,
    RegressionReference,
    dataset_guarantee,
)

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
LABEL_VALUES = (-3, 0, 7, 12)
SHRINK = 1.0 - 1e-7  # "just below" a bound: far above float64 rounding of the distances


# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------


@st.composite
def cls_case(draw: st.DrawFn, min_per_class: int = 2) -> dict:
    """A labelled reference set on a 0.5 grid (clusters per label, so si is often 1),
    continuous float64 queries near it, and a seed for perturbations."""
    d = draw(st.sampled_from([2, 5]))
    k = draw(st.integers(1, 3))
    labels = draw(st.permutations(LABEL_VALUES))[:k]
    seed = draw(st.integers(0, 2**32 - 1))
    spread = draw(st.sampled_from([1, 2, 4]))
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for lab in labels:
        n = draw(st.integers(min_per_class, 6))
        centre = rng.integers(-3, 4, size=d) * 6
        xs.append(centre + rng.integers(-spread, spread + 1, size=(n, d)))
        ys.append(np.full(n, lab))
    x = np.concatenate(xs).astype(np.float64) * 0.5
    y = np.concatenate(ys).astype(np.int64)
    perm = rng.permutation(len(y))
    x, y = x[perm], y[perm]
    nq = draw(st.integers(1, 5))
    lo, hi = x.min(axis=0) - 2, x.max(axis=0) + 2
    q = rng.uniform(lo, hi, size=(nq, d))
    if draw(st.booleans()):  # a query on a reference point (dp == 0)
        q[0] = x[rng.integers(len(x))]
    return {"x": x.astype(np.float32), "y": y, "q": q, "seed": seed}


def brute_certify(x: np.ndarray, y: np.ndarray, q: np.ndarray) -> dict:
    d2 = H.sqdist(q, x)
    p = np.argmin(d2, axis=1)
    nn_label = y[p]
    dp = np.sqrt(d2[np.arange(len(q)), p])
    other = y[None, :] != nn_label[:, None]
    dn = np.sqrt(np.where(other, d2, np.inf).min(axis=1))
    return {"nn_index": p, "nn_label": nn_label, "dp": dp, "dn": dn,
            "certified_radius": 0.5 * (dn - dp)}


def unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n == 0, 1.0, n)


def perturbations(x: np.ndarray, y: np.ndarray, query: np.ndarray, p: int, norm: float,
                  rng: np.random.Generator, n_random: int = 40) -> np.ndarray:
    """Points query + delta, ||delta|| < norm: random directions with random norms, and for
    every reference point of another label than p's: toward it, and along (x_q - x_p)
    (the direction that closes the gap between the two fastest), at ``norm * SHRINK``."""
    d = len(query)
    dirs = unit(rng.standard_normal((n_random, d)))
    out = [query + dirs * (norm * SHRINK * rng.uniform(0, 1, (n_random, 1)))]
    out.append(query + dirs * (norm * SHRINK))
    others = np.asarray(x[y != y[p]], np.float64)
    if len(others):
        xp = np.asarray(x[p], np.float64)
        out.append(query + unit(others - query) * (norm * SHRINK))
        out.append(query + unit(others - xp) * (norm * SHRINK))
    return np.concatenate(out)


# ---------------------------------------------------------------------------------------
# Per-query certification, classification
# ---------------------------------------------------------------------------------------


@SETTINGS
@given(cls_case())
def test_certify_fields_equal_brute_force(case):
    x, y, q = case["x"], case["y"], case["q"]
    res = ClassificationReference(x, y).certify(q, 0.0)
    want = brute_certify(x, y, q)
    np.testing.assert_array_equal(res["nn_index"], want["nn_index"])
    np.testing.assert_array_equal(res["nn_label"], want["nn_label"])
    np.testing.assert_allclose(res["dp"], want["dp"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["dn"], want["dn"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(res["certified_radius"], want["certified_radius"], rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_array_equal(res["confidence"], np.full(len(q), H.si(x, y)))


@SETTINGS
@given(cls_case(), st.sampled_from([0.0, 0.3, 0.999, 1.0, 1.001, 5.0]), st.integers(1, 3))
def test_guarantee_follows_the_rule(case, fraction, order):
    """0 when the confidence index is not exactly 1; else sign(0.5 (dn - dp) - u). The
    uncertainty is taken as a fraction of a query's certified radius, 1.0 giving the
    equality case (guarantee 0)."""
    x, y, q = case["x"], case["y"], case["q"]
    if order >= len(y):
        order = 1
    ref = ClassificationReference(x, y)
    want = brute_certify(x, y, q)
    radius = float(ref.certify(q[:1], 0.0)["certified_radius"][0])
    u = fraction * radius if math.isfinite(radius) else fraction
    res = ref.certify(q, u, order=order)
    conf = H.si(x, y) if order == 1 else H.high_order_si(x, y, order)
    assert (res["confidence"] == conf).all()
    if conf != 1.0:
        expected = np.zeros(len(q), np.int64)
    else:
        expected = np.sign(0.5 * (want["dn"] - want["dp"]) - u).astype(np.int64)
        if fraction == 1.0 and math.isfinite(radius):
            expected[0] = 0  # u equal to the reported 0.5 (dn - dp): the equality case
    np.testing.assert_array_equal(res["guarantee"], expected)


@SETTINGS
@given(cls_case(), st.sampled_from([0.05, 0.5, 0.9, 0.999]))
def test_guarantee_plus_one_is_sound_under_perturbation(case, fraction):
    """Where guarantee == +1 at u, no perturbation shorter than u (random, toward each
    point of another label, or along the direction that closes the gap) changes the
    nearest-neighbour label."""
    x, y, q = case["x"], case["y"], case["q"]
    rng = np.random.default_rng(case["seed"])
    ref = ClassificationReference(x, y)
    radius = brute_certify(x, y, q)["certified_radius"]
    checked = 0
    for i in range(len(q)):
        u = fraction * radius[i] if math.isfinite(radius[i]) else 3.0
        res = ref.certify(q[i : i + 1], u)
        if res["guarantee"][0] != 1:
            continue
        p = int(res["nn_index"][0])
        moved = perturbations(x, y, q[i], p, u, rng)
        got = y[H.nearest(x, moved)]
        assert (got == res["nn_label"][0]).all(), (
            f"query {q[i]} certified at u={u} but a perturbation of norm < u changes the "
            f"nearest-neighbour label: {moved[got != res['nn_label'][0]][0]}")
        checked += 1
    if H.si(x, y) == 1.0:
        assert checked == sum(r > 0 for r in radius)


@SETTINGS
@given(cls_case())
def test_no_perturbation_below_the_certified_radius_changes_the_label(case):
    x, y, q = case["x"], case["y"], case["q"]
    rng = np.random.default_rng(case["seed"] + 1)
    res = ClassificationReference(x, y).certify(q, 0.0)
    for i in range(len(q)):
        r = float(res["certified_radius"][i])
        if not math.isfinite(r):
            r = 10.0
        if r <= 1e-6:  # within float64 rounding of the distances: nothing to check
            continue
        moved = perturbations(x, y, q[i], int(res["nn_index"][i]), r, rng)
        got = y[H.nearest(x, moved)]
        assert (got == res["nn_label"][i]).all(), (q[i], r)


def test_certified_radius_is_tight_along_the_gap_direction():
    """Two points: the bisector is exactly certified_radius away along x_q - x_p, so a
    perturbation a little longer than the radius in that direction flips the label."""
    x = np.array([[0.0, 0.0], [4.0, 0.0]], np.float32)
    y = np.array([1, 2])
    q = np.array([[1.0, 0.5]])
    res = ClassificationReference(x, y).certify(q, 0.0)
    assert res["certified_radius"][0] == pytest.approx(0.5 * (math.sqrt(9.25) - math.sqrt(1.25)))
    # distance of q to the bisector x = 2 is 1: a point past it is nearer to label 2
    assert y[H.nearest(x, q + np.array([[1.01, 0.0]]))][0] == 2


def test_single_label_reference_reports_infinite_dn_and_radius():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 3)).astype(np.float32)
    y = np.full(10, 4)
    q = rng.standard_normal((3, 3))
    res = ClassificationReference(x, y).certify(q, 100.0)
    assert np.isinf(res["dn"]).all() and (res["dn"] > 0).all()
    assert np.isinf(res["certified_radius"]).all() and (res["certified_radius"] > 0).all()
    assert (res["nn_label"] == 4).all()
    np.testing.assert_array_equal(res["guarantee"], [1, 1, 1])  # si == 1, dn infinite


def test_dn_is_found_beyond_many_same_label_neighbours():
    """The nearest point of another label may lie beyond the first 32 neighbours."""
    rng = np.random.default_rng(1)
    near = rng.uniform(-1, 1, size=(60, 2))
    far = rng.uniform(-1, 1, size=(5, 2)) + np.array([30.0, 0.0])
    x = np.concatenate([near, far]).astype(np.float32)
    y = np.array([0] * 60 + [9] * 5)
    q = np.array([[0.0, 0.0], [0.5, -0.5], [29.0, 0.0]])
    res = ClassificationReference(x, y).certify(q, 0.0)
    want = brute_certify(x, y, q)
    np.testing.assert_allclose(res["dn"], want["dn"], rtol=1e-12)
    np.testing.assert_array_equal(res["nn_label"], want["nn_label"])


def test_distances_are_decided_in_float64_for_float64_queries():
    """A float64 query a hair past the midpoint of two float32 reference points is nearer
    the second one (a float32 cast would make it a tie, won by the lower index)."""
    x = np.array([[0.0], [1.0]], np.float32)
    y = np.array([0, 1])
    res = ClassificationReference(x, y).certify(np.array([[0.5 + 1e-12]]), 0.0)
    assert res["nn_index"][0] == 1 and res["nn_label"][0] == 1


@pytest.mark.parametrize("u", [-0.1, math.inf, math.nan])
def test_certify_refuses_a_bad_uncertainty(u):
    x = np.array([[0.0], [1.0], [5.0]], np.float32)
    with pytest.raises(ValueError, match="uncertainty"):
        ClassificationReference(x, np.array([0, 0, 1])).certify(np.zeros((1, 1)), u)


def test_certify_refuses_queries_of_another_width_and_a_too_large_order():
    x = np.zeros((4, 3), np.float32) + np.arange(4)[:, None]
    ref = ClassificationReference(x, np.array([0, 0, 1, 1]))
    with pytest.raises(ValueError, match="features"):
        ref.certify(np.zeros((2, 2)), 0.0)
    with pytest.raises(ValueError, match="order"):
        ref.certify(np.zeros((2, 3)), 0.0, order=4)


# ---------------------------------------------------------------------------------------
# Dataset level
# ---------------------------------------------------------------------------------------


def brute_dataset(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    d2 = H.self_sqdist(x)
    same = y[:, None] == y[None, :]
    dw = float(np.sqrt(np.where(same, d2, np.inf).min(axis=1)).max())
    diff = ~same
    db = float(np.sqrt(d2[diff].min())) if diff.any() else math.inf
    return dw, db


@SETTINGS
@given(cls_case(), st.floats(0, 3))
def test_dataset_guarantee_equals_brute_force(case, u):
    x, y = case["x"], case["y"]
    res = dataset_guarantee(x, y, u)
    dw, db = brute_dataset(x, y)
    assert res["dw_max"] == pytest.approx(dw, rel=1e-12, abs=1e-12)
    if math.isinf(db):
        assert res["db_min"] is None and res["max_uncertainty"] is None
    else:
        assert res["db_min"] == pytest.approx(db, rel=1e-12, abs=1e-12)
        assert res["max_uncertainty"] == pytest.approx(0.5 * (db - dw), rel=1e-12, abs=1e-12)
    conf = H.si(x, y)
    assert res["confidence"] == conf
    expected = 0 if conf != 1.0 else int(np.sign(0.5 * (db - dw) - u))
    assert res["guarantee"] == expected


def test_dataset_guarantee_with_order_uses_high_order_si():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1]], np.float32)
    y = np.array([0, 0, 0, 1, 1])
    res = dataset_guarantee(x, y, 0.0, order=2)
    assert res["confidence_index"] == "high_order_si[2]"
    assert res["confidence"] == H.high_order_si(x, y, 2)  # 3/5: the pair's 2nd is far
    assert res["guarantee"] == 0


def test_dataset_guarantee_without_any_same_label_pair_is_infinite():
    """No class has two points: no point has a same-label neighbour, so dw_max is infinite
    (None, as the docstring says) and so is max_uncertainty; the guarantee is 0 (si = 0)."""
    x = np.array([[0.0], [1.0], [5.0]], np.float32)
    res = dataset_guarantee(x, np.array([0, 1, 2]), 0.0)
    assert res["confidence"] == 0.0 and res["guarantee"] == 0
    assert res["db_min"] == pytest.approx(1.0)
    assert res["dw_max"] is None, f"dw_max should be infinite (None); got {res['dw_max']}"
    assert res["max_uncertainty"] is None


# ---------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------


@st.composite
def reg_case(draw: st.DrawFn) -> dict:
    d = draw(st.sampled_from([2, 5]))
    m = draw(st.integers(4, 14))
    t = draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d)).astype(np.float32)
    targets = rng.standard_normal((m, t))
    q = rng.standard_normal((draw(st.integers(1, 3)), d)) * 1.2
    u = draw(st.sampled_from([0.05, 0.3, 1.0]))
    return {"x": x, "t": targets, "q": q, "u": u, "seed": seed}


def brute_alpha(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    nn = np.argmin(H.self_sqdist(x), axis=1)
    return np.sqrt(((t - t[nn]) ** 2).sum(axis=1))


def bound_over(members: np.ndarray, p: int, t: np.ndarray, alpha: np.ndarray) -> float:
    return float((np.sqrt(((t[members] - t[p]) ** 2).sum(axis=1)) + alpha[members]).max())


@SETTINGS
@given(reg_case())
def test_regression_alpha_equals_brute_force(case):
    ref = RegressionReference(case["x"], case["t"])
    np.testing.assert_allclose(ref.alpha, brute_alpha(case["x"], case["t"]), rtol=1e-12)
    assert ref.smi_linear == pytest.approx(H.smi_linear(case["x"], case["t"]), rel=1e-12)


@SETTINGS
@given(reg_case())
def test_regression_conservative_set_and_bound_equal_brute_force(case):
    x, t, q, u = case["x"], case["t"], case["q"], case["u"]
    ref = RegressionReference(x, t)
    res = ref.certify(q, u, mode="conservative")
    alpha = brute_alpha(x, t)
    d = np.sqrt(H.sqdist(q, x))
    for i in range(len(q)):
        p = int(np.argmin(d[i]))
        assert res["nn_index"][i] == p
        assert res["dp"][i] == pytest.approx(d[i, p], rel=1e-12)
        limit = d[i, p] + 2 * u
        members = set(res["members"][i].tolist())
        assert set(np.nonzero(d[i] < limit - 1e-9)[0].tolist()) <= members
        assert members <= set(np.nonzero(d[i] <= limit + 1e-9)[0].tolist())
        assert res["neighbourhood_size"][i] == len(members)
        want = bound_over(np.array(sorted(members)), p, t, alpha)
        assert res["error_bound"][i] == pytest.approx(want, rel=1e-12)
    assert res["mode"] == "conservative"
    np.testing.assert_array_equal(res["confidence"], np.full(len(q), H.smi_linear(x, t)))


@SETTINGS
@given(reg_case())
def test_regression_bound_is_sound_under_perturbation(case):
    """For x' with ||x' - x|| < u, the nearest point j' of x' is in both modes' sets and
    ||y_p - y_j'|| + alpha_j' <= error_bound; the exact set is inside the conservative one."""
    x, t, q, u = case["x"], case["t"], case["q"], case["u"]
    rng = np.random.default_rng(case["seed"])
    ref = RegressionReference(x, t)
    cons = ref.certify(q, u, mode="conservative")
    exact = ref.certify(q, u, mode="exact")
    alpha = brute_alpha(x, t)
    d = q.shape[1]
    for i in range(len(q)):
        p = int(cons["nn_index"][i])
        assert exact["nn_index"][i] == p
        ex, co = set(exact["members"][i].tolist()), set(cons["members"][i].tolist())
        assert ex <= co
        assert exact["neighbourhood_size"][i] == len(ex)
        assert exact["error_bound"][i] <= cons["error_bound"][i] * (1 + 1e-12)
        dirs = unit(rng.standard_normal((200, d)))
        radii = u * SHRINK * rng.uniform(0, 1, (200, 1)) ** (1 / d)
        toward = unit(np.asarray(x, np.float64) - q[i])
        reach = np.minimum(np.linalg.norm(np.asarray(x, np.float64) - q[i], axis=1),
                           u * SHRINK)[:, None]
        moved = np.concatenate([q[i] + dirs * radii, q[i] + dirs * (u * SHRINK),
                                q[i] + toward * reach, q[i] + toward * (0.5 * reach)])
        for j in set(H.nearest(x, moved).tolist()):
            assert j in ex, f"the cell of {j} is reached within u but left out of exact"
            assert j in co
            value = math.sqrt(float(((t[p] - t[j]) ** 2).sum())) + alpha[j]
            assert value <= exact["error_bound"][i] * (1 + 1e-12)
            assert value <= cons["error_bound"][i] * (1 + 1e-12)


@SETTINGS
@given(reg_case(), st.sampled_from(["conservative", "exact"]))
def test_regression_zero_uncertainty_gives_alpha_of_the_nearest_point(case, mode):
    x, t, q = case["x"], case["t"], case["q"]
    res = RegressionReference(x, t).certify(q, 0.0, mode=mode)
    p = H.nearest(x, q)
    np.testing.assert_allclose(res["error_bound"], brute_alpha(x, t)[p], rtol=1e-12)
    np.testing.assert_array_equal(res["neighbourhood_size"], np.ones(len(q)))


def test_regression_zero_uncertainty_keeps_the_nearest_point_in_the_set():
    """The conservative set {j : ||x - x_j|| <= dp + 2u} always holds p itself, even where
    sqrt(d2)**2 rounds below d2 (here for the first query: about a quarter of random
    queries hit this)."""
    x = np.array([[0.12573022, -0.13210486], [0.64042264, 0.10490011],
                  [-0.5356694, 0.36159506], [1.304, 0.94708097]], np.float32)
    t = np.array([-0.70373524, -1.26542147, -0.62327446, 0.04132598])
    q = np.array([[-2.79003693, -0.26255]])
    res = RegressionReference(x, t).certify(q, 0.0)
    assert res["members"][0].tolist() == [2]
    assert res["error_bound"][0] == pytest.approx(brute_alpha(x, t[:, None])[2], rel=1e-12)


def cell_distance(points: np.ndarray, j: int, x: np.ndarray) -> float:
    """Distance from x to the Voronoi cell of point j, by enumeration: the nearest point of
    a polytope {z : a_k z <= b_k} is the projection of x on the affine hull of some set of
    at most d active constraints; the smallest distance among the feasible ones is it."""
    from itertools import combinations

    pts = np.asarray(points, np.float64)
    xj = pts[j]
    others = np.delete(pts, j, axis=0)
    a = 2.0 * (others - xj)
    b = (others * others).sum(axis=1) - xj @ xj
    tol = 1e-9 * max(1.0, float(np.abs(b).max()))
    if (a @ x - b <= tol).all():
        return 0.0
    best = math.inf
    for size in range(1, len(x) + 1):
        for s in combinations(range(len(a)), size):
            A, bb = a[list(s)], b[list(s)]
            gram = A @ A.T
            if abs(np.linalg.det(gram)) < 1e-12:
                continue
            z = x - A.T @ np.linalg.solve(gram, A @ x - bb)
            if (a @ z - b <= tol).all():
                best = min(best, float(np.linalg.norm(z - x)))
    return best


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.sampled_from([2, 3]), st.integers(3, 9),
       st.sampled_from([0.1, 0.4, 1.0]))
def test_regression_exact_set_is_the_cells_that_meet_the_ball(seed, d, m, u):
    """exact keeps j where dist(x, cell_j) <= u (computed here by enumerating the active
    constraints) and drops j where it is clearly larger."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, d)).astype(np.float32)
    t = rng.standard_normal(m)
    q = rng.standard_normal((2, d)) * 1.2
    res = RegressionReference(x, t).certify(q, u, mode="exact")
    for i in range(len(q)):
        members = set(res["members"][i].tolist())
        for j in range(m):
            dist = cell_distance(x, j, q[i])
            if dist < u - 1e-6:
                assert j in members, (j, dist, u)
            elif dist > u + 1e-4:
                assert j not in members, (j, dist, u)


def test_regression_exact_mode_drops_cells_the_ball_cannot_reach():
    """p = (0, 0), a = (1.5, 0), b = (1.9, 0); query p, u = 1: all three lie within
    dp + 2u = 2 (conservative) but b's cell starts at x = 1.7, beyond the ball (x <= 1)."""
    x = np.array([[0.0, 0.0], [1.5, 0.0], [1.9, 0.0], [0.0, 5.0]], np.float32)
    t = np.array([[0.0], [1.0], [10.0], [3.0]])
    ref = RegressionReference(x, t)
    q = np.array([[0.0, 0.0]])
    cons = ref.certify(q, 1.0, mode="conservative")
    exact = ref.certify(q, 1.0, mode="exact")
    assert sorted(cons["members"][0].tolist()) == [0, 1, 2]
    assert sorted(exact["members"][0].tolist()) == [0, 1]
    alpha = brute_alpha(x, t)  # alpha = [1, 9, 9, 3]
    assert cons["error_bound"][0] == pytest.approx(max(0 + alpha[0], 1 + alpha[1],
                                                       10 + alpha[2]))
    assert exact["error_bound"][0] == pytest.approx(max(0 + alpha[0], 1 + alpha[1]))
    assert exact["mode"] == "exact"


def test_regression_refuses_an_unknown_mode_and_negative_uncertainty():
    ref = RegressionReference(np.eye(3, dtype=np.float32), np.arange(3.0))
    with pytest.raises(ValueError, match="mode"):
        ref.certify(np.zeros((1, 3)), 0.1, mode="loose")
    with pytest.raises(ValueError, match="uncertainty"):
        ref.certify(np.zeros((1, 3)), -1.0)
