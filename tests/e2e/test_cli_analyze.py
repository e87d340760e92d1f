"""The `layerscope layers` and `layerscope analyze` commands, in-process, on real models.

The commands go through the gRPC API of an embedded server; one server (on a temporary
data directory) serves the whole module, as it would serve a person's commands.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from helpers import models as M
from helpers.server import embedded_server_fixture

from layerscope.client.cli import main

CNN_AUTO = {"/relu1/Relu_output_0", "/relu2/Relu_output_0", "/pool/MaxPool_output_0",
            "/relu3/Relu_output_0", "logits"}


embedded_server = embedded_server_fixture("cli-analyze-data")


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def cnn_npz(cnn, tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn_npz")
    train, test = d / "train.npz", d / "test.npz"
    np.savez(train, image=cnn.train["image"][:200], labels=cnn.y[:200])
    np.savez(test, image=cnn.test["image"][:80], labels=cnn.yt[:80])
    return train, test


# ---------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------


def test_layers_lists_every_candidate_and_stars_the_auto_ones(cnn, capsys):
    code, out, _ = run_cli(["layers", cnn.path], capsys)
    assert code == 0
    rows = {}
    for line in out.splitlines():
        m = re.match(r"^  ([* ]) +(\d+)  (\S+) +(\S+)", line)
        if m:
            rows[m.group(3)] = (m.group(1) == "*", m.group(4))
    assert list(rows) == [name for name, _, _ in M.CNN_LAYERS]
    assert {n for n, (star, _) in rows.items() if star} == CNN_AUTO
    assert all(rows[name][1] == op for name, op, _ in M.CNN_LAYERS)
    assert "image  float32  [batch, 1, 8, 8]" in out
    assert "logits  float32  [batch, 10]" in out
    assert f"candidate layers ({len(M.CNN_LAYERS)}; * = auto)" in out


def test_layers_json_parses(cnn, capsys):
    code, out, _ = run_cli(["layers", cnn.path, "--json"], capsys)
    assert code == 0
    d = json.loads(out)  # Model.to_dict(): the Model message's fields
    assert d["id"] == M.sha256(cnn.path)
    assert d["inputs"] == [{"name": "image", "dtype": "float32",
                            "shape": ["batch", "1", "8", "8"]}]
    assert [la["name"] for la in d["layers"]] == [name for name, _, _ in M.CNN_LAYERS]
    assert {la["name"] for la in d["layers"] if la.get("auto")} == CNN_AUTO
    conv = d["layers"][0]
    assert conv["shape"] == ["batch", "16", "8", "8"]
    assert int(conv["elements_per_sample"]) == 1024
    assert conv["layout"] == "channels_first"
    assert int(d["opsets"]["ai.onnx"]) == M.OPSET


def test_layers_of_an_external_data_model(external_model, capsys):
    """A model saved with its weights in a file beside it (the usual form of large
    models) is a model the library loads from its path; the command takes it too."""
    code, out, err = run_cli(["layers", external_model, "--json"], capsys)
    assert code == 0, err
    assert "/block2/Add_output_0" in [la["name"] for la in json.loads(out)["layers"]]


def test_layers_of_a_truncated_model_exits_2(cnn, tmp_path, capsys):
    bad = tmp_path / "cut.onnx"
    data = cnn.path.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    code, out, err = run_cli(["layers", bad], capsys)
    assert code == 2 and out == ""
    assert "not a valid ONNX model" in err


def test_layers_of_an_escaping_external_location_exits_2(external_model, tmp_path, capsys):
    path = M.rewrite_locations(external_model, tmp_path / "esc" / "model.onnx",
                               lambda old: f"../../{old}")
    code, _, err = run_cli(["layers", path], capsys)
    assert code == 2 and "external data" in err


# ---------------------------------------------------------------------------------------
# analyze
# ---------------------------------------------------------------------------------------


def test_analyze_json_has_the_layer_table(cnn, cnn_npz, capsys):
    train, test = cnn_npz
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--test", test,
                            "--orders", "1,5", "--probe", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert {"model", "layers", "task", "plateau", "options"} <= set(d)
    assert d["model"]["inputs"][0]["name"] == "image"
    assert d["model_path"] == str(cnn.path)
    assert [la["name"] for la in d["layers"]] == ["image"] + [
        n for n, _, _ in M.CNN_LAYERS if n in CNN_AUTO]
    for la in d["layers"]:
        assert {"name", "op_type", "shape", "reduction", "dims", "si", "high_order_si",
                "soft_order_si", "center_si", "cross", "probe"} <= set(la), la["name"]
        assert set(la["high_order_si"]) == {"1", "5"}
        assert {"si", "high_order_si", "center_si"} <= set(la["cross"])
        assert {"train_accuracy", "test_accuracy"} <= set(la["probe"])
        assert 0.0 <= la["si"] <= 1.0 and 0.0 <= la["cross"]["si"] <= 1.0
    pool = next(la for la in d["layers"] if la["name"] == "/pool/MaxPool_output_0")
    assert pool["shape"] == [16, 4, 4] and pool["dims"] == 256 and pool["reduction"] == \
        "flatten"


def test_analyze_probe_names_its_model_and_chosen_penalty(cnn, cnn_npz, capsys):
    train, test = cnn_npz
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--test", test,
                            "--layers", "/pool/MaxPool_output_0", "--reduce", "mean",
                            "--probe", "logistic", "--json"], capsys)
    assert code == 0, out
    d = json.loads(out)
    probes = [la["probe"] for la in d["layers"] if "probe" in la]
    assert probes and all(p["model"] == "logistic" and p["alpha"] in p["alpha_grid"]
                          for p in probes)
    assert d["options"]["probe_model"] == "logistic"
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--layers",
                            "/pool/MaxPool_output_0", "--probe"], capsys)
    assert code == 0 and "alpha" in out
    with pytest.raises(SystemExit) as exc:  # argparse refuses it before anything runs
        run_cli(["analyze", cnn.path, "--data", train, "--probe", "lasso"], capsys)
    assert exc.value.code == 2 and "logistic" in capsys.readouterr().err


def test_analyze_json_values_equal_the_api(cnn, cnn_npz, capsys):
    from layerscope.server.analysis import analyze_layers

    train, _ = cnn_npz
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--layers",
                            "op:Conv,Gemm", "--reduce", "mean", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    with np.load(train) as z:
        api = analyze_layers(cnn.path, {"image": z["image"]}, labels=z["labels"],
                             layers="op:Conv,Gemm", reduce="mean").to_dict()
    assert d["layers"] == json.loads(json.dumps(api["layers"]))
    assert [la["op_type"] for la in d["layers"][1:]] == ["Conv", "Conv", "Gemm", "Gemm"]
    assert d["layers"][1]["reduction"] == "mean" and d["layers"][1]["dims"] == 16


def test_analyze_single_input_takes_the_inputs_key(cnn, cnn_npz, tmp_path, capsys):
    train, _ = cnn_npz
    alt = tmp_path / "inputs.npz"
    with np.load(train) as z:
        np.savez(alt, inputs=z["image"], labels=z["labels"])
    outs = []
    for path in (train, alt):
        code, out, _ = run_cli(["analyze", cnn.path, "--data", path, "--json"], capsys)
        assert code == 0
        outs.append(json.loads(out)["layers"])
    assert outs[0] == outs[1]


def test_analyze_batch_size_not_dividing_n(cnn, cnn_npz, capsys):
    train, _ = cnn_npz
    tables = []
    for extra in ([], ["--batch-size", "7"]):
        code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--json", *extra],
                               capsys)
        assert code == 0
        tables.append(json.loads(out)["layers"])
    assert tables[0] == tables[1]


def test_analyze_two_input_npz(two_inputs, tmp_path, capsys):
    path = tmp_path / "two.npz"
    np.savez(path, image=two_inputs.train["image"][:100], extra=two_inputs.train["extra"][:100],
             labels=two_inputs.y[:100])
    code, out, _ = run_cli(["analyze", two_inputs.path, "--data", path, "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    assert [la["name"] for la in d["layers"] if la["kind"] == "input"] == ["image", "extra"]


def test_analyze_token_model(transformer, tmp_path, capsys):
    path = tmp_path / "tokens.npz"
    np.savez(path, tokens=transformer.train["tokens"][:100], labels=transformer.y[:100])
    code, out, err = run_cli(["analyze", transformer.path, "--data", path, "--reduce", "mean",
                              "--layers", "op:LayerNormalization", "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert [la["name"] for la in d["layers"]] == [
        "/ln1/LayerNormalization_output_0", "/ln2/LayerNormalization_output_0", "logits"]
    assert d["layers"][0]["reduction"] == "mean" and d["layers"][0]["dims"] == 16


def test_analyze_first_token_of_a_classifier(transformer, tmp_path, capsys):
    """--reduce first_token (CLS pooling) on a model whose output is (batch, classes)."""
    path = tmp_path / "tokens.npz"
    np.savez(path, tokens=transformer.train["tokens"][:100], labels=transformer.y[:100])
    code, out, err = run_cli(["analyze", transformer.path, "--data", path, "--reduce",
                              "first_token", "--layers", "op:LayerNormalization", "--json"],
                             capsys)
    assert code == 0, err
    first = json.loads(out)["layers"][0]
    assert first["reduction"] == "first_token" and first["dims"] == 16


def test_analyze_plot_writes_a_png(cnn, cnn_npz, tmp_path, capsys):
    train, test = cnn_npz
    png = tmp_path / "plots" / "layers.png"
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--test", test, "--plot",
                            png], capsys)
    assert code == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000
    assert f"plot written to {png}" in out


def test_analyze_table_names_every_layer_and_the_plateau(cnn, cnn_npz, capsys):
    train, test = cnn_npz
    code, out, _ = run_cli(["analyze", cnn.path, "--data", train, "--test", test], capsys)
    assert code == 0
    assert out.startswith(f"{cnn.path}: classification, 6 layers")
    for name in CNN_AUTO:
        assert name in out
    assert "si stops improving at layer" in out


def test_analyze_nan_layer_is_reported_not_fatal(nan_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    path = tmp_path / "nan.npz"
    np.savez(path, x=x, labels=(x[:, 0] > 0).astype(np.int64))
    code, out, _ = run_cli(["analyze", nan_model, "--data", path, "--layers", "all",
                            "--json"], capsys)
    assert code == 0
    layers = {la["name"]: la for la in json.loads(out)["layers"]}
    assert "error" in layers["log_x"]
    assert "si" in layers["hidden"] and "error" not in layers["hidden"]
    code, out, _ = run_cli(["analyze", nan_model, "--data", path, "--layers", "all"], capsys)
    assert code == 0
    assert "error:" in out and "warning: layer 'log_x' was not analysed" in out


def test_analyze_leaves_the_model_file_unchanged(cnn, cnn_npz, capsys):
    before = M.sha256(cnn.path)
    code, _, _ = run_cli(["analyze", cnn.path, "--data", cnn_npz[0], "--layers", "all",
                          "--json"], capsys)
    assert code == 0 and M.sha256(cnn.path) == before


# ---------------------------------------------------------------------------------------
# analyze: bad input exits 2 with a message
# ---------------------------------------------------------------------------------------


def test_analyze_wrong_input_name_exits_2_naming_the_input(cnn, tmp_path, capsys):
    path = tmp_path / "bad.npz"
    np.savez(path, pixels=cnn.train["image"][:20], labels=cnn.y[:20])
    code, out, err = run_cli(["analyze", cnn.path, "--data", path], capsys)
    assert code == 2 and out == ""
    assert "'image'" in err and "'pixels'" in err


def test_analyze_without_labels_exits_2(cnn, tmp_path, capsys):
    path = tmp_path / "nolabels.npz"
    np.savez(path, image=cnn.train["image"][:20])
    code, _, err = run_cli(["analyze", cnn.path, "--data", path], capsys)
    assert code == 2 and "labels" in err


def test_analyze_not_an_npz_exits_2(cnn, tmp_path, capsys):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"definitely not a zip file")
    code, _, err = run_cli(["analyze", cnn.path, "--data", path], capsys)
    assert code == 2 and "junk.npz" in err


def test_analyze_wrong_shape_exits_2(cnn, tmp_path, capsys):
    path = tmp_path / "shape.npz"
    np.savez(path, image=np.zeros((20, 64), np.float32), labels=np.arange(20) % 2)
    code, _, err = run_cli(["analyze", cnn.path, "--data", path], capsys)
    assert code == 2 and "'image'" in err and "rank" in err


def test_analyze_float_tokens_exit_2(transformer, tmp_path, capsys):
    path = tmp_path / "float_tokens.npz"
    np.savez(path, tokens=transformer.train["tokens"][:20].astype(np.float64),
             labels=transformer.y[:20])
    code, _, err = run_cli(["analyze", transformer.path, "--data", path], capsys)
    assert code == 2 and "int64" in err and "'tokens'" in err


def test_analyze_unknown_layer_exits_2_with_close_matches(cnn, cnn_npz, capsys):
    code, _, err = run_cli(["analyze", cnn.path, "--data", cnn_npz[0], "--layers",
                            "/relu3/Relu_output"], capsys)
    assert code == 2 and "/relu3/Relu_output_0" in err


def test_analyze_bad_reduction_exits_2(cnn, cnn_npz, capsys):
    code, _, err = run_cli(["analyze", cnn.path, "--data", cnn_npz[0], "--reduce",
                            "project:abc"], capsys)
    assert code == 2 and "project:N" in err


def test_analyze_test_set_of_another_task_exits_2(cnn, cnn_npz, tmp_path, capsys):
    path = tmp_path / "targets.npz"
    np.savez(path, image=cnn.test["image"][:20], targets=np.zeros(20))
    code, _, err = run_cli(["analyze", cnn.path, "--data", cnn_npz[0], "--test", path],
                           capsys)
    assert code == 2 and "targets" in err


def test_analyze_corrupt_model_exits_2(cnn_npz, tmp_path, capsys):
    model = tmp_path / "corrupt.onnx"
    model.write_bytes(b"\x08\x07\x12\xff\xff\xff garbage")
    code, _, err = run_cli(["analyze", model, "--data", cnn_npz[0]], capsys)
    assert code == 2 and "not a valid ONNX model" in err
