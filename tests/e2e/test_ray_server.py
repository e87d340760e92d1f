"""A real server attached to a Ray cluster (``layerscope serve --ray ADDRESS``): the session's
local cluster (2 CPUs), 3 shards per run. ComputeIndices, a layer-analysis job and a ranking
job give exactly the numbers of the in-process local path, and the job's progress stream
carries the cluster's stages.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import rank as H
from helpers import server as F

from layerscope.client.client import Client
from layerscope.server.analysis import analyze_layers
from layerscope.server.analysis.ranking import rank_models
from layerscope.server.metrics import compute_indices

EXACT = 0.0  # relative tolerance of the comparisons: none, bit for bit


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, ray_cluster: str) -> Any:
    root = tmp_path_factory.mktemp("ray-e2e")
    with F.ServerProcess(root / "data", "--ray", ray_cluster, "--ray-shards", "3") as s:
        yield s
        assert s.alive(), f"the server died during the tests:\n{s.log_tail()}"
        assert "work runs on: Ray cluster" in s.log_tail(200)
        assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server: F.ServerProcess) -> Any:
    with server.client() as c:
        yield c


def test_compute_indices_on_a_ray_server_equal_the_local_engine(client: Client) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(200, 5)).astype(np.float64)
    x[50:90] = x[3]  # duplicates across shards
    xt = rng.integers(0, 3, size=(60, 5)).astype(np.float64)
    y, yt = rng.integers(0, 3, 200), rng.integers(0, 3, 60)
    opts = dict(orders=[1, 5, 12], per_sample=True)
    got = client.compute_indices(x, labels=y, test_features=xt, test_labels=yt, **opts)
    want = compute_indices(x, labels=y, test_features=xt, test_labels=yt, orders=[1, 5, 12])
    g, w = dict(got.data), want.to_dict(per_sample=False)
    assert g.pop("options")["knn"]["train"]["candidate_search"] == "ray:3x3"
    w.pop("options")
    w |= _per_sample(want.train)
    w["cross"] |= _per_sample(want.cross)
    F.assert_same(g, w, "indices", rel=EXACT)


def _per_sample(values: Any) -> dict[str, Any]:
    """The engine's per-sample arrays under the keys the client's result uses."""
    out: dict[str, Any] = {}
    for name, value in values.per_sample.items():
        if isinstance(value, dict):
            out |= {f"{name}[{r}]_per_sample": a for r, a in value.items()}
        else:
            out[f"{name}_per_sample"] = value
    return out


def test_layer_analysis_job_on_ray_streams_progress_and_equals_local(client: Client) -> None:
    mlp = F.digits_mlp(n_train=400)
    job = client.start_layer_analysis(
        client.upload_model(mlp.onnx_bytes, name="mlp.onnx"),
        client.upload_dataset({mlp.input_name: mlp.x}, labels=mlp.y, name="train"),
        client.upload_dataset({mlp.input_name: mlp.xt}, labels=mlp.yt, name="test"),
        batch_size=32)
    events = list(client.watch(job))
    final = events[-1]
    assert final.state == "succeeded", final.message
    stages = [str(e.progress.get("stage", "")) for e in events]
    assert "indices" in stages and "extract:train" in stages and stages[-1] == "done", stages
    want = analyze_layers(mlp.onnx_bytes, {mlp.input_name: mlp.x}, labels=mlp.y,
                          test={mlp.input_name: mlp.xt}, test_labels=mlp.yt, batch_size=32,
                          layers=["auto"])
    g, w = final.result.to_dict(), want.to_dict()
    assert [la["name"] for la in g["layers"]] == [la["name"] for la in w["layers"]]
    for gl, wl in zip(g["layers"], w["layers"], strict=True):
        F.assert_same(gl, wl, f"layer {wl['name']}", rel=EXACT)


def test_ranking_job_on_ray_equals_local_in_input_order(client: Client) -> None:
    x, y = H.informative_data()
    models = [H.selection_mlp(6, [2, 3, 4], n_classes=3), H.selection_mlp(6, [0, 1], n_classes=3)]
    ids = [client.upload_model(m.SerializeToString(), name=f"m{i}.onnx").id
           for i, m in enumerate(models)]
    got = client.rank_models(ids, {"x": x}, labels=y)
    want = rank_models(models, {"x": x}, labels=y, names=ids)
    assert got.ranking == want.ranking == [ids[1], ids[0]]
    for g, w in zip(got.models, want.models, strict=True):
        w = w.to_dict()
        for key in ("model", "rank", "selection_order", "selection_scores", "selected",
                    "all_features", "tie_breakers"):
            F.assert_same(g[key], w[key], f"{w['model']}.{key}", rel=EXACT)
