"""Benchmark: the layerscope server on loopback against local baselines.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/server.py                   # 1 GB upload, n=10000 (~1.5 min)
    .venv/bin/python benchmarks/server.py --quick           # smoke test: 100 MB, n=4000 (~25 s)
    .venv/bin/python benchmarks/server.py --upload-mb 512 --n 20000 --repeats 5
    .venv/bin/python benchmarks/server.py --parts analysis  # the analysis overhead alone
    .venv/bin/python benchmarks/server.py --markdown > table.md  # for benchmarks/RESULTS.md

One run starts one server as a subprocess (``python -m layerscope.server.api --host
127.0.0.1 --port 0 --data-dir DIR --max-upload-mb 65536``) on a fresh temporary data
directory (under ``--tmp``, default the system's temporary folder), waits for its
``layerscope serving on HOST:PORT`` line, runs the measurements in child processes that
connect to it with ``layerscope.client.Client(address)``, then stops it with SIGTERM.
MB here is 2**20 bytes.

Part 1, upload (one child process generates the data once, then runs ``--repeats`` rounds;
each round times every method once, the order of the disk write and the upload alternating
between rounds; the best round of each method is kept):

* data: ``--upload-mb`` MB of float32 inputs of shape (n, 1024) (n = MB * 256, standard
  normal, seed 0) plus n int64 labels 0..9: 1 GB + 2 MB by default.
* ``sha256``: ``hashlib.sha256`` over the same bytes in the client's 1 MiB pieces, alone.
* ``write``: the same bytes written in 1 MiB pieces to a new file in the server's data
  directory (the same filesystem as its blobs), then ``fsync``: the local disk speed.
* ``upload``: ``Client.upload_dataset({"inputs": x}, labels=y)`` from the client's view: the
  client's sha256 of the bytes, the stream over gRPC, and on the server the sha256 check,
  the write, ``fsync``, the rename into the store and the finite-value check, until the
  response arrives. The dataset is deleted after each round (outside the clock).
* ``reupload``: the same call again while the dataset is stored: the client's sha256, then
  the server answers ``already_present`` from the header.

Below the table: the upload split into the client's sha256 and the rest, the serial lower
bound (client sha256 + server sha256 + write + fsync + finite check, each measured alone;
the finite check is the server's own ``check_finite`` run in the client process on the
file of the ``write`` method, page cache warm), the client's and the server's CPU during the
best upload, and the server's resident memory before the uploads and at its peak (VmHWM).

Part 2, layer-wise analysis overhead (one child process; the server is the same):

* model: scikit-learn ``MLPClassifier`` (relu, hidden layers 256, 128, 64, seed 0) trained
  on the 1797 digits (pixels / 16), converted with skl2onnx (``zipmap`` off, opset 17).
* data: ``--n`` samples drawn from the digits with replacement plus Gaussian pixel noise
  (standard deviation 0.25, seed 0), float32 (n, 64), and their int64 labels.
* options for both paths: ``layers="auto"``, ``probe=False``, everything else default
  (indices si, high_order_si, soft_order_si, center_si at order 5; batch size and device
  chosen by layerscope).
* ``in-process``: ``layerscope.server.analysis.analyze_layers(model_path, {"features": x},
  labels=y, layers="auto", probe=False)`` in the client process (libraries imported first,
  not timed).
* ``server``: the model and the dataset are uploaded first (timed, reported below the table,
  not part of the comparison); then ``Client.start_layer_analysis(model, dataset,
  layers="auto", probe=False)`` and ``Client.watch`` until the job is final, result parsed
  (what ``Client.analyze_layers`` does with stored ids), timed from the client's view.
* ``--repeats`` rounds, alternating which path goes first; best of each.

Columns: ``time s`` (wall, ``time.perf_counter``), ``ratio to in-process``,
``analyze_layers s`` (the analysis's own clock, ``options["seconds"]`` of its result, in the
client or in the server), ``CPU s`` (user + system CPU of the processes doing the work: the
client process for in-process; the server process (from ``/proc/PID/stat``) plus the client
for the server path). Below: where the server path's time goes (from the job's
``created``/``started``/``finished`` stamps and the client's clock), and a cross-check
of the si values of both paths. At the end, the target (server <= 1.15x in-process) as a
checklist.
"""

