#!/usr/bin/env bash
# Fetch, here (where the package registry answers), the wheels benchmarks/gpu.sh installs
# on a GPU machine that reaches no network: the distributions the GPU image lacks or holds
# in versions older than ours, for CPython 3.12 on manylinux x86-64, each at the version
# this project's .venv runs. They land in .whl/ (ignored by git), which travels with the
# working tree to the GPU machine (at most 64 MiB in all: this script stops above 56 MiB).
#
#   bash benchmarks/gpu_wheels.sh            # from the repository root; then gpu.sh there
#
# Not among them: onnxruntime-gpu (its wheel is 255 MB). Where the image's onnxruntime has
# no CUDA provider, gpu.sh runs the engine on CuPy and extraction's model on onnxruntime's
# CPU provider, the mixed case the engine must handle, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=${HERE_PY:-.venv/bin/python}
OUT=.whl
# grpcio, protobuf: the generated stubs refuse older runtimes (1.85.4, 7.35); the health
# and reflection services come with them; faiss-cpu: the CPU paths the suite also runs;
# skl2onnx: the scikit-learn model fixtures.
DISTS=(grpcio protobuf grpcio-health-checking grpcio-reflection faiss-cpu skl2onnx)
pins=()
for dist in "${DISTS[@]}"; do
    version=$("$HERE" -c "import importlib.metadata as m; print(m.version('$dist'))")
    pins+=("$dist==$version")
done
mkdir -p "$OUT"
rm -f "$OUT"/*.whl
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$OUT" "${pins[@]}"
ls -l "$OUT"
total=$(du -cb "$OUT"/*.whl | tail -1 | cut -f1)
echo "$(( total / 1048576 )) MiB of wheels in $OUT: ${pins[*]}"
if (( total > 56 * 1048576 )); then
    echo "more than 56 MiB: the working tree would not travel (64 MiB in all)" >&2
    exit 1
fi
