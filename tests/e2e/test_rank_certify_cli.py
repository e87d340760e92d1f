"""The `layerscope rank` and `layerscope certify` commands, end to end (one embedded server
for the module, as a person's shell would reuse it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import rank as H
from helpers import reference as R
from helpers.server import embedded_server_fixture

from layerscope.client.cli import main
from layerscope.server.metrics.baselines import gbc, transrate
from layerscope.server.metrics.guarantee import ClassificationReference

pytestmark = pytest.mark.timeout(180)

INFO_COLS = [0, 1]
NOISE_COLS = [2, 3, 4]


embedded_server = embedded_server_fixture("cli-rank-data")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("cli-rank-files")
    x, y = H.informative_data()
    rng = np.random.default_rng(2)
    xq = (x[:8] + rng.normal(0, 0.3, (8, 6))).astype(np.float32)
    info = H.selection_mlp(6, INFO_COLS, n_classes=3, seed=1)
    paths = {"info": root / "info.onnx", "noise": root / "noise.onnx",
             "nohead": root / "nohead.onnx", "target": root / "target.npz",
             "ref": root / "ref.npz", "q_inputs": root / "q_inputs.npz",
             "q_features": root / "q_features.npz", "q_wide": root / "q_wide.npz",
             "no_labels": root / "no_labels.npz"}
    paths["info"].write_bytes(info.SerializeToString())
    paths["noise"].write_bytes(H.selection_mlp(6, NOISE_COLS, n_classes=3, seed=2)
                               .SerializeToString())
    paths["nohead"].write_bytes(H.no_head_model(6).SerializeToString())
    np.savez(paths["target"], inputs=x, labels=y)
    np.savez(paths["ref"], x=x, labels=y)
    np.savez(paths["q_inputs"], x=xq)
    np.savez(paths["q_features"], features=H.hidden_of(xq, INFO_COLS))
    np.savez(paths["q_wide"], features=np.zeros((2, 5), np.float32))
    np.savez(paths["no_labels"], x=x)
    return {"paths": {k: str(v) for k, v in paths.items()}, "x": x, "y": y, "xq": xq,
            "info": info}


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_rank_json_puts_the_informative_model_first(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["rank", p["noise"], p["info"], "--data", p["target"], "--json"],
                           capsys)
    assert code == 0
    res = json.loads(out)
    assert res["ranking"] == [p["info"], p["noise"]], "models are named by the paths given"
    assert res["ranking_ids"] == [_sha256(p["info"]), _sha256(p["noise"])]
    rows = {m["model"]: m for m in res["models"]}
    assert rows[p["info"]]["model_id"] == _sha256(p["info"])
    hid = H.hidden_of(files["x"], INFO_COLS)
    assert rows[p["info"]]["rank"] == 1 and rows[p["noise"]]["rank"] == 2
    assert rows[p["info"]]["all_features"] == pytest.approx(H.si(hid, files["y"]), rel=1e-12)
    assert rows[p["info"]]["layer"] == "act"


def test_rank_table_output_names_the_models(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["rank", p["noise"], p["info"], "--data", p["target"]], capsys)
    assert code == 0
    assert "info.onnx" in out and "noise.onnx" in out


def test_rank_baselines_by_name_in_json_and_table(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["rank", p["noise"], p["info"], "--data", p["target"], "--baselines",
                            "transrate,gbc,leep", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    rows = {m["model"]: m for m in res["models"]}
    for path, cols in ((p["info"], INFO_COLS), (p["noise"], NOISE_COLS)):
        hid = H.hidden_of(files["x"], cols).astype(np.float64)
        b = rows[path]["baselines"]
        assert b["transrate"] == pytest.approx(transrate(hid, files["y"]), rel=1e-6)
        assert b["gbc"] == pytest.approx(gbc(hid, files["y"]), rel=1e-6, abs=1e-12)
        assert "leep" in b and "logme" not in b  # leep from the model's probabilities
    assert res["options"]["baseline_names"] == ["transrate", "gbc", "leep"]
    code, out, _ = run_cli(["rank", p["noise"], p["info"], "--data", p["target"], "--baselines",
                            "all"], capsys)
    assert code == 0
    assert "shrinkage_h" in out and "nleep" in out and "ncti" in out


def test_rank_unknown_baseline_exits_2_naming_the_valid_names(files, capsys):
    p = files["paths"]
    code, out, err = run_cli(["rank", p["info"], "--data", p["target"], "--baselines",
                              "logme,nope"], capsys)
    assert code == 2, (out, err)
    assert "nope" in err and "nleep" in err and "shrinkage_h_score" in err


def test_rank_method_seed_reproduces_algorithm_2_and_the_table_names_the_method(files,
                                                                               capsys):
    p = files["paths"]
    code, out, _ = run_cli(["rank", p["info"], "--data", p["target"], "--method", "seed",
                            "--json"], capsys)
    assert code == 0
    row = json.loads(out)["models"][0]
    hid = H.hidden_of(files["x"], INFO_COLS)
    order, scores, best = R.feature_ranking_si(hid, files["y"], max_features=32)
    assert row["method"] == "seed" and row["selection_order"] == order
    assert row["selected"] == pytest.approx(max(scores), rel=1e-12)
    code, out, _ = run_cli(["rank", p["info"], "--data", p["target"]], capsys)
    assert code == 0 and "method soft_order" in out


def test_rank_unknown_method_exits_2(files, capsys):
    p = files["paths"]
    code, _, err = run_cli(["rank", p["info"], "--data", p["target"], "--method", "best"],
                           capsys)
    assert code == 2 and "method must be one of soft_order, folded, seed; got 'best'" in err


def test_certify_table_says_a_guarantee_is_not_correctness(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["certify", p["info"], "--reference", p["ref"], "--queries",
                            p["q_inputs"]], capsys)
    assert code == 0 and "cannot change within the uncertainty, not that it is correct" in out


def test_certify_json_with_raw_inputs_gives_guarantees_and_predictions(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["certify", p["info"], "--reference", p["ref"], "--queries",
                            p["q_inputs"], "--uncertainty", "0.2", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert res["reference"]["layer"] == "act"
    want = ClassificationReference(H.hidden_of(files["x"], INFO_COLS), files["y"]).certify(
        H.hidden_of(files["xq"], INFO_COLS), 0.2)
    pred = np.argmax(H.ort_logits(files["info"], files["xq"]), axis=1)
    assert [r["nn_label"] for r in res["results"]] == want["nn_label"].tolist()
    assert [r["guarantee"] for r in res["results"]] == want["guarantee"].tolist()
    assert [r["prediction"] for r in res["results"]] == pred.tolist()
    np.testing.assert_allclose([r["certified_radius"] for r in res["results"]],
                               want["certified_radius"], rtol=1e-12)


def test_certify_json_with_features(files, capsys):
    p = files["paths"]
    code, out, _ = run_cli(["certify", p["info"], "--reference", p["ref"], "--queries",
                            p["q_features"], "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    hid = H.hidden_of(files["x"], INFO_COLS)
    q = H.hidden_of(files["xq"], INFO_COLS)
    assert [r["nn_index"] for r in res["results"]] == H.nearest(hid, q).tolist()
    assert all("prediction" not in r for r in res["results"])


@pytest.mark.parametrize("args,needle", [
    (["rank", "{noise}", "{info}", "--data", "{target}", "--layer", "{info}=nope"], "nope"),
    (["rank", "{noise}", "--data", "{target}", "--layer", "other.onnx=act"], "MODEL=TENSOR"),
    (["rank", "{nohead}", "--data", "{target}"], "name the layer"),
    (["certify", "{nohead}", "--reference", "{ref}", "--queries", "{q_inputs}"],
     "name the layer"),
    (["certify", "{info}", "--reference", "{ref}", "--queries", "{q_wide}"], "features"),
    (["certify", "{info}", "--reference", "{ref}", "--queries", "{q_inputs}",
      "--uncertainty", "-1"], "uncertainty"),
    (["certify", "{info}", "--reference", "{ref}", "--queries", "{q_inputs}", "--order",
      "500"], "order"),
    (["certify", "{info}", "--reference", "{no_labels}", "--queries", "{q_inputs}"],
     "labels"),
    (["certify", "{info}", "--reference", "{ref}", "--queries", "{info}.missing.npz"],
     "no such file"),
])
def test_bad_input_exits_2_with_the_problem_named(files, capsys, args, needle):
    argv = [a.format(**files["paths"]) for a in args]
    code, out, err = run_cli(argv + ["--json"], capsys)
    assert code == 2, (out, err)
    assert needle in err
    assert out == ""


@pytest.mark.parametrize("command", [
    ["rank", "{noise}", "{nohead}", "--data", "{target}"],
    ["certify", "{nohead}", "--reference", "{ref}", "--queries", "{q_inputs}"],
])
def test_errors_name_the_model_by_its_file_not_its_hash(files, capsys, command):
    from helpers.models import sha256

    argv = [a.format(**files["paths"]) for a in command]
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert Path(files["paths"]["nohead"]).name in err
    assert sha256(Path(files["paths"]["nohead"])) not in err
