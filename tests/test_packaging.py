"""A non-editable install carries every package and works from another folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = [
    "layerscope/__init__.py",
    "layerscope/onnx_external.py",
    "layerscope/server/metrics/knn.py",
    "layerscope/server/metrics/engine.py",
    "layerscope/client/cli.py",
    "layerscope/client/py.typed",
    "layerscope/exporters/__init__.py",
    "layerscope/protos/__init__.py",
]


def test_wheel_holds_the_packages_and_installs_standalone(tmp_path):
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = wheel_dir.glob("layerscope-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in EXPECTED:
        assert path in names, f"{path} missing from the wheel"
    assert not any(n.startswith(("layerscope/tests/", "tests/")) for n in names)

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    code = (
        "import layerscope, layerscope.server.metrics as m, numpy as np;"
        "print(layerscope.__file__);"
        "r = m.compute_indices(np.arange(12.0).reshape(6, 2), np.array([0, 0, 0, 1, 1, 1]));"
        "print(r['si'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, check=True)
    where, si = proc.stdout.split()
    assert where.startswith(str(target))
    # Points 0..5 evenly spaced on a line, labels 000111: every inner point has two tied
    # neighbours and the lower index wins, so only point 3 (tie 2 vs 4 -> 2) misses.
    assert float(si) == 5 / 6
