"""What every benchmark script prints the same way: the machine, the thread pools, tables."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

GB = 1024**3
RESULT_TAG = "@@benchmark-result "  # how a worker's result line starts
THREAD_VARIABLES = ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "MKL_NUM_THREADS", "LAYERSCOPE_DEVICE")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def mem_info(key: str) -> int:
    """A /proc/meminfo value in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def proc_status(pid: int, key: str) -> int | None:
    """A memory line of /proc/PID/status (VmHWM, VmRSS) in bytes (None when unknown)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine_line(available: bool = False) -> str:
    """``machine: CPU, N cores (M usable), RAM, OS``."""
    usable = len(os.sched_getaffinity(0))
    ram = f"{mem_info('MemTotal') / GB:.1f} GB RAM"
    if available:
        ram += f" ({mem_info('MemAvailable') / GB:.1f} GB available at start)"
    return (f"machine: {cpu_model()}, {os.cpu_count()} cores ({usable} usable), {ram}, "
            f"{platform.system()} {platform.release()}")


def env_line() -> str:
    """The thread-related environment variables that are set."""
    env = [f"{k}={os.environ[k]}" for k in THREAD_VARIABLES if k in os.environ]
    return "env: " + (", ".join(env) if env else "none of the thread variables set")


def thread_pools() -> list[dict[str, Any]]:
    """The thread pools threadpoolctl finds in this process (call it after the libraries
    were loaded), as :func:`pool_lines` prints them; JSON-serialisable."""
    from threadpoolctl import threadpool_info

    return [
        {key: p.get(key) for key in ("internal_api", "architecture", "num_threads", "version")}
        | {"lib": "/".join(Path(p.get("filepath", "?")).parts[-2:])}
        for p in threadpool_info()
    ]


def pool_lines(pools: list[dict[str, Any]]) -> list[str]:
    """One line per thread pool threadpoolctl found: library, kernel, threads."""
    out = []
    for p in pools:
        version = f" {p['version']}" if p.get("version") else ""
        out.append(f"thread pool: {p['internal_api']}{version}, "
                   f"kernel {p.get('architecture') or '-'}, {p['num_threads']} threads "
                   f"({p['lib']})")
    return out


def text_row(cells: list[str], widths: list[int]) -> str:
    """First column left-aligned, numbers right-aligned, the note last and unpadded."""
    mid = [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True)]
    return ("  " + "  ".join([cells[0].ljust(widths[0]), *mid, cells[-1]])).rstrip()


def spread(ratios: Sequence[float], what: str) -> str:
    """``median M (from LO to HI, N what)``: ratios measured in turns on a machine whose
    speed drifts, each beside its own baseline."""
    r = sorted(ratios)
    return (f"median {statistics.median(r):.2f} (from {r[0]:.2f} to {r[-1]:.2f}, "
            f"{len(r)} {what})")


def table(title: str, head: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    """A titled table, markdown or aligned text."""
    lines = [f"### {title}" if markdown else title]
    if markdown:
        lines += ["", "| " + " | ".join(head) + " |",
                  "|" + "|".join(["---", *["---:"] * (len(head) - 2), "---"]) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        lines.append("")
    else:
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines += [text_row(head, widths), "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))]
        lines += [text_row(r, widths) for r in body]
    return lines


def emit(result: Any) -> None:
    """Print a worker's result as the line :func:`child_result` looks for."""
    print(RESULT_TAG + json.dumps(result), flush=True)


def child_result(script: str, args: Sequence[str], timeout: float,
                 capture_stderr: bool = False) -> tuple[dict | None, str]:
    """Run ``script`` with ``args`` in a fresh interpreter; return (its result, error).

    The child's stderr goes to ours (progress, tracebacks), or with ``capture_stderr`` is
    kept and its last line quoted in the error.
    """
    cmd = [sys.executable, str(Path(script).resolve()), *args]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE if capture_stderr else None, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG) :]), ""
    reason = "killed (out of memory?)" if proc.returncode == -9 else f"rc={proc.returncode}"
    if capture_stderr:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"failed, {reason}: {tail[:160]}"
    return None, f"failed, {reason} (its stderr is above)"

