"""Every index option on every analysis path, through a real server.

For each option of ``IndexOptions`` and each path (ComputeIndices, StartLayerAnalysis,
StartRanking, BuildReference/Certify) the option either changes the path's result as it
should (the value is checked against the naive float64 reference of ``reference.py`` and
``helpers.rank``, with a value chosen so that the result without the option differs) or
the path refuses it with INVALID_ARGUMENT naming the option and the path. ``TABLE`` is the
table of docs/api.md, "Options on each path"; a test keeps the two the same.

The model is ``helpers.rank.selection_mlp`` over all six inputs: its layer ``act`` is
exactly ``x + 10`` in float32, so every path sees the same known features ``hid``, which
ComputeIndices receives directly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import ROOT
from helpers import rank as H
from helpers import reference as ref
from helpers import server as F

from layerscope.protos import codec
from layerscope.protos.options import IndexOptions
from layerscope.protos.stubs import analysis_pb2, common_pb2

pytestmark = pytest.mark.timeout(300)

CI, LA, RK, REF = "ComputeIndices", "StartLayerAnalysis", "StartRanking", "BuildReference"
PATHS = (CI, LA, RK, REF)
# How the server names each path in its refusals.
PATH_WORDS = {CI: "ComputeIndices", LA: "layer analysis", RK: "ranking",
              REF: "certification"}
Y, N = "changes", "refused"
TABLE: dict[str, dict[str, str]] = {
    "indices": {CI: Y, LA: Y, RK: N, REF: N},
    "orders": {CI: Y, LA: Y, RK: N, REF: Y},
    "gamma": {CI: Y, LA: Y, RK: Y, REF: N},
    "normalize": {CI: Y, LA: Y, RK: Y, REF: N},
    "margin_cap": {CI: Y, LA: N, RK: N, REF: N},
    "max_features": {CI: Y, LA: N, RK: Y, REF: N},
    "patience": {CI: Y, LA: N, RK: Y, REF: N},
    "candidates": {CI: Y, LA: N, RK: Y, REF: N},
    "criterion": {CI: Y, LA: N, RK: Y, REF: N},
    "precision": {CI: Y, LA: Y, RK: Y, REF: N},
    "memory_budget_mb": {CI: Y, LA: Y, RK: Y, REF: N},
    "per_sample": {CI: Y, LA: N, RK: N, REF: N},
    "probe_model": {CI: N, LA: Y, RK: N, REF: N},
}
# A valid value of each option, for the refusals.
VALUE: dict[str, Any] = {
    "indices": ["si"], "orders": [3], "gamma": 0.5, "normalize": True, "margin_cap": 3,
    "max_features": 2, "patience": 1, "candidates": [0, 1], "criterion": "si",
    "precision": "fast", "memory_budget_mb": 64.0, "per_sample": True,
    "probe_model": "logistic",
}
CELLS = [(o, p) for o in TABLE for p in PATHS]
FAST = "precision='fast'"


# ---------------------------------------------------------------------------------------
# Data, server, calls
# ---------------------------------------------------------------------------------------


def _classification(m: int = 60, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Columns 0-1 carry the class (three overlapping clusters), column 2 is noise on a
    scale 20 times larger (so standardising changes the neighbours), 3-5 small noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 3
    centres = np.array([[0.0, 0.0], [1.5, 0.0], [0.0, 1.5]])
    x = np.concatenate([centres[y] + rng.normal(0, 0.6, (m, 2)),
                        rng.uniform(0, 30, (m, 1)), rng.normal(0, 1, (m, 3))], axis=1)
    return x.astype(np.float32), y.astype(np.int64)


def _regression(m: int = 60, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (m, 6)).astype(np.float32)
    t = x[:, 0] + 0.5 * x[:, 1] ** 2 + rng.normal(0, 0.1, m)
    return x, t.astype(np.float32)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Any:
    x, y = _classification()
    xr, t = _regression()
    with F.ServerProcess(tmp_path_factory.mktemp("options-paths") / "data") as server:
        client = server.client()
        model = H.selection_mlp(6, range(6), n_classes=3, seed=5)
        c = {
            "raw": F.stubs(server.channel()), "y": y, "t": t,
            "hid": H.hidden_of(x, range(6)), "hidr": H.hidden_of(xr, range(6)),
            "model": client.upload_model(model.SerializeToString(), name="mlp").id,
            "cls": client.upload_dataset({"x": x}, labels=y, name="cls").id,
            "reg": client.upload_dataset({"x": xr}, targets=t, name="reg").id,
        }
        yield c
        client.close()
        assert server.alive(), server.log_tail()


def _options(opts: dict[str, Any]) -> analysis_pb2.IndexOptions:
    return codec.options_message(IndexOptions.build(**opts))


def compute(c: dict, opts: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    """ComputeIndices on ``hid`` (``hidr`` for regression); the result as a dict."""
    arrays = ({"features": c["hid"], "labels": c["y"]} if task == "classification"
              else {"features": c["hidr"], "targets": c["t"]})
    header = analysis_pb2.ComputeIndicesHeader(options=_options(opts), tensors=[
        common_pb2.TensorSpec(name=k, dtype=str(a.dtype), shape=list(a.shape))
        for k, a in arrays.items()])
    data = b"".join(codec.little_endian(a).tobytes() for a in arrays.values())
    msgs = [analysis_pb2.ComputeIndicesRequest(header=header),
            analysis_pb2.ComputeIndicesRequest(chunk=common_pb2.Chunk(offset=0, data=data))]
    return codec.indices_result_dict(c["raw"].analysis.ComputeIndices(iter(msgs), timeout=60))


def _run(c: dict, start: Callable[..., Any], request: Any) -> dict[str, Any]:
    job = start(request, timeout=60)
    watched = list(c["raw"].analysis.WatchJob(analysis_pb2.WatchJobRequest(id=job.id),
                                              timeout=120))
    last = watched[-1] if watched else job
    assert codec.state_name(last.state) == "succeeded", last.message
    result = codec.job_result_dict(last)[1]
    assert result is not None
    return result


def layers(c: dict, opts: dict[str, Any], task: str = "classification",
           probe: bool = False) -> dict[str, Any]:
    """A layer analysis of ``act``: its row, with the result's options under "options"."""
    req = analysis_pb2.StartLayerAnalysisRequest(
        model_id=c["model"], dataset_id=c["cls" if task == "classification" else "reg"],
        layers=["act"], options=_options(opts), probe=probe)
    res = _run(c, c["raw"].analysis.StartLayerAnalysis, req)
    row = next(la for la in res["layers"] if la["name"] == "act")
    return row | {"options": res["options"]}


