"""The Ray executor: the same numbers as one machine, computed by tasks on a cluster.

- k-NN: the m base points are cut into shards, each put in the object store once. One task
  per (query shard, base shard) runs the exact engine (:func:`~..metrics.knn.knn`) and
  returns its exact top-k (float64 distance, global index); the driver merges per query by
  (distance, index). A point of the global top-k is within the top-k of its own shard, so
  the merge is the single-machine table, ties included (docs/scale.md gives the proof).
- Target statistics (several target columns): rows of queries per task against all the
  targets (small: m x t), so each row's sums run in the same order as on one machine.
- Extraction: the batch size and every reduction are decided once on the driver, then the
  samples are cut at batch boundaries, so each task runs exactly the local batches.
- ``map``: one task per item, results in input order.

Tasks are retried by Ray when their worker dies (``max_retries``); a cancelled job cancels
the tasks still pending (``ray.cancel``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..cancellation import Cancellation
from ..metrics.backend import get_backend, to_host
from ..metrics.knn import Neighbors, sort_by_distance_then_index

Progress = Callable[[int, int], None]
OnResult = Callable[[Any, Any], None]
POLL_S = 0.2  # how long a wait for results lasts before cancel is checked again


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """Return ``parts`` (at most n) contiguous ``(start, end)`` ranges covering ``0..n``."""
    parts = max(1, min(int(parts), n))
    return [(n * i // parts, n * (i + 1) // parts) for i in range(parts)]


def merge_topk(dist: Sequence[Any], idx: Sequence[Any], k: int) -> tuple[Any, Any]:
    """Return the k best ``(dist, idx)`` per row of the lists side by side, by (distance,
    index): the order of the single-machine engine."""
    d, i = sort_by_distance_then_index(np, np.concatenate(dist, axis=1),
                                       np.concatenate(idx, axis=1))
    return d[:, :k], i[:, :k]


def _knn_task(queries: Any, base: Any, k: int, diagonal: bool, offset: int,
              opts: dict[str, Any]) -> tuple[Any, Any, tuple[int, int, int], float]:
    """Exact top-k of ``queries`` among one shard (its own points left out on the diagonal),
    with float64 distances and indices made global by ``offset``, the row counts and the
    seconds the search took."""
    from ..metrics.knn import knn  # noqa: PLC0415

    started = time.perf_counter()
    opts = dict(opts)
    _, xp = get_backend(opts.pop("device"))
    avail = len(base) - 1 if diagonal else len(base)
    kk = min(k, avail)
    n = len(base) if diagonal else len(queries)
    if kk < 1:
        return np.empty((n, 0)), np.empty((n, 0), dtype=np.int64), (0, 0, 0), 0.0
    nb = knn(base, kk, queries=None if diagonal else queries, return_distance=True, xp=xp,
             **opts)
    counts = (nb.certified_rows, nb.reranked_rows, nb.fallback_rows)
    seconds = time.perf_counter() - started
    return to_host(nb.sqdist), to_host(nb.indices) + offset, counts, seconds


def _target_rows_task(y_query: Any, y_base: Any, r: int, self_mode: bool, budget: float,
                      start: int, end: int) -> Any:
    from ..metrics.smoothness import _target_stats_rows  # noqa: PLC0415

    return _target_stats_rows(np, y_query, y_base, r, self_mode=self_mode,
                              memory_budget_mb=budget, rows=np.arange(start, end))


def _extract_task(model_bytes: bytes, info: Any, layers: Any, feed: dict[str, Any],
                  kw: dict[str, Any]) -> list[Any]:
    """Each layer's reduced activations of one shard of samples (host arrays)."""
    import onnx  # noqa: PLC0415
    import ray  # noqa: PLC0415

    from ..runtime.extract import extract  # noqa: PLC0415

    device = "auto" if ray.get_gpu_ids() else "cpu"  # a GPU only where Ray gave this task one
    got = extract(onnx.load_from_string(model_bytes), info, layers, [feed], device=device,
                  **kw)
    return [to_host(d.train) for d in got]


def _call_task(fn: Callable[[Any], Any], item: Any) -> Any:
    return fn(item)


