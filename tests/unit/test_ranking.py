"""Ranking pre-trained models (METRICS.md section 4): greedy forward selection against a
brute-force greedy loop, the head-layer rule, and rank_models' order and tie rule.

Expected values are computed here in float64 (``helpers.rank``), never by the engine.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from helpers import rank as H
from helpers import reference as R
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from layerscope.server.analysis.ranking import rank_models
from layerscope.server.graph.head import NoHead, head_layer
from layerscope.server.graph.inspect import describe
from layerscope.server.graph.select import LayerSelectionError
from layerscope.server.metrics import compute_indices
from layerscope.server.metrics.folded import folded_si

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------
# Forward selection against an independent greedy loop
# ---------------------------------------------------------------------------------------


@st.composite
def selection_case(draw: st.DrawFn, regression: bool = False) -> dict:
    m = draw(st.sampled_from([5, 12, 30, 45, 70]))  # 45, 70: beyond the 32-point pool
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    levels = draw(st.sampled_from([2, 4, 50]))  # few levels: many distance ties
    x = rng.integers(0, levels, size=(m, d)).astype(np.float32)
    if regression:
        y = rng.integers(0, 3, size=m).astype(np.float64)
    else:
        # labels partly carried by one feature, so that selection has something to find
        y = np.where(rng.random(m) < 0.7, (x[:, rng.integers(d)] > levels / 2), rng.integers(
            0, 2, size=m)).astype(np.int64) * 3 - 1
    cands = None
    if draw(st.booleans()):
        cands = sorted(set(draw(st.lists(st.integers(0, d - 1), min_size=1, max_size=d))))
    max_features = draw(st.one_of(st.none(), st.integers(1, d)))
    patience = draw(st.one_of(st.none(), st.integers(1, 3)))
    budget = draw(st.sampled_from([1024.0, 0.02]))  # 0.02 MiB: blocked distance rows
    return {"x": x, "y": y, "candidates": cands, "max_features": max_features,
            "patience": patience, "budget": budget}


def _check_ranking(got: dict, want: dict) -> None:
    assert got["order"] == want["order"]
    np.testing.assert_allclose(got["scores"], want["scores"], rtol=1e-12, atol=1e-15)
    assert got["best_subset"] == want["best_subset"]


@SETTINGS
@given(selection_case())
def test_forward_selection_si_equals_brute_force_greedy(case):
    x, y = case["x"], case["y"]
    res = compute_indices(x, labels=y, indices=["feature_ranking"],
                          max_features=case["max_features"], patience=case["patience"],
                          candidates=case["candidates"], memory_budget_mb=case["budget"])
    got = res.feature_ranking.to_dict()
    assert got["criterion"] == "si"
    cands = case["candidates"] or list(range(x.shape[1]))
    want = H.brute_forward(x, lambda s: H.si(s, y), cands, case["max_features"],
                         case["patience"])
    _check_ranking(got, want)


@SETTINGS
@given(selection_case(regression=True))
def test_forward_selection_smi_linear_equals_brute_force_greedy(case):
    x, t = case["x"], case["y"]
    res = compute_indices(x, targets=t, indices=["feature_ranking"],
                          max_features=case["max_features"], patience=case["patience"],
                          candidates=case["candidates"], memory_budget_mb=case["budget"])
    got = res.feature_ranking.to_dict()
    assert got["criterion"] == "smi_linear"
    cands = case["candidates"] or list(range(x.shape[1]))
    want = H.brute_forward(x, lambda s: H.smi_linear(s, t), cands, case["max_features"],
                         case["patience"])
    _check_ranking(got, want)


def test_forward_selection_ties_between_candidates_go_to_the_lowest_index():
    """Features 3 and 1 are copies of each other (the best), 0 and 2 are noise: 1 first."""
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 20)
    good = y * 10.0 + rng.uniform(0, 1, 40)
    x = np.stack([rng.uniform(0, 10, 40), good, rng.uniform(0, 10, 40), good], axis=1)
    fr = compute_indices(x.astype(np.float32), labels=y, indices=["feature_ranking"],
                         max_features=2).feature_ranking
    assert fr.order[0] == 1  # not its copy 3
    assert fr.scores[0] == 1.0
    _check_ranking(fr.to_dict(), H.brute_forward(x, lambda s: H.si(s, y), [0, 1, 2, 3], 2, None))


def test_forward_selection_patience_stops_after_steps_without_a_new_maximum():
    """One perfect feature, the others never improve on it: patience 2 stops after 3 steps
    (the best, then two without a new maximum)."""
    rng = np.random.default_rng(6)
    y = np.repeat([0, 1, 2], 15)
    x = np.concatenate([(y * 5.0)[:, None] + rng.uniform(0, 0.5, (45, 1)),
                        rng.uniform(0, 1, (45, 5))], axis=1).astype(np.float32)
    fr = compute_indices(x, labels=y, indices=["feature_ranking"], patience=2).feature_ranking
    want = H.brute_forward(x, lambda s: H.si(s, y), list(range(6)), None, 2)
    assert len(want["order"]) == 3
    _check_ranking(fr.to_dict(), want)
    assert fr.best_subset == [0]


def test_forward_selection_candidates_restrict_the_features():
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(30, 5)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    fr = compute_indices(x, labels=y, indices=["feature_ranking"],
                         candidates=[4, 2, 2]).feature_ranking
    assert sorted(fr.order) == [2, 4]


@pytest.mark.parametrize("kw", [{"max_features": 0}, {"patience": 0}, {"candidates": []},
                                {"candidates": [7]}])
def test_forward_selection_refuses_bad_options(kw):
    x = np.random.default_rng(0).uniform(size=(10, 3)).astype(np.float32)
    with pytest.raises(ValueError):
        compute_indices(x, labels=np.arange(10) % 2, indices=["feature_ranking"], **kw)


# ---------------------------------------------------------------------------------------
# The head-layer rule
# ---------------------------------------------------------------------------------------


def _graph(nodes: list, inits: list, inp: tuple, out: tuple) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def cnn_like() -> onnx.ModelProto:
    """x -> Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Relu -> Gemm -> Softmax."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["conv"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["crelu"], name="crelu"),
        helper.make_node("GlobalAveragePool", ["crelu"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w1", "b1"], ["fc1"], name="fc1"),
        helper.make_node("Relu", ["fc1"], ["frelu"], name="frelu"),
        helper.make_node("Gemm", ["frelu", "w2", "b2"], ["logits"], name="fc2"),
        helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1),
    ]
    inits = [("k", rng.standard_normal((4, 1, 3, 3))), ("w1", rng.standard_normal((4, 5))),
             ("b1", np.zeros(5)), ("w2", rng.standard_normal((5, 3))), ("b2", np.zeros(3))]
    return _graph(nodes, inits, ("x", ["N", 1, 6, 6]), ("probs", ["N", 3]))