from __future__ import annotations

import argparse
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
    mem_info,
    pool_lines,
    proc_status,
    table,
    thread_pools,
)

from layerscope.client.server_process import ServerProcess

SEED = 0
MB = 1 << 20
GB = 1 << 30
CHUNK = 1 << 20  # the client's piece size
UPLOAD_WIDTH = 1024
DEFAULT_UPLOAD_MB = 1024
QUICK_UPLOAD_MB = 100
DEFAULT_N = 10_000
QUICK_N = 4_000
HIDDEN = (256, 128, 64)
NOISE = 0.25
N_CLASSES = 10
MAX_UPLOAD_MB = 65536
TARGET_RATIO = 1.15
PARTS = ("upload", "analysis")
MODEL_FILE = "mlp.onnx"

UPLOAD_METHODS = ("sha256", "write", "upload", "reupload")
UPLOAD_LABELS = {
    "sha256": "sha256 alone (hashlib)",
    "write": "write + fsync, data dir's filesystem",
    "upload": "server upload (client's view, sha256 incl.)",
    "reupload": "re-upload, already present",
}
ANALYSIS_LABELS = {
    "inproc": "in-process analyze_layers",
    "server": "server: start + watch until done",
}



# --------------------------------------------------------------------------- worker side


def make_upload_data(mb: int) -> tuple[Any, Any]:
    """Return (x float32 (mb * 256, 1024), labels int64): ``mb`` MB of inputs, seeded."""
    import numpy as np

    n = mb * MB // (4 * UPLOAD_WIDTH)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((n, UPLOAD_WIDTH), dtype=np.float32)
    labels = rng.integers(0, N_CLASSES, size=n, dtype=np.int64)
    return x, labels


def make_analysis_data(n: int) -> tuple[Any, Any]:
    """Return (x float32 (n, 64), y int64): digits drawn with replacement plus pixel noise."""
    import numpy as np
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, len(x), size=n)
    noisy = x[idx] + rng.normal(0.0, NOISE, size=(n, x.shape[1])).astype(np.float32)
    return noisy.astype(np.float32), y[idx].astype(np.int64)


def _pieces(arrays: Sequence[Any]) -> Iterator[memoryview]:
    """The raw bytes of each array in 1 MiB pieces, as the client sends them (no copies)."""
    import numpy as np

    for a in arrays:
        buf = memoryview(a.reshape(-1).view(np.uint8))
        for s in range(0, len(buf), CHUNK):
            yield buf[s : s + CHUNK]


def _proc_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def model_worker(folder: Path) -> dict:
    """Train the MLP on the digits and write its ONNX conversion to ``folder``."""
    import warnings

    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    clf = MLPClassifier(hidden_layer_sizes=HIDDEN, max_iter=200, random_state=SEED)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x, y)
    onx = convert_sklearn(clf, initial_types=[("features", FloatTensorType([None, x.shape[1]]))],
                          options={id(clf): {"zipmap": False}}, target_opset=17)
    path = folder / MODEL_FILE
    path.write_bytes(onx.SerializeToString())
    xa, ya = make_analysis_data(2000)
    params = sum(w.size for w in clf.coefs_) + sum(b.size for b in clf.intercepts_)
    return {"params": int(params), "onnx_bytes": path.stat().st_size,
            "train_accuracy": float(clf.score(x, y)),
            "noisy_accuracy": float(clf.score(xa, ya))}


def info_worker(model_path: Path) -> dict:
    """Library versions, the thread pools, and the layers the auto rule picks."""
    import faiss
    import google.protobuf
    import grpc
    import numpy as np
    import onnx
    import onnxruntime as ort
    import skl2onnx
    import sklearn

    import layerscope
    from layerscope.server.analysis import analyze_layers
    from layerscope.server.runtime.session import make_session

    x, y = make_analysis_data(300)  # one small analysis loads every pool
    res = analyze_layers(str(model_path), {"features": x}, labels=y, layers="auto", probe=False)
    sess = make_session(model_path.read_bytes())
    pools = thread_pools()
    return {
        "python": platform.python_version(), "numpy": np.__version__,
        "grpcio": grpc.__version__, "protobuf": google.protobuf.__version__,
        "onnx": onnx.__version__, "onnxruntime": ort.__version__, "faiss": faiss.__version__,
        "sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
        "layerscope": layerscope.__version__,
        "ort_intra": sess.get_session_options().intra_op_num_threads,
        "pools": pools,
        "layers": [{"name": la.name, "kind": la.kind, "op": la.op_type, "dims": la.dims}
                   for la in res.layers],
    }


