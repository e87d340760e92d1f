"""The device a server runs on: settled at start, refused with what is missing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layerscope.server.metrics.backend import cuda_device_count


@pytest.mark.skipif(cuda_device_count() > 0, reason="a CUDA device is present here")
def test_serve_device_gpu_without_a_gpu_exits_2_naming_what_is_missing(tmp_path: Path) -> None:
    """Before: the server started and every analysis failed with INTERNAL."""
    env = {k: v for k, v in os.environ.items() if k != "LAYERSCOPE_DEVICE"}
    proc = subprocess.run(
        [sys.executable, "-m", "layerscope.client.cli", "serve", "--device", "gpu",
         "--port", "0", "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 2
    assert "device 'gpu' was requested but the CUDA driver reports no device" in proc.stderr
    assert "Traceback" not in proc.stderr
