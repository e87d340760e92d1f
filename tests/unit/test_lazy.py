"""layerscope.lazy: a module stand-in imports its module on the first attribute read,
once, however many threads read it first together."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from layerscope.lazy import lazy_module


def test_stand_in_imports_on_first_attribute_read_only():
    code = ("import sys\nfrom layerscope.lazy import lazy_module\n"
            "m = lazy_module('colorsys')\n"
            "before = 'colorsys' in sys.modules\n"
            "value = m.rgb_to_hsv(1.0, 0.0, 0.0)\n"
            "import colorsys\n"
            "print(before, 'colorsys' in sys.modules, value == colorsys.rgb_to_hsv(1.0, 0, 0),"
            " m.rgb_to_hsv is colorsys.rgb_to_hsv)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.split() == ["False", "True", "True", "True"]


def test_concurrent_first_reads_run_the_module_once(tmp_path: Path, monkeypatch):
    name = "layerscope_lazy_probe"
    (tmp_path / f"{name}.py").write_text(
        "import builtins, time\n"
        "builtins.lazy_probe_runs = getattr(builtins, 'lazy_probe_runs', 0) + 1\n"
        "time.sleep(0.05)  # a slow import: the other threads arrive while it runs\n"
        "VALUE = 42\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    import builtins
    monkeypatch.setattr(builtins, "lazy_probe_runs", 0, raising=False)
    stand_in = lazy_module(name)
    start = threading.Barrier(8)
    seen: list[int] = []

    def read() -> None:
        start.wait()
        seen.append(stand_in.VALUE)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [42] * 8
    assert builtins.lazy_probe_runs == 1
    assert sys.modules[name].VALUE == 42


def test_missing_attribute_and_module_errors_are_the_real_ones():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        lazy_module("json").no_such_name  # noqa: B018
    with pytest.raises(ModuleNotFoundError, match="layerscope_no_such_module"):
        lazy_module("layerscope_no_such_module").anything  # noqa: B018
