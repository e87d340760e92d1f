"""Compression (docs/compress.md): the cut follows the rule, the smaller model is the
original's prefix plus a ridge head that equals scikit-learn's, with the original names.

Every expected value is computed here: the cut tensor from the original model with the
tensor added as an output by hand, the reduction in NumPy, the head with scikit-learn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from helpers import models as M
from onnx import TensorProto, helper, numpy_helper
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from layerscope.server.analysis.compress import compress_model
from layerscope.server.graph import LayerSelectionError
from layerscope.server.graph.compress import backward_slice

ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.timeout(600)


def session(model: bytes | onnx.ModelProto) -> Any:
    raw = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(raw, providers=["CPUExecutionProvider"])


def tensor_of(model: bytes, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """``name`` computed by ``model``, made an output by hand (no layerscope code)."""
    proto = onnx.load_from_string(model)
    proto.graph.output.append(helper.make_empty_tensor_value_info(name))
    return np.asarray(session(proto).run([name], feeds)[0])


def reduced(a: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "mean" and a.ndim > 2:
        a = a.mean(axis=tuple(range(2, a.ndim)))
    return a.reshape(len(a), -1).astype(np.float64)


def sklearn_head(xtr: np.ndarray, target: np.ndarray, alpha: float = 1.0) -> Any:
    """StandardScaler + Ridge(alpha): the head the compressed model must equal."""
    scaler = StandardScaler().fit(xtr)
    std = np.sqrt(scaler.var_)
    scaler.scale_ = std + 1e-10  # the same guard against constant features as the head
    ridge = Ridge(alpha=alpha).fit(scaler.transform(xtr), target)
    return lambda x: ridge.predict(scaler.transform(x))


def weights(proto: onnx.ModelProto) -> int:
    """Float values in the initializers and Constant nodes (integer shapes are not)."""
    tensors = [*proto.graph.initializer,
               *(a.t for n in proto.graph.node if n.op_type == "Constant" for a in n.attribute)]
    return sum(int(np.prod(t.dims)) for t in tensors if t.data_type == TensorProto.FLOAT)


def check_compressed(built: M.Built, report: dict[str, Any], small: bytes, task: str) -> None:
    """The compressed model loads fresh, keeps the names, its prefix is the original's and
    its head equals scikit-learn's fit on the same features."""
    original = built.path.read_bytes()
    fresh = session(small)
    orig = session(original)
    assert [i.name for i in fresh.get_inputs()] == [i.name for i in orig.get_inputs()]
    assert [o.name for o in fresh.get_outputs()] == [o.name for o in orig.get_outputs()]
    cut = report["cut"]["layer"]
    want = tensor_of(original, cut, built.test)
    got = tensor_of(small, report["cut"]["tensor_in_compressed"], built.test)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)

    red = report["cut"]["reduction"]
    xtr = reduced(tensor_of(original, cut, built.train), red)
    xte = reduced(want, red)
    out = fresh.run(None, built.test)[0]
    assert out.shape[0] == len(built.yt)
    if task == "classification":
        classes = np.arange(out.shape[1])
        head = sklearn_head(xtr, (built.y[:, None] == classes[None, :]).astype(np.float64))
        want_acc = float(np.mean(np.argmax(head(xte), axis=1) == built.yt))
        got_acc = float(np.mean(np.argmax(out, axis=1) == built.yt))
        assert got_acc == want_acc
    else:
        head = sklearn_head(xtr, built.y.astype(np.float64))
        want_r2 = r2_score(built.yt, head(xte))
        got_r2 = r2_score(built.yt, out)
        assert got_r2 == pytest.approx(want_r2, abs=1e-5)
        np.testing.assert_allclose(out.reshape(-1), head(xte).reshape(-1), atol=1e-4)
        got_acc = got_r2
    assert report["comparison"]["compressed"]["score"] == pytest.approx(got_acc, abs=1e-6)
    assert report["comparison"]["compressed"]["parameters"] == weights(onnx.load_from_string(small))
    assert report["comparison"]["prefix_max_abs_diff"] <= 1e-5


def expected_cut(report: dict[str, Any], tolerance: float) -> str:
    """The rule, applied to the report's rows: the earliest layer whose test probe score is
    within ``tolerance`` of the model's own."""
    ref = report["reference"]["score"]
    return next(r["layer"] for r in report["candidates"]
                if r["probe_test"] is not None and r["probe_test"] >= ref - tolerance)


