"""XGBoost and LightGBM exporters: parity with the frameworks' own predictions, the
``tree_outputs`` layer against each tree's value computed by the framework, the model-file
forms, refused objectives, and the layer-wise analysis of an exported ensemble."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxmltools")
xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from sklearn.datasets import load_diabetes, load_digits  # noqa: E402

from layerscope.exporters import export  # noqa: E402
from layerscope.exporters.base import DEFAULT_TOLERANCE  # noqa: E402
from layerscope.exporters.trees import (  # noqa: E402
    export_lightgbm,
    export_lightgbm_file,
    export_xgboost,
    export_xgboost_file,
)
from layerscope.server.analysis import analyze_layers  # noqa: E402
from layerscope.server.graph import describe, load_model  # noqa: E402

ROUNDS = 30
CLASSES = 10


@pytest.fixture(scope="module")
def digits():
    """(x_train, y_train, x_test, y_test): 800 / 300 digits scaled to [0, 1]."""
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return x[:800], y[:800].astype(np.int64), x[800:1100], y[800:1100].astype(np.int64)


@pytest.fixture(scope="module")
def diabetes():
    x, y = load_diabetes(return_X_y=True)
    return x[:350].astype(np.float32), y[:350], x[350:].astype(np.float32), y[350:]


@pytest.fixture(scope="module")
def xgb_clf(digits):
    x, y, _, _ = digits
    return xgb.XGBClassifier(n_estimators=ROUNDS, max_depth=3, n_jobs=2).fit(x, y)


@pytest.fixture(scope="module")
def lgb_clf(digits):
    x, y, _, _ = digits
    return lgb.LGBMClassifier(n_estimators=ROUNDS, max_depth=3, num_leaves=8, n_jobs=2,
                              verbose=-1).fit(x, y)


@pytest.fixture(scope="module")
def xgb_reg(diabetes):
    x, y, _, _ = diabetes
    return xgb.XGBRegressor(n_estimators=ROUNDS, max_depth=3, n_jobs=2).fit(x, y)


@pytest.fixture(scope="module")
def lgb_reg(diabetes):
    x, y, _, _ = diabetes
    return lgb.LGBMRegressor(n_estimators=ROUNDS, max_depth=3, num_leaves=8, n_jobs=2,
                             verbose=-1).fit(x, y)


def run(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {"input": x}), strict=True))


# ---------------------------------------------------------------------------------------
# Each tree's value, computed by the frameworks without the exporter
# ---------------------------------------------------------------------------------------


def xgb_per_tree(booster, x: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, rounds * C): round r's raw-score contribution to class k in column r * C + k.

    A zero base margin makes XGBoost leave out base_score, so a one-round iteration range
    gives exactly that round's trees."""
    n = len(x)
    shape = (n, n_classes) if n_classes > 2 else (n,)
    dm = xgb.DMatrix(x, base_margin=np.zeros(shape, dtype=np.float32))
    cols = [np.asarray(booster.predict(dm, output_margin=True, iteration_range=(r, r + 1)),
                       dtype=np.float64).reshape(n, -1)
            for r in range(booster.num_boosted_rounds())]
    return np.concatenate(cols, axis=1)


def lgb_per_tree(booster, x: np.ndarray) -> np.ndarray:
    """(N, rounds * C) from LightGBM's raw score of one iteration at a time."""
    cols = [np.asarray(booster.predict(x, raw_score=True, start_iteration=r, num_iteration=1),
                       dtype=np.float64).reshape(len(x), -1)
            for r in range(booster.current_iteration())]
    return np.concatenate(cols, axis=1)


def assert_parity(report, names: list[str]) -> None:
    assert [p.name for p in report.parity] == names
    assert all(p.max_abs <= DEFAULT_TOLERANCE or p.max_rel <= DEFAULT_TOLERANCE
               for p in report.parity)