def rank(c: dict, opts: dict[str, Any], task: str = "classification") -> dict[str, Any]:
    """A ranking of the one model: its row, with the result's options under "options"."""
    # method seed: the selection options are options of Algorithm 2's forward selection.
    req = analysis_pb2.StartRankingRequest(
        model_ids=[c["model"]], dataset_id=c["cls" if task == "classification" else "reg"],
        options=_options(opts), method="seed")
    res = _run(c, c["raw"].analysis.StartRanking, req)
    return res["models"][0] | {"options": res["options"]}


def build(c: dict, opts: dict[str, Any]) -> dict[str, Any]:
    """A reference of the classification set; its description."""
    req = analysis_pb2.BuildReferenceRequest(model_id=c["model"], dataset_id=c["cls"],
                                             options=_options(opts))
    return _run(c, c["raw"].analysis.BuildReference, req)


def certify(c: dict, reference: dict[str, Any], order: int = 0) -> Any:
    req = analysis_pb2.CertifyRequest(reference_id=reference["id"], order=order)
    req.features.CopyFrom(codec.tensor(c["hid"][:5]))
    return c["raw"].analysis.Certify(req, timeout=60)


CALL: dict[str, Callable[..., dict[str, Any]]] = {CI: compute, LA: layers, RK: rank,
                                                    REF: build}