def test_a_cnn_cut_early_is_its_prefix_plus_a_head_that_equals_scikit_learns(cnn):
    res = compress_model(cnn.path.read_bytes(), cnn.train, labels=cnn.y, test=cnn.test,
                         test_labels=cnn.yt, layers="all", tolerance=0.2)
    report = res.to_dict()
    assert report["cut"]["layer"] == expected_cut(report, 0.2)
    assert report["cut"]["layer"] != "logits"
    assert report["cut"]["reduction"] == "mean"  # a GlobalAveragePool in the graph
    check_compressed(cnn, report, res.model, "classification")
    own = np.argmax(session(cnn.path.read_bytes()).run(None, cnn.test)[0], axis=1)
    assert report["reference"]["score"] == float(np.mean(own == cnn.yt))


def test_a_residual_net_cut_keeps_both_branches_of_each_merge(resnet):
    res = compress_model(resnet.path.read_bytes(), resnet.train, labels=resnet.y,
                         test=resnet.test, test_labels=resnet.yt, tolerance=0.05)
    report = res.to_dict()
    assert report["cut"]["layer"] == expected_cut(report, 0.05)
    check_compressed(resnet, report, res.model, "classification")


def test_an_mlp_regressor_head_has_the_r2_of_a_scikit_learn_ridge(tmp_path):
    reg = M.build_mlp_regressor(tmp_path)
    res = compress_model(reg.path.read_bytes(), reg.train, targets=reg.y, test=reg.test,
                         test_targets=reg.yt, layers="all", tolerance=0.05)
    report = res.to_dict()
    assert report["metric"] == "r2" and report["index"] == "smi_linear"
    assert report["cut"]["layer"] == expected_cut(report, 0.05)
    check_compressed(reg, report, res.model, "regression")


def test_a_pretrained_efficientnet_lite_compresses_to_its_prefix(tmp_path):
    reason = M.efficientnet_available()
    if reason:
        pytest.skip(reason)
    net = M.build_efficientnet(tmp_path, n_train=200, n_test=100)
    res = compress_model(net.path.read_bytes(), net.train, labels=net.y, test=net.test,
                         test_labels=net.yt, tolerance=0.02)
    report = res.to_dict()
    assert report["cut"]["layer"] == expected_cut(report, 0.02)
    check_compressed(net, report, res.model, "classification")
    orig_params = weights(onnx.load(str(net.path)))
    assert report["comparison"]["original"]["parameters"] == orig_params
    assert report["comparison"]["compressed"]["parameters"] < orig_params


# the rule, on a model whose answer is known -------------------------------------------------
def xor_probe_accuracy(feats_tr: np.ndarray, y: np.ndarray, feats_te: np.ndarray,
                       yt: np.ndarray) -> float:
    head = sklearn_head(feats_tr.astype(np.float64),
                        (y[:, None] == np.arange(2)[None, :]).astype(np.float64))
    return float(np.mean(np.argmax(head(feats_te.astype(np.float64)), axis=1) == yt))


@pytest.fixture(scope="module")
def xor(tmp_path_factory) -> dict[str, Any]:
    path = M.xor_model(tmp_path_factory.mktemp("xor") / "xor.onnx")
    x, y = M.xor_data(600, 0)
    xt, yt = M.xor_data(300, 1)
    return {"model": path.read_bytes(), "x": x, "y": y, "xt": xt, "yt": yt}


def compress_xor(xor: dict[str, Any], **kw: Any) -> Any:
    return compress_model(xor["model"], {"x": xor["x"]}, labels=xor["y"], test={"x": xor["xt"]},
                          test_labels=xor["yt"], layers="all", **kw)


