"""Memory is bounded by the server, not by the request (--max-request-memory-mb).

Every request is estimated before work starts and refused with RESOURCE_EXHAUSTED beyond
the server's budget; requests running together share it; uploads are held once; the
memory budget options are finite and positive. The server tests run a real server process
and read its peak resident memory (VmHWM in /proc/PID/status); the unit tests compare the
estimates with the peaks tracemalloc measures.
"""

from __future__ import annotations

import math
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import server as F
from onnx import TensorProto, helper, numpy_helper

from layerscope.protos.options import IndexOptions
from layerscope.protos.stubs import analysis_pb2, common_pb2
from layerscope.server.analysis import memory
from layerscope.server.analysis.data import split
from layerscope.server.api import streams
from layerscope.server.cancellation import Cancellation
from layerscope.server.graph import describe, load_model, select_layers
from layerscope.server.metrics import compute_indices
from layerscope.server.metrics.knn import knn

pytestmark = pytest.mark.timeout(180)
MIB = 1 << 20


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def vm_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def peak_baseline(pid: int) -> int:
    """The server's memory now, as the baseline of its next peak (KiB): where the kernel
    allows it, the peak is reset to the current resident size; otherwise the peak so far
    (taken after a warm-up request of the same kind)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass
    return vm_kib(pid, "VmHWM")


def indices_requests(arrays: dict[str, np.ndarray], options: analysis_pb2.IndexOptions,
                     chunk: int = 1 << 20, send: bool = True) -> Any:
    """ComputeIndices messages: the header, then (with ``send``) the bytes in chunks."""
    header = analysis_pb2.ComputeIndicesHeader(options=options, tensors=[
        common_pb2.TensorSpec(name=k, dtype=str(a.dtype), shape=list(a.shape))
        for k, a in arrays.items()])
    yield analysis_pb2.ComputeIndicesRequest(header=header)
    if not send:
        return
    offset = 0
    for a in arrays.values():
        flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        for s in range(0, len(flat), chunk):
            data = flat[s:s + chunk].tobytes()
            yield analysis_pb2.ComputeIndicesRequest(
                chunk=common_pb2.Chunk(offset=offset, data=data))
            offset += len(data)


def traced_peak(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------
# Estimates against measured peaks
# ---------------------------------------------------------------------------------------

# (task, m, d, test points, target columns, options): large orders (the neighbour table
# dominates), margin_order, the ordered SmI families (the sorted target neighbours), test
# sets, several target columns, normalisation with per-sample values, the single-feature
# scan and forward selection.
ENGINE_CASES = [
    ("classification", 3000, 3, 0, 1, {"orders": (2999,)}),
    ("classification", 20000, 16, 0, 1, {"indices": ("si", "margin_order"), "margin_cap": 300}),
    ("classification", 20000, 32, 5000, 1, {"orders": (1, 5, 50)}),
    ("classification", 20000, 200, 0, 1, {"normalize": True, "per_sample": True}),
    ("classification", 10000, 50, 0, 1, {"indices": ("single_feature_si",)}),
    ("classification", 3000, 20, 0, 1, {"indices": ("feature_ranking",), "max_features": 3}),
    ("regression", 3000, 20, 0, 1, {"indices": ("feature_ranking",), "max_features": 3}),
    ("regression", 400, 3, 0, 1, {"orders": (399,)}),
    ("regression", 5000, 8, 0, 1, {"orders": (1000,)}),
    ("regression", 5000, 8, 0, 3, {}),
    ("regression", 20000, 8, 5000, 1, {}),
]


@pytest.mark.parametrize("task,m,d,n,cols,kw", ENGINE_CASES)
def test_index_estimates_bound_the_measured_peak(task: str, m: int, d: int, n: int, cols: int,
                                                 kw: dict[str, Any]) -> None:
    """The estimate counts every array at the largest size the engine can give it (every
    row of a k-NN block re-ranked, forward selection's pools at their share of the
    budget), so the live arrays tracemalloc sees stay below it, up to the small Python
    objects of the result (10%). Above the peak it adds at most the working memory the
    engine may take (memory_budget_mb), which it reaches only on data with many ties or
    many features to select among."""
    rng = np.random.default_rng(m + d)
    x = rng.standard_normal((m, d)).astype(np.float32)
    xt = rng.standard_normal((n, d)).astype(np.float32) if n else None
    if task == "classification":
        y: Any = rng.integers(0, 10, m)
        args = {"labels": y, "test_features": xt, "test_labels": rng.integers(0, 10, n)
                if n else None}
    else:
        y = rng.standard_normal((m, cols)) if cols > 1 else rng.standard_normal(m)
        args = {"targets": y, "test_features": xt,
                "test_targets": rng.standard_normal((n, cols)) if n else None}
    opts = IndexOptions.build(**kw)
    shapes = memory.IndexShapes(task, m, d, 4, cols, 10 if task == "classification" else 2,
                                n, 10)
    est = memory.indices_estimate(shapes, opts).total

    def run() -> None:
        res = compute_indices(x, **args, **opts.engine_kwargs())
        res.to_dict(per_class=True, per_sample=opts.per_sample)

    peak = traced_peak(run)
    assert peak <= 1.1 * est, (peak / MIB, est / MIB)
    assert est - peak <= opts.memory_budget_mb * MIB + 0.1 * est, (peak / MIB, est / MIB)


def test_the_neighbour_table_of_orders_m_minus_1_is_m_squared() -> None:
    """orders=[m-1] keeps an m x (m-1) int64 table of neighbour indices."""
    m = 5000
    est = memory.indices_estimate(memory.IndexShapes("classification", m, 3),
                                  IndexOptions.build(orders=[m - 1]))
    table = [p for p in est.peak_parts() if p.name == "neighbour table"]
    assert [p.nbytes for p in table] == [8 * m * (m - 1)]
    assert est.total > 8 * m * (m - 1) + 17 * m * (m - 1)  # and the labels of them


def test_knn_of_large_orders_stays_within_its_memory_budget() -> None:
    """Beyond the (m, k) table of neighbours and a float32 copy of the points, the search
    takes its memory_budget_mb: large k means fewer rows per block, not a larger block."""
    m, k, budget_mb = 3000, 2999, 16
    x = np.random.default_rng(0).standard_normal((m, 3)).astype(np.float32)
    peak = traced_peak(lambda: knn(x, k, memory_budget_mb=budget_mb))
    assert peak <= 8 * m * k + 4 * m * 3 + 1.25 * budget_mb * MIB, peak / MIB


# ---------------------------------------------------------------------------------------
# The server refuses what exceeds its budget
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("memory")
    with F.ServerProcess(root / "data", "--max-request-memory-mb", "200") as s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


def _warm_up(stubs: F.Stubs) -> None:
    rng = np.random.default_rng(1)
    arrays = {"features": rng.standard_normal((300, 3)).astype(np.float32),
              "labels": rng.integers(0, 3, 300)}
    stubs.analysis.ComputeIndices(indices_requests(arrays, analysis_pb2.IndexOptions()),
                                  timeout=60)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_orders_of_m_minus_1_are_refused_before_any_work(small: F.ServerProcess,
                                                         task: str) -> None:
    """orders=[m-1] on m = 6000 points (72 KB of features) needs an m x m neighbour table
    (275 MiB) and more: RESOURCE_EXHAUSTED naming the option, and the server's memory does
    not grow by the request's cost."""
    m = 6000
    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, 3)).astype(np.float32)
    y = rng.integers(0, 10, m) if task == "classification" else rng.standard_normal(m)
    arrays = {"features": x, "labels" if task == "classification" else "targets": y}
    channel = small.channel()
    try:
        stubs = F.stubs(channel)
        _warm_up(stubs)
        base = peak_baseline(small.pid)
        code, details = F.code_of(lambda: stubs.analysis.ComputeIndices(
            indices_requests(arrays, analysis_pb2.IndexOptions(orders=[m - 1])), timeout=60))
        grown = vm_kib(small.pid, "VmHWM") - base
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "--max-request-memory-mb" in details and "orders" in details, details
        assert "200 MiB" in details, details
        assert grown * 1024 < 8 * m * (m - 1) // 4, grown  # far below the table alone
        # the server is well and answers what fits
        ok = stubs.analysis.ComputeIndices(
            indices_requests(arrays, analysis_pb2.IndexOptions(orders=[5])), timeout=60)
        assert ok.train.n_samples == m
    finally:
        channel.close()


