"""Benchmark: the exact k-NN on this machine against the same search on a local Ray cluster.

Run from the repository root with the project's virtualenv (the [ray] extra)::

    .venv/bin/python benchmarks/scale.py                 # m=50000, d=256, k=5 (~5 min, 2 cores)
    .venv/bin/python benchmarks/scale.py --m 10000 --d 64 --repeats 1   # smoke test
    .venv/bin/python benchmarks/scale.py --markdown      # for benchmarks/RESULTS.md

Data: ``m`` float32 points in ``d`` dimensions, standard normal (seed 0), the same for every
row. Each row times ``knn(x, k)`` (self search, exact precision), best of ``--repeats``:

* ``local, 2 threads``: the engine as the server runs it without ``--ray``.
* ``local, 1 thread``: the same, BLAS limited to one thread (threadpoolctl): the compute a
  one-CPU Ray worker has, so the baseline of the overhead ratio.
* ``ray 1 worker, S shards``: a local cluster of ``num_cpus=1``; S = 1 measures the cluster's
  fixed costs alone, S = 2 also the cost of sharding (S^2 tasks, S times the candidates).
* ``ray 2 workers, 2 shards``: ``num_cpus=2``, the two cores used by two tasks at a time.

Columns: wall time; the ratio to ``local, 1 thread``; then where the Ray time went, from the
executor's ``last_timings``: ``put`` (serialising the shards into the object store),
``in tasks`` (the engine's own time inside the tasks, summed over tasks), ``merge`` (the
driver's merge by (distance, index)), and ``other`` = wall - put - merge - in tasks /
workers (scheduling, fetching results, the driver waiting). ``same`` says whether the
neighbour table equals the local one exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report as rep  # noqa: E402


def best(fn, repeats: int, timings=None):
    """The best wall time of ``repeats`` calls, the result, and ``timings()`` of that call."""
    best_t, out, detail = float("inf"), None, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        t = time.perf_counter() - t0
        if t < best_t:
            best_t, detail = t, (dict(timings()) if timings else None)
    return best_t, out, detail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=50_000)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--markdown", action="store_true")
    a = p.parse_args()

    import ray
    from threadpoolctl import threadpool_limits

    from layerscope.server.cluster import connect
    from layerscope.server.metrics.knn import knn

    x = np.random.default_rng(0).standard_normal((a.m, a.d)).astype(np.float32)
    rows: list[list[str]] = []
    t_local2, want, _ = best(lambda: knn(x, a.k), a.repeats)
    with threadpool_limits(1):
        t_local1, _, _ = best(lambda: knn(x, a.k), a.repeats)
    rows.append(["local, 2 threads", f"{t_local2:.2f}", f"{t_local2 / t_local1:.2f}",
                 "", "", "", "", ""])
    rows.append(["local, 1 thread", f"{t_local1:.2f}", "1.00", "", "", "", "", ""])
    for cpus, shard_list in ((1, (1, 2)), (2, (2,))):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 object_store_memory=600 * (1 << 20), configure_logging=False)
        try:
            for shards in shard_list:
                ex = connect("auto", shards=shards)
                ex.knn(x[:2000], a.k)  # workers started and the function shipped once
                t, got, tm = best(lambda ex=ex: ex.knn(x, a.k), a.repeats,
                                  lambda ex=ex: ex.last_timings)
                other = t - tm["put_s"] - tm["merge_s"] - tm["task_s"] / cpus
                same = np.array_equal(got.indices, want.indices)
                rows.append([f"ray {cpus} worker{'s' if cpus > 1 else ''}, {shards} shard"
                             f"{'s' if shards > 1 else ''}", f"{t:.2f}", f"{t / t_local1:.2f}",
                             f"{tm['put_s']:.2f}", f"{tm['task_s']:.2f}", f"{tm['merge_s']:.2f}",
                             f"{other:.2f}", "yes" if same else "NO"])
        finally:
            ray.shutdown()

    print(rep.machine_line())
    for line in rep.pool_lines(rep.thread_pools()):
        print(line)
    print(f"data: m={a.m}, d={a.d}, float32 standard normal; knn(x, k={a.k}), exact; "
          f"best of {a.repeats}")
    head = ["path", "wall s", "x local 1 thread", "put s", "in tasks s", "merge s", "other s",
            "same"]
    print("\n".join(rep.table(f"Exact k-NN, m={a.m}, d={a.d}", head, rows, a.markdown)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
