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
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None)
    p.add_argument("--max-upload-mb", type=float, default=2048.0)
    p.add_argument("--max-concurrent-jobs", type=int, default=1)
    p.add_argument("--max-queued-jobs", type=int, default=16)
    p.add_argument("--max-request-memory-mb", type=float, default=None,
                   help="memory the running requests may take together, each estimated "
                        "before it starts; a larger one is refused with RESOURCE_EXHAUSTED "
                        "(default: half the machine's or container's memory)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file of accepted bearer tokens, one per line")
    p.add_argument("--tls-cert", type=Path, default=None)
    p.add_argument("--tls-key", type=Path, default=None)
