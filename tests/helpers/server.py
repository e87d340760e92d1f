"""Helpers of the end-to-end tests: a real ``layerscope serve`` process on loopback, small
real ONNX models, raw gRPC stubs, and NumPy references computed without layerscope.

Nothing here replaces a layerscope component: the server is the real entry point
(``python -m layerscope.server.api``) started as a subprocess on a free port with its own
data directory, and the models are built with scikit-learn + skl2onnx or ``onnx.helper``.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from layerscope.client import server_process
from layerscope.client.client import Client, LayerscopeError
from layerscope.protos.stubs import (
    analysis_pb2_grpc,
    common_pb2,
    datasets_pb2,
    datasets_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
)

STARTUP_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------
# The server process
# ---------------------------------------------------------------------------------------


class ServerProcess(server_process.ServerProcess):
    """The client's :class:`~layerscope.client.server_process.ServerProcess` with what the
    end-to-end tests need on top: it is ready (or the test fails) when constructed, its log
    sits beside ``data_dir`` (which tests may wipe), it makes clients and raw channels, and
    :meth:`stop` insists on a graceful exit (a server that ignores SIGTERM fails the test).
    """

    address: str

    def __init__(self, data_dir: Path, *args: str, log: Path | None = None,
                 startup_timeout: float = STARTUP_TIMEOUT) -> None:
        data_dir = Path(data_dir)
        super().__init__(data_dir, *args,
                         log_path=log or data_dir.parent / f"{data_dir.name}-server.log")
        self.log = self.log_path
        address = self.wait_ready(startup_timeout)
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0, address

    def client(self, token: str | None = None, timeout: float | None = 60.0) -> Client:
        return Client(self.address, token=token, timeout=timeout)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (graceful shutdown); the exit code. AssertionError (after a SIGKILL)
        when the server is still running ``timeout`` seconds later."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the server did not exit within {timeout}s of SIGTERM:\n{self.log_tail()}"
            ) from None
        self._close()
        return rc

    def log_tail(self, lines: int = 40) -> str:
        return super().log_tail(lines)

    def __exit__(self, *exc: object) -> None:
        if self.alive():
            with contextlib.suppress(AssertionError):
                self.stop(timeout=20)


def embedded_server_fixture(folder_name: str) -> Any:
    """A module-scoped, autouse fixture: one embedded server (``Client.local``) in a fresh
    data directory that ``LAYERSCOPE_DATA_DIR`` names, so every CLI command of the module
    reuses it, as a person's commands would. Use as ``embedded_server =
    embedded_server_fixture("cli-data")`` at module level."""

    @pytest.fixture(scope="module", autouse=True)
    def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
        data_dir = tmp_path_factory.mktemp(folder_name)
        mp = pytest.MonkeyPatch()
        mp.setenv("LAYERSCOPE_DATA_DIR", str(data_dir))
        mp.delenv("LAYERSCOPE_SERVER", raising=False)
        client = Client.local(data_dir)
        yield client
        client.close()
        mp.undo()

    return embedded_server


def tmp_uploads(data_dir: Path) -> list[Path]:
    """Files under the data dir's blobs/tmp (half-received uploads)."""
    tmp = Path(data_dir) / "blobs" / "tmp"
    return sorted(tmp.iterdir()) if tmp.exists() else []


def blob_path(data_dir: Path, digest: str) -> Path:
    return Path(data_dir) / "blobs" / "sha256" / digest[:2] / digest


def wait_until(cond: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def rss_anon_kib(pid: int) -> int:
    """Anonymous resident memory of a process (heap; file-backed pages left out), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples a process's RssAnon in a thread; ``peak`` is the largest value seen (KiB)."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every = pid, every
        self.start = rss_anon_kib(pid)
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, ValueError):
                self.peak = max(self.peak, rss_anon_kib(self.pid))
            time.sleep(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError, ValueError):
            self.peak = max(self.peak, rss_anon_kib(self.pid))


# ---------------------------------------------------------------------------------------
# Raw stubs and messages
# ---------------------------------------------------------------------------------------


@dataclass
class Stubs:
    models: models_pb2_grpc.ModelsStub
    datasets: datasets_pb2_grpc.DatasetsStub
    analysis: analysis_pb2_grpc.AnalysisStub


def stubs(channel: grpc.Channel) -> Stubs:
    return Stubs(models_pb2_grpc.ModelsStub(channel), datasets_pb2_grpc.DatasetsStub(channel),
                 analysis_pb2_grpc.AnalysisStub(channel))


def code_of(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """Run a raw gRPC call that must fail; return its status code and details."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    raise AssertionError("the call succeeded; an error status was expected")


def client_error(call: Callable[[], Any]) -> LayerscopeError:
    """Run a client call that must fail with a server status; return the error."""
    try:
        call()
    except LayerscopeError as exc:
        return exc
    raise AssertionError("the call succeeded; a LayerscopeError was expected")


def dataset_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    return b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
                    for a in arrays.values())


