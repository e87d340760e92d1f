"""PyTorch and scikit-learn exporters: parity, names, dynamic batch, the CLI file form,
and the exported models analysed layer by layer through a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from helpers import rank as H
from sklearn.datasets import load_diabetes, load_digits
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from layerscope.client.cli import main
from layerscope.client.client import Client
from layerscope.exporters import ParityError, export, framework_of
from layerscope.exporters.base import MissingExtra, require
from layerscope.server.graph import describe, load_model


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return (x[:600] / 16.0).astype(np.float32), y[:600].astype(np.int64)


@pytest.fixture(scope="module")
def torch_net(digits):
    x, y = digits
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def mlp(digits):
    x, y = digits
    return MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0).fit(x, y)


def run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})


def test_framework_is_told_by_the_model_type(torch_net, mlp):
    assert framework_of(torch_net) == "torch"
    assert framework_of(mlp) == "sklearn"
    with pytest.raises(ValueError, match="cannot tell the framework"):
        framework_of(object())


def test_torch_export_matches_the_module_with_a_dynamic_batch(torch_net, digits, tmp_path):
    x, _ = digits
    report = export(torch_net, x[:20], tmp_path / "net.onnx")
    assert report.framework == "torch" and report.inputs == ["input"]
    assert report.parity[0].max_abs < 1e-4
    with torch.no_grad():
        want = torch_net(torch.from_numpy(x[:57])).numpy()
    (got,) = run(tmp_path / "net.onnx", x[:57])  # another batch size than the sample's
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_parity_failure_is_reported_with_the_output_and_the_size(torch_net, digits, tmp_path):
    x, _ = digits
    with pytest.raises(ParityError, match="output 'output'.*above the tolerance"):
        export(torch_net, x[:20], tmp_path / "strict.onnx", tolerance=1e-12)
    assert not (tmp_path / "strict.onnx").exists()  # nothing written on failure


def test_sklearn_mlp_export_names_hidden_layers_and_matches_predict_proba(mlp, digits,
                                                                            tmp_path):
    x, _ = digits
    report = export(mlp, x[:50], tmp_path / "mlp.onnx")
    assert report.outputs == ["label", "probabilities"]
    label, proba = run(tmp_path / "mlp.onnx", x[:80])
    np.testing.assert_array_equal(label, mlp.predict(x[:80]))
    np.testing.assert_allclose(proba, mlp.predict_proba(x[:80]), rtol=1e-4, atol=1e-5)
    info = describe(load_model(tmp_path / "mlp.onnx"))
    auto = {la.name for la in info.layers if la.auto}
    assert {"hidden1", "hidden2"} <= auto


def test_sklearn_pipeline_regressor_export(tmp_path):
    x, y = load_diabetes(return_X_y=True)
    x = x.astype(np.float32)
    model = make_pipeline(StandardScaler(),
                          MLPRegressor(hidden_layer_sizes=(16,), max_iter=500, random_state=0))
    model.fit(x, y)
    report = export(model, x[:40], tmp_path / "reg.onnx", tolerance=1e-3)
    (pred,) = run(tmp_path / "reg.onnx", x[:40])
    np.testing.assert_allclose(pred.ravel(), model.predict(x[:40]), rtol=1e-3)
    assert report.parity[0].max_rel < 1e-3


def test_skops_file_exports_through_the_cli(mlp, digits, tmp_path, capsys):
    skops_io = pytest.importorskip("skops.io")
    x, _ = digits
    skops_io.dump(mlp, tmp_path / "mlp.skops")
    np.savez(tmp_path / "sample.npz", inputs=x[:30])
    code = main(["export", "sklearn", str(tmp_path / "mlp.skops"), "--sample",
                 str(tmp_path / "sample.npz"), "--out", str(tmp_path / "cli.onnx"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["framework"] == "sklearn"
    assert (tmp_path / "cli.onnx").is_file()


def test_cli_refuses_torch_files_and_names_why(tmp_path, capsys):
    (tmp_path / "model.pt").write_bytes(b"not read")
    np.savez(tmp_path / "s.npz", inputs=np.zeros((2, 3), np.float32))
    code = main(["export", "torch", str(tmp_path / "model.pt"), "--sample",
                 str(tmp_path / "s.npz"), "--out", str(tmp_path / "o.onnx")])
    assert code == 2
    assert "pickle" in capsys.readouterr().err


def test_missing_extra_names_the_extra():
    with pytest.raises(MissingExtra, match=r"layerscope\[nosuch\]"):
        require("layerscope_no_such_framework", "nosuch")


def test_exported_models_are_analysed_through_a_real_server(torch_net, mlp, digits, tmp_path):
    x, y = digits
    with Client.local(tmp_path / "data") as client:
        for model in (torch_net, mlp):
            stored = client.upload_model(model, sample_inputs=x[:20])
            assert any(la.auto for la in stored.layers)
            res = client.analyze_layers(stored, {stored.inputs[0].name: x}, labels=y)
            rows = res.layers
            assert rows[0]["kind"] == "input"
            assert rows[0]["si"] == pytest.approx(H.si(x, y), abs=0)
            assert all(0.0 <= r["si"] <= 1.0 for r in rows if "si" in r)
            last_layer = [r for r in rows if r["kind"] != "input"][-1]
            assert last_layer["si"] > rows[0]["si"]  # a trained classifier separates better
