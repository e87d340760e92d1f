"""Command-line options of ``layerscope serve`` (kept light: imports only grpc)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...local import default_data_dir
from .limits import Limits, flag

# Help of each capacity option (its default is Limits'; limits.py imports only grpc).
CAPACITY_HELP = {
    "max_uploads": "UploadModel(Files) and UploadDataset streams served at once; beyond: "
                   "RESOURCE_EXHAUSTED",
    "max_watchers": "WatchJob streams open at once; beyond: RESOURCE_EXHAUSTED",
    "max_compute_calls": "ComputeIndices, Certify, CertifyStream, StartLayerAnalysis, "
                         "StartRanking and BuildReference calls served at once; beyond: "
                         "RESOURCE_EXHAUSTED",
    "max_probe_streams": "health Watch and reflection streams (open without a token) at "
                         "once; beyond: RESOURCE_EXHAUSTED",
    "control_threads": "threads kept for control calls (health Check, Get*, List*, Delete*, "
                       "CancelJob), which are never refused for capacity; the server runs the "
                       "sum of the five numbers above as RPC threads",
    "max_pending_calls": "calls that may wait for a free thread when all are busy; beyond: "
                         "RESOURCE_EXHAUSTED",
    "stream_idle_timeout_s": "a request stream (upload, ComputeIndices, CertifyStream) whose "
                             "client sends nothing for this many seconds is ended with "
                             "DEADLINE_EXCEEDED, its partial upload discarded",
}


def _checked(parse: Callable[[str], Any], ok: Callable[[Any], bool], expected: str
             ) -> Callable[[str], Any]:
    """An argparse type: ``parse(text)`` when ``ok`` of it, else an error naming what was
    ``expected`` and what was given."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}")
        return value

    return convert


_port = _checked(int, lambda v: 0 <= v <= 65535, "a port in 0..65535 (0 picks a free one)")
_positive_int = _checked(int, lambda v: v >= 1, "an integer >= 1")
_count = _checked(int, lambda v: v >= 0, "an integer >= 0")
_seconds = _checked(float, lambda v: math.isfinite(v) and v >= 0,
                    "a finite number of seconds >= 0")
_nonneg_float = _checked(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
_positive_mb = _checked(float, lambda v: math.isfinite(v) and v > 0,
                        "a finite number of MiB > 0")


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s); a non-loopback address "
                        "needs --token-file, or --insecure")
    p.add_argument("--port", type=_port, default=50051,
                   help="port (default: %(default)s; 0 picks a free one)")
    p.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                   help=f"store folder, kept private: 0700, its files 0600 "
                        f"(default: {default_data_dir()})")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="where indices and models run (default: $LAYERSCOPE_DEVICE, else auto: "
                        "the GPU when one is usable)")
    p.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                   help="file of accepted bearer tokens, one per line, private to its owner "
                        "(chmod 600); without it any client that reaches the port may use "
                        "the server")
    p.add_argument("--tls-cert", type=Path, default=None, metavar="PEM",
                   help="server certificate (PEM), with --tls-key: serve over TLS")
    p.add_argument("--tls-key", type=Path, default=None, metavar="PEM",
                   help="private key of --tls-cert, private to its owner (chmod 600)")
    p.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --host without --token-file (anyone who reaches "
                        "the port can upload, compute and delete), and a non-loopback "
                        "--metrics-host")
    p.add_argument("--metrics-port", type=_port, default=None, metavar="PORT",
                   help="serve Prometheus metrics over HTTP at /metrics on this port (0 picks "
                        "a free one; needs the metrics extra); docs/operating.md")
    p.add_argument("--metrics-host", default="127.0.0.1",
                   help="address of the metrics endpoint (default: %(default)s); it has no "
                        "authentication, so a non-loopback address needs --insecure")
    r = p.add_argument_group("scale-out on Ray (see docs/scale.md; the [ray] extra)")
    r.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run k-NN, extraction and ranking on a Ray cluster: 'auto' (the "
                        "cluster this machine joined with `ray start`), HOST:PORT, "
                        "ray://HOST:PORT, or 'local' (a new one on this machine); default: "
                        "everything here")
    r.add_argument("--ray-shards", type=_positive_int, default=None, metavar="N",
                   help="shards of the samples per k-NN and extraction (default: the "
                        "cluster's CPUs, at least 2)")
    r.add_argument("--ray-gpus-per-task", type=_nonneg_float, default=0.0, metavar="G",
                   help="GPUs each task asks Ray for (0: CPU tasks; 1: a GPU each, where "
                        "onnxruntime and the k-NN then use CUDA) (default: %(default)s)")
    g = p.add_argument_group("limits (see docs/security.md)")
    g.add_argument("--max-upload-mb", type=_positive_mb, default=2048.0, metavar="MB",
                   help="largest upload or ComputeIndices payload, MiB (default: %(default)s)")
    g.add_argument("--max-model-files-mb", type=_positive_mb, default=65536.0, metavar="MB",
                   help="largest total size of a model uploaded with its external-data files "
                        "(UploadModelFiles), MiB (default: %(default)s)")
    g.add_argument("--max-concurrent-jobs", type=_positive_int, default=1, metavar="N",
                   help="jobs running at once (default: %(default)s)")
    g.add_argument("--max-queued-jobs", type=_count, default=16, metavar="N",
                   help="jobs waiting to run; beyond: RESOURCE_EXHAUSTED (default: %(default)s)")
    g.add_argument("--job-timeout-s", type=float, default=3600.0, metavar="S",
                   help="a job running longer than this is stopped (its model run terminated) "
                        "and fails; 0 = no limit (default: %(default)s)")
    g.add_argument("--idle-timeout-s", type=_seconds, default=0.0, metavar="S",
                   help="stop once no call and no job has been under way for this many "
                        "seconds (the warm server a command line client starts uses it); "
                        "0 = never (default: %(default)s)")
    g.add_argument("--max-request-memory-mb", type=_positive_mb, default=None, metavar="MB",
                   help="memory the running requests may take together, each estimated "
                        "before it starts; a larger one is refused with RESOURCE_EXHAUSTED "
                        "(default: half the machine's or container's memory)")
    defaults = Limits()
    for name, text in CAPACITY_HELP.items():
        default = getattr(defaults, name)
        g.add_argument(flag(name), type=type(default), default=default,
                       metavar="S" if name.endswith("_s") else "N",
                       help=f"{text} (default: %(default)s)")
