"""Scale-out on Ray (docs/scale.md): a real local Ray cluster (2 CPUs, one per session), several
shards per run, and every result equal to this machine's: neighbour tables against the naive
float64 order of ``helpers.reference``, indices, extraction and ranking bit for bit against
the local path, tie-heavy data included; a worker killed inside a task is retried by Ray.
"""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest
from helpers import cluster as C
from helpers import rank as H
from helpers import reference as R

from layerscope.server.analysis.layerwise import analyze_layers
from layerscope.server.analysis.ranking import rank_models
from layerscope.server.cancellation import Cancellation, Stopped
from layerscope.server.cluster import LOCAL, connect
from layerscope.server.graph.inspect import describe
from layerscope.server.metrics import compute_indices
from layerscope.server.metrics.knn import knn
from layerscope.server.runtime.extract import extract


@pytest.fixture(scope="module")
def ray_ex(ray_cluster: str):
    """An executor on the session's cluster: 3 shards (more than its 2 CPUs)."""
    return connect(ray_cluster, shards=3)


def tie_heavy(m: int = 240, d: int = 4, seed: int = 0) -> np.ndarray:
    """Small integer features (many equal distances) with a block of duplicated points."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(m, d)).astype(np.float64)
    x[m // 3 : m // 3 + m // 5] = x[1]  # duplicates of one point, spread over shards
    return x


def strip(result: dict) -> dict:
    """A result without what says where and how long it ran."""
    result = dict(result)
    result.pop("options", None)
    result.pop("seconds", None)
    return result


def assert_same(a, b) -> None:
    """Equal nested values, arrays bit for bit (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, (np.ndarray, float)):
        np.testing.assert_array_equal(a, b, strict=True)
    else:
        assert a == b


# ---------------------------------------------------------------------------------------
# k-NN: shards merged by (distance, index)
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5, 60])
def test_sharded_knn_is_the_definitions_order_on_tie_heavy_data(ray_ex, k):
    x = tie_heavy()
    got = ray_ex.knn(x, k, return_distance=True)
    np.testing.assert_array_equal(got.indices, R.neighbour_order(x)[:, :k])
    local = knn(x, k, return_distance=True)
    np.testing.assert_array_equal(got.indices, local.indices)
    assert got.sqdist.tobytes() == local.sqdist.tobytes()


def test_sharded_cross_knn_is_the_definitions_order(ray_ex):
    x = tie_heavy()
    q = np.concatenate([tie_heavy(50, seed=1), x[:10]])  # queries equal to base points too
    got = ray_ex.knn(x, 7, queries=q)
    np.testing.assert_array_equal(got.indices, R.cross_neighbour_order(x, q)[:, :7])


def test_sharded_knn_on_real_valued_data_equals_the_local_engine(ray_ex):
    x = np.random.default_rng(3).normal(size=(300, 16)).astype(np.float32)
    got, local = ray_ex.knn(x, 9, return_distance=True), knn(x, 9, return_distance=True)
    np.testing.assert_array_equal(got.indices, local.indices)
    assert got.sqdist.tobytes() == local.sqdist.tobytes()


def test_knn_with_more_shards_than_points_per_shard(ray_cluster):
    x = tie_heavy(9, 2)
    got = connect(ray_cluster, shards=9).knn(x, 8)  # one point per shard
    np.testing.assert_array_equal(got.indices, R.neighbour_order(x))


def test_sharded_knn_refuses_a_k_beyond_the_points(ray_ex):
    with pytest.raises(ValueError, match=r"k must be in 1\.\.9"):
        ray_ex.knn(tie_heavy(10, 2), 10)


# ---------------------------------------------------------------------------------------
# Indices: every value and per-sample array as on one machine
# ---------------------------------------------------------------------------------------


def test_classification_indices_on_ray_equal_local_ones_bit_for_bit(ray_ex):
    x, xt = tie_heavy(), tie_heavy(70, seed=2)
    rng = np.random.default_rng(4)
    y, yt = rng.integers(0, 3, len(x)), rng.integers(0, 3, len(xt))
    kw = dict(test_features=xt, test_labels=yt, orders=[1, 5, 20],
              indices=["si", "high_order_si", "soft_order_si", "center_si", "margin_order"])
    local = compute_indices(x, y, **kw).to_dict(per_sample=True)
    got = compute_indices(x, y, executor=ray_ex, **kw)
    assert got.options["executor"] == "ray"
    assert_same(strip(got.to_dict(per_sample=True)), strip(local))
    expected_si = R.si(x, y)  # the naive reference, independent of both paths
    assert got["si"] == pytest.approx(expected_si, abs=1e-12)


@pytest.mark.parametrize("columns", [1, 2])
def test_regression_indices_and_target_statistics_on_ray_equal_local_ones(ray_ex, columns):
    x, xt = tie_heavy(), tie_heavy(60, seed=5)
    rng = np.random.default_rng(6)
    t = rng.integers(0, 4, size=(len(x), columns)).astype(np.float64)  # tied targets
    tt = rng.integers(0, 4, size=(len(xt), columns)).astype(np.float64)
    kw = dict(test_features=xt, test_targets=tt, orders=[1, 4])
    local = compute_indices(x, targets=t, **kw).to_dict(per_sample=True)
    got = compute_indices(x, targets=t, executor=ray_ex, **kw).to_dict(per_sample=True)
    assert_same(strip(got), strip(local))


