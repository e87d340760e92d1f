"""End-to-end tests of the server's limits (--max-upload-mb, --max-concurrent-jobs,
--max-queued-jobs), bearer tokens (--token-file), health checking and reflection, each on
a real server process on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from helpers import server as F

from layerscope.client.client import Client
from layerscope.protos.stubs import analysis_pb2, datasets_pb2, models_pb2

pytestmark = pytest.mark.timeout(120)

TOKEN = "s3cret-token-for-tests"
SERVICES = {"layerscope.v1.Models", "layerscope.v1.Datasets", "layerscope.v1.Analysis"}


@pytest.fixture(scope="module")
def slow() -> F.SlowJob:
    return F.slow_job()


# ---------------------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("limited")
    with F.ServerProcess(root / "data", "--max-upload-mb", "8", "--max-concurrent-jobs", "1",
                         "--max-queued-jobs", "0") as s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


def test_upload_above_the_limit_is_resource_exhausted(limited: F.ServerProcess) -> None:
    big = np.zeros((9 * 1024, 256), np.float32)  # 9 MiB > 8 MiB
    labels = np.zeros(len(big), np.int64)
    with limited.client() as c:
        err = F.client_error(lambda: c.upload_dataset({"x": big}, labels=labels))
        assert err.code == "RESOURCE_EXHAUSTED", err
        assert "limit" in err.details
        err = F.client_error(lambda: c.upload_model(b"\x00" * (9 << 20)))
        assert err.code == "RESOURCE_EXHAUSTED", err
        err = F.client_error(lambda: c.compute_indices(big, labels=labels))
        assert err.code == "RESOURCE_EXHAUSTED", err
        assert c.datasets() == [] and c.models() == []
        assert F.tmp_uploads(limited.data_dir) == []
        # just under the limit is accepted
        ok = c.upload_dataset({"x": big[: 7 * 1024] + 1}, labels=labels[: 7 * 1024])
        assert ok.n_samples == 7 * 1024
        c.delete_dataset(ok.id)


def test_upload_that_sends_more_than_declared_is_rejected(limited: F.ServerProcess) -> None:
    """A header that declares a small size cannot be used to slip past the limit."""
    data = b"\x01" * (2 << 20)
    channel = limited.channel()
    try:
        raw = F.stubs(channel)
        code, details = F.code_of(lambda: raw.models.UploadModel(
            F.model_requests(data, size=1 << 20), timeout=30))
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert "size" in details
    finally:
        channel.close()
    assert F.tmp_uploads(limited.data_dir) == []


def test_job_queue_full_is_resource_exhausted(limited: F.ServerProcess,
                                              slow: F.SlowJob) -> None:
    with limited.client() as c:
        model, ds, job = F.start_slow(c, slow)
        try:
            F.wait_extracting(c, job.id)
            err = F.client_error(lambda: c.start_layer_analysis(
                model, ds, layers=list(slow.layers), batch_size=1))
            assert err.code == "RESOURCE_EXHAUSTED", err
            assert "queue" in err.details
            assert c.job(job.id).state == "running"
            assert len(c.jobs()) == 1, "the refused job was not recorded"
        finally:
            c.cancel(job)
        end = F.wait_until(lambda: (j := c.job(job.id)).done and j, 10, "the cancel")
        assert end.state == "cancelled"

        # a free slot again: a small job runs to the end
        few = c.upload_dataset({"x": slow.x[:200]}, labels=slow.y[:200])

        def start() -> Any:
            try:
                return c.start_layer_analysis(model, few, layers=["pooled"], batch_size=50,
                                              indices=["si"], orders=[1])
            except Exception as exc:  # noqa: BLE001 - the slot frees right after the state
                if getattr(exc, "code", None) == "RESOURCE_EXHAUSTED":
                    return None
                raise

        small = F.wait_until(start, 10, "a free job slot")
        final = list(c.watch(small))[-1]
        assert final.state == "succeeded", final.message


# ---------------------------------------------------------------------------------------
# Tokens, health, reflection
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("secured")
    token_file = root / "tokens.txt"
    token_file.write_text(f"# accepted tokens\n\n{TOKEN}\nanother-token\n")
    token_file.chmod(0o600)
    with F.ServerProcess(root / "data", "--token-file", str(token_file)) as s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


def _calls(c: Client) -> dict[str, Any]:
    """One call of each shape: unary, client stream, server stream."""
    model = F.tiny_regressor(seed=9)
    x = np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32)
    return {
        "ListModels": lambda: c.models(),
        "GetDataset": lambda: c.get_dataset("0" * 64),
        "ListJobs": lambda: c.jobs(),
        "UploadModel": lambda: c.upload_model(model),
        "UploadDataset": lambda: c.upload_dataset({"x": x}, targets=x[:, 0]),
        "ComputeIndices": lambda: c.compute_indices(x, targets=x[:, 0]),
        "WatchJob": lambda: list(c.watch("0" * 32)),
    }


@pytest.mark.parametrize("token,code", [(None, "UNAUTHENTICATED"),
                                        ("wrong-token", "PERMISSION_DENIED"),
                                        ("", "UNAUTHENTICATED")],
                         ids=["no-token", "wrong-token", "empty-token"])
def test_calls_without_an_accepted_token_are_refused(secured: F.ServerProcess,
                                                     token: str | None, code: str) -> None:
    with Client(secured.address, token=token, timeout=30) as c:
        for name, call in _calls(c).items():
            err = F.client_error(call)
            assert err.code == code, (name, err)
            assert err.details
    with Client(secured.address, token=TOKEN, timeout=30) as ok:
        assert ok.models() == [] and ok.datasets() == [], "nothing was stored"


def test_malformed_authorization_metadata(secured: F.ServerProcess) -> None:
    channel = secured.channel()
    try:
        raw = F.stubs(channel)
        for value in (f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN}x", "Bearer"):
            code, _ = F.code_of(lambda v=value: raw.models.ListModels(
                models_pb2.ListModelsRequest(), metadata=[("authorization", v)], timeout=10))
            assert code == grpc.StatusCode.PERMISSION_DENIED, (value, code)
        resp = raw.models.ListModels(models_pb2.ListModelsRequest(),
                                     metadata=[("authorization", f"bearer  {TOKEN} ")],
                                     timeout=10)
        assert list(resp.models) == []
    finally:
        channel.close()


def test_the_right_token_is_accepted(secured: F.ServerProcess) -> None:
    for token in (TOKEN, "another-token"):
        with Client(secured.address, token=token, timeout=60) as c:
            for name, call in _calls(c).items():
                if name in ("GetDataset", "WatchJob"):
                    assert F.client_error(call).code == "NOT_FOUND", name
                else:
                    call()
            model = c.upload_model(F.tiny_regressor(seed=9))
            x = np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32)
            ds = c.upload_dataset({"x": x}, targets=x[:, 0])
            res = c.analyze_layers(model, ds, layers=["hidden"], orders=[1])
            assert [la["name"] for la in res.layers] == ["x", "hidden", "y"]
            c.delete_dataset(ds.id)
            c.delete_model(model.id)


def test_health_answers_serving_without_a_token(secured: F.ServerProcess) -> None:
    channel = secured.channel()
    try:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", *sorted(SERVICES)):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
        code, _ = F.code_of(lambda: health.Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10))
        assert code == grpc.StatusCode.NOT_FOUND
        first = next(iter(health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)))
        assert first.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


def test_reflection_lists_the_services_without_a_token(secured: F.ServerProcess) -> None:
    channel = secured.channel()
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        reqs = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(
                    file_containing_symbol="layerscope.v1.Analysis")]
        answers = list(stub.ServerReflectionInfo(iter(reqs), timeout=10))
        names = {s.name for s in answers[0].list_services_response.service}
        assert SERVICES <= names
        assert "grpc.health.v1.Health" in names
        assert any("reflection" in n for n in names)
        files = answers[1].file_descriptor_response.file_descriptor_proto
        assert files, answers[1]
        from google.protobuf import descriptor_pb2

        protos = [descriptor_pb2.FileDescriptorProto.FromString(b) for b in files]
        methods = {m.name for p in protos for s in p.service if s.name == "Analysis"
                   for m in s.method}
        assert {"ComputeIndices", "StartLayerAnalysis", "WatchJob", "GetJob", "ListJobs",
                "CancelJob"} <= methods
    finally:
        channel.close()


def test_no_error_reaches_the_client_as_unknown(secured: F.ServerProcess, tmp_path: Path
                                                ) -> None:
    """A sweep of bad requests through raw stubs: each gets a specific status code."""
    channel = secured.channel()
    md = [("authorization", f"Bearer {TOKEN}")]
    try:
        raw = F.stubs(channel)
        x = np.ones((4, 2), np.float32)
        data = x.tobytes() + np.zeros(4, np.int64).tobytes()
        calls = {
            "GetModel ''": lambda: raw.models.GetModel(models_pb2.GetModelRequest(),
                                                       metadata=md, timeout=10),
            "DeleteDataset ''": lambda: raw.datasets.DeleteDataset(
                datasets_pb2.DeleteDatasetRequest(), metadata=md, timeout=10),
            "GetJob ''": lambda: raw.analysis.GetJob(analysis_pb2.GetJobRequest(),
                                                     metadata=md, timeout=10),
            "CancelJob ''": lambda: raw.analysis.CancelJob(analysis_pb2.CancelJobRequest(),
                                                           metadata=md, timeout=10),
            "StartLayerAnalysis empty": lambda: raw.analysis.StartLayerAnalysis(
                analysis_pb2.StartLayerAnalysisRequest(), metadata=md, timeout=10),
            "UploadDataset negative dim": lambda: raw.datasets.UploadDataset(
                F.dataset_requests([("x", "float32", [4, -2]), ("labels", "int64", [4])],
                                   data), metadata=md, timeout=10),
            "UploadDataset no sample axis": lambda: raw.datasets.UploadDataset(
                F.dataset_requests([("x", "float32", []), ("labels", "int64", [4])], data),
                metadata=md, timeout=10),
            "UploadDataset duplicate names": lambda: raw.datasets.UploadDataset(
                F.dataset_requests([("x", "float32", [4, 1]), ("x", "float32", [4, 1]),
                                    ("labels", "int64", [4])], data), metadata=md,
                timeout=10),
            "UploadDataset zero samples": lambda: raw.datasets.UploadDataset(
                F.dataset_requests([("x", "float32", [0, 2]), ("labels", "int64", [0])],
                                   b""), metadata=md, timeout=10),
            "UploadDataset 2-D labels": lambda: raw.datasets.UploadDataset(
                F.dataset_requests([("x", "float32", [4, 2]), ("labels", "int64", [4, 1])],
                                   data), metadata=md, timeout=10),
            "UploadModel uppercase sha": lambda: raw.models.UploadModel(
                F.model_requests(b"abc", sha256=hashlib.sha256(b"abc").hexdigest().upper()),
                metadata=md, timeout=10),
            "UploadModel negative size": lambda: raw.models.UploadModel(
                F.model_requests(b"abc", size=-1), metadata=md, timeout=10),
        }
        for what, call in calls.items():
            code, details = F.code_of(call)
            assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (
                what, code, details)
            assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), (
                what, code, details)
            assert details, what
    finally:
        channel.close()


def test_streams_are_refused_before_they_are_read(secured: F.ServerProcess) -> None:
    """Without a token, an upload is refused at once: the server does not wait for the
    (never-ending) request stream."""
    channel = secured.channel()
    release = threading.Event()
    try:
        raw = F.stubs(channel)
        header = next(F.model_requests(b"abc"))
        code, _ = F.code_of(lambda: raw.models.UploadModel(
            F.held_open([header], release), timeout=10))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        release.set()
        channel.close()
