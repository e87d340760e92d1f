"""The transferability benchmark's smoke run on a tiny zoo of controls (no timing asserted).

The pixel and random-projection networks need only torch, so this runs without the
``bench-transfer`` extra's pretrained weights; the benchmark's numbers are not checked here
(benchmarks never run as assertions), only that it goes end to end through the exporter and
the ranking path and reports every score it computed.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("sklearn") is None,
                    reason="the benchmark exports torch models and probes with scikit-learn")
def test_transfer_benchmark_quick_run_on_a_tiny_zoo(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "transfer.py"), "--quick", "--models",
           "pixels,random-proj", "--targets", "digits", "--samples", "80", "--size", "16",
           "--max-features", "4", "--no-layers", "--cache", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "linear-probe test accuracy" in out and "weighted tau" in out
    for score in ("seed", "si_all", "folded_soft_order_si[5]", "folded_si",
                  "baseline:logme", "baseline:h_score"):
        assert re.search(rf"^\s*\|?\s*{re.escape(score)}\s", out, re.MULTILINE), score
