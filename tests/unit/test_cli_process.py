"""The command line's process: it builds the arguments of the command it runs only, leaves
what it imported out of the collector (``gc.freeze``) and ends as soon as the command is done
(atexit handlers, logging and the streams' flush as a normal exit; no interpreter teardown);
``main(argv)`` called from Python changes nothing in the caller's collector and returns."""

from __future__ import annotations

import gc
import shlex
import subprocess
import sys
import textwrap

import pytest

from layerscope.client.cli import COMMANDS, build_parser


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=False, timeout=120)


def test_the_command_imports_without_the_collector_and_runs_with_it(tmp_path):
    """``layerscope`` (``layerscope.__main__:main``) imports the command line with the
    collector paused (no collection during the imports), then runs the command with it
    enabled and the imports frozen."""
    done = run_python("""
        import gc, sys
        imported = []  # at each collection after the command line's import began: whether
        gc.callbacks.append(  # it had ended by then (its last function defined)
            lambda phase, info: phase == "start" and "layerscope.client" in sys.modules
            and imported.append(hasattr(sys.modules.get("layerscope.client.cli"),
                                        "_discard_stdout")))
        import layerscope.__main__ as entry
        sys.argv = ["layerscope", "--version"]
        try:
            entry.main()
        except SystemExit:
            pass
        print(imported.count(False), gc.isenabled(), gc.get_freeze_count())
        """)
    assert done.returncode == 0, done.stderr
    during, enabled, frozen = done.stdout.splitlines()[-1].split()
    assert during == "0" and enabled == "True" and int(frozen) > 1000, done.stdout
    version = subprocess.run([sys.executable, "-m", "layerscope", "--version"],
                             capture_output=True, text=True, check=False, timeout=120)
    assert version.returncode == 0 and version.stdout.startswith("layerscope "), version


def test_the_command_lines_process_freezes_its_imports_and_ends_at_once(tmp_path):
    done = run_python(f"""
        import atexit, gc, sys
        from layerscope.client.cli import main
        atexit.register(lambda: print("atexit", gc.get_freeze_count()))
        sys.argv = ['layerscope', 'protos', '--out', {str(tmp_path)!r}]
        code = main()
        print("after main")  # never: the process ended inside main
        """)
    assert done.returncode == 0, done.stderr  # the command succeeded ...
    lines = done.stdout.splitlines()
    assert "after main" not in lines
    assert lines[-1].split()[0] == "atexit"  # ... its atexit handlers ran ...
    assert int(lines[-1].split()[1]) > 1000  # ... with the imported modules' objects frozen
    assert (tmp_path / "layerscope" / "v1").is_dir()  # and its output is written


def test_the_early_end_keeps_the_exit_code_the_output_and_the_log(tmp_path):
    log = tmp_path / "log.txt"
    done = run_python(f"""
        import logging, sys, tempfile, weakref
        from layerscope.client import cli
        handler = logging.FileHandler({str(log)!r}, delay=True)
        logging.getLogger("t").addHandler(handler)
        logging.getLogger("t").warning("logged before the end")
        held = tempfile.TemporaryDirectory(dir={str(tmp_path)!r})  # removed by its finalizer
        sys.stdout.write("unflushed output")
        cli._end_process(7)
        """)
    assert done.returncode == 7
    assert done.stdout == "unflushed output"
    assert log.read_text() == "logged before the end\n"
    assert [p.name for p in tmp_path.iterdir()] == ["log.txt"]  # the temporary folder went


def test_the_process_waits_for_a_running_thread_as_a_normal_exit_does(tmp_path):
    done = run_python("""
        import threading
        from layerscope.client import cli
        release = threading.Event()
        def work():
            release.wait(); print("thread finished", flush=True)
        threading.Thread(target=work).start()
        cli._end_process(0)  # the thread is alive, waiting: this returns
        print("normal exit", flush=True)
        release.set()
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["normal exit", "thread finished"]


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
    alone = build_parser(cmd.name)
    (sub,) = [a for a in alone._actions if a.dest == "command"]
    assert set(sub.choices) == {cmd.name}  # the others' parsers are not built
    with pytest.raises(SystemExit):  # its own errors as the whole parser's
        alone.parse_args([cmd.name, "--no-such-flag"])


def test_when_a_stream_cannot_be_flushed_the_normal_exit_follows_and_atexit_runs_once():
    done = run_python("""
        import atexit, sys
        from layerscope.client import cli
        atexit.register(lambda: sys.__stderr__.write("handler ran\\n"))
        class Full:
            def write(self, text): return len(text)
            def flush(self): raise OSError(28, "No space left on device")
        sys.stdout = Full()
        cli._end_process(0)
        sys.stdout = sys.__stdout__
        print("normal exit", flush=True)
        """)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["normal exit"]
    assert done.stderr.count("handler ran") == 1