def test_compute_indices_on_a_stored_dataset_is_estimated_before_any_work(
        small: F.ServerProcess) -> None:
    """By dataset id, the same admission: orders=[m-1] refused with RESOURCE_EXHAUSTED
    naming the option, from the stored dataset's shapes; a fitting order is answered. The
    estimate counts no payload (the dataset's file is mapped, not copied), which is all
    that differs from the same tensors sent with the call."""
    m = 6000
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((m, 3)).astype(np.float32), rng.integers(0, 10, m)
    specs = [{"name": "features", "dtype": "float32", "shape": [m, 3]},
             {"name": "labels", "dtype": "int64", "shape": [m]}]
    opts = IndexOptions(orders=[5])
    sent, stored = (memory.compute_indices_estimate(specs, opts, stored=flag).total
                    for flag in (False, True))
    assert sent - stored == x.nbytes + y.nbytes
    with small.client() as c:
        ds = c.upload_dataset(x, labels=y)
        channel = small.channel()
        try:
            stubs = F.stubs(channel)
            header = analysis_pb2.ComputeIndicesHeader(
                dataset_id=ds.id, options=analysis_pb2.IndexOptions(orders=[m - 1]))
            code, details = F.code_of(lambda: stubs.analysis.ComputeIndices(
                iter([analysis_pb2.ComputeIndicesRequest(header=header)]), timeout=60))
        finally:
            channel.close()
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "--max-request-memory-mb" in details and "orders" in details, details
        assert c.compute_indices(ds, orders=[5])["n_samples"] == m