def dataset_requests(
    specs: list[tuple[str, str, list[int]]], data: bytes, *, sha256: str | None = None,
    size: int | None = None, name: str = "raw", chunk: int = 1 << 20,
) -> Iterator[datasets_pb2.UploadDatasetRequest]:
    """UploadDataset messages for explicit specs (name, dtype, shape) and bytes."""
    header = datasets_pb2.UploadDatasetHeader(
        name=name, size_bytes=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256,
        tensors=[common_pb2.TensorSpec(name=n, dtype=d, shape=s) for n, d, s in specs])
    yield datasets_pb2.UploadDatasetRequest(header=header)
    for off in range(0, len(data), chunk):
        yield datasets_pb2.UploadDatasetRequest(
            chunk=common_pb2.Chunk(offset=off, data=data[off:off + chunk]))


def model_requests(data: bytes, *, sha256: str | None = None, size: int | None = None,
                   name: str = "raw", chunk: int = 1 << 20
                   ) -> Iterator[models_pb2.UploadModelRequest]:
    yield models_pb2.UploadModelRequest(header=models_pb2.UploadModelHeader(
        name=name, size_bytes=len(data) if size is None else size,
        sha256=hashlib.sha256(data).hexdigest() if sha256 is None else sha256))
    for off in range(0, len(data), chunk):
        yield models_pb2.UploadModelRequest(
            chunk=common_pb2.Chunk(offset=off, data=data[off:off + chunk]))


def held_open(messages: list[Any], release: threading.Event, sent: threading.Event | None = None,
              hold: float = 30.0) -> Iterator[Any]:
    """Yield ``messages``, then keep the stream open until ``release`` (or ``hold`` s)."""
    yield from messages
    if sent is not None:
        sent.set()
    release.wait(hold)


# ---------------------------------------------------------------------------------------
# Models and data
# ---------------------------------------------------------------------------------------


@dataclass
class Classifier:
    onnx_bytes: bytes
    input_name: str
    x: np.ndarray
    y: np.ndarray
    xt: np.ndarray
    yt: np.ndarray


