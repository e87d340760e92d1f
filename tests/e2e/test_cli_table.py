"""The `layerscope` command table and the command line as a process: help text and examples
on every command, --json wherever results are printed, a closed pipe, missing or unreadable
input files, and `layerscope protos`.

Process-level behaviour (exit codes, what reaches stderr) runs the installed entry point in
a subprocess; the commands that need a server reuse the module's embedded one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import rank as H
from helpers.server import embedded_server_fixture

from layerscope.client.cli import build_parser, main

LAYERSCOPE = str(Path(sys.executable).with_name("layerscope"))
PROTO_NAMES = {"analysis.proto", "common.proto", "datasets.proto", "models.proto"}
# The commands that print results, and so take --json.
RESULT_COMMANDS = {"indices", "layers", "analyze", "rank", "certify", "export", "demo",
                   "protos"}

embedded_server = embedded_server_fixture("cli-table-data")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _run(*args: str, stdout: int | None = subprocess.PIPE, timeout: float = 120
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LAYERSCOPE, *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=timeout, check=False)


def _run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run with stdout a pipe whose reader has already gone (as `... | head -1` ends up)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return _run(*args, stdout=write)
    finally:
        os.close(write)


@pytest.fixture(scope="module")
def train_npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = H.informative_data()
    path = tmp_path_factory.mktemp("cli-table") / "train.npz"
    np.savez(path, features=x, labels=y)
    return path


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------


def test_every_option_of_every_command_has_help_text():
    missing = [(name, a.dest) for name, p in _subparsers().items() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []


def test_every_command_has_an_example_of_itself_in_its_epilog():
    for name, p in _subparsers().items():
        assert p.epilog and p.epilog.startswith("example:"), name
        assert f"layerscope {name}" in p.epilog, name
        assert f"layerscope {name}" in p.format_help(), f"{name}: the example is not shown"


def test_every_command_that_prints_results_takes_json():
    commands = _subparsers()
    assert RESULT_COMMANDS <= set(commands)
    for name in RESULT_COMMANDS:
        flags = {f for a in commands[name]._actions for f in a.option_strings}
        assert "--json" in flags, name


# ---------------------------------------------------------------------------------------
# A closed pipe
# ---------------------------------------------------------------------------------------


def test_results_into_a_closed_pipe_exit_141_without_a_traceback(train_npz):
    proc = _run_into_closed_pipe("indices", str(train_npz))
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
    assert proc.stderr == ""


# ---------------------------------------------------------------------------------------
# Input files
# ---------------------------------------------------------------------------------------


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layerscope: error: "), proc.stderr
    return lines[0]


def test_missing_onnx_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "nope.onnx"
    line = _one_line_error(_run("layers", str(missing)))
    assert f"{missing}: no such file; expected an ONNX model file" in line


def test_directory_as_model_exits_2(tmp_path, train_npz):
    line = _one_line_error(_run("analyze", str(tmp_path), "--data", str(train_npz)))
    assert f"{tmp_path}: is a directory; expected an ONNX model file" in line


def test_npy_without_its_labels_exits_2(tmp_path):
    npy = tmp_path / "features.npy"
    np.save(npy, np.zeros((4, 2)))
    line = _one_line_error(_run("indices", str(npy)))
    assert f"{npy}: an .npy file holds one unnamed array" in line
    assert "--labels LABELS.npy" in line


def test_directory_without_class_folders_as_data_exits_2(tmp_path):
    line = _one_line_error(_run("indices", str(tmp_path)))
    assert f"{tmp_path}: no class subfolders; expected an image folder" in line


def test_layers_takes_a_stored_models_id(embedded_server, capsys):
    """An id is not a file: the stored model is described (its id is its sha256)."""
    data = H.selection_mlp(6, [0, 1], n_classes=3, seed=9).SerializeToString()
    stored = embedded_server.upload_model(data, name="stored-net")
    assert main(["layers", stored.id, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["id"] == hashlib.sha256(data).hexdigest()
    assert described["name"] == "stored-net"
    assert "act" in [la["name"] for la in described["layers"]]


def test_unreadable_file_exits_2(tmp_path, train_npz):
    path = tmp_path / "locked.npz"
    shutil.copy(train_npz, path)
    path.chmod(0)
    cmd = [LAYERSCOPE, "indices", str(path)]
    if os.geteuid() == 0:  # root reads any file: run without the capabilities that allow it
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        cmd = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    line = _one_line_error(proc)
    assert f"{path}: permission denied" in line and "expected a data file" in line


# ---------------------------------------------------------------------------------------
# layerscope protos
# ---------------------------------------------------------------------------------------


def test_protos_writes_the_contract_that_protoc_compiles(tmp_path):
    out = tmp_path / "protos"
    proc = _run("protos", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout)["files"]
    v1 = out / "layerscope" / "v1"
    assert sorted(written) == sorted(str(v1 / n) for n in PROTO_NAMES)
    assert {p.name for p in v1.iterdir()} == PROTO_NAMES
    # protoc compiles the written files alone (their imports resolve under --out), as a
    # client in any language is generated; here into Python.
    from grpc_tools import protoc

    gen = tmp_path / "gen"
    gen.mkdir()
    rc = protoc.main(["protoc", f"-I{out}", f"--python_out={gen}",
                      *[str(v1 / n) for n in sorted(PROTO_NAMES)]])
    assert rc == 0
    assert {p.name for p in (gen / "layerscope" / "v1").glob("*_pb2.py")} == {
        n.replace(".proto", "_pb2.py") for n in PROTO_NAMES}


def test_protos_into_a_file_exits_2(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    line = _one_line_error(_run("protos", "--out", str(target)))
    assert str(target) in line and "folder" in line


def test_serve_called_from_python_runs_the_server_as_a_child_and_returns(capfd):
    """`layerscope serve` replaces the CLI process only from the command line; called from
    Python, the server runs as a child and its exit code comes back (this process stays)."""
    from layerscope.client import cli

    assert cli.main(["serve", "--help"]) == 0
    out = capfd.readouterr().out
    assert "--max-uploads" in out and "--job-timeout-s" in out
    for bad in (["--port", "-5"], ["--port", "70000"], ["--max-upload-mb", "nan"],
                ["--max-upload-mb", "0"], ["--max-queued-jobs", "-1"],
                ["--max-concurrent-jobs", "0"]):
        assert cli.main(["serve", *bad]) == 2, bad
        assert bad[0] in capfd.readouterr().err
