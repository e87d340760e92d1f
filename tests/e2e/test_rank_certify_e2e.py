"""StartRanking, BuildReference, Certify and CertifyStream through a real server process.

One ``python -m layerscope.server.api`` serves the module (a second pair of processes
checks that references survive a restart). Models are tiny ONNX graphs whose head features
are known exactly (``helpers.rank.selection_mlp``); expected values are brute force, the
in-process ``ClassificationReference`` / ``RegressionReference`` on those features, and
onnxruntime run directly for the model's own predictions.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import rank as H
from helpers import reference as R
from helpers import server as F

from layerscope.server.metrics.baselines import ncti_terms
from layerscope.server.metrics.guarantee import ClassificationReference, RegressionReference
from layerscope.server.metrics.transfer import h_score

pytestmark = pytest.mark.timeout(120)

INFO_COLS = [0, 1]
NOISE_COLS = [2, 3, 4]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("rank-certify")
    with F.ServerProcess(root / "data") as s:
        yield s
        assert s.alive(), f"the server died during the tests:\n{s.log_tail()}"


@pytest.fixture(scope="module")
def client(server: F.ServerProcess) -> Any:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    x, y = H.informative_data()
    rng = np.random.default_rng(11)
    xq = np.concatenate([x[:6] + rng.normal(0, 0.3, (6, 6)),
                         rng.uniform(-1, 5, (6, 6))]).astype(np.float32)
    info = H.selection_mlp(6, INFO_COLS, n_classes=3, seed=1)
    noise = H.selection_mlp(6, NOISE_COLS, n_classes=3, seed=2)
    return {"x": x, "y": y, "xq": xq, "info": info.SerializeToString(), "info_proto": info,
            "noise": noise.SerializeToString()}


@pytest.fixture(scope="module")
def reference(client: Any, data: dict[str, Any]) -> Any:
    return client.build_reference(data["info"], {"x": data["x"]}, labels=data["y"],
                                  uncertainty=0.1)


def _same_results(got: list[dict], want: dict, prediction: np.ndarray | None = None) -> None:
    """Wire results against an in-process certify() dict (inf as absent)."""
    assert len(got) == len(want["dp"])
    for i, r in enumerate(got):
        assert r["nn_label"] == want["nn_label"][i]
        assert r["nn_index"] == want["nn_index"][i]
        assert r["guarantee"] == want["guarantee"][i]
        assert r["dp"] == pytest.approx(want["dp"][i], rel=1e-12, abs=1e-12)
        assert r["confidence"] == want["confidence"][i]
        if math.isinf(want["dn"][i]):
            assert r["dn"] is None and r["certified_radius"] is None
        else:
            assert r["dn"] == pytest.approx(want["dn"][i], rel=1e-12)
            assert r["certified_radius"] == pytest.approx(want["certified_radius"][i],
                                                          rel=1e-12, abs=1e-12)
        if prediction is None:
            assert "prediction" not in r
        else:
            assert r["prediction"] == prediction[i]


# ---------------------------------------------------------------------------------------
# Ranking
# ---------------------------------------------------------------------------------------


def test_start_ranking_orders_models_and_fills_every_field(client, data):
    x, y = data["x"], data["y"]
    noise_id = client.upload_model(data["noise"]).id
    info_id = client.upload_model(data["info"]).id
    res = client.rank_models([noise_id, info_id], {"x": x}, labels=y, method="seed")
    assert res.data["task"] == "classification"
    assert res.ranking == [info_id, noise_id]
    rows = {m["model"]: m for m in res.models}
    assert rows[info_id]["rank"] == 1 and rows[noise_id]["rank"] == 2
    for mid, cols in ((info_id, INFO_COLS), (noise_id, NOISE_COLS)):
        row, hid = rows[mid], H.hidden_of(x, cols)
        want = H.brute_forward(hid, lambda s, y=y: H.si(s, y), list(range(len(cols))), 32,
                               None)
        assert row["layer"] == "act" and "penultimate" in row["layer_rule"]
        assert row["reduction"]
        assert row["features"] == len(cols) and row["index"] == "si"
        assert row["all_features"] == pytest.approx(H.si(hid, y), rel=1e-12)
        assert row["selection_order"] == want["order"]
        np.testing.assert_allclose(row["selection_scores"], want["scores"], rtol=1e-12)
        assert row["selected"] == pytest.approx(max(want["scores"]), rel=1e-12)
        assert row["subset_size"] == len(want["best_subset"])
        assert row["tie_breakers"] == pytest.approx(
            {"soft_order_si[5]": H.soft_order_si(hid, y, 5), "center_si": H.center_si(hid, y)},
            rel=1e-12)
        assert row["seconds"] >= 0
        assert row["baselines"] is None
    assert res.data["options"]["order"] == 5 and res.data["options"]["max_features"] == 32


def test_start_ranking_keeps_the_boolean_baselines_and_adds_named_ones(client, data):
    x, y = data["x"], data["y"]
    legacy = client.rank_models([data["info"]], {"x": x}, labels=y, baselines=True).models[0]
    assert set(legacy["baselines"]) == {"logme", "leep", "nce", "h_score"}
    hid = H.hidden_of(x, INFO_COLS).astype(np.float64)
    assert legacy["baselines"]["h_score"] == pytest.approx(h_score(hid, y), rel=1e-6)
    named = client.rank_models([data["info"], data["noise"]], {"x": x}, labels=y,
                               baselines=["shrinkage_h_score", "ncti"])
    rows = {m["model"]: m for m in named.models}
    assert all(set(r["baselines"]) == {"shrinkage_h_score", "ncti", "ncti.vc", "ncti.seli",
                                       "ncti.ncc"} for r in rows.values())
    terms = [ncti_terms(H.hidden_of(x, c).astype(np.float64), y)
             for c in (INFO_COLS, NOISE_COLS)]
    for name, t in zip(rows, terms, strict=True):
        assert rows[name]["baselines"]["ncti.vc"] == pytest.approx(t["vc"], rel=1e-6)
    # NCTI across the two models: each term min-max normalised, so the better model scores
    # seli' + ncc' - vc' from {0, 1} terms
    norm = {k: [(v - min(a[k] for a in terms)) / (max(a[k] for a in terms)
                                                  - min(a[k] for a in terms))
                for v in (a[k] for a in terms)] for k in ("vc", "seli", "ncc")}
    want = [norm["seli"][i] + norm["ncc"][i] - norm["vc"][i] for i in range(2)]
    assert [r["baselines"]["ncti"] for r in rows.values()] == pytest.approx(want)


def test_start_ranking_refuses_an_unknown_baseline_name(client, data):
    err = F.client_error(lambda: client.rank_models([data["info"]], {"x": data["x"]},
                                                    labels=data["y"], baselines="gbc,nope"))
    assert err.code == "INVALID_ARGUMENT"
    assert "nope" in str(err) and "transrate" in str(err)


def test_start_ranking_passes_its_options(client, data):
    res = client.rank_models([data["noise"]], {"x": data["x"]}, labels=data["y"],
                             max_features=1, order=3, method="seed")
    row = res.models[0]
    assert len(row["selection_order"]) == 1
    assert set(row["tie_breakers"]) == {"soft_order_si[3]", "center_si"}
    assert res.data["options"]["max_features"] == 1


# ---------------------------------------------------------------------------------------
# References and certification
# ---------------------------------------------------------------------------------------


def test_build_reference_describes_the_head_layer_and_dataset_guarantee(reference, data):
    hid, y = H.hidden_of(data["x"], INFO_COLS), data["y"]
    assert reference.layer == "act" and reference.task == "classification"
    assert reference.n_samples == len(y) and reference.features == len(INFO_COLS)
    s = reference.summary
    d2 = H.self_sqdist(hid)
    same = y[:, None] == y[None, :]
    assert s["dw_max"] == pytest.approx(np.sqrt(np.where(same, d2, np.inf).min(axis=1)).max(),
                                        rel=1e-12)
    assert s["db_min"] == pytest.approx(np.sqrt(d2[~same].min()), rel=1e-12)
    assert s["confidence"] == H.si(hid, y) == 1.0
    assert s["uncertainty"] == 0.1
    assert s["guarantee"] == int(np.sign(0.5 * (s["db_min"] - s["dw_max"]) - 0.1))


@pytest.mark.parametrize("u,order", [(0.0, 1), (0.4, 1), (0.4, 3)])
def test_certify_features_equals_in_process_certify(client, reference, data, u, order):
    hid, y = H.hidden_of(data["x"], INFO_COLS), data["y"]
    q = H.hidden_of(data["xq"], INFO_COLS)
    got = client.certify(reference, q, uncertainty=u, order=order)
    want = ClassificationReference(hid, y).certify(q, u, order=order)
    _same_results(got.results, want)
    assert [r["nn_label"] for r in got.results] == list(y[H.nearest(hid, q)])
    assert got.warnings == []


def test_certify_stream_gives_the_unary_results_in_order(client, reference, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    batches = [q[:5], q[5:6], q[6:]]
    streamed = list(client.certify_stream(reference, batches, uncertainty=0.3))
    assert len(streamed) == 3
    for batch, res in zip(batches, streamed, strict=True):
        assert res.results == client.certify(reference, batch, uncertainty=0.3).results
    want = ClassificationReference(H.hidden_of(data["x"], INFO_COLS), data["y"]).certify(q, 0.3)
    _same_results([r for res in streamed for r in res.results], want)


def test_certify_raw_inputs_includes_the_models_own_prediction(client, reference, data):
    xq = data["xq"]
    got = client.certify(reference, inputs={"x": xq}, uncertainty=0.2)
    pred = np.argmax(H.ort_logits(data["info_proto"], xq), axis=1)
    want = ClassificationReference(H.hidden_of(data["x"], INFO_COLS), data["y"]).certify(
        H.hidden_of(xq, INFO_COLS), 0.2)
    _same_results(got.results, want, prediction=pred)


def test_single_label_reference_sends_dn_and_radius_as_absent(client, data):
    x = data["x"][:10]
    ref = client.build_reference(data["info"], {"x": x}, labels=np.full(10, 2))
    assert ref.summary["db_min"] is None
    got = client.certify(ref, H.hidden_of(data["xq"][:3], INFO_COLS), uncertainty=5.0)
    assert all(r["dn"] is None and r["certified_radius"] is None for r in got.results)
    assert [r["guarantee"] for r in got.results] == [1, 1, 1]
    assert got.warnings and "single label" in got.warnings[0]


@pytest.mark.parametrize("mode", ["conservative", "exact"])
def test_regression_reference_certify_equals_in_process(client, mode):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 4)).astype(np.float32)
    t = np.stack([x[:, 0] * 2.0, x[:, 1] - x[:, 0]], axis=1).astype(np.float64)
    model = H.selection_mlp(4, [0, 1, 2], n_classes=2, seed=3)
    ref = client.build_reference(model.SerializeToString(), {"x": x}, targets=t)
    assert ref.task == "regression" and ref.layer == "act"
    hid = H.hidden_of(x, [0, 1, 2])
    assert ref.summary["smi_linear"] == pytest.approx(H.smi_linear(hid, t), rel=1e-12)
    q = H.hidden_of(rng.normal(size=(5, 4)), [0, 1, 2])
    got = client.certify(ref, q, uncertainty=0.25, mode=mode)
    want = RegressionReference(hid, t).certify(q, 0.25, mode=mode)
    for i, r in enumerate(got.results):
        assert r["mode"] == mode
        assert r["error_bound"] == pytest.approx(want["error_bound"][i], rel=1e-12)
        assert r["neighbourhood_size"] == want["neighbourhood_size"][i]
        assert r["nn_index"] == H.nearest(hid, q)[i]


def test_reference_survives_a_server_restart(tmp_path, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    with F.ServerProcess(tmp_path / "data") as s, s.client() as c:
        ref = c.build_reference(data["info"], {"x": data["x"]}, labels=data["y"])
        before = c.certify(ref.id, q, uncertainty=0.2).results
        before_raw = c.certify(ref.id, inputs={"x": data["xq"]}, uncertainty=0.2).results
        assert s.stop() == 0
    with F.ServerProcess(tmp_path / "data") as s, s.client() as c:
        assert c.certify(ref.id, q, uncertainty=0.2).results == before
        assert c.certify(ref.id, inputs={"x": data["xq"]}, uncertainty=0.2).results \
            == before_raw


# ---------------------------------------------------------------------------------------
# Bad requests
# ---------------------------------------------------------------------------------------


def test_build_reference_unknown_layer_is_invalid_argument(client, data):
    err = F.client_error(lambda: client.build_reference(
        data["info"], {"x": data["x"]}, labels=data["y"], layer="nope"))
    assert err.code == "INVALID_ARGUMENT" and "nope" in err.details


def test_start_ranking_folded_score_over_the_wire(client, data):
    x, y = data["x"], data["y"]
    res = client.rank_models([data["info"]], {"x": x}, labels=y, folds=3, method="folded")
    row = res.models[0]
    want = R.folded_si(H.hidden_of(x, INFO_COLS), y, 3, 5, max_features=32)
    assert res.data["options"]["method"] == "folded" and res.data["options"]["folds"] == 3
    assert row["method"] == "folded" and row["index"] == "folded_soft_order_si[5]"
    assert row["selected"] == pytest.approx(want["soft_order_si"].mean(), rel=1e-12)
    assert row["scores"] == pytest.approx({
        "folded_soft_order_si[5]": want["soft_order_si"].mean(),
        "folded_si": want["si"].mean(), "folded_high_order_si[5]": want["high_order_si"].mean()},
        rel=1e-12)


@pytest.mark.parametrize("kw,match", [({"method": "best"}, "method must be one of"),
                                      ({"folds": 1}, "folds must be an integer in 2..100")])
def test_rank_bad_method_or_folds_is_invalid_argument(client, data, kw, match):
    err = F.client_error(lambda: client.rank_models(
        [data["info"]], {"x": data["x"]}, labels=data["y"], **kw))
    assert err.code == "INVALID_ARGUMENT" and match in err.details


def test_rank_unknown_layer_is_invalid_argument(client, data):
    err = F.client_error(lambda: client.rank_models(
        [data["info"]], {"x": data["x"]}, labels=data["y"], layers={data["info"]: "nope"}))
    assert err.code == "INVALID_ARGUMENT" and "nope" in err.details


def test_build_reference_without_head_or_layer_is_failed_precondition(client, data):
    model = H.no_head_model(6).SerializeToString()
    err = F.client_error(lambda: client.build_reference(model, {"x": data["x"]},
                                                        labels=data["y"]))
    assert err.code == "FAILED_PRECONDITION" and "name the layer" in err.details


def test_rank_without_head_or_layer_is_failed_precondition(client, data):
    model = H.no_head_model(6).SerializeToString()
    err = F.client_error(lambda: client.rank_models([data["info"], model], {"x": data["x"]},
                                                    labels=data["y"]))
    assert err.code == "FAILED_PRECONDITION" and "name the layer" in err.details


def test_certify_features_of_the_wrong_width_is_invalid_argument(client, reference):
    err = F.client_error(lambda: client.certify(reference, np.zeros((2, 3), np.float32)))
    assert err.code == "INVALID_ARGUMENT" and "3" in err.details


def test_certify_raw_inputs_of_the_wrong_width_is_invalid_argument(client, reference):
    err = F.client_error(lambda: client.certify(reference,
                                                inputs={"x": np.zeros((2, 5), np.float32)}))
    assert err.code == "INVALID_ARGUMENT"


def test_certify_negative_uncertainty_is_invalid_argument(client, reference, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    err = F.client_error(lambda: client.certify(reference, q, uncertainty=-0.5))
    assert err.code == "INVALID_ARGUMENT" and "uncertainty" in err.details


@pytest.mark.parametrize("u", [-1.0, math.inf])
def test_build_reference_bad_uncertainty_is_invalid_argument(client, data, u):
    """Refused when the request arrives, as NaN is (not as a job that fails later)."""
    err = F.client_error(lambda: client.build_reference(
        data["info"], {"x": data["x"]}, labels=data["y"], uncertainty=u))
    assert err.code == "INVALID_ARGUMENT" and "uncertainty" in err.details


def test_certify_order_beyond_the_reference_set_is_invalid_argument(client, reference, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    err = F.client_error(lambda: client.certify(reference, q, order=len(data["y"]) + 5))
    assert err.code == "INVALID_ARGUMENT" and "order" in err.details


def test_certify_unknown_reference_is_not_found(client, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    err = F.client_error(lambda: client.certify("0" * 64, q))
    assert err.code == "NOT_FOUND"


def test_certify_stream_answers_good_batches_then_fails_on_a_bad_one(client, reference, data):
    q = H.hidden_of(data["xq"], INFO_COLS)
    stream = client.certify_stream(reference, [q[:2], np.zeros((1, 5), np.float32), q[2:]])
    first = next(stream)
    assert len(first) == 2
    err = F.client_error(lambda: next(stream))
    assert err.code == "INVALID_ARGUMENT"