def test_target_statistics_by_rows_equal_the_local_ones(ray_ex):
    from layerscope.server.metrics.smoothness import target_stats

    y = np.random.default_rng(7).integers(0, 5, size=(90, 3)).astype(np.float64)
    a = ray_ex.target_stats(np, y, y, 6, self_mode=True, memory_budget_mb=1.0)
    b = target_stats(np, y, y, 6, self_mode=True, memory_budget_mb=1.0)
    for name in ("dmax", "dmin", "dmean", "nbr", "nbr_dist"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


# ---------------------------------------------------------------------------------------
# Extraction, layer analysis and ranking
# ---------------------------------------------------------------------------------------


def test_extraction_on_ray_equals_local_bit_for_bit_in_sample_order(ray_ex):
    x, _ = H.informative_data(m=203)
    model = H.selection_mlp(6, [0, 1], n_classes=3)
    info = describe(model)
    layers = [la for la in info.layers if la.auto] or list(info.layers)
    sets = [{"inputs": x}, {"inputs": x[::-1].copy()}]
    kw = dict(reduce="auto", batch_size=16)  # 13 batches over 3 shards
    local = extract(model, info, layers, sets, **kw)
    got = ray_ex.extract(model, info, layers, sets, **kw)
    assert [g.name for g in got] == [la.name for la in local]
    for g, la in zip(got, local, strict=True):
        assert g.reduction == la.reduction and g.shape == la.shape and g.notes == la.notes
        assert g.train.tobytes() == la.train.tobytes()
        assert g.test.tobytes() == la.test.tobytes()


def test_layer_analysis_on_ray_equals_local(ray_ex):
    x, y = H.informative_data(m=150)
    model = H.selection_mlp(6, [0, 1], n_classes=3)
    kw = dict(labels=y, test={"inputs": x[:40]}, test_labels=y[:40], batch_size=32)
    local = analyze_layers(model, {"inputs": x}, **kw).to_dict()
    got = analyze_layers(model, {"inputs": x}, executor=ray_ex, **kw).to_dict()
    assert_same(strip(got)["layers"], strip(local)["layers"])


def test_ranking_on_ray_runs_one_task_per_model_and_keeps_input_order(ray_ex):
    x, y = H.informative_data()
    models = [H.selection_mlp(6, [2, 3, 4], n_classes=3), H.selection_mlp(6, [0, 1], n_classes=3),
              H.selection_mlp(6, [0, 5], n_classes=3, seed=2)]
    names = ["noise", "info", "other"]
    local = rank_models(models, x, labels=y, names=names)
    got = rank_models(models, x, labels=y, names=names, executor=ray_ex)
    assert [r.model for r in got.models] == names
    assert got.ranking == local.ranking and got.ranking[0] == "info"
    for a, b in zip(got.models, local.models, strict=True):
        da, db = a.to_dict(), b.to_dict()
        da.pop("seconds"), db.pop("seconds")
        assert_same(da, db)


def test_local_executor_is_the_default_and_runs_here():
    assert connect(None) is LOCAL
    x = tie_heavy(30, 2)
    np.testing.assert_array_equal(LOCAL.knn(x, 3).indices, R.neighbour_order(x)[:, :3])


# ---------------------------------------------------------------------------------------
# Failures and stops
# ---------------------------------------------------------------------------------------


def test_a_worker_killed_inside_a_task_is_retried_and_the_result_is_unchanged(ray_ex):
    ray = C.ray_or_skip()
    x = tie_heavy(120, 3)
    blocks = np.array_split(x, 3)
    started, release = C.latch(), C.latch()
    items = [(b, i, started, release) for i, b in enumerate(blocks)]
    out: dict = {}
    job = threading.Thread(target=lambda: out.update(r=ray_ex.map(C.nearest_sums, items)))
    job.start()
    pid = ray.get(started.wait.remote())  # the task of block 0 is running, waiting
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)
    ray.get(release.set.remote())
    job.join()
    expected = [np.min(np.where(np.eye(len(b), dtype=bool), np.inf,
                                ((b[:, None, :] - b[None, :, :]) ** 2).sum(-1)), axis=1)
                for b in blocks]
    for got, want in zip(out["r"], expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_cancelling_stops_the_cluster_work_and_cancels_its_tasks(ray_ex):
    ray = C.ray_or_skip()
    started, release = C.latch(), C.latch()
    items = [(np.ones((3, 2)), 0, started, release)]
    cancel = Cancellation()
    failure: dict = {}

    def run() -> None:
        try:
            ray_ex.map(C.nearest_sums, items, cancel=cancel)
        except Stopped as exc:
            failure["stopped"] = exc

    job = threading.Thread(target=run)
    job.start()
    pid = ray.get(started.wait.remote())  # inside its task, waiting for a release never sent
    cancel.cancel("cancelled", "the client cancelled the job")
    job.join()
    assert failure["stopped"].reason == "cancelled"
    # ray.cancel(force=True) ends the worker that ran the task
    from helpers.server import wait_until

    wait_until(lambda: not _alive(pid), 120, "the cancelled task's worker to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie has ended
        return f.read().split(")")[-1].split()[0] != "Z"
