"""Session-scoped fixtures: small real models, trained and exported to ONNX once per session.

The builders live in ``models.py``; each fixture writes into its own temporary folder.

``LAYERSCOPE_DEVICE`` picks the device of every call that does not name one (the engine,
extraction and the servers the tests start, which inherit the environment):
``LAYERSCOPE_DEVICE=gpu`` runs the suite on a GPU and stops it at once, saying what is
missing, where there is none. ``LAYERSCOPE_TEST_GPU=fake`` registers the NumPy-backed CuPy
stand-in (helpers/fakecupy.py) as the GPU module of this process, so that ``auto`` runs the
GPU code paths on the CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import models as M
from helpers.cluster import ray_cluster  # noqa: F401 - the session's one Ray cluster

# Command-line runs in the tests stop their embedded server when they end, as a one-off
# command would; the warm server's own tests (tests/e2e/test_warm_server.py) ask for it.
os.environ["LAYERSCOPE_KEEP_WARM"] = "0"

from layerscope.server.metrics import backend


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("LAYERSCOPE_TEST_GPU") == "fake":
        from helpers import fakecupy  # noqa: PLC0415

        backend.register_gpu_module(fakecupy)
    if backend.requested_device() == "gpu":
        try:
            backend.resolve_backend("gpu")
        except backend.DeviceUnavailable as exc:
            pytest.exit(f"{backend.DEVICE_ENV}=gpu: {exc}", returncode=2)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        chosen = backend.resolve_backend()
    except (backend.DeviceUnavailable, ValueError) as exc:
        return f"layerscope device: unavailable ({exc})"
    return f"layerscope device: {chosen.device} ({chosen.reason})"


@pytest.fixture(scope="session")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> M.Built:
    """CNN trained on noisy, shifted digits; dynamic batch axis."""
    return M.build_cnn(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="session")
def cnn_fixed(tmp_path_factory: pytest.TempPathFactory, cnn: M.Built) -> Path:
    """The same trained CNN exported with a fixed batch of 16."""
    return M.build_fixed_batch_cnn(tmp_path_factory.mktemp("cnn_fixed"), cnn, batch=16)


@pytest.fixture(scope="session")
def cnn_opset18(tmp_path_factory: pytest.TempPathFactory, cnn: M.Built) -> Path:
    """The trained CNN converted to opset 18 (ReduceMean takes its axes as an input)."""
    return M.convert_opset(cnn.path, tmp_path_factory.mktemp("cnn18") / "cnn18.onnx", 18)


@pytest.fixture(scope="session")
def resnet(tmp_path_factory: pytest.TempPathFactory) -> M.Built:
    return M.build_resnet(tmp_path_factory.mktemp("resnet"))


@pytest.fixture(scope="session")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> M.Built:
    return M.build_transformer(tmp_path_factory.mktemp("transformer"))


@pytest.fixture(scope="session")
def two_inputs(tmp_path_factory: pytest.TempPathFactory) -> M.Built:
    return M.build_two_inputs(tmp_path_factory.mktemp("two_inputs"))


@pytest.fixture(scope="session")
def sklearn_mlp(tmp_path_factory: pytest.TempPathFactory) -> M.Built:
    return M.build_sklearn_mlp(tmp_path_factory.mktemp("sklearn_mlp"))


@pytest.fixture(scope="session")
def nan_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return M.build_nan_branch(tmp_path_factory.mktemp("nan_model"))


@pytest.fixture(scope="session")
def high_ir_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return M.build_high_ir(tmp_path_factory.mktemp("high_ir"))


@pytest.fixture(scope="session")
def external_model(tmp_path_factory: pytest.TempPathFactory, resnet: M.Built) -> Path:
    """The residual network saved as ``model.onnx`` + ``weights.bin`` in one folder.

    Tests must not modify these files (copy them first)."""
    return M.save_external(resnet.path, tmp_path_factory.mktemp("external") / "model")