# ---------------------------------------------------------------------------------------
# The cells where the option changes the result
# ---------------------------------------------------------------------------------------

CHECKS: dict[tuple[str, str], Callable[[dict], None]] = {}


def cell(option: str, *paths: str) -> Callable[[Callable[[dict, str], None]], Any]:
    def register(fn: Callable[[dict, str], None]) -> Any:
        for path in paths:
            CHECKS[(option, path)] = lambda c, fn=fn, path=path: fn(c, path)
        return fn
    return register


def _approx(value: float) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-12)


@cell("indices", CI, LA)
def _indices(c: dict, path: str) -> None:
    want = ref.separation(c["hid"], c["y"], ())["dataset"]["center_si"]
    got = CALL[path](c, {"indices": ["center_si"]})
    assert got["center_si"] == _approx(want)
    assert "si" not in got and "si" in CALL[path](c, {})


@cell("orders", CI, LA)
def _orders(c: dict, path: str) -> None:
    want = ref.separation(c["hid"], c["y"], (3,))["dataset"]["high_order_si"][3]
    got = CALL[path](c, {"orders": [3]})["high_order_si"]
    assert set(got) == {"3"} and got["3"] == _approx(want)
    assert set(CALL[path](c, {})["high_order_si"]) == {"1", "5"}


@cell("orders", REF)
def _reference_order(c: dict, path: str) -> None:
    want = H.high_order_si(c["hid"], c["y"], 3)
    assert want != H.si(c["hid"], c["y"])  # the data makes the two differ
    three, one = build(c, {"orders": [3]}), build(c, {})
    assert three["summary"]["confidence_index"] == "high_order_si[3]"
    assert three["summary"]["confidence"] == _approx(want)
    assert one["summary"]["confidence"] == _approx(H.si(c["hid"], c["y"]))
    assert three["id"] != one["id"]
    # Certify's default order is the reference's.
    assert all(q.confidence == _approx(want) for q in certify(c, three).results)
    si = H.si(c["hid"], c["y"])
    assert all(q.confidence == _approx(si) for q in certify(c, three, order=1).results)


@cell("gamma", CI, LA)
def _gamma(c: dict, path: str) -> None:
    want = ref.smi(c["hidr"], c["t"], "exp", gamma=0.3)
    assert want != _approx(ref.smi(c["hidr"], c["t"], "exp"))
    assert CALL[path](c, {"gamma": 0.3}, "regression")["smi_exp"] == _approx(want)


@cell("gamma", RK)
def _ranking_gamma(c: dict, path: str) -> None:
    want = ref.smi(c["hidr"], c["t"], "exp", gamma=0.3)
    row = rank(c, {"criterion": "smi_exp", "gamma": 0.3}, "regression")
    assert row["index"] == "smi_exp" and row["all_features"] == _approx(want)
    plain = rank(c, {"criterion": "smi_exp"}, "regression")
    assert plain["all_features"] == _approx(ref.smi(c["hidr"], c["t"], "exp"))
    assert plain["all_features"] != row["all_features"]


@cell("normalize", CI, LA)
def _normalize(c: dict, path: str) -> None:
    want = ref.si(ref.normalize(c["hid"])[0], c["y"])
    assert want != ref.si(c["hid"], c["y"])
    assert CALL[path](c, {"normalize": True})["si"] == _approx(want)


@cell("normalize", RK)
def _ranking_normalize(c: dict, path: str) -> None:
    scaled = ref.normalize(c["hid"])[0]
    want = ref.feature_ranking_si(scaled, c["y"], max_features=32)
    row = rank(c, {"normalize": True})
    assert row["all_features"] == _approx(ref.si(scaled, c["y"]))
    assert row["selection_order"] == want[0]
    assert rank(c, {})["all_features"] == _approx(ref.si(c["hid"], c["y"]))


