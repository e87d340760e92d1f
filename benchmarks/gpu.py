"""Benchmark on an NVIDIA GPU: the index engine against CuPy's matrix products, and layer
extraction through IOBinding against plain onnxruntime CUDA inference.

Run by ``benchmarks/gpu.sh`` (which runs the tests first), or::

    python benchmarks/gpu.py                 # m = 100 000 and 1 000 000, d = 512
    python benchmarks/gpu.py --configs 100000x512 --markdown

Index rows (each config in its own process, CuPy arrays on the device before the clock):

* ``ours``: ``compute_indices`` with si, high/soft/anti at orders 1, 5, 10 and center_si,
  exact precision, on ``device="gpu"`` (the symmetric self-join, the GPU top-k, the float64
  re-rank of the uncertain rows), then a device synchronisation.
* ``GEMM, upper triangle``: the float32 products the self-join needs: ``X_I X_J^T`` for
  every block pair ``I <= J`` with the engine's block size, then a synchronisation. The
  floor of any exact method that shares the product.
* ``GEMM, full``: ``X X^T`` block by block (every pair twice, as a k-NN that does not know
  the symmetry computes it).

Extraction rows: a 12-layer MLP-like CNN built in ONNX here (no framework needed), n images
of 3x64x64 in batches of 256: plain ``onnxruntime`` CUDA inference of the model (outputs
to the host, discarded) against ``layerscope.server.runtime.extract`` of every layer with
``reduce="mean"`` (IOBinding, the outputs reduced by CuPy on the device). Where
onnxruntime has no CUDA provider, both run the model on its CPU provider (ours on device
``auto``, with CuPy accumulators) and the rows say so.

Data: the Gaussian-class mixture of benchmarks/indices.py, generated on the host (seeded).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from _report import child_result, emit, machine_line, table

INDICES = ["si", "high_order_si", "soft_order_si", "anti_si", "center_si"]
ORDERS = [1, 5, 10]
DEFAULT_CONFIGS = ((100_000, 512), (1_000_000, 512))


def _sync(cp: Any) -> None:
    cp.cuda.get_current_stream().synchronize()


def index_worker(m: int, d: int) -> dict:
    import cupy as cp
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from indices import make_data

    from layerscope.server.metrics import compute_indices
    from layerscope.server.metrics.backend import resolve_backend
    from layerscope.server.metrics.knn import MIB, device_budget, selfjoin_block

    backend = resolve_backend("gpu")
    x, labels = make_data(m, d)
    xg = cp.asarray(x)
    compute_indices(xg[:2000], labels[:2000], indices=INDICES, orders=ORDERS, device="gpu")
    _sync(cp)
    t0 = time.perf_counter()
    res = compute_indices(xg, labels, indices=INDICES, orders=ORDERS, device="gpu")
    _sync(cp)
    ours = time.perf_counter() - t0
    block = selfjoin_block(cp, m, d, device_budget(cp, 256 * MIB))
    starts = range(0, m, block)

    def gemm(upper: bool) -> float:
        t0 = time.perf_counter()
        for i, s in enumerate(starts):
            a = xg[s : s + block]
            for t in (list(starts)[i:] if upper else starts):
                a @ xg[t : t + block].T
        _sync(cp)
        return time.perf_counter() - t0

    upper, full = gemm(True), gemm(False)
    knn = res.options.get("knn", {}).get("train", {})
    return {"ours": ours, "upper": upper, "full": full, "block": block,
            "si": float(res["si"]), "knn": knn, "device": backend.reason,
            "gpu": cp.cuda.runtime.getDeviceProperties(0)["name"].decode(),
            "labels_check": float(np.mean(labels))}


def _cnn(path: str, layers: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, ch = [], [], "image", 3
    for i in range(layers):
        out_ch = 32 if i < layers // 2 else 64
        w = (rng.normal(size=(out_ch, ch, 3, 3)) / np.sqrt(9 * ch)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, ch = f"r{i}", out_ch
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                     [None, 3, 64, 64])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [None, ch, 1, 1])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def extraction_worker(n: int, batch: int) -> dict:
    import tempfile

    import cupy as cp
    import numpy as np
    import onnxruntime as ort

    from layerscope.server.graph import describe, load_model, select_layers
    from layerscope.server.runtime import extract

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "cnn.onnx")
        _cnn(path, 12)
        x = np.random.default_rng(0).standard_normal((n, 3, 64, 64), dtype=np.float32)
        # Without onnxruntime's CUDA provider (plain onnxruntime: the onnxruntime-gpu wheel
        # is too big to carry to a machine without the network), both rows run the model on
        # the CPU provider, ours with CuPy accumulators: the mixed case, timed and checked.
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        device = "gpu" if cuda else "auto"
        sess = ort.InferenceSession(path, providers=["CUDAExecutionProvider" if cuda
                                                     else "CPUExecutionProvider"])
        sess.run(None, {"image": x[:batch]})
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            sess.run(None, {"image": x[s : s + batch]})
        plain = time.perf_counter() - t0
        proto = load_model(path)
        info = describe(proto)
        chosen = select_layers(info, "op:Relu")
        extract(proto, info, chosen, [{"image": x[:batch]}], reduce="mean", device=device)
        _sync(cp)
        t0 = time.perf_counter()
        got = extract(proto, info, chosen, [{"image": x}], reduce="mean", batch_size=batch,
                      device=device)
        _sync(cp)
        ours = time.perf_counter() - t0
    return {"plain": plain, "ours": ours, "layers": len(chosen), "device": device,
            "plain_providers": list(sess.get_providers()), "ort": ort.__version__,
            "providers": list(got[0].providers), "on_device": type(got[0].train).__module__}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(f"{m}x{d}" for m, d in DEFAULT_CONFIGS))
    parser.add_argument("--n", type=int, default=8192, help="images for the extraction rows")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=400)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--index-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--extraction-worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.index_worker:
        emit(index_worker(*args.index_worker))
        return 0
    if args.extraction_worker:
        emit(extraction_worker(*args.extraction_worker))
        return 0

    lines = [machine_line(), ""]
    head = ["config", "method", "time s", "ratio to GEMM, full", "note"]
    body: list[list[str]] = []
    for part in args.configs.split(","):
        m, d = (int(v) for v in part.lower().split("x"))
        res, err = child_result(__file__, ["--index-worker", str(m), str(d)], args.timeout)
        if res is None:
            body.append([f"{m}x{d}", "ours", "-", "-", err[-200:]])
            continue
        full = res["full"]
        note = (f"{res['gpu']}; block {res['block']}; si {res['si']:.4f}; knn rows "
                f"certified={res['knn'].get('certified_rows')}, "
                f"reranked={res['knn'].get('reranked_rows')}, "
                f"fallback={res['knn'].get('fallback_rows')}")
        body.append([f"{m}x{d}", "ours (all indices)", f"{res['ours']:.3f}",
                     f"{res['ours'] / full:.2f}", note])
        body.append([f"{m}x{d}", "GEMM, upper triangle", f"{res['upper']:.3f}",
                     f"{res['upper'] / full:.2f}", ""])
        body.append([f"{m}x{d}", "GEMM, full", f"{full:.3f}", "1.00", ""])
    lines += table("indices on the GPU", head, body, args.markdown)
    res, err = child_result(__file__, ["--extraction-worker", str(args.n),
                                       str(args.batch_size)], args.timeout)
    head = ["method", "time s", "ratio to plain ORT", "note"]
    if res is None:
        body = [["ours (IOBinding)", "-", "-", err[-200:]]]
    else:
        body = [[f"plain onnxruntime {res['ort']}", f"{res['plain']:.3f}", "1.00",
                 f"providers {res['plain_providers']}"],
                [f"ours (device {res['device']}, mean reduced by the accumulators)",
                 f"{res['ours']:.3f}", f"{res['ours'] / res['plain']:.2f}",
                 f"{res['layers']} layers; providers {res['providers']}; "
                 f"accumulators: {res['on_device']}"]]
    lines += [""] + table(f"extraction, n={args.n}, batch {args.batch_size}", head, body,
                          args.markdown)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
