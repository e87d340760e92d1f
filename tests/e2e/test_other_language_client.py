"""A client in another language (Node.js), generated at run time from the .proto files the
package ships, calls a real server and gets what the Python client gets.

Runs where ``node`` and ``npm`` are installed: the example's dependencies are installed
once into docs/examples/node/node_modules (ignored by git) from its lock file; when that
cannot be done (no network to the npm registry), the test is skipped and says why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT
from helpers import reference as R
from helpers import server as F

from layerscope.protos import proto_files, write_protos

EXAMPLE = ROOT / "docs" / "examples" / "node"


@pytest.fixture(scope="module")
def node_example() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the Node.js client example is not run")
    if not (EXAMPLE / "node_modules" / "@grpc" / "grpc-js").is_dir():
        try:
            proc = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=EXAMPLE,
                capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            pytest.skip("npm ci of the Node.js example did not finish within 300 s")
        if proc.returncode != 0:
            pytest.skip("npm ci of the Node.js example failed (no access to the npm "
                        f"registry?): {proc.stderr.strip().splitlines()[-1:]}")
    return EXAMPLE


def test_write_protos_copies_the_shipped_contract_under_its_include_path(tmp_path):
    written = write_protos(tmp_path / "out")
    root = ROOT / "protos"
    expected = sorted((root / "layerscope" / "v1").glob("*.proto"))
    assert [p.name for p in written] == [p.name for p in expected]
    assert [f.name for f in proto_files()] == [p.name for p in expected]
    for got, want in zip(written, expected, strict=True):
        assert got == tmp_path / "out" / "layerscope" / "v1" / want.name
        assert got.read_bytes() == want.read_bytes()


def test_node_client_gets_the_indices_the_python_client_gets(node_example, tmp_path):
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0.0, 1.0, (25, 4)), rng.normal(1.5, 1.0, (25, 4))])
    y = np.repeat([0, 1], 25)
    (tmp_path / "data.json").write_text(json.dumps(
        {"features": x.tolist(), "labels": y.tolist(), "orders": [1, 5]}))
    protos = tmp_path / "protos"
    write_protos(protos)

    with F.ServerProcess(tmp_path / "data") as server:
        proc = subprocess.run(
            ["node", "client.js", server.address, str(protos), str(tmp_path / "data.json")],
            cwd=node_example, capture_output=True, text=True, timeout=120)
        with server.client() as client:
            want = client.compute_indices(x, y, orders=[1, 5])
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)

    assert got["health"] == "SERVING"
    assert got["task"] == "classification" and got["n_samples"] == 50
    assert got["classes"] == [0, 1]
    assert got["si"] == want["si"] == R.si(x, y)
    assert got["high_order_si"] == {str(k): v for k, v in want["high_order_si"].items()}
    assert set(got["high_order_si"]) == {"1", "5"}
