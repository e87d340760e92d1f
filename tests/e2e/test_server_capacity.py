"""End-to-end tests of the server's capacity by kind of call (--max-uploads, --max-watchers,
--max-compute-calls, --max-probe-streams), the idle timeout of request streams
(--stream-idle-timeout-s) and the refusal to serve a non-loopback address without a token,
each on a real server process. Only 127.0.0.1 is ever contacted.

Each test holds N long calls of one kind (N the configured limit), then floods the server
with more stalling calls than the old fixed pool had threads (16): every one beyond N is
refused at once with RESOURCE_EXHAUSTED, and health, GetJob, ListJobs and CancelJob keep
answering within a second.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from helpers import server as F

from layerscope.client import server_process
from layerscope.protos.stubs import analysis_pb2, common_pb2

pytestmark = pytest.mark.timeout(180)

N = 2  # the configured capacity of each long kind
FLOOD = 17  # more stalling calls than the 16 RPC threads the server used to have
LIVENESS = 1.0  # seconds within which a control call must answer, whatever else runs
CAPPED = ("--max-uploads", str(N), "--max-watchers", str(N), "--max-compute-calls", str(N),
          "--max-probe-streams", "1", "--control-threads", "2",
          "--stream-idle-timeout-s", "120")


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[F.ServerProcess]:
    root = tmp_path_factory.mktemp("capped")
    s = F.ServerProcess(root / "data", *CAPPED)
    with s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


@pytest.fixture(scope="module")
def done_job(capped: F.ServerProcess) -> str:
    """The id of a finished job (GetJob and CancelJob answer it without changing it)."""
    x = np.random.default_rng(0).standard_normal((40, 6)).astype(np.float32)
    with capped.client() as c:
        model = c.upload_model(F.tiny_regressor(), name="tiny")
        ds = c.upload_dataset({"x": x}, targets=x[:, 0], name="tiny-data")
        job = c.start_layer_analysis(model, ds, layers=["hidden"], orders=[1])
        assert list(c.watch(job))[-1].state == "succeeded"
        return str(job.id)


class Control:
    """The calls that must always answer, on a channel of their own: GetJob of ``job_id``
    (default: the finished job), CancelJob of the finished job (answered, changes nothing),
    ListJobs and a health check."""

    def __init__(self, server: F.ServerProcess, done_job: str, job_id: str | None = None
                 ) -> None:
        self.channel = server.channel()
        self.raw = F.stubs(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)
        self.done_job, self.job_id = done_job, job_id or done_job
        self.answer_promptly()  # connected before anything stalls

    def answer_promptly(self) -> None:
        """Each control call answers within LIVENESS seconds (its deadline)."""
        calls: dict[str, Callable[[], Any]] = {
            "Health.Check": lambda: self.health.Check(health_pb2.HealthCheckRequest(),
                                                      timeout=LIVENESS),
            "GetJob": lambda: self.raw.analysis.GetJob(
                analysis_pb2.GetJobRequest(id=self.job_id), timeout=LIVENESS),
            "ListJobs": lambda: self.raw.analysis.ListJobs(analysis_pb2.ListJobsRequest(),
                                                           timeout=LIVENESS),
            "CancelJob": lambda: self.raw.analysis.CancelJob(
                analysis_pb2.CancelJobRequest(id=self.done_job), timeout=LIVENESS),
        }
        for name, call in calls.items():
            try:
                resp = call()
            except grpc.RpcError as exc:
                raise AssertionError(f"{name} did not answer within {LIVENESS} s: "
                                     f"{exc.code()} {exc.details()}") from None
            if name == "Health.Check":
                assert resp.status == health_pb2.HealthCheckResponse.SERVING
            elif name == "ListJobs":
                assert {self.job_id, self.done_job} <= {j.id for j in resp.jobs}
            elif name == "GetJob":
                assert resp.id == self.job_id
            else:
                assert resp.id == self.done_job
                assert resp.state == common_pb2.JOB_STATE_SUCCEEDED

    def cancel(self, job_id: str) -> Any:
        """CancelJob of a running job, answered within LIVENESS seconds."""
        return self.raw.analysis.CancelJob(analysis_pb2.CancelJobRequest(id=job_id),
                                           timeout=LIVENESS)

    def close(self) -> None:
        self.channel.close()


class Stalls:
    """Long calls from other clients (a channel each), ended when the test ends."""

    def __init__(self, server: F.ServerProcess) -> None:
        self.server = server
        self.release = threading.Event()
        self.channels: list[grpc.Channel] = []
        self.calls: list[Any] = []

    def channel(self) -> grpc.Channel:
        self.channels.append(self.server.channel())
        return self.channels[-1]

    def stub(self) -> F.Stubs:
        return F.stubs(self.channel())

    def held(self, messages: list[Any]) -> Iterator[Any]:
        """A request stream that sends ``messages`` and then nothing until the test ends."""
        return F.held_open(messages, self.release, hold=150)

    def add(self, call: Any) -> Any:
        self.calls.append(call)
        return call

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()
        for ch in self.channels:
            ch.close()


def refusals(calls: list[Callable[[], Any]]) -> list[tuple[grpc.StatusCode, str]]:
    """Run the calls at once (each must fail); their status codes and details."""
    with futures.ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: F.code_of(call), calls))


def assert_refused_for(limit: str, answers: list[tuple[grpc.StatusCode, str]]) -> None:
    for code, details in answers:
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert f"{limit} {N}" in details, details


def model_upload(data: bytes, stalls: Stalls, *, chunks: int = 1) -> Any:
    """Header and ``chunks`` of a model upload, then a stall."""
    messages = list(F.model_requests(data, chunk=len(data) // 4))[: 1 + chunks]
    return stalls.stub().models.UploadModel.future(stalls.held(messages), timeout=150)


def indices_header() -> analysis_pb2.ComputeIndicesRequest:
    return analysis_pb2.ComputeIndicesRequest(header=analysis_pb2.ComputeIndicesHeader(
        tensors=[common_pb2.TensorSpec(name="features", dtype="float32", shape=[10, 2]),
                 common_pb2.TensorSpec(name="labels", dtype="int64", shape=[10])]))


# ---------------------------------------------------------------------------------------
# Capacity by kind
# ---------------------------------------------------------------------------------------


def test_stalled_uploads_hold_only_their_share(capped: F.ServerProcess, done_job: str) -> None:
    data = F.tiny_regressor(seed=5)
    control = Control(capped, done_job)
    stalls = Stalls(capped)
    try:
        held = [stalls.add(model_upload(data, stalls)) for _ in range(N)]
        # each admitted upload writes its first chunk to a temporary file
        F.wait_until(lambda: len(F.tmp_uploads(capped.data_dir)) == N, 10,
                     f"{N} uploads being received")
        flood = [lambda: stalls.stub().models.UploadModel(
            stalls.held(list(F.model_requests(data))[:2]), timeout=20)
            for _ in range(FLOOD)]
        assert_refused_for("--max-uploads", refusals(flood))
        control.answer_promptly()
        assert len(F.tmp_uploads(capped.data_dir)) == N

        # a client that goes away gives its slot back, and its partial upload is discarded
        held[0].cancel()
        F.wait_until(lambda: len(F.tmp_uploads(capped.data_dir)) == N - 1, 10,
                     "the cancelled upload's temporary file to go")
        with capped.client() as c:
            model = c.upload_model(data, name="after")
            assert model.id == hashlib.sha256(data).hexdigest()
            c.delete_model(model.id)
        control.answer_promptly()
    finally:
        stalls.close()
        control.close()
    F.wait_until(lambda: F.tmp_uploads(capped.data_dir) == [], 10, "no partial upload left")


def test_watchers_hold_only_their_share(capped: F.ServerProcess, done_job: str) -> None:
    stalls = Stalls(capped)
    with capped.client() as c:
        _, _, job = F.start_slow(c, F.slow_job())
        F.wait_extracting(c, job.id)
    control = Control(capped, done_job, job.id)
    request = analysis_pb2.WatchJobRequest(id=job.id)
    try:
        watchers = [stalls.add(stalls.stub().analysis.WatchJob(request, timeout=150))
                    for _ in range(N)]
        for w in watchers:
            first = next(w)  # admitted: the job as it stands
            assert first.id == job.id and first.state == common_pb2.JOB_STATE_RUNNING
        flood = [lambda: next(stalls.add(stalls.stub().analysis.WatchJob(request, timeout=20)))
                 for _ in range(FLOOD)]
        assert_refused_for("--max-watchers", refusals(flood))
        control.answer_promptly()

        # a watcher whose client went away releases its slot promptly
        watchers[0].cancel()

        def watch_again() -> Any:
            w = stalls.add(stalls.stub().analysis.WatchJob(request, timeout=150))
            try:
                return next(w)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return None

        again = F.wait_until(watch_again, 5, "a free watcher slot", poll=0.1)
        assert again.state == common_pb2.JOB_STATE_RUNNING
        control.answer_promptly()
        assert control.cancel(job.id).id == job.id
        last = list(watchers[1])[-1]
        assert last.state == common_pb2.JOB_STATE_CANCELLED, last
    finally:
        stalls.close()
        control.close()
        with capped.client() as c:
            c.cancel(job)


def test_stalled_computations_hold_only_their_share(capped: F.ServerProcess,
                                                    done_job: str) -> None:
    control = Control(capped, done_job)
    stalls = Stalls(capped)
    certify = analysis_pb2.CertifyRequest(reference_id="0" * 64)
    probe = F.stubs(control.channel).analysis
    # a free slot: the call runs and finds no such reference
    assert F.code_of(lambda: probe.Certify(certify, timeout=10))[0] == grpc.StatusCode.NOT_FOUND
    try:
        # one stalled ComputeIndices (header, then nothing) and one silent CertifyStream
        stalls.add(stalls.stub().analysis.ComputeIndices.future(
            stalls.held([indices_header()]), timeout=150))
        stalls.add(stalls.stub().analysis.CertifyStream(stalls.held([]), timeout=150))

        def refused() -> bool:
            code, _ = F.code_of(lambda: probe.Certify(certify, timeout=10))
            return code == grpc.StatusCode.RESOURCE_EXHAUSTED

        F.wait_until(refused, 10, f"{N} computations to hold every compute slot", poll=0.05)
        flood: list[Callable[[], Any]] = [
            lambda: stalls.stub().analysis.ComputeIndices(stalls.held([indices_header()]),
                                                          timeout=20)
            for _ in range(FLOOD - 2)]
        flood += [lambda: probe.Certify(certify, timeout=20),
                  lambda: probe.StartLayerAnalysis(analysis_pb2.StartLayerAnalysisRequest(),
                                                   timeout=20)]
        assert_refused_for("--max-compute-calls", refusals(flood))
        control.answer_promptly()
        stalls.close()
        # the clients went away: the slots come back
        F.wait_until(lambda: F.code_of(lambda: probe.Certify(certify, timeout=10))[0]
                     == grpc.StatusCode.NOT_FOUND, 10, "a free compute slot", poll=0.05)
    finally:
        stalls.close()
        control.close()


def test_health_watchers_are_bounded_apart_from_job_watchers(capped: F.ServerProcess,
                                                             done_job: str) -> None:
    """Health Watch needs no token, so its streams get their own small share."""
    stalls = Stalls(capped)
    health = health_pb2_grpc.HealthStub(stalls.channel())
    try:
        first = stalls.add(health.Watch(health_pb2.HealthCheckRequest(), timeout=150))
        assert next(first).status == health_pb2.HealthCheckResponse.SERVING
        code, details = F.code_of(lambda: next(health.Watch(health_pb2.HealthCheckRequest(),
                                                            timeout=20)))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
        assert "--max-probe-streams 1" in details
        # job watchers are not affected
        with capped.client() as c:
            assert list(c.watch(done_job))[-1].state == "succeeded"
        first.cancel()

        def watch_again() -> Any:
            try:
                return next(stalls.add(health.Watch(health_pb2.HealthCheckRequest(),
                                                    timeout=150)))
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
                return None

        F.wait_until(watch_again, 5, "a free probe slot", poll=0.1)
    finally:
        stalls.close()


# ---------------------------------------------------------------------------------------
# Idle request streams
# ---------------------------------------------------------------------------------------

IDLE_S = 2.0


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[F.ServerProcess]:
    root = tmp_path_factory.mktemp("idle")
    s = F.ServerProcess(root / "data", "--stream-idle-timeout-s", str(IDLE_S),
                        "--max-uploads", "1", "--max-compute-calls", "1")
    with s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


X = np.arange(64 * 1024, dtype=np.float32).reshape(-1, 16)
Y = np.arange(len(X)) % 3
DATASET = F.dataset_bytes({"x": X, "labels": Y})
SPECS = [("x", "float32", list(X.shape)), ("labels", "int64", [len(Y)])]
MODEL = F.tiny_regressor(seed=7)


def stalled_call(kind: str, sent: int, stub: F.Stubs, stalls: Stalls) -> Callable[[], Any]:
    """A call of ``kind`` whose client sends ``sent`` messages, then nothing."""
    if kind == "UploadDataset":
        msgs = list(F.dataset_requests(SPECS, DATASET, chunk=len(DATASET) // 4))
        return lambda: stub.datasets.UploadDataset(stalls.held(msgs[:sent]), timeout=60)
    if kind == "UploadModel":
        msgs = list(F.model_requests(MODEL, chunk=len(MODEL) // 4))
        return lambda: stub.models.UploadModel(stalls.held(msgs[:sent]), timeout=60)
    if kind == "ComputeIndices":
        return lambda: stub.analysis.ComputeIndices(stalls.held([indices_header()][:sent]),
                                                    timeout=60)
    req = analysis_pb2.CertifyRequest(reference_id="0" * 64)
    return lambda: list(stub.analysis.CertifyStream(stalls.held([req][:sent]), timeout=60))


@pytest.mark.parametrize("kind,sent", [
    ("UploadDataset", 0), ("UploadDataset", 1), ("UploadDataset", 3), ("UploadModel", 2),
    ("ComputeIndices", 1), ("CertifyStream", 0),
], ids=["dataset-nothing", "dataset-header", "dataset-two-chunks", "model-one-chunk",
        "indices-header", "certify-stream-nothing"])
def test_a_stalled_request_stream_is_ended_after_the_idle_timeout(
        idle: F.ServerProcess, kind: str, sent: int) -> None:
    stalls = Stalls(idle)
    stub = stalls.stub()
    try:
        code, details = F.code_of(stalled_call(kind, sent, stub, stalls))
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
        assert "--stream-idle-timeout-s" in details and kind in details, details
        assert F.tmp_uploads(idle.data_dir) == [], "the partial upload was discarded"
        assert not F.blob_path(idle.data_dir, hashlib.sha256(DATASET).hexdigest()).exists()
        assert not F.blob_path(idle.data_dir, hashlib.sha256(MODEL).hexdigest()).exists()
        with idle.client() as c:
            assert c.datasets() == [] and c.models() == []
            # the one upload slot and the one compute slot are free again
            ds = c.upload_dataset({"x": X}, labels=Y, name="after")
            res = c.compute_indices(X[:50], labels=Y[:50], indices=["si"], orders=[1])
            assert res["si"] == pytest.approx(F.brute_si(X[:50], Y[:50]), abs=1e-12)
            c.delete_dataset(ds.id)
    finally:
        stalls.close()


def test_a_stream_that_pauses_less_than_the_timeout_is_served(idle: F.ServerProcess) -> None:
    """The timeout is on silence, not on the stream's length: an upload that pauses a
    quarter of the timeout between chunks, for longer than the timeout in all, succeeds."""
    pause = threading.Event()
    msgs = list(F.dataset_requests(SPECS, DATASET, chunk=len(DATASET) // 8))
    assert len(msgs) * IDLE_S / 4 > IDLE_S

    def slow() -> Iterator[Any]:
        for m in msgs:
            pause.wait(IDLE_S / 4)
            yield m

    channel = idle.channel()
    try:
        resp = F.stubs(channel).datasets.UploadDataset(slow(), timeout=60)
        assert resp.dataset.n_samples == len(X)
        assert not resp.already_present
    finally:
        channel.close()
    with idle.client() as c:
        c.delete_dataset(resp.dataset.id)


# ---------------------------------------------------------------------------------------
# Where the server may listen
# ---------------------------------------------------------------------------------------


def serve_cmd(data_dir: Path, host: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "layerscope.server.api", "--host", host, "--port", "0",
            "--data-dir", str(data_dir), *args]


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_non_loopback_address_without_a_token_refuses_to_start(tmp_path: Path,
                                                                 host: str) -> None:
    proc = subprocess.Popen(serve_cmd(tmp_path / "data", host), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the server started on {host} without a token") from None
    assert proc.returncode == 2, (proc.returncode, err)
    assert "--token-file" in err and "--insecure" in err, err
    assert "serving" not in out
    assert not (tmp_path / "data" / "catalog.sqlite3").exists()


def started(tmp_path: Path, host: str, *args: str) -> str:
    """Start a server, stop it at once (SIGTERM, exit 0); its log."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    s = server_process.ServerProcess(tmp_path / "data", *args, host=host,
                                     log_path=tmp_path / "server.log")
    try:
        address = s.wait_ready(60)
        assert address.rpartition(":")[0] == host, address
        # server.json names an address a local client reaches, a wildcard's on loopback
        announced = json.loads((tmp_path / "data" / "server.json").read_text())["address"]
        assert announced.rpartition(":")[0] == {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
            host, host), announced
        with grpc.insecure_channel(announced) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        assert s.stop(30) == 0, s.log_tail()
    return (tmp_path / "server.log").read_text()