def test_a_layer_analysis_beyond_the_budget_is_refused_and_no_job_is_made(
        small: F.ServerProcess) -> None:
    m = 4000
    rng = np.random.default_rng(2)
    with small.client() as c:
        model = c.upload_model(F.tiny_regressor(), name="tiny")
        ds = c.upload_dataset({"x": rng.standard_normal((m, 6)).astype(np.float32)},
                              targets=rng.standard_normal(m), name="many")
        before = len(c.jobs())
        err = F.client_error(lambda: c.start_layer_analysis(model, ds, orders=[m - 1]))
        assert err.code == "RESOURCE_EXHAUSTED", err
        assert "--max-request-memory-mb" in err.details and "orders" in err.details, err
        assert len(c.jobs()) == before
        job = c.start_layer_analysis(model, ds, orders=[5])  # what fits is accepted
        assert c.wait(job).layers


def big_model(weights: int) -> bytes:
    """x (N, 1) -> MatMul with a (1, weights) float32 initializer: 4 x weights bytes."""
    w = np.ones((1, weights), np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", weights])],
        [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_a_model_too_large_to_inspect_is_refused_before_its_bytes(
        small: F.ServerProcess) -> None:
    """Reading, parsing and shape-inferring a model takes about six copies of it: a 40 MB
    model needs ~240 MB, above the 200 MiB budget. Refused at the header, nothing stored."""
    model = big_model(10_000_000)
    with small.client() as c:
        before = c.models()
        base = peak_baseline(small.pid)
        err = F.client_error(lambda: c.upload_model(model, name="big"))
        grown = (vm_kib(small.pid, "VmHWM") - base) * 1024
        assert err.code == "RESOURCE_EXHAUSTED", err
        assert "--max-request-memory-mb" in err.details and "model" in err.details, err
        assert c.models() == before
        assert F.tmp_uploads(small.data_dir) == []
        assert grown < len(model), grown / MIB
        assert c.upload_model(big_model(1_000_000), name="fits").size_bytes > 4_000_000


# ---------------------------------------------------------------------------------------
# Uploads are held once
# ---------------------------------------------------------------------------------------


def test_compute_indices_holds_its_payload_once(tmp_path: Path) -> None:
    """A 192 MB payload of float64 features: the server's peak grows by the payload held
    once, the engine's float32 copy (half of it), its 8 MiB budget and the chunks in
    flight (measured: 1.6x the payload); below 2x the payload plus the budget.
    Reassembling the chunks by appending to a growing buffer and copying each tensor out
    of it holds three copies."""
    m, d = 2000, 12000
    payload = 8 * m * d
    rng = np.random.default_rng(3)
    arrays = {"features": rng.standard_normal((m, d)), "labels": rng.integers(0, 5, m)}
    options = analysis_pb2.IndexOptions(indices=["si"], orders=[1], memory_budget_mb=8)
    with F.ServerProcess(tmp_path / "data") as s:
        channel = s.channel()
        try:
            stubs = F.stubs(channel)
            small = {"features": arrays["features"][:200], "labels": arrays["labels"][:200]}
            stubs.analysis.ComputeIndices(indices_requests(small, options), timeout=60)
            base = peak_baseline(s.pid)
            res = stubs.analysis.ComputeIndices(indices_requests(arrays, options), timeout=120)
            grown = (vm_kib(s.pid, "VmHWM") - base) * 1024
        finally:
            channel.close()
        assert s.stop() == 0
    assert res.train.n_samples == m and 0.0 <= res.train.si <= 1.0
    assert grown < 2 * payload + 8 * MIB, (grown / MIB, payload / MIB)


def _chunked(data: bytes, size: int, offsets: Any = None) -> list[Any]:
    return [analysis_pb2.ComputeIndicesRequest(chunk=common_pb2.Chunk(
        offset=o if offsets is None else offsets(o), data=data[o:o + size]))
        for o in range(0, len(data), size)]


@pytest.mark.parametrize("chunk", [1, 5, 13, 4096])
def test_chunks_are_written_in_place_whatever_their_boundaries(chunk: int) -> None:
    """Chunks that split tensors anywhere, an empty tensor, dtypes of 4 and 8 bytes: every
    tensor comes back equal to what was sent, aligned for its dtype and read-only."""
    rng = np.random.default_rng(6)
    sent = {"features": rng.standard_normal((7, 3)).astype(np.float32),
            "labels": rng.integers(0, 3, 7), "test_features": np.zeros((0, 3)),
            "targets": rng.standard_normal(7)}
    specs = [{"name": k, "dtype": str(a.dtype), "shape": list(a.shape)} for k, a in sent.items()]
    data = b"".join(a.tobytes() for a in sent.values())
    got = streams.tensors(specs, iter(_chunked(data, chunk)), 1 << 20, Cancellation())
    for name, a in sent.items():
        np.testing.assert_array_equal(got[name], a)
        assert got[name].shape == a.shape and got[name].dtype == a.dtype
        assert got[name].flags.aligned and not got[name].flags.writeable


def test_chunks_out_of_order_or_of_the_wrong_length_are_refused() -> None:
    specs = [{"name": "features", "dtype": "float32", "shape": [4, 2]}]
    data = np.arange(8, dtype=np.float32).tobytes()
    for requests, message in [
        (_chunked(data, 8, lambda o: o + 1), "in order"),
        (_chunked(data + b"\0" * 4, 8), "more than the 32 bytes"),
        (_chunked(data[:24], 8), "received 24 bytes"),
    ]:
        with pytest.raises(ValueError, match=message):
            streams.tensors(specs, iter(requests), 1 << 20, Cancellation())


# ---------------------------------------------------------------------------------------
# Options of the memory budget
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -1.0, 0.0])
def test_memory_budget_options_must_be_finite_and_positive(small: F.ServerProcess,
                                                           value: float) -> None:
    """Sent by a raw client (the Python client refuses them itself): INVALID_ARGUMENT
    naming memory_budget_mb, for ComputeIndices and for a layer analysis, which makes no
    job."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    options = analysis_pb2.IndexOptions(memory_budget_mb=value)
    with small.client() as c:
        model = c.upload_model(F.tiny_regressor(), name="tiny")
        ds = c.upload_dataset({"x": x}, labels=y, name="small")
        before = len(c.jobs())
    channel = small.channel()
    try:
        stubs = F.stubs(channel)
        code, details = F.code_of(lambda: stubs.analysis.ComputeIndices(
            indices_requests({"features": x, "labels": y}, options), timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert "memory_budget_mb" in details, details
        code, details = F.code_of(lambda: stubs.analysis.StartLayerAnalysis(
            analysis_pb2.StartLayerAnalysisRequest(model_id=model.id, dataset_id=ds.id,
                                                   options=options), timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert "memory_budget_mb" in details, details
    finally:
        channel.close()
    with small.client() as c:
        assert len(c.jobs()) == before


def test_the_server_refuses_a_budget_that_is_not_a_positive_number(tmp_path: Path) -> None:
    for value in ("0", "-5", "nan", "inf"):
        proc = F.server_process.ServerProcess(tmp_path / f"data{value}",
                                              "--max-request-memory-mb", value)
        with pytest.raises(RuntimeError, match="did not start"):
            proc.wait_ready(30)
        assert proc.proc.wait(30) == 2
        tail = proc.log_tail()
        assert "--max-request-memory-mb" in tail and "finite number" in tail and value in tail


# ---------------------------------------------------------------------------------------
# Requests running together share the budget
# ---------------------------------------------------------------------------------------


def test_requests_running_together_share_the_budget(tmp_path: Path) -> None:
    """An upload in progress holds its estimate: a unary call that does not fit beside it
    is refused (retry later), a job waits for it (its progress says so) and can be
    cancelled while it waits; once the upload ends, the next job runs."""
    rng = np.random.default_rng(5)
    m = 3000
    x = rng.standard_normal((m, 6)).astype(np.float32)
    y = rng.integers(0, 3, m)
    model = F.tiny_regressor()
    proto = load_model(model)
    info = describe(proto)
    job_need = memory.layer_analysis_estimate(
        info, select_layers(info, "auto"), split({"x": x, "labels": y}), None, reduce="auto",
        batch_size=None, probe=False, opts=IndexOptions(), model_bytes=len(model)).total
    rows, hold_need = 10000, 0
    while hold_need < job_need:  # an upload at least as large as the job
        rows *= 2
        held = {"features": np.zeros((rows, 200), np.float32),
                "labels": np.zeros(rows, np.int64)}
        specs = [{"name": k, "dtype": str(a.dtype), "shape": list(a.shape)}
                 for k, a in held.items()]
        hold_need = memory.compute_indices_estimate(specs, IndexOptions()).total
    # each fits alone; two uploads, or the upload and the job, do not
    budget_mb = (hold_need + job_need // 2) / MIB
    release = threading.Event()
    with F.ServerProcess(tmp_path / "data", "--max-request-memory-mb", f"{budget_mb:.3f}") as s:
        c = s.client()
        stored = c.upload_model(model, name="tiny")
        ds = c.upload_dataset({"x": x}, labels=y, name="data")
        channel = s.channel()
        stubs = F.stubs(channel)
        header_only = [next(indices_requests(held, analysis_pb2.IndexOptions()))]
        def hold() -> Any:
            return stubs.analysis.ComputeIndices.future(
                F.held_open(header_only, release, hold=60), timeout=90)

        holders = [hold()]
        try:
            def busy() -> bool:
                if holders[-1].done():  # a probe held the memory when it came: again
                    holders.append(hold())
                    return False
                code, details = F.code_of(lambda: stubs.analysis.ComputeIndices(
                    iter(header_only), timeout=30))  # admitted: INVALID_ARGUMENT (no bytes)
                return code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry" in details

            F.wait_until(busy, 30, "the upload to hold its memory")

            def waiting(job_id: str) -> Any:
                return lambda: c.job(job_id).progress.get("stage") == "waiting for memory"

            first = c.start_layer_analysis(stored, ds)
            F.wait_until(waiting(first.id), 30, "the first job to wait for memory")
            assert c.cancel(first).state in ("cancelled", "running")
            F.wait_until(lambda: c.job(first.id).state == "cancelled", 30, "the cancel")
            second = c.start_layer_analysis(stored, ds)
            F.wait_until(waiting(second.id), 30, "the second job to wait for memory")
            release.set()
            code = holders[-1].exception(60).code()  # the upload ends without its bytes
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert c.wait(second).layers
        finally:
            release.set()
            channel.close()
            c.close()
        assert s.stop() == 0
