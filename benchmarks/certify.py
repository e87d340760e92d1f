"""Benchmark: feature-level Certify through gRPC on loopback against in-process baselines.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/certify.py              # 200 single calls, 10 batches (~2 min)
    .venv/bin/python benchmarks/certify.py --quick      # smoke: 50 single calls, 3 batches (~30 s)
    .venv/bin/python benchmarks/certify.py --single 500 --batches 20 --stream 2000
    .venv/bin/python benchmarks/certify.py --threads 1  # every thread pool at 1 thread
    .venv/bin/python benchmarks/certify.py --markdown > table.md  # for benchmarks/RESULTS.md

One run starts one server as a subprocess (``python -m layerscope.server.api --host
127.0.0.1 --port 0 --data-dir DIR``, DIR a fresh temporary folder), waits for its
``layerscope serving on HOST:PORT`` line, runs every measurement in child processes, then
stops it with SIGTERM.

Reference (``--n`` points, default 10 000, of ``--d`` = 512 features, 10 classes, seed 0):
class centres drawn N(0, 0.5^2) per feature, points = their class centre + N(0, 0.1^2)
noise, float32. The model is built with ``onnx.helper`` (opset 17): input ``x`` [N, 512]
float32 -> ``Identity`` -> ``features`` [N, 512] -> ``Gemm`` (a random 512 x 10 weight) ->
``logits``; the reference layer is ``features``, so the reference features are exactly the
generated points. Setup (timed, reported below the header, not compared):
``Client.upload_model``, ``Client.upload_dataset({"x": X}, labels=y)``, then
``Client.build_reference(model, dataset, layer="features")`` (the job, from the client's
view, until its result arrives).

Queries: 1 000 fresh points of the same mixture (seed 1), float32 (1000, 512). Every method
answers the same queries; single-query calls walk through them in order (call i certifies
query i mod 1000).

Methods:

* ``grpc``: ``Client.certify(reference, features=q, uncertainty=0.1)`` from a client
  process (the client's view: request encoding, the call, the server's work, the reply
  and its parsing into ``CertifyResult``). The first call (the server loads the reference,
  prepares its index and computes the reference's confidence) is reported apart; then 5
  single calls and one batch warm up, untimed.
* ``inproc``: ``ClassificationReference(features, labels).certify(q, 0.1)`` in a fresh
  process, no gRPC (the object the server holds). Construction and the first call (the
  confidence) are reported apart; the same warm-up. The in-process worker runs in
  ``--inproc-runs`` fresh processes (default 3), after the server has stopped; each
  method keeps the process with the lowest median, and the note lists every process's
  median (on a busy 2-core machine a whole process can run its single calls several times
  slower than usual, its thread pools waiting for time slices).
* ``bf_nn``: brute-force NumPy float64 nearest neighbour: ``||x||^2 - 2 q.x + ||q||^2``
  against all points (the float64 copy of the points and their norms prepared once,
  untimed), ``argmin``, ``dp``.
* ``bf_cert``: the same plus the nearest point of another label (``dn``): what a
  classification certificate needs, brute force.

* ``handler``: the server's own Certify handler without gRPC (``References.certify``
  with the servicer's decode and encode, on the stopped server's store, the reference
  loaded from its blob as the server loads it, requests built outside the clock), in a
  fresh process: the gRPC time minus this is transport, (de)serialisation and the client.
  Also timed:
  the handler with the reference's answer ready (its own work outside certify).

Tables: one query per call (``--single`` calls: median, p90, min in ms); a batch of 1 000
queries per call (``--batches`` calls: median, min in s, queries/s); ``CertifyStream``
throughput (one bidirectional call carrying ``--stream`` messages of 1 query, and 10
messages of 100 queries) beside the unary calls' throughput. ``x in-process`` is a time
over the in-process time of the same table. Below the tables: where the batch time goes
in-process (the k=32 neighbour search alone, the queries whose 32 nearest points all
share one label and so need a second search each), the client's encode/decode cost, the
server's CPU, and a cross-check of the answers (nearest index, dp, dn) between the
server, the in-process reference and the brute force. At the end, the targets (single
query median < 5 ms, batch of 1 000 median < 1 s) as a checklist.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from _report import (
    child_result,
    emit,
    env_line,
    machine_line,
    pool_lines,
    proc_status,
    table,
    thread_pools,
)

from layerscope.client.server_process import ServerProcess

SEED = 0
QUERY_SEED = 1
N_REF = 10_000
D = 512
N_CLASSES = 10
CENTRE_SCALE = 0.5
NOISE = 0.1
N_QUERIES = 1_000
UNCERTAINTY = 0.1
LAYER = "features"
IR_VERSION = 10  # what onnxruntime reads (onnx.helper would write its newest)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WARMUP = 5
STREAM_BATCH = 100
DEFAULT = {"single": 200, "batches": 10, "stream": 1000, "inproc_runs": 3}
QUICK = {"single": 50, "batches": 3, "stream": 200, "inproc_runs": 2}
TARGET_SINGLE_MS = 5.0
TARGET_BATCH_S = 1.0
MB = 1 << 20
GB = 1 << 30

LABELS = {
    "grpc": "gRPC Certify (client's view)",
    "handler": "server handler alone, no gRPC",
    "inproc": "in-process ClassificationReference.certify",
    "search": "in-process index.search k=32 alone",
    "bf_nn": "NumPy float64 brute force: nearest",
    "bf_cert": "NumPy float64 brute force: nearest + other label",
}


# --------------------------------------------------------------------------- worker side


def make_reference(n: int, d: int) -> tuple[Any, Any]:
    """Return (x float32 (n, d), labels int64 (n,)): a seeded mixture of tight clusters."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    centres = rng.standard_normal((N_CLASSES, d), dtype=np.float32) * np.float32(CENTRE_SCALE)
    labels = rng.integers(0, N_CLASSES, size=n, dtype=np.int64)
    x = centres[labels] + rng.standard_normal((n, d), dtype=np.float32) * np.float32(NOISE)
    return x.astype(np.float32), labels


