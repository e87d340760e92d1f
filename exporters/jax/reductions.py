"""Translation rules of the reductions: sums, extrema and products over axes, arg-extrema,
cumulative sums, and window reductions (max and sum pooling)."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from .core import ConverterCore
from .graph import UnsupportedJax, Value, inverse


class ReductionRules(ConverterCore):
    """``p_<primitive>`` methods of the reductions and pooling."""

    def _reduce(self, op: str, eqn: Any, ins: list[Value]) -> list[Value]:
        axes = [int(a) for a in eqn.params["axes"]]
        if not axes:
            return list(ins)
        x = self.name(ins[0])
        if op == "ReduceSum":
            return [self.g.op(op, [x, self.ints(axes, "axes")], op.lower(), keepdims=0)]
        return [self.g.op(op, [x], op.lower(), axes=axes, keepdims=0)]

    def p_reduce_sum(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._reduce("ReduceSum", eqn, ins)

    def p_reduce_max(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._reduce("ReduceMax", eqn, ins)

    def p_reduce_min(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._reduce("ReduceMin", eqn, ins)

    def p_reduce_prod(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._reduce("ReduceProd", eqn, ins)

    def _arg(self, op: str, eqn: Any, ins: list[Value]) -> list[Value]:
        (axis,) = eqn.params["axes"]
        out = self.g.op(op, [self.name(ins[0])], op.lower(), axis=int(axis), keepdims=0)
        dtype = np.dtype(eqn.params["index_dtype"])
        if dtype != np.int64:
            out = self.g.op("Cast", [out], op.lower(), to=helper.np_dtype_to_tensor_dtype(dtype))
        return [out]

    def p_argmax(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._arg("ArgMax", eqn, ins)

    def p_argmin(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._arg("ArgMin", eqn, ins)

    def p_cumsum(self, eqn: Any, ins: list[Value]) -> list[Value]:
        axis = self.g.const(np.asarray(int(eqn.params["axis"]), dtype=np.int64), "axis")
        return [self.g.op("CumSum", [self.name(ins[0]), axis], "cumsum",
                          reverse=int(bool(eqn.params.get("reverse", False))))]

    def _pool(self, eqn: Any, ins: list[Value], kind: str) -> list[Value]:
        p = eqn.params
        window = [int(w) for w in p["window_dimensions"]]
        strides = [int(s) for s in p["window_strides"]]
        padding = [(int(lo), int(hi)) for lo, hi in p["padding"]]
        wdil = [int(d) for d in p["window_dilation"]]
        if any(int(d) != 1 for d in p["base_dilation"]):
            raise UnsupportedJax("reduce_window with base_dilation")
        spatial = [i for i in range(len(window)) if window[i] != 1 or strides[i] != 1
                   or padding[i] != (0, 0) or wdil[i] != 1]
        if not spatial:
            return list(ins)
        other = [i for i in range(len(window)) if i not in spatial]
        if not other or other[0] != 0 or len(other) > 2 or len(spatial) > 3:
            raise UnsupportedJax("pooling other than over 1 to 3 axes between a leading batch "
                                 "axis and at most one channel axis")
        if kind == "sum" and any(d != 1 for d in wdil):
            raise UnsupportedJax("sum pooling with window dilation (needs opset 19)")
        if any(lo < 0 or hi < 0 for lo, hi in padding):
            raise UnsupportedJax("pooling with negative padding")
        perm = other + spatial
        x = self.name(ins[0])
        if perm != sorted(perm):
            x = self.g.op("Transpose", [x], "transpose", perm=perm)
        if len(other) == 1:
            x = self.g.op("Unsqueeze", [x, self.ints([1], "axes")], "unsqueeze")
        attrs: dict[str, Any] = {
            "kernel_shape": [window[i] for i in spatial],
            "strides": [strides[i] for i in spatial],
            "pads": [padding[i][0] for i in spatial] + [padding[i][1] for i in spatial],
        }
        if kind == "max":
            y = self.g.op("MaxPool", [x], "maxpool", dilations=[wdil[i] for i in spatial],
                          **attrs)
        else:
            avg = self.g.op("AveragePool", [x], "avgpool", count_include_pad=1, **attrs)
            n = int(np.prod(attrs["kernel_shape"]))
            y = self.g.op("Mul", [avg, self.scalar(n, eqn.invars[0])], "sumpool")
        if len(other) == 1:
            y = self.g.op("Squeeze", [y, self.ints([1], "axes")], "squeeze")
        if perm != sorted(perm):
            y = self.g.op("Transpose", [y], "transpose", perm=inverse(perm))
        return [y]

    def p_reduce_window_max(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._pool(eqn, ins, "max")

    def p_reduce_window_sum(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._pool(eqn, ins, "sum")

