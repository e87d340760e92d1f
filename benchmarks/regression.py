"""Benchmark: SmI indices for one-dimensional regression targets, sorted target statistics
against the row-block computation they replace.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/regression.py                 # m = 10000, 50000 (~2 min)
    .venv/bin/python benchmarks/regression.py --sizes 20000 --repeats 5
    .venv/bin/python benchmarks/regression.py --markdown > table.md   # for RESULTS.md

Data: ``m`` float32 points in 64 dimensions (standard normal, seed 0) and a float64
target ``2 x_0 + noise`` (noise standard normal): one column, as regression usually has.

Methods, each in its own process (fresh imports, the data generated there), best of
``--repeats`` runs of the call alone:

* ``sorted``: ``compute_indices(X, targets=y)`` (the default regression indices: smi_linear,
  smi_exp and the ordered SmI at orders 1, 5, 10), as shipped: target statistics (Dmax,
  Dmin, Dmean, the 10 target-space neighbours) by sorting the targets once.
* ``rows``: the same call with ``smoothness.target_stats`` replaced by its row-block
  computation (``_target_stats_rows``: every m x m target distance, a block of rows at a
  time), which is what every target went through before.
* ``stats sorted`` / ``stats rows``: the target statistics alone, both ways.

The table gives the time, the ratio to ``sorted``, and the largest difference of every
index between the two full calls (Dmax, Dmin and the neighbours are the same bits; Dmean
comes from prefix sums instead of a row sum).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from _report import child_result, emit, env_line, machine_line, pool_lines, table, thread_pools

SEED = 0
D = 64
METHODS = ("sorted", "rows", "stats sorted", "stats rows")


def make_data(m: int) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((m, D), dtype=np.float32)
    y = 2.0 * x[:, 0].astype(np.float64) + rng.standard_normal(m)
    return x, y


def worker(method: str, m: int, repeats: int) -> dict:
    import numpy as np

    from layerscope.server.metrics import compute_indices, smoothness

    x, y = make_data(m)
    if method.endswith("rows"):
        smoothness.target_stats = smoothness._target_stats_rows  # type: ignore[assignment]
        from layerscope.server.metrics import engine

        engine.target_stats = smoothness._target_stats_rows  # type: ignore[assignment]
    times, values = [], {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        if method.startswith("stats"):
            smoothness.target_stats(np, y[:, None], y[:, None], 10, self_mode=True,
                                    memory_budget_mb=512.0)
        else:
            res = compute_indices(x, targets=y)
            values = {k: v if isinstance(v, float) else list(v)
                      for k, v in res.train.dataset.items()}
        times.append(time.perf_counter() - t0)
    return {"time": min(times), "times": times, "values": values}


def info_worker() -> dict:
    import layerscope
    from layerscope.server.metrics import compute_indices

    x, y = make_data(300)
    compute_indices(x, targets=y)  # every library the call uses is loaded
    return {"pools": thread_pools(), "layerscope": layerscope.__version__,
            "python": sys.version.split()[0]}


def run_child(args: Sequence[str], timeout: float) -> dict:
    result, error = child_result(__file__, args, timeout)
    if result is None:
        raise RuntimeError(f"worker {list(args)}: {error}")
    return result


def largest_difference(a: dict, b: dict) -> float:
    worst = 0.0
    for name, va in a.items():
        for p, q in zip(va if isinstance(va, list) else [va],
                        b[name] if isinstance(b[name], list) else [b[name]], strict=True):
            worst = max(worst, abs(p - q))
    return worst


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10000, 50000], help="values of m, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method, best kept")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--info", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        method, m, repeats = args.worker
        emit(worker(method.replace("_", " "), int(m), int(repeats)))
        return 0
    if args.info:
        emit(info_worker())
        return 0

    info = run_child(["--info"], args.timeout)
    bullet = "- " if args.markdown else ""
    header = ["## SmI regression benchmark", ""] if args.markdown else []
    header += [bullet + machine_line(),
               f"{bullet}python {info['python']}, layerscope {info['layerscope']}",
               bullet + env_line(), *[bullet + line for line in pool_lines(info["pools"])],
               f"{bullet}data: m float32 points, d={D}, standard normal (seed {SEED}); "
               "target 2 x_0 + N(0, 1), float64, one column"]
    print("\n".join(header), flush=True)
    for m in args.sizes:
        rows: dict[str, dict] = {}
        for method in METHODS:
            rows[method] = run_child(["--worker", method.replace(" ", "_"), str(m),
                                      str(args.repeats)], args.timeout)
            print(f"  m={m} {method}: {rows[method]['time']:.3f} s", file=sys.stderr,
                  flush=True)
        diff = largest_difference(rows["sorted"]["values"], rows["rows"]["values"])
        body = []
        for method in METHODS:
            base = "sorted" if not method.startswith("stats") else "stats sorted"
            t = rows[method]["time"]
            note = (f"largest index difference from 'sorted': {diff:.1e}"
                    if method == "rows" else "")
            body.append([method, f"{t:.3f}", f"{t / rows[base]['time']:.1f}",
                         ", ".join(f"{v:.3f}" for v in rows[method]["times"]), note])
        print()
        print("\n".join(table(f"SmI indices, m={m}, d={D}, 1-D target",
                              ["method", "time s", "x sorted", "runs s", "note"], body,
                              args.markdown)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