def upload_worker(address: str, data_dir: Path, mb: int, rounds: int, server_pid: int) -> dict:
    """Time sha256, write + fsync, the upload and the re-upload, ``rounds`` times each."""
    import gc
    import hashlib

    from layerscope.client.client import Client
    from layerscope.server.analysis.uploads import check_finite
    from layerscope.server.store.store import split_tensors

    arrays = list(make_upload_data(mb))  # [x, labels]; cleared at the end (1 GB)
    nbytes = int(sum(a.nbytes for a in arrays))
    specs = [{"name": "inputs", "dtype": "float32", "shape": list(arrays[0].shape)},
             {"name": "labels", "dtype": "int64", "shape": list(arrays[1].shape)}]
    target = data_dir / "benchmark-write.bin"
    times: dict[str, list[float]] = {m: [] for m in (*UPLOAD_METHODS, "finite")}
    cpu: list[tuple[float, float]] = []  # (client, server) CPU seconds of each upload
    digest = ""
    client = Client(address)
    try:
        client.wait_ready(30)

        def sha256() -> None:
            nonlocal digest
            h = hashlib.sha256()
            for piece in _pieces(arrays):
                h.update(piece)
            digest = h.hexdigest()

        def write() -> None:
            with open(target, "wb") as f:
                for piece in _pieces(arrays):
                    f.write(piece)
                f.flush()
                os.fsync(f.fileno())

        def upload() -> Any:
            return client.upload_dataset({"inputs": arrays[0]}, labels=arrays[1],
                                         name="benchmark-upload")

        for r in range(rounds):
            order = ("sha256", "write", "upload") if r % 2 == 0 else ("sha256", "upload",
                                                                         "write")
            for method in order:
                gc.collect()
                c0, s0 = time.process_time(), _proc_cpu(server_pid)
                t0 = time.perf_counter()
                if method == "sha256":
                    sha256()
                elif method == "write":
                    write()
                else:
                    ds = upload()
                seconds = time.perf_counter() - t0
                if method == "upload":
                    cpu.append((time.process_time() - c0, _proc_cpu(server_pid) - s0))
                times[method].append(seconds)
                if method == "write":
                    t0 = time.perf_counter()
                    check_finite(split_tensors(target, specs))
                    times["finite"].append(time.perf_counter() - t0)
                    target.unlink()
                    print(f"  write round {r + 1}/{rounds}: {seconds:.3f} s "
                          f"(finite check {times['finite'][-1]:.3f} s)", file=sys.stderr,
                          flush=True)
                else:
                    print(f"  {method} round {r + 1}/{rounds}: {seconds:.3f} s",
                          file=sys.stderr, flush=True)
            if ds.size_bytes != nbytes:
                raise RuntimeError(f"stored {ds.size_bytes} bytes, sent {nbytes}")
            t0 = time.perf_counter()
            again = upload()
            times["reupload"].append(time.perf_counter() - t0)
            print(f"  reupload round {r + 1}/{rounds}: {times['reupload'][-1]:.3f} s",
                  file=sys.stderr, flush=True)
            if again.id != ds.id:
                raise RuntimeError("the re-upload made a second dataset")
            client.delete_dataset(ds.id)
    finally:
        client.close()
        target.unlink(missing_ok=True)
        arrays.clear()
        gc.collect()
    return {"bytes": nbytes, "n": specs[0]["shape"][0], "sha256": digest, "times": times,
            "upload_cpu": cpu}


