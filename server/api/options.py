"""Command-line options of ``layerscope serve`` (kept light: no server import needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...local import default_data_dir


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"store folder (default {default_data_dir()})")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None,
                   help="array device (default auto: the GPU when one is usable; "
                        "$LAYERSCOPE_DEVICE)")
    p.add_argument("--max-upload-mb", type=float, default=2048.0,
                   help="largest model or dataset upload accepted (default 2048)")
    p.add_argument("--max-concurrent-jobs", type=int, default=1,
                   help="jobs that run at once (default 1: the engine uses every core)")
    p.add_argument("--max-queued-jobs", type=int, default=16,
                   help="jobs that may wait; beyond, RESOURCE_EXHAUSTED (default 16)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file of accepted bearer tokens, one per line")
    p.add_argument("--tls-cert", type=Path, default=None,
                   help="PEM certificate chain: serve TLS (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert")
