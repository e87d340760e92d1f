#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in at most 10 minutes: install the `gpu` extra into a
# fresh virtual environment, run the test suite with LAYERSCOPE_DEVICE=gpu, and print the
# GPU benchmark table (benchmarks/gpu.py: every index at m = 100 000 and 1 000 000, d = 512,
# against CuPy's products of the same shapes; IOBinding extraction against plain
# onnxruntime CUDA inference).
#
#   bash benchmarks/gpu.sh                      # from the repository root
#   WHEELS=/path/to/wheels bash benchmarks/gpu.sh   # offline: install from a wheel folder
#   VENV=/tmp/ls-gpu KEEP_VENV=1 bash benchmarks/gpu.sh   # reuse a venv made before
#
# Each stage has its own time limit (install 180 s, tests 240 s, benchmark 170 s); a stage
# that runs over is stopped and the script goes on to the next, saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$(mktemp -d /tmp/layerscope-gpu.XXXXXX)/venv}
PY="$VENV/bin/python"
PIP_ARGS=(--quiet)
if [[ -n "${WHEELS:-}" ]]; then PIP_ARGS+=(--no-index --find-links "$WHEELS"); fi
started=$(date +%s)
stage() { echo; echo "=== $1 ($(( $(date +%s) - started )) s so far)"; }

stage "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || {
    echo "no NVIDIA GPU here (nvidia-smi failed): nothing to do"; exit 2; }

stage "install the gpu extra into $VENV"
if [[ ! -x "$PY" || -z "${KEEP_VENV:-}" ]]; then
    timeout 180 bash -c "
        set -e
        python3 -m venv '$VENV'
        '$PY' -m pip install ${PIP_ARGS[*]} --upgrade pip
        # The test tools and the exporters ('.[dev]') bring the CPU onnxruntime of [server]:
        # it is swapped for onnxruntime-gpu, as both install the module 'onnxruntime'.
        '$PY' -m pip install ${PIP_ARGS[*]} -e '.[dev]'
        '$PY' -m pip uninstall --quiet -y onnxruntime
        '$PY' -m pip install ${PIP_ARGS[*]} --force-reinstall --no-deps 'onnxruntime-gpu>=1.20'
        '$PY' -m pip install ${PIP_ARGS[*]} -e '.[gpu]'
    " || echo "install stopped or failed (rc $?)"
fi
"$PY" - <<'EOF'
import onnxruntime as ort
from layerscope.server.metrics.backend import resolve_backend
print("onnxruntime", ort.__version__, "providers", ort.get_available_providers())
print("layerscope device:", resolve_backend("gpu").reason)
EOF

stage "tests with LAYERSCOPE_DEVICE=gpu"
LAYERSCOPE_DEVICE=gpu timeout 240 "$PY" -m pytest -q -x -p no:cacheprovider \
    tests/unit tests/conformance || echo "tests stopped or failed (rc $?)"

stage "benchmark"
timeout 170 "$PY" benchmarks/gpu.py "$@" || echo "benchmark stopped or failed (rc $?)"

stage "done"
