"""End-to-end tests of the gRPC server, its store and the Python client.

One real ``layerscope serve`` process on 127.0.0.1 (free port, temporary data dir, real
SQLite catalog) serves the whole module; models are real ONNX files built here. Expected
values come from the in-process engine (``layerscope.server.metrics.compute_indices``,
``layerscope.server.analysis.analyze_layers``) and from brute-force float64 NumPy.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import server as F

from layerscope.client.client import Client
from layerscope.protos.stubs import (
    analysis_pb2,
    common_pb2,
    datasets_pb2,
    models_pb2,
)
from layerscope.server.analysis import analyze_layers
from layerscope.server.metrics import compute_indices

pytestmark = pytest.mark.timeout(120)


# ---------------------------------------------------------------------------------------
# Fixtures: one server for the module
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("e2e")
    with F.ServerProcess(root / "data") as s:
        yield s
        assert s.alive(), f"the server died during the tests:\n{s.log_tail()}"
        assert s.stop() == 0


@pytest.fixture(scope="module")
def client(server: F.ServerProcess) -> Any:
    with server.client() as c:
        yield c


@pytest.fixture(scope="module")
def raw(server: F.ServerProcess) -> Any:
    channel = server.channel()
    yield F.stubs(channel)
    channel.close()


@pytest.fixture(scope="module")
def mlp() -> F.Classifier:
    return F.digits_mlp()


@pytest.fixture(scope="module")
def stored(client: Client, mlp: F.Classifier) -> dict[str, Any]:
    """The MLP and its train/test datasets, uploaded once."""
    model = client.upload_model(mlp.onnx_bytes, name="mlp.onnx")
    train = client.upload_dataset({mlp.input_name: mlp.x}, labels=mlp.y, name="digits-train")
    test = client.upload_dataset({mlp.input_name: mlp.xt}, labels=mlp.yt, name="digits-test")
    return {"model": model, "train": train, "test": test}


@pytest.fixture(scope="module")
def slow() -> F.SlowJob:
    return F.slow_job()


def _assert_healthy(client: Client, stored: dict[str, Any]) -> None:
    """The server answers and still runs a (small) job to success."""
    assert client.get_model(stored["model"].id).id == stored["model"].id
    job = client.start_layer_analysis(stored["model"], stored["train"],
                                      layers=["next_activations"], indices=["si"], orders=[1])
    final = list(client.watch(job))[-1]
    assert final.state == "succeeded", final.message
    assert final.result is not None and final.result.layers


# ---------------------------------------------------------------------------------------
# Models and datasets
# ---------------------------------------------------------------------------------------


def test_upload_model_lists_candidate_layers(client: Client, stored: dict[str, Any],
                                             mlp: F.Classifier) -> None:
    import onnx

    proto = onnx.load_from_string(mlp.onnx_bytes)
    model = client.get_model(stored["model"].id)
    assert model.id == hashlib.sha256(mlp.onnx_bytes).hexdigest()
    assert model.size_bytes == len(mlp.onnx_bytes)
    assert model.name == "mlp.onnx"
    assert model.ir_version == proto.ir_version
    assert dict(model.opsets) == {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    assert [i.name for i in model.inputs] == [i.name for i in proto.graph.input]
    assert model.inputs[0].dtype == "float32" and model.inputs[0].shape[-1] == "64"
    assert [o.name for o in model.outputs] == [o.name for o in proto.graph.output]

    producers = {out: (i, node.op_type) for i, node in enumerate(proto.graph.node)
                 for out in node.output}
    assert len(model.layers) >= 3
    for la in model.layers:
        assert la.name in producers, f"{la.name} is not a node output"
        assert la.op_type == producers[la.name][1]
    positions = [la.position for la in model.layers]
    assert positions == sorted(positions)
    relus = [la for la in model.layers if la.op_type == "Relu"]
    assert [la.name for la in relus] == ["next_activations", "next_activations1"]
    assert all(la.auto for la in relus)
    widths = {la.name: la.elements_per_sample for la in model.layers}
    assert widths["next_activations"] == 32 and widths["next_activations1"] == 16


def test_duplicate_model_upload_returns_at_once(raw: F.Stubs, stored: dict[str, Any],
                                                mlp: F.Classifier) -> None:
    """The same bytes again: already_present, answered after the header alone (the
    request stream stays open and no chunk is ever sent)."""
    header = next(F.model_requests(mlp.onnx_bytes, name="again"))
    release = threading.Event()
    t0 = time.monotonic()
    try:
        resp = raw.models.UploadModel(F.held_open([header], release), timeout=20)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
    assert resp.already_present
    assert resp.model.id == stored["model"].id
    full = raw.models.UploadModel(F.model_requests(mlp.onnx_bytes), timeout=20)
    assert full.already_present and full.model.id == stored["model"].id


def test_duplicate_dataset_upload_returns_at_once(raw: F.Stubs, stored: dict[str, Any],
                                                  mlp: F.Classifier) -> None:
    data = F.dataset_bytes({"X": mlp.x, "labels": mlp.y})
    specs = [(mlp.input_name, "float32", list(mlp.x.shape)), ("labels", "int64", [len(mlp.y)])]
    header = next(F.dataset_requests(specs, data))
    release = threading.Event()
    t0 = time.monotonic()
    try:
        resp = raw.datasets.UploadDataset(F.held_open([header], release), timeout=20)
    finally:
        release.set()
    assert time.monotonic() - t0 < 5
    assert resp.already_present
    assert resp.dataset.id == stored["train"].id


def test_datasets_get_list(client: Client, stored: dict[str, Any], mlp: F.Classifier) -> None:
    train = stored["train"]
    assert train.task == "classification" and train.n_samples == len(mlp.x)
    assert train.name == "digits-train"
    assert [(t.name, t.dtype, list(t.shape)) for t in train.tensors] == [
        (mlp.input_name, "float32", list(mlp.x.shape)), ("labels", "int64", [len(mlp.y)])]
    assert train.size_bytes == mlp.x.nbytes + mlp.y.nbytes
    assert len(train.id) == 64
    got = client.get_dataset(train.id)
    assert got == train
    ids = [d.id for d in client.datasets()]
    assert train.id in ids and stored["test"].id in ids
    model_ids = [m.id for m in client.models()]
    assert stored["model"].id in model_ids


def test_list_is_newest_first_without_layers_and_delete(client: Client, server: F.ServerProcess,
                                                        stored: dict[str, Any]) -> None:
    reg_bytes = F.tiny_regressor(seed=7)
    reg = client.upload_model(reg_bytes, name="reg.onnx")
    listed = client.models()
    assert listed[0].id == reg.id, "ListModels is newest first"
    assert all(len(m.layers) == 0 for m in listed), "ListModels leaves layers out"
    assert len(client.get_model(reg.id).layers) > 0
    assert F.blob_path(server.data_dir, reg.id).is_file()

    client.delete_model(reg.id)
    assert reg.id not in [m.id for m in client.models()]
    assert F.client_error(lambda: client.get_model(reg.id)).code == "NOT_FOUND"
    assert not F.blob_path(server.data_dir, reg.id).exists()
    assert F.client_error(lambda: client.delete_model(reg.id)).code == "NOT_FOUND"
    # the other model is untouched
    assert client.get_model(stored["model"].id).id == stored["model"].id


def test_datasets_sharing_bytes_keep_their_blob_until_the_last_goes(
        client: Client, server: F.ServerProcess) -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((60, 6)).astype(np.float32)
    t = rng.standard_normal(60).astype(np.float32)
    a = client.upload_dataset({"x": x}, targets=t, name="flat")
    b = client.upload_dataset({"x": x.reshape(60, 2, 3)}, targets=t, name="reshaped")
    assert a.id != b.id
    assert a.task == b.task == "regression"
    digest = hashlib.sha256(x.tobytes() + t.tobytes()).hexdigest()
    blob = F.blob_path(server.data_dir, digest)
    assert blob.is_file() and blob.read_bytes() == x.tobytes() + t.tobytes()
    newest = client.datasets()
    assert [d.id for d in newest[:2]] == [b.id, a.id], "ListDatasets is newest first"

    client.delete_dataset(a.id)
    assert a.id not in [d.id for d in client.datasets()]
    assert F.client_error(lambda: client.get_dataset(a.id)).code == "NOT_FOUND"
    assert blob.is_file(), "the blob is still used by the other dataset"
    res = client.compute_indices(x, targets=t)  # the server still answers
    assert res["task"] == "regression"
    assert client.get_dataset(b.id).n_samples == 60
    client.delete_dataset(b.id)
    assert not blob.exists()
    assert F.client_error(lambda: client.delete_dataset(b.id)).code == "NOT_FOUND"


# ---------------------------------------------------------------------------------------
# ComputeIndices
# ---------------------------------------------------------------------------------------


def _blobs(n: int, d: int, labels: list[int], seed: int, spread: float = 1.5
           ) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around one random centre per label (continuous: no distance ties)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((len(labels), d)) * spread
    c = rng.integers(0, len(labels), n)
    x = centers[c] + rng.standard_normal((n, d))
    return x.astype(np.float32), np.asarray(labels, np.int64)[c]


def _per_sample_expected(engine_set: Any) -> dict[str, np.ndarray]:
    out = {}
    for name, value in engine_set.per_sample.items():
        if isinstance(value, dict):
            for r, arr in value.items():
                out[f"{name}[{r}]_per_sample"] = np.asarray(arr)
        else:
            out[f"{name}_per_sample"] = np.asarray(value)
    return out


def _split_per_sample(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    plain = {k: v for k, v in d.items() if not k.endswith("_per_sample")}
    per = {k: v for k, v in d.items() if k.endswith("_per_sample")}
    return plain, per


def _compare_indices(got: Any, want: Any, per_sample: bool) -> None:
    """Client IndicesResult vs engine IndexResult, value by value."""
    g = dict(got.data)
    w = want.to_dict(per_class=True, per_sample=False)
    g_opts, w_opts = g.pop("options"), w.pop("options")
    g_opts.pop("seconds", None)
    w_opts.pop("seconds", None)
    F.assert_same(g_opts, w_opts, "options")
    g_cross = g.pop("cross", None)
    w_cross = w.pop("cross", None)
    g_plain, g_per = _split_per_sample(g)
    F.assert_same(g_plain, w, "train")
    assert (g_cross is None) == (w_cross is None)
    if per_sample:
        F.assert_same(g_per, _per_sample_expected(want.train), "train.per_sample")
    else:
        assert not g_per
    if w_cross is not None:
        c_plain, c_per = _split_per_sample(g_cross)
        F.assert_same(c_plain, w_cross, "cross")
        if per_sample:
            F.assert_same(c_per, _per_sample_expected(want.cross), "cross.per_sample")
        else:
            assert not c_per


def test_compute_indices_classification_equals_engine(client: Client) -> None:
    labels = [-3, 7, 42]
    x, y = _blobs(400, 8, labels, seed=1)
    xt, yt = _blobs(150, 8, labels, seed=2)
    opts: dict[str, Any] = dict(
        indices=["si", "high_order_si", "soft_order_si", "anti_si", "center_si",
                 "margin_order", "single_feature_si", "feature_ranking"],
        orders=[1, 3, 5], max_features=4)
    got = client.compute_indices(x, labels=y, test_features=xt, test_labels=yt,
                                 per_sample=True, **opts)
    want = compute_indices(x, labels=y, test_features=xt, test_labels=yt, **opts)
    _compare_indices(got, want, per_sample=True)

    # independent of the engine: brute-force float64 nearest neighbours
    assert got["si"] == pytest.approx(F.brute_si(x, y), abs=1e-12)
    assert got.cross["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=1e-12)
    nn = F.neighbours(x)[:, 0]
    np.testing.assert_array_equal(got["si_per_sample"], (y[nn] == y).astype(float))
    assert got["classes"] == labels
    assert set(got["si_per_class"]) == {str(v) for v in labels}
    assert len(got["single_feature_si"]) == 8
    assert got["n_samples"] == 400 and got.cross["n_samples"] == 150


def test_compute_indices_classification_defaults_no_per_sample(client: Client) -> None:
    x, y = _blobs(200, 5, [0, 1], seed=3)
    got = client.compute_indices(x, labels=y)
    want = compute_indices(x, labels=y)
    _compare_indices(got, want, per_sample=False)
    assert got.cross is None


@pytest.mark.parametrize("targets_2d", [False, True])
def test_compute_indices_regression_equals_engine(client: Client, targets_2d: bool) -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 5)).astype(np.float32)
    xt = rng.standard_normal((120, 5)).astype(np.float32)

    def f(a: np.ndarray) -> np.ndarray:
        base = np.sin(a[:, 0]) + 0.5 * a[:, 1] ** 2
        return (np.stack([base, a[:, 2]], axis=1) if targets_2d else base).astype(np.float64)

    t, tt = f(x), f(xt)
    opts: dict[str, Any] = dict(orders=[1, 4], gamma=0.7)
    got = client.compute_indices(x, targets=t, test_features=xt, test_targets=tt,
                                 per_sample=True, **opts)
    want = compute_indices(x, targets=t, test_features=xt, test_targets=tt, **opts)
    _compare_indices(got, want, per_sample=True)
    assert got["task"] == "regression"
    assert got["smi_linear"] == pytest.approx(F.brute_smi_linear(x, t), rel=1e-12)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_the_server_rests_once_a_call_is_answered(server: F.ServerProcess,
                                                  client: Client) -> None:
    """OpenBLAS's threads spin for ~0.1 s of a core after each multithreaded call unless
    told otherwise; the server tells them to sleep after ~6 ms (OPENBLAS_THREAD_TIMEOUT,
    set before NumPy loads): in the 0.4 s after each of three answers it uses about
    nothing, where the spinning threads took 0.05-0.1 s after each."""
    F.wait_until(lambda: all(j.state not in ("queued", "running") for j in client.jobs()),
                 60, "the module's earlier jobs to end")  # work of their own would count
    x, y = _blobs(2000, 64, [0, 1, 2], seed=25)
    after = []
    for _ in range(3):
        client.compute_indices(x, labels=y)
        before = _cpu_seconds(server.pid)
        time.sleep(0.4)
        after.append(_cpu_seconds(server.pid) - before)
    assert sum(after) < 0.06, after


def _stored_header(**fields: Any) -> analysis_pb2.ComputeIndicesRequest:
    return analysis_pb2.ComputeIndicesRequest(header=analysis_pb2.ComputeIndicesHeader(**fields))


def test_compute_indices_on_stored_datasets_sends_the_header_alone(
        client: Client, raw: F.Stubs) -> None:
    """Stored datasets are indexed by id: one message on the wire, the same numbers as the
    arrays sent with the call, and brute force agrees."""
    labels = [4, -1, 9]
    x, y = _blobs(300, 6, labels, seed=21)
    xt, yt = _blobs(90, 6, labels, seed=22)
    train = client.upload_dataset({"pixels": x}, labels=y)  # any input name: the features
    test = client.upload_dataset({"pixels": xt}, labels=yt)
    opts: dict[str, Any] = dict(orders=[1, 4], per_sample=True)
    got = client.compute_indices(train, test_features=test.id, **opts)
    want = compute_indices(x, labels=y, test_features=xt, test_labels=yt, orders=[1, 4])
    _compare_indices(got, want, per_sample=True)
    assert got["si"] == pytest.approx(F.brute_si(x, y), abs=1e-12)
    assert got.cross["si"] == pytest.approx(F.brute_si(x, y, xt, yt), abs=1e-12)

    one = raw.analysis.ComputeIndices(iter([_stored_header(dataset_id=train.id)]), timeout=60)
    assert one.train.n_samples == 300 and one.train.si == got["si"]
    assert not one.HasField("cross")


def test_compute_indices_on_a_stored_regression_set(client: Client) -> None:
    rng = np.random.default_rng(23)
    x = rng.standard_normal((200, 4))
    t = np.stack([np.sin(x[:, 0]), x[:, 1] ** 2], axis=1)
    ds = client.upload_dataset(x, targets=t)
    got = client.compute_indices(ds, orders=[1, 3], gamma=0.5)
    want = compute_indices(x, targets=t, orders=[1, 3], gamma=0.5)
    _compare_indices(got, want, per_sample=False)
    assert got["smi_linear"] == pytest.approx(F.brute_smi_linear(x, t), rel=1e-12)


def test_compute_indices_on_stored_datasets_refuses_what_does_not_fit(
        client: Client, raw: F.Stubs) -> None:
    x, y = _blobs(60, 3, [0, 1], seed=24)
    train = client.upload_dataset(x, labels=y)
    two_inputs = client.upload_dataset({"a": x, "b": x[:, :2]}, labels=y)
    regression = client.upload_dataset(x, targets=x[:, 0].astype(np.float64))
    narrow = client.upload_dataset(x[:, :2], labels=y)
    chunk = analysis_pb2.ComputeIndicesRequest(chunk=common_pb2.Chunk(offset=0, data=b"x"))
    spec = common_pb2.TensorSpec(name="features", dtype="float32", shape=[60, 3])
    for what, msgs, want, needle in [
        ("unknown id", [_stored_header(dataset_id="0" * 64)], grpc.StatusCode.NOT_FOUND,
         "0" * 64),
        ("unknown test id", [_stored_header(dataset_id=train.id, test_dataset_id="f" * 64)],
         grpc.StatusCode.NOT_FOUND, "f" * 64),
        ("test without train", [_stored_header(test_dataset_id=train.id)],
         grpc.StatusCode.INVALID_ARGUMENT, "test_dataset_id needs dataset_id"),
        ("tensors too", [_stored_header(dataset_id=train.id, tensors=[spec])],
         grpc.StatusCode.INVALID_ARGUMENT, "sends no tensors"),
        ("a chunk after", [_stored_header(dataset_id=train.id), chunk],
         grpc.StatusCode.INVALID_ARGUMENT, "the header is the whole request"),
        ("a second header", [_stored_header(dataset_id=train.id)] * 2,
         grpc.StatusCode.INVALID_ARGUMENT, "the header is the whole request"),
        ("two inputs", [_stored_header(dataset_id=two_inputs.id)],
         grpc.StatusCode.FAILED_PRECONDITION, "2 input tensors ('a', 'b')"),
        ("other task", [_stored_header(dataset_id=train.id, test_dataset_id=regression.id)],
         grpc.StatusCode.FAILED_PRECONDITION, "same task"),
        ("other width", [_stored_header(dataset_id=train.id, test_dataset_id=narrow.id)],
         grpc.StatusCode.FAILED_PRECONDITION, "2 features per sample"),
        ("overlong id", [_stored_header(dataset_id="a" * 100_000)],
         grpc.StatusCode.INVALID_ARGUMENT, "dataset_id"),
        ("bad option", [_stored_header(dataset_id=train.id,
                                       options=analysis_pb2.IndexOptions(indices=["nope"]))],
         grpc.StatusCode.INVALID_ARGUMENT, "nope"),
        ("order too large", [_stored_header(dataset_id=train.id,
                                            options=analysis_pb2.IndexOptions(orders=[60]))],
         grpc.StatusCode.INVALID_ARGUMENT, "orders"),
    ]:
        code, details = F.code_of(lambda msgs=msgs: raw.analysis.ComputeIndices(
            iter(msgs), timeout=60))
        assert code == want and needle in details, (what, code, details)
    # the client refuses mixed forms before anything is sent
    with pytest.raises(ValueError, match="cannot be given with it"):
        client.compute_indices(train, labels=y)
    with pytest.raises(ValueError, match="both as stored datasets"):
        client.compute_indices(train, test_features=x)
    with pytest.raises(ValueError, match="both as stored datasets"):
        client.compute_indices(x, labels=y, test_features=train)
    # and the server is still whole
    assert client.compute_indices(train.id)["si"] == pytest.approx(F.brute_si(x, y), abs=1e-12)


# ---------------------------------------------------------------------------------------
# Layer-wise analysis jobs
# ---------------------------------------------------------------------------------------


def _compare_layerwise(got: Any, want: Any) -> None:
    g, w = got.to_dict(), want.to_dict()
    assert g["task"] == w["task"]
    F.assert_same(g["model"], w["model"], "model")
    assert [la["name"] for la in g["layers"]] == [la["name"] for la in w["layers"]]
    for gl, wl in zip(g["layers"], w["layers"], strict=True):
        F.assert_same(gl, wl, f"layer {wl['name']}")
    F.assert_same(g["plateau"], w["plateau"], "plateau")
    assert g["warnings"] == w["warnings"]
    g["options"].pop("seconds")
    w["options"].pop("seconds")
    F.assert_same(g["options"], w["options"], "options")


def test_layer_analysis_progress_and_result_equal_in_process(
        client: Client, stored: dict[str, Any], mlp: F.Classifier) -> None:
    job = client.start_layer_analysis(stored["model"], stored["train"], stored["test"],
                                      batch_size=4, probe=True)
    assert job.kind == "layer_analysis"
    assert job.state in ("queued", "running")
    events = list(client.watch(job))
    final = events[-1]
    assert final.state == "succeeded", final.message
    assert all(e.state in ("queued", "running") for e in events[:-1])
    assert len(events) >= 3, [e.progress for e in events]
    stages = [str(e.progress.get("stage", "")) for e in events]
    assert stages[-1] == "done"
    assert "indices" in stages, stages
    assert any(s.startswith("extract:") for s in stages) or "loading" in stages, stages
    fractions = [float(e.progress.get("fraction", 0.0)) for e in events]
    assert fractions == sorted(fractions), fractions
    assert fractions[-1] == 1.0
    for e in events:
        p = e.progress
        assert int(p.get("done", 0)) <= max(int(p.get("total", 0)), int(p.get("done", 0)))
        assert 0.0 <= float(p.get("fraction", 0.0)) <= 1.0
    assert final.started >= final.created > 0 and final.finished >= final.started
    assert final.result is not None

    want = analyze_layers(mlp.onnx_bytes, {mlp.input_name: mlp.x}, labels=mlp.y,
                          test={mlp.input_name: mlp.xt}, test_labels=mlp.yt, batch_size=4,
                          probe=True, layers=["auto"])
    _compare_layerwise(final.result, want)

    # the input layer's si, independent of layerscope
    rows = {la["name"]: la for la in final.result.layers}
    x_row = rows[mlp.input_name]
    assert x_row["kind"] == "input"
    assert x_row["si"] == pytest.approx(F.brute_si(mlp.x, mlp.y), abs=1e-12)
    assert x_row["cross"]["si"] == pytest.approx(F.brute_si(mlp.x, mlp.y, mlp.xt, mlp.yt),
                                                 abs=1e-12)
    assert {"next_activations", "next_activations1"} <= set(rows)

    # GetJob gives the same result; ListJobs lists it without the result
    again = client.job(job.id)
    assert again.state == "succeeded"
    assert again.result is not None and again.result.to_dict() == final.result.to_dict()
    listed = {j.id: j for j in client.jobs()}
    assert job.id in listed and listed[job.id].result is None


def test_layer_analysis_regression_equals_in_process(client: Client) -> None:
    rng = np.random.default_rng(3)
    model = F.tiny_regressor(seed=3)
    x = rng.standard_normal((250, 6)).astype(np.float32)
    t = (np.tanh(x[:, 0]) + x[:, 1] * x[:, 2]).astype(np.float32)
    got = client.analyze_layers(model, {"x": x}, targets=t, layers="all", orders=[1, 3])
    want = analyze_layers(model, {"x": x}, targets=t, layers=["all"], orders=[1, 3])
    _compare_layerwise(got, want)
    assert got.to_dict()["task"] == "regression"
    first = got.layers[0]
    assert first["name"] == "x"
    assert first["smi_linear"] == pytest.approx(F.brute_smi_linear(x, t), rel=1e-12)


def test_cancel_running_job_then_server_stays_healthy(
        client: Client, server: F.ServerProcess, raw: F.Stubs, stored: dict[str, Any],
        slow: F.SlowJob) -> None:
    _, _, job = F.start_slow(client, slow)
    queued = client.start_layer_analysis(stored["model"], stored["train"],
                                         layers=["next_activations"])
    try:
        running = F.wait_extracting(client, job.id)
        assert running.state == "running"
        assert client.job(queued.id).state == "queued"

        # a watch that hits its deadline ends with DEADLINE_EXCEEDED; the job goes on
        code, _ = F.code_of(lambda: list(raw.analysis.WatchJob(
            analysis_pb2.WatchJobRequest(id=job.id), timeout=0.5)))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert client.job(job.id).state == "running"

        # cancel the queued job: it never runs
        q = client.cancel(queued)
        assert q.state == "cancelled", (q.state, q.message)

        watcher: list[Any] = []
        t = threading.Thread(target=lambda: watcher.extend(client.watch(job)), daemon=True)
        t.start()
        before = client.job(job.id).progress
        t0 = time.monotonic()
        client.cancel(job)
        final = F.wait_until(lambda: (j := client.job(job.id)).done and j, 10,
                             "the cancelled job to stop")
        took = time.monotonic() - t0
    finally:
        client.cancel(job)  # never leave the slow job running for the other tests
    assert final.state == "cancelled", (final.state, final.message)
    assert final.message
    assert took < 5, f"cancel took {took:.1f}s; it should stop between batches"
    assert final.result is None
    p = final.progress
    assert str(p.get("stage", "")).startswith("extract"), p
    assert int(p["done"]) < int(p["total"]) == len(slow.x)
    assert int(p["done"]) >= int(before.get("done", 0))
    t.join(10)
    assert not t.is_alive(), "WatchJob did not end after the cancel"
    assert watcher and watcher[-1].state == "cancelled"
    assert client.job(queued.id).state == "cancelled"

    # cancelling a finished job is a no-op that returns it as it is
    again = client.cancel(job)
    assert again.state == "cancelled" and again.message == final.message
    assert again.finished == final.finished
    _assert_healthy(client, stored)
    done = [j for j in client.jobs() if j.state == "succeeded"][0]
    assert client.cancel(done).state == "succeeded"
    assert server.alive()


# ---------------------------------------------------------------------------------------
# Errors: every class with its status code
# ---------------------------------------------------------------------------------------


def _raw_dataset(raw: F.Stubs, specs: list[tuple[str, str, list[int]]], data: bytes,
                 **kw: Any) -> tuple[grpc.StatusCode, str]:
    return F.code_of(lambda: raw.datasets.UploadDataset(F.dataset_requests(specs, data, **kw),
                                                        timeout=30))


def test_invalid_dataset_headers(raw: F.Stubs, client: Client, server: F.ServerProcess) -> None:
    x = np.arange(40, dtype=np.float32).reshape(10, 4)
    y = np.arange(10, dtype=np.int64) % 2
    t = np.linspace(0, 1, 10, dtype=np.float32)
    good = [("x", "float32", [10, 4]), ("labels", "int64", [10])]
    data = x.tobytes() + y.tobytes()
    before = {d.id for d in client.datasets()}
    cases = {
        "unknown dtype": ([("x", "float128x", [10, 4]), ("labels", "int64", [10])], data, {},
                          "float128x"),
        "complex dtype": ([("x", "complex64", [10, 2]), ("labels", "int64", [10])], data, {},
                          "complex64"),
        "both labels and targets": (
            [("x", "float32", [10, 4]), ("labels", "int64", [10]),
             ("targets", "float32", [10])], data + t.tobytes(), {}, "labels"),
        "neither labels nor targets": ([("x", "float32", [10, 4])], x.tobytes(), {},
                                       "labels"),
        "sample counts differ": ([("x", "float32", [10, 4]), ("labels", "int64", [8])],
                                 x.tobytes() + y[:8].tobytes(), {}, "samples"),
        "float labels": ([("x", "float32", [10, 4]), ("labels", "float32", [10])],
                         x.tobytes() + t.tobytes(), {}, "labels"),
        "sha256 mismatch": (good, data, {"sha256": hashlib.sha256(b"other").hexdigest()},
                            "sha256"),
        "sha256 not hex": (good, data, {"sha256": "xyz"}, "sha256"),
        "size mismatch": (good, data, {"size": len(data) + 8}, "size_bytes"),
        "short upload": (good, data[:-8], {"size": len(data)}, str(len(data))),
        "non-finite values": (good, np.full((10, 4), np.nan, np.float32).tobytes()
                              + y.tobytes(), {}, "non-finite"),
    }
    for what, (specs, payload, kw, needle) in cases.items():
        code, details = _raw_dataset(raw, specs, payload, **kw)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, code, details)
        assert needle in details, (what, details)
    assert {d.id for d in client.datasets()} == before, "nothing was stored"
    assert F.tmp_uploads(server.data_dir) == []
    assert not F.blob_path(server.data_dir, hashlib.sha256(data).hexdigest()).exists()


def test_invalid_stream_shapes(raw: F.Stubs) -> None:
    """Empty streams, a chunk first, a second header, a wrong offset: INVALID_ARGUMENT."""
    data = b"0123456789"
    header = next(F.model_requests(data))
    chunk = models_pb2.UploadModelRequest(chunk=common_pb2.Chunk(offset=0, data=data))
    bad_offset = models_pb2.UploadModelRequest(chunk=common_pb2.Chunk(offset=3, data=data))
    for what, msgs in {"empty": [], "chunk first": [chunk], "two headers": [header, header],
                       "bad offset": [header, bad_offset]}.items():
        code, details = F.code_of(lambda msgs=msgs: raw.models.UploadModel(iter(msgs),
                                                                           timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, code, details)
    code, _ = F.code_of(lambda: raw.datasets.UploadDataset(iter([]), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = F.code_of(lambda: raw.analysis.ComputeIndices(iter([]), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("payload", [b"this is not an onnx model", b"", b"\x08\x07\x12"],
                         ids=["text", "empty", "truncated-proto"])
def test_non_onnx_model_bytes(client: Client, server: F.ServerProcess, payload: bytes) -> None:
    before = [m.id for m in client.models()]
    err = F.client_error(lambda: client.upload_model(payload, name="junk"))
    assert err.code == "INVALID_ARGUMENT", err
    digest = hashlib.sha256(payload).hexdigest()
    assert [m.id for m in client.models()] == before
    assert not F.blob_path(server.data_dir, digest).exists()
    assert F.tmp_uploads(server.data_dir) == []
    assert F.client_error(lambda: client.get_model(digest)).code == "NOT_FOUND"


def test_model_sha256_mismatch(raw: F.Stubs, mlp: F.Classifier) -> None:
    code, details = F.code_of(lambda: raw.models.UploadModel(
        F.model_requests(mlp.onnx_bytes[:-1] + b"\x00",
                         sha256=hashlib.sha256(b"x").hexdigest()), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "sha256" in details


def test_compute_indices_invalid_arguments(client: Client, raw: F.Stubs) -> None:
    x, y = _blobs(50, 3, [0, 1], seed=4)
    err = F.client_error(lambda: client.compute_indices(x, labels=y, indices=["si", "nope"]))
    assert err.code == "INVALID_ARGUMENT" and "nope" in err.details
    err = F.client_error(lambda: client.compute_indices(x, labels=y, orders=[0]))
    assert err.code == "INVALID_ARGUMENT" and "orders" in err.details
    err = F.client_error(lambda: client.compute_indices(x, labels=y, precision="sloppy"))
    assert err.code == "INVALID_ARGUMENT" and "sloppy" in err.details
    err = F.client_error(lambda: client.compute_indices(x, labels=y, targets=y.astype(float)))
    assert err.code == "INVALID_ARGUMENT"
    err = F.client_error(lambda: client.compute_indices(x, labels=y[:10]))
    assert err.code == "INVALID_ARGUMENT"
    xn = x.copy()
    xn[3, 1] = np.nan
    err = F.client_error(lambda: client.compute_indices(xn, labels=y))
    assert err.code == "INVALID_ARGUMENT"

    def header(specs: list[tuple[str, str, list[int]]]) -> analysis_pb2.ComputeIndicesRequest:
        return analysis_pb2.ComputeIndicesRequest(header=analysis_pb2.ComputeIndicesHeader(
            tensors=[common_pb2.TensorSpec(name=n, dtype=d, shape=s) for n, d, s in specs]))

    def send(specs: list[tuple[str, str, list[int]]], data: bytes) -> Any:
        msgs = [header(specs), analysis_pb2.ComputeIndicesRequest(
            chunk=common_pb2.Chunk(offset=0, data=data))]
        return F.code_of(lambda: raw.analysis.ComputeIndices(iter(msgs), timeout=30))

    xy = x.tobytes() + y.tobytes()
    for what, specs, data in [
        ("unknown dtype", [("features", "float99", [50, 3]), ("labels", "int64", [50])], xy),
        ("unknown tensor", [("features", "float32", [50, 3]), ("weights", "int64", [50])], xy),
        ("no features", [("labels", "int64", [50])], y.tobytes()),
        ("too few bytes", [("features", "float32", [50, 3]), ("labels", "int64", [50])],
         xy[:-8]),
        ("too many bytes", [("features", "float32", [50, 3]), ("labels", "int64", [50])],
         xy + b"\x00" * 8),
    ]:
        code, details = send(specs, data)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (what, code, details)


def test_start_layer_analysis_errors(client: Client, stored: dict[str, Any],
                                     mlp: F.Classifier) -> None:
    model, train = stored["model"], stored["train"]
    err = F.client_error(lambda: client.start_layer_analysis(model, train,
                                                             layers=["no_such_layer"]))
    assert err.code == "INVALID_ARGUMENT" and "no_such_layer" in err.details

    missing = "0" * 64
    for m, d, t in [(missing, train.id, None), (model.id, missing, None),
                    (model.id, train.id, missing)]:
        err = F.client_error(lambda m=m, d=d, t=t: client.start_layer_analysis(m, d, t))
        assert err.code == "NOT_FOUND", err
        assert missing in err.details

    # FAILED_PRECONDITION: the dataset does not fit the model
    wrong_name = client.upload_dataset({"pixels": mlp.x[:50]}, labels=mlp.y[:50])
    err = F.client_error(lambda: client.start_layer_analysis(model, wrong_name))
    assert err.code == "FAILED_PRECONDITION", err
    assert mlp.input_name in err.details and "pixels" in err.details

    narrow = client.upload_dataset({mlp.input_name: mlp.x[:50, :32]}, labels=mlp.y[:50])
    err = F.client_error(lambda: client.start_layer_analysis(model, narrow))
    assert err.code == "FAILED_PRECONDITION", err
    assert repr(mlp.input_name) in err.details
    assert "(50, 32)" in err.details and "64" in err.details

    rank3 = client.upload_dataset({mlp.input_name: mlp.x[:50].reshape(50, 8, 8)},
                                  labels=mlp.y[:50])
    err = F.client_error(lambda: client.start_layer_analysis(model, rank3))
    assert err.code == "FAILED_PRECONDITION", err
    assert "(50, 8, 8)" in err.details

    ints = client.upload_dataset({mlp.input_name: (mlp.x[:50] * 16).astype(np.int64)},
                                 labels=mlp.y[:50])
    err = F.client_error(lambda: client.start_layer_analysis(model, ints))
    assert err.code == "FAILED_PRECONDITION" and "int64" in err.details, err

    regression = client.upload_dataset({mlp.input_name: mlp.xt[:40]},
                                       targets=mlp.yt[:40].astype(np.float32))
    err = F.client_error(lambda: client.start_layer_analysis(model, train, regression))
    assert err.code == "FAILED_PRECONDITION", err


def test_start_layer_analysis_rejects_a_negative_batch_size(
        client: Client, stored: dict[str, Any]) -> None:
    """batch_size < 0 is a bad argument: INVALID_ARGUMENT naming it. (A job that runs
    with it extracts nothing and computes indices on uninitialised activations.)"""
    try:
        job = client.start_layer_analysis(stored["model"], stored["train"], batch_size=-3)
    except Exception as exc:  # noqa: BLE001 - the expected outcome
        assert getattr(exc, "code", None) == "INVALID_ARGUMENT", exc
        assert "batch_size" in str(exc)
        return
    final = list(client.watch(job))[-1]
    si = [la.get("si") for la in final.result.layers] if final.result else None
    raise AssertionError(
        f"batch_size=-3 was accepted; the job ended {final.state!r} with si per layer {si}")


@pytest.mark.parametrize("options", [{"indices": ["nope"]}, {"orders": [0]},
                                     {"reduce": "bogus"}], ids=["indices", "orders", "reduce"])
def test_bad_analysis_options_are_not_reported_as_success(
        client: Client, stored: dict[str, Any], options: dict[str, Any]) -> None:
    """A bad option that applies to every layer is rejected at once (INVALID_ARGUMENT) or
    fails the job with a message naming it; never a 'succeeded' job without one value."""
    bad = str(next(iter(options.values())))
    bad = bad.strip("[]'")
    try:
        job = client.start_layer_analysis(stored["model"], stored["train"], **options)
    except Exception as exc:  # noqa: BLE001
        assert getattr(exc, "code", None) == "INVALID_ARGUMENT", exc
        assert bad in str(exc)
        return
    final = list(client.watch(job))[-1]
    errors = [la.get("error") for la in final.result.layers] if final.result else []
    assert final.state == "failed", (
        f"{options} accepted; the job ended {final.state!r} with message "
        f"{final.message!r} and layer errors {errors}")
    assert bad in final.message


def test_not_found(client: Client, raw: F.Stubs) -> None:
    missing = "f" * 64
    for call in (lambda: client.get_model(missing), lambda: client.delete_model(missing),
                 lambda: client.get_dataset(missing), lambda: client.delete_dataset(missing),
                 lambda: client.job("0" * 32), lambda: client.cancel("0" * 32),
                 lambda: list(client.watch("0" * 32)), lambda: client.get_model("")):
        err = F.client_error(call)
        assert err.code == "NOT_FOUND", err
    code, details = F.code_of(lambda: list(raw.analysis.WatchJob(
        analysis_pb2.WatchJobRequest(id="nope"), timeout=10)))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in details


# ---------------------------------------------------------------------------------------
# Deadlines
# ---------------------------------------------------------------------------------------


def test_deadline_exceeded_and_server_keeps_serving(server: F.ServerProcess,
                                                    stored: dict[str, Any]) -> None:
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4000, 128)).astype(np.float32)
    y = rng.integers(0, 5, 4000)
    # the server needs a few hundred ms for this; the deadlines are far shorter
    for timeout in (1e-3, 0.02):
        with Client(server.address, timeout=timeout) as hasty:
            t0 = time.monotonic()
            err = F.client_error(lambda hasty=hasty: hasty.compute_indices(
                x, labels=y, indices=["si", "single_feature_si"]))
            assert err.code == "DEADLINE_EXCEEDED", err
            assert time.monotonic() - t0 < 5
    with Client(server.address, timeout=60) as patient:
        assert patient.get_model(stored["model"].id).id == stored["model"].id
        res = patient.compute_indices(x[:500], labels=y[:500], indices=["si"])
        assert res["si"] == pytest.approx(F.brute_si(x[:500], y[:500]), abs=1e-12)
    assert server.alive()


# ---------------------------------------------------------------------------------------
# Large and interrupted uploads
# ---------------------------------------------------------------------------------------


@pytest.mark.timeout(240)
def test_200_mb_dataset_upload(client: Client, server: F.ServerProcess) -> None:
    m, d = 204800, 256  # 200 MiB of float32 features, plus the labels
    x = np.empty((m, d), np.float32)
    x[:] = np.arange(d, dtype=np.float32)
    x += np.arange(m, dtype=np.float32)[:, None] * np.float32(1e-3)
    y = (np.arange(m) % 10).astype(np.int64)
    h = hashlib.sha256(memoryview(x).cast("B"))
    h.update(memoryview(y).cast("B"))
    digest = h.hexdigest()
    size = x.nbytes + y.nbytes

    with F.PeakMemory(server.pid) as mem:
        ds = client.upload_dataset({"features": x}, labels=y, name="big")
    assert ds.n_samples == m and ds.size_bytes == size
    blob = F.blob_path(server.data_dir, digest)
    assert blob.stat().st_size == size
    on_disk = hashlib.sha256()
    with open(blob, "rb") as f:
        while chunk := f.read(8 << 20):
            on_disk.update(chunk)
    assert on_disk.hexdigest() == digest
    grown_mib = (mem.peak - mem.start) / 1024
    assert grown_mib < 200, (
        f"the server's anonymous memory grew by {grown_mib:.0f} MiB during a 200 MiB upload")
    assert F.tmp_uploads(server.data_dir) == []
    del x
    client.delete_dataset(ds.id)
    assert not blob.exists()


def test_interrupted_upload_leaves_nothing(raw: F.Stubs, client: Client,
                                           server: F.ServerProcess) -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4096, 256)).astype(np.float32)  # 4 MiB: four 1 MiB chunks
    y = (np.arange(4096) % 3).astype(np.int64)
    data = x.tobytes() + y.tobytes()
    specs = [("features", "float32", [4096, 256]), ("labels", "int64", [4096])]
    msgs = list(F.dataset_requests(specs, data))
    before = [d.id for d in client.datasets()]
    release, sent = threading.Event(), threading.Event()
    future = raw.datasets.UploadDataset.future(F.held_open(msgs[:3], release, sent),
                                               timeout=60)
    try:
        assert sent.wait(10)
        F.wait_until(lambda: F.tmp_uploads(server.data_dir), 10,
                     "the half-received upload to appear in blobs/tmp")
        assert future.cancel()
    finally:
        release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result(timeout=10)
    F.wait_until(lambda: not F.tmp_uploads(server.data_dir), 10,
                 "blobs/tmp to be emptied after the cancelled upload")
    assert [d.id for d in client.datasets()] == before
    assert not F.blob_path(server.data_dir, hashlib.sha256(data).hexdigest()).exists()

    # the same upload, complete, then works
    resp = raw.datasets.UploadDataset(iter(msgs), timeout=60)
    assert not resp.already_present and resp.dataset.n_samples == 4096
    client.delete_dataset(resp.dataset.id)


def test_upload_model_via_path_and_proto(client: Client, tmp_path: Path) -> None:
    import onnx

    data = F.tiny_regressor(seed=21)
    path = tmp_path / "tiny.onnx"
    path.write_bytes(data)
    a = client.upload_model(path)
    assert a.name == "tiny.onnx" and a.id == hashlib.sha256(data).hexdigest()
    b = client.upload_model(onnx.load_from_string(data))
    assert b.id == a.id
    client.delete_model(a.id)


def test_dataset_response_messages_are_complete(raw: F.Stubs, stored: dict[str, Any]) -> None:
    listed = raw.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest(), timeout=10)
    row = {d.id: d for d in listed.datasets}[stored["train"].id]
    assert row.created > 0 and row.size_bytes == stored["train"].size_bytes
    assert [t.name for t in row.tensors][-1] == "labels"
