"""Benchmark: layerscope's forward feature ranking against the naive recompute-everything loop.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/ranking.py                  # m=2000, d=256, 32 steps (~1 min)
    .venv/bin/python benchmarks/ranking.py --quick          # smoke test: m=1000, d=64, 16 steps
    .venv/bin/python benchmarks/ranking.py --m 4000 --d 128 --steps 16 --repeats 5
    .venv/bin/python benchmarks/ranking.py --profile        # and where ours spends its time
    .venv/bin/python benchmarks/ranking.py --markdown > table.md   # for benchmarks/RESULTS.md

Data: ``m`` float32 points in ``d`` dimensions (seeded): integer labels 0..``--classes``-1,
every feature standard normal noise, and ``--informative`` features (chosen at random) get
a class centre on top, drawn standard normal per class and scaled by a strength falling
linearly from 1.5 to 0.3, so the informative features have distinct, decreasing value and
the later steps choose among noise features.

Methods (each run in a fresh subprocess that generates the data itself, imports its
libraries, then times the call alone):

* ``ours``: ``layerscope.server.metrics.compute_indices(X, labels,
  indices=["feature_ranking"], max_features=STEPS)``, result ``.feature_ranking.order`` and
  ``.scores`` (greedy forward selection maximising si, exact float64 distances, ties to the
  lower feature index). ``--repeats`` runs, best time kept.
* ``naive32``: the reference classes' way: at every step, for every remaining candidate
  feature, the pairwise distances of the selected features plus the candidate are computed
  from scratch in float32 as ``torch.cdist`` does (squared norms plus a matrix product,
  clamped at 0, square root), the diagonal set to infinity, the nearest neighbour of each
  row taken (``argmin``: the first minimum), and si = the mean label agreement; the best
  candidate is picked (ties: the lowest feature index). One run.
* ``naive64``: the same loop in float64 on squared distances (no clamp, no square root),
  ties to the lowest index. Run only when the float32 order differs from ours (float32
  rounding can reorder near neighbours and so break or make ties in si), or with
  ``--float64``; the selected features are then checked against it.

The naive loop stops early when the next step would not finish within ``--naive-budget``
seconds (default 600); the total is then extrapolated from the per-candidate time of the
last timed step (a lower estimate: a candidate costs a little more with each selected
feature) and labelled so.

Columns: ``time s`` (wall, ``time.perf_counter``, the call alone), ``CPU s`` (user + system
CPU of the process during the call: above the wall time where BLAS runs threads),
``x ours`` (time / ours' best time), ``steps timed``, ``order`` (whether the selected
features equal ours, step by step). Below: both orders, their si after each step, and the
largest si difference over the common prefix. At the end, the targets as a checklist.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from _report import (
    child_result,
    emit,
    env_line,
    machine_line,
    pool_lines,
    table,
    thread_pools,
)

SEED = 0
DEFAULT = {"m": 2000, "d": 256, "steps": 32, "classes": 8, "informative": 12}
QUICK = {"m": 1000, "d": 64, "steps": 16, "classes": 8, "informative": 8}
STRENGTH = (1.5, 0.3)  # class-centre scale of the first and the last informative feature
TARGET_SPEEDUP = 20.0
METHODS = ("ours", "naive32", "naive64")
LABELS = {
    "ours": "ours (compute_indices feature_ranking)",
    "naive32": "naive float32 (cdist-style, per candidate)",
    "naive64": "naive float64 (per candidate)",
}
GB = 1 << 30


# --------------------------------------------------------------------------- worker side


def make_data(m: int, d: int, classes: int, informative: int) -> tuple[Any, Any, list[int]]:
    """Return (X float32 (m, d), labels int64 (m,), the informative features, sorted)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    labels = rng.integers(0, classes, size=m)
    x = rng.standard_normal((m, d), dtype=np.float32)
    k = min(informative, d)
    feats = rng.choice(d, size=k, replace=False)
    strength = np.linspace(STRENGTH[0], STRENGTH[1], k)
    centres = rng.standard_normal((classes, k)) * strength
    x[:, feats] += centres[labels].astype(np.float32)
    return x, labels, sorted(int(f) for f in feats)


