"""Translation rules of the primitives that move or select data: reshapes, broadcasts,
transposes, concatenation, splits, pads, slices, ``iota`` and the gathers of indexing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from onnx import helper

from .core import ConverterCore
from .graph import Const, UnsupportedJax, Value, all_static, is_static, same

INT64_MAX = np.iinfo(np.int64).max


class ShapeRules(ConverterCore):
    """``p_<primitive>`` methods of the shape and indexing primitives."""

    def p_reshape(self, eqn: Any, ins: list[Value]) -> list[Value]:
        if eqn.params.get("dimensions") is not None:
            raise UnsupportedJax("reshape with dimensions (a transposing reshape)")
        old = eqn.invars[0].aval.shape
        new = list(eqn.params["new_sizes"])
        if all_static(new):
            return [self.g.op("Reshape", [self.name(ins[0]), self.ints(new, "shape")],
                              "reshape")]
        parts: list[Any] = []
        unknown = [i for i, d in enumerate(new)
                   if not is_static(d) and not (i < len(old) and same(old[i], d))]
        for i, d in enumerate(new):
            if is_static(d):
                parts.append(int(d))
            elif i in unknown:
                parts.append(-1 if len(unknown) == 1 else d)
            else:
                parts.append(0)  # copy the input's dimension
        return [self.g.op("Reshape", [self.name(ins[0]), self.shape_vector(parts)],
                          "reshape")]

    def p_broadcast_in_dim(self, eqn: Any, ins: list[Value]) -> list[Value]:
        shape = list(eqn.params["shape"])
        bdims = list(eqn.params["broadcast_dimensions"])
        src = eqn.invars[0].aval.shape
        x = self.name(ins[0])
        mid: list[Any] = [1] * len(shape)
        for i, d in enumerate(bdims):
            mid[d] = src[i]
        if len(src) != len(shape):
            if all_static(mid):
                x = self.g.op("Reshape", [x, self.ints(mid, "shape")], "reshape")
            else:
                axes = [i for i in range(len(shape)) if i not in bdims]
                x = self.g.op("Unsqueeze", [x, self.ints(axes, "axes")], "unsqueeze")
        if all(same(a, b) for a, b in zip(mid, shape, strict=True)):
            return [x]
        target = [1 if same(m, s) else s for m, s in zip(mid, shape, strict=True)]
        return [self.g.op("Expand", [x, self.shape_vector(target)], "expand")]

    def p_squeeze(self, eqn: Any, ins: list[Value]) -> list[Value]:
        dims = list(eqn.params["dimensions"])
        if not dims:
            return list(ins)
        return [self.g.op("Squeeze", [self.name(ins[0]), self.ints(dims, "axes")], "squeeze")]

    def p_transpose(self, eqn: Any, ins: list[Value]) -> list[Value]:
        perm = [int(p) for p in eqn.params["permutation"]]
        if perm == sorted(perm):
            return list(ins)
        return [self.g.op("Transpose", [self.name(ins[0])], "transpose", perm=perm)]

    def p_concatenate(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return [self.g.op("Concat", [self.name(v) for v in ins], "concat",
                          axis=int(eqn.params["dimension"]))]

    def p_split(self, eqn: Any, ins: list[Value]) -> list[Value]:
        sizes = [int(s) for s in eqn.params["sizes"]]
        outs = self.g.add("Split", [self.name(ins[0]), self.ints(sizes, "split")], "split",
                          n_out=len(sizes), axis=int(eqn.params["axis"]))
        return list(outs)

    def p_pad(self, eqn: Any, ins: list[Value]) -> list[Value]:
        config = eqn.params["padding_config"]
        if any(int(i) != 0 for _, _, i in config):
            raise UnsupportedJax("pad with interior padding")
        if any(int(lo) < 0 or int(hi) < 0 for lo, hi, _ in config):
            raise UnsupportedJax("pad with negative padding (cropping)")
        pads = [int(lo) for lo, _, _ in config] + [int(hi) for _, hi, _ in config]
        return [self.g.op("Pad", [self.name(ins[0]), self.ints(pads, "pads"),
                                  self.name(ins[1])], "pad", mode="constant")]

    def p_slice(self, eqn: Any, ins: list[Value]) -> list[Value]:
        shape = eqn.invars[0].aval.shape
        starts = eqn.params["start_indices"]
        limits = eqn.params["limit_indices"]
        strides = eqn.params["strides"] or [1] * len(shape)
        axes, s, e, st = [], [], [], []
        for ax, (d, a, z, k) in enumerate(zip(shape, starts, limits, strides, strict=True)):
            if same(a, 0) and same(z, d) and same(k, 1):
                continue
            if not (is_static(a) and is_static(k)):
                raise UnsupportedJax("slice with a start depending on the batch size")
            axes.append(ax)
            s.append(int(a))
            st.append(int(k))
            e.append(INT64_MAX if same(z, d) else z)
        if not axes:
            return list(ins)
        ends = (self.ints([int(z) for z in e], "ends") if all_static(e)
                else self.shape_vector(e))
        return [self.g.op("Slice", [self.name(ins[0]), self.ints(s, "starts"), ends,
                                    self.ints(axes, "axes"), self.ints(st, "steps")], "slice")]

    def p_rev(self, eqn: Any, ins: list[Value]) -> list[Value]:
        dims = [int(d) for d in eqn.params["dimensions"]]
        if not dims:
            return list(ins)
        n = len(dims)
        return [self.g.op("Slice", [self.name(ins[0]), self.ints([-1] * n, "starts"),
                                    self.ints([-INT64_MAX] * n, "ends"),
                                    self.ints(dims, "axes"), self.ints([-1] * n, "steps")],
                          "rev")]

    def p_dim_as_value(self, eqn: Any, ins: list[Value]) -> list[Value]:
        d = eqn.params["dim"]
        want = np.dtype(eqn.outvars[0].aval.dtype)
        if is_static(d):
            return [Const(np.asarray(int(d), dtype=want), "dim")]
        scalar = self.g.op("Reshape", [self.runtime_dim(d), self.ints([], "scalar")], "dim")
        return [self.g.op("Cast", [scalar], "dim", to=helper.np_dtype_to_tensor_dtype(want))]

    def p_iota(self, eqn: Any, ins: list[Value]) -> list[Value]:
        shape = eqn.params["shape"]
        if not all_static(shape):
            raise UnsupportedJax("iota whose shape depends on the batch size")
        dim = int(eqn.params["dimension"])
        ar = np.arange(shape[dim], dtype=np.dtype(eqn.params["dtype"]))
        view = [1] * len(shape)
        view[dim] = int(shape[dim])
        return [Const(np.broadcast_to(ar.reshape(view), tuple(shape)).copy(), "iota")]

    def p_gather(self, eqn: Any, ins: list[Value]) -> list[Value]:
        dn = eqn.params["dimension_numbers"]
        shape = eqn.invars[0].aval.shape
        idx_shape = eqn.invars[1].aval.shape
        sizes = list(eqn.params["slice_sizes"])
        if tuple(dn.operand_batching_dims) or tuple(dn.start_indices_batching_dims):
            raise UnsupportedJax("gather with batching dimensions")
        smap = list(dn.start_index_map)
        collapsed = list(dn.collapsed_slice_dims)
        out_rank = len(eqn.outvars[0].aval.shape)
        if (isinstance(ins[1], Const) and len(idx_shape) == 1
                and list(dn.offset_dims) == list(range(out_rank))):
            return [self._static_gather(ins[0], ins[1].value, shape, smap, collapsed, sizes)]
        if len(smap) == 1 and collapsed == smap and idx_shape and same(idx_shape[-1], 1):
            # x.take(ids, axis=a): ONNX Gather puts the ids' axes where axis a was
            ax, k = smap[0], len(idx_shape) - 1
            if (same(sizes[ax], 1) and all(same(sizes[i], shape[i]) for i in range(len(shape))
                                            if i != ax)
                    and list(dn.offset_dims) == [*range(ax), *range(ax + k, out_rank)]):
                ids = self.g.op("Squeeze", [self.name(ins[1]), self.ints([-1], "axes")], "ids")
                return [self.g.op("Gather", [self.name(ins[0]), ids], "gather", axis=ax)]
        raise UnsupportedJax("gather other than static indexing or a lookup along one axis")

    def _static_gather(self, x: Value, idx: np.ndarray, shape: Sequence[Any],
                       smap: list[int], collapsed: list[int], sizes: list[Any]) -> str:
        starts = dict.fromkeys(range(len(shape)), 0)
        for pos, ax in enumerate(smap):
            if not (is_static(shape[ax]) and is_static(sizes[ax])):
                raise UnsupportedJax("indexing along the batch axis with a constant index")
            hi = int(shape[ax]) - int(sizes[ax])
            starts[ax] = min(max(int(idx[pos]), 0), hi)  # JAX clamps start indices
        axes, s, e = [], [], []
        for ax in range(len(shape)):
            if starts[ax] == 0 and same(sizes[ax], shape[ax]):
                continue
            if not is_static(sizes[ax]):
                raise UnsupportedJax("a slice of the batch axis")
            axes.append(ax)
            s.append(starts[ax])
            e.append(starts[ax] + int(sizes[ax]))
        out = self.name(x)
        if axes:
            out = self.g.op("Slice", [out, self.ints(s, "starts"), self.ints(e, "ends"),
                                      self.ints(axes, "axes")], "slice")
        if collapsed:
            out = self.g.op("Squeeze", [out, self.ints(collapsed, "axes")], "squeeze")
        return out

