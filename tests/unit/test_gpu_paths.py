"""The GPU code paths, run on the CPU against a strict stand-in for CuPy (helpers.fakecupy),
and the device choice read from what each library really has.

The stand-in refuses what CuPy refuses (NumPy arrays mixed with its own, NumPy-only
arguments), so the engine and the extraction runner meeting it here meet CuPy the same way.
Expected values come from a NumPy brute force written in the test, or from the same call on
the CPU backend, which tests/unit/test_knn.py pins against its own reference.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import fakecupy
from onnx import TensorProto, helper

from layerscope.server.graph import describe, select_layers
from layerscope.server.metrics import backend as B
from layerscope.server.metrics import compute_indices, knn
from layerscope.server.runtime import extract
from layerscope.server.runtime.extract import ort_value_to_xp
from layerscope.server.runtime.session import CPU, CUDA, make_session, session_device

# Where onnxruntime-gpu has its CUDA provider, a session asked for CUDA gets it: the cases
# of a CPU-only onnxruntime (or one whose CUDA provider does not load) cannot be made there.
cpu_onnxruntime = pytest.mark.skipif(
    CUDA in ort.get_available_providers(),
    reason="onnxruntime here has a CUDA provider: the CPU-only cases cannot be made",
)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    """The stand-in registered as the GPU module; the device choice forgotten after."""
    monkeypatch.delenv(B.DEVICE_ENV, raising=False)
    B.register_gpu_module(fakecupy)
    yield fakecupy
    B.register_gpu_module(None)


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch):
    """This machine as it is (no CUDA device), the cached choice forgotten before and after."""
    monkeypatch.delenv(B.DEVICE_ENV, raising=False)
    B.register_gpu_module(None)
    if B.cuda_device_count() > 0:
        pytest.skip("a CUDA device is present: these tests are about a machine without one")
    yield
    B.register_gpu_module(None)


def brute_knn(x: np.ndarray, k: int, queries: np.ndarray | None = None) -> np.ndarray:
    b = x.astype(np.float64)
    q = b if queries is None else queries.astype(np.float64)
    dist = ((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    if queries is None:
        np.fill_diagonal(dist, np.inf)
    cols = np.broadcast_to(np.arange(len(b)), dist.shape)
    return np.lexsort((cols, dist), axis=1)[:, :k]


def tiny_model() -> onnx.ModelProto:
    """x (n, 4) -> h = relu(x W) (n, 3) -> y = h V (n, 2): two layers to extract."""
    rng = np.random.default_rng(0)
    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 3], rng.normal(size=12).tolist())
    v = helper.make_tensor("V", TensorProto.FLOAT, [3, 2], rng.normal(size=6).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("Relu", ["a"], ["h"]),
         helper.make_node("MatMul", ["h", "V"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])], [w, v],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# --- the stand-in itself ------------------------------------------------------------------


def test_the_stand_in_refuses_numpy_arrays_mixed_with_its_own(fake) -> None:
    a = fake.asarray(np.arange(4.0))  # a host array in: allowed, as cupy.asarray is
    with pytest.raises(TypeError):
        a + np.ones(4)
    with pytest.raises(TypeError):
        fake.concatenate([a, np.ones(2)])
    with pytest.raises(TypeError):
        a[np.array([0, 1])] = 1.0
    with pytest.raises(TypeError):
        np.asarray(a)  # implicit conversion, refused by CuPy
    with pytest.raises(TypeError, match="kind"):
        fake.argsort(a, kind="stable")
    np.testing.assert_array_equal(fake.asnumpy(a * 2.0), [0.0, 2.0, 4.0, 6.0])


# --- the engine on the GPU module ---------------------------------------------------------


@pytest.mark.parametrize("search", ["selfjoin", "blas"])
def test_knn_on_the_gpu_module_matches_the_brute_force(fake, search: str) -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(size=(150, 5)), np.repeat(rng.normal(size=(2, 5)), 12, 0),
                        rng.integers(0, 2, size=(40, 5)).astype(np.float64)])
    nb = knn(fake.asarray(x), 6, xp=fake, candidate_search=search, block_rows=37)
    assert isinstance(nb.indices, fake.ndarray)
    np.testing.assert_array_equal(nb.indices.get(), brute_knn(x, 6))


def test_query_knn_on_the_gpu_module_matches_the_brute_force(fake) -> None:
    rng = np.random.default_rng(5)
    x, q = rng.integers(0, 3, size=(200, 4)).astype(np.float64), rng.normal(size=(30, 4))
    nb = knn(fake.asarray(x), 7, queries=fake.asarray(q), xp=fake)
    np.testing.assert_array_equal(nb.indices.get(), brute_knn(x, 7, q))


def test_compute_indices_on_the_gpu_module_equals_the_cpu(fake) -> None:
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, size=240)
    x = rng.normal(size=(240, 8)) + labels[:, None] * 0.7
    names = ["si", "high_order_si", "soft_order_si", "anti_si", "center_si"]
    gpu = compute_indices(x, labels, indices=names, orders=[1, 3], device="auto")
    cpu = compute_indices(x, labels, indices=names, orders=[1, 3], device="cpu")
    assert gpu.options["device"] == "gpu" and cpu.options["device"] == "cpu"
    for name in names:
        assert gpu[name] == cpu[name], name


# --- extraction: the device from the providers the session really has -------------------


def _extract(model: onnx.ModelProto, x: np.ndarray, device: str | None):
    info = describe(model)
    return extract(model, info, select_layers(info, ["h", "y"]), [{"x": x}],
                   reduce="flatten", device=device)


@cpu_onnxruntime
def test_auto_with_cpu_only_onnxruntime_runs_the_model_on_the_cpu_into_gpu_arrays(
    fake,
) -> None:
    """CuPy usable, onnxruntime without CUDA: the model runs on the CPU and its outputs
    reach the GPU accumulators as GPU arrays (before: the session was refused for asking
    'gpu' of plain onnxruntime, or NumPy arrays went into CuPy code)."""
    model, x = tiny_model(), np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    got = _extract(model, x, "auto")
    w = onnx.numpy_helper.to_array(model.graph.initializer[0])
    v = onnx.numpy_helper.to_array(model.graph.initializer[1])
    h = np.maximum(x @ w, 0)
    for d, want in zip(got, (h, h @ v), strict=True):
        assert isinstance(d.train, fake.ndarray)
        assert (d.device, d.providers) == ("cpu", (CPU,))
        np.testing.assert_allclose(d.train.get(), want, rtol=1e-5, atol=1e-6)


@cpu_onnxruntime
def test_gpu_without_onnxruntime_cuda_is_refused_naming_the_provider(fake) -> None:
    model, x = tiny_model(), np.zeros((4, 4), np.float32)
    with pytest.raises(B.DeviceUnavailable, match="onnxruntime .* has no CUDA provider"):
        _extract(model, x, "gpu")


@cpu_onnxruntime
def test_a_session_whose_cuda_provider_fell_back_is_seen_as_cpu() -> None:
    """onnxruntime asked for CUDA it cannot load runs on the CPU quietly: 'auto' goes on
    on the CPU, 'gpu' refuses, naming the providers the session really has."""
    model = tiny_model().SerializeToString()
    with pytest.warns(UserWarning):  # onnxruntime's own note about the missing provider
        session = make_session(model, device="auto", ask=[CUDA, CPU])
    assert session.get_providers() == [CPU]
    assert session_device(session, [CUDA, CPU], "auto") == "cpu"
    with pytest.raises(B.DeviceUnavailable, match="did not load its CUDA provider"):
        session_device(session, [CUDA, CPU], "gpu")


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.float16, np.float64,
                                   np.int64, np.bool_, np.float32])
def test_an_output_buffer_is_read_with_its_own_element_size(fake, dtype: type) -> None:
    """Before: every type but float32/16/64 was read as float32 (4 bytes an element),
    past the end of an int8 buffer and with wrong values."""
    host = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    value = ort.OrtValue.ortvalue_from_numpy(host)
    got = ort_value_to_xp(fake, value)
    assert isinstance(got, fake.ndarray) and got.dtype == host.dtype
    np.testing.assert_array_equal(got.get(), host)


# --- the device choice --------------------------------------------------------------------


def test_gpu_without_a_device_says_what_is_missing(no_gpu) -> None:
    with pytest.raises(B.DeviceUnavailable, match="no device"):
        B.resolve_backend("gpu")


def test_auto_logs_its_choice_once(no_gpu, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="layerscope.device"):
        for _ in range(3):
            assert B.resolve_backend("auto").device == "cpu"
    chose = [r.getMessage() for r in caplog.records if "chose" in r.getMessage()]
    assert len(chose) == 1 and "no device" in chose[0]


@pytest.mark.parametrize("env,value,refused", [
    ("CUPY_TF32", "1", True), ("NVIDIA_TF32_OVERRIDE", "1", True),
    ("NVIDIA_TF32_OVERRIDE", "0", False), ("CUPY_TF32", "0", False),
])
def test_tf32_settings_that_break_the_float32_bound_are_named(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, refused: bool
) -> None:
    for name in B.TF32_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(env, value)
    assert B.tf32_setting() == (f"{env}={value}" if refused else None)


def test_device_unavailable_is_a_failed_precondition() -> None:
    import grpc

    from layerscope.server.api.servicers import status_for

    code, message = status_for(B.DeviceUnavailable("device 'gpu' was requested but x"))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "x" in message


@pytest.mark.parametrize("k", [2, 17, 300])
def test_the_gpu_top_k_keeps_the_k_smallest_ties_by_lower_column(fake, k: int) -> None:
    """The top-k used on a GPU instead of argpartition (a full sort there): a sampled
    threshold, then a sort of the entries under it; many ties at the k-th value."""
    from layerscope.server.metrics.knn import smallest_per_row

    rng = np.random.default_rng(k)
    dist = rng.integers(0, 50, size=(6, 5000)).astype(np.float64)
    dist[0, :] = 3.0  # a row of one value: the lowest k columns
    vals, cols = smallest_per_row(fake, fake.asarray(dist), k)
    want = np.lexsort((np.broadcast_to(np.arange(5000), dist.shape), dist), axis=1)[:, :k]
    np.testing.assert_array_equal(cols.get(), want)
    np.testing.assert_array_equal(vals.get(), np.take_along_axis(dist, want, axis=1))


def test_a_layer_analysis_records_the_device_and_the_providers_that_ran(tmp_path) -> None:
    from layerscope.server.analysis import analyze_layers

    model = tiny_model()
    path = tmp_path / "tiny.onnx"
    onnx.save(model, path)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 4)).astype(np.float32), rng.integers(0, 2, size=40)
    res = analyze_layers(path, {"x": x}, labels=y, layers=["h"], device="cpu",
                         include_inputs=False, include_outputs=False)
    assert res.options["device"] == "cpu"
    assert res.options["model_device"] == "cpu"
    assert res.options["providers"] == ["CPUExecutionProvider"]


def test_the_gpu_scans_equal_numpy_accumulate(fake) -> None:
    """The bounds' prefix maximum and suffix minimum on a GPU module: a log-step scan
    (not one kernel per column), equal to NumPy's accumulate."""
    from layerscope.server.metrics.knn import _cummax_cols, _cummin_cols_reversed

    a = np.random.default_rng(9).normal(size=(7, 37))
    np.testing.assert_array_equal(_cummax_cols(fake, fake.asarray(a)).get(),
                                  np.maximum.accumulate(a, axis=1))
    np.testing.assert_array_equal(_cummin_cols_reversed(fake, fake.asarray(a)).get(),
                                  np.minimum.accumulate(a[:, ::-1], axis=1)[:, ::-1])
