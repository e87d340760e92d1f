"""The command line's process: it builds the arguments of the command it runs only, and leaves
what it imported to the exit (``gc.freeze``), so that the interpreter's shutdown collections
do not traverse NumPy's, gRPC's and protobuf's objects; ``main(argv)`` called from Python
changes nothing in the caller's collector."""

from __future__ import annotations

import gc
import shlex
import subprocess
import sys

import pytest

from layerscope.client.cli import COMMANDS, build_parser


def test_the_command_lines_process_freezes_its_imports(tmp_path):
    code = ("import gc, sys\n"
            "from layerscope.client.cli import main\n"
            f"sys.argv = ['layerscope', 'protos', '--out', {str(tmp_path)!r}]\n"
            "code = main()\n"
            "print(code, gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    assert out[-2] == "0"  # the command succeeded ...
    assert int(out[-1]) > 1000  # ... with the imported modules' objects frozen
    assert (tmp_path / "layerscope" / "v1").is_dir()  # and its output written


def test_main_called_from_python_freezes_nothing(tmp_path, capsys):
    from layerscope.client.cli import main

    before = gc.get_freeze_count()
    assert main(["protos", "--out", str(tmp_path)]) == 0
    assert gc.get_freeze_count() == before


@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.name != "serve"], ids=lambda c: c.name)
def test_the_parser_of_one_command_reads_its_example_as_the_whole_parser_does(cmd):
    (line,) = [part for part in cmd.example.split(" && ")
               if part.strip().startswith(f"layerscope {cmd.name}")]
    argv = shlex.split(line.split(" > ")[0])[1:]
    assert argv[0] == cmd.name
    assert vars(build_parser(cmd.name).parse_args(argv)) == vars(build_parser().parse_args(argv))
    others = build_parser(cmd.name)
    (sub,) = [a for a in others._actions if a.dest == "command"]
    assert set(sub.choices) == {c.name for c in COMMANDS}  # every command still listed
