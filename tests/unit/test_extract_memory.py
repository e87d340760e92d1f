"""The automatic extraction batch respects the memory budget whatever the model: a model whose
exposed output is small but whose intermediate activation is huge gets a small batch, and the
peak memory of a real extraction (measured in a child process) stays under the budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BUDGET_MB = 64
WIDTH = 4096  # the intermediate activation: 64 x 4096 float32 = 1 MiB per sample
SAMPLES = 1024

CHILD = textwrap.dedent(f"""
    import json, resource, sys
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from layerscope.server.graph import describe, select_layers
    from layerscope.server.runtime import extract

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])
    axes = numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")
    shape = numpy_helper.from_array(np.array([1, 64, {WIDTH}], dtype=np.int64), "shape")
    nodes = [helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
             helper.make_node("Expand", ["u", "shape"], ["big"]),
             helper.make_node("ReduceMean", ["big", "axes"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[axes, shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    info = describe(model)
    data = np.random.default_rng(0).normal(size=({SAMPLES}, 64)).astype(np.float32)
    totals = []
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    got = extract(model, info, select_layers(info, ["y"]), [{{"x": data}}], reduce="flatten",
                  memory_budget_mb={BUDGET_MB}, progress=lambda s, d, t: totals.append(t))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # the extraction computed what the model computes: the mean of x expanded is x
    assert np.allclose(got[0].train, data, atol=1e-5)
    print(json.dumps({{"peak_kib": after - before, "batches": totals[-1]}}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="ru_maxrss is in KiB on Linux (bytes on macOS)")
def test_auto_batch_of_a_model_with_a_huge_intermediate_stays_under_the_budget(
        tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    # a batch of b samples holds b MiB of the intermediate activation: b <= the budget in MiB
    batch = -(-SAMPLES // out["batches"])
    assert batch <= BUDGET_MB
    # the extraction's high-water mark (beyond what the process held before) is within the
    # budget; the automatic batch of before (1024 samples, ~1 GiB here) is far above it
    assert out["peak_kib"] <= BUDGET_MB * 1024, out
