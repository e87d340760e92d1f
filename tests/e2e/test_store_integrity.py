"""The store never loses or leaks bytes, refuses what it cannot hold, and keeps its files
private (issue 11, sections 5 and 6).

Every test runs a real ``layerscope serve`` on 127.0.0.1 with its own data directory and
talks to it with raw gRPC stubs, so that it can send what no well-behaved client would.
What the store holds is checked from the outside: the SQLite catalog is read read-only
and every blob file is hashed with hashlib, independently of the server's code.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from helpers import server as F

from layerscope.protos.stubs import (
    analysis_pb2,
    common_pb2,
    datasets_pb2,
    models_pb2,
)
from layerscope.server.store import Store

pytestmark = pytest.mark.timeout(300)

PAUSE_ENV = "LAYERSCOPE_TEST_PAUSE_BEFORE_COMMIT"  # test-only hook of the server's store
ACCEPTED_DTYPES = "float32, float64, float16, int64, int32, int16, int8, uint8, bool"
INVALID = grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------------------------
# What the store holds, seen from outside
# ---------------------------------------------------------------------------------------


def referenced_blobs(data_dir: Path) -> dict[str, str]:
    """blob sha256 -> the row that refers to it, read from the catalog (read-only)."""
    uri = f"file:{data_dir / 'catalog.sqlite3'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        rows = [(f"dataset {i}", b) for i, b in db.execute("SELECT id, blob FROM datasets")]
        rows += [(f"model {i}", i) for (i,) in db.execute("SELECT id FROM models")]
        rows += [(f"reference {i}", b)
                 for i, b in db.execute("SELECT id, blob FROM reference_sets")]
    return {blob: what for what, blob in rows}


def blob_files(data_dir: Path) -> dict[str, Path]:
    root = data_dir / "blobs" / "sha256"
    return {p.name: p for p in root.glob("*/*")} if root.exists() else {}


def assert_store_intact(data_dir: Path) -> set[str]:
    """Every row's blob exists and hashes to its name; no blob without a row; no temporary
    upload left. Return the referenced digests."""
    refs = referenced_blobs(data_dir)
    files = blob_files(data_dir)
    for digest, what in refs.items():
        assert digest in files, f"{what}: its blob {digest} is gone"
        got = hashlib.sha256(files[digest].read_bytes()).hexdigest()
        assert got == digest, f"{what}: its blob hashes to {got}, not {digest}"
    leaked = sorted(set(files) - set(refs))
    assert not leaked, f"blobs that no row refers to: {leaked}"
    assert F.tmp_uploads(data_dir) == []
    return set(refs)


# ---------------------------------------------------------------------------------------
# Uploads: bytes that one upload accepts and others reject
# ---------------------------------------------------------------------------------------


def shared_bytes(seed: int, m: int = 2048, d: int = 128) -> tuple[bytes, np.ndarray]:
    """Bytes that are a finite float32 dataset (x (m, d), int64 labels) and, read with x as
    float16 (m, 2d), a dataset holding NaN: the low half of every float32 is 0x7E00 (a
    float16 NaN), the high half a finite float16. Neither is an ONNX model."""
    rng = np.random.default_rng(seed)
    hi = rng.integers(0x3F80, 0x4000, size=(m, d), dtype=np.uint32)
    x = ((hi << 16) | 0x7E00).view(np.float32)
    assert np.isfinite(x).all() and np.isnan(x.view(np.float16)).any()
    labels = (np.arange(m) % 3).astype(np.int64)
    return x.tobytes() + labels.tobytes(), x


def accepted_specs(m: int = 2048, d: int = 128) -> list[tuple[str, str, list[int]]]:
    return [("x", "float32", [m, d]), ("labels", "int64", [m])]


def rejected_specs(m: int = 2048, d: int = 128) -> list[tuple[str, str, list[int]]]:
    return [("x", "float16", [m, 2 * d]), ("labels", "int64", [m])]


def upload_dataset(stubs: F.Stubs, specs: Any, data: bytes, **kw: Any) -> Any:
    return stubs.datasets.UploadDataset(F.dataset_requests(specs, data, **kw), timeout=60)


def upload_model(stubs: F.Stubs, data: bytes, **kw: Any) -> Any:
    return stubs.models.UploadModel(F.model_requests(data, **kw), timeout=60)


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except grpc.RpcError as exc:
        return exc.code()


@pytest.fixture
def server(tmp_path: Path) -> Any:
    with F.ServerProcess(tmp_path / "data") as s:
        yield s
        assert s.alive(), s.log_tail()
        assert s.stop() == 0


@pytest.fixture
def raw(server: F.ServerProcess) -> Any:
    channel = server.channel()
    yield F.stubs(channel)
    channel.close()


@pytest.fixture(scope="module")
def refusing(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One server for the tests of requests that must be refused (nothing stored)."""
    with F.ServerProcess(tmp_path_factory.mktemp("refusing") / "data") as s, \
            s.channel() as channel:
        yield s, F.stubs(channel)
        assert assert_store_intact(s.data_dir) == set()
        assert s.stop() == 0


