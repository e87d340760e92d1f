"""Heavy modules are imported only where they are used: the command line starts without
any framework or runtime, the server without onnx, onnxruntime, faiss, SciPy or a framework
(each is imported by the code path that needs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("onnx", "onnxruntime", "faiss", "scipy", "cupy", "torch", "tensorflow", "jax",
         "sklearn", "xgboost", "lightgbm", "matplotlib", "pandas", "pyarrow", "PIL", "ray")


def loaded_after(statement: str, names: tuple[str, ...]) -> set[str]:
    """Which of ``names`` are in ``sys.modules`` after ``statement`` in a fresh process."""
    code = (f"import sys\n{statement}\n"
            f"print(' '.join(m for m in {names!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(out.stdout.split())


def imported_after(statement: str) -> set[str]:
    return loaded_after(statement, HEAVY)


def test_command_line_imports_no_heavy_module():
    assert imported_after("import layerscope.client.cli") == set()


def test_client_imports_no_heavy_module():
    assert imported_after("from layerscope.client import Client") == set()


@pytest.mark.parametrize("statement", ["import layerscope.client.cli",
                                       "from layerscope.client import Client"])
def test_command_line_and_client_start_without_numpy(statement):
    # NumPy and BLAS's threads take ~0.1 s to start here; a command that sends an .npz
    # never needs them (tests/e2e/test_warm_server.py runs one)
    assert loaded_after(statement, ("numpy",)) == set()


@pytest.mark.parametrize("module", ["layerscope.server.api", "layerscope.server.api.serve",
                                    "layerscope.server.api.servicers"])
def test_server_imports_no_graph_library_runtime_or_framework_at_start(module):
    # onnx (about a second, ml_dtypes most of it) is imported by the first call that
    # touches a model: a warm server that computes indices never pays for it
    assert imported_after(f"import {module}") == set()


def test_onnx_numbers_written_out_are_onnx_own():
    """Constants written out so that importing their modules does not import onnx."""
    import onnx

    from layerscope.onnx_external import TENSOR
    from layerscope.server.graph.compress import OutputSpec
    from layerscope.server.graph.inspect import FLOAT_TYPES

    p = onnx.TensorProto
    assert FLOAT_TYPES == {p.FLOAT, p.FLOAT16, p.DOUBLE, p.BFLOAT16}
    assert TENSOR == p.DESCRIPTOR.full_name
    assert OutputSpec("y", "scores").elem_type == p.FLOAT


# What only some commands use stays out of the command line's start (each import is where
# its command needs it). Modules the libraries themselves import are not ours to pin.
CLI_LAZY = ("layerscope.client.html_report", "importlib.resources", "tempfile", "csv")
LIBRARIES = "import numpy, grpc, google.protobuf.json_format, argparse, zipfile"


def test_command_line_start_leaves_out_what_only_some_commands_use():
    by_libraries = loaded_after(LIBRARIES, CLI_LAZY)
    assert loaded_after("import layerscope.client.cli", CLI_LAZY) - by_libraries == set()