@cell("margin_cap", CI)
def _margin_cap(c: dict, path: str) -> None:
    capped = ref.separation(c["hid"], c["y"], (), margin_cap=2)["per_sample"]["margin_order"]
    full = ref.separation(c["hid"], c["y"], ())["per_sample"]["margin_order"]
    assert not np.array_equal(capped, full)
    got = compute(c, {"indices": ["margin_order"], "per_sample": True, "margin_cap": 2})
    np.testing.assert_array_equal(got["margin_order_per_sample"], capped)


def _selection(c: dict, path: str, opts: dict[str, Any], **naive: Any) -> None:
    """feature_ranking (ComputeIndices) or the ranking's selection against the naive
    forward selection; the ranking's own bound is max_features 32."""
    if path == CI:
        want = ref.feature_ranking_si(c["hid"], c["y"], **naive)
        got = compute(c, {"indices": ["feature_ranking"], **opts})["feature_ranking"]
        assert got["order"] == want[0]
        np.testing.assert_allclose(got["scores"], want[1], rtol=1e-12)
        plain = compute(c, {"indices": ["feature_ranking"]})["feature_ranking"]["order"]
    else:
        want = ref.feature_ranking_si(c["hid"], c["y"], **({"max_features": 32} | naive))
        row = rank(c, opts)
        assert row["selection_order"] == want[0]
        np.testing.assert_allclose(row["selection_scores"], want[1], rtol=1e-12)
        plain = rank(c, {})["selection_order"]
    assert plain != want[0]


@cell("max_features", CI, RK)
def _max_features(c: dict, path: str) -> None:
    _selection(c, path, {"max_features": 2}, max_features=2)


@cell("patience", CI, RK)
def _patience(c: dict, path: str) -> None:
    _selection(c, path, {"patience": 1}, patience=1)


@cell("candidates", CI, RK)
def _candidates(c: dict, path: str) -> None:
    _selection(c, path, {"candidates": [2, 4, 5]}, candidates=[2, 4, 5])


@cell("criterion", CI)
def _criterion(c: dict, path: str) -> None:
    want = ref.feature_ranking_smi(c["hidr"], c["t"], "exp")
    got = compute(c, {"indices": ["feature_ranking"], "criterion": "smi_exp"},
                  "regression")["feature_ranking"]
    assert got["criterion"] == "smi_exp" and got["order"] == want[0]
    np.testing.assert_allclose(got["scores"], want[1], rtol=1e-12)


@cell("criterion", RK)
def _ranking_criterion(c: dict, path: str) -> None:
    row = rank(c, {"criterion": "smi_exp"}, "regression")
    assert row["index"] == "smi_exp"
    assert row["all_features"] == _approx(ref.smi(c["hidr"], c["t"], "exp"))
    assert rank(c, {}, "regression")["index"] == "smi_linear"


def _notes(got: dict[str, Any], path: str) -> list[str]:
    return list(got["warnings"] if path == CI else got.get("notes", []))


@cell("precision", CI, LA, RK)
def _precision(c: dict, path: str) -> None:
    fast = CALL[path](c, {"precision": "fast"})
    assert any(FAST in w for w in _notes(fast, path))
    assert not any(FAST in w for w in _notes(CALL[path](c, {}), path))
    assert fast["options"]["precision"] == "fast"


@cell("memory_budget_mb", CI, LA, RK)
def _memory_budget(c: dict, path: str) -> None:
    assert CALL[path](c, {"memory_budget_mb": 32.0})["options"]["memory_budget_mb"] == 32.0
    assert CALL[path](c, {})["options"]["memory_budget_mb"] == 256.0


@cell("per_sample", CI)
def _per_sample(c: dict, path: str) -> None:
    want = ref.separation(c["hid"], c["y"], ())["per_sample"]["si"]
    np.testing.assert_array_equal(compute(c, {"per_sample": True})["si_per_sample"], want)
    assert "si_per_sample" not in compute(c, {})