def all_fc() -> onnx.ModelProto:
    """x -> Gemm -> Relu -> MatMul + Add -> Relu -> Gemm (three fully connected layers)."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="fc1"),
        helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
        helper.make_node("MatMul", ["a1", "w2"], ["m2"], name="fc2"),
        helper.make_node("Add", ["m2", "b2"], ["h2"], name="bias2"),
        helper.make_node("Relu", ["h2"], ["a2"], name="r2"),
        helper.make_node("Gemm", ["a2", "w3", "b3"], ["out"], name="fc3"),
    ]
    inits = [("w1", rng.standard_normal((4, 6))), ("b1", np.zeros(6)),
             ("w2", rng.standard_normal((6, 5))), ("b2", np.zeros(5)),
             ("w3", rng.standard_normal((5, 2))), ("b3", np.zeros(2))]
    return _graph(nodes, inits, ("x", ["N", 4]), ("out", ["N", 2]))


def test_head_layer_of_a_cnn_is_the_pooled_vector_feeding_the_fc_head():
    m = cnn_like()
    name, why = head_layer(m, describe(m))
    assert name == "gap"
    assert "fully connected head" in why and "fc1" in why


def test_head_layer_of_an_all_fc_model_is_the_penultimate_tensor():
    m = all_fc()
    name, why = head_layer(m, describe(m))
    assert name == "a2"
    assert "penultimate" in why


def test_head_layer_without_fc_head_raises_nohead_with_a_clear_message():
    m = H.no_head_model(4)
    with pytest.raises(NoHead, match="name the layer"):
        head_layer(m, describe(m))


def test_head_layer_of_a_single_fc_layer_on_the_input_raises_nohead():
    m = _graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")],
               [("w", np.ones((3, 2))), ("b", np.zeros(2))], ("x", ["N", 3]), ("y", ["N", 2]))
    with pytest.raises(NoHead, match="name the"):
        head_layer(m, describe(m))


def test_head_layer_of_a_single_fc_layer_on_the_flattened_input_raises_nohead():
    """x -> Flatten -> Gemm is one fully connected layer on the (reshaped) input, like
    x -> Gemm: there are no learned features before the head to take."""
    m = _graph([helper.make_node("Flatten", ["x"], ["flat"], name="flatten"),
                helper.make_node("Gemm", ["flat", "w", "b"], ["y"], name="fc")],
               [("w", np.ones((16, 2))), ("b", np.zeros(2))], ("x", ["N", 1, 4, 4]),
               ("y", ["N", 2]))
    with pytest.raises(NoHead, match="name the"):
        head_layer(m, describe(m))


# ---------------------------------------------------------------------------------------
# rank_models
# ---------------------------------------------------------------------------------------


def test_rank_models_puts_the_informative_model_first():
    x, y = H.informative_data()
    noise = H.selection_mlp(6, [2, 3, 4], n_classes=3)
    info = H.selection_mlp(6, [0, 1], n_classes=3)
    res = rank_models([noise, info], x, labels=y, names=["noise", "info"])
    assert res.ranking == ["info", "noise"]
    rows = {r.model: r for r in res.models}
    assert rows["info"].rank == 1 and rows["noise"].rank == 2
    assert rows["info"].selected > rows["noise"].selected
    assert [r.model for r in res.models] == ["noise", "info"]  # rows stay in input order


def test_rank_models_rows_equal_brute_force_on_the_head_features():
    x, y = H.informative_data()
    cols = [2, 0, 3]
    res = rank_models([H.selection_mlp(6, cols, n_classes=3)], x, labels=y, names=["a"],
                      method="seed")
    row = res.models[0]
    hid = H.hidden_of(x, cols)
    want = H.brute_forward(hid, lambda s: H.si(s, y), [0, 1, 2], None, None)
    assert row.layer == "act" and "penultimate" in row.layer_rule
    assert row.features == 3 and row.index == "si"
    assert row.all_features == H.si(hid, y)
    assert row.selection_order == want["order"]
    np.testing.assert_allclose(row.selection_scores, want["scores"], rtol=1e-12)
    assert row.selected == max(want["scores"])
    assert row.subset_size == len(want["best_subset"])
    assert row.tie_breakers == pytest.approx({"soft_order_si[5]": H.soft_order_si(hid, y, 5),
                                              "center_si": H.center_si(hid, y)}, rel=1e-12)
    assert row.baselines is None and row.seconds >= 0
    assert res.task == "classification"


def test_rank_models_respects_max_features_and_patience():
    x, y = H.informative_data()
    m = H.selection_mlp(6, [2, 3, 4, 5, 0], n_classes=3)
    one = rank_models([m], x, labels=y, max_features=1, method="seed").models[0]
    assert len(one.selection_order) == 1
    hid = H.hidden_of(x, [2, 3, 4, 5, 0])
    want = H.brute_forward(hid, lambda s: H.si(s, y), list(range(5)), None, 1)
    row = rank_models([m], x, labels=y, patience=1, method="seed").models[0]
    assert row.selection_order == want["order"]


def test_rank_models_same_model_twice_keeps_input_order():
    x, y = H.informative_data()
    m = H.selection_mlp(6, [0, 2], n_classes=3)
    res = rank_models([m, m], x, labels=y, names=["second", "first"])
    assert res.ranking == ["second", "first"]


def test_rank_models_equal_index_ties_go_to_higher_soft_order_si():
    """Both models select a subset with si = 1; model 'pairs' has each point's 2nd and
    3rd neighbours in the other class (soft_order_si[3] = 1/3), 'blobs' does not (1)."""
    y = np.array([0, 0, 1, 1] * 3)
    pairs = np.array([0, 0.1, 5, 5.1, 10, 10.1, 15, 15.1, 20, 20.1, 25, 25.1])
    blobs = np.where(y == 0, 0.0, 10.0) + np.arange(12) * 0.01
    x = np.stack([pairs, blobs], axis=1).astype(np.float32)
    hp, hb = H.hidden_of(x, [0]), H.hidden_of(x, [1])
    assert H.si(hp, y) == H.si(hb, y) == 1.0
    assert H.soft_order_si(hp, y, 3) < H.soft_order_si(hb, y, 3) == 1.0
    res = rank_models([H.selection_mlp(2, [0]), H.selection_mlp(2, [1])], x, labels=y,
                      method="seed",
                      names=["pairs", "blobs"], order=3)
    assert res.ranking == ["blobs", "pairs"]
    rows = {r.model: r for r in res.models}
    assert rows["pairs"].tie_breakers["soft_order_si[3]"] == pytest.approx(
        H.soft_order_si(hp, y, 3))


def test_rank_models_equal_index_and_soft_order_ties_go_to_higher_center_si():
    """order 1 makes soft_order_si[1] = si = 1 for both; 'split' has class 0 in two far
    groups (its mean lies nearer class 1's points: center_si 0.75), 'tight' does not."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    split = np.array([0, 0.1, 20, 20.1, 5, 5.1, 5.2, 5.3])
    tight = np.array([0, 0.1, 0.2, 0.3, 10, 10.1, 10.2, 10.3])
    x = np.stack([split, tight], axis=1).astype(np.float32)
    hs, ht = H.hidden_of(x, [0]), H.hidden_of(x, [1])
    assert H.si(hs, y) == H.si(ht, y) == 1.0
    assert H.center_si(hs, y) == 0.75 and H.center_si(ht, y) == 1.0
    res = rank_models([H.selection_mlp(2, [0]), H.selection_mlp(2, [1])], x, labels=y,
                      method="seed",
                      names=["split", "tight"], order=1)
    assert res.ranking == ["tight", "split"]
    rows = {r.model: r for r in res.models}
    assert rows["split"].tie_breakers["center_si"] == 0.75


def test_rank_models_regression_uses_smi_linear():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    t = 2.0 * x[:, 0].astype(np.float64)
    res = rank_models([H.selection_mlp(4, [1, 2], n_classes=1),
                       H.selection_mlp(4, [0, 3], n_classes=1)], x, targets=t,
                      names=["noise", "smooth"])
    assert res.task == "regression"
    assert res.ranking == ["smooth", "noise"]
    row = {r.model: r for r in res.models}["smooth"]
    assert row.index == "smi_linear"
    assert row.all_features == pytest.approx(H.smi_linear(H.hidden_of(x, [0, 3]), t), rel=1e-12)
    assert set(row.tie_breakers) == {"soft_order_smi_linear[5]"}


def test_rank_models_named_layer_overrides_the_head_rule():
    x, y = H.informative_data()
    res = rank_models([H.selection_mlp(6, [0, 1], n_classes=3)], x, labels=y, names=["a"],
                      layers={"a": "hidden"})
    row = res.models[0]
    assert row.layer == "hidden" and row.layer_rule == "named by the user"


def test_rank_models_unknown_layer_and_no_head_are_errors():
    x, y = H.informative_data()
    with pytest.raises(LayerSelectionError, match="nope"):
        rank_models([H.selection_mlp(6, [0])], x, labels=y, names=["a"], layers={"a": "nope"})
    with pytest.raises(NoHead):
        rank_models([H.no_head_model(6)], x, labels=y)


# ---------------------------------------------------------------------------------------
# The folded method (the classification default)
# ---------------------------------------------------------------------------------------


def _uneven_data() -> tuple[np.ndarray, np.ndarray]:
    """Classes of 11, 4 and 16 samples, interleaved, 5 features (2 informative)."""
    rng = np.random.default_rng(3)
    y = np.array([0] * 11 + [1] * 4 + [2] * 16)[rng.permutation(31)]
    centres = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    x = np.concatenate([centres[y] + rng.normal(0, 0.8, (31, 2)),
                        rng.normal(0, 1.0, (31, 3))], axis=1)
    return x.astype(np.float32), y


@pytest.mark.parametrize("folds,order", [(5, 3), (3, 1), (2, 5)])
def test_folded_si_equals_the_reference_folds(folds, order):
    x, y = _uneven_data()
    got = folded_si(np, x, y, folds=folds, order=order, max_features=None, patience=None,
                    candidates=None, memory_budget_mb=64.0)
    want = R.folded_si(x, y, folds, order)
    np.testing.assert_array_equal(got.fold, want["fold"])
    assert got.subsets == want["subsets"]
    for name in ("si", "soft_order_si", "high_order_si"):
        assert not np.isnan(want[name]).any()  # the reference scored every sample
        np.testing.assert_array_equal(got.per_sample[name], want[name])
        assert got.values[name] == pytest.approx(want[name].mean(), rel=1e-12)


def test_folded_si_scores_every_sample_exactly_once_by_a_subset_that_never_saw_it():
    x, y = _uneven_data()
    got = folded_si(np, x, y, folds=4, order=1, max_features=2, patience=None,
                    candidates=None, memory_budget_mb=64.0)
    assert sorted(np.concatenate([np.flatnonzero(got.fold == k) for k in range(4)])) == \
        list(range(len(y)))
    for k in range(4):
        held = got.fold == k
        # each class is dealt evenly: class sizes in a fold differ by at most one between folds
        for c in np.unique(y):
            assert abs((y[held] == c).sum() - (y == c).sum() / 4) < 1
        # the held-out samples' si is recomputed from their neighbours outside the fold
        rest = ~held
        want = R.cross_separation(x[rest][:, got.subsets[k]], y[rest],
                                  x[held][:, got.subsets[k]], y[held], [1])
        np.testing.assert_array_equal(got.per_sample["si"][held], want["per_sample"]["si"])


def test_folded_si_caps_folds_at_the_largest_class():
    x, y = _uneven_data()
    got = folded_si(np, x[:6], np.array([0, 1, 0, 1, 2, 2]), folds=5, order=1,
                    max_features=None, patience=None, candidates=None, memory_budget_mb=64.0)
    assert got.folds == 2 and sorted(set(got.fold.tolist())) == [0, 1]
    with pytest.raises(ValueError, match="a class of at least 2 samples"):
        folded_si(np, x[:3], np.array([0, 1, 2]), folds=5, order=1, max_features=None,
                  patience=None, candidates=None, memory_budget_mb=64.0)


def test_rank_models_default_method_is_soft_order_si_of_all_features():
    x, y = H.informative_data()
    cols = [2, 0, 3]
    hid = H.hidden_of(x, cols)
    res = rank_models([H.selection_mlp(6, cols, n_classes=3)], x, labels=y, order=3)
    row = res.models[0]
    assert res.options["method"] == "soft_order" and row.method == "soft_order"
    assert row.index == "soft_order_si[3]"
    assert row.selected == pytest.approx(H.soft_order_si(hid, y, 3), rel=1e-12)
    assert row.tie_breakers == pytest.approx({"si": H.si(hid, y),
                                              "center_si": H.center_si(hid, y)}, rel=1e-12)


def test_rank_models_folded_method_equals_the_reference():
    x, y = H.informative_data()
    cols = [2, 0, 3]
    res = rank_models([H.selection_mlp(6, cols, n_classes=3)], x, labels=y, names=["a"],
                      order=3, method="folded")
    row = res.models[0]
    want = R.folded_si(H.hidden_of(x, cols), y, 5, 3, max_features=None)
    assert res.options["method"] == "folded" and res.options["folds"] == 5
    assert row.method == "folded" and row.index == "folded_soft_order_si[3]"
    assert row.selected == pytest.approx(want["soft_order_si"].mean(), rel=1e-12)
    assert row.scores == pytest.approx({
        "folded_soft_order_si[3]": want["soft_order_si"].mean(),
        "folded_si": want["si"].mean(),
        "folded_high_order_si[3]": want["high_order_si"].mean()}, rel=1e-12)
    assert row.all_features == H.si(H.hidden_of(x, cols), y)


def test_rank_models_seed_method_is_algorithm_2_unchanged():
    """--method seed: the in-sample SI of the forward-selected subset, as the seed computed
    it (the brute-force reference of METRICS.md section 4), whatever the default."""
    x, y = H.informative_data()
    cols = [2, 0, 3, 5]
    hid = H.hidden_of(x, cols)
    row = rank_models([H.selection_mlp(6, cols, n_classes=3)], x, labels=y,
                      method="seed").models[0]
    order, scores, best = R.feature_ranking_si(hid, y, max_features=None)
    assert row.method == "seed" and row.index == "si"
    assert row.selection_order == order and row.selected == max(scores)
    assert row.subset_size == len(best) and row.scores == {}


@pytest.mark.parametrize("kw,match", [
    ({"method": "best"}, "method must be one of soft_order, folded, seed"),
    ({"folds": 1}, "folds must be an integer in 2..100"),
    ({"folds": 101}, "folds must be an integer in 2..100"),
])
def test_rank_models_refuses_a_bad_method_or_folds(kw, match):
    x, y = H.informative_data()
    with pytest.raises(ValueError, match=match):
        rank_models([H.selection_mlp(6, [0])], x, labels=y, **kw)


@pytest.mark.parametrize("method", ["folded", "soft_order"])
def test_rank_models_folded_is_refused_for_regression(method):
    x, _ = H.informative_data()
    with pytest.raises(ValueError, match="use method 'seed' for regression"):
        rank_models([H.selection_mlp(6, [0], n_classes=1)], x, targets=x[:, 0],
                    method=method)