# ---------------------------------------------------------------------------------------
# Classifiers
# ---------------------------------------------------------------------------------------


def test_xgboost_classifier_outputs_and_per_tree_values(xgb_clf, digits, tmp_path):
    x, _, xt, _ = digits
    report = export(xgb_clf, x[:200], tmp_path / "xgb.onnx")  # dispatched to the exporter
    assert report.framework == "xgboost" and report.inputs == ["input"]
    assert report.outputs == ["label", "probabilities", "tree_outputs"]
    assert report.opset <= 17
    assert_parity(report, ["label", "probabilities", "tree_outputs"])

    got = run(tmp_path / "xgb.onnx", xt)  # other samples, another batch size
    np.testing.assert_array_equal(got["label"], xgb_clf.predict(xt))
    assert got["probabilities"].dtype == np.float32
    np.testing.assert_allclose(got["probabilities"], xgb_clf.predict_proba(xt), atol=1e-5)

    trees = got["tree_outputs"]
    assert trees.shape == (len(xt), ROUNDS * CLASSES)
    booster = xgb_clf.get_booster()
    want = xgb_per_tree(booster, xt, CLASSES)
    np.testing.assert_allclose(trees, want, rtol=1e-5, atol=1e-5)
    # base score + the trees of class k (columns k, C + k, ...) = class k's raw score
    margin = booster.predict(xgb.DMatrix(xt), output_margin=True)
    base = margin - trees.reshape(len(xt), ROUNDS, CLASSES).sum(axis=1)
    np.testing.assert_allclose(base, np.broadcast_to(base[:1], base.shape), atol=1e-4)


def test_lightgbm_classifier_outputs_and_per_tree_values(lgb_clf, digits, tmp_path):
    x, _, xt, _ = digits
    report = export(lgb_clf, x[:200], tmp_path / "lgb.onnx")
    assert report.framework == "lightgbm"
    assert report.outputs == ["label", "probabilities", "tree_outputs"]
    assert_parity(report, ["label", "probabilities", "tree_outputs"])
    proto = onnx.load(tmp_path / "lgb.onnx")
    assert not any(n.op_type == "ZipMap" for n in proto.graph.node)

    got = run(tmp_path / "lgb.onnx", xt)
    np.testing.assert_array_equal(got["label"], lgb_clf.predict(xt))
    np.testing.assert_allclose(got["probabilities"], lgb_clf.predict_proba(xt), atol=1e-5)
    trees = got["tree_outputs"]
    assert trees.shape == (len(xt), lgb_clf.booster_.num_trees()) == (len(xt), 300)
    np.testing.assert_allclose(trees, lgb_per_tree(lgb_clf.booster_, xt), rtol=1e-5,
                               atol=1e-5)
    # LightGBM folds its starting score into the first trees: the columns sum to the raw score
    raw = lgb_clf.booster_.predict(xt, raw_score=True)
    np.testing.assert_allclose(trees.reshape(len(xt), ROUNDS, CLASSES).sum(axis=1), raw,
                               rtol=1e-5, atol=1e-4)


def test_binary_boosters_give_two_probability_columns(digits, tmp_path):
    x, y, xt, _ = digits
    yb = (y % 2).astype(np.float32)
    bx = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 2},
                   xgb.DMatrix(x, yb), 20)
    export_xgboost(bx, x[:100], tmp_path / "xb.onnx")
    got = run(tmp_path / "xb.onnx", xt)
    p = bx.predict(xgb.DMatrix(xt))
    np.testing.assert_allclose(got["probabilities"], np.stack([1 - p, p], axis=1), atol=1e-5)
    np.testing.assert_array_equal(got["label"], (p > 0.5).astype(np.int64))
    np.testing.assert_allclose(got["tree_outputs"], xgb_per_tree(bx, xt, 2), atol=1e-5)

    bl = lgb.train({"objective": "binary", "max_depth": 3, "num_leaves": 8, "verbose": -1,
                    "num_threads": 2}, lgb.Dataset(x, yb), 20)
    export_lightgbm(bl, x[:100], tmp_path / "lb.onnx")
    got = run(tmp_path / "lb.onnx", xt)
    p = bl.predict(xt)
    np.testing.assert_allclose(got["probabilities"], np.stack([1 - p, p], axis=1), atol=1e-5)
    np.testing.assert_allclose(got["tree_outputs"], lgb_per_tree(bl, xt), rtol=1e-5, atol=1e-5)