def ours_worker(cfg: dict) -> dict:
    from layerscope.server.metrics import compute_indices

    x, labels, _ = make_data(cfg["m"], cfg["d"], cfg["classes"], cfg["informative"])
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = compute_indices(x, labels, indices=["feature_ranking"], max_features=cfg["steps"])
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    rk = res.feature_ranking
    return {"seconds": seconds, "cpu": cpu, "order": [int(f) for f in rk.order],
            "scores": [float(s) for s in rk.scores], "device": res.options.get("device")}


def _naive_si(x: Any, labels: Any, cols: list[int], dtype: Any) -> float:
    """si of the columns ``cols`` of ``x``, every pairwise distance computed from scratch."""
    import numpy as np

    sub = np.ascontiguousarray(x[:, cols], dtype=dtype)
    sq = np.einsum("ij,ij->i", sub, sub)
    dist = sub @ sub.T
    dist *= dtype(-2.0)
    dist += sq[:, None]
    dist += sq[None, :]
    if dtype is np.float32:  # as torch.cdist returns them: clamped at 0, square root
        np.maximum(dist, 0, out=dist)
        np.sqrt(dist, out=dist)
    np.fill_diagonal(dist, np.inf)
    nn = np.argmin(dist, axis=1)  # the first minimum: ties to the lower index
    return float((labels[nn] == labels).mean())


def naive_worker(cfg: dict, precision: str, budget: float) -> dict:
    import numpy as np

    dtype = np.float32 if precision == "float32" else np.float64
    x, labels, _ = make_data(cfg["m"], cfg["d"], cfg["classes"], cfg["informative"])
    _naive_si(x[:50], labels[:50], [0, 1], dtype)  # load the BLAS pool outside the clock
    d, steps = x.shape[1], min(cfg["steps"], x.shape[1])
    order: list[int] = []
    scores: list[float] = []
    all_scores: list[dict[str, float]] = []  # per step: candidate -> si
    step_seconds: list[float] = []
    remaining = list(range(d))
    c0 = time.process_time()
    t0 = time.perf_counter()
    while len(order) < steps:
        s0 = time.perf_counter()
        step: dict[str, float] = {}
        best_f, best_s = -1, -np.inf
        for f in remaining:  # ascending index, strict ">": ties go to the lowest index
            s = _naive_si(x, labels, [*order, f], dtype)
            step[str(f)] = s
            if s > best_s:
                best_f, best_s = f, s
        order.append(best_f)
        scores.append(best_s)
        remaining.remove(best_f)
        all_scores.append(step)
        step_seconds.append(time.perf_counter() - s0)
        elapsed = time.perf_counter() - t0
        print(f"  naive {precision} step {len(order)}/{steps}: feature {best_f}, si "
              f"{best_s:.4f}, {step_seconds[-1]:.2f} s", file=sys.stderr, flush=True)
        if len(order) < steps and elapsed + step_seconds[-1] * 1.05 > budget:
            break
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    done = len(order)
    estimate = None
    if done < steps:  # per-candidate time of the last step, for every candidate left
        per_cand = step_seconds[-1] / (d - done + 1)
        estimate = seconds + per_cand * sum(d - s for s in range(done, steps))
    return {"seconds": seconds, "cpu": cpu, "order": order, "scores": scores,
            "all_scores": all_scores, "step_seconds": step_seconds, "steps_done": done,
            "estimate": estimate}


def profile_worker(cfg: dict, top: int) -> dict:
    """Ours under cProfile: the functions with the most time of their own."""
    import cProfile
    import io
    import pstats

    from layerscope.server.metrics import compute_indices

    x, labels, _ = make_data(cfg["m"], cfg["d"], cfg["classes"], cfg["informative"])
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    compute_indices(x, labels, indices=["feature_ranking"], max_features=cfg["steps"])
    prof.disable()
    seconds = time.perf_counter() - t0
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    root = str(Path(__file__).resolve().parents[1])
    text = buf.getvalue().replace(root + "/", "")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return {"seconds": seconds, "lines": lines[start:]}


