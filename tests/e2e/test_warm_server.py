"""The warm embedded server of the command line: started by the first command, reused by the
next, stopped when idle or by ``layerscope serve --stop``, replaced when it crashed or runs
other code; uploads of what the server already holds send nothing.

Every test runs the real CLI in child processes on its own data directory and stops what it
started (the session's other tests run with ``LAYERSCOPE_KEEP_WARM=0``, see conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from helpers import server as F

from layerscope.client import Client
from layerscope.client.server_process import exited, stop_server
from layerscope.protos.stubs import analysis_pb2, common_pb2

CLI = [sys.executable, "-m", "layerscope.client.cli"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def announced(data: Path) -> dict[str, Any]:
    return json.loads((data / "server.json").read_text())


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    """A data directory whose server, if any is left, is stopped at the end."""
    folder = tmp_path / "data"
    yield folder
    stop_server(folder, timeout=30)


@pytest.fixture(scope="module")
def train(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A small labelled set and its indices computed by the reference (no server)."""
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 1, (60, 5)), rng.normal(0.8, 1, (60, 5))])
    y = np.repeat([0, 1], 60)
    path = tmp_path_factory.mktemp("warm") / "train.npz"
    np.savez(path, features=x.astype(np.float32), labels=y)
    return path, {"si": F.brute_si(x.astype(np.float32).astype(np.float64), y)}


def without_clock(result: dict[str, Any]) -> dict[str, Any]:
    """The result without the time it took (its only part that may differ run to run)."""
    return {**result, "options": {k: v for k, v in result["options"].items()
                                  if k != "seconds"}}


