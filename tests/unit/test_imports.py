"""Heavy modules are imported only where they are used: the command line starts without
any framework or runtime, the server without onnxruntime, faiss, SciPy or a framework
(each is imported by the code path that needs it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("onnx", "onnxruntime", "faiss", "scipy", "cupy", "torch", "tensorflow", "jax",
         "sklearn", "xgboost", "lightgbm", "matplotlib", "pandas", "pyarrow", "PIL", "ray")


def imported_after(statement: str) -> set[str]:
    code = (f"import sys\n{statement}\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(out.stdout.split())


def test_command_line_imports_no_heavy_module():
    assert imported_after("import layerscope.client.cli") == set()


def test_client_imports_no_heavy_module():
    assert imported_after("from layerscope.client import Client") == set()


@pytest.mark.parametrize("module", ["layerscope.server.api.serve"])
def test_server_imports_no_runtime_or_framework_at_start(module):
    # onnx itself is the server's graph library, needed to describe any upload
    assert imported_after(f"import {module}") - {"onnx"} == set()


# What only some commands use stays out of the command line's start (each import is where
# its command needs it). Modules the libraries themselves import are not ours to pin.
CLI_LAZY = ("layerscope.client.html_report", "importlib.resources", "tempfile", "csv")
LIBRARIES = "import numpy, grpc, google.protobuf.json_format, argparse, zipfile"


def loaded_after(statement: str, names: tuple[str, ...]) -> set[str]:
    code = (f"import sys\n{statement}\n"
            f"print(' '.join(m for m in {names!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    return set(out.stdout.split())


def test_command_line_start_leaves_out_what_only_some_commands_use():
    by_libraries = loaded_after(LIBRARIES, CLI_LAZY)
    assert loaded_after("import layerscope.client.cli", CLI_LAZY) - by_libraries == set()