def info_worker(cfg: dict) -> dict:
    """Library versions and the thread pools both methods load."""
    import numpy as np

    import layerscope
    from layerscope.server.metrics import compute_indices

    x, labels, informative = make_data(cfg["m"], cfg["d"], cfg["classes"], cfg["informative"])
    compute_indices(x[:300, :8], labels[:300], indices=["feature_ranking"], max_features=2)
    _naive_si(x[:300], labels[:300], [0, 1], np.float32)
    pools = thread_pools()
    return {"python": platform.python_version(), "numpy": np.__version__,
            "layerscope": layerscope.__version__, "pools": pools, "informative": informative}


# --------------------------------------------------------------------------- driver side
# The driver imports nothing heavy; every measurement runs in a fresh child process.


@dataclass
class Row:
    method: str
    seconds: float | None = None
    cpu: float | None = None
    order: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    steps_done: int = 0
    estimate: float | None = None
    all_scores: list[dict[str, float]] = field(default_factory=list)
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def total(self) -> float | None:
        """The measured time, or the extrapolated one where the run stopped early."""
        return self.estimate if self.estimate is not None else self.seconds


run_child = partial(child_result, __file__)


def measure_ours(cfg: dict, repeats: int, timeout: float) -> Row:
    row = Row("ours")
    for i in range(repeats):
        res, err = run_child(["--ours-worker", json.dumps(cfg)], timeout)
        if res is None:
            row.note = err
            break
        print(f"  ours run {i + 1}/{repeats}: {res['seconds']:.3f} s (CPU {res['cpu']:.2f} s)",
              file=sys.stderr, flush=True)
        row.runs.append(res["seconds"])
        if row.seconds is None or res["seconds"] < row.seconds:
            row.seconds, row.cpu = res["seconds"], res["cpu"]
        row.order, row.scores = res["order"], res["scores"]
        row.steps_done = len(res["order"])
    return row


def measure_naive(cfg: dict, precision: str, budget: float, timeout: float) -> Row:
    method = "naive32" if precision == "float32" else "naive64"
    row = Row(method)
    res, err = run_child(["--naive-worker", json.dumps(cfg), precision, str(budget)],
                         max(timeout, budget * 1.5))
    if res is None:
        row.note = err
        return row
    row.seconds, row.cpu = res["seconds"], res["cpu"]
    row.order, row.scores = res["order"], res["scores"]
    row.steps_done, row.estimate = res["steps_done"], res["estimate"]
    row.all_scores = res["all_scores"]
    row.runs = [res["seconds"]]
    if row.estimate is not None:
        row.note = (f"stopped after {row.steps_done} steps (budget {budget:g} s); "
                    f"total extrapolated: {row.estimate:.1f} s")
    return row


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first step (0-based) where the orders differ over their common length."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None


def same_order(ours: Row, other: Row) -> bool | None:
    if not ours.order or not other.order:
        return None
    n = min(len(ours.order), len(other.order))
    return ours.order[:n] == other.order[:n]


