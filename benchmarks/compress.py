"""Benchmark: layer-wise compression of real models, the original measured beside it.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/compress.py                    # every model (~3 min)
    .venv/bin/python benchmarks/compress.py --models cnn,resnet --tolerance 0.02
    .venv/bin/python benchmarks/compress.py --markdown > table.md   # for RESULTS.md

Models (trained or loaded here by the test fixtures' builders, tests/helpers/models.py):

* ``cnn``: the CNN trained on noisy, shifted 8x8 digits (conv-conv-pool-fc-fc);
* ``resnet``: the small residual network on 8x8 digits;
* ``mlp_regressor``: the ReLU MLP regressor (R^2);
* ``efficientnet_lite0``: the pretrained EfficientNet-Lite0 (ImageNet weights from the
  ``efficientnet`` extra) with its 1000-class layer replaced by a 10-class ridge head on
  its pooled features, on digits upsampled to 3x64x64 (600 train, 300 test).

Each is compressed with ``compress_model`` (the rule and the head of docs/compress.md,
criterion ``probe``, the ``auto`` layers); the original and the compressed model then run
with onnxruntime in this process, one thread each, on the test set: test accuracy (R^2),
parameters (float weights), file size, MACs per sample and the median time of a batch of
64 over 20 runs. Ratios are compressed / original.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import env_line, machine_line, pool_lines, table, thread_pools

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("cnn", "resnet", "mlp_regressor", "efficientnet_lite0")


def build(name: str, out: Path) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import models as M  # the fixtures' builders: the same trained models

    if name == "efficientnet_lite0":
        reason = M.efficientnet_available()
        if reason:
            raise RuntimeError(reason)
        return M.build_efficientnet(out)
    return {"cnn": M.build_cnn, "resnet": M.build_resnet,
            "mlp_regressor": M.build_mlp_regressor}[name](out)


def run(name: str, tolerance: float) -> dict[str, Any]:
    from layerscope.server.analysis.compress import compress_model

    with tempfile.TemporaryDirectory() as tmp:
        built = build(name, Path(tmp))
        target = ({"targets": built.y, "test_targets": built.yt} if name == "mlp_regressor"
                  else {"labels": built.y, "test_labels": built.yt})
        started = time.perf_counter()
        res = compress_model(built.path.read_bytes(), built.train, test=built.test,
                             tolerance=tolerance, **target)
        report = res.to_dict()
        report["seconds"] = time.perf_counter() - started
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    rows = []
    for name in [m for m in args.models.split(",") if m]:
        try:
            r = run(name, args.tolerance)
        except (RuntimeError, ImportError) as exc:
            print(f"{name}: skipped: {exc}", file=sys.stderr)
            continue
        c, o, k = r["comparison"], r["comparison"]["original"], r["comparison"]["compressed"]
        ratio = c["ratios"]
        rows.append([
            name, r["cut"]["layer"][-34:], r["metric"], f"{o['score']:.4f}",
            f"{k['score']:.4f}", f"{o['parameters']:,}", f"{k['parameters']:,}",
            f"{ratio['parameters']:.3f}", f"{ratio['size_bytes']:.3f}",
            f"{ratio['macs']:.3f}" if ratio["macs"] is not None else "-",
            f"{o['latency_ms']:.2f}", f"{k['latency_ms']:.2f}", f"{ratio['latency_ms']:.3f}",
            f"{c['prefix_max_abs_diff']:.1e}, {len(r['candidates'])} candidates, "
            f"{r['seconds']:.0f} s"])
    head = ["model", "cut", "metric", "original", "compressed", "params", "params (cut)",
            "params ratio", "size ratio", "MACs ratio", "ms/batch", "ms/batch (cut)",
            "latency ratio", "prefix diff, candidates, time"]
    lines = [machine_line(), env_line(), *pool_lines(thread_pools()),
             f"tolerance {args.tolerance}, criterion probe, batch of 64, one onnxruntime "
             "thread per session, median of 20 runs", ""]
    lines += table("compression: original vs compressed, measured side by side", head, rows,
                   args.markdown)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
