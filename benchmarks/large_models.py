"""Benchmark: peak memory of uploading and analysing a model with external data, folded
into one protobuf (the baseline, the only way before issue 17) against sent as its files.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/large_models.py                  # 6 x 4096^2: 384 MiB
    .venv/bin/python benchmarks/large_models.py --d 8192 --layers 9   # 2.25 GiB (fold fails)
    .venv/bin/python benchmarks/large_models.py --markdown
    .venv/bin/python benchmarks/large_models.py --d 8192 --layers 18 --methods files  # 4.5 GiB

Model: the chain of ``tests/helpers/models.py: build_matmul_chain`` (x (batch, d) ->
[MatMul W_i -> Relu] x layers, each W_i (d, d) float32 standard normal * sqrt(2/d) in its
own external file), written in pieces under ``--tmp``. For each method a fresh server
(``python -m layerscope.server.api``) on a fresh data directory; a child process uploads
the model with ``Client.upload_model(path, files=False)`` (fold) or ``files=True`` (files)
and reports its own VmHWM; the server's VmHWM is read after the upload, then after a layer
analysis of 32 samples (4 labels) of every layer, run from a second child. MiB = 2**20.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    child_result,
    emit,
    env_line,
    machine_line,
    proc_status,
    table,
)

MIB = 1 << 20


def worker(address: str, path: str, mode: str, d: int, layers: int) -> None:
    import numpy as np  # noqa: PLC0415

    from layerscope.client import Client  # noqa: PLC0415

    out: dict[str, object] = {}
    with Client(address, timeout=None) as client:
        if mode in ("fold", "files"):
            t0 = time.perf_counter()
            try:
                model = client.upload_model(Path(path), files=mode == "files")
                out |= {"id": model.id, "seconds": time.perf_counter() - t0}
            except Exception as exc:  # noqa: BLE001 - reported in the table
                out["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
        else:
            rng = np.random.default_rng(0)
            y = np.arange(32) % 4
            x = (rng.standard_normal((4, d))[y] * 1.5 + rng.standard_normal((32, d)))
            t0 = time.perf_counter()
            client.analyze_layers(mode, {"x": x.astype(np.float32)}, labels=y,
                                  layers=[f"h{i}" for i in range(layers)])
            out["seconds"] = time.perf_counter() - t0
    out["vm_hwm"] = proc_status(__import__("os").getpid(), "VmHWM")
    emit(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--d", type=int, default=4096)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--methods", default="fold,files", help="comma-separated: fold, files")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        address, path, mode, d, layers = args.worker
        worker(address, path, mode, int(d), int(layers))
        return

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "tests"))
    from helpers.models import build_matmul_chain  # noqa: PLC0415

    from layerscope.client.server_process import ServerProcess  # noqa: PLC0415

    work = Path(tempfile.mkdtemp(prefix="ls-large-", dir=args.tmp))
    rows = []
    try:
        model = build_matmul_chain(work / "model", args.d, args.layers)
        external = sum(f.stat().st_size for f in (model.parent / "weights").iterdir())
        for mode in args.methods.split(","):
            srv = ServerProcess(work / f"data-{mode}", "--max-upload-mb", "65536")
            try:
                address = srv.wait_ready(120)
                up, err = child_result(__file__, ["--worker", address, str(model), mode,
                                                  str(args.d), str(args.layers)], 3600, True)
                server_up = proc_status(srv.pid, "VmHWM") or 0
                run = None
                if up and "id" in up:
                    run, err = child_result(__file__, ["--worker", address, str(model),
                                                       str(up["id"]), str(args.d),
                                                       str(args.layers)], 3600, True)
                server_run = proc_status(srv.pid, "VmHWM") or 0
            finally:
                srv.stop()
                shutil.rmtree(work / f"data-{mode}", ignore_errors=True)
            if not up or "error" in up:
                rows.append([mode, "-", "-", "-", "-", "-",
                             (up or {}).get("error", err) if up else err])
                continue
            rows.append([
                mode, f"{up['seconds']:.1f}", f"{(up['vm_hwm'] or 0) / MIB:.0f}",
                f"{server_up / MIB:.0f}",
                f"{run['seconds']:.1f}" if run else "-",
                f"{server_run / MIB:.0f}" if run else "-",
                f"client {100 * (up['vm_hwm'] or 0) / external:.1f} %, server upload "
                f"{100 * server_up / external:.1f} % of the external data",
            ])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    title = (f"{args.layers} x {args.d}^2 float32 MatMul+Relu: {external / MIB:.0f} MiB "
             "of external data")
    print(machine_line(True))
    print(env_line())
    print("\n".join(table(title, ["method", "upload s", "client MiB", "server MiB (upload)",
                                  "analysis s", "server MiB (+analysis)", "note"],
                          rows, args.markdown)))


if __name__ == "__main__":
    main()
