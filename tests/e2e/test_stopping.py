"""Stopping work under way: a job stuck inside one model run ends when it is cancelled, when
it runs past the server's time limit per job, and when the server gets SIGTERM; a call
whose client's deadline passed, or whose client went away, stops computing.

The model is built here: its ``Loop`` runs as many times as the largest value of its input
``t``, so ``t = 1`` runs at once and ``t = 1e12`` keeps onnxruntime busy for days inside a
single ``session.run``. That work is real: a test proves the server is inside the run
by its CPU time growing (``/proc``), never by sleeping. Every server is a real process on
127.0.0.1 with its own data directory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from helpers import server as F
from onnx import TensorProto, helper, numpy_helper

from layerscope.client.client import Client
from layerscope.protos.stubs import analysis_pb2, common_pb2
from layerscope.server.cancellation import Cancellation, Stopped
from layerscope.server.graph import describe
from layerscope.server.metrics import compute_indices, knn
from layerscope.server.runtime.extract import extract
from layerscope.server.store.catalog import Catalog
from layerscope.server.store.jobs import JobManager

pytestmark = pytest.mark.timeout(180)

STUCK = 1e12  # Loop trips: days of work
SPIN_CPU_S = 1.0  # CPU seconds that show a process (or thread) is inside the model run


# ---------------------------------------------------------------------------------------
# The model, the data and what the tests watch
# ---------------------------------------------------------------------------------------


def loop_model() -> bytes:
    """x (N, 4), t (N, 1) -> Loop max(t) times: acc += 1 -> h = acc @ w -> y = Relu(h)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["c1"], value=one),
         helper.make_node("Add", ["acc_in", "c1"], ["acc_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["N", 4])])
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 10
    g = helper.make_graph(
        [helper.make_node("ReduceMax", ["t"], ["t_max"], keepdims=0, name="tmax"),
         helper.make_node("Cast", ["t_max"], ["trips"], to=TensorProto.INT64, name="trips"),
         helper.make_node("Loop", ["trips", "cond", "x"], ["looped"], body=body, name="loop"),
         helper.make_node("MatMul", ["looped", "w"], ["h"], name="fc"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("t", TensorProto.FLOAT, ["N", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


@pytest.fixture(scope="module")
def model() -> bytes:
    return loop_model()


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {"x": rng.standard_normal((40, 4)).astype(np.float32),
            "y": (np.arange(40) % 2).astype(np.int64)}


def inputs(data: dict[str, np.ndarray], trips: float) -> dict[str, np.ndarray]:
    return {"x": data["x"], "t": np.full((len(data["x"]), 1), trips, np.float32)}


def cpu_seconds(stat: Path) -> float:
    """utime + stime of a process or thread from its /proc stat file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_spinning(stat: Path, what: str, timeout: float = 60.0) -> None:
    """Wait until the process or thread has used SPIN_CPU_S more CPU seconds: nothing but
    the stuck model run takes that long."""
    start = cpu_seconds(stat)
    F.wait_until(lambda: cpu_seconds(stat) - start >= SPIN_CPU_S, timeout, what, poll=0.05)


def server_stat(server: F.ServerProcess) -> Path:
    return Path(f"/proc/{server.pid}/stat")


def start_analysis(c: Client, model: bytes, data: dict[str, np.ndarray], trips: float) -> Any:
    m = c.upload_model(model, name="loop")
    ds = c.upload_dataset(inputs(data, trips), labels=data["y"], name=f"t={trips:g}")
    return c.start_layer_analysis(m, ds, layers=["h"], indices=["si"], orders=[1])


def start_stuck_job(server: F.ServerProcess, c: Client, model: bytes,
                    data: dict[str, np.ndarray]) -> Any:
    """Start a layer analysis that gets stuck in its first model run; return it once the
    server is inside that run."""
    job = start_analysis(c, model, data, STUCK)
    F.wait_until(lambda: c.job(job.id).state == "running", 30, "the stuck job to start")
    wait_spinning(server_stat(server), "the server to run the stuck model")
    assert c.job(job.id).state == "running"
    return job


def wait_final(c: Client, job: Any, timeout: float, what: str) -> Any:
    return F.wait_until(lambda: (j := c.job(job.id)).done and j, timeout, what)


def assert_normal_result(final: Any, data: dict[str, np.ndarray]) -> None:
    """A finished job on t = 1: its input row's si is the brute-force si of x."""
    assert final.state == "succeeded", (final.state, final.message)
    rows = {r["name"]: r for r in final.result.to_dict()["layers"]}
    assert rows["x"]["si"] == pytest.approx(F.brute_si(data["x"], data["y"]), abs=1e-12)


def wait_log(server: F.ServerProcess, text: str, timeout: float) -> str:
    """The first line of the server's log holding ``text``, once it is there."""
    def find() -> str | None:
        return next((ln for ln in server.log.read_text(errors="replace").splitlines()
                     if text in ln), None)

    return str(F.wait_until(find, timeout, f"the server to log {text!r}", poll=0.1))


def assert_idle(server: F.ServerProcess, window: float = 2.0, most: float = 0.5) -> None:
    """The server uses (much) less than ``most`` CPU seconds over ``window`` seconds: it
    computes nothing (a computing server uses about one CPU second per second)."""
    stat = server_stat(server)
    before = cpu_seconds(stat)
    time.sleep(window)  # a measurement window, not a synchronisation
    used = cpu_seconds(stat) - before
    assert used < most, f"the server used {used:.2f} CPU s in {window} s: still computing"


# ---------------------------------------------------------------------------------------
# In process: the cancellation reaches the model run, the k-NN blocks, the selection steps
# ---------------------------------------------------------------------------------------


def test_cancel_terminates_a_model_run_under_way(model: bytes,
                                                 data: dict[str, np.ndarray]) -> None:
    proto = onnx.load_from_string(model)
    info = describe(proto)
    cancel = Cancellation()
    seen: dict[str, Any] = {}

    def run() -> None:
        seen["tid"] = threading.get_native_id()
        try:
            extract(proto, info, [info.layer("h")], [inputs(data, STUCK)], cancel=cancel)
        except Stopped as exc:
            seen["stopped"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    F.wait_until(lambda: "tid" in seen, 10, "the worker thread")
    wait_spinning(Path(f"/proc/self/task/{seen['tid']}/stat"), "the model run")
    assert worker.is_alive()
    cancel.cancel("cancelled", "asked by the test")
    worker.join(10)
    assert not worker.is_alive(), "the model run went on after the cancel"
    assert seen["stopped"].reason == "cancelled"
    assert str(seen["stopped"]) == "asked by the test"


def test_work_asked_to_stop_before_it_starts_never_runs_the_model(
        model: bytes, data: dict[str, np.ndarray]) -> None:
    proto = onnx.load_from_string(model)
    info = describe(proto)
    cancel = Cancellation()
    cancel.cancel("shutdown", "the server shut down")
    with pytest.raises(Stopped, match="the server shut down") as stopped:
        extract(proto, info, [info.layer("h")], [inputs(data, STUCK)], cancel=cancel)
    assert stopped.value.reason == "shutdown"


def test_the_first_reason_to_stop_is_the_one_reported() -> None:
    cancel = Cancellation()
    assert cancel.reason is None
    cancel.check()  # not asked: returns
    assert cancel.cancel("time_limit", "too long")
    assert not cancel.cancel("cancelled", "by the client")
    with pytest.raises(Stopped, match="too long") as stopped:
        cancel.check()
    assert stopped.value.reason == "time_limit" and cancel.reason == "time_limit"


def test_extraction_stops_between_batches(model: bytes, data: dict[str, np.ndarray]) -> None:
    proto = onnx.load_from_string(model)
    info = describe(proto)
    cancel = Cancellation()
    calls: list[tuple[str, int, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        calls.append((stage, done, total))
        cancel.cancel("cancelled", "after the first batch")

    with pytest.raises(Stopped, match="after the first batch"):
        extract(proto, info, [info.layer("h")], [inputs(data, 1)], batch_size=10,
                progress=progress, cancel=cancel)
    assert calls == [("extract:train", 1, 4)]


def test_knn_stops_between_blocks() -> None:
    x = np.random.default_rng(3).standard_normal((64, 3))
    cancel = Cancellation()
    done_rows: list[int] = []

    def progress(done: int, total: int) -> None:
        done_rows.append(done)
        cancel.cancel("deadline", "the deadline passed")

    with pytest.raises(Stopped, match="the deadline passed"):
        knn(x, 2, block_rows=8, candidate_search="blas", progress=progress, cancel=cancel)
    assert done_rows == [8], "one block of 8 rows, then the stop"


def test_forward_selection_stops_between_steps() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 6))
    y = (x[:, 0] > 0).astype(np.int64)
    cancel = Cancellation()
    steps: list[int] = []

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "feature_ranking":
            steps.append(done)
            cancel.cancel("cancelled", "after the first step")

    with pytest.raises(Stopped, match="after the first step"):
        compute_indices(x, y, indices=["feature_ranking"], progress=progress, cancel=cancel)
    assert steps == [1]


# ---------------------------------------------------------------------------------------
# In process: the job manager frees its worker and reports the end state
# ---------------------------------------------------------------------------------------


def _obedient(release: threading.Event) -> Any:
    """Work that checks its cancellation every 10 ms, for at most 60 s."""
    def work(progress: Any, cancel: Cancellation) -> dict[str, Any]:
        for _ in range(6000):
            cancel.check()
            if release.wait(0.01):
                return {"released": True}
        raise AssertionError("the work was never stopped")

    return work


def _finished(jobs: JobManager, job_id: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    rows = list(jobs.watch(job_id, lambda: time.monotonic() < deadline))
    assert rows and rows[-1].state in ("succeeded", "failed", "cancelled", "interrupted"), rows
    return rows[-1]


def test_time_limit_fails_the_job_and_the_next_one_runs(tmp_path: Path) -> None:
    jobs = JobManager(Catalog(tmp_path / "catalog.db"), 1, 4, time_limit_s=0.5)
    release = threading.Event()
    try:
        slow = jobs.submit("test", {}, _obedient(release))
        quick = jobs.submit("test", {}, lambda progress, cancel: {"answer": 42})
        end = _finished(jobs, slow.id)
        assert end.state == "failed", (end.state, end.message)
        assert "0.5 s" in end.message and "--job-timeout-s" in end.message, end.message
        assert end.finished - end.started >= 0.5
        nxt = _finished(jobs, quick.id)
        assert nxt.state == "succeeded" and nxt.result == {"answer": 42}
    finally:
        release.set()
        jobs.shutdown(5)


def test_a_job_within_the_time_limit_succeeds(tmp_path: Path) -> None:
    jobs = JobManager(Catalog(tmp_path / "catalog.db"), 1, 4, time_limit_s=30)
    release = threading.Event()
    try:
        job = jobs.submit("test", {}, _obedient(release))
        release.set()
        end = _finished(jobs, job.id)
        assert end.state == "succeeded" and end.result == {"released": True}
    finally:
        jobs.shutdown(5)


def test_shutdown_stops_obedient_workers(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    jobs = JobManager(catalog, 1, 4, time_limit_s=0)
    job = jobs.submit("test", {}, _obedient(threading.Event()))
    F.wait_until(lambda: catalog.job(job.id).state == "running", 10, "the job to start")
    assert jobs.shutdown(10) is True
    end = catalog.job(job.id)
    assert end.state == "interrupted" and "shut down" in end.message


def test_shutdown_reports_a_worker_that_outlives_the_grace_period(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    jobs = JobManager(catalog, 1, 4, time_limit_s=0)
    release = threading.Event()

    def deaf(progress: Any, cancel: Cancellation) -> dict[str, Any]:
        release.wait(60)  # never checks its cancellation
        return {}

    job = jobs.submit("test", {}, deaf)
    F.wait_until(lambda: catalog.job(job.id).state == "running", 10, "the job to start")
    try:
        assert jobs.shutdown(0.3) is False
        assert catalog.job(job.id).state == "interrupted"
    finally:
        release.set()
    # the worker finishes after the shutdown: it does not overwrite the final state
    for t in jobs._threads:
        t.join(10)
    assert not any(t.is_alive() for t in jobs._threads)
    end = catalog.job(job.id)
    assert end.state == "interrupted" and end.result is None, (end.state, end.result)


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_job_timeout_flag_rejects_values_that_are_not_seconds(tmp_path: Path,
                                                              value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "layerscope.server.api", "--port", "0", "--data-dir",
         str(tmp_path / "data"), f"--job-timeout-s={value}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "--job-timeout-s must be a finite number of seconds >= 0" in done.stderr, done.stderr
    assert value in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------
# A real server: jobs stuck in one model run
# ---------------------------------------------------------------------------------------


def test_cancel_ends_a_job_stuck_in_one_model_run_and_the_next_job_runs(
        tmp_path: Path, model: bytes, data: dict[str, np.ndarray]) -> None:
    with F.ServerProcess(tmp_path / "data") as server, server.client() as c:
        stuck = start_stuck_job(server, c, model, data)
        queued = start_analysis(c, model, data, 1)
        assert c.job(queued.id).state == "queued"  # one job runs at a time
        c.cancel(stuck)
        end = wait_final(c, stuck, 10, "the stuck job to end after the cancel")
        assert end.state == "cancelled", (end.state, end.message)
        assert end.message == "cancelled by the client"
        assert_normal_result(wait_final(c, queued, 60, "the queued job"), data)
        assert server.stop() == 0


def test_time_limit_fails_a_job_stuck_in_one_model_run(
        tmp_path: Path, model: bytes, data: dict[str, np.ndarray]) -> None:
    with F.ServerProcess(tmp_path / "data", "--job-timeout-s", "3") as server, \
            server.client() as c:
        stuck = start_analysis(c, model, data, STUCK)
        queued = start_analysis(c, model, data, 1)
        end = wait_final(c, stuck, 60, "the stuck job to reach its time limit")
        assert end.state == "failed", (end.state, end.message)
        assert "3 s" in end.message and "--job-timeout-s" in end.message, end.message
        assert end.finished - end.started >= 3
        assert_normal_result(wait_final(c, queued, 60, "the queued job"), data)
        assert server.stop() == 0


def test_sigterm_during_a_stuck_model_run_exits_0_within_the_grace_period(
        tmp_path: Path, model: bytes, data: dict[str, np.ndarray]) -> None:
    grace = 10.0  # Server.stop's default
    with F.ServerProcess(tmp_path / "data") as server, server.client() as c:
        stuck = start_stuck_job(server, c, model, data)
        t0 = time.monotonic()
        assert server.stop(timeout=3 * grace) == 0, server.log_tail()
        assert time.monotonic() - t0 < grace, "the server outlived its grace period"
    with F.ServerProcess(tmp_path / "data") as again, again.client() as c:
        end = c.job(stuck.id)
        assert end.state == "interrupted", (end.state, end.message)
        assert "shut down" in end.message
        assert again.stop() == 0


# ---------------------------------------------------------------------------------------
# A real server: calls whose client's deadline passed or whose client went away
# ---------------------------------------------------------------------------------------


def test_compute_indices_stops_computing_when_the_client_deadline_passes(
        tmp_path: Path) -> None:
    rng = np.random.default_rng(12)
    # Half a minute or more of exact k-NN on two cores; with a 1 MB working budget the
    # search goes in blocks of 256 rows, a fraction of a second each. 41 MB to send.
    x = rng.standard_normal((20_000, 512)).astype(np.float32)
    y = rng.integers(0, 3, len(x))
    with F.ServerProcess(tmp_path / "data") as server:
        with Client(server.address, timeout=4) as hasty:
            err = F.client_error(lambda: hasty.compute_indices(
                x, labels=y, indices=["si"], memory_budget_mb=1))
        assert err.code == "DEADLINE_EXCEEDED", err
        line = wait_log(server, "a call stopped computing", 30)
        assert "deadline" in line, line
        assert_idle(server)
        with server.client() as c:  # and it serves the next call
            res = c.compute_indices(x[:300], labels=y[:300], indices=["si"])
        assert res["si"] == pytest.approx(F.brute_si(x[:300], y[:300]), abs=1e-12)
        assert server.stop() == 0


@pytest.fixture()
def certifying(tmp_path: Path, model: bytes, data: dict[str, np.ndarray]) -> Any:
    """A server with a reference built on the loop model at t = 1; yields (server,
    reference id)."""
    with F.ServerProcess(tmp_path / "data") as server, server.client() as c:
        ds = c.upload_dataset(inputs(data, 1), labels=data["y"], name="reference")
        ref = c.build_reference(c.upload_model(model, name="loop"), ds, layer="h")
        yield server, ref.id
        assert server.stop() == 0


def test_certify_terminates_its_model_run_when_the_client_deadline_passes(
        certifying: tuple[F.ServerProcess, str], data: dict[str, np.ndarray]) -> None:
    server, ref = certifying
    with Client(server.address, timeout=2) as hasty:
        err = F.client_error(lambda: hasty.certify(ref, inputs=inputs(data, STUCK)))
    assert err.code == "DEADLINE_EXCEEDED", err
    line = wait_log(server, "a call stopped computing", 15)
    assert "deadline" in line, line
    assert_idle(server)


def test_certify_stream_terminates_its_model_run_when_the_client_goes_away(
        certifying: tuple[F.ServerProcess, str], data: dict[str, np.ndarray]) -> None:
    server, ref = certifying
    req = analysis_pb2.CertifyRequest(reference_id=ref)
    for name, arr in inputs(data, STUCK).items():
        req.inputs.tensors[name].CopyFrom(common_pb2.Tensor(
            dtype=str(arr.dtype), shape=list(arr.shape), data=arr.tobytes()))
    with server.channel() as channel:
        call = F.stubs(channel).analysis.CertifyStream(iter([req]), timeout=120)
        wait_spinning(server_stat(server), "the server to run the model for the query")
        call.cancel()
        with pytest.raises(grpc.RpcError) as raised:
            next(call)
        assert raised.value.code() == grpc.StatusCode.CANCELLED
    line = wait_log(server, "a call stopped computing", 15)
    assert "went away" in line, line
    assert_idle(server)


def big_model(mib: int) -> bytes:
    """y = Relu(x @ w), x (N, 4), with an initializer of ``mib`` MiB that nothing reads."""
    w = (np.arange(12, dtype=np.float32).reshape(4, 3) - 5) / 10
    pad = np.ones(mib * (1 << 20) // 4, np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"),
         helper.make_node("Relu", ["h"], ["y"], name="relu")],
        "big_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(pad, "pad")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_queued_jobs_hold_no_model_while_they_wait(tmp_path: Path, model: bytes,
                                                   data: dict[str, np.ndarray]) -> None:
    """Jobs queued behind a running one keep only their requests: what admission loaded
    to check them (here a 64 MiB model, six times) is let go until each job starts."""
    mib, queued = 64, 6
    with F.ServerProcess(tmp_path / "data", "--max-concurrent-jobs", "1") as server, \
            server.client() as c:
        stuck = start_stuck_job(server, c, model, data)
        big = c.upload_model(big_model(mib), name="big")
        ds = c.upload_dataset({"x": data["x"]}, labels=data["y"], name="x")
        before = F.rss_anon_kib(server.pid)
        jobs = [c.start_layer_analysis(big, ds, layers=["h"], indices=["si"], orders=[1])
                for _ in range(queued)]
        assert all(c.job(j.id).state == "queued" for j in jobs)
        grown_mib = (F.rss_anon_kib(server.pid) - before) / 1024
        for j in [stuck, *jobs]:
            c.cancel(j)
        assert server.stop() == 0
    # held, the six parsed models alone would be queued * mib = 384 MiB
    assert grown_mib < 2 * mib, grown_mib
