"""Benchmark: the command line against the in-process call, with and without a warm server.

Run from the repository root with the project's virtualenv::

    .venv/bin/python benchmarks/cli.py               # 200 samples and m=20000, d=256
    .venv/bin/python benchmarks/cli.py --quick       # m=5000 for the large row
    .venv/bin/python benchmarks/cli.py --markdown    # for benchmarks/RESULTS.md

Every row times whole ``layerscope indices DATA.npz --json`` processes (wall clock, the best
of ``--repeats`` rounds), each round on its own fresh data directories:

* ``cold (--keep-warm 0)``: what every command cost before the warm server: start a server,
  compute, stop it.
* ``first (starts a warm server)``: the first command of a session: it starts the warm server
  and leaves it running (stopped with ``layerscope serve --stop`` at the end of the round).
* ``warm (second command)``: a command while the warm server runs, on the same file as the
  first: the server holds its data (stored by the first command), so nothing is sent; the
  file, unchanged and written more than 2 s before the first command, is remembered
  (``client/remembered.py``), so it is not read either.
* ``warm, new data``: a command while the warm server runs, on a file it has not seen (new
  random values of the same shapes, written before the timing): the data is read, hashed,
  uploaded and stored, then indexed by id.
* ``warm, --no-store``: a command while the warm server runs, its arrays sent with the call
  and nothing stored (what every command did before the data was stored; the default with
  ``--server``).

The baseline row ``in-process compute_indices`` times
``layerscope.server.metrics.compute_indices(features, labels)`` alone in this process, on the
arrays of the same file read beforehand, libraries imported first (what a Python user who
skips the server pays for the computation). Each round runs it and the warm command in
turns, twice, then once more on the new data and once with ``--no-store``, so that both
see the same moment of a machine whose speed drifts; the ratio column divides best by
best, and the lines under the table give the median and range of each warm command's ratio
to the in-process call that ran next to it.

Each timed run starts 0.3 s after the one before it (``SETTLE_S``), so that neither
shares the cores with the other's idle BLAS threads.

The commands run with ``PYTHONDONTWRITEBYTECODE`` removed from their environment, as an
installed package would (its modules compiled once); the first, untimed, run compiles them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    env_line,
    machine_line,
    pool_lines,
    spread,
    table,
    thread_pools,
)

CLI = [sys.executable, "-m", "layerscope"]  # what the installed `layerscope` runs


def command_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("LAYERSCOPE_KEEP_WARM", None)
    return env


SETTLE_S = 0.3
"""Pause before each timed run: OpenBLAS's threads spin for ~0.1 s of a core after a
multithreaded call (the benchmark's own, at the default; the server's for ~6 ms), and a run
started meanwhile would share the cores with them."""


SETTLED_S = 2.1
"""Wait after writing the data files (client/remembered.py remembers a file stored by a
command only once it has not changed for 2 s)."""


def run(args: list[str]) -> float:
    time.sleep(SETTLE_S)
    start = time.perf_counter()
    proc = subprocess.run([*CLI, *args], env=command_env(), capture_output=True, text=True,
                          check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"layerscope {' '.join(args)} failed:\n{proc.stderr}")
    return took


def stop(data: Path) -> None:
    subprocess.run([*CLI, "serve", "--stop", "--data-dir", str(data)], env=command_env(),
                   capture_output=True, check=True)


def write_data(path: Path, m: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, features=rng.normal(size=(m, d)).astype(np.float32),
             labels=rng.integers(0, 10, m))


def measure(path: Path, tmp: Path, repeats: int
            ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Best wall time of each way of running ``indices`` on ``path`` and of the in-process
    call, and each warm command's ratio to the in-process call beside it."""
    from layerscope.server.metrics import compute_indices

    with np.load(path) as f:
        x, y = f["features"], f["labels"]
    compute_indices(features=x[:100], labels=y[:100])  # imports and first-call costs

    def local(x: np.ndarray, y: np.ndarray) -> float:
        time.sleep(SETTLE_S)
        start = time.perf_counter()
        compute_indices(features=x, labels=y)
        return time.perf_counter() - start

    best = dict.fromkeys(("in-process", "cold", "first", "warm", "new", "sent"), float("inf"))
    ratios: dict[str, list[float]] = {"warm": [], "new": [], "sent": []}
    for r in range(repeats):
        cold_dir, warm_dir = tmp / f"{path.stem}-cold-{r}", tmp / f"{path.stem}-warm-{r}"
        best["cold"] = min(best["cold"], run(["indices", str(path), "--json", "--data-dir",
                                              str(cold_dir), "--keep-warm", "0"]))
        command = ["indices", str(path), "--json", "--data-dir", str(warm_dir)]
        try:
            best["first"] = min(best["first"], run(command))
            for _ in range(2):
                base, warm = local(x, y), run(command)
                best["in-process"] = min(best["in-process"], base)
                best["warm"] = min(best["warm"], warm)
                ratios["warm"].append(warm / base)
            new = tmp / f"{path.stem}-new-{r}.npz"
            write_data(new, *x.shape, seed=1000 + r)
            with np.load(new) as f:
                xn, yn = f["features"], f["labels"]
            base, warm = local(xn, yn), run([*command[:1], str(new), *command[2:]])
            best["new"] = min(best["new"], warm)
            ratios["new"].append(warm / base)
            base, warm = local(x, y), run([*command, "--no-store"])
            best["sent"] = min(best["sent"], warm)
            ratios["sent"].append(warm / base)
        finally:
            stop(warm_dir)
    return best, ratios


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="m=5000 for the large row")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args()
    m_large = 5000 if args.quick else 20000
    lines = [machine_line(), env_line()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sets = {"small": (200, 32), "large": (m_large, 256)}
        paths = {}
        for key, (m, d) in sets.items():
            paths[key] = tmp / f"{key}.npz"
            write_data(paths[key], m, d, seed=len(paths))
        run(["--help"])  # compiles the CLI's modules once (not timed)
        time.sleep(SETTLED_S)  # the files settle: a file changed within 2 s is not remembered
        body, notes = [], []
        for key, (m, d) in sets.items():
            got, ratios = measure(paths[key], tmp, args.repeats)
            base = got["in-process"]
            shape = f"m={m}, d={d}"
            body.append([f"{shape}: in-process compute_indices", f"{base:.3f}", "1.00",
                         "baseline"])
            for name, label in (("cold", "cold (--keep-warm 0)"),
                                ("first", "first (starts a warm server)"),
                                ("warm", "warm (second command)"),
                                ("new", "warm, new data (uploaded)"),
                                ("sent", "warm, --no-store (sent with the call)")):
                body.append([f"{shape}: layerscope indices, {label}", f"{got[name]:.3f}",
                             f"{got[name] / base:.2f}", ""])
            for name, label in (("warm", "warm command"), ("new", "warm, new data"),
                                ("sent", "warm, --no-store")):
                notes.append(f"{shape}: {label} / in-process call beside it: "
                             f"{spread(ratios[name], 'pairs')}")
        lines += pool_lines(thread_pools())
    lines += table("layerscope indices: wall time, best of "
                   f"{args.repeats} (ratio to the in-process call)",
                   ["run", "time s", "ratio", "note"], body, args.markdown)
    lines += ["", *notes]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