def analysis_worker(address: str, model_path: Path, n: int, rounds: int, server_pid: int
                    ) -> dict:
    """Time the in-process analysis and the server path, ``rounds`` times each."""
    import gc

    import faiss  # noqa: F401 - compute_indices imports it on first use; not timed
    import numpy as np
    import onnxruntime  # noqa: F401

    from layerscope.client.client import Client
    from layerscope.server.analysis import analyze_layers

    x, y = make_analysis_data(n)
    out: dict[str, Any] = {"inproc": [], "server": [], "errors": []}
    client = Client(address)
    try:
        client.wait_ready(30)
        t0 = time.perf_counter()
        model = client.upload_model(model_path)
        out["model_upload_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        ds = client.upload_dataset({"features": x}, labels=y, name="benchmark-analysis")
        out["dataset_upload_s"] = time.perf_counter() - t0
        out["dataset_bytes"] = int(ds.size_bytes)
        t0 = time.perf_counter()
        again = client.upload_dataset({"features": x}, labels=y, name="benchmark-analysis")
        out["dataset_reupload_s"] = time.perf_counter() - t0
        if again.id != ds.id:
            raise RuntimeError("the re-upload made a second dataset")

        def inproc() -> dict:
            c0 = time.process_time()
            t0 = time.perf_counter()
            res = analyze_layers(str(model_path), {"features": x}, labels=y, layers="auto",
                                 probe=False)
            seconds = time.perf_counter() - t0
            return {"seconds": seconds, "inner": res.options["seconds"],
                    "cpu": time.process_time() - c0,
                    "si": [la.values.get("si") for la in res.layers]}

        def server() -> dict:
            s0, c0 = _proc_cpu(server_pid), time.process_time()
            w0 = time.time()
            t0 = time.perf_counter()
            job = client.start_layer_analysis(model, ds, layers="auto", probe=False)
            start_rpc = time.perf_counter() - t0
            messages, last = 0, job
            for msg in client.watch(job):
                messages, last = messages + 1, msg
            seconds = time.perf_counter() - t0
            w_end = time.time()
            cpu_client, cpu_server = time.process_time() - c0, _proc_cpu(server_pid) - s0
            if last.state != "succeeded" or last.result is None:
                raise RuntimeError(f"job {last.id} {last.state}: {last.message}")
            data = last.result.data
            return {"seconds": seconds, "inner": data["options"]["seconds"],
                    "cpu": cpu_client + cpu_server, "cpu_client": cpu_client,
                    "cpu_server": cpu_server, "start_rpc": start_rpc, "messages": messages,
                    "to_created": last.created - w0, "queued": last.started - last.created,
                    "in_job": last.finished - last.started, "delivery": w_end - last.finished,
                    "si": [la.get("si") for la in data["layers"]]}

        for r in range(rounds):
            order = ("inproc", "server") if r % 2 == 0 else ("server", "inproc")
            for path in order:
                gc.collect()
                try:
                    res = inproc() if path == "inproc" else server()
                except Exception as exc:  # noqa: BLE001 - reported in the table
                    out["errors"].append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                out[path].append(res)
                print(f"  {path:6s} round {r + 1}/{rounds}: {res['seconds']:.3f} s "
                      f"(analyze_layers {res['inner']:.3f} s, CPU {res['cpu']:.2f} s)",
                      file=sys.stderr, flush=True)
        a = [v for run in out["inproc"][:1] for v in run["si"]]
        b = [v for run in out["server"][:1] for v in run["si"]]
        if a and b and len(a) == len(b) and None not in a and None not in b:
            out["si_diff"] = float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        out["layers"] = len(a or b)
    finally:
        client.close()
    return out


# --------------------------------------------------------------------------- driver side
# The driver imports nothing heavy; the server and every measurement run in child processes.


run_child = partial(child_result, __file__)


def filesystem(path: Path) -> str:
    """'DEVICE (FSTYPE at MOUNTPOINT, N GB free)' for the filesystem holding ``path``."""
    best = ("?", "?", "")
    real = str(path.resolve())
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[2]):
                best = (dev, fstype, mnt)
    st = os.statvfs(path)
    return f"{best[0]} ({best[1]} at {best[2]}, {st.f_bavail * st.f_frsize / GB:.0f} GB free)"


def _rounds(k: int) -> str:
    return f"{k} round" if k == 1 else f"{k} rounds"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _best(values: Sequence[float]) -> float | None:
    return min(values) if values else None


