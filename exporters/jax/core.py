"""What every translation rule stands on: the graph being written, constants turned into
initializers on first use, and dimensions (static, or linear in the symbolic batch size)
turned into int64 tensors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .graph import Const, Graph, UnsupportedJax, Value, all_static, is_static


class ConverterCore:
    """The graph, the symbolic batch dimension, and the tensors of dimensions made so far."""

    def __init__(self, graph: Graph, batch: Any, batch_source: str | None) -> None:
        self.g = graph
        self.b = batch  # the symbolic batch dimension
        self.batch_source = batch_source  # an input whose axis 0 is the batch
        self.dims: dict[tuple[int, int], str] = {}

    def name(self, v: Value) -> str:
        if isinstance(v, Const):
            if v.name is None:
                v.name = self.g.const(v.value, v.hint)
            return v.name
        return v

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.g.const(np.asarray(list(values), dtype=np.int64), hint)

    def runtime_dim(self, d: Any) -> str:
        """A 1-element int64 tensor holding dimension ``d`` (static or k*b + c)."""
        if is_static(d):
            return self.ints([int(d)])
        k, c = self._linear(d)
        key = (k, c)
        if key in self.dims:
            return self.dims[key]
        if self.batch_source is None:
            raise UnsupportedJax(f"dimension {d} depends on the batch size, but no input has "
                                 "a batch axis")
        if (1, 0) not in self.dims:
            shape = self.g.op("Shape", [self.batch_source], "batch_size")
            self.dims[(1, 0)] = self.g.op("Slice", [shape, self.ints([0]), self.ints([1])],
                                          "batch_size")
        out = self.dims[(1, 0)]
        if k != 1:
            out = self.g.op("Mul", [out, self.ints([k])], "dim")
        if c != 0:
            out = self.g.op("Add", [out, self.ints([c])], "dim")
        self.dims[key] = out
        return out

    def _linear(self, d: Any) -> tuple[int, int]:
        """``(k, c)`` with ``d == k * b + c``, for symbolic dimensions linear in the batch."""
        b = self.b
        try:
            q = d // b
            if is_static(q) and is_static(d - q * b):
                return int(q), int(d - q * b)
            for k in range(1, 4097):
                rest = d - k * b
                if is_static(rest):
                    return k, int(rest)
        except Exception:  # noqa: BLE001 - not an expression in b
            pass
        raise UnsupportedJax(f"dimension {d} is not of the form k*batch + c")

    def shape_vector(self, dims: Sequence[Any]) -> str:
        if all_static(dims):
            return self.ints([int(d) for d in dims], "shape")
        parts = [self.runtime_dim(d) for d in dims]
        return self.g.op("Concat", parts, "shape", axis=0)

    def scalar(self, value: float, like: Any) -> str:
        return self.g.const(np.asarray(value, dtype=like.aval.dtype))

