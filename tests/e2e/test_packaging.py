"""A non-editable install carries every package and works from another folder; its
metadata makes the plain install the light client and the runtimes separate extras."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT

EXPECTED = [
    "layerscope/__init__.py",
    "layerscope/__main__.py",
    "layerscope/onnx_external.py",
    "layerscope/server/metrics/knn.py",
    "layerscope/server/metrics/engine.py",
    "layerscope/client/cli.py",
    "layerscope/client/py.typed",
    "layerscope/exporters/__init__.py",
    "layerscope/protos/__init__.py",
    "layerscope/protos/layerscope/v1/common.proto",
    "layerscope/protos/layerscope/v1/analysis.proto",
    "layerscope/exporters/jax/__init__.py",
    "layerscope/server/runtime/check.py",
]


# Left out of the copy the wheel is built from: a build/ folder of an earlier build would
# bring back files that no longer exist (setuptools reuses build/lib).
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info",
                                    "__pycache__", "node_modules", ".*_cache", "layerscope-demo")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source") / "layerscope"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    wheel_dir = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "-w", str(wheel_dir), str(source)],
        check=True, capture_output=True, text=True,
    )
    (path,) = wheel_dir.glob("layerscope-*.whl")
    return path


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(z.read(meta))


def _requirements(wheel: Path) -> dict[str, set[str]]:
    """The wheel's Requires-Dist by extra ("" for the plain install): distribution names,
    with ``layerscope[a,b]`` (an extra naming others) kept as ``layerscope[a]`` and
    ``layerscope[b]``."""
    message = _metadata(wheel)
    out: dict[str, set[str]] = {"": set()}
    for extra in message.get_all("Provides-Extra") or []:
        out[extra] = set()
    for req in message.get_all("Requires-Dist") or []:
        spec, _, marker = req.partition(";")
        found = re.search(r"extra\s*==\s*[\"']([^\"']+)[\"']", marker)
        names = out[found.group(1) if found else ""]
        own = re.fullmatch(r"\s*layerscope\[([^\]]+)\]\s*", spec)
        if own:
            names.update(f"layerscope[{e.strip()}]" for e in own.group(1).split(","))
        else:
            names.add(re.match(r"[A-Za-z0-9_.\-]+", spec).group(0).lower())  # type: ignore[union-attr]
    return out


def _closure(reqs: dict[str, set[str]], extra: str) -> set[str]:
    """Every distribution ``layerscope[extra]`` brings, through the extras it names."""
    names: set[str] = set()
    todo, seen = [extra], set()
    while todo:
        e = todo.pop()
        seen.add(e)
        for name in reqs[e]:
            if name.startswith("layerscope["):
                if name[len("layerscope["):-1] not in seen:
                    todo.append(name[len("layerscope["):-1])
            else:
                names.add(name)
    return names


def test_plain_install_is_the_light_client(wheel):
    assert _requirements(wheel)[""] == {"numpy", "grpcio", "protobuf"}


def test_server_and_gpu_extras_each_bring_one_runtime(wheel):
    reqs = _requirements(wheel)
    common = {"onnx", "faiss-cpu", "scipy", "threadpoolctl", "grpcio-health-checking",
              "grpcio-reflection"}
    assert _closure(reqs, "server") == common | {"onnxruntime"}
    assert _closure(reqs, "gpu") == common | {"onnxruntime-gpu", "cupy-cuda13x"}


def test_only_the_server_extras_choose_a_runtime_and_dev_brings_the_cpu_one(wheel):
    reqs = _requirements(wheel)
    runtimes = {"onnxruntime", "onnxruntime-gpu"}
    for extra in reqs:
        if extra not in ("server", "gpu", "dev", "bench"):
            assert not _closure(reqs, extra) & runtimes, f"[{extra}] chooses a runtime"
        if extra in ("torch", "tensorflow", "sklearn", "xgboost", "lightgbm", "jax"):
            assert "onnx" in reqs[extra], f"[{extra}] lacks onnx"
    assert _closure(reqs, "dev") & runtimes == {"onnxruntime"}
    assert _closure(reqs, "server") <= _closure(reqs, "dev")
    assert _closure(reqs, "all") <= _closure(reqs, "dev")


def test_wheel_holds_the_packages_and_installs_standalone(wheel, tmp_path):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in EXPECTED:
        assert path in names, f"{path} missing from the wheel"
    assert "layerscope/exporters/jax.py" not in names  # now the package exporters/jax/
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