def upload_lines(res: dict | None, err: str, mb: int, rounds: int,
                 server_rss: tuple[int | None, int | None], markdown: bool) -> list[str]:
    title = f"upload: {mb} MB of float32 inputs + int64 labels, best of {_rounds(rounds)}"
    if res is None:
        return [title, f"  not measured: {err}", ""]
    size = res["bytes"]
    times = res["times"]
    best = {m: _best(times[m]) for m in (*UPLOAD_METHODS, "finite")}
    base = best["write"]
    head = ["method", "time s", "MB/s", "ratio to write + fsync", "note"]
    body = []
    for m in UPLOAD_METHODS:
        t = best[m]
        note = "the server answers already_present" if m == "reupload" else ""
        body.append([UPLOAD_LABELS[m], _fmt(t, ".3f"), _fmt(size / MB / t if t else None, ".0f"),
                     _fmt(t / base if t and base else None, ".2f"), note])
    title = (f"upload: {res['n']} x {UPLOAD_WIDTH} float32 inputs + int64 labels = "
             f"{size / MB:.1f} MB, best of {_rounds(rounds)}")
    lines = table(title, head, body, markdown)
    up, sha, wr, fin = best["upload"], best["sha256"], best["write"], best["finite"]
    if up and sha:
        i = times["upload"].index(up)
        c_cpu, s_cpu = res["upload_cpu"][i]
        lines.append(f"server upload = client sha256 {sha:.3f} s + stream, server sha256, "
                     f"write + fsync, finite check {up - sha:.3f} s "
                     f"({size / MB / (up - sha):.0f} MB/s after the client's hash); CPU in "
                     f"that upload: client {c_cpu:.2f} s, server {s_cpu:.2f} s")
    if up and sha and wr and fin is not None:
        low = 2 * sha + wr + fin
        lines.append(f"serial lower bound (2 x sha256 + write + fsync + finite check "
                     f"{fin:.3f} s): {low:.3f} s ({size / MB / low:.0f} MB/s); "
                     f"the upload takes {up / low:.2f}x that")
    start_rss, hwm = server_rss
    if start_rss and hwm:
        lines.append(f"server resident memory: {start_rss / MB:.0f} MB before the uploads, peak "
                     f"{hwm / MB:.0f} MB (VmHWM; it counts the pages of the memory-mapped blob "
                     "that the finite check reads)")
    lines.append("all rounds (s): " + "; ".join(
        f"{m} " + ", ".join(f"{t:.3f}" for t in times[m]) for m in (*UPLOAD_METHODS, "finite")))
    return lines + [""]


def analysis_lines(res: dict | None, err: str, n: int, rounds: int, markdown: bool
                   ) -> tuple[list[str], float | None, float | None]:
    """The table and notes; the ratio of best times and the ratio from the overhead alone
    ((in-process best + the server path's time outside analyze_layers) / in-process best)."""
    title = f"layer-wise analysis: n={n}, layers auto, probe off, best of {_rounds(rounds)}"
    if res is None:
        return [title, f"  not measured: {err}", ""], None, None
    best = {p: min(res[p], key=lambda r: r["seconds"]) if res[p] else None
            for p in ("inproc", "server")}
    base = best["inproc"]["seconds"] if best["inproc"] else None
    head = ["path", "time s", "ratio to in-process", "analyze_layers s", "CPU s", "note"]
    body = []
    for p in ("inproc", "server"):
        b = best[p]
        t = None if b is None else b["seconds"]
        note = "" if b is not None else "; ".join(e for e in res["errors"] if e.startswith(p))
        body.append([ANALYSIS_LABELS[p], _fmt(t, ".3f"),
                     _fmt(t / base if t and base else None, ".3f"),
                     _fmt(None if b is None else b["inner"], ".3f"),
                     _fmt(None if b is None else b["cpu"], ".2f"), note])
    lines = table(title, head, body, markdown)
    ratio = overhead_ratio = None
    s = best["server"]
    if s is not None and base:
        ratio = s["seconds"] / base
        job_extra = s["in_job"] - s["inner"]
        lines.append(
            f"server path, best run ({s['seconds']:.3f} s): request -> job created "
            f"{s['to_created']:.3f} s (start RPC returned after {s['start_rpc']:.3f} s), "
            f"queued {s['queued']:.3f} s, job setup + result dict {job_extra:.3f} s, "
            f"analyze_layers {s['inner']:.3f} s, result delivery (store, watch, convert, "
            f"send, parse) {s['delivery']:.3f} s; {s['messages']} watch messages; CPU: "
            f"server {s['cpu_server']:.2f} s, client {s['cpu_client']:.2f} s")
        inner_ratio = s["inner"] / best["inproc"]["inner"]
        outside = s["seconds"] - s["inner"]
        overhead_ratio = (base + outside) / base
        lines.append(f"analyze_layers alone, server / in-process: {inner_ratio:.3f}x (the same "
                     f"code on the same data: the difference is noise or the memory-mapped "
                     f"dataset); the server path's time outside it: {outside:.3f} s, "
                     f"{100 * outside / base:.1f}% of the in-process time "
                     f"(ratio from the overhead alone: {overhead_ratio:.3f}x)")
    lines.append(f"uploaded first, not timed above: model {res['model_upload_s']:.3f} s, "
                 f"dataset ({res['dataset_bytes'] / MB:.2f} MB) {res['dataset_upload_s']:.3f} s, "
                 f"the same dataset again (already present) {res['dataset_reupload_s']:.3f} s")
    if "si_diff" in res:
        lines.append(f"cross-check: max |si server - si in-process| over {res['layers']} "
                     f"layers = {res['si_diff']:.2e}")
    lines.append("all rounds (s): " + "; ".join(
        f"{ANALYSIS_LABELS[p]} " + ", ".join(f"{r['seconds']:.3f}" for r in res[p])
        for p in ("inproc", "server")))
    for e in res["errors"]:
        lines.append(f"error: {e}")
    return lines + [""], ratio, overhead_ratio