@dataclass
class RayExecutor:
    """Work on the Ray cluster at ``address`` (see :func:`~.executor.connect`).

    ``shards``: base shards per k-NN (default: the cluster's CPUs, at least 2);
    ``gpus_per_task``: GPUs each extraction and k-NN task asks Ray for (0: CPU only);
    ``max_retries``: how often Ray reruns a task whose worker died.
    """

    address: str
    shards: int | None = None
    gpus_per_task: float = 0.0
    max_retries: int = 3
    object_store_memory: int | None = None
    name: str = "ray"

    def __post_init__(self) -> None:
        import ray  # noqa: PLC0415 - the [ray] extra

        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if self.address == "local":
                if self.object_store_memory:
                    kw["object_store_memory"] = self.object_store_memory
                ray.init(**kw)
            else:
                ray.init(address=self.address, **kw)
        if self.shards is not None and (isinstance(self.shards, bool) or self.shards < 1):
            raise ValueError(f"shards must be an integer >= 1; got {self.shards!r}")
        self._remotes: dict[Any, Any] = {}
        # Where the last k-NN's time went (benchmarks/scale.py prints it): seconds putting
        # shards in the object store, inside tasks (summed), merging, waiting in all.
        self.last_timings: dict[str, float] = {}

    def describe(self) -> str:
        res = self._ray.cluster_resources()
        return (f"Ray cluster {self.address} ({int(res.get('CPU', 0))} CPUs, "
                f"{int(res.get('GPU', 0))} GPUs; {self.n_shards()} shards, "
                f"{self.gpus_per_task:g} GPUs per task)")

    def close(self) -> None:
        """Disconnect from the cluster when this executor connected (its tasks stop)."""
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()

    # -- plumbing ---------------------------------------------------------------------------

    def n_shards(self) -> int:
        """Base shards per search: as asked, else the cluster's CPUs (at least 2)."""
        if self.shards is not None:
            return int(self.shards)
        return max(2, int(self._ray.cluster_resources().get("CPU", 1)))

    def _remote(self, fn: Callable[..., Any], gpus: float = 0.0) -> Any:
        key = (fn, gpus)
        if key not in self._remotes:
            self._remotes[key] = self._ray.remote(fn).options(
                num_cpus=1, num_gpus=gpus, max_retries=self.max_retries)
        return self._remotes[key]

    def _device(self) -> str:
        return "auto" if self.gpus_per_task > 0 else "cpu"

    def gather(self, refs: Sequence[Any], on_result: OnResult, progress: Progress | None,
               cancel: Cancellation | None) -> None:
        """Call ``on_result(ref, value)`` for each task as it finishes, report progress; on a
        stop (or any error) cancel the tasks still pending and raise."""
        ray = self._ray
        pending, done = list(refs), 0
        try:
            while pending:
                if cancel is not None:
                    cancel.check()
                ready, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
                for ref in ready:
                    on_result(ref, ray.get(ref))
                    done += 1
                    if progress is not None:
                        progress(done, len(refs))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise

    # -- the executor interface -------------------------------------------------------------

    def knn(self, base: Any, k: int, *, queries: Any | None = None, precision: str = "exact",
            return_distance: bool = False, memory_budget_mb: float = 256.0,
            block_rows: int | None = None, candidate_search: str = "auto", xp: Any = np,
            progress: Progress | None = None, cancel: Cancellation | None = None) -> Neighbors:
        """What :func:`~..metrics.knn.knn` returns, from (query shard x base shard) tasks."""
        if precision not in ("exact", "fast"):
            raise ValueError(f"precision must be 'exact' or 'fast'; got {precision!r}")
        self_mode = queries is None
        b = np.ascontiguousarray(to_host(base))
        m = b.shape[0]
        avail = m - 1 if self_mode else m
        if not 1 <= k <= avail:
            raise ValueError(f"k must be in 1..{avail} for {m} base points; got {k}")
        ray = self._ray
        t0 = time.perf_counter()
        bounds = shard_bounds(m, self.n_shards())
        base_refs = [ray.put(b[s:e]) for s, e in bounds]  # once per shard, never per task
        if self_mode:
            q_bounds, q_refs = bounds, base_refs
        else:
            q = np.ascontiguousarray(to_host(queries))
            q_bounds = shard_bounds(q.shape[0], len(bounds))
            q_refs = [ray.put(q[s:e]) for s, e in q_bounds]
        timings = {"put_s": time.perf_counter() - t0, "task_s": 0.0, "merge_s": 0.0}
        opts = {"precision": precision, "memory_budget_mb": memory_budget_mb,
                "block_rows": block_rows, "candidate_search": candidate_search,
                "device": self._device()}
        task = self._remote(_knn_task, self.gpus_per_task)
        owner: dict[Any, int] = {}
        for qi in range(len(q_bounds)):
            for bj, (bs, _) in enumerate(bounds):
                diagonal = self_mode and qi == bj
                ref = task.remote(q_refs[qi], base_refs[bj], k, diagonal, bs, opts)
                owner[ref] = qi
        best_d = [np.empty((e - s, 0)) for s, e in q_bounds]
        best_i = [np.empty((e - s, 0), dtype=np.int64) for s, e in q_bounds]
        counts = np.zeros(3, dtype=np.int64)

        def merge(ref: Any, value: Any) -> None:
            started = time.perf_counter()
            qi = owner[ref]
            dist, idx, c, seconds = value
            best_d[qi], best_i[qi] = merge_topk([best_d[qi], dist], [best_i[qi], idx], k)
            counts[:] += c
            timings["task_s"] += seconds
            timings["merge_s"] += time.perf_counter() - started

        self.gather(list(owner), merge, progress, cancel)
        timings["total_s"] = time.perf_counter() - t0
        self.last_timings = timings
        indices = np.concatenate(best_i)
        sqdist = np.concatenate(best_d) if return_distance else None
        return Neighbors(
            indices=xp.asarray(indices), sqdist=None if sqdist is None else xp.asarray(sqdist),
            precision=precision, candidate_search=f"ray:{len(bounds)}x{len(q_bounds)}",
            certified_rows=int(counts[0]), reranked_rows=int(counts[1]),
            fallback_rows=int(counts[2]))

    def target_stats(self, xp: Any, y_query: Any, y_base: Any, r: int, *, self_mode: bool,
                     memory_budget_mb: float) -> Any:
        """What :func:`~..metrics.smoothness.target_stats` returns. One target column is
        sorted here, O(m log m), cheaper than shipping it; several go by rows of queries."""
        from ..metrics.smoothness import TargetStats, target_stats  # noqa: PLC0415

        yq, yb = to_host(y_query), to_host(y_base)
        if yb.shape[1] == 1 and yb.shape[0] > 1:
            return target_stats(xp, y_query, y_base, r, self_mode=self_mode,
                                memory_budget_mb=memory_budget_mb)
        ray = self._ray
        q_ref = ray.put(np.ascontiguousarray(yq))
        b_ref = q_ref if self_mode else ray.put(np.ascontiguousarray(yb))
        task = self._remote(_target_rows_task)
        refs = [task.remote(q_ref, b_ref, r, self_mode, memory_budget_mb, s, e)
                for s, e in shard_bounds(len(yq), self.n_shards())]
        parts: dict[Any, Any] = {}
        self.gather(refs, parts.__setitem__, None, None)
        got = [parts[ref] for ref in refs]

        def cat(name: str) -> Any:
            if getattr(got[0], name) is None:
                return None
            return xp.asarray(np.concatenate([getattr(g, name) for g in got]))

        return TargetStats(cat("dmax"), cat("dmin"), cat("dmean"), cat("nbr"), cat("nbr_dist"))

    def extract(self, model: Any, info: Any, layers: Sequence[Any], sets: Sequence[Any], *,
                reduce: Any = "auto", batch_size: int | None = None,
                memory_budget_mb: float = 1024.0, device: str | None = None,
                progress: Callable[[str, int, int], None] | None = None,
                cancel: Cancellation | None = None, projection_seed: int = 0) -> list[Any]:
        """What :func:`~..runtime.extract.extract` returns, from tasks on shards of samples
        cut at the batch boundaries the driver decided."""
        from ..runtime.extract import LayerData, model_feeds, plan_extraction  # noqa: PLC0415

        plan = plan_extraction(model, info, layers, sets, reduce=reduce, batch_size=batch_size,
                               memory_budget_mb=memory_budget_mb,
                               projection_seed=projection_seed)
        ray = self._ray
        model_ref = ray.put(model.SerializeToString())
        kw = {"reduce": plan.reductions, "batch_size": plan.batch_size,
              "memory_budget_mb": memory_budget_mb, "projection_seed": projection_seed}
        task = self._remote(_extract_task, self.gpus_per_task)
        per_set: list[list[Any]] = []
        for set_index, arrays in enumerate(sets):
            feed, n = model_feeds(info, arrays, ("data", "test")[set_index])
            batches = -(-n // plan.batch_size)
            refs = []
            for s, e in shard_bounds(batches, self.n_shards()):
                lo, hi = s * plan.batch_size, min(n, e * plan.batch_size)
                part = ray.put({name: a[lo:hi] for name, a in feed.items()})
                refs.append(task.remote(model_ref, info, list(layers), part, kw))
            got: dict[Any, Any] = {}
            stage = "extract:" + ("train" if set_index == 0 else "test")
            report = None if progress is None else (
                lambda done, total, _s=stage: progress(_s, done, total))
            self.gather(refs, got.__setitem__, report, cancel)
            per_set.append([np.concatenate([got[r][j] for r in refs])
                            for j in range(len(layers))])
        _, xp = get_backend(device)
        return [
            LayerData(la.name, la.op_type, plan.shapes[j], plan.reductions[la.name],
                      xp.asarray(per_set[0][j]),
                      xp.asarray(per_set[1][j]) if len(per_set) > 1 else None,
                      list(plan.notes[la.name]))
            for j, la in enumerate(layers)
        ]

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], *,
            progress: Progress | None = None, cancel: Cancellation | None = None) -> list[Any]:
        """``[fn(x) for x in items]``, one task each; ``fn`` (and what it holds) is put in
        the object store once."""
        ray = self._ray
        fn_ref = ray.put(fn)
        task = self._remote(_call_task, self.gpus_per_task)
        refs = [task.remote(fn_ref, item) for item in items]
        got: dict[Any, Any] = {}
        self.gather(refs, got.__setitem__, progress, cancel)
        return [got[r] for r in refs]


def worker_pid() -> int:
    """The process id of the worker running a task (tests use it to kill one)."""
    return os.getpid()