def difference_lines(ours: Row, naive: Row) -> list[str]:
    """Explain the first step where the naive loop picked another feature than ours."""
    i = first_difference(ours.order, naive.order)
    if i is None:
        return []
    a, b = ours.order[i], naive.order[i]
    step = naive.all_scores[i] if i < len(naive.all_scores) else {}
    sa, sb = step.get(str(a)), step.get(str(b))
    tie = sa is not None and sa == sb
    what = "a tie in the naive scores (it takes the lower index)" if tie else "no tie"
    return [f"{naive.method} differs from ours first at step {i + 1}: ours picks {a} "
            f"(ours' si {ours.scores[i]:.6f}), {naive.method} picks {b}; the naive si of "
            f"{a} is {_fmt(sa, '.6f')}, of {b} {_fmt(sb, '.6f')}: {what}"]


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def result_lines(cfg: dict, rows: dict[str, Row], markdown: bool) -> list[str]:
    ours = rows["ours"]
    head = ["method", "time s", "CPU s", "x ours", "steps timed", "order", "note"]
    body = []
    for method, row in rows.items():
        ratio = None if row.total is None or not ours.seconds else row.total / ours.seconds
        time_cell = _fmt(row.seconds, ".3f")
        if row.estimate is not None:
            time_cell += f" (est. {row.estimate:.1f})"
        same = "-" if method == "ours" else {None: "-", True: "same", False: "differs"}[
            same_order(ours, row)]
        note = row.note
        if method == "ours" and len(row.runs) > 1:
            note = (note + "; " if note else "") + f"best of {len(row.runs)}: " + ", ".join(
                f"{t:.3f}" for t in row.runs)
        body.append([LABELS[method], time_cell, _fmt(row.cpu, ".2f"), _fmt(ratio, ".1f"),
                     f"{row.steps_done}/{cfg['steps']}", same, note])
    title = (f"forward selection: m={cfg['m']}, d={cfg['d']}, {cfg['steps']} steps, "
             f"{cfg['classes']} classes, {cfg['informative']} informative features")
    lines = table(title, head, body, markdown)
    n32 = rows.get("naive32")
    if ours.seconds and n32 is not None and n32.total:
        kind = "extrapolated" if n32.estimate is not None else "measured"
        lines.append(f"speedup, naive float32 / ours: {n32.total / ours.seconds:.1f}x ({kind})")
    n64 = rows.get("naive64")
    if ours.seconds and n64 is not None and n64.total:
        kind = "extrapolated" if n64.estimate is not None else "measured"
        lines.append(f"speedup, naive float64 / ours: {n64.total / ours.seconds:.1f}x ({kind})")
    for method, row in rows.items():
        if row.order:
            lines.append(f"order {method:8s}: {row.order}")
    for method, row in rows.items():
        if row.scores:
            lines.append(f"si    {method:8s}: [" + ", ".join(f"{s:.4f}" for s in row.scores)
                         + "]")
    for method in ("naive32", "naive64"):
        naive = rows.get(method)
        if naive is None or not naive.scores or not ours.scores:
            continue
        n = min(len(naive.scores), len(ours.scores))
        stop = first_difference(ours.order, naive.order)
        n = n if stop is None else stop + 1  # scores compare while the subsets agree
        diff = max(abs(a - b) for a, b in zip(ours.scores[:n], naive.scores[:n], strict=True))
        span = ("the same subsets at every step" if stop is None else
                f"the last one is step {n}, where the picks differ")
        lines.append(f"max |si ours - si {method}| over the first {n} steps ({span}): "
                     f"{diff:.2e}")
        lines += difference_lines(ours, naive)
    return lines + [""]


def checklist(cfg: dict, rows: dict[str, Row], default_cfg: bool) -> list[str]:
    def box(ok: bool | None) -> str:
        return "[ ]" if ok is None else ("[x]" if ok else "[!]")

    ours, n32, n64 = rows.get("ours"), rows.get("naive32"), rows.get("naive64")
    speed = None
    if ours is not None and ours.seconds and n32 is not None and n32.total:
        speed = n32.total / ours.seconds
    where = "" if default_cfg else (f"; this run is m={cfg['m']}, d={cfg['d']}, "
                                    f"{cfg['steps']} steps, the target is set for m=2000, "
                                    "d=256, 32 steps")
    if speed is None:
        ok1, detail1 = None, "not measured"
    else:
        est = " extrapolated" if n32 is not None and n32.estimate is not None else ""
        ok1 = (speed >= TARGET_SPEEDUP) if default_cfg else None
        detail1 = f"{speed:.1f}x{est}{where}"
    same32 = None if ours is None or n32 is None else same_order(ours, n32)
    same64 = None if ours is None or n64 is None else same_order(ours, n64)
    if same32:
        ok2, detail2 = True, "identical to the float32 naive loop"
    elif same64:
        ok2, detail2 = True, ("identical to the float64 naive loop; the float32 loop differs "
                              "(see above)")
    elif same32 is False and same64 is None:
        ok2, detail2 = False, "the float32 naive loop differs; the float64 loop did not run"
    elif same32 is None and same64 is None:
        ok2, detail2 = None, "not measured"
    else:
        ok2, detail2 = False, "differs from both naive loops"
    partial = [r for r in (n32, n64) if r is not None and r.estimate is not None]
    if partial and ok2:
        detail2 += "; over the timed steps only"
    return [
        "Targets ([x] met, [!] missed, [ ] not measured):",
        f"- {box(ok1)} ours >= {TARGET_SPEEDUP:.0f}x faster than the naive float32 loop "
        f"({detail1})",
        f"- {box(ok2)} the same selected features ({detail2})",
    ]


