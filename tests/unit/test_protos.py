"""The generated stubs match the .proto files, and the protos stand alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import ROOT

STUBS = ROOT / "protos" / "stubs"


def test_committed_stubs_equal_a_fresh_generation(tmp_path):
    out = tmp_path / "stubs"
    subprocess.run([sys.executable, str(ROOT / "protos" / "generate.py"), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    fresh = {p.name: p.read_text() for p in out.iterdir() if p.is_file()}
    committed = {p.name: p.read_text() for p in STUBS.iterdir() if p.is_file()}
    assert sorted(fresh) == sorted(committed), "stub files differ: run protos/generate.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stubs out of date ({stale}): run `python protos/generate.py`"


def test_protos_compile_on_their_own_with_stock_protoc(tmp_path):
    """Another language's tooling sees only protos/: they must compile without our script."""
    from grpc_tools import protoc

    include = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(ROOT / "protos"))
                   for p in (ROOT / "protos" / "layerscope" / "v1").glob("*.proto"))
    # In a subprocess: grpc_tools' protoc in a process that has loaded TensorFlow crashes.
    proc = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'protos'}", f"-I{include}",
         f"--descriptor_set_out={tmp_path / 'set.pb'}", "--include_imports", *files],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    from google.protobuf import descriptor_pb2

    fds = descriptor_pb2.FileDescriptorSet.FromString((tmp_path / "set.pb").read_bytes())
    services = {s.name for f in fds.file for s in f.service}
    assert {"Models", "Datasets", "Analysis"} <= services
