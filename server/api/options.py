"""Command-line options of ``layerscope serve`` (kept light: no server import needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...client.paths import default_data_dir


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=50051, help="port (0 picks a free one)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"store folder, kept private: 0700, its files 0600 "
                        f"(default {default_data_dir()})")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default=None)
    p.add_argument("--max-upload-mb", type=float, default=2048.0)
    p.add_argument("--max-concurrent-jobs", type=int, default=1)
    p.add_argument("--max-queued-jobs", type=int, default=16)
    p.add_argument("--token-file", type=Path, default=None,
                   help="file of accepted bearer tokens, one per line; must be private "
                        "to its owner (chmod 600)")
    p.add_argument("--tls-cert", type=Path, default=None)
    p.add_argument("--tls-key", type=Path, default=None,
                   help="private key of --tls-cert; must be private to its owner (chmod 600)")