def checklist(ratio: float | None, overhead_ratio: float | None, measured: bool) -> list[str]:
    if ratio is None:
        box, detail = ("[!]", "failed") if measured else ("[ ]", "not measured")
    else:
        box, detail = ("[x]" if ratio <= TARGET_RATIO else "[!]"), f"{ratio:.3f}x"
        if overhead_ratio is not None:
            detail += f" best times; {overhead_ratio:.3f}x from the overhead alone"
    return ["Targets ([x] met, [!] missed, [ ] not measured):",
            f"- {box} layer-wise analysis through the server <= {TARGET_RATIO}x in-process "
            f"({detail})"]


def header_lines(info: dict | None, err: str, model: dict | None, server: ServerProcess,
                 data_dir: Path, args: argparse.Namespace, markdown: bool) -> list[str]:
    items = [machine_line(available=True)]
    if info is None:
        items.append(f"library info unavailable: {err}")
    else:
        items.append(f"python {info['python']}, numpy {info['numpy']}, grpcio {info['grpcio']}, "
                     f"protobuf {info['protobuf']}, onnx {info['onnx']}, onnxruntime "
                     f"{info['onnxruntime']}, faiss {info['faiss']}, scikit-learn "
                     f"{info['sklearn']}, skl2onnx {info['skl2onnx']}, layerscope "
                     f"{info['layerscope']}")
    items.append(env_line())
    if info is not None:
        items.append(f"onnxruntime: intra_op {info['ort_intra']} threads (make_session); the "
                     "same libraries and pools in the server, the client and in-process")
        items += pool_lines(info["pools"])
    items.append(f"server: python -m layerscope.server.api --host 127.0.0.1 --port 0 "
                 f"--max-upload-mb {MAX_UPLOAD_MB}, at {server.address}, pid {server.pid}; "
                 f"data dir on {filesystem(data_dir)}")
    if model is not None:
        items.append(f"model: MLPClassifier relu {'-'.join(map(str, HIDDEN))}, "
                     f"{model['params']:,} parameters, trained on the 1797 digits (accuracy "
                     f"{model['train_accuracy']:.3f}; {model['noisy_accuracy']:.3f} on noisy "
                     f"draws), skl2onnx opset 17, zipmap off, {model['onnx_bytes'] / 1024:.0f} KiB")
    if info is not None:
        layers = ", ".join(f"{la['name']} ({la['kind']}, {la['op']}, {la['dims']})"
                           for la in info["layers"])
        items.append(f"layers analysed (auto, with the input and the float outputs): {layers}")
    items.append(f"analysis data: n={args.n} digits drawn with replacement + N(0, {NOISE}) "
                 f"pixel noise, seed {SEED}; upload data: {args.upload_mb} MB standard normal "
                 f"float32 (n, {UPLOAD_WIDTH}) + int64 labels, seed {SEED}; MB = 2**20 bytes")
    if markdown:
        return ["## Server benchmark", ""] + [f"- {s}" for s in items] + [""]
    return items + [""]