def digits_mlp(n_train: int = 1000, seed: int = 0) -> Classifier:
    """scikit-learn MLPClassifier on the digits, exported with skl2onnx (opset 17)."""
    import warnings

    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(x))
    x = (x[perm] / 16.0).astype(np.float32)
    y = y[perm].astype(np.int64)
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=150, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x[:n_train], y[:n_train])
    onx = to_onnx(clf, x[:1], options={id(clf): {"zipmap": False}}, target_opset=17)
    return Classifier(onx.SerializeToString(), onx.graph.input[0].name,
                      x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def tiny_regressor(d: int = 6, h: int = 12, seed: int = 0) -> bytes:
    """x (N, d) -> Gemm -> Tanh -> Gemm -> y (N, 1), built with onnx.helper."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((d, h)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.standard_normal(h).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((h, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(1, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], name="fc1"),
        helper.make_node("Tanh", ["hidden"], ["act"], name="tanh"),
        helper.make_node("Gemm", ["act", "w2", "b2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(nodes, "regressor",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m.SerializeToString()


@dataclass
class SlowJob:
    """A model and dataset whose extraction with ``batch_size=1`` takes tens of seconds:
    every sample runs eight 128-channel 3x3 convolutions (about 75 M multiply-adds)."""

    onnx_bytes: bytes
    x: np.ndarray
    y: np.ndarray
    layers: tuple[str, ...] = ("pooled",)


def slow_job(n: int = 20000, d: int = 64, channels: int = 128, side: int = 8, depth: int = 8,
             seed: int = 0) -> SlowJob:
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        numpy_helper.from_array(
            (rng.standard_normal((d, c * side * side)) / np.sqrt(d)).astype(np.float32), "w0"),
        numpy_helper.from_array(np.array([-1, c, side, side], np.int64), "img_shape"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w0"], ["mm0"], name="mm0"),
        helper.make_node("Relu", ["mm0"], ["h0"], name="relu0"),
        helper.make_node("Reshape", ["h0", "img_shape"], ["img"], name="reshape"),
    ]
    prev = "img"
    for i in range(depth):
        w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"k{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"k{i}"], [f"conv{i}"], name=f"conv{i}",
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"act{i}"], name=f"act{i}"))
        prev = f"act{i}"
    inits.append(numpy_helper.from_array(
        (rng.standard_normal((c, 4)) / np.sqrt(c)).astype(np.float32), "wo"))
    nodes += [
        helper.make_node("GlobalAveragePool", [prev], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["pooled"], name="flatten"),
        helper.make_node("MatMul", ["pooled", "wo"], ["logits"], name="head"),
    ]
    g = helper.make_graph(nodes, "slow",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    x = rng.standard_normal((n, d)).astype(np.float32)
    y = (np.arange(n) % 4).astype(np.int64)
    return SlowJob(m.SerializeToString(), x, y)


def start_slow(client: Client, job: SlowJob) -> tuple[Any, Any, Any]:
    """Upload the slow model and data, start the analysis with batch_size=1; return
    (model, dataset, job)."""
    model = client.upload_model(job.onnx_bytes, name="slow")
    ds = client.upload_dataset({"x": job.x}, labels=job.y, name="slow-data")
    started = client.start_layer_analysis(model, ds, layers=list(job.layers), batch_size=1,
                                          indices=["si"], orders=[1])
    return model, ds, started


def wait_extracting(client: Client, job_id: str, timeout: float = 60.0) -> Any:
    """Wait until the job runs its extraction with at least one batch done."""
    def check() -> Any:
        j = client.job(job_id)
        assert j.state in ("queued", "running"), (j.state, j.message)
        stage = str(j.progress.get("stage", ""))
        return j if stage.startswith("extract") and int(j.progress.get("done", 0)) > 0 else None

    return wait_until(check, timeout, f"job {job_id} to be extracting", poll=0.05)


# ---------------------------------------------------------------------------------------
# References without layerscope
# ---------------------------------------------------------------------------------------


def neighbours(x: np.ndarray, ref: np.ndarray | None = None, k: int = 1,
               block: int = 128) -> np.ndarray:
    """Indices of the k nearest neighbours (float64 squared distances, ties: lower index);
    with ``ref`` None, among the other points of ``x``."""
    q = np.asarray(x, np.float64).reshape(len(x), -1)
    r = q if ref is None else np.asarray(ref, np.float64).reshape(len(ref), -1)
    out = np.empty((len(q), k), np.int64)
    for s in range(0, len(q), block):
        d2 = ((q[s:s + block, None, :] - r[None, :, :]) ** 2).sum(axis=2)
        if ref is None:
            rows = np.arange(s, min(s + block, len(q)))
            d2[rows - s, rows] = np.inf
        out[s:s + block] = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return out


def brute_si(x: np.ndarray, y: np.ndarray, xt: np.ndarray | None = None,
             yt: np.ndarray | None = None) -> float:
    """si (or, with a test set, cross si) by brute force."""
    if xt is None:
        nn = neighbours(x)[:, 0]
        return float(np.mean(y[nn] == y))
    nn = neighbours(xt, x)[:, 0]
    return float(np.mean(y[nn] == yt))


def brute_smi_linear(x: np.ndarray, t: np.ndarray) -> float:
    """smi_linear by brute force (METRICS.md section 2)."""
    t2 = np.asarray(t, np.float64).reshape(len(t), -1)
    e = np.sqrt(((t2[:, None, :] - t2[None, :, :]) ** 2).sum(axis=2))
    nn = neighbours(x)[:, 0]
    m = len(t2)
    off = e + np.diag(np.full(m, np.inf))
    dmax, dmin = e.max(axis=1), off.min(axis=1)
    dstar = e[np.arange(m), nn]
    return float(np.mean((dmax - dstar) / (dmax - dmin)))


def assert_same(got: Any, want: Any, path: str = "", rel: float = 1e-12) -> None:
    """Recursive equality of JSON-like values; floats to ``rel``; keys compared as text."""
    if isinstance(want, dict):
        assert isinstance(got, dict), f"{path}: {got!r} is not a dict"
        g = {str(k): v for k, v in got.items()}
        w = {str(k): v for k, v in want.items()}
        assert set(g) == set(w), f"{path}: keys {sorted(g)} != {sorted(w)}"
        for k in w:
            assert_same(g[k], w[k], f"{path}.{k}", rel)
    elif isinstance(want, (list, tuple, np.ndarray)):
        g, w = np.asarray(got), np.asarray(want)
        assert g.shape == w.shape, f"{path}: shape {g.shape} != {w.shape}"
        if w.dtype.kind in "fc" or g.dtype.kind in "fc":
            np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rel,
                                       atol=0, err_msg=path)
        elif w.dtype.kind == "O" or g.dtype.kind == "O":
            for i, (a, b) in enumerate(zip(list(got), list(want), strict=True)):
                assert_same(a, b, f"{path}[{i}]", rel)
        else:
            np.testing.assert_array_equal(g, w, err_msg=path)
    elif isinstance(want, float) and not isinstance(got, str):
        assert got is not None, f"{path}: missing, want {want}"
        assert abs(float(got) - want) <= rel * max(abs(want), 1e-300), f"{path}: {got} != {want}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"
