"""layerscope.server.analysis.analyze_layers on real models: the layer table, its indices,
what it does with bad layers and bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import models as M

from layerscope.server.analysis import analyze_layers, plateau_position, ridge_probe
from layerscope.server.graph import describe, load_model, select_layers
from layerscope.server.metrics import compute_indices
from layerscope.server.metrics.backend import to_host
from layerscope.server.runtime import InputError, extract

INDEX_KEYS = ("si", "high_order_si", "soft_order_si", "center_si")


@pytest.fixture(scope="module")
def cnn_small(cnn):
    """300 training and 100 test images of the trained CNN, with labels."""
    return ({"image": cnn.train["image"][:300]}, cnn.y[:300],
            {"image": cnn.test["image"][:100]}, cnn.yt[:100])


@pytest.fixture(scope="module")
def cnn_result(cnn, cnn_small):
    x, y, xt, yt = cnn_small
    return analyze_layers(cnn.path, x, labels=y, test=xt, test_labels=yt, layers="auto",
                          reduce="flatten", orders=(1, 3))


def _engine(train, y, test=None, yt=None, orders=(1, 3)):
    kw = {} if test is None else {"test_features": test, "test_labels": yt}
    return compute_indices(train, labels=y, indices=list(INDEX_KEYS), orders=orders,
                           **kw).to_dict(per_class=False)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def test_rows_are_the_input_then_the_auto_layers(cnn, cnn_result):
    auto = [la.name for la in describe(load_model(cnn.path)).layers if la.auto]
    assert [r.name for r in cnn_result.layers] == ["image", *auto]
    assert [r.kind for r in cnn_result.layers] == ["input"] + ["layer"] * len(auto)
    assert cnn_result.task == "classification"
    assert all(r.error is None for r in cnn_result.layers)


def test_layer_indices_equal_the_engine_on_the_extracted_activations(cnn, cnn_small,
                                                                    cnn_result):
    x, y, xt, yt = cnn_small
    proto = load_model(cnn.path)
    info = describe(proto)
    data = extract(proto, info, select_layers(info, "auto"), [x, xt], reduce="flatten")
    rows = {r.name: r for r in cnn_result.layers}
    for d in data:
        row = rows[d.name]
        want = _engine(d.train, y, d.test, yt)
        assert row.dims == d.dims and row.reduction == "flatten"
        assert row.shape == list(d.shape)
        for key in INDEX_KEYS:
            assert row.values[key] == want[key], (d.name, key)
            assert row.cross[key] == want["cross"][key], (d.name, key)


def test_input_row_holds_the_indices_of_the_raw_input(cnn_small, cnn_result):
    x, y, xt, yt = cnn_small
    row = cnn_result.layers[0]
    assert (row.name, row.kind, row.op_type) == ("image", "input", "input")
    assert row.shape == [1, 8, 8] and row.dims == 64 and row.reduction == "flatten"
    want = _engine(x["image"].reshape(300, -1), y, xt["image"].reshape(100, -1), yt)
    for key in INDEX_KEYS:
        assert row.values[key] == want[key]
        assert row.cross[key] == want["cross"][key]


def test_orders_asked_are_the_orders_reported(cnn_result):
    for row in cnn_result.layers:
        assert set(row.values["high_order_si"]) == {"1", "3"}
        assert row.values["high_order_si"]["1"] == row.values["si"]


def test_trained_cnn_separates_digits_better_than_its_input(cnn, cnn_result):
    rows = {r.name: r for r in cnn_result.layers}
    si_in = rows["image"].values["si"]
    si_penultimate = rows["/relu3/Relu_output_0"].values["si"]
    si_logits = rows["logits"].values["si"]
    assert si_in < 0.75  # the noisy, shifted pixels are hard for 1-NN
    assert si_penultimate > si_in + 0.15
    assert si_logits > si_in + 0.15
    assert cnn_result.plateau is not None and cnn_result.plateau["position"] > 0


def test_plateau_is_where_si_stops_rising(cnn_result):
    series = [r.values["si"] for r in cnn_result.layers]
    tol = cnn_result.plateau["tolerance"]
    expected = next(i for i in range(len(series))
                    if all(v - series[i] <= tol for v in series[i + 1 :]))
    assert cnn_result.plateau["position"] == expected
    assert cnn_result.plateau["layer"] == cnn_result.layers[expected].name
    assert cnn_result.plateau["value"] == series[expected]
    assert cnn_result.plateau["index"] == "si"


def test_result_to_dict_is_json(cnn_result):
    d = json.loads(json.dumps(cnn_result.to_dict()))
    assert d["task"] == "classification"
    assert d["model"]["inputs"] == [{"name": "image", "dtype": "float32",
                                     "shape": ["batch", 1, 8, 8]}]
    first = d["layers"][1]
    assert {"name", "kind", "op_type", "shape", "reduction", "dims", "si", "cross"} <= set(first)


def test_output_rows_for_non_auto_float_outputs(sklearn_mlp):
    x, y = sklearn_mlp.train["features"][:200], sklearn_mlp.y[:200]
    res = analyze_layers(sklearn_mlp.path, {"features": x}, labels=y, orders=(3,))
    kinds = {r.name: r.kind for r in res.layers}
    assert kinds["features"] == "input"
    assert kinds["probabilities"] == "output"
    assert "label" not in kinds  # int64 output, not features
    relus = [r.name for r in res.layers if r.op_type == "Relu"]
    assert [kinds[n] for n in relus] == ["layer", "layer"]


def test_sklearn_hidden_layer_indices_equal_the_engine_on_numpy_activations(sklearn_mlp):
    x, y = sklearn_mlp.train["features"][:200], sklearn_mlp.y[:200]
    res = analyze_layers(sklearn_mlp.path, {"features": x}, labels=y, layers="op:Relu",
                         reduce="flatten", orders=(1, 3), include_inputs=False,
                         include_outputs=False)
    hidden = M.mlp_hidden(sklearn_mlp.model, x)
    for row, h in zip(res.layers, hidden, strict=True):
        want = _engine(h.astype(np.float32), y)
        # NumPy float64 vs onnxruntime float32 activations: same neighbours up to near-ties
        assert row.values["si"] == pytest.approx(want["si"], abs=2 / len(x))
        assert row.values["center_si"] == pytest.approx(want["center_si"], abs=2 / len(x))


# ---------------------------------------------------------------------------------------
# Inputs: multi-input, token ids, batching, sources
# ---------------------------------------------------------------------------------------


def test_two_input_model_has_a_row_per_float_input(two_inputs):
    data = {k: v[:120] for k, v in two_inputs.train.items()}
    res = analyze_layers(two_inputs.path, data, labels=two_inputs.y[:120], orders=(3,))
    inputs = [(r.name, r.dims) for r in res.layers if r.kind == "input"]
    assert inputs == [("image", 64), ("extra", 4)]
    want = _engine(data["extra"], two_inputs.y[:120], orders=(3,))
    assert res.layers[1].values["si"] == want["si"]
    assert all(r.error is None for r in res.layers)


def test_token_ids_are_not_an_input_row(transformer):
    ids, y = transformer.train["tokens"][:150], transformer.y[:150]
    res = analyze_layers(transformer.path, {"tokens": ids}, labels=y, test={
        "tokens": transformer.test["tokens"][:50]}, test_labels=transformer.yt[:50],
        reduce="mean", orders=(3,))
    assert res.layers[0].kind == "layer"
    assert "tokens" not in [r.name for r in res.layers]
    assert all(r.error is None and r.cross is not None for r in res.layers)
    ln = next(r for r in res.layers if r.name == "/ln2/LayerNormalization_output_0")
    assert ln.reduction == "mean" and ln.dims == 16 and ln.shape == [8, 16]


def test_first_token_reduction_on_a_classifier_with_a_vector_output(transformer):
    """`first_token` names the pooling of the sequence layers; the model's (batch, classes)
    output, added to the table on its own, must not make the whole analysis fail."""
    ids, y = transformer.train["tokens"][:100], transformer.y[:100]
    res = analyze_layers(transformer.path, {"tokens": ids}, labels=y,
                         layers="op:LayerNormalization", reduce="first_token", orders=(3,))
    rows = {r.name: r for r in res.layers}
    for name in ("/ln1/LayerNormalization_output_0", "/ln2/LayerNormalization_output_0"):
        assert rows[name].reduction == "first_token" and rows[name].dims == 16
        assert rows[name].error is None


def test_batch_size_that_does_not_divide_n_gives_the_same_table(cnn, cnn_small):
    x, y, _, _ = cnn_small
    a = analyze_layers(cnn.path, x, labels=y, batch_size=7, reduce="flatten", orders=(3,))
    b = analyze_layers(cnn.path, x, labels=y, reduce="flatten", orders=(3,))
    assert [r.values for r in a.layers] == [r.values for r in b.layers]
    assert a.options["batch_size"] == 7


def test_path_bytes_and_proto_give_the_same_table(resnet):
    x, y = {"image": resnet.train["image"][:100]}, resnet.y[:100]
    results = [analyze_layers(src, x, labels=y, orders=(3,)).to_dict()["layers"]
               for src in (resnet.path, resnet.path.read_bytes(), load_model(resnet.path))]
    assert results[0] == results[1] == results[2]


def test_analysis_never_modifies_the_model_files(cnn, external_model, cnn_small):
    x, y, xt, yt = cnn_small
    files = [cnn.path, external_model, external_model.parent / "weights.bin"]
    before = [M.sha256(p) for p in files]
    analyze_layers(cnn.path, x, labels=y, test=xt, test_labels=yt, layers="all", probe=True)
    analyze_layers(external_model, {"image": x["image"].reshape(-1, 1, 8, 8)}, labels=y,
                   layers="all")
    assert [M.sha256(p) for p in files] == before
    assert sorted(p.name for p in external_model.parent.iterdir()) == ["model.onnx",
                                                                      "weights.bin"]


def test_external_data_model_analyses_like_the_inline_one(external_model, resnet):
    x, y = {"image": resnet.train["image"][:100]}, resnet.y[:100]
    a = analyze_layers(external_model, x, labels=y, orders=(3,)).to_dict()["layers"]
    b = analyze_layers(resnet.path, x, labels=y, orders=(3,)).to_dict()["layers"]
    assert a == b


def test_regression_targets_give_the_smi_family(resnet):
    x = {"image": resnet.train["image"][:100]}
    t = resnet.y[:100].astype(np.float64) / 9.0
    res = analyze_layers(resnet.path, x, targets=t, orders=(3,))
    assert res.task == "regression"
    assert res.plateau is None or res.plateau["index"] == "smi_linear"
    for row in res.layers:
        assert 0.0 <= row.values["smi_linear"] <= 1.0
        assert "si" not in row.values


# ---------------------------------------------------------------------------------------
# Probe
# ---------------------------------------------------------------------------------------


def test_probe_accuracy_equals_sklearn_ridge_on_standardised_features(cnn, cnn_small):
    from sklearn.linear_model import Ridge

    x, y, xt, yt = cnn_small
    res = analyze_layers(cnn.path, x, labels=y, test=xt, test_labels=yt,
                         layers="/relu3/Relu_output_0", reduce="flatten", probe=True,
                         include_inputs=False, include_outputs=False)
    row = res.layers[0]
    proto = load_model(cnn.path)
    info = describe(proto)
    d = extract(proto, info, select_layers(info, "/relu3/Relu_output_0"), [x, xt],
                reduce="flatten")[0]
    a, b = to_host(d.train).astype(np.float64), to_host(d.test).astype(np.float64)
    mean, std = a.mean(axis=0), a.std(axis=0) + 1e-10
    classes = np.unique(y)
    # the penalty is chosen per layer by leave-one-out (tests/unit/test_probe.py checks how)
    assert row.probe["alpha"] in row.probe["alpha_grid"]
    ridge = Ridge(alpha=row.probe["alpha"]).fit((a - mean) / std,
                                                (y[:, None] == classes).astype(float))
    train_acc = np.mean(classes[ridge.predict((a - mean) / std).argmax(1)] == y)
    test_acc = np.mean(classes[ridge.predict((b - mean) / std).argmax(1)] == yt)
    assert row.probe["train_accuracy"] == pytest.approx(train_acc, abs=1.5 / len(y))
    assert row.probe["test_accuracy"] == pytest.approx(test_acc, abs=1.5 / len(yt))


def test_ridge_probe_regression_r2_of_a_linear_target():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    t = x @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 4.0
    out = ridge_probe(x, t, x[:50], t[:50], "regression", alpha=1e-6)
    assert out["train_r2"] == pytest.approx(1.0, abs=1e-9)
    assert out["test_r2"] == pytest.approx(1.0, abs=1e-9)


def test_ridge_probe_dual_solve_when_features_outnumber_samples():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 300))
    y = rng.integers(0, 3, size=40)
    out = ridge_probe(x, y, None, None, "classification", alpha=1e-3)
    assert out["train_accuracy"] == 1.0  # 300 dims interpolate 40 points
    assert "test_accuracy" not in out


# ---------------------------------------------------------------------------------------
# Bad layers and bad inputs
# ---------------------------------------------------------------------------------------


def test_nan_layer_is_flagged_and_the_others_are_analysed(nan_model):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)  # about half the Log inputs < 0
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    res = analyze_layers(nan_model, {"x": x}, labels=y, layers="all", orders=(3,))
    rows = {r.name: r for r in res.layers}
    assert list(rows) == ["x", "log_x", "pre", "hidden", "score"]
    bad = rows["log_x"]
    assert bad.error is not None and ("NaN" in bad.error or "non-finite" in bad.error)
    assert any("log_x" in w for w in res.warnings)
    for name in ("x", "pre", "hidden", "score"):
        assert rows[name].error is None, name
        assert 0.0 <= rows[name].values["si"] <= 1.0, name
    assert res.plateau is not None and res.plateau["layer"] != "log_x"


def test_nan_layer_error_survives_to_dict(nan_model):
    x = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    y = np.arange(30) % 2
    d = analyze_layers(nan_model, {"x": x}, labels=y, layers="log_x,hidden",
                       orders=(3,)).to_dict()
    by_name = {la["name"]: la for la in d["layers"]}
    assert "error" in by_name["log_x"] and "si" not in by_name["log_x"]
    assert "error" not in by_name["hidden"] and "si" in by_name["hidden"]
    json.dumps(d)


def test_wrong_input_name_is_an_input_error_naming_the_input(cnn):
    with pytest.raises(InputError, match="'image'"):
        analyze_layers(cnn.path, {"img": cnn.train["image"][:20]}, labels=cnn.y[:20])


def test_float_token_ids_are_an_input_error(transformer):
    with pytest.raises(InputError, match="int64"):
        analyze_layers(transformer.path, {"tokens": transformer.train["tokens"][:20] * 1.0},
                       labels=transformer.y[:20])


def test_wrong_image_shape_is_an_input_error(cnn):
    with pytest.raises(InputError, match="axis 3"):
        analyze_layers(cnn.path, {"image": np.zeros((20, 1, 8, 9), np.float32)},
                       labels=np.arange(20) % 2)


def test_labels_and_targets_are_exclusive(cnn):
    x = {"image": cnn.train["image"][:10]}
    with pytest.raises(ValueError, match="exactly one"):
        analyze_layers(cnn.path, x)
    with pytest.raises(ValueError, match="exactly one"):
        analyze_layers(cnn.path, x, labels=cnn.y[:10], targets=cnn.y[:10] * 1.0)


def test_a_test_set_needs_its_labels(cnn):
    x = {"image": cnn.train["image"][:10]}
    with pytest.raises(ValueError, match="labels"):
        analyze_layers(cnn.path, x, labels=cnn.y[:10], test=x)


# ---------------------------------------------------------------------------------------
# plateau_position
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("values", "tol", "expected"), [
    ([0.5, 0.7, 0.9, 0.905, 0.9], 0.01, 2),
    ([0.5, 0.7, 0.9, 0.95], 0.01, 3),
    ([0.9, 0.8, 0.7], 0.01, 0),
    ([0.5, None, 0.9, float("nan"), 0.9], 0.01, 2),
    ([0.5, 0.52, 0.6], 0.1, 0),
    ([], 0.01, None),
    ([None, math.nan], 0.01, None),
])
def test_plateau_position(values, tol, expected):
    assert plateau_position(values, tol) == expected
