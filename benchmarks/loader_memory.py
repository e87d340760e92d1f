"""Client peak memory of uploading an image folder and a Parquet file: streamed a block at
a time (layerscope.client.loaders + Client.upload_source) against the baseline of reading
the whole source into arrays first and uploading those (Client.upload_dataset).

Each measurement runs in a fresh subprocess and reports its peak resident memory (VmHWM)
against a real server started by this script.

    python benchmarks/loader_memory.py [--images 600] [--rows 2000000] [--markdown]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import sys
from layerscope.client import Client
from layerscope.client.loaders import Columns, ImageOptions, open_source
address, kind, path, how = sys.argv[1:5]
if kind == "images":
    source = open_source(path, images=ImageOptions(size=(512, 512)))
else:
    source = open_source(path, columns=Columns(label="y"))
with Client(address, timeout=600) as c:
    if how == "streamed":
        ds = c.upload_source(source)
    else:
        arrays = source.arrays()
        key = source.key
        y = arrays.pop(key)
        ds = c.upload_dataset(arrays, **{key: y})
    c.delete_dataset(ds)
for line in open("/proc/self/status"):
    if line.startswith("VmHWM"):
        print(int(line.split()[1]) * 1024)
print(ds.size_bytes)
"""


def make_images(root: Path, n: int) -> None:
    from PIL import Image

    for i in range(n):
        folder = root / f"c{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((16, 16, 3), i % 251, np.uint8)).save(folder / f"{i:05d}.png")


def make_parquet(path: Path, rows: int, cols: int = 64) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        table = pa.table({**{f"f{j}": rng.normal(size=n).astype(np.float32)
                             for j in range(cols)}, "y": rng.integers(0, 10, size=n)})
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()


def measure(address: str, kind: str, path: Path, how: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, address, kind, str(path), how],
                         capture_output=True, text=True, check=True).stdout.split()
    return int(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    from layerscope.client.server_process import ServerProcess

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        make_images(t / "imgs", args.images)
        make_parquet(t / "big.parquet", args.rows)
        server = ServerProcess(t / "data", "--max-upload-mb", "16384")
        try:
            address = server.wait_ready(120)
            for kind, path in (("images", t / "imgs"), ("parquet", t / "big.parquet")):
                for how in ("in memory (baseline)", "streamed"):
                    peak, size = measure(address, kind, path, how.split()[0])
                    rows.append((kind, how, size, peak))
        finally:
            server.stop()
    sep = " | " if args.markdown else "  "
    print(sep.join(["input", "upload", "data MB", "client peak RSS MB", "peak / data"]))
    if args.markdown:
        print("|".join(["---"] * 5))
    for kind, how, size, peak in rows:
        print(sep.join([kind, how, f"{size / 2**20:,.0f}", f"{peak / 2**20:,.0f}",
                        f"{peak / size:.2f}"]))


if __name__ == "__main__":
    main()
