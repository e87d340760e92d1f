"""The server refuses to start on a mix of onnxruntime distributions, and says what to run.

The decision is a function of the installed distributions and of what ``import onnxruntime``
gave, so each broken combination is stated with fake metadata; one real start-up check runs
the server with a fake second distribution on its path.
"""

from __future__ import annotations

import subprocess
import sys

from layerscope.server.runtime.check import (
    RuntimeModule,
    installed_runtimes,
    probe_module,
    runtime_problem,
)

CPU = RuntimeModule("1.22.0", ("CPUExecutionProvider",))
GPU = RuntimeModule("1.31.1", ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                               "CPUExecutionProvider"))
FIX_SERVER = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'layerscope[server]'"
FIX_GPU = "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'layerscope[gpu]'"


def test_installed_runtimes_keeps_the_onnxruntime_distributions_by_normalized_name():
    found = installed_runtimes([("onnx", "1.17.0"), ("onnxruntime_gpu", "1.31.1"),
                                ("onnxruntime-extensions", "0.12"), ("ONNXRuntime", "1.22.0"),
                                ("skl2onnx", "1.20")])
    assert found == {"onnxruntime-gpu": "1.31.1", "onnxruntime": "1.22.0"}


def test_one_runtime_whose_module_keeps_its_promise_is_whole():
    assert runtime_problem({"onnxruntime": "1.22.0"}, CPU) is None
    assert runtime_problem({"onnxruntime-gpu": "1.31.1"}, GPU) is None


def test_a_module_built_from_source_without_a_distribution_is_accepted():
    assert runtime_problem({}, CPU) is None


def test_both_distributions_installed_is_refused_with_the_fix():
    problem = runtime_problem({"onnxruntime": "1.22.0", "onnxruntime-gpu": "1.31.1"}, CPU)
    assert problem is not None
    assert "onnxruntime 1.22.0, onnxruntime-gpu 1.31.1" in problem
    assert FIX_GPU in problem


def test_gpu_distribution_whose_module_lacks_cuda_was_overwritten():
    """onnxruntime-gpu's metadata, the CPU package's files (same version): no CUDA."""
    problem = runtime_problem({"onnxruntime-gpu": "1.22.0"}, CPU)
    assert problem is not None
    assert "offers no CUDAExecutionProvider (providers: CPUExecutionProvider)" in problem
    assert FIX_GPU in problem


def test_module_of_another_version_than_its_distribution_is_refused():
    problem = runtime_problem({"onnxruntime": "1.22.0"}, GPU)
    assert problem is not None
    assert "onnxruntime 1.22.0 is installed but the `onnxruntime` module is version 1.31.1" \
        in problem
    assert FIX_SERVER in problem


def test_module_that_fails_to_import_after_an_uninstall_is_refused():
    broken = RuntimeModule(error="ImportError: libonnxruntime_providers_shared.so: missing")
    problem = runtime_problem({"onnxruntime": "1.22.0"}, broken)
    assert problem is not None
    assert "`import onnxruntime` fails (ImportError: libonnxruntime_providers_shared.so" \
        in problem
    assert FIX_SERVER in problem


def test_no_runtime_at_all_says_which_extra_to_install():
    problem = runtime_problem({}, RuntimeModule(error="ModuleNotFoundError: onnxruntime"))
    assert problem is not None
    assert problem.startswith("onnxruntime is not installed")
    assert "pip install 'layerscope[server]'" in problem and "uninstall" not in problem


def test_this_machines_runtime_is_whole():
    assert runtime_problem(installed_runtimes(), probe_module()) is None


def test_server_start_up_refuses_a_second_runtime_distribution(tmp_path):
    """A second onnxruntime distribution's metadata on the path: the real server exits 1
    at start-up with the fix, before it listens."""
    fake = tmp_path / "site" / "onnxruntime_directml-1.20.0.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: onnxruntime-directml\nVersion: 1.20.0\n")
    code = (f"import sys; sys.path.append({str(tmp_path / 'site')!r}); import runpy; "
            "sys.argv = ['layerscope-serve', '--port', '0', '--data-dir', "
            f"{str(tmp_path / 'data')!r}]; "
            "runpy.run_module('layerscope.server.api', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "layerscope serve: error: several onnxruntime distributions are installed" \
        in proc.stderr
    assert "onnxruntime-directml 1.20.0" in proc.stderr
    assert "pip uninstall -y onnxruntime onnxruntime-directml onnxruntime-gpu" in proc.stderr
    assert "layerscope serving on" not in proc.stdout
