"""Benchmark: layerscope's index engine against plain k-NN and the full-matrix approach.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/indices.py                  # every config (~25 min, 2 cores)
    .venv/bin/python benchmarks/indices.py --quick          # smoke test: m=10000, d=64 only
    .venv/bin/python benchmarks/indices.py --configs 10000x512,50000x64 --repeats 5
    .venv/bin/python benchmarks/indices.py --markdown > table.md   # for benchmarks/RESULTS.md

Data: ``m`` float32 points in ``d`` dimensions, a mixture of 10 Gaussian classes (seeded, the
same for every method of a config; unit-variance noise around class centres drawn with
standard deviation ``SEPARATION * d**-0.25``, so the nearest-neighbour SI is about 0.6),
with their integer labels 0..9.

Methods (each repeat of each method runs in a fresh subprocess that generates the data
itself, imports its libraries, then times the call alone):

* ``ours``: ``layerscope.server.metrics.compute_indices`` with si, high_order_si,
  soft_order_si, anti_si (orders 1, 5, 10) and center_si, exact precision (the default).
  Its ``options["knn"]`` row counts (certified / reranked / fallback) are printed.
  ``$LAYERSCOPE_DEVICE`` applies; the device used is printed with the table.
  Its k-NN is the symmetric self-join (each block pair of X X^T computed once).
* ``ours_faiss``: the same call with ``candidate_search="faiss"``: the engine as it was
  before the self-join (faiss's knn for the candidates, every pair computed twice).
* ``knn``: ``layerscope.server.metrics.knn(X, 10)`` alone (exact, self-join): the k-NN
  that all the indices above share, against faiss's below.
* ``faiss``: ``faiss.knn(X, X, 11)`` (10 neighbours plus the point itself), nothing else.
* ``sklearn``: ``NearestNeighbors(n_neighbors=10, algorithm="brute").fit(X).kneighbors()``.
* ``full``: the full-matrix approach as the reference classes do it: every pairwise
  float32 distance as ``torch.cdist`` gives it (norms plus a matrix product, clamped at 0,
  square root), the diagonal set to a big number, then each index method on its own, as
  the classes' methods are called: si from the row minima, and for each of high_order_si,
  soft_order_si and anti_si at each order a full sort of every row (the classes sort the
  whole matrix in every call), center_si from the class means.
* ``full1``: the same indices from the same matrix with one shared sort: the best the
  full-matrix approach can do, shown for fairness.
  Both are skipped when the m x m distances plus their int64 argsort need more than half
  the RAM.

The 200000 x 128 config runs ``ours`` only (configs with m > 100000 do).

Columns of each table:

* ``time s``: wall time of the call (``time.perf_counter``), best of the repeats
  (``--repeats`` for m <= 10000, ``--big-repeats`` above). Data generation and imports
  are not included.
* ``ratio to faiss``: time / the time of ``faiss.knn`` on the same config.
* ``peak extra MB``: peak resident memory during the call minus the resident memory right
  before it (``ru_maxrss`` minus ``/proc/self/statm``), the largest over the repeats. The
  inputs are not counted; copies of them are.
* ``si``: the separation index each method's neighbours give, a cross-check (for the k-NN
  methods it is computed after the timed call).

Below each table: how many times faster ours is than the full-matrix approach, and ours'
k-NN row counts. At the end, the targets as a checklist.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from _report import (
    child_result,
    emit,
    env_line,
    machine_line,
    mem_info,
    pool_lines,
    spread,
    table,
    thread_pools,
)

SEED = 0
N_CLASSES = 10
SEPARATION = 1.0
K = 10
INDICES = ["si", "high_order_si", "soft_order_si", "anti_si", "center_si"]
ORDERS = [1, 5, 10]

METHODS = ("ours", "ours_faiss", "knn", "faiss", "sklearn", "full", "full1")
LABELS = {
    "ours": "ours (layerscope, self-join)",
    "ours_faiss": "ours, faiss candidates",
    "knn": "ours' exact k-NN alone (self-join)",
    "faiss": "faiss.knn",
    "sklearn": "sklearn brute kNN",
    "full": "full matrix, sort per index",
    "full1": "full matrix, one sort",
}
DEFAULT_CONFIGS = ((10_000, 64), (10_000, 512), (20_000, 256), (50_000, 64), (50_000, 512),
                   (200_000, 128))
QUICK_CONFIGS = ((10_000, 64),)
OURS_ONLY_ABOVE = 100_000  # configs with more points run our engine alone
SMALL_M = 10_000  # configs up to this many points get --repeats, larger ones --big-repeats
FULL_MATRIX_RAM_SHARE = 0.5  # "fits comfortably": m x m (float32 + int64) <= half the RAM

MB = 1 << 20
GB = 1 << 30
HWM_SLACK = 8 * MB


# --------------------------------------------------------------------------- worker side


def make_data(m: int, d: int) -> tuple[Any, Any]:
    """Return (X float32 (m, d), labels int64 (m,)): a seeded mixture of Gaussian classes.

    Written in place, block by block, so that generating the data leaves no memory peak
    above the data themselves (the peak measurement would not see a smaller one).
    """
    import numpy as np

    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, N_CLASSES, size=m)
    centers = rng.standard_normal((N_CLASSES, d), dtype=np.float32)
    centers *= np.float32(SEPARATION * d**-0.25)
    x = rng.standard_normal((m, d), dtype=np.float32)
    step = 8192
    for s in range(0, m, step):
        x[s : s + step] += centers[labels[s : s + step]]
    return x, labels


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakMeter:
    """Peak resident memory of a call above the resident memory right before it.

    ``ru_maxrss`` is a high-water mark over the whole process, and after ``exec`` it also
    starts from the parent's (Linux keeps the larger). When it is already above the current
    RSS before the call, the kernel's own high-water mark (VmHWM) is reset through
    ``/proc/self/clear_refs`` and read instead, so a smaller peak is still seen.
    """

    def __init__(self) -> None:
        gc.collect()
        self.before = _rss()
        self.source = "ru_maxrss"
        if _maxrss() > self.before + HWM_SLACK:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.source = "VmHWM"
            except OSError:
                self.source = "ru_maxrss (lower bound)"

    def extra(self) -> int:
        peak = _hwm() if self.source == "VmHWM" else _maxrss()
        return max(0, peak - self.before)


def _nearest_si(neighbors: Any, labels: Any) -> float:
    """SI from a k-NN table that may contain each point itself: first non-self column."""
    import numpy as np

    rows = np.arange(len(labels))
    not_self = neighbors != rows[:, None]
    first = neighbors[rows, np.argmax(not_self, axis=1)]
    return float((labels[first] == labels).mean())


def _method(name: str) -> tuple[Callable[[Any, Any], Any], Callable[[Any, Any], dict]]:
    """Return (call, summarize) for a method, its libraries imported now (not timed)."""
    import numpy as np

    if name == "ours":
        import faiss  # noqa: F401 - compute_indices imports it on first use; not timed

        from layerscope.server.metrics import compute_indices

        def call(x: Any, labels: Any) -> Any:
            return compute_indices(x, labels, indices=INDICES, orders=ORDERS)

        def summarize(res: Any, labels: Any) -> dict:
            return {"si": res["si"], "knn": res.options.get("knn"),
                    "device": res.options.get("device")}

        return call, summarize
    if name == "ours_faiss":  # the engine as it was before the self-join
        import faiss  # noqa: F401

        from layerscope.server.metrics import compute_indices

        def call(x: Any, labels: Any) -> Any:
            return compute_indices(x, labels, indices=INDICES, orders=ORDERS,
                                   candidate_search="faiss")

        def summarize(res: Any, labels: Any) -> dict:
            return {"si": res["si"], "knn": res.options.get("knn"),
                    "device": res.options.get("device")}

        return call, summarize
    if name == "knn":
        import faiss  # noqa: F401

        from layerscope.server.metrics import knn

        def call(x: Any, labels: Any) -> Any:
            return knn(x, K)

        def summarize_knn(res: Any, labels: Any) -> dict:
            idx = np.asarray(res.indices)
            return {"si": float((labels[idx[:, 0]] == labels).mean()),
                    "knn": {"candidate_search": res.candidate_search,
                            "certified_rows": res.certified_rows,
                            "reranked_rows": res.reranked_rows,
                            "fallback_rows": res.fallback_rows, "products": res.products}}

        return call, summarize_knn
    if name == "faiss":
        import faiss

        def call(x: Any, labels: Any) -> Any:
            return faiss.knn(x, x, K + 1)

        return call, lambda res, labels: {"si": _nearest_si(res[1], labels)}
    if name == "sklearn":
        from sklearn.neighbors import NearestNeighbors

        def call(x: Any, labels: Any) -> Any:
            return NearestNeighbors(n_neighbors=K, algorithm="brute").fit(x).kneighbors()

        return call, lambda res, labels: {"si": _nearest_si(res[1], labels)}
    if name in ("full", "full1"):
        shared_sort = name == "full1"

        def call(x: Any, labels: Any) -> Any:
            sq = np.einsum("ij,ij->i", x, x)
            dist = x @ x.T
            dist *= np.float32(-2.0)
            dist += sq[:, None]
            dist += sq[None, :]
            np.maximum(dist, 0, out=dist)
            np.sqrt(dist, out=dist)
            np.fill_diagonal(dist, np.float32(1e10))
            out = {"si": float((labels[np.argmin(dist, axis=1)] == labels).mean())}
            order = np.argsort(dist, axis=1) if shared_sort else None
            for family in ("high_order_si", "soft_order_si", "anti_si"):
                for r in ORDERS:
                    srt = order if shared_sort else np.argsort(dist, axis=1)
                    same = labels[srt[:, :r]] == labels[:, None]
                    if family == "high_order_si":
                        value = same.all(axis=1).mean()
                    elif family == "soft_order_si":
                        value = same.mean()
                    else:
                        value = (~same).all(axis=1).mean()
                    out[f"{family}[{r}]"] = float(value)
            classes = np.unique(labels)
            means = np.stack([x[labels == c].mean(axis=0) for c in classes])
            to_mean = ((x[:, None, :] - means[None, :, :]) ** 2).sum(axis=2)
            out["center_si"] = float((classes[np.argmin(to_mean, axis=1)] == labels).mean())
            return out

        return call, lambda res, labels: {"si": res["si"]}
    raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")


def worker(method: str, m: int, d: int) -> dict:
    """Generate the data, time one call of ``method``, return the measurements."""
    call, summarize = _method(method)
    x, labels = make_data(m, d)
    meter = PeakMeter()
    t0 = time.perf_counter()
    res = call(x, labels)
    seconds = time.perf_counter() - t0
    extra = meter.extra()
    out = {"seconds": seconds, "peak_extra_mb": extra / MB, "rss_before_mb": meter.before / MB,
           "peak_source": meter.source}
    out.update(summarize(res, labels))
    return out


def info_worker() -> dict:
    """Library versions and the thread pools (BLAS, OpenMP) loaded by all the methods."""
    import faiss
    import numpy as np
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    import layerscope
    from layerscope.server.metrics import compute_indices

    x, labels = make_data(500, 8)  # run each library once so every pool is loaded
    faiss.knn(x, x, 2)
    NearestNeighbors(n_neighbors=1, algorithm="brute").fit(x).kneighbors()
    compute_indices(x, labels, indices=["si"], orders=[1])
    pools = thread_pools()
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "faiss": faiss.__version__,
        "sklearn": sklearn.__version__,
        "layerscope": layerscope.__version__,
        "pools": pools,
    }


# --------------------------------------------------------------------------- driver side
# The driver imports nothing heavy: a child's ru_maxrss starts from its parent's peak.


@dataclass
class Row:
    """The measurements of one method on one config (best time, largest peak)."""

    method: str
    seconds: float | None = None
    runs: list[float] = field(default_factory=list)  # every round's time, in round order
    peak_mb: float | None = None
    si: float | None = None
    extra: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class ConfigResult:
    m: int
    d: int
    rows: dict[str, Row] = field(default_factory=dict)

    def time(self, method: str) -> float | None:
        row = self.rows.get(method)
        return None if row is None else row.seconds


run_child = partial(child_result, __file__, capture_stderr=True)


def full_matrix_bytes(m: int) -> int:
    return m * m * (4 + 8)  # float32 distances + int64 argsort


def measure(methods: list[str], m: int, d: int, repeats: int, timeout: float
            ) -> dict[str, Row]:
    """Each method ``repeats`` times, best time kept, the methods taking turns round by
    round (a slower or busier minute of the machine then weighs on all of them alike)."""
    rows = {method: Row(method) for method in methods}
    ram = mem_info("MemTotal")
    live = []
    for method in methods:
        if method in ("full", "full1") and full_matrix_bytes(m) > FULL_MATRIX_RAM_SHARE * ram:
            rows[method].note = f"skipped (m x m needs {full_matrix_bytes(m) / GB:.1f} GB)"
        else:
            live.append(method)
    for i in range(repeats):
        for method in list(live):
            row = rows[method]
            res, err = run_child(["--worker", method, str(m), str(d)], timeout)
            if res is None:
                row.note = err
                live.remove(method)
                continue
            print(f"  {m}x{d} {method:8s} run {i + 1}/{repeats}: {res['seconds']:.3f} s, "
                  f"peak extra {res['peak_extra_mb']:.0f} MB", file=sys.stderr, flush=True)
            row.runs.append(res["seconds"])
            if row.seconds is None or res["seconds"] < row.seconds:
                row.seconds = res["seconds"]
            row.peak_mb = max(row.peak_mb or 0.0, res["peak_extra_mb"])
            row.si = res.get("si")
            row.extra = {k: res[k] for k in ("knn", "device", "peak_source") if k in res}
            if res["peak_source"] != "ru_maxrss":
                row.note = f"peak from {res['peak_source']}"
    return rows


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table_lines(cr: ConfigResult, markdown: bool) -> list[str]:
    faiss_t = cr.time("faiss")
    head = ["method", "time s", "ratio to faiss", "peak extra MB", "si", "note"]
    body = []
    for method, row in cr.rows.items():
        ratio = None if row.seconds is None or not faiss_t else row.seconds / faiss_t
        body.append([LABELS[method], _fmt(row.seconds, ".3f"), _fmt(ratio, ".2f"),
                     _fmt(row.peak_mb, ".0f"), _fmt(row.si, ".4f"), row.note])
    lines = table(f"m={cr.m}, d={cr.d}", head, body, markdown)
    ours, full = cr.time("ours"), cr.time("full")
    if ours and full:
        lines.append(f"ours vs full matrix: {full / ours:.1f}x faster")
    ours_row = cr.rows.get("ours")
    faiss_row = cr.rows.get("faiss")
    if ours_row is not None and faiss_row is not None and len(ours_row.runs) > 1 \
            and len(ours_row.runs) == len(faiss_row.runs):
        # the machine may drift between rounds: each round's own ratio, beside the best's
        ratios = [o / f for o, f in zip(ours_row.runs, faiss_row.runs, strict=True)]
        lines.append(f"ours / faiss round by round: {spread(ratios, 'rounds')}")
    if ours_row is not None and ours_row.extra.get("knn"):
        knn = ours_row.extra["knn"].get("train", ours_row.extra["knn"])
        lines.append(
            f"ours ({ours_row.extra.get('device', '?')}) knn rows: "
            f"certified={knn.get('certified_rows')}, reranked={knn.get('reranked_rows')}, "
            f"fallback={knn.get('fallback_rows')} (search: {knn.get('candidate_search')})"
        )
    return lines + [""]


def checklist(results: dict[tuple[int, int], ConfigResult]) -> list[str]:
    def box(ok: bool | None) -> str:
        return "[ ]" if ok is None else ("[x]" if ok else "[!]")

    ratios = {key: cr.time("ours") / cr.time("faiss")  # type: ignore[operator]
              for key, cr in results.items() if cr.time("ours") and cr.time("faiss")}
    ok1 = all(r <= 1.25 for r in ratios.values()) if ratios else None
    detail1 = ", ".join(f"{m}x{d}: {r:.3f}x" for (m, d), r in ratios.items()) or "not measured"
    speed = {key: cr.time("full") / cr.time("ours")  # type: ignore[operator]
             for key, cr in results.items()
             if key[0] == 10_000 and cr.time("ours") and cr.time("full")}
    ok2 = all(s >= 10 for s in speed.values()) if speed else None
    detail2 = ", ".join(f"d={d}: {s:.1f}x" for (_, d), s in speed.items()) or "not measured"
    sj = {key: r for key, r in ratios.items() if key in ((20_000, 256), (50_000, 512))}
    ok5 = all(r <= 0.7 for r in sj.values()) if sj else None
    detail5 = ", ".join(f"{m}x{d}: {r:.3f}x" for (m, d), r in sj.items()) or "not measured"
    big = results.get((50_000, 512))
    peak = None if big is None or "ours" not in big.rows else big.rows["ours"].peak_mb
    ok3 = None if peak is None else peak < 500
    huge = results.get((200_000, 128))
    t4 = None if huge is None else huge.time("ours")
    if huge is None:
        ok4, detail4 = None, "not measured"
    elif t4 is None:
        ok4, detail4 = False, huge.rows["ours"].note or "did not complete"
    else:
        ok4, detail4 = True, f"{t4:.1f} s"
    return [
        "Targets ([x] met, [!] missed, [ ] not measured):",
        f"- {box(ok1)} ours <= 1.25x faiss ({detail1})",
        f"- {box(ok5)} ours (self-join) <= 0.7x faiss at 20000x256 and 50000x512 ({detail5})",
        f"- {box(ok2)} ours >= 10x faster than full matrix at m=10000 ({detail2})",
        f"- {box(ok3)} ours peak extra < 500 MB at m=50000, d=512 "
        f"({'not measured' if peak is None else f'{peak:.0f} MB'})",
        f"- {box(ok4)} m=200000, d=128 completes ({detail4})",
    ]


def header_lines(info: dict | None, err: str, markdown: bool) -> list[str]:
    items = [machine_line()]
    if info is None:
        items.append(f"library info unavailable: {err}")
    else:
        items.append(f"python {info['python']}, numpy {info['numpy']}, faiss {info['faiss']}, "
                     f"scikit-learn {info['sklearn']}, layerscope {info['layerscope']}")
    items.append(env_line())
    if info is not None:
        items += pool_lines(info["pools"])
    items.append(f"data: {N_CLASSES} Gaussian classes, seed {SEED}; ours: {', '.join(INDICES)} "
                 f"at orders {ORDERS}, precision exact")
    if markdown:
        return ["## Index benchmark", ""] + [f"- {s}" for s in items] + [""]
    return items + [""]


def parse_configs(text: str) -> tuple[tuple[int, int], ...]:
    out = []
    for part in text.split(","):
        m, sep, d = part.strip().lower().partition("x")
        if not sep:
            raise argparse.ArgumentTypeError(f"config {part!r} is not MxD (e.g. 10000x64)")
        out.append((int(m), int(d)))
    return tuple(out)


def parse_methods(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in names if s not in METHODS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"methods must be among {', '.join(METHODS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: m=10000, d=64 only")
    parser.add_argument("--configs", type=parse_configs,
                        help="comma-separated MxD list (default: "
                        + ",".join(f"{m}x{d}" for m, d in DEFAULT_CONFIGS) + ")")
    parser.add_argument("--methods", type=parse_methods, default=METHODS,
                        help=f"comma-separated subset of {','.join(METHODS)}")
    parser.add_argument("--repeats", type=int, default=3,
                        help=f"repeats (best time kept) for m <= {SMALL_M} (default 3)")
    parser.add_argument("--big-repeats", type=int, default=1,
                        help=f"repeats for m > {SMALL_M} (default 1)")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before one worker is stopped (default 1800)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "M", "D"), help=argparse.SUPPRESS)
    parser.add_argument("--info-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        method, m, d = args.worker
        emit(worker(method, int(m), int(d)))
        return 0
    if args.info_worker:
        emit(info_worker())
        return 0

    configs = QUICK_CONFIGS if args.quick else (args.configs or DEFAULT_CONFIGS)
    started = time.perf_counter()
    info, err = run_child(["--info-worker"], args.timeout)
    out = header_lines(info, err, args.markdown)
    if not args.markdown:
        print("\n".join(out), flush=True)
    results: dict[tuple[int, int], ConfigResult] = {}
    for m, d in configs:
        cr = results[(m, d)] = ConfigResult(m, d)
        methods = ("ours",) if m > OURS_ONLY_ABOVE else args.methods
        repeats = args.repeats if m <= SMALL_M else args.big_repeats
        cr.rows.update(measure([x for x in METHODS if x in methods], m, d, max(1, repeats),
                               args.timeout))
        lines = table_lines(cr, args.markdown)
        if args.markdown:
            out += lines
        else:
            print("\n".join(lines), flush=True)
    tail = checklist(results) + ["", f"total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join((out if args.markdown else []) + tail))
    return 0


if __name__ == "__main__":
    sys.exit(main())