def make_queries(d: int) -> Any:
    """Return (N_QUERIES, d) float32: fresh points of the reference's mixture."""
    import numpy as np

    centres = np.random.default_rng(SEED).standard_normal((N_CLASSES, d), dtype=np.float32)
    centres *= np.float32(CENTRE_SCALE)  # the reference's centres: its rng's first draw
    rng = np.random.default_rng(QUERY_SEED)
    labels = rng.integers(0, N_CLASSES, size=N_QUERIES)
    q = centres[labels] + rng.standard_normal((N_QUERIES, d), dtype=np.float32) * np.float32(NOISE)
    return q.astype(np.float32)


def make_model(d: int) -> Any:
    """The ONNX model: x -> Identity -> features -> Gemm -> logits (opset 17)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(SEED)
    w = (rng.standard_normal((d, N_CLASSES)) / math.sqrt(d)).astype(np.float32)
    b = np.zeros(N_CLASSES, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], [LAYER]),
         helper.make_node("Gemm", [LAYER, "W", "B"], ["logits"])],
        "certify_benchmark",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup_worker(address: str, n: int, d: int) -> dict:
    """Upload the model and the reference set, build the reference; return its id."""
    from layerscope.client.client import Client

    x, labels = make_reference(n, d)
    model = make_model(d)
    client = Client(address)
    try:
        client.wait_ready(30)
        t0 = time.perf_counter()
        stored = client.upload_model(model, name="certify-benchmark.onnx")
        t_model = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = client.upload_dataset({"x": x}, labels=labels, name="certify-benchmark")
        t_data = time.perf_counter() - t0
        t0 = time.perf_counter()
        ref = client.build_reference(stored, ds, layer=LAYER).to_dict()
        t_ref = time.perf_counter() - t0
    finally:
        client.close()
    return {"model_upload_s": t_model, "dataset_upload_s": t_data, "build_reference_s": t_ref,
            "dataset_bytes": int(ds.size_bytes), "model_bytes": len(model.SerializeToString()),
            "layers": [la.name for la in stored.layers], "reference": ref}


def _cols(rows: Sequence[dict]) -> dict:
    """nn_index, dp, dn (None: infinite) and guarantee of certify results, as lists."""
    return {"nn_index": [int(r["nn_index"]) for r in rows],
            "dp": [float(r["dp"]) for r in rows],
            "dn": [None if r["dn"] is None else float(r["dn"]) for r in rows],
            "guarantee": [int(r["guarantee"]) for r in rows]}


def grpc_worker(address: str, ref_id: str, server_pid: int, d: int, cfg: dict) -> dict:
    """Time Certify (single and batch) and CertifyStream from a client process."""
    import gc

    from layerscope.client.client import Client
    from layerscope.client.results import CertifyResult

    q = make_queries(d)
    nq = len(q)
    out: dict[str, Any] = {}
    client = Client(address)
    try:
        client.wait_ready(30)

        def certify(block: Any) -> Any:
            return client.certify(ref_id, features=block, uncertainty=UNCERTAINTY)

        t0 = time.perf_counter()
        first = certify(q[:1])
        out["first_call_s"] = time.perf_counter() - t0
        out["warnings"] = list(first.warnings)
        for i in range(WARMUP):
            certify(q[i : i + 1])
        certify(q)
        gc.collect()

        single = []
        s0 = _proc_cpu(server_pid)
        c0 = time.process_time()
        for i in range(cfg["single"]):
            j = i % nq
            t0 = time.perf_counter()
            certify(q[j : j + 1])
            single.append(time.perf_counter() - t0)
        out["single"] = single
        out["single_cpu"] = {"server": _proc_cpu(server_pid) - s0,
                             "client": time.process_time() - c0}
        print(f"  grpc single: median {1000 * sorted(single)[len(single) // 2]:.2f} ms",
              file=sys.stderr, flush=True)

        batch = []
        last = None
        s0 = _proc_cpu(server_pid)
        c0 = time.process_time()
        for r in range(cfg["batches"]):
            t0 = time.perf_counter()
            last = certify(q)
            batch.append(time.perf_counter() - t0)
            print(f"  grpc batch {r + 1}/{cfg['batches']}: {batch[-1]:.3f} s", file=sys.stderr,
                  flush=True)
        out["batch"] = batch
        out["batch_cpu"] = {"server": _proc_cpu(server_pid) - s0,
                            "client": time.process_time() - c0}
        assert last is not None
        out["answers"] = _cols(last.results)

        # The client's own work for a batch: encoding the request, parsing the reply.
        t0 = time.perf_counter()
        req = client._certify_request(ref_id, q, None, UNCERTAINTY, 1, "conservative")
        out["encode_s"] = time.perf_counter() - t0
        raw = client._analysis.Certify(req)
        t0 = time.perf_counter()
        CertifyResult.from_proto(raw)
        out["decode_s"] = time.perf_counter() - t0
        out["request_bytes"] = req.ByteSize()
        out["reply_bytes"] = raw.ByteSize()

        def stream(per_message: int, messages: int) -> dict:
            def batches() -> Iterator[Any]:
                for i in range(messages):
                    s = (i * per_message) % nq
                    yield q[s : s + per_message]

            t0 = time.perf_counter()
            got = sum(len(res) for res in client.certify_stream(ref_id, batches(),
                                                                uncertainty=UNCERTAINTY))
            seconds = time.perf_counter() - t0
            print(f"  grpc stream {messages} x {per_message}: {seconds:.3f} s", file=sys.stderr,
                  flush=True)
            return {"per_message": per_message, "messages": messages, "queries": got,
                    "seconds": seconds}

        stream(1, WARMUP)
        out["stream"] = [stream(1, cfg["stream"]),
                         stream(STREAM_BATCH, max(1, nq // STREAM_BATCH))]
    finally:
        client.close()
    return out


def inproc_worker(n: int, d: int, cfg: dict) -> dict:
    """Time ClassificationReference.certify and the NumPy brute force in one process."""
    import gc

    import faiss  # noqa: F401 - the index imports it on first use; not timed
    import numpy as np

    from layerscope.server.metrics.guarantee import OTHER_K, ClassificationReference

    x, labels = make_reference(n, d)
    q = make_queries(d)
    nq = len(q)
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    ref = ClassificationReference(x, labels)
    out["construct_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref.certify(q[:1], UNCERTAINTY)
    out["first_call_s"] = time.perf_counter() - t0
    for i in range(WARMUP):
        ref.certify(q[i : i + 1], UNCERTAINTY)
    ref.certify(q, UNCERTAINTY)

    # brute force, float64, everything prepared once
    x64 = x.astype(np.float64)
    xsq = np.einsum("ij,ij->i", x64, x64)

    def bf(block: Any, other: bool) -> tuple[Any, Any, Any]:
        q64 = block.astype(np.float64)
        d2 = q64 @ x64.T
        d2 *= -2.0
        d2 += xsq[None, :]
        d2 += np.einsum("ij,ij->i", q64, q64)[:, None]
        nn = np.argmin(d2, axis=1)
        rows = np.arange(len(block))
        dp = np.sqrt(np.maximum(d2[rows, nn], 0.0))
        if not other:
            return nn, dp, None
        d2[labels[None, :] == labels[nn][:, None]] = np.inf
        dn = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
        return nn, dp, dn

    bf(q[:2], True)
    methods = {
        "inproc": lambda block: ref.certify(block, UNCERTAINTY),
        "bf_nn": lambda block: bf(block, False),
        "bf_cert": lambda block: bf(block, True),
    }
    for name, call in methods.items():
        gc.collect()
        single = []
        for i in range(cfg["single"]):
            j = i % nq
            t0 = time.perf_counter()
            call(q[j : j + 1])
            single.append(time.perf_counter() - t0)
        batch = []
        for _ in range(cfg["batches"]):
            t0 = time.perf_counter()
            res = call(q)
            batch.append(time.perf_counter() - t0)
        out[name] = {"single": single, "batch": batch}
        print(f"  {name}: single median {1000 * sorted(single)[len(single) // 2]:.2f} ms, "
              f"batch median {sorted(batch)[len(batch) // 2]:.3f} s", file=sys.stderr,
              flush=True)
        if name == "inproc":
            out["answers"] = {"nn_index": res["nn_index"].tolist(), "dp": res["dp"].tolist(),
                              "dn": [None if math.isinf(v) else v for v in res["dn"].tolist()],
                              "guarantee": res["guarantee"].tolist()}
        elif name == "bf_cert":
            nn, dp, dn = res
            out["bf_answers"] = {"nn_index": nn.tolist(), "dp": dp.tolist(), "dn": dn.tolist()}

    # where the in-process batch goes: the k-nearest search alone, and the second searches
    k = min(OTHER_K, len(labels))
    search = []
    for _ in range(max(1, min(3, cfg["batches"]))):
        t0 = time.perf_counter()
        nb = ref.index.search(q, k, return_distance=True)
        search.append(time.perf_counter() - t0)
    lab = labels[np.asarray(nb.indices)]
    out["search"] = {"batch": search, "k": k,
                     "one_label_rows": int((lab == lab[:, :1]).all(axis=1).sum()),
                     "certified_rows": nb.certified_rows, "reranked_rows": nb.reranked_rows,
                     "fallback_rows": nb.fallback_rows, "candidate_search": nb.candidate_search}
    single_other = []
    for i in range(min(cfg["single"], 50)):
        c = int(labels[np.asarray(nb.indices)[i, 0]])
        t0 = time.perf_counter()
        ref._others(c).search(q[i : i + 1], 1, return_distance=True)
        single_other.append(time.perf_counter() - t0)
    out["other_search_single"] = single_other
    return out


def handler_worker(data_dir: Path, ref_id: str, d: int, cfg: dict) -> dict:
    """Time the server's Certify handler without gRPC: ``References.certify`` (decoded and
    encoded as the servicer does) on the
    stopped server's store (the reference loaded as the server loads it), in this process."""
    import gc

    import faiss  # noqa: F401 - the index imports it on first use; not timed

    from layerscope.protos.codec import tensor as _tensor
    from layerscope.protos.stubs import analysis_pb2
    from layerscope.server.analysis.references import References
    from layerscope.server.api import convert
    from layerscope.server.store import Store

    q = make_queries(d)
    nq = len(q)

    def request(block: Any) -> Any:
        req = analysis_pb2.CertifyRequest(reference_id=ref_id, uncertainty=UNCERTAINTY,
                                          order=1, mode="conservative")
        req.features.CopyFrom(_tensor(block))
        return req

    store = Store(data_dir)
    try:
        refs = References(store)

        def handle(req: Any) -> Any:
            return convert.certify_response(refs.certify(convert.certify_request(req)))

        singles = [request(q[i % nq : i % nq + 1]) for i in range(cfg["single"])]
        whole = request(q)
        out: dict[str, Any] = {}
        t0 = time.perf_counter()
        handle(singles[0])
        out["first_call_s"] = time.perf_counter() - t0
        for req in singles[:WARMUP]:
            handle(req)
        handle(whole)
        gc.collect()
        single = []
        for req in singles:
            t0 = time.perf_counter()
            handle(req)
            single.append(time.perf_counter() - t0)
        _, ref = refs.load(ref_id)
        batch, inner = [], []
        for _ in range(cfg["batches"]):  # the handler, then the reference's certify alone
            t0 = time.perf_counter()
            handle(whole)
            batch.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ref.certify(q, UNCERTAINTY)
            inner.append(time.perf_counter() - t0)
        out["single"], out["batch"], out["ref_certify_batch"] = single, batch, inner

        # The handler's own work: the same call with the reference's answer ready.
        answer = ref.certify(q, UNCERTAINTY)
        row = refs.load(ref_id)[0]

        class Ready:
            classes = ref.classes

            def certify(self, *args: Any) -> Any:
                return answer

        ready = Ready()
        refs.load = lambda _id: (row, ready)  # type: ignore[method-assign,assignment,return-value]
        own = []
        for _ in range(5):
            t0 = time.perf_counter()
            handle(whole)
            own.append(time.perf_counter() - t0)
        out["handler_own_batch"] = own
        ms, bs = 1000 * sorted(single)[len(single) // 2], sorted(batch)[len(batch) // 2]
        print(f"  handler: single median {ms:.2f} ms, batch median {bs:.3f} s",
              file=sys.stderr, flush=True)
    finally:
        store.close()
    return out


def info_worker(d: int) -> dict:
    """Library versions and the thread pools the server's code loads."""
    import faiss
    import google.protobuf
    import grpc
    import numpy as np
    import onnx
    import onnxruntime as ort

    import layerscope
    from layerscope.server.metrics.guarantee import ClassificationReference

    x, labels = make_reference(300, d)
    ClassificationReference(x, labels).certify(x[:3], UNCERTAINTY)
    sess = ort.InferenceSession(make_model(d).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    sess.run(None, {"x": x[:4]})
    pools = thread_pools()
    return {"python": platform.python_version(), "numpy": np.__version__,
            "grpcio": grpc.__version__, "protobuf": google.protobuf.__version__,
            "onnx": onnx.__version__, "onnxruntime": ort.__version__,
            "faiss": faiss.__version__, "layerscope": layerscope.__version__, "pools": pools}


# --------------------------------------------------------------------------- driver side
# The driver imports nothing heavy; the server and every measurement run in child processes.


run_child = partial(child_result, __file__)


def median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else 0.5 * (s[mid - 1] + s[mid])


def quantile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-quantile (p90: the smallest value >= 90% of the values)."""
    if not values:
        return None
    s = sorted(values)
    return s[max(0, math.ceil(p * len(s)) - 1)]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _ms(value: float | None) -> float | None:
    return None if value is None else 1000 * value


def merge_runs(runs: list[dict]) -> dict | None:
    """The in-process runs as one: per method and kind, the run with the lowest median;
    the medians of every run kept in ``medians`` for the notes."""
    if not runs:
        return None
    out = dict(runs[0])
    out["medians"] = {}
    for name in ("inproc", "bf_nn", "bf_cert", "search"):
        out[name] = dict(runs[0][name])
        for kind in ("single", "batch"):
            have = [r[name][kind] for r in runs if kind in r[name]]
            if not have:
                continue
            out[name][kind] = min(have, key=lambda v: median(v) or 0.0)
            out["medians"][(name, kind)] = [median(v) for v in have]
    return out


def _run_note(inproc: dict | None, name: str, kind: str, scale: float, spec: str) -> str:
    """'best of N processes (medians a, b, c)' where several in-process runs were made."""
    if inproc is None or name in ("grpc", "handler"):
        return ""
    meds = inproc["medians"].get((name, kind), [])
    if len(meds) < 2:
        return ""
    return (f"best of {len(meds)} processes (medians "
            + ", ".join(format(scale * m, spec) for m in meds) + ")")


def _series(grpc: dict | None, inproc: dict | None, key: str) -> dict[str, list[float]]:
    """Each method's timings of one kind ('single' or 'batch')."""
    out: dict[str, list[float]] = {}
    if grpc is not None:
        out["grpc"] = grpc[key]
        if grpc.get("handler"):
            out["handler"] = grpc["handler"][key]
    if inproc is not None:
        for name in ("inproc", "bf_nn", "bf_cert"):
            out[name] = inproc[name][key]
        if key == "batch":
            out["search"] = inproc["search"]["batch"]
    return out


def _missing(grpc: dict | None, name: str) -> str:
    if name == "handler" and grpc is not None and grpc.get("handler_error"):
        return f"not measured: {grpc['handler_error']}"
    return "not measured"


def single_lines(grpc: dict | None, inproc: dict | None, cfg: dict, markdown: bool
                 ) -> list[str]:
    series = _series(grpc, inproc, "single")
    base = median(series.get("inproc", []))
    head = ["method", "median ms", "p90 ms", "min ms", "x in-process", "note"]
    body = []
    for name in ("grpc", "handler", "inproc", "bf_nn", "bf_cert"):
        v = series.get(name)
        if v is None:
            body.append([LABELS[name], "-", "-", "-", "-", _missing(grpc, name)])
            continue
        med = median(v)
        body.append([LABELS[name], _fmt(_ms(med), ".2f"), _fmt(_ms(quantile(v, 0.9)), ".2f"),
                     _fmt(_ms(min(v)), ".2f"),
                     _fmt(med / base if med and base else None, ".2f"),
                     _run_note(inproc, name, "single", 1000, ".2f")])
    title = (f"one query per call (1 x {D} float32), {cfg['single']} calls, each a different "
             f"query, uncertainty {UNCERTAINTY}")
    lines = table(title, head, body, markdown)
    if grpc is not None:
        cpu = grpc["single_cpu"]
        n = len(grpc["single"])
        lines.append(f"CPU per gRPC call: server {1000 * cpu['server'] / n:.2f} ms, client "
                     f"{1000 * cpu['client'] / n:.2f} ms (process CPU over the {n} calls)")
    if inproc is not None and inproc.get("other_search_single"):
        v = inproc["other_search_single"]
        lines.append(f"in-process, one query: the second search (the nearest point of another "
                     f"label, over the other classes' points) alone: median "
                     f"{1000 * median(v):.2f} ms ({len(v)} calls)")  # type: ignore[operator]
    return lines + [""]


def batch_lines(grpc: dict | None, inproc: dict | None, cfg: dict, markdown: bool
                ) -> list[str]:
    series = _series(grpc, inproc, "batch")
    base = median(series.get("inproc", []))
    head = ["method", "median s", "min s", "queries/s", "x in-process", "note"]
    body = []
    for name in ("grpc", "handler", "inproc", "search", "bf_nn", "bf_cert"):
        v = series.get(name)
        if v is None:
            body.append([LABELS[name], "-", "-", "-", "-", _missing(grpc, name)])
            continue
        med = median(v)
        note = f"{len(v)} calls" if name == "search" else ""
        more = _run_note(inproc, name, "batch", 1, ".3f")
        note = "; ".join(t for t in (note, more) if t)
        body.append([LABELS[name], _fmt(med, ".3f"), _fmt(min(v), ".3f"),
                     _fmt(N_QUERIES / med if med else None, ".0f"),
                     _fmt(med / base if med and base else None, ".2f"), note])
    title = f"a batch of {N_QUERIES} queries per call ({N_QUERIES} x {D}), {cfg['batches']} calls"
    lines = table(title, head, body, markdown)
    if inproc is not None:
        s = inproc["search"]
        med_s, med_in = median(s["batch"]), base
        rest = None if med_s is None or med_in is None else med_in - med_s
        lines.append(
            f"in-process batch: the k={s['k']} search {med_s:.3f} s (search "
            f"{s['candidate_search']}: certified {s['certified_rows']}, reranked "
            f"{s['reranked_rows']}, fallback {s['fallback_rows']} rows), the rest "
            f"{_fmt(rest, '.3f')} s: {s['one_label_rows']} of {N_QUERIES} queries have all "
            f"{s['k']} nearest points of one label, so certify searches the other labels' "
            "points once more for them (one search per nearest label)")
    handler = None if grpc is None else grpc.get("handler")
    if grpc is not None and handler is not None:
        g, h = median(grpc["batch"]) or 0.0, median(handler["batch"]) or 0.0
        own = median(handler["handler_own_batch"]) or 0.0
        lines.append(
            f"gRPC batch: median {g:.3f} s; the server's handler alone (no gRPC) median "
            f"{h:.3f} s, of which {1000 * own:.1f} ms outside ClassificationReference.certify "
            f"(decoding the queries, building the {N_QUERIES} results: the handler timed with "
            f"the answer ready); ClassificationReference.certify alone in that process, median "
            f"{_fmt(median(handler['ref_certify_batch']), '.3f')} s; gRPC minus handler "
            f"{g - h:.3f} s (transport, the client, and the spread between runs: see min s)")
    if grpc is not None:
        cpu = grpc["batch_cpu"]
        n = len(grpc["batch"])
        lines.append(f"gRPC batch: the client encodes the request in {1000 * grpc['encode_s']:.1f}"
                     f" ms ({grpc['request_bytes'] / MB:.2f} MB) and parses the reply in "
                     f"{1000 * grpc['decode_s']:.1f} ms ({grpc['reply_bytes'] / 1024:.0f} KiB); "
                     f"CPU per call: server {cpu['server'] / n:.3f} s, client "
                     f"{cpu['client'] / n:.3f} s")
    return lines + [""]


def stream_lines(grpc: dict | None, markdown: bool) -> list[str]:
    title = "throughput: CertifyStream (one bidirectional call) and unary Certify"
    if grpc is None:
        return [title, "  not measured", ""]
    head = ["call", "messages", "queries", "time s", "queries/s", "ms per message", "note"]
    body = []
    for s in grpc["stream"]:
        t = s["seconds"]
        body.append([f"CertifyStream, {s['per_message']} per message", str(s["messages"]),
                     str(s["queries"]), f"{t:.3f}", f"{s['queries'] / t:.0f}",
                     f"{1000 * t / s['messages']:.2f}", ""])
    single, batch = grpc["single"], grpc["batch"]
    t = sum(single)
    body.append(["Certify, 1 per call", str(len(single)), str(len(single)), f"{t:.3f}",
                 f"{len(single) / t:.0f}", f"{1000 * t / len(single):.2f}", "the single calls"])
    t = sum(batch)
    body.append([f"Certify, {N_QUERIES} per call", str(len(batch)), str(N_QUERIES * len(batch)),
                 f"{t:.3f}", f"{N_QUERIES * len(batch) / t:.0f}",
                 f"{1000 * t / len(batch):.2f}", "the batch calls"])
    return table(title, head, body, markdown) + [""]


def crosscheck_lines(grpc: dict | None, inproc: dict | None) -> list[str]:
    if grpc is None or inproc is None:
        return []
    g, i, b = grpc["answers"], inproc["answers"], inproc["bf_answers"]

    def nn_diff(a: dict, c: dict) -> int:
        return sum(x != y for x, y in zip(a["nn_index"], c["nn_index"], strict=True))

    def max_diff(a: dict, c: dict, key: str) -> float:
        pairs = [(x, y) for x, y in zip(a[key], c[key], strict=True)]
        if any((x is None) != (y is None) for x, y in pairs):
            return math.inf
        return max((abs(x - y) for x, y in pairs if x is not None), default=0.0)

    counts = {v: g["guarantee"].count(v) for v in (-1, 0, 1)}
    return [
        f"cross-check on the {N_QUERIES} batch queries: nearest index differs server vs "
        f"in-process {nn_diff(g, i)}, server vs brute force {nn_diff(g, b)}; max |dp| "
        f"difference {max_diff(g, i, 'dp'):.1e} (in-process), {max_diff(g, b, 'dp'):.1e} (brute "
        f"force); max |dn| difference {max_diff(g, i, 'dn'):.1e} (in-process), "
        f"{max_diff(g, b, 'dn'):.1e} (brute force); server guarantees: +1 {counts[1]}, "
        f"0 {counts[0]}, -1 {counts[-1]}; identical to in-process: "
        f"{g['guarantee'] == i['guarantee']}",
        "",
    ]


def checklist(grpc: dict | None) -> list[str]:
    def box(ok: bool | None) -> str:
        return "[ ]" if ok is None else ("[x]" if ok else "[!]")

    s = None if grpc is None else median(grpc["single"])
    b = None if grpc is None else median(grpc["batch"])
    return [
        "Targets ([x] met, [!] missed, [ ] not measured):",
        f"- {box(None if s is None else 1000 * s < TARGET_SINGLE_MS)} single query through "
        f"gRPC, median < {TARGET_SINGLE_MS:.0f} ms ({_fmt(_ms(s), '.2f')} ms)",
        f"- {box(None if b is None else b < TARGET_BATCH_S)} batch of {N_QUERIES} through gRPC, "
        f"median < {TARGET_BATCH_S:.0f} s ({_fmt(b, '.3f')} s)",
    ]


def header_lines(info: dict | None, err: str, setup: dict, inproc: dict | None,
                 server: ServerProcess, args: argparse.Namespace, markdown: bool) -> list[str]:
    items = [machine_line(available=True)]
    if info is None:
        items.append(f"library info unavailable: {err}")
    else:
        items.append(f"python {info['python']}, numpy {info['numpy']}, grpcio {info['grpcio']}, "
                     f"protobuf {info['protobuf']}, onnx {info['onnx']}, onnxruntime "
                     f"{info['onnxruntime']}, faiss {info['faiss']}, layerscope "
                     f"{info['layerscope']}")
    items.append(env_line())
    if info is not None:
        items += pool_lines(info["pools"])
    items.append(f"server: python -m layerscope.server.api --host 127.0.0.1 --port 0, at "
                 f"{server.address}, pid {server.pid}; the client and the in-process baselines "
                 "run in other processes on the same machine")
    ref = setup["reference"]
    summ = ref.get("summary", {})
    items.append(
        f"reference: n={args.n} points, d={args.d}, {N_CLASSES} classes (centres "
        f"N(0, {CENTRE_SCALE}^2), noise N(0, {NOISE}^2), seed {SEED}); model x -> Identity -> "
        f"{LAYER} -> Gemm -> logits ({setup['model_bytes'] / 1024:.0f} KiB, layers "
        f"{setup['layers']}); reference layer {ref.get('layer')!r} ({ref.get('layer_rule')}, "
        f"reduction {ref.get('reduction')}), {ref.get('n_samples')} x {ref.get('features')}; "
        f"dataset guarantee: confidence {summ.get('confidence')}, dw_max "
        f"{_fmt(summ.get('dw_max'), '.3f')}, db_min {_fmt(summ.get('db_min'), '.3f')}, "
        f"max_uncertainty {_fmt(summ.get('max_uncertainty'), '.3f')}")
    items.append(f"setup through the server: upload_model {setup['model_upload_s']:.3f} s, "
                 f"upload_dataset {setup['dataset_upload_s']:.3f} s "
                 f"({setup['dataset_bytes'] / MB:.1f} MB), build_reference "
                 f"{setup['build_reference_s']:.3f} s")
    if inproc is not None:
        items.append(f"in-process: ClassificationReference(...) {inproc['construct_s']:.3f} s, "
                     f"its first certify (computes the confidence) "
                     f"{inproc['first_call_s']:.3f} s")
    items.append(f"queries: {N_QUERIES} fresh points of the mixture (seed {QUERY_SEED}), "
                 f"uncertainty {UNCERTAINTY}")
    if markdown:
        return ["## Certify benchmark", ""] + [f"- {s}" for s in items] + [""]
    return items + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: {single} single calls, {batches} batches, "
                        "{stream} stream messages".format(**QUICK))
    parser.add_argument("--single", type=int, default=None,
                        help=f"single-query calls (default {DEFAULT['single']})")
    parser.add_argument("--batches", type=int, default=None,
                        help=f"batch calls of {N_QUERIES} queries (default {DEFAULT['batches']})")
    parser.add_argument("--stream", type=int, default=None,
                        help=f"1-query messages in the stream (default {DEFAULT['stream']})")
    parser.add_argument("--inproc-runs", type=int, default=None,
                        help="fresh processes for the in-process baselines, the best median "
                        f"of each kept (default {DEFAULT['inproc_runs']})")
    parser.add_argument("--threads", type=int, default=None,
                        help=f"set {', '.join(THREAD_VARS)} to this for the server and every "
                        "worker (default: leave the environment as it is)")
    parser.add_argument("--n", type=int, default=N_REF,
                        help=f"reference points (default {N_REF})")
    parser.add_argument("--d", type=int, default=D, help=f"features (default {D})")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder for the temporary data dir (default: the system's)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before one worker is stopped (default 1800)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--setup-worker", nargs=3, metavar=("ADDR", "N", "D"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--grpc-worker", nargs=5, metavar=("ADDR", "REF", "PID", "D", "CFG"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--inproc-worker", nargs=3, metavar=("N", "D", "CFG"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--handler-worker", nargs=4, metavar=("DIR", "REF", "D", "CFG"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--info-worker", metavar="D", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.setup_worker:
        addr, n, d = args.setup_worker
        emit(setup_worker(addr, int(n), int(d)))
        return 0
    if args.grpc_worker:
        addr, ref_id, pid, d, cfg = args.grpc_worker
        res = grpc_worker(addr, ref_id, int(pid), int(d), json.loads(cfg))
        emit(res)
        return 0
    if args.inproc_worker:
        n, d, cfg = args.inproc_worker
        res = inproc_worker(int(n), int(d), json.loads(cfg))
        emit(res)
        return 0
    if args.handler_worker:
        folder, ref_id, d, cfg = args.handler_worker
        res = handler_worker(Path(folder), ref_id, int(d), json.loads(cfg))
        emit(res)
        return 0
    if args.info_worker:
        emit(info_worker(int(args.info_worker)))
        return 0

    base = QUICK if args.quick else DEFAULT
    cfg = {k: max(1, getattr(args, k) or v) for k, v in base.items()}
    if args.threads:
        for var in THREAD_VARS:  # inherited by the server and the workers
            os.environ[var] = str(args.threads)
    started = time.perf_counter()
    info, info_err = run_child(["--info-worker", str(args.d)], args.timeout)
    with tempfile.TemporaryDirectory(prefix="layerscope-bench-certify-", dir=args.tmp) as tmp:
        folder = Path(tmp)
        server = ServerProcess(folder / "data", log_path=folder / "server.log")
        try:
            address = server.wait_ready(120)
            setup, err = run_child(["--setup-worker", address, str(args.n), str(args.d)],
                                   args.timeout)
            if setup is None:
                print(f"setup failed: {err}\n{server.log_tail()}", file=sys.stderr)
                return 1
            ref_id = str(setup["reference"]["id"])
            grpc, grpc_err = run_child(["--grpc-worker", address, ref_id, str(server.pid),
                                        str(args.d), json.dumps(cfg)], args.timeout)
            rss = proc_status(server.pid, "VmRSS")
            if server.proc.poll() is not None:
                grpc_err += f"; the server exited (rc={server.proc.returncode}):\n" \
                            f"{server.log_tail()}"
        finally:
            server.stop()
        if grpc is not None:  # the server's handler on its store, without gRPC
            handler, herr = run_child(["--handler-worker", str(folder / "data"), ref_id,
                                       str(args.d), json.dumps(cfg)], args.timeout)
            grpc["handler"] = handler
            grpc["handler_error"] = herr
        # in-process baselines once the server is gone (they do not share the CPU with it)
        runs = []
        inproc_err = ""
        for _ in range(cfg["inproc_runs"]):
            got, inproc_err = run_child(["--inproc-worker", str(args.n), str(args.d),
                                         json.dumps(cfg)], args.timeout)
            if got is None:
                break
            runs.append(got)
        inproc = merge_runs(runs)
    out = header_lines(info, info_err, setup, inproc, server, args, args.markdown)
    if grpc is not None:
        extra = f"first gRPC call (the server loads the reference, prepares its index and " \
                f"computes its confidence): {grpc['first_call_s']:.3f} s"
        if rss:
            extra += f"; server resident memory after the calls {rss / MB:.0f} MB"
        out.insert(-1, f"- {extra}" if args.markdown else extra)
    else:
        out.append(f"gRPC measurements failed: {grpc_err}")
    if inproc is None:
        out.append(f"in-process measurements failed: {inproc_err}")
    out += single_lines(grpc, inproc, cfg, args.markdown)
    out += batch_lines(grpc, inproc, cfg, args.markdown)
    out += stream_lines(grpc, args.markdown)
    out += crosscheck_lines(grpc, inproc)
    out += checklist(grpc)
    out += ["", f"total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