def test_rejected_uploads_never_delete_the_bytes_of_a_concurrent_accepted_upload(
        server: F.ServerProcess, raw: F.Stubs) -> None:
    rounds = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        for seed in range(30):
            data, _ = shared_bytes(seed)
            start = threading.Barrier(3)

            def go(call: Callable[[], Any], start: threading.Barrier = start) -> Any:
                start.wait()
                return outcome(call)

            futures = [
                pool.submit(go, lambda d=data: upload_dataset(raw, accepted_specs(), d)),
                pool.submit(go, lambda d=data: upload_dataset(raw, rejected_specs(), d)),
                pool.submit(go, lambda d=data: upload_model(raw, d)),
            ]
            rounds.append((hashlib.sha256(data).hexdigest(), *(f.result() for f in futures)))
    # First what was stored (every row's bytes there and intact), then what was answered.
    stored = assert_store_intact(server.data_dir)
    for seed, (_, ok, nan, model) in enumerate(rounds):
        assert isinstance(ok, datasets_pb2.UploadDatasetResponse), (seed, ok)
        assert nan == INVALID and model == INVALID, (seed, nan, model)
    assert stored == {digest for digest, *_ in rounds}
    listed = raw.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest()).datasets
    assert {d.id for d in listed} == {ok.dataset.id for _, ok, *_ in rounds}


def test_a_rejected_upload_while_an_accepted_one_waits_before_its_commit_spares_its_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, str(marker))
    data, _ = shared_bytes(7)
    with F.ServerProcess(tmp_path / "data") as s, s.channel() as channel:
        raw = F.stubs(channel)
        with ThreadPoolExecutor(max_workers=1) as pool:
            ok = pool.submit(upload_dataset, raw, accepted_specs(), data)
            F.wait_until(marker.exists, 30, "the accepted upload to reach its commit")
            assert outcome(lambda: upload_dataset(raw, rejected_specs(), data)) == INVALID
            assert outcome(lambda: upload_model(raw, data)) == INVALID
            marker.unlink()
            stored = ok.result(timeout=30).dataset
        assert stored.n_samples == 2048
        assert assert_store_intact(s.data_dir) == {hashlib.sha256(data).hexdigest()}
        assert s.stop() == 0


def test_deleting_a_dataset_spares_the_bytes_of_an_upload_waiting_before_its_commit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, str(marker))
    data, _ = shared_bytes(8)
    int_specs = [("x", "int32", [2048, 128]), ("labels", "int64", [2048])]
    with F.ServerProcess(tmp_path / "data") as s, s.channel() as channel:
        raw = F.stubs(channel)
        with ThreadPoolExecutor(max_workers=1) as pool:
            first = pool.submit(upload_dataset, raw, accepted_specs(), data)
            F.wait_until(marker.exists, 30, "the first upload to reach its commit")
            marker.unlink()
            old = first.result(timeout=30).dataset
            second = pool.submit(upload_dataset, raw, int_specs, data)  # the same bytes
            F.wait_until(marker.exists, 30, "the second upload to reach its commit")
            raw.datasets.DeleteDataset(datasets_pb2.DeleteDatasetRequest(id=old.id))
            marker.unlink()
            new = second.result(timeout=30).dataset
        assert new.id != old.id
        assert assert_store_intact(s.data_dir) == {hashlib.sha256(data).hexdigest()}
        assert s.stop() == 0


