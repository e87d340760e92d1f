"""Modules imported when first used, not when the module naming them is imported.

``onnx`` takes most of a second to import (its ``ml_dtypes`` dependency alone about 0.7 s
here), and the server, the command line and the client only need it for what touches a
model: a warm server that computes indices, or a command that reads a data file, should
not pay for it. A module writes::

    if TYPE_CHECKING:
        import onnx
    else:
        onnx = lazy_module("onnx")

and uses ``onnx.X`` as before: the first attribute read imports the module (through the
import system's own per-module lock, so concurrent first uses are safe), every later one
finds it in ``sys.modules``. Module-level code must not read such an attribute, or the
import happens at once again (``tests/unit/test_imports.py`` pins that it does not).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class _LazyModule(ModuleType):
    """A stand-in that forwards every attribute read to the real module."""

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self.__name__), attr)

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))


def lazy_module(name: str) -> ModuleType:
    """A stand-in for module ``name`` that imports it on the first attribute read."""
    return _LazyModule(name)