def parse_parts(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in PARTS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"parts must be among {', '.join(PARTS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {QUICK_UPLOAD_MB} MB upload, n={QUICK_N}")
    parser.add_argument("--upload-mb", type=int, default=None,
                        help=f"MB of float32 inputs to upload (default {DEFAULT_UPLOAD_MB})")
    parser.add_argument("--n", type=int, default=None,
                        help=f"samples for the layer-wise analysis (default {DEFAULT_N})")
    parser.add_argument("--repeats", type=int, default=3,
                        help="rounds of each part, best time kept (default 3)")
    parser.add_argument("--parts", type=parse_parts, default=PARTS,
                        help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="folder for the temporary data dir (default: the system's)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before one worker is stopped (default 1800)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--model-worker", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--info-worker", metavar="MODEL", help=argparse.SUPPRESS)
    parser.add_argument("--upload-worker", nargs=5,
                        metavar=("ADDR", "DIR", "MB", "ROUNDS", "PID"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--analysis-worker", nargs=5,
                        metavar=("ADDR", "MODEL", "N", "ROUNDS", "PID"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.model_worker:
        emit(model_worker(Path(args.model_worker)))
        return 0
    if args.info_worker:
        emit(info_worker(Path(args.info_worker)))
        return 0
    if args.upload_worker:
        addr, folder, mb, rounds, pid = args.upload_worker
        res = upload_worker(addr, Path(folder), int(mb), int(rounds), int(pid))
        emit(res)
        return 0
    if args.analysis_worker:
        addr, model_path, n, rounds, pid = args.analysis_worker
        res = analysis_worker(addr, Path(model_path), int(n), int(rounds), int(pid))
        emit(res)
        return 0

    args.upload_mb = args.upload_mb or (QUICK_UPLOAD_MB if args.quick else DEFAULT_UPLOAD_MB)
    args.n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    repeats = max(1, args.repeats)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="layerscope-bench-server-", dir=args.tmp) as tmp:
        folder = Path(tmp)
        data_dir = folder / "data"
        model, err = run_child(["--model-worker", tmp], args.timeout)
        if model is None:
            print(f"model build failed: {err}", file=sys.stderr)
            return 1
        model_path = folder / MODEL_FILE
        info, info_err = run_child(["--info-worker", str(model_path)], args.timeout)
        server = ServerProcess(data_dir, "--max-upload-mb", str(MAX_UPLOAD_MB),
                               log_path=folder / "server.log")
        try:
            address = server.wait_ready(120)
            out = header_lines(info, info_err, model, server, data_dir, args, args.markdown)
            if not args.markdown:
                print("\n".join(out), flush=True)
                out = []
            ratio = overhead_ratio = None
            if "upload" in args.parts:
                start_rss = proc_status(server.pid, "VmRSS")
                need = 4 * args.upload_mb * MB
                if mem_info("MemAvailable") < need:
                    res, err = None, (f"skipped: needs about {need / GB:.1f} GB of available "
                                      "memory (the array, the server's checks, the page cache)")
                else:
                    res, err = run_child(["--upload-worker", address, str(data_dir),
                                          str(args.upload_mb), str(repeats), str(server.pid)],
                                         args.timeout)
                rss = (start_rss, proc_status(server.pid, "VmHWM"))
                lines = upload_lines(res, err, args.upload_mb, repeats, rss, args.markdown)
                out += lines
                if not args.markdown:
                    print("\n".join(out), flush=True)
                    out = []
            if "analysis" in args.parts:
                res, err = run_child(["--analysis-worker", address, str(model_path),
                                      str(args.n), str(repeats), str(server.pid)], args.timeout)
                lines, ratio, overhead_ratio = analysis_lines(res, err, args.n, repeats,
                                                              args.markdown)
                out += lines
            if server.proc.poll() is not None:
                out.append(f"the server exited early (rc={server.proc.returncode}):\n"
                           f"{server.log_tail()}")
        finally:
            server.stop()
    out += checklist(ratio, overhead_ratio, "analysis" in args.parts)
    out += ["", f"total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