def header_lines(info: dict | None, err: str, cfg: dict, markdown: bool) -> list[str]:
    items = [machine_line()]
    if info is None:
        items.append(f"library info unavailable: {err}")
    else:
        items.append(f"python {info['python']}, numpy {info['numpy']}, "
                     f"layerscope {info['layerscope']}")
    items.append(env_line())
    if info is not None:
        items += pool_lines(info["pools"])
    items.append(f"data: m={cfg['m']} float32 points, d={cfg['d']} features, "
                 f"{cfg['classes']} classes, seed {SEED}; standard normal noise, plus class "
                 f"centres on {cfg['informative']} informative features (strength "
                 f"{STRENGTH[0]} down to {STRENGTH[1]})"
                 + ("" if info is None else f": {info['informative']}"))
    if markdown:
        return ["## Feature ranking benchmark", ""] + [f"- {s}" for s in items] + [""]
    return items + [""]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: m={m}, d={d}, {steps} steps".format(**QUICK))
    for key in ("m", "d", "steps", "classes", "informative"):
        parser.add_argument(f"--{key}", type=int, default=None,
                            help=f"(default {DEFAULT[key]}, --quick {QUICK[key]})")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of ours, best time kept (default 3)")
    parser.add_argument("--float64", action="store_true",
                        help="run the float64 naive loop even when the float32 one agrees")
    parser.add_argument("--naive-budget", type=float, default=600,
                        help="seconds for one naive loop before it stops and extrapolates "
                        "(default 600)")
    parser.add_argument("--profile", action="store_true",
                        help="also run ours once under cProfile and print its top functions")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds before one worker is stopped (default 1800)")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    parser.add_argument("--ours-worker", metavar="CFG", help=argparse.SUPPRESS)
    parser.add_argument("--naive-worker", nargs=3, metavar=("CFG", "PRECISION", "BUDGET"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--profile-worker", metavar="CFG", help=argparse.SUPPRESS)
    parser.add_argument("--info-worker", metavar="CFG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ours_worker:
        emit(ours_worker(json.loads(args.ours_worker)))
        return 0
    if args.naive_worker:
        text, precision, budget = args.naive_worker
        res = naive_worker(json.loads(text), precision, float(budget))
        emit(res)
        return 0
    if args.profile_worker:
        res = profile_worker(json.loads(args.profile_worker), 15)
        emit(res)
        return 0
    if args.info_worker:
        emit(info_worker(json.loads(args.info_worker)))
        return 0

    base = QUICK if args.quick else DEFAULT
    cfg = {k: (getattr(args, k) if getattr(args, k) is not None else v) for k, v in base.items()}
    cfg["steps"] = min(cfg["steps"], cfg["d"])
    default_cfg = all(cfg[k] == DEFAULT[k] for k in ("m", "d", "steps"))
    started = time.perf_counter()
    info, err = run_child(["--info-worker", json.dumps(cfg)], args.timeout)
    out = header_lines(info, err, cfg, args.markdown)
    if not args.markdown:
        print("\n".join(out), flush=True)
        out = []
    rows: dict[str, Row] = {"ours": measure_ours(cfg, max(1, args.repeats), args.timeout)}
    rows["naive32"] = measure_naive(cfg, "float32", args.naive_budget, args.timeout)
    if args.float64 or same_order(rows["ours"], rows["naive32"]) is False:
        rows["naive64"] = measure_naive(cfg, "float64", args.naive_budget, args.timeout)
    out += result_lines(cfg, rows, args.markdown)
    if args.profile:
        prof, perr = run_child(["--profile-worker", json.dumps(cfg)], args.timeout)
        title = "ours under cProfile (top functions by own time)"
        if prof is None:
            out += [title, f"  not measured: {perr}", ""]
        else:
            body = [f"    {ln}" for ln in prof["lines"]]
            out += [f"{title}, {prof['seconds']:.3f} s with the profiler:", ""]
            out += body + [""]
    out += checklist(cfg, rows, default_cfg)
    out += ["", f"total benchmark time: {time.perf_counter() - started:.0f} s"]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