def _corrupt(model: bytes, old: bytes, new: bytes) -> bytes:
    assert model.count(old) >= 1 and len(old) == len(new)
    return model.replace(old, new)


def test_uploads_that_fail_leave_nothing_behind(server: F.ServerProcess, raw: F.Stubs) -> None:
    model = F.tiny_regressor()
    data, _ = shared_bytes(3, m=64, d=8)
    # A model whose node name is not UTF-8 failed with INTERNAL and left its blob behind.
    bad_name = _corrupt(model, b"tanh", b"t\xffnh")
    assert outcome(lambda: upload_model(raw, bad_name)) == INVALID
    assert outcome(lambda: upload_model(raw, model[:-10])) == INVALID  # truncated
    assert outcome(lambda: upload_model(raw, model, sha256="0" * 64)) == INVALID
    assert outcome(lambda: upload_dataset(raw, rejected_specs(64, 8), data)) == INVALID
    # A client that goes away in the middle of an upload.
    release = threading.Event()
    sent = threading.Event()
    messages = list(F.dataset_requests(accepted_specs(64, 8), data, chunk=1024))
    call = raw.datasets.UploadDataset.future(F.held_open(messages[:3], release, sent))
    assert sent.wait(30)
    F.wait_until(lambda: F.tmp_uploads(server.data_dir), 30, "the partial upload on disk")
    call.cancel()
    release.set()
    F.wait_until(lambda: not F.tmp_uploads(server.data_dir), 30, "the partial upload to go")
    assert assert_store_intact(server.data_dir) == set()
    assert raw.models.ListModels(models_pb2.ListModelsRequest()).models == []


# ---------------------------------------------------------------------------------------
# Crashes: kill -9 between the blob and its row, and the sweep at start-up
# ---------------------------------------------------------------------------------------


def test_kill_9_between_the_blob_write_and_the_catalog_commit_leaves_a_store_that_verifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    model = F.tiny_regressor()
    kept, _ = shared_bytes(1, m=256, d=16)
    lost, _ = shared_bytes(2, m=256, d=16)
    with F.ServerProcess(data_dir) as s, s.channel() as channel:
        raw = F.stubs(channel)
        stored_model = upload_model(raw, model).model
        stored = upload_dataset(raw, accepted_specs(256, 16), kept).dataset
        assert s.stop() == 0

    marker = tmp_path / "paused"
    monkeypatch.setenv(PAUSE_ENV, str(marker))
    with F.ServerProcess(data_dir) as s, s.channel() as channel:
        raw = F.stubs(channel)
        pending = raw.datasets.UploadDataset.future(
            F.dataset_requests(accepted_specs(256, 16), lost), timeout=60)
        F.wait_until(marker.exists, 30, "the upload to reach its commit")
        lost_blob = F.blob_path(data_dir, hashlib.sha256(lost).hexdigest())
        assert lost_blob.is_file(), "the blob is written before the row is committed"
        s.kill()
        assert outcome(pending.result) == grpc.StatusCode.UNAVAILABLE
    monkeypatch.delenv(PAUSE_ENV)

    with F.ServerProcess(data_dir) as s, s.channel() as channel:
        raw = F.stubs(channel)
        assert not lost_blob.exists(), "the orphan blob was swept at start-up"
        assert assert_store_intact(data_dir) == {stored_model.id, hashlib.sha256(kept).hexdigest()}
        listed = raw.datasets.ListDatasets(datasets_pb2.ListDatasetsRequest()).datasets
        assert [d.id for d in listed] == [stored.id]
        again = upload_dataset(raw, accepted_specs(256, 16), lost)
        assert not again.already_present
        assert assert_store_intact(data_dir) == {
            stored_model.id, hashlib.sha256(kept).hexdigest(), hashlib.sha256(lost).hexdigest()}
        assert s.stop() == 0


