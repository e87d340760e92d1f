"""The Prometheus endpoint of ``layerscope serve --metrics-port``: a real server, real uploads
and jobs, scraped over HTTP during and after a job and read with prometheus_client's own text
parser; every count is the number of calls and jobs this test made."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from helpers import server as F

pytestmark = pytest.mark.timeout(300)
parser = pytest.importorskip("prometheus_client.parser",
                             reason="the metrics extra (prometheus_client) is not installed")

UPLOAD = "/layerscope.v1.Datasets/UploadDataset"
START = "/layerscope.v1.Analysis/StartLayerAnalysis"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[F.ServerProcess]:
    with F.ServerProcess(tmp_path / "data", "--metrics-port", "0") as srv:
        yield srv


def metrics_url(server: F.ServerProcess) -> str:
    found = re.search(r"layerscope metrics on (http://127\.0\.0\.1:\d+/metrics)",
                      server.log.read_text())
    assert found, server.log_tail()
    return found.group(1)


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the endpoint: (name, labels) -> value."""
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in parser.text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def blob_bytes(data_dir: Path) -> int:
    return sum(p.stat().st_size for p in (data_dir / "blobs" / "sha256").glob("??/*"))


def test_scrapes_during_and_after_a_job_count_what_the_clients_did(server, tmp_path):
    url = metrics_url(server)
    client = server.client()
    slow = F.slow_job()
    rng = np.random.default_rng(0)
    n_small, n_test = 150, 50
    xs = rng.standard_normal((n_small, 64)).astype(np.float32)
    xt = rng.standard_normal((n_test, 64)).astype(np.float32)
    small_train = client.upload_dataset({"x": xs}, labels=np.arange(n_small) % 4)
    small_test = client.upload_dataset({"x": xt}, labels=np.arange(n_test) % 4)
    # one UploadDataset refused: a float labels tensor is not a label
    x = np.zeros((10, 4), np.float32)
    code, _ = F.code_of(lambda: F.stubs(server.channel()).datasets.UploadDataset(
        F.dataset_requests([("x", "float32", [10, 4]), ("labels", "float32", [10])],
                           x.tobytes() + x[:, 0].tobytes()), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT

    model, _, running = F.start_slow(client, slow)  # the third UploadDataset
    F.wait_extracting(client, running.id)
    queued = client.start_layer_analysis(model, small_train, small_test, layers=["pooled"],
                                         batch_size=50, indices=["si"], orders=[1])

    during = scrape(url)
    assert value(during, "layerscope_jobs_running") == 1
    assert value(during, "layerscope_jobs_queued") == 1
    assert value(during, "layerscope_grpc_requests_total", method=UPLOAD, code="OK") == 3
    assert value(during, "layerscope_grpc_requests_total", method=UPLOAD,
                 code="INVALID_ARGUMENT") == 1
    assert value(during, "layerscope_grpc_requests_total", method=START, code="OK") == 2
    assert value(during, "layerscope_jobs_total", kind="layer_analysis",
                 state="succeeded") is None
    assert value(during, "layerscope_store_bytes") == blob_bytes(server.data_dir)

    client.cancel(running)
    done = client.wait(queued)
    assert "pooled" in [la["name"] for la in done.layers]
    assert client.job(running).state == "cancelled"

    after = scrape(url)
    assert value(after, "layerscope_jobs_total", kind="layer_analysis", state="succeeded") == 1
    assert value(after, "layerscope_jobs_total", kind="layer_analysis", state="cancelled") == 1
    assert value(after, "layerscope_job_duration_seconds_count", kind="layer_analysis",
                 state="succeeded") == 1
    assert value(after, "layerscope_jobs_running") == 0
    assert value(after, "layerscope_jobs_queued") == 0
    # the cancelled job never finished a set; the small one ran its train and test sets
    assert value(after, "layerscope_extracted_samples_total") == n_small + n_test
    assert value(after, "layerscope_extraction_samples_per_second") > 0
    assert value(after, "layerscope_grpc_request_duration_seconds_count", method=UPLOAD) == 4
    assert value(after, "layerscope_grpc_requests_total",
                 method="/layerscope.v1.Analysis/CancelJob", code="OK") == 1
    assert value(after, "layerscope_store_bytes") == blob_bytes(server.data_dir)
    assert value(after, "layerscope_gpu_memory_used_bytes") is None, "no CuPy on this run"


def test_a_refused_token_is_counted_with_its_code(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("secret\n")
    tokens.chmod(0o600)
    with F.ServerProcess(tmp_path / "data", "--metrics-port", "0", "--token-file",
                         str(tokens)) as srv:
        url = metrics_url(srv)
        err = F.client_error(lambda: srv.client(token="wrong").datasets())
        assert err.code == "PERMISSION_DENIED"
        assert srv.client(token="secret").datasets() == []
        got = scrape(url)
    method = "/layerscope.v1.Datasets/ListDatasets"
    assert value(got, "layerscope_grpc_requests_total", method=method,
                 code="PERMISSION_DENIED") == 1
    assert value(got, "layerscope_grpc_requests_total", method=method, code="OK") == 1


def test_a_non_loopback_metrics_host_needs_insecure(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "layerscope.server.api", "--port", "0", "--data-dir",
         str(tmp_path / "data"), "--metrics-port", "0", "--metrics-host", "0.0.0.0"],
        capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr
    assert "--metrics-host 0.0.0.0 is not a loopback address" in proc.stderr
    assert "--insecure" in proc.stderr