def test_the_cut_is_the_first_layer_where_the_label_becomes_linear(xor):
    # mix is linear in x: the XOR label is not; folded holds |x0 + x1| and |x0 - x1|.
    m = np.array([[1, -1, 1, -1], [1, -1, -1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    mix, mix_t = xor["x"] @ m, xor["xt"] @ m
    acc_mix = xor_probe_accuracy(mix, xor["y"], mix_t, xor["yt"])
    acc_fold = xor_probe_accuracy(np.maximum(mix, 0), xor["y"], np.maximum(mix_t, 0), xor["yt"])
    assert acc_mix < 0.7 and acc_fold > 0.98  # the case is built so
    report = compress_xor(xor, tolerance=0.01).to_dict()
    assert report["reference"]["score"] == 1.0
    assert [r["layer"] for r in report["candidates"]] == ["mix", "folded", "logits"]
    assert report["candidates"][0]["probe_test"] == pytest.approx(acc_mix, abs=1e-12)
    assert report["candidates"][1]["probe_test"] == pytest.approx(acc_fold, abs=1e-12)
    assert report["cut"]["layer"] == "folded"


def test_a_loose_tolerance_cuts_at_the_earliest_layer_and_a_zero_one_at_the_output(xor):
    assert compress_xor(xor, tolerance=0.6).to_dict()["cut"]["layer"] == "mix"
    res = compress_xor(xor, tolerance=0.0)
    report = res.to_dict()
    assert report["cut"]["layer"] == "logits"
    # the head's output takes the name 'logits'; the kept tensor is renamed, not lost
    kept = report["cut"]["tensor_in_compressed"]
    assert kept != "logits"
    want = tensor_of(xor["model"], "logits", {"x": xor["xt"]})
    np.testing.assert_allclose(tensor_of(res.model, kept, {"x": xor["xt"]}), want, atol=1e-6)


def test_criterion_si_cuts_where_si_stops_rising_by_more_than_the_tolerance(xor):
    from helpers.server import brute_si

    m = np.array([[1, -1, 1, -1], [1, -1, -1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    w = np.array([[-1, 1], [-1, 1], [1, -1], [1, -1]], np.float32)
    mix = xor["x"] @ m
    layers = {"mix": mix, "folded": np.maximum(mix, 0), "logits": np.maximum(mix, 0) @ w}
    si = [brute_si(f, xor["y"]) for f in layers.values()]
    for tolerance in (0.0, 0.02, 0.5):
        # the first layer after which SI never rises by more than the tolerance
        want = next(name for i, name in enumerate(layers)
                    if all(v - si[i] <= tolerance for v in si[i + 1:]))
        report = compress_xor(xor, tolerance=tolerance, criterion="si").to_dict()
        assert [r["si"] for r in report["candidates"]] == pytest.approx(si, abs=1e-12)
        assert report["cut"]["layer"] == want, (tolerance, si)


def test_select_features_gathers_the_selected_subset_before_the_head(xor):
    res = compress_xor(xor, tolerance=0.01, select_features=2)
    report = res.to_dict()
    chosen = report["cut"]["selected_features"]
    assert len(chosen) == 2
    proto = onnx.load_from_string(res.model)
    gathers = [n for n in proto.graph.node if n.op_type == "Gather"]
    assert len(gathers) == 1
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert inits[gathers[0].input[1]].tolist() == chosen
    m = np.array([[1, -1, 1, -1], [1, -1, -1, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32)
    ftr, fte = np.maximum(xor["x"] @ m, 0)[:, chosen], np.maximum(xor["xt"] @ m, 0)[:, chosen]
    want = xor_probe_accuracy(ftr, xor["y"], fte, xor["yt"])
    out = session(res.model).run(None, {"x": xor["xt"]})[0]
    assert float(np.mean(np.argmax(out, axis=1) == xor["yt"])) == want


def test_the_slice_keeps_the_nodes_the_cut_needs_and_nothing_else(cnn):
    proto = onnx.load(str(cnn.path))
    ops = [n.op_type for n in backward_slice(proto, "/relu1/Relu_output_0")]
    assert ops == ["Conv", "Relu"]
    res = compress_model(proto, cnn.train, labels=cnn.y, test=cnn.test, test_labels=cnn.yt,
                         layers="/relu1/Relu_output_0", tolerance=1.0)
    small = onnx.load_from_string(res.model)
    assert [n.op_type for n in small.graph.node] == [
        "Conv", "Relu", "GlobalAveragePool", "Flatten", "Gemm", "Identity"]
    assert {t.name for t in small.graph.initializer} >= {"conv1.weight", "conv1.bias"}
    assert not any("conv2" in t.name or "fc" in t.name for t in small.graph.initializer)


# bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tolerance", [-0.1, 1.5, float("nan")])
def test_a_tolerance_outside_zero_one_is_refused(xor, tolerance):
    with pytest.raises(ValueError, match=r"tolerance must be a number in \[0, 1\]"):
        compress_xor(xor, tolerance=tolerance)


def test_a_layer_that_does_not_exist_is_refused_with_the_closest_names(xor):
    with pytest.raises(LayerSelectionError, match="fold"):
        compress_model(xor["model"], {"x": xor["x"]}, labels=xor["y"], test={"x": xor["xt"]},
                       test_labels=xor["yt"], layers="foldd")


def no_batch_model(path: Path) -> Path:
    """x (batch, 4) -> ``colmean`` = ReduceMean over the batch axis (shape (4,)) -> out."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["colmean"], axes=[0], keepdims=0),
             helper.make_node("Add", ["x", "colmean"], ["logits"])]
    g = helper.make_graph(
        nodes, "nobatch", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_cut_tensor_without_a_batch_axis_is_refused(tmp_path):
    path = no_batch_model(tmp_path / "nobatch.onnx")
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    y = np.arange(40) % 4
    with pytest.raises(ValueError, match="colmean.*batch axis"):
        compress_model(path.read_bytes(), {"x": x}, labels=y, test={"x": x}, test_labels=y,
                       layers="colmean")