def test_softmax_objective_and_string_labels(digits, tmp_path):
    x, y, xt, _ = digits
    soft = xgb.XGBClassifier(n_estimators=5, max_depth=2, objective="multi:softmax",
                             n_jobs=2).fit(x, y)
    report = export_xgboost(soft, x[:100], tmp_path / "soft.onnx")
    assert any("softmax of the raw scores" in n for n in report.notes)
    got = run(tmp_path / "soft.onnx", xt)
    np.testing.assert_allclose(got["probabilities"], soft.predict_proba(xt), atol=1e-5)
    np.testing.assert_array_equal(got["label"], soft.predict(xt))

    names = np.array([f"digit{k}" for k in range(CLASSES)])
    named = lgb.LGBMClassifier(n_estimators=5, max_depth=2, num_leaves=4, n_jobs=2,
                               verbose=-1).fit(x, names[y])
    export_lightgbm(named, x[:100], tmp_path / "named.onnx")
    got = run(tmp_path / "named.onnx", xt)
    np.testing.assert_array_equal(got["label"].astype(str), named.predict(xt))
    np.testing.assert_allclose(got["probabilities"], named.predict_proba(xt), atol=1e-5)


# ---------------------------------------------------------------------------------------
# Regressors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xgb_reg", "lgb_reg"])
def test_regressor_outputs_and_per_tree_values(name, diabetes, tmp_path, request):
    model = request.getfixturevalue(name)
    x, _, xt, _ = diabetes
    fn = export_xgboost if name == "xgb_reg" else export_lightgbm
    report = fn(model, x, tmp_path / "reg.onnx")
    assert report.outputs == ["variable", "tree_outputs"]
    assert_parity(report, ["variable", "tree_outputs"])
    got = run(tmp_path / "reg.onnx", xt)
    assert got["variable"].shape == (len(xt), 1)
    np.testing.assert_allclose(got["variable"][:, 0], model.predict(xt), rtol=1e-5, atol=1e-4)
    if name == "xgb_reg":
        want = xgb_per_tree(model.get_booster(), xt, 1)
    else:
        want = lgb_per_tree(model.booster_, xt)
    assert got["tree_outputs"].shape == (len(xt), ROUNDS)
    np.testing.assert_allclose(got["tree_outputs"], want, rtol=1e-5, atol=1e-5)


def test_per_tree_false_leaves_the_model_outputs_only(xgb_reg, diabetes, tmp_path):
    x, _, _, _ = diabetes
    report = export_xgboost(xgb_reg, x, tmp_path / "plain.onnx", per_tree=False)
    assert report.outputs == ["variable"]


# ---------------------------------------------------------------------------------------
# Files, opsets and refusals
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_xgboost_model_file_round_trips(xgb_clf, digits, tmp_path, suffix):
    x, _, xt, _ = digits
    src = tmp_path / f"model{suffix}"
    xgb_clf.save_model(src)
    report = export_xgboost_file(src, x[:100], tmp_path / "file.onnx")
    assert report.outputs == ["label", "probabilities", "tree_outputs"]
    got = run(tmp_path / "file.onnx", xt)
    np.testing.assert_allclose(got["probabilities"], xgb_clf.predict_proba(xt), atol=1e-5)
    np.testing.assert_allclose(got["tree_outputs"],
                               xgb_per_tree(xgb_clf.get_booster(), xt, CLASSES), atol=1e-5)


