"""Benchmark: peak memory of an extraction with the automatic batch, against the old rule.

A model whose exposed output is small (64 values per sample) but whose intermediate
activation is large (64 x WIDTH float32 per sample) is run over 1024 samples under an
extraction budget. "auto" is this version's automatic batch (exposed outputs and the largest
activation of the graph); "old rule" is the batch the exposed outputs alone gave
(a quarter of the budget / their bytes per sample, at most 1024), passed explicitly. Each run
is a fresh child process; peak = its ru_maxrss after the extraction minus before.

    python benchmarks/extract_batch.py [--markdown]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys

CHILD = """
import json, resource, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from layerscope.server.graph import describe, select_layers
from layerscope.server.runtime import extract
width, budget, batch = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
shape = numpy_helper.from_array(np.array([1, 64, width], dtype=np.int64), "shape")
nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
         helper.make_node("Expand", ["u", "shape"], ["big"]),
         helper.make_node("ReduceMean", ["big", "axes"], ["y"], keepdims=0)]
model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=[axes, shape]),
                          opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
info = describe(model)
data = np.random.default_rng(0).normal(size=(1024, 64)).astype(np.float32)
totals = []
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
extract(model, info, select_layers(info, ["y"]), [{"x": data}], reduce="flatten",
        memory_budget_mb=budget, batch_size=None if batch == "auto" else int(batch),
        progress=lambda s, d, t: totals.append(t))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": (after - before) / 1024, "batches": totals[-1]}))
"""


def run(width: int, budget: float, batch: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(width), str(budget), batch],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--markdown", action="store_true")
    ap.parse_args()
    print(f"- machine: {platform.processor() or platform.machine()}, python "
          f"{platform.python_version()}")
    print("| intermediate MiB/sample | budget MiB | rule | batch | peak MiB |")
    print("|---:|---:|---|---:|---:|")
    for width in (1024, 4096):
        for budget in (64.0, 256.0):
            old = max(1, min(1024, int(budget * 2**20) // 4 // (64 * 4)))
            for rule, batch in (("old rule", str(old)), ("auto", "auto")):
                r = run(width, budget, batch)
                size = -(-1024 // r["batches"])
                print(f"| {64 * width * 4 / 2**20:.2f} | {budget:.0f} | {rule} | {size} | "
                      f"{r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
