"""A jaxpr written as ONNX nodes: equations in order, calls inlined, equations on constants
evaluated by JAX, every other primitive handed to its family's rule."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..base import require
from .elementwise import BINARY, LOGICAL, UNARY, ElementwiseRules
from .graph import Const, UnsupportedJax, Value, all_static, const_of
from .linalg import LinalgRules
from .reductions import ReductionRules
from .shapes import ShapeRules

FOLD_LIMIT = 1 << 20  # largest constant (elements) made by evaluating an op on constants
ALIASES = frozenset({"stop_gradient", "copy", "copy_p", "optimization_barrier",
                     "sharding_constraint", "device_put", "pvary", "mesh_cast"})
CALLS = frozenset({"jit", "pjit", "closed_call", "core_call", "custom_jvp_call",
                   "custom_vjp_call", "custom_vjp_call_jaxpr", "remat", "checkpoint"})
CALL_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
RANDOM = frozenset({"random_bits", "random_seed", "random_wrap", "random_unwrap",
                    "random_fold_in", "random_split", "threefry2x32", "rng_bit_generator",
                    "rng_uniform"})
OTHERS = ("reshape", "broadcast_in_dim", "squeeze", "transpose", "reduce_sum", "reduce_max",
          "reduce_min", "reduce_prod", "argmax", "argmin", "concatenate", "pad", "slice",
          "select_n", "clamp", "dot_general", "conv_general_dilated", "reduce_window_max",
          "reduce_window_sum", "iota", "dim_as_value", "split", "gather", "cumsum", "rev",
          "convert_element_type", "integer_pow", "square", "rsqrt", "log1p", "expm1", "exp2",
          "erfc", "is_finite", "not", "ne", "rem", "round", "reduce_precision",
          "custom_jvp_call", "custom_vjp_call", "jit", "pjit", "closed_call", "remat",
          "checkpoint")
SUPPORTED = frozenset(UNARY) | frozenset(BINARY) | frozenset(LOGICAL) | ALIASES | frozenset(
    OTHERS)




class Converter(ElementwiseRules, ShapeRules, ReductionRules, LinalgRules):
    """Writes the equations of a jaxpr as ONNX nodes into a :class:`Graph`."""

    # -- jaxprs -----------------------------------------------------------------------
    def run(self, jaxpr: Any, consts: Sequence[Value], args: Sequence[Value]) -> list[Value]:
        jcore = require("jax.extend.core", "jax")
        env: dict[Any, Value] = {}

        def read(v: Any) -> Value:
            if isinstance(v, jcore.Literal):
                return Const(np.asarray(v.val, dtype=v.aval.dtype), "literal")
            return env[v]

        for var, val in zip(jaxpr.constvars, consts, strict=True):
            env[var] = val
        for var, val in zip(jaxpr.invars, args, strict=True):
            env[var] = val
        for eqn in jaxpr.eqns:
            ins = [read(v) for v in eqn.invars]
            outs = self.eqn(eqn, ins)
            for var, val in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def eqn(self, eqn: Any, ins: list[Value]) -> list[Value]:
        prim = eqn.primitive.name
        if (prim == "custom_jvp_call" and eqn.params.get("name") == "relu"
                and not isinstance(ins[0], Const)):
            return [self.g.op("Relu", [self.name(ins[0])], "relu")]
        sub = next((eqn.params[k] for k in CALL_PARAMS if k in eqn.params), None)
        if prim in CALLS and sub is not None:
            jcore = require("jax.extend.core", "jax")
            if isinstance(sub, jcore.ClosedJaxpr):
                return self.run(sub.jaxpr, [const_of(c) for c in sub.consts], ins)
            return self.run(sub, [], ins)
        if prim in RANDOM:
            raise UnsupportedJax(
                f"the function draws random numbers ({prim}); put the model in evaluation "
                "mode (flax.nnx: model.eval(); Linen: deterministic=True) before exporting")
        consts = [v for v in ins if isinstance(v, Const)]
        if len(consts) == len(ins):
            folded = self.fold(eqn, consts)
            if folded is not None:
                return folded
        if prim in ALIASES:
            return list(ins)
        handler: Callable[[Any, list[Value]], list[Value]] | None = getattr(
            self, f"p_{prim}", None)
        if prim in UNARY:
            return [self.g.op(UNARY[prim], [self.name(ins[0])])]
        if prim in BINARY:
            return [self.binary(prim, ins)]
        if prim in LOGICAL:
            if eqn.invars[0].aval.dtype != np.bool_:
                raise UnsupportedJax(f"bitwise {prim} on integers has no ONNX opset <= 17 op")
            return [self.g.op(LOGICAL[prim], [self.name(v) for v in ins])]
        if handler is None:
            raise UnsupportedJax(f"no ONNX translation for the JAX primitive {prim!r} "
                                 f"(supported: {', '.join(sorted(SUPPORTED))})")
        return handler(eqn, ins)

    def fold(self, eqn: Any, ins: list[Const]) -> list[Value] | None:
        """Evaluate an equation on constants with JAX; None when that is not wise."""
        avals = [v.aval for v in eqn.outvars]
        if not all(all_static(a.shape) for a in avals):
            return None
        size = sum(int(np.prod(a.shape)) for a in avals)
        if size > max(FOLD_LIMIT, *(c.value.size for c in ins), 0):
            return None
        try:
            out = eqn.primitive.bind(*[c.value for c in ins], **eqn.params)
        except Exception:  # noqa: BLE001 - leave it to the ONNX translation
            return None
        outs = out if eqn.primitive.multiple_results else [out]
        hint = ins[0].hint if len(ins) == 1 else "const"
        return [Const(np.asarray(o), hint) for o in outs]