def test_lightgbm_model_file_round_trips(lgb_clf, digits, tmp_path):
    x, _, xt, _ = digits
    src = tmp_path / "model.txt"
    lgb_clf.booster_.save_model(src)
    export_lightgbm_file(src, x[:100], tmp_path / "file.onnx")
    got = run(tmp_path / "file.onnx", xt)
    np.testing.assert_allclose(got["probabilities"], lgb_clf.predict_proba(xt), atol=1e-5)
    np.testing.assert_allclose(got["tree_outputs"], lgb_per_tree(lgb_clf.booster_, xt),
                               rtol=1e-5, atol=1e-5)


def test_files_that_are_not_model_files_are_refused(tmp_path, digits):
    x = digits[0][:10]
    pickled = tmp_path / "model.pkl"
    pickled.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(ValueError, match=r"\.json or \.ubj"):
        export_xgboost_file(pickled, x, tmp_path / "out.onnx")
    with pytest.raises(ValueError, match="not a LightGBM text model file"):
        export_lightgbm_file(pickled, x, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_unsupported_objectives_are_refused(digits, tmp_path):
    x, y, _, _ = digits
    ranker = xgb.train({"objective": "rank:pairwise", "max_depth": 2, "nthread": 2},
                       xgb.DMatrix(x[:200], y[:200]), 2)
    with pytest.raises(ValueError, match=r"objective 'rank:pairwise' is not supported"):
        export_xgboost(ranker, x[:10], tmp_path / "r.onnx")
    ova = lgb.train({"objective": "multiclassova", "num_class": CLASSES, "verbose": -1,
                     "num_threads": 2, "max_depth": 2}, lgb.Dataset(x[:200], y[:200]), 2)
    with pytest.raises(ValueError, match=r"objective 'multiclassova' is not supported"):
        export_lightgbm(ova, x[:10], tmp_path / "o.onnx")
    assert not list(tmp_path.glob("*.onnx"))


def test_opsets_inputs_and_model_types_are_checked(xgb_clf, lgb_clf, digits, tmp_path):
    x = digits[0]
    report = export_lightgbm(lgb_clf, x[:50], tmp_path / "o17.onnx", opset=17)
    assert report.opset == 17
    opsets = {o.domain: o.version for o in onnx.load(tmp_path / "o17.onnx").opset_import}
    assert opsets[""] == 17 and opsets["ai.onnx.ml"] >= 1
    with pytest.raises(ValueError, match="opset must be between"):
        export_xgboost(xgb_clf, x[:50], tmp_path / "o18.onnx", opset=18)
    with pytest.raises(ValueError, match=r"shape \(N, 64\)"):
        export_xgboost(xgb_clf, x[:50, :10], tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match="expected a lightgbm"):
        export_lightgbm(xgb_clf, x[:50], tmp_path / "bad.onnx")


# ---------------------------------------------------------------------------------------
# The layer-wise analysis of an exported ensemble
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xgb_clf", "lgb_clf"])
def test_layerwise_analysis_uses_tree_outputs(name, digits, tmp_path, request):
    model = request.getfixturevalue(name)
    x, y, _, _ = digits
    path = tmp_path / "model.onnx"
    export(model, x[:100], path)
    info = describe(load_model(path))
    assert "tree_outputs" in [la.name for la in info.layers]

    res = analyze_layers(path, {"input": x[:600]}, labels=y[:600], layers="tree_outputs")
    rows = {r.name: r for r in res.layers}
    assert list(rows) == ["input", "tree_outputs", "probabilities"]
    assert rows["tree_outputs"].kind == "layer" and rows["tree_outputs"].dims == 300
    for row in res.layers:
        assert row.error is None
        assert 0.0 <= row.values["si"] <= 1.0
    # on the samples it was trained on, the trained ensemble separates the digits better
    # than their pixels do
    assert rows["probabilities"].values["si"] > rows["input"].values["si"]
