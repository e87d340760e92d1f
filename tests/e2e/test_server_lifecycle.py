"""End-to-end tests of the server's life cycle on one data directory: graceful restart,
SIGTERM and SIGKILL in the middle of a job or an upload, and the embedded server of
``Client.local``. Every test starts its own real server processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import server as F

from layerscope.client.client import Client

pytestmark = pytest.mark.timeout(150)


@pytest.fixture(scope="module")
def mlp() -> F.Classifier:
    return F.digits_mlp(n_train=600)


@pytest.fixture(scope="module")
def slow() -> F.SlowJob:
    return F.slow_job()


def test_restart_keeps_models_datasets_and_finished_jobs(tmp_path: Path,
                                                         mlp: F.Classifier) -> None:
    data = tmp_path / "data"
    with F.ServerProcess(data) as first:
        with first.client() as c:
            model = c.upload_model(mlp.onnx_bytes, name="mlp")
            train = c.upload_dataset({mlp.input_name: mlp.x}, labels=mlp.y, name="train")
            test = c.upload_dataset({mlp.input_name: mlp.xt}, labels=mlp.yt, name="test")
            job = c.start_layer_analysis(model, train, test, orders=[1, 3])
            final = list(c.watch(job))[-1]
            assert final.state == "succeeded", final.message
            before = {
                "model": c.get_model(model.id), "datasets": sorted(d.id for d in c.datasets()),
                "jobs": [(j.id, j.state) for j in c.jobs()], "result": final.result.to_dict(),
            }
        info = json.loads((data / "server.json").read_text())
        assert info["pid"] == first.pid and info["address"] == first.address
        assert first.stop() == 0
    assert not (data / "server.json").exists(), "a clean stop removes server.json"

    with F.ServerProcess(data) as second, second.client() as c:
        again = c.job(job.id)
        assert again.state == "succeeded"
        assert again.result is not None
        assert again.result.to_dict() == before["result"]
        assert again.finished == final.finished and again.started == final.started
        assert [(j.id, j.state) for j in c.jobs()] == before["jobs"]
        assert c.get_model(model.id) == before["model"]
        assert sorted(d.id for d in c.datasets()) == before["datasets"]
        assert c.get_dataset(train.id).n_samples == len(mlp.x)
        # the restarted server runs new jobs on the stored model and data
        job2 = c.start_layer_analysis(model.id, train.id, test.id, orders=[1, 3])
        final2 = list(c.watch(job2))[-1]
        assert final2.state == "succeeded", final2.message
        assert final2.result.to_dict()["layers"] == before["result"]["layers"]
        assert second.stop() == 0


def test_sigterm_mid_job_marks_it_interrupted(tmp_path: Path, slow: F.SlowJob) -> None:
    data = tmp_path / "data"
    with F.ServerProcess(data) as server, server.client() as c:
        _, _, job = F.start_slow(c, slow)
        watched: list[Any] = []
        errors: list[BaseException] = []

        def watch() -> None:
            try:
                watched.extend(c.watch(job))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        t = threading.Thread(target=watch, daemon=True)
        t.start()
        F.wait_extracting(c, job.id)
        t0 = time.monotonic()
        assert server.stop(timeout=30) == 0, server.log_tail()
        assert time.monotonic() - t0 < 10, "the running job stops at its next batch"
        t.join(15)
        assert not t.is_alive(), "WatchJob did not end when the server shut down"
    assert not errors, errors
    assert watched and watched[-1].state == "interrupted", [w.state for w in watched]
    assert "shut down" in watched[-1].message
    with F.ServerProcess(data) as again, again.client() as c:
        j = c.job(job.id)
        assert j.state == "interrupted", (j.state, j.message)
        assert "shut down" in j.message
        assert j.finished > 0 and j.result is None
        assert not [x for x in c.jobs() if x.state in ("queued", "running")]


def test_kill_9_mid_job_then_restart_reports_interrupted(tmp_path: Path,
                                                         slow: F.SlowJob) -> None:
    data = tmp_path / "data"
    with F.ServerProcess(data) as server, server.client() as c:
        model, ds, job = F.start_slow(c, slow)
        queued = c.start_layer_analysis(model, ds, layers=list(slow.layers), batch_size=1)
        running = F.wait_extracting(c, job.id)
        assert running.state == "running"
        assert c.job(queued.id).state == "queued"
        server.kill()
    assert server.proc.returncode == -9
    # the dead server's files are still there: a lock file and a stale server.json
    assert (data / "server.json").exists()

    with F.ServerProcess(data) as again, again.client() as c:
        for jid in (job.id, queued.id):
            j = c.job(jid)
            assert j.state == "interrupted", (jid, j.state, j.message)
            assert j.message, "an interrupted job says why"
            assert j.result is None
        assert not [x for x in c.jobs() if x.state in ("queued", "running")]
        info = json.loads((data / "server.json").read_text())
        assert info["pid"] == again.pid
        # the interrupted job can be started again, and be cancelled
        assert c.get_model(model.id).id == model.id
        retry = c.start_layer_analysis(model, ds, layers=list(slow.layers), batch_size=1,
                                       indices=["si"], orders=[1])
        F.wait_extracting(c, retry.id)
        c.cancel(retry)
        end = F.wait_until(lambda: (j := c.job(retry.id)).done and j, 10, "the cancel")
        assert end.state == "cancelled"
        assert again.stop() == 0


def test_kill_9_mid_upload_leaves_no_partial_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    x = np.random.default_rng(0).standard_normal((4096, 256)).astype(np.float32)
    y = (np.arange(4096) % 2).astype(np.int64)
    specs = [("features", "float32", [4096, 256]), ("labels", "int64", [4096])]
    msgs = list(F.dataset_requests(specs, x.tobytes() + y.tobytes()))
    release, sent = threading.Event(), threading.Event()
    with F.ServerProcess(data) as server:
        channel = server.channel()
        raw = F.stubs(channel)
        future = raw.datasets.UploadDataset.future(F.held_open(msgs[:2], release, sent),
                                                   timeout=60)
        try:
            assert sent.wait(10)
            F.wait_until(lambda: F.tmp_uploads(data), 10, "the upload's temporary file")
            server.kill()
        finally:
            release.set()
        assert future.exception(timeout=20) is not None
        channel.close()
    assert F.tmp_uploads(data), "the killed server left its partial upload behind"
    with F.ServerProcess(data) as again, again.client() as c:
        assert F.tmp_uploads(data) == [], "a starting server removes stale partial uploads"
        assert c.datasets() == []
        assert not [p for p in (data / "blobs").rglob("*") if p.is_file()]
        assert again.stop() == 0


def test_second_server_on_a_busy_data_dir_refuses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with F.ServerProcess(data) as first:
        with pytest.raises(RuntimeError, match="did not start"):
            F.ServerProcess(data, startup_timeout=20)
        log = (tmp_path / "data-server.log").read_text()
        assert "in use" in log
        assert first.alive()
        with first.client() as c:
            assert c.models() == []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_client_local_starts_reuses_and_stops_embedded_server(tmp_path: Path) -> None:
    folder = tmp_path / "home"
    model = F.tiny_regressor(seed=4)
    first = Client.local(folder, startup_timeout=60)
    pid = None
    try:
        info = json.loads((folder / "server.json").read_text())
        pid = int(info["pid"])
        assert info["address"] == first.address
        assert first.address.startswith("127.0.0.1:")
        assert _pid_alive(pid)
        stored = first.upload_model(model, name="tiny")

        second = Client.local(folder, startup_timeout=60)
        try:
            assert second.address == first.address, "the running server is reused"
            assert json.loads((folder / "server.json").read_text())["pid"] == pid
            assert [m.id for m in second.models()] == [stored.id]
        finally:
            second.close()
        # closing the client that only connected leaves the server running
        assert _pid_alive(pid)
        assert [m.id for m in first.models()] == [stored.id]
    finally:
        first.close()
    assert pid is not None
    F.wait_until(lambda: not _pid_alive(pid), 30, "the embedded server to stop")
    assert not (folder / "server.json").exists()

    # a new local client starts a fresh server that sees the stored model
    third = Client.local(folder, startup_timeout=60)
    try:
        pid3 = int(json.loads((folder / "server.json").read_text())["pid"])
        assert pid3 != pid
        assert [m.id for m in third.models()] == [stored.id]
    finally:
        third.close()
    F.wait_until(lambda: not _pid_alive(pid3), 30, "the second embedded server to stop")
