"""Translation rules of the contractions: ``dot_general`` as ``MatMul`` (or ``Einsum``) and
``conv_general_dilated`` as ``Conv``, with the transposes JAX's layouts need."""

from __future__ import annotations

from typing import Any

import numpy as np
from onnx import helper

from .core import ConverterCore
from .graph import Const, UnsupportedJax, Value, inverse


class LinalgRules(ConverterCore):
    """``p_<primitive>`` methods of matrix products and convolutions."""

    def _transpose_value(self, v: Value, perm: list[int]) -> Value:
        if isinstance(v, Const):
            return Const(np.ascontiguousarray(v.value.transpose(perm)), v.hint)
        return self.g.op("Transpose", [v], "transpose", perm=perm)

    def _cast_to(self, v: Value, have: Any, want: np.dtype) -> Value:
        if np.dtype(have) == want:
            return v
        if isinstance(v, Const):
            return Const(v.value.astype(want), v.hint)
        return self.g.op("Cast", [v], "cast", to=helper.np_dtype_to_tensor_dtype(want))

    def p_dot_general(self, eqn: Any, ins: list[Value]) -> list[Value]:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lc, rc, lb, rb = (list(map(int, t)) for t in (lc, rc, lb, rb))
        ls, rs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
        out_dtype = np.dtype(eqn.outvars[0].aval.dtype)
        lhs = self._cast_to(ins[0], eqn.invars[0].aval.dtype, out_dtype)
        rhs = self._cast_to(ins[1], eqn.invars[1].aval.dtype, out_dtype)
        nl, nr, nb = len(ls), len(rs), len(lb)
        batch = list(range(nb))
        plan: tuple[list[int] | None, list[int] | None] | None = None  # transposes, or None
        if len(lc) == 1 and lb == batch and rb == batch:
            if nb == 0 and nl >= 1 and nr in (1, 2):
                lt: list[int] | None = None
                rt: list[int] | None = None
                ok = True
                if lc[0] != nl - 1:  # [K, M] @ ...: transpose a matrix, else no MatMul
                    ok, lt = (nl, lc[0]) == (2, 0), [1, 0]
                if rc[0] != 0:
                    ok, rt = ok and (nr, rc[0]) == (2, 1), [1, 0]
                if ok:
                    plan = (lt, rt)
            elif nb > 0 and nl == nb + 2 and nr == nb + 2:
                swap = [*batch, nb + 1, nb]
                plan = (swap if lc[0] == nb else None, swap if rc[0] == nb + 1 else None)
        if plan is not None:
            if plan[0] is not None:
                lhs = self._transpose_value(lhs, plan[0])
            if plan[1] is not None:
                rhs = self._transpose_value(rhs, plan[1])
            return [self.g.op("MatMul", [self.name(lhs), self.name(rhs)], "matmul")]
        letters = iter("abcdefghijklmnopqrstuvwxyz")
        lsub = [""] * nl
        rsub = [""] * nr
        for a, b in zip(lb, rb, strict=True):
            lsub[a] = rsub[b] = next(letters)
        for a, b in zip(lc, rc, strict=True):
            lsub[a] = rsub[b] = next(letters)
        for i in range(nl):
            lsub[i] = lsub[i] or next(letters)
        for i in range(nr):
            rsub[i] = rsub[i] or next(letters)
        out = ([lsub[a] for a in lb] + [lsub[i] for i in range(nl) if i not in lb + lc]
               + [rsub[i] for i in range(nr) if i not in rb + rc])
        eq = f"{''.join(lsub)},{''.join(rsub)}->{''.join(out)}"
        return [self.g.op("Einsum", [self.name(lhs), self.name(rhs)], "einsum", equation=eq)]

    def p_conv_general_dilated(self, eqn: Any, ins: list[Value]) -> list[Value]:
        p = eqn.params
        if any(int(d) != 1 for d in p["lhs_dilation"]):
            raise UnsupportedJax("conv_general_dilated with lhs_dilation (a transposed "
                                 "convolution)")
        if int(p["batch_group_count"]) != 1:
            raise UnsupportedJax("conv_general_dilated with batch_group_count > 1")
        pads = [(int(lo), int(hi)) for lo, hi in p["padding"]]
        if any(lo < 0 or hi < 0 for lo, hi in pads):
            raise UnsupportedJax("convolution with negative padding")
        dn = p["dimension_numbers"]
        lhs_spec, rhs_spec, out_spec = (list(map(int, s)) for s in (dn.lhs_spec, dn.rhs_spec,
                                                                     dn.out_spec))
        out_dtype = np.dtype(eqn.outvars[0].aval.dtype)
        x = self._cast_to(ins[0], eqn.invars[0].aval.dtype, out_dtype)
        w = self._cast_to(ins[1], eqn.invars[1].aval.dtype, out_dtype)
        if lhs_spec != sorted(lhs_spec):
            x = self._transpose_value(x, lhs_spec)
        if rhs_spec != sorted(rhs_spec):
            w = self._transpose_value(w, rhs_spec)
        y = self.g.op("Conv", [self.name(x), self.name(w)], "conv",
                      strides=[int(s) for s in p["window_strides"]],
                      pads=[lo for lo, _ in pads] + [hi for _, hi in pads],
                      dilations=[int(d) for d in p["rhs_dilation"]],
                      group=int(p["feature_group_count"]))
        if out_spec != sorted(out_spec):
            y = self.g.op("Transpose", [y], "transpose", perm=inverse(out_spec))
        return [y]