@cell("probe_model", LA)
def _probe_model(c: dict, path: str) -> None:
    from sklearn.linear_model import LogisticRegression

    got = layers(c, {"probe_model": "logistic"}, probe=True)["probe"]
    assert got["model"] == "logistic" and got["alpha"] in got["alpha_grid"]
    h = c["hid"].astype(np.float64)
    hs = (h - h.mean(axis=0)) / (h.std(axis=0) + 1e-10)
    want = LogisticRegression(C=1.0 / got["alpha"], tol=1e-10, max_iter=10000).fit(hs, c["y"])
    assert got["train_accuracy"] == pytest.approx(want.score(hs, c["y"]), abs=1.5 / len(hs))
    assert layers(c, {}, probe=True)["probe"]["model"] == "ridge"


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def test_the_table_has_every_option_and_a_check_for_each_change() -> None:
    options = [f.name for f in fields(IndexOptions) if not f.name.startswith("_")]
    assert list(TABLE) == options
    assert set(CHECKS) == {(o, p) for o, p in CELLS if TABLE[o][p] == Y}


@pytest.mark.parametrize(("option", "path"), CELLS, ids=[f"{o}-{p}" for o, p in CELLS])
def test_option_on_path(ctx: dict, option: str, path: str) -> None:
    """Changes the result as it should, or INVALID_ARGUMENT naming option and path."""
    if TABLE[option][path] == Y:
        CHECKS[(option, path)](ctx)
        return
    code, details = F.code_of(lambda: CALL[path](ctx, {option: VALUE[option]}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
    assert f"option {option!r}" in details and PATH_WORDS[path] in details, details


def test_docs_api_holds_the_table() -> None:
    text = (ROOT / "docs" / "api.md").read_text()
    section = text.split("## Options on each path", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|(.*)\|\s*$", line)
        if m:
            cells = [cell.strip() for cell in m.group(2).split("|")]
            rows[m.group(1)] = [Y if cell.startswith("yes") else N for cell in cells]
    assert rows == {o: [TABLE[o][p] for p in PATHS] for o in TABLE}


# ---------------------------------------------------------------------------------------
# Options that cannot change one request's result
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("opts", "name"), [
    ({"gamma": 0.5}, "gamma"),  # classification: no exp variant
    ({"margin_cap": 3}, "margin_cap"),  # margin_order not asked for
    ({"max_features": 2}, "max_features"),  # feature_ranking not asked for
    ({"indices": ["si"], "criterion": "si"}, "criterion"),
])
def test_an_option_without_effect_on_the_request_is_refused(ctx: dict, opts: dict,
                                                            name: str) -> None:
    code, details = F.code_of(lambda: compute(ctx, opts))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"option {name!r}" in details and "no effect" in details


def test_gamma_of_a_ranking_without_the_exp_criterion_is_refused(ctx: dict) -> None:
    code, details = F.code_of(lambda: rank(ctx, {"gamma": 0.3}, "regression"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'gamma'" in details, details


def test_layer_analysis_refuses_indices_without_a_dataset_value(ctx: dict) -> None:
    for name in ("margin_order", "single_feature_si", "feature_ranking"):
        code, details = F.code_of(lambda name=name: layers(ctx, {"indices": ["si", name]}))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and name in details, details


def test_ranking_max_features_in_the_request_and_the_options_must_agree(ctx: dict) -> None:
    req = analysis_pb2.StartRankingRequest(model_ids=[ctx["model"]], dataset_id=ctx["cls"],
                                           max_features=2, options=_options({"max_features": 3}),
                                           method="seed")
    code, details = F.code_of(lambda: ctx["raw"].analysis.StartRanking(req, timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_features" in details, details
    req.options.max_features = 2
    assert len(_run(ctx, ctx["raw"].analysis.StartRanking, req)["models"][0][
        "selection_order"]) == 2


def test_a_reference_takes_one_order(ctx: dict) -> None:
    code, details = F.code_of(lambda: build(ctx, {"orders": [1, 3]}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "'orders'" in details, details
