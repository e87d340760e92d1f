#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, in at most 10 minutes and without the network: run the
# test suite with LAYERSCOPE_DEVICE=gpu and print the GPU benchmark table
# (benchmarks/gpu.py: every index at m = 100 000 and 1 000 000, d = 512, against CuPy's
# products of the same shapes; IOBinding extraction against plain onnxruntime inference).
#
#   bash benchmarks/gpu_wheels.sh      # first, where the package registry answers: .whl/
#   bash benchmarks/gpu.sh             # then on the GPU machine, from the repository root
#   PY=/path/to/python bash benchmarks/gpu.sh     # another Python (default: python3)
#
# The Python it runs must hold CuPy, NumPy, onnx and onnxruntime (a GPU image's does; or a
# virtual environment with `pip install -e '.[gpu,dev]'`). The wheels in .whl/, if any, are
# installed into a folder of their own that comes first on PYTHONPATH, beside this
# checkout as the package `layerscope`: nothing is fetched and nothing of the machine's own
# Python changes. Each stage has its own time limit (environment 90 s, tests 300 s,
# benchmark 180 s); a stage that runs over is stopped and the script goes on to the next,
# saying so.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
started=$(date +%s)
stage() { echo; echo "=== $1 ($(( $(date +%s) - started )) s so far)"; }

stage "GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv || {
    echo "no NVIDIA GPU here (nvidia-smi failed): nothing to do"; exit 2; }

stage "environment: $PY, the wheels of .whl/, this checkout as layerscope"
SITE=$(mktemp -d /tmp/layerscope-gpu.XXXXXX)
if compgen -G ".whl/*.whl" >/dev/null; then
    timeout 90 "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$SITE" .whl/*.whl || echo "installing .whl/ failed (rc $?)"
else
    echo "no .whl/ folder: the Python's own packages as they are (gpu_wheels.sh makes it)"
fi
ln -sfn "$PWD" "$SITE/layerscope"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
timeout 60 "$PY" - <<'EOF' || echo "the environment check failed (rc $?): the stages below will say more"
import importlib, importlib.metadata as md, sys
print("python", sys.version.split()[0], sys.executable)
for dist in ("numpy", "cupy-cuda13x", "onnx", "onnxruntime", "onnxruntime-gpu", "grpcio",
             "protobuf", "faiss-cpu", "threadpoolctl", "pytest"):
    try:
        print(f"  {dist} {md.version(dist)}")
    except md.PackageNotFoundError:
        print(f"  {dist}: not installed")
import google.protobuf, grpc  # the ones imported: .whl/'s, unless a package shadows them
print("imported: grpc", grpc.__version__, grpc.__file__)
print("imported: protobuf", google.protobuf.__version__, google.protobuf.__file__)
import onnxruntime as ort
print("onnxruntime providers:", ort.get_available_providers())
import layerscope
print("layerscope from", layerscope.__file__)
from layerscope.server.metrics.backend import resolve_backend
print("device 'gpu':", resolve_backend("gpu").reason)
from layerscope.server.runtime.session import providers
print("extraction asks onnxruntime for:", providers("auto"))
EOF

# 'gpu' where onnxruntime has its CUDA provider. Where it has not (the onnxruntime-gpu
# wheel is too big to carry), 'gpu' would refuse every extraction by design; 'auto' runs
# the engine on CuPy all the same and the models on the CPU provider with CuPy
# accumulators: the mixed case, tested for real.
DEVICE=$("$PY" -c "import onnxruntime as o; print('gpu' if 'CUDAExecutionProvider' in \
o.get_available_providers() else 'auto')" 2>/dev/null || echo gpu)
stage "tests with LAYERSCOPE_DEVICE=$DEVICE"
# No -x: a module whose framework this machine lacks errors alone, the others still run.
LAYERSCOPE_DEVICE=$DEVICE timeout 300 "$PY" -m pytest -q -p no:cacheprovider -rfE \
    --continue-on-collection-errors tests/unit tests/conformance \
    || echo "tests stopped or failed (rc $?)"

stage "benchmark"
timeout 180 "$PY" benchmarks/gpu.py --timeout 170 "$@" \
    || echo "benchmark stopped or failed (rc $?)"

stage "done"