def test_the_sweep_at_start_up_removes_unreferenced_blobs_and_temporary_uploads(
        tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    kept, _ = shared_bytes(4, m=64, d=8)
    with F.ServerProcess(data_dir) as s, s.channel() as channel:
        upload_dataset(F.stubs(channel), accepted_specs(64, 8), kept)
        release, sent = threading.Event(), threading.Event()
        messages = list(F.dataset_requests(accepted_specs(64, 8), shared_bytes(5, 64, 8)[0],
                                           chunk=1024))
        pending = F.stubs(channel).datasets.UploadDataset.future(
            F.held_open(messages[:3], release, sent))
        assert sent.wait(30)
        F.wait_until(lambda: F.tmp_uploads(data_dir), 30, "the partial upload on disk")
        s.kill()  # mid-upload: its temporary file stays
        release.set()
        assert outcome(pending.result) == grpc.StatusCode.UNAVAILABLE
    orphan = b"bytes of an upload whose row was never committed"
    digest = hashlib.sha256(orphan).hexdigest()
    F.blob_path(data_dir, digest).parent.mkdir(parents=True, exist_ok=True)
    F.blob_path(data_dir, digest).write_bytes(orphan)
    assert F.tmp_uploads(data_dir)

    with F.ServerProcess(data_dir) as s:
        assert assert_store_intact(data_dir) == {hashlib.sha256(kept).hexdigest()}
        assert s.stop() == 0


# ---------------------------------------------------------------------------------------
# Limits on strings, text that is not UTF-8, dtypes
# ---------------------------------------------------------------------------------------


def _spec_header(**kw: Any) -> analysis_pb2.ComputeIndicesRequest:
    return analysis_pb2.ComputeIndicesRequest(header=analysis_pb2.ComputeIndicesHeader(**kw))


LONG = 5000
OVERLONG: dict[str, tuple[str, str, Callable[[F.Stubs, str], Any]]] = {
    # case: (field path in the message, limit, call with the long string)
    "model name": ("header.name", "1024", lambda r, s: upload_model(
        r, F.tiny_regressor(), name=s)),
    "dataset name": ("header.name", "1024", lambda r, s: upload_dataset(
        r, accepted_specs(4, 2), bytes(4 * 2 * 4 + 4 * 8), name=s)),
    "tensor name": ("header.tensors[0].name", "1024", lambda r, s: upload_dataset(
        r, [(s, "float32", [4, 2]), ("labels", "int64", [4])], bytes(64))),
    "model id": ("id", "128", lambda r, s: r.models.GetModel(
        models_pb2.GetModelRequest(id=s), timeout=30)),
    "dataset id": ("id", "128", lambda r, s: r.datasets.DeleteDataset(
        datasets_pb2.DeleteDatasetRequest(id=s), timeout=30)),
    "job id": ("id", "128", lambda r, s: r.analysis.CancelJob(
        analysis_pb2.CancelJobRequest(id=s), timeout=30)),
    "layer pattern": ("layers[1]", "1024", lambda r, s: r.analysis.StartLayerAnalysis(
        analysis_pb2.StartLayerAnalysisRequest(model_id="0" * 64, dataset_id="0" * 64,
                                               layers=["auto", s]), timeout=30)),
    "reduce": ("reduce", "64", lambda r, s: r.analysis.StartLayerAnalysis(
        analysis_pb2.StartLayerAnalysisRequest(model_id="0" * 64, dataset_id="0" * 64,
                                               reduce=s), timeout=30)),
    "ranking layer key": ("layers key", "128", lambda r, s: r.analysis.StartRanking(
        analysis_pb2.StartRankingRequest(model_ids=["0" * 64], dataset_id="0" * 64,
                                         layers={s: "x"}), timeout=30)),
    "reference layer": ("layer", "1024", lambda r, s: r.analysis.BuildReference(
        analysis_pb2.BuildReferenceRequest(model_id="0" * 64, dataset_id="0" * 64, layer=s),
        timeout=30)),
    "criterion": ("header.options.criterion", "64", lambda r, s: r.analysis.ComputeIndices(
        iter([_spec_header(options=analysis_pb2.IndexOptions(criterion=s))]), timeout=30)),
    "certify mode": ("mode", "64", lambda r, s: r.analysis.Certify(
        analysis_pb2.CertifyRequest(reference_id="0" * 64, mode=s), timeout=30)),
    "certify input name": ("inputs.tensors key", "1024", lambda r, s: r.analysis.Certify(
        analysis_pb2.CertifyRequest(reference_id="0" * 64, inputs=analysis_pb2.QueryInputs(
            tensors={s: common_pb2.Tensor(dtype="float32")})), timeout=30)),
}


@pytest.mark.parametrize("case", list(OVERLONG))
def test_every_string_field_has_a_limit_named_in_the_error(refusing: Any, case: str) -> None:
    _, raw = refusing
    field, limit, call = OVERLONG[case]
    code, details = F.code_of(lambda: call(raw, "n" * LONG))
    assert code == INVALID, (code, details[:200])
    assert details.startswith(f"{field} is {LONG} characters long"), details[:200]
    assert f"at most {limit}" in details
    assert len(details) < 500, "the error does not echo the long value"


def test_a_display_name_of_megabytes_is_refused_and_list_models_keeps_working(
        server: F.ServerProcess, raw: F.Stubs) -> None:
    model = F.tiny_regressor()
    code, details = F.code_of(lambda: upload_model(raw, model, name="m" * (4 << 20)))
    assert code == INVALID and "header.name" in details
    ok = upload_model(raw, model, name="m" * 1024).model
    listed = raw.models.ListModels(models_pb2.ListModelsRequest(), timeout=30).models
    assert [(m.id, m.name) for m in listed] == [(ok.id, "m" * 1024)]
    assert assert_store_intact(server.data_dir) == {ok.id}


def test_a_model_with_a_tensor_name_beyond_the_limit_is_refused(refusing: Any) -> None:
    server, raw = refusing
    model = onnx.load_from_string(F.tiny_regressor())
    model.graph.node[0].output[0] = "h" * 2000
    model.graph.node[1].input[0] = "h" * 2000
    code, details = F.code_of(lambda: upload_model(raw, model.SerializeToString()))
    assert code == INVALID
    assert "graph.node[0].output[0] is 2000 characters long" in details
    assert "at most 1024" in details
    assert assert_store_intact(server.data_dir) == set()


@pytest.mark.parametrize("where", ["node name", "tensor name", "doc string", "metadata"])
def test_a_model_whose_text_is_not_utf8_is_refused_naming_the_field(
        refusing: Any, where: str) -> None:
    server, raw = refusing
    model = onnx.load_from_string(F.tiny_regressor())
    model.doc_string = "DOCSTRING"
    onnx.helper.set_model_props(model, {"author": "AUTHOR"})
    old, new, path = {
        "node name": (b"tanh", b"t\xffnh", "graph.node[1].name"),
        "tensor name": (b"hidden", b"hid\xe9en", "graph.node[0].output[0]"),
        "doc string": (b"DOCSTRING", b"DOC\xc3\x28RING", "doc_string"),
        "metadata": (b"AUTHOR", b"AU\x80HOR", "metadata_props[0].value"),
    }[where]
    data = _corrupt(model.SerializeToString(), old, new)
    code, details = F.code_of(lambda: upload_model(raw, data))
    assert code == INVALID, (code, details)
    assert f"{path} is not valid UTF-8" in details
    assert assert_store_intact(server.data_dir) == set()


def test_request_text_that_is_not_utf8_gets_invalid_argument(refusing: Any) -> None:
    with refusing[0].channel() as channel:
        get = channel.unary_unary("/layerscope.v1.Models/GetModel",
                                  request_serializer=lambda b: b,
                                  response_deserializer=models_pb2.Model.FromString)
        code, details = F.code_of(lambda: get(b"\x0a\x02\xff\xfe", timeout=30))  # id = ff fe
        assert code == INVALID and "UTF-8" in details, (code, details)
        upload = channel.stream_unary("/layerscope.v1.Datasets/UploadDataset",
                                      request_serializer=lambda b: b,
                                      response_deserializer=datasets_pb2.Dataset.FromString)
        header = b"\x0a\x04\x0a\x02\xc3\x28"  # header { name: c3 28 }
        code, details = F.code_of(lambda: upload(iter([header]), timeout=30))
        assert code == INVALID and "UTF-8" in details, (code, details)


UNSUPPORTED = ["float128", "longdouble", "complex64", "complex128", "object", "O",
               "datetime64[ns]", "timedelta64", "V8", "S4", "U2", ">f4", "<f4", ">i8", "f8",
               "float", "uint64"]


@pytest.mark.parametrize("dtype", UNSUPPORTED)
def test_unsupported_dtypes_are_refused_listing_the_accepted_ones(
        refusing: Any, dtype: str) -> None:
    server, raw = refusing
    x = np.zeros((8, 2), np.float64).tobytes()  # 8 bytes per item, like most of the above
    labels = np.arange(8, dtype=np.int64).tobytes()
    specs = [("features", dtype, [8, 2]), ("labels", "int64", [8])]
    calls = {
        "UploadDataset": lambda: upload_dataset(
            raw, [("x", dtype, [8, 2]), ("labels", "int64", [8])], x + labels),
        "ComputeIndices": lambda: raw.analysis.ComputeIndices(iter(
            [_spec_header(tensors=[common_pb2.TensorSpec(name=n, dtype=d, shape=s)
                                   for n, d, s in specs]),
             analysis_pb2.ComputeIndicesRequest(chunk=common_pb2.Chunk(offset=0,
                                                                       data=x + labels))]),
            timeout=30),
        "Certify": lambda: raw.analysis.Certify(analysis_pb2.CertifyRequest(
            reference_id="0" * 64, features=common_pb2.Tensor(dtype=dtype, shape=[8, 2],
                                                              data=x)), timeout=30),
    }
    for name, call in calls.items():
        code, details = F.code_of(call)
        assert code == INVALID, (name, code, details)
        assert ACCEPTED_DTYPES in details, (name, details)
    assert assert_store_intact(server.data_dir) == set()


# ---------------------------------------------------------------------------------------
# Files and permissions
# ---------------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for p in root.rglob("*"):
        out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def assert_private(root: Path) -> None:
    wrong = {name: f"{mode:04o}" for name, mode in modes(root).items()
             if mode != (0o700 if (root / name).is_dir() else 0o600)}
    assert not wrong, f"not 0700 (folders) / 0600 (files): {wrong}"


def test_the_data_directory_and_every_file_in_it_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    stray = data_dir / "notes.txt"  # from before: made private at start
    stray.write_text("x")
    os.chmod(stray, 0o644)
    data, _ = shared_bytes(6, m=64, d=8)
    with F.ServerProcess(data_dir) as s, s.channel() as channel:
        raw = F.stubs(channel)
        upload_model(raw, F.tiny_regressor())
        upload_dataset(raw, accepted_specs(64, 8), data)
        names = set(modes(data_dir))
        assert {"catalog.sqlite3", "catalog.sqlite3-wal", "catalog.sqlite3-shm",
                "server.lock", "server.json", "notes.txt"} <= names, names
        assert len(blob_files(data_dir)) == 2
        assert_private(data_dir)
        assert s.stop() == 0
    assert_private(data_dir)


def _serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layerscope.server.api", "--host", "127.0.0.1", "--port", "0",
         "--data-dir", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_token_file_others_can_read_or_change_is_refused_saying_how_to_fix_it(
        tmp_path: Path, mode: int) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("a-secret-token\n")
    os.chmod(tokens, mode)
    done = _serve(tmp_path, "--token-file", str(tokens))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"chmod 600 {tokens}" in done.stderr
    assert f"{mode:04o}" in done.stderr
    assert "layerscope serving" not in done.stdout


def test_a_tls_key_others_can_read_is_refused(tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    cert.write_text("not read: the key is refused first")
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    os.chmod(key, 0o644)
    done = _serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"chmod 600 {key}" in done.stderr


# ---------------------------------------------------------------------------------------
# The store in process (real SQLite, real files)
# ---------------------------------------------------------------------------------------


def test_a_replaced_reference_leaves_no_bytes_behind(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    row = {"id": "r" * 64, "model_id": "m" * 64, "dataset_id": "d" * 64,
           "specs": [], "info": {}}
    try:
        store.add_reference(b"features of the first build", row)
        store.add_reference(b"features of the second build", row)
        assert assert_store_intact(tmp_path / "data") == {
            hashlib.sha256(b"features of the second build").hexdigest()}
    finally:
        store.close()