def indices(train: Path, data: Path, *extra: str) -> dict[str, Any]:
    proc = cli("indices", str(train), "--json", "--data-dir", str(data), *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_second_command_reuses_the_warm_server_and_serve_stop_ends_it(train, data):
    path, want = train
    first = indices(path, data, "--keep-warm", "120")
    assert first["si"] == pytest.approx(want["si"], abs=1e-12)
    info = announced(data)
    assert not exited(info["pid"]), "the server outlives the command that started it"
    assert info["idle_timeout_s"] == 120.0
    second = indices(path, data, "--keep-warm", "120")
    assert without_clock(second) == without_clock(first)
    assert announced(data)["pid"] == info["pid"], "the second command reused the server"

    stop = cli("serve", "--stop", "--data-dir", str(data))
    assert stop.returncode == 0, stop.stderr
    assert f"pid {info['pid']}" in stop.stdout
    assert F.wait_until(lambda: exited(info["pid"]), 30, "the stopped server to exit")
    assert not (data / "server.json").exists(), "a clean stop withdraws server.json"
    again = cli("serve", "--stop", "--data-dir", str(data))
    assert again.returncode == 0 and "no layerscope server holds" in again.stdout


def test_a_command_sends_an_npz_without_importing_numpy(tmp_path, data):
    """The command's own process reads the .npz and sends its arrays as their bytes: NumPy
    (0.1 s of a command's start) is never imported there; the numbers are the reference's,
    for a test set too."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=(90, 6)).astype(np.float32)
    y = rng.integers(0, 3, 90).astype(np.int16)
    tx = rng.normal(size=(40, 6)).astype(np.float32)
    ty = rng.integers(0, 3, 40).astype(np.int16)
    np.savez(tmp_path / "train.npz", features=x, labels=y)
    np.savez(tmp_path / "test.npz", features=tx, labels=ty)
    report = tmp_path / "modules.txt"
    run = ("import atexit, sys\n"
           "from layerscope.client.cli import main\n"
           f"atexit.register(lambda: open({str(report)!r}, 'w').write(' '.join(sys.modules)))\n"
           "main()\n")
    proc = subprocess.run([sys.executable, "-c", run, "indices", str(tmp_path / "train.npz"),
                           "--test", str(tmp_path / "test.npz"), "--json", "--data-dir",
                           str(data), "--keep-warm", "120"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    x64 = x.astype(np.float64)
    assert out["si"] == pytest.approx(F.brute_si(x64, y), abs=1e-12)
    assert out["cross"]["si"] == pytest.approx(
        F.brute_si(x64, y, tx.astype(np.float64), ty), abs=1e-12)
    loaded = report.read_text().split()
    assert "layerscope.client.cli" in loaded and "grpc" in loaded
    assert "numpy" not in loaded


def _open_stream(address: str, release: threading.Event, opened: threading.Event
                 ) -> threading.Thread:
    """A ComputeIndices call that sends its header and then waits for ``release``: a long
    call under way, as far as the server can tell."""
    x = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 0, 1], np.int64)
    header = analysis_pb2.ComputeIndicesHeader(tensors=[
        common_pb2.TensorSpec(name="features", dtype="float32", shape=[4, 2]),
        common_pb2.TensorSpec(name="labels", dtype="int64", shape=[4])])
    chunk = common_pb2.Chunk(offset=0, data=x.tobytes() + y.tobytes())

    def requests() -> Iterator[Any]:
        yield analysis_pb2.ComputeIndicesRequest(header=header)
        opened.set()
        release.wait(120)
        yield analysis_pb2.ComputeIndicesRequest(chunk=chunk)

    def run() -> None:
        with grpc.insecure_channel(address) as channel:
            F.stubs(channel).analysis.ComputeIndices(requests(), timeout=120)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_idle_server_stops_itself_but_not_while_a_call_is_under_way(train, data):
    path, _ = train
    indices(path, data, "--keep-warm", "1")
    info = announced(data)
    release, opened = threading.Event(), threading.Event()
    call = _open_stream(info["address"], release, opened)
    assert opened.wait(30)
    time.sleep(3)  # three idle timeouts: a server that ignored the open call would be gone
    assert not exited(info["pid"]), "the server stopped during a call"
    release.set()
    call.join(60)
    assert F.wait_until(lambda: exited(info["pid"]), 60, "the idle server to stop itself")
    assert not (data / "server.json").exists()
    assert "idle for 1 s: shutting down" in (data / "server.log").read_text()


def test_crashed_server_is_replaced(train, data):
    path, want = train
    indices(path, data, "--keep-warm", "120")
    dead = announced(data)["pid"]
    os.kill(dead, signal.SIGKILL)
    F.wait_until(lambda: exited(dead), 30, "the killed server to die")
    assert (data / "server.json").exists(), "a killed server leaves its server.json behind"
    out = indices(path, data, "--keep-warm", "120")
    assert out["si"] == pytest.approx(want["si"], abs=1e-12)
    assert announced(data)["pid"] != dead


def test_warm_server_of_other_code_or_device_is_replaced(train, data):
    path, _ = train
    indices(path, data, "--keep-warm", "120")
    old = announced(data)
    stale = dict(old, version="0.0.0+elsewhere")
    (data / "server.json").write_text(json.dumps(stale))
    indices(path, data, "--keep-warm", "120")
    assert F.wait_until(lambda: exited(old["pid"]), 30, "the outdated server to stop")
    new = announced(data)
    assert new["pid"] != old["pid"] and new["version"] == old["version"]
    # another device asked for: replaced too (cpu works on every machine)
    indices(path, data, "--keep-warm", "120", "--device", "cpu")
    assert F.wait_until(lambda: exited(new["pid"]), 30, "the server of another device to stop")
    assert announced(data)["device"] == "cpu"


def test_server_started_by_hand_is_used_as_it_is(train, data):
    path, want = train
    with F.ServerProcess(data, "--device", "auto") as s:
        pid = announced(data)["pid"]
        out = indices(path, data, "--keep-warm", "120", "--device", "cpu")
        assert out["si"] == pytest.approx(want["si"], abs=1e-12)
        assert announced(data)["pid"] == pid, "a server started by hand is never replaced"
        assert s.stop() == 0


def test_commands_started_together_share_one_server(train, data):
    path, _ = train
    procs = [subprocess.Popen([*CLI, "indices", str(path), "--json", "--data-dir", str(data),
                               "--keep-warm", "120"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e for _, e in outs]
    assert len({json.dumps(without_clock(json.loads(o))) for o, _ in outs}) == 1
    log = (data / "server.log").read_text()
    assert log.count("layerscope serving on") == 1, log


def test_stale_announcement_of_a_reused_pid_is_left_alone(train, data):
    path, _ = train
    data.mkdir(parents=True)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (data / "server.json").write_text(json.dumps(
            {"pid": bystander.pid, "address": "127.0.0.1:1", "version": "0",
             "package": "", "device": "", "idle_timeout_s": 300.0}))
        stop = cli("serve", "--stop", "--data-dir", str(data))
        assert stop.returncode == 0 and "no layerscope server holds" in stop.stdout
        indices(path, data, "--keep-warm", "120")
        assert bystander.poll() is None, "a process that is not the server was signalled"
        assert announced(data)["pid"] != bystander.pid
    finally:
        bystander.kill()
        bystander.wait()


def test_keep_warm_zero_stops_the_server_with_the_command(train, data):
    path, _ = train
    indices(path, data, "--keep-warm", "0")
    assert not (data / "server.json").exists()
    bad = cli("indices", str(path), "--data-dir", str(data), "--keep-warm", "soon")
    assert bad.returncode == 2 and "--keep-warm" in bad.stderr and "'soon'" in bad.stderr


class _Count(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):
    """Counts the calls of each method a channel makes."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def _seen(self, details: Any) -> None:
        self.calls[details.method] = self.calls.get(details.method, 0) + 1

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        self._seen(details)
        return continuation(details, request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        self._seen(details)
        return continuation(details, requests)


def test_upload_of_what_the_server_holds_sends_nothing(tmp_path):
    from layerscope.protos.stubs import datasets_pb2_grpc, models_pb2_grpc

    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 6)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    model = F.tiny_regressor()
    with F.ServerProcess(tmp_path / "data") as s:
        client = Client(s.address)
        count = _Count()
        channel = grpc.intercept_channel(client._channel, count)
        client._datasets = datasets_pb2_grpc.DatasetsStub(channel)
        client._models = models_pb2_grpc.ModelsStub(channel)
        first = client.upload_dataset({"x": x}, labels=y)
        again = client.upload_dataset({"x": x.copy()}, labels=y.copy(), name="other name")
        assert again.id == first.id and again.name == first.name
        assert count.calls["/layerscope.v1.Datasets/UploadDataset"] == 1
        assert count.calls["/layerscope.v1.Datasets/GetDataset"] == 2
        changed = client.upload_dataset({"x": x[:49]}, labels=y[:49])
        assert changed.id != first.id
        assert count.calls["/layerscope.v1.Datasets/UploadDataset"] == 2
        # a data file streamed from disk (the command line's path) asks first too
        np.savez(tmp_path / "train.npz", x=x[:40], labels=y[:40])
        from_file = client.upload_file(tmp_path / "train.npz")
        again_file = client.upload_file(tmp_path / "train.npz")
        assert again_file.id == from_file.id
        assert count.calls["/layerscope.v1.Datasets/UploadDataset"] == 3
        m1 = client.upload_model(model)
        m2 = client.upload_model(model)
        assert m1.id == m2.id
        assert count.calls["/layerscope.v1.Models/UploadModel"] == 1
        client.close()
