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