def test_insecure_starts_on_a_non_loopback_address_and_warns(tmp_path: Path) -> None:
    log = started(tmp_path, "0.0.0.0", "--insecure")
    assert "WARNING" in log and "without a token" in log, log


def test_a_token_without_tls_on_a_non_loopback_address_warns(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a-token\n")
    tokens.chmod(0o600)
    on_loopback = started(tmp_path / "loopback", "127.0.0.1", "--token-file", str(tokens))
    assert "WARNING" not in on_loopback, on_loopback
    exposed = started(tmp_path / "exposed", "0.0.0.0", "--token-file", str(tokens))
    assert "WARNING" in exposed and "clear text" in exposed and "--tls-cert" in exposed, exposed


@pytest.mark.parametrize("flag,value", [("--max-uploads", "0"), ("--control-threads", "-1"),
                                        ("--stream-idle-timeout-s", "nan"),
                                        ("--stream-idle-timeout-s", "0")])
def test_a_limit_out_of_range_refuses_to_start(tmp_path: Path, flag: str, value: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from layerscope.server.api.serve import main

    assert main(["--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "data"),
                 flag, value]) == 2
    err = capsys.readouterr().err
    assert flag in err and value in err, err
    assert not (tmp_path / "data" / "catalog.sqlite3").exists()


def test_serve_help_lists_every_limit_with_its_default() -> None:
    exe = Path(sys.executable).with_name("layerscope")
    proc = subprocess.run([str(exe), "serve", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    defaults = {"--max-upload-mb": "2048.0", "--max-concurrent-jobs": "1",
                "--max-queued-jobs": "16", "--max-uploads": "4", "--max-watchers": "16",
                "--max-compute-calls": "8", "--max-probe-streams": "8",
                "--control-threads": "8", "--max-pending-calls": "64",
                "--stream-idle-timeout-s": "30.0"}
    for flag, default in defaults.items():
        # the option's entry (not the usage line): "--flag METAVAR help... (default: X)"
        entry = re.search(rf"{flag} [A-Z]+ ([^[]*?)\(default: ([^)]*)\)", text)
        assert entry, f"{flag} is not listed with a default"
        assert " --" not in entry[1], f"{flag}'s entry has no default: {entry[0]}"
        assert entry[2] == default, entry[0]
    assert "--insecure" in text


def test_every_serve_option_has_help() -> None:
    from layerscope.server.api.serve import build_parser

    for action in build_parser()._actions:
        assert action.help, action.option_strings


def test_every_method_has_a_kind_and_only_short_calls_are_control() -> None:
    """Every method the server offers has a kind; the control calls, never refused for
    capacity, are exactly the short ones."""
    from grpc_health.v1 import health_pb2 as h
    from grpc_reflection.v1alpha import reflection_pb2

    from layerscope.protos.stubs import datasets_pb2, models_pb2
    from layerscope.server.api.limits import kind_of

    kinds: dict[str, str] = {}
    for module in (models_pb2, datasets_pb2, analysis_pb2, h, reflection_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                path = f"/{service.full_name}/{m.name}"
                kinds[path] = kind_of(path, not (m.client_streaming or m.server_streaming))
    by_kind: dict[str, set[str]] = {}
    for path, kind in kinds.items():
        by_kind.setdefault(kind, set()).add(path.rpartition("/")[2])
    assert by_kind == {
        "control": {"GetModel", "ListModels", "DeleteModel", "GetDataset", "ListDatasets",
                    "DeleteDataset", "GetJob", "ListJobs", "CancelJob", "ListReferences",
                    "DeleteReference", "Check", "List"},
        "upload": {"UploadModel", "UploadModelFiles", "UploadDataset", "DownloadModel"},
        "watch": {"WatchJob"},
        "compute": {"ComputeIndices", "StartLayerAnalysis", "StartRanking", "BuildReference",
                    "StartCompression", "Certify", "CertifyStream"},
        "probe": {"Watch", "ServerReflectionInfo"},
    }


def test_loopback_addresses_are_told_from_the_others() -> None:
    from layerscope.server.api.serve import is_loopback

    for host in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "[::]", "192.168.1.20", "10.0.0.1", "2001:db8::1"):
        assert not is_loopback(host), host
