"""The light install: the client and the CLI's client side need grpcio, protobuf and NumPy
only; what needs the server says which extra to install.

Each test runs a fresh interpreter. Where the test is "without the server's modules", the
interpreter hides them (``sys.modules[name] = None`` makes both ``import`` and
``importlib.util.find_spec`` report them absent), as a plain ``pip install layerscope``
leaves them; the server it talks to is a real one, in its own process with everything.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from helpers import reference as R
from helpers import server as F
from onnx import helper, numpy_helper

# What the light install does not have: the server's modules, CuPy, and every optional extra.
SERVER_MODULES = ("onnx", "onnxruntime", "faiss", "scipy", "cupy", "cupyx", "grpc_health",
                  "grpc_reflection")
OPTIONAL_MODULES = ("matplotlib", "pandas", "torch", "tensorflow", "jax", "sklearn")
# grpc itself imports grpc_health and grpc_reflection where they are installed (it probes
# for its own extensions), so the import test watches the heavy ones only.
HEAVY_MODULES = ("onnx", "onnxruntime", "faiss", "scipy", "cupy", "cupyx", *OPTIONAL_MODULES)
HIDDEN = SERVER_MODULES + OPTIONAL_MODULES
HIDE = f"import sys\nfor _m in {HIDDEN!r}: sys.modules[_m] = None\n"


def _python(code: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def test_importing_the_client_and_the_cli_loads_no_server_module(tmp_path):
    """With everything installed, the client, ``Client(...)`` and ``layerscope --help``
    (and a command's help) still load none of the server's or the extras' modules."""
    code = f"""
import contextlib, io, json, sys
import layerscope.client, layerscope.client.client, layerscope.client.cli as cli
from layerscope.client.client import Client
c = Client("127.0.0.1:1")
c.close()
for argv in (["--help"], ["indices", "--help"], ["analyze", "--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.main(argv)
heavy = {HEAVY_MODULES!r}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
"""
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def _tiny_model(path: Path, external: bool) -> int:
    """y = tanh(x @ w1 + b1) @ w2 plus a Constant: write it to ``path`` (tensors in a file
    beside it when ``external``); return how many tensors are stored externally."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w1", (4, 8)), ("b1", (8,)), ("w2", (8, 1)))]
    shift = numpy_helper.from_array(np.full((1,), 0.5, np.float32), "shift_value")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"]),
        helper.make_node("Add", ["h0", "b1"], ["h1"]),
        helper.make_node("Tanh", ["h1"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["y0"]),
        helper.make_node("Constant", [], ["shift"], value=shift),
        helper.make_node("Add", ["y0", "shift"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if not external:
        path.write_bytes(model.SerializeToString())
        return 0
    onnx.external_data_helper.convert_model_to_external_data(
        model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0,
        convert_attribute=True)
    onnx.save_model(model, str(path))
    reloaded = onnx.load_model(str(path), load_external_data=False)
    tensors = list(reloaded.graph.initializer) + [
        a.t for n in reloaded.graph.node for a in n.attribute if a.HasField("t")]
    return sum(onnx.external_data_helper.uses_external_data(t) for t in tensors)


def test_light_client_uploads_and_computes_against_a_real_server(tmp_path):
    """Without onnx (and the rest) in the client: a model file uploads as it is, indices
    come back, and a model with external data (which the light client cannot fold in)
    is refused by the server, naming the tensor, with nothing stored."""
    plain = tmp_path / "plain.onnx"
    _tiny_model(plain, external=False)
    (tmp_path / "ext").mkdir()
    n_external = _tiny_model(tmp_path / "ext" / "model.onnx", external=True)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 3))
    y = (x[:, 0] + 0.3 * rng.standard_normal(40) > 0).astype(np.int64)
    np.savez(tmp_path / "data.npz", features=x, labels=y)

    with F.ServerProcess(tmp_path / "data") as server:
        code = HIDE + f"""
import json, numpy as np
from layerscope.client.client import Client
out = {{}}
with Client({server.address!r}, timeout=60) as c:
    out["model_id"] = c.upload_model({str(plain)!r}).id
    d = np.load({str(tmp_path / "data.npz")!r})
    out["si"] = float(c.compute_indices(d["features"], d["labels"], orders=[1])["si"])
    try:
        c.upload_model({str(tmp_path / "ext" / "model.onnx")!r})
        out["external"] = "uploaded"
    except Exception as exc:
        out["external"] = f"{{type(exc).__name__}}: {{exc}}"
    out["models"] = len(c.models())
print(json.dumps(out))
"""
        proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["model_id"] == hashlib.sha256(plain.read_bytes()).hexdigest()
    assert out["si"] == R.si(x, y)
    assert out["external"].startswith("LayerscopeError: INVALID_ARGUMENT"), out["external"]
    assert "external file" in out["external"] and "self-contained" in out["external"]
    assert f"{n_external - 1} more tensor(s)" in out["external"] or n_external == 1
    assert out["models"] == 1  # the plain model only


def test_embedded_server_without_the_server_extra_names_the_extra(tmp_path):
    """Client.local() and a CLI command without --server: ServerExtraMissing / exit 2 with
    the extra to install, and no server process is started (no log is written)."""
    np.savez(tmp_path / "d.npz", features=np.eye(4), labels=np.array([0, 0, 1, 1]))
    data_dir = tmp_path / "data"
    code = HIDE + f"""
import contextlib, io, json
from layerscope.client.client import Client
from layerscope.client.cli import main
out = {{}}
try:
    Client.local({str(data_dir)!r})
    out["local"] = "started"
except ImportError as exc:
    out["local"] = type(exc).__name__ + ": " + str(exc)
err = io.StringIO()
with contextlib.redirect_stderr(err):
    out["cli_code"] = main(["indices", {str(tmp_path / "d.npz")!r}, "--data-dir",
                            {str(data_dir)!r}])
out["cli_err"] = err.getvalue()
print(json.dumps(out))
"""
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["local"].startswith("ServerExtraMissing: the embedded server needs the server "
                                   "extra (missing here: onnx, onnxruntime, grpc_health, "
                                   "grpc_reflection)")
    assert "pip install 'layerscope[server]'" in out["local"]
    assert "--server HOST:PORT" in out["local"]
    assert out["cli_code"] == 2
    assert "pip install 'layerscope[server]'" in out["cli_err"]
    assert not (data_dir / "server.log").exists()


def test_server_module_without_the_server_extra_says_what_to_install(tmp_path):
    code = HIDE + """
import runpy
runpy.run_module("layerscope.server.api", run_name="__main__")
"""
    proc = _python(code, tmp_path)
    assert proc.returncode == 1
    assert "layerscope serve: error: the server needs" in proc.stderr
    assert "pip install 'layerscope[server]'" in proc.stderr
    assert "Traceback" not in proc.stderr
