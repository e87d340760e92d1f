"""TLS: a server started with --tls-cert/--tls-key serves clients that trust its CA, and
refuses a plaintext client."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from helpers import server as F

from layerscope.client.client import Client, LayerscopeError

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("openssl") is None,
                       reason="the openssl command makes the test certificate"),
]


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "server.crt", folder / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    key.chmod(0o600)  # the server refuses a private key that others can read
    return cert, key


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, certificate):
    cert, key = certificate
    server = F.ServerProcess(tmp_path_factory.mktemp("tls-data") / "data",
                             "--tls-cert", str(cert), "--tls-key", str(key))
    yield server
    server.stop()


def test_a_client_that_trusts_the_certificate_computes_indices(tls_server, certificate):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    with Client(tls_server.address, root_certificates=certificate[0].read_bytes(),
                timeout=30) as client:
        result = client.compute_indices(x, y, orders=[1])
    assert result["si"] == pytest.approx(F.brute_si(x, y), abs=0)


def test_a_plaintext_client_is_refused(tls_server):
    with Client(tls_server.address, timeout=5) as client, pytest.raises(LayerscopeError) as info:
        client.models()
    assert info.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import sys

    return subprocess.run([sys.executable, "-m", "layerscope.client.cli", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_cli_reaches_a_tls_server_with_tls_ca(tls_server, certificate, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    proc = _cli("indices", str(tmp_path / "d.npz"), "--json", "--server", tls_server.address,
                "--tls-ca", str(certificate[0]))
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["si"] == pytest.approx(F.brute_si(x, y), abs=0)
    listed = _cli("models", "--server", tls_server.address, "--tls-ca", str(certificate[0]),
                  "--tls-server-name", "127.0.0.1")
    assert listed.returncode == 0, listed.stderr


def test_the_cli_names_a_tls_ca_that_is_no_certificate(tls_server, tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    proc = _cli("models", "--server", tls_server.address, "--tls-ca", str(bad))
    assert proc.returncode == 2
    assert f"{bad}: holds no PEM certificate" in proc.stderr and "Traceback" not in proc.stderr
    proc = _cli("models", "--tls-ca", str(bad))
    assert proc.returncode == 2 and "--server HOST:PORT" in proc.stderr
