"""JAX and Flax functions to ONNX, translated from the function's jaxpr. Extra: ``layerscope[jax]``.

What is accepted:

- a pair ``(apply_fn, params)``, called as ``apply_fn(params, *inputs)`` (Flax Linen:
  ``(module.apply, variables)``); the parameters become ONNX initializers named by their
  path in the pytree (``params/Dense_0/kernel``);
- a ``flax.nnx`` Module (call ``model.eval()`` first if it has dropout or batch
  normalisation); its state becomes initializers named by path (``l1/kernel/value``);
- any other function of the inputs; the arrays it closes over become initializers.

How: the function is traced once with :func:`jax.make_jaxpr` on inputs whose batch size is
a symbolic dimension ``b`` (:func:`jax.export.symbolic_shape`), so that the ONNX model has a
dynamic batch axis, and every primitive of the jaxpr is written as ONNX operators (opset 13
to 17). Calls (``jit``, ``custom_jvp_call``, ...) are inlined; operations on constants only
are evaluated by JAX and stored as initializers; ``jax.nn.relu`` becomes ``Relu`` and
``logistic`` becomes ``Sigmoid`` so that the analysis recognises activations; the
transposes that JAX's channels-last convolutions and pooling need around ONNX's
channels-first ``Conv``/``MaxPool`` are moved through element-wise operations and cancelled,
so that a convolution's output after its bias and activation is one tensor.

Why not ``jax2tf`` + ``tf2onnx`` or ``jax2onnx``: ``jax2onnx`` depends on the plain
``onnxruntime`` package, which cannot be installed next to ``onnxruntime-gpu`` (both own the
``onnxruntime`` module). ``jax.experimental.jax2tf.convert`` now only does native
serialisation: the TensorFlow graph it makes is a single ``XlaCallModule`` op holding
StableHLO, which ``tf2onnx`` (1.17) cannot convert ("pass1 convert failed for name:
XlaCallModule"); the non-native mode (``enable_xla=False``) was removed from JAX. Reading
the jaxpr needs nothing but JAX itself (no TensorFlow).

Limits: the primitives an MLP, CNN or simple transformer uses (see :data:`SUPPORTED`);
others (``while``, ``scan``, ``cond``, ``scatter``, random numbers, general ``gather``)
raise :class:`UnsupportedJax` naming the primitive. Gathers with out-of-range indices
differ: JAX clamps or fills, ONNX ``Gather`` fails.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper

from .base import DEFAULT_TOLERANCE, MAX_OPSET, ExportReport, finish, require
from .inputs import as_input_list, input_names_of

MIN_OPSET = 13  # Squeeze/Unsqueeze/ReduceSum/Split take their axes as inputs from 13 on
INT64_MAX = np.iinfo(np.int64).max
FOLD_LIMIT = 1 << 20  # largest constant (elements) made by evaluating an op on constants


class UnsupportedJax(ValueError):
    """The function uses a JAX primitive (or a form of one) with no ONNX translation here."""


@dataclass
class _Const:
    """A value known at export time; it becomes an initializer when an ONNX node reads it."""

    value: np.ndarray
    hint: str = "const"
    name: str | None = None


Value = str | _Const  # a tensor of the ONNX graph, or a constant


class _Graph:
    """The nodes and initializers being built, with unique names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.used: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.small: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def fresh(self, hint: str) -> str:
        base = hint.replace(":", "_") or "t"
        name = base
        while name in self.used:
            self.counts[base] += 1
            name = f"{base}_{self.counts[base]}"
        self.used.add(name)
        return name

    def const(self, value: Any, hint: str = "const") -> str:
        arr = np.asarray(value)
        key = (str(arr.dtype), arr.shape, arr.tobytes()) if arr.size <= 16 else None
        if key is not None and key in self.small:
            return self.small[key]
        name = self.fresh(hint)
        self.inits[name] = arr
        if key is not None:
            self.small[key] = name
        return name

    def add(self, op: str, inputs: Sequence[str], hint: str | None = None, n_out: int = 1,
            **attrs: Any) -> list[str]:
        outs = [self.fresh(hint or op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=outs[0], **attrs))
        return outs

    def op(self, op: str, inputs: Sequence[str], hint: str | None = None, **attrs: Any) -> str:
        return self.add(op, inputs, hint, 1, **attrs)[0]


def _const_of(value: Any) -> _Const:
    """A constant the function closes over, as an array."""
    try:
        return _Const(np.asarray(value), "const")
    except Exception as exc:  # noqa: BLE001 - PRNG keys and other opaque values
        raise UnsupportedJax(f"the function closes over a {type(value).__name__} that is "
                             f"not an array ({exc})") from None


def _is_static(d: Any) -> bool:
    return isinstance(d, (int, np.integer))


def _static(shape: Sequence[Any]) -> bool:
    return all(_is_static(d) for d in shape)


def _same(a: Any, b: Any) -> bool:
    """Whether two dimensions (ints or symbolic) are known to be equal."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an undecidable symbolic comparison
        return False


def _inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
         "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
         "sin": "Sin", "cos": "Cos", "tan": "Tan", "asin": "Asin", "acos": "Acos",
         "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh",
         "atanh": "Atanh", "erf": "Erf"}
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
          "pow": "Pow", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
          "ge": "GreaterOrEqual"}
LOGICAL = {"and": "And", "or": "Or", "xor": "Xor"}
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


class _Converter:
    """Writes the equations of a jaxpr as ONNX nodes into a :class:`_Graph`."""

    def __init__(self, graph: _Graph, batch: Any, batch_source: str | None) -> None:
        self.g = graph
        self.b = batch  # the symbolic batch dimension
        self.batch_source = batch_source  # an input whose axis 0 is the batch
        self.dims: dict[tuple[int, int], str] = {}

    # -- values -----------------------------------------------------------------------
    def name(self, v: Value) -> str:
        if isinstance(v, _Const):
            if v.name is None:
                v.name = self.g.const(v.value, v.hint)
            return v.name
        return v

    def ints(self, values: Sequence[int], hint: str = "ints") -> str:
        return self.g.const(np.asarray(list(values), dtype=np.int64), hint)

    def runtime_dim(self, d: Any) -> str:
        """A 1-element int64 tensor holding dimension ``d`` (static or k*b + c)."""
        if _is_static(d):
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
            if _is_static(q) and _is_static(d - q * b):
                return int(q), int(d - q * b)
            for k in range(1, 4097):
                rest = d - k * b
                if _is_static(rest):
                    return k, int(rest)
        except Exception:  # noqa: BLE001 - not an expression in b
            pass
        raise UnsupportedJax(f"dimension {d} is not of the form k*batch + c")

    def shape_vector(self, dims: Sequence[Any]) -> str:
        if _static(dims):
            return self.ints([int(d) for d in dims], "shape")
        parts = [self.runtime_dim(d) for d in dims]
        return self.g.op("Concat", parts, "shape", axis=0)

    # -- jaxprs -----------------------------------------------------------------------
    def run(self, jaxpr: Any, consts: Sequence[Value], args: Sequence[Value]) -> list[Value]:
        jcore = require("jax.extend.core", "jax")
        env: dict[Any, Value] = {}

        def read(v: Any) -> Value:
            if isinstance(v, jcore.Literal):
                return _Const(np.asarray(v.val, dtype=v.aval.dtype), "literal")
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
                and not isinstance(ins[0], _Const)):
            return [self.g.op("Relu", [self.name(ins[0])], "relu")]
        sub = next((eqn.params[k] for k in CALL_PARAMS if k in eqn.params), None)
        if prim in CALLS and sub is not None:
            jcore = require("jax.extend.core", "jax")
            if isinstance(sub, jcore.ClosedJaxpr):
                return self.run(sub.jaxpr, [_const_of(c) for c in sub.consts], ins)
            return self.run(sub, [], ins)
        if prim in RANDOM:
            raise UnsupportedJax(
                f"the function draws random numbers ({prim}); put the model in evaluation "
                "mode (flax.nnx: model.eval(); Linen: deterministic=True) before exporting")
        consts = [v for v in ins if isinstance(v, _Const)]
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

    def fold(self, eqn: Any, ins: list[_Const]) -> list[Value] | None:
        """Evaluate an equation on constants with JAX; None when that is not wise."""
        avals = [v.aval for v in eqn.outvars]
        if not all(_static(a.shape) for a in avals):
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
        return [_Const(np.asarray(o), hint) for o in outs]

    # -- element-wise -----------------------------------------------------------------
    def binary(self, prim: str, ins: list[Value]) -> str:
        if prim == "max":
            for i, v in enumerate(ins):
                other = ins[1 - i]
                if (isinstance(v, _Const) and v.value.size == 1 and float(v.value.ravel()[0]) == 0
                        and not isinstance(other, _Const)
                        and np.issubdtype(v.value.dtype, np.floating)):
                    return self.g.op("Relu", [other], "relu")
        return self.g.op(BINARY[prim], [self.name(v) for v in ins])

    def p_ne(self, eqn: Any, ins: list[Value]) -> list[Value]:
        eq = self.g.op("Equal", [self.name(v) for v in ins])
        return [self.g.op("Not", [eq], "ne")]

    def p_not(self, eqn: Any, ins: list[Value]) -> list[Value]:
        if eqn.invars[0].aval.dtype != np.bool_:
            raise UnsupportedJax("bitwise not on integers has no ONNX opset <= 17 op")
        return [self.g.op("Not", [self.name(ins[0])])]

    def p_rem(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return [self.g.op("Mod", [self.name(v) for v in ins], "rem", fmod=1)]

    def scalar(self, value: float, like: Any) -> str:
        return self.g.const(np.asarray(value, dtype=like.aval.dtype))

    def p_integer_pow(self, eqn: Any, ins: list[Value]) -> list[Value]:
        x, y = self.name(ins[0]), int(eqn.params["y"])
        if y == 2:
            return [self.g.op("Mul", [x, x], "square")]
        return [self.g.op("Pow", [x, self.scalar(y, eqn.invars[0])], "pow")]

    def p_square(self, eqn: Any, ins: list[Value]) -> list[Value]:
        x = self.name(ins[0])
        return [self.g.op("Mul", [x, x], "square")]

    def p_rsqrt(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return [self.g.op("Reciprocal", [self.g.op("Sqrt", [self.name(ins[0])])], "rsqrt")]

    def p_log1p(self, eqn: Any, ins: list[Value]) -> list[Value]:
        one = self.scalar(1, eqn.invars[0])
        return [self.g.op("Log", [self.g.op("Add", [self.name(ins[0]), one])], "log1p")]

    def p_expm1(self, eqn: Any, ins: list[Value]) -> list[Value]:
        one = self.scalar(1, eqn.invars[0])
        return [self.g.op("Sub", [self.g.op("Exp", [self.name(ins[0])]), one], "expm1")]

    def p_exp2(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return [self.g.op("Pow", [self.scalar(2, eqn.invars[0]), self.name(ins[0])], "exp2")]

    def p_erfc(self, eqn: Any, ins: list[Value]) -> list[Value]:
        one = self.scalar(1, eqn.invars[0])
        return [self.g.op("Sub", [one, self.g.op("Erf", [self.name(ins[0])])], "erfc")]

    def p_is_finite(self, eqn: Any, ins: list[Value]) -> list[Value]:
        x = self.name(ins[0])
        bad = self.g.op("Or", [self.g.op("IsInf", [x]), self.g.op("IsNaN", [x])])
        return [self.g.op("Not", [bad], "is_finite")]

    def p_round(self, eqn: Any, ins: list[Value]) -> list[Value]:
        x = self.name(ins[0])
        if int(eqn.params.get("rounding_method", 0)) == 1:  # to nearest even
            return [self.g.op("Round", [x])]
        half = self.scalar(0.5, eqn.invars[0])
        mag = self.g.op("Floor", [self.g.op("Add", [self.g.op("Abs", [x]), half])])
        return [self.g.op("Mul", [self.g.op("Sign", [x]), mag], "round")]

    def p_reduce_precision(self, eqn: Any, ins: list[Value]) -> list[Value]:
        info = np.finfo(eqn.invars[0].aval.dtype)
        if (eqn.params["exponent_bits"], eqn.params["mantissa_bits"]) == (info.nexp,
                                                                           info.nmant):
            return list(ins)
        raise UnsupportedJax("reduce_precision to a narrower float type")

    def p_convert_element_type(self, eqn: Any, ins: list[Value]) -> list[Value]:
        new = np.dtype(eqn.params["new_dtype"])
        if new == eqn.invars[0].aval.dtype:
            return list(ins)
        to = helper.np_dtype_to_tensor_dtype(new)
        return [self.g.op("Cast", [self.name(ins[0])], "cast", to=to)]

    def p_select_n(self, eqn: Any, ins: list[Value]) -> list[Value]:
        if len(ins) != 3:
            raise UnsupportedJax(f"select_n with {len(ins) - 1} cases (only 2 translate)")
        pred = self.name(ins[0])
        if eqn.invars[0].aval.dtype != np.bool_:
            pred = self.g.op("Cast", [pred], "pred", to=onnx.TensorProto.BOOL)
        # select_n(p, a, b) is b where p else a
        return [self.g.op("Where", [pred, self.name(ins[2]), self.name(ins[1])], "where")]

    def p_clamp(self, eqn: Any, ins: list[Value]) -> list[Value]:
        lo, x, hi = (self.name(v) for v in ins)
        return [self.g.op("Max", [self.g.op("Min", [x, hi]), lo], "clamp")]

    # -- shapes -----------------------------------------------------------------------
    def p_reshape(self, eqn: Any, ins: list[Value]) -> list[Value]:
        if eqn.params.get("dimensions") is not None:
            raise UnsupportedJax("reshape with dimensions (a transposing reshape)")
        old = eqn.invars[0].aval.shape
        new = list(eqn.params["new_sizes"])
        if _static(new):
            return [self.g.op("Reshape", [self.name(ins[0]), self.ints(new, "shape")],
                              "reshape")]
        parts: list[Any] = []
        unknown = [i for i, d in enumerate(new)
                   if not _is_static(d) and not (i < len(old) and _same(old[i], d))]
        for i, d in enumerate(new):
            if _is_static(d):
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
            if _static(mid):
                x = self.g.op("Reshape", [x, self.ints(mid, "shape")], "reshape")
            else:
                axes = [i for i in range(len(shape)) if i not in bdims]
                x = self.g.op("Unsqueeze", [x, self.ints(axes, "axes")], "unsqueeze")
        if all(_same(a, b) for a, b in zip(mid, shape, strict=True)):
            return [x]
        target = [1 if _same(m, s) else s for m, s in zip(mid, shape, strict=True)]
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
            if _same(a, 0) and _same(z, d) and _same(k, 1):
                continue
            if not (_is_static(a) and _is_static(k)):
                raise UnsupportedJax("slice with a start depending on the batch size")
            axes.append(ax)
            s.append(int(a))
            st.append(int(k))
            e.append(INT64_MAX if _same(z, d) else z)
        if not axes:
            return list(ins)
        ends = (self.ints([int(z) for z in e], "ends") if _static(e)
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
        if _is_static(d):
            return [_Const(np.asarray(int(d), dtype=want), "dim")]
        scalar = self.g.op("Reshape", [self.runtime_dim(d), self.ints([], "scalar")], "dim")
        return [self.g.op("Cast", [scalar], "dim", to=helper.np_dtype_to_tensor_dtype(want))]

    def p_iota(self, eqn: Any, ins: list[Value]) -> list[Value]:
        shape = eqn.params["shape"]
        if not _static(shape):
            raise UnsupportedJax("iota whose shape depends on the batch size")
        dim = int(eqn.params["dimension"])
        ar = np.arange(shape[dim], dtype=np.dtype(eqn.params["dtype"]))
        view = [1] * len(shape)
        view[dim] = int(shape[dim])
        return [_Const(np.broadcast_to(ar.reshape(view), tuple(shape)).copy(), "iota")]

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
        if (isinstance(ins[1], _Const) and len(idx_shape) == 1
                and list(dn.offset_dims) == list(range(out_rank))):
            return [self._static_gather(ins[0], ins[1].value, shape, smap, collapsed, sizes)]
        if len(smap) == 1 and collapsed == smap and idx_shape and _same(idx_shape[-1], 1):
            # x.take(ids, axis=a): ONNX Gather puts the ids' axes where axis a was
            ax, k = smap[0], len(idx_shape) - 1
            if (_same(sizes[ax], 1) and all(_same(sizes[i], shape[i]) for i in range(len(shape))
                                            if i != ax)
                    and list(dn.offset_dims) == [*range(ax), *range(ax + k, out_rank)]):
                ids = self.g.op("Squeeze", [self.name(ins[1]), self.ints([-1], "axes")], "ids")
                return [self.g.op("Gather", [self.name(ins[0]), ids], "gather", axis=ax)]
        raise UnsupportedJax("gather other than static indexing or a lookup along one axis")

    def _static_gather(self, x: Value, idx: np.ndarray, shape: Sequence[Any],
                       smap: list[int], collapsed: list[int], sizes: list[Any]) -> str:
        starts = dict.fromkeys(range(len(shape)), 0)
        for pos, ax in enumerate(smap):
            if not (_is_static(shape[ax]) and _is_static(sizes[ax])):
                raise UnsupportedJax("indexing along the batch axis with a constant index")
            hi = int(shape[ax]) - int(sizes[ax])
            starts[ax] = min(max(int(idx[pos]), 0), hi)  # JAX clamps start indices
        axes, s, e = [], [], []
        for ax in range(len(shape)):
            if starts[ax] == 0 and _same(sizes[ax], shape[ax]):
                continue
            if not _is_static(sizes[ax]):
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

    # -- reductions -------------------------------------------------------------------
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

    # -- linear algebra ---------------------------------------------------------------
    def _transpose_value(self, v: Value, perm: list[int]) -> Value:
        if isinstance(v, _Const):
            return _Const(np.ascontiguousarray(v.value.transpose(perm)), v.hint)
        return self.g.op("Transpose", [v], "transpose", perm=perm)

    def _cast_to(self, v: Value, have: Any, want: np.dtype) -> Value:
        if np.dtype(have) == want:
            return v
        if isinstance(v, _Const):
            return _Const(v.value.astype(want), v.hint)
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
            y = self.g.op("Transpose", [y], "transpose", perm=_inverse(out_spec))
        return [y]

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
            y = self.g.op("Transpose", [y], "transpose", perm=_inverse(perm))
        return [y]

    def p_reduce_window_max(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._pool(eqn, ins, "max")

    def p_reduce_window_sum(self, eqn: Any, ins: list[Value]) -> list[Value]:
        return self._pool(eqn, ins, "sum")


# -- graph clean-up -------------------------------------------------------------------
ELEMENTWISE_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "Neg", "Exp", "Log", "Abs", "Sqrt",
                               "Reciprocal", "Erf", "Cast", "Identity", "Floor", "Ceil",
                               "Sign", "Not", "Sin", "Cos", "LeakyRelu", "Elu", "Softplus"})
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})


def _attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return []


def _sink_transposes(g: _Graph, outputs: set[str]) -> None:
    """Move Transposes below element-wise ops (re-laying out constants) and cancel pairs."""
    changed = True
    while changed:
        changed = False
        consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in g.nodes:
            for i in node.input:
                consumers[i].append(node)
        for t in g.nodes:
            if t.op_type != "Transpose":
                continue
            x, out = t.input[0], t.output[0]
            users = consumers.get(out, [])
            if out in outputs or len(users) != 1:
                continue
            perm = _attr_ints(t, "perm")
            c = users[0]
            if c.op_type == "Transpose":
                q = _attr_ints(c, "perm")
                comp = [perm[i] for i in q]
                g.nodes.remove(t)
                del c.attribute[:]
                c.input[:] = [x]
                if comp == sorted(comp):
                    c.op_type = "Identity"
                else:
                    c.attribute.append(helper.make_attribute("perm", comp))
                changed = True
                break
            if c.output[0] in outputs or len(c.output) != 1:
                continue
            if c.op_type in ELEMENTWISE_BINARY:
                others = [i for i in c.input if i != out]
                if len(others) != 1 or others[0] not in g.inits or list(c.input).count(out) != 1:
                    continue
                val = g.inits[others[0]]
                if val.ndim > len(perm):
                    continue
                full = val.reshape((1,) * (len(perm) - val.ndim) + val.shape)
                new_val = np.ascontiguousarray(full.transpose(_inverse(perm)))
                if len(consumers[others[0]]) == 1:  # re-lay it out under its own name
                    g.inits[others[0]] = new_val
                    g.small = {k: v for k, v in g.small.items() if v != others[0]}
                    relaid = others[0]
                else:
                    relaid = g.const(new_val, others[0])
                c.input[:] = [x if i == out else relaid for i in c.input]
            elif c.op_type in ELEMENTWISE_UNARY:
                c.input[0] = x
            else:
                continue
            # c now computes in x's layout under its own name; a transpose follows it.
            moved = g.fresh(f"{c.output[0]}/transposed")
            for u in consumers.get(c.output[0], []):
                u.input[:] = [moved if i == c.output[0] else i for i in u.input]
            t.input[0], t.output[0] = c.output[0], moved
            g.nodes.remove(t)
            g.nodes.insert(g.nodes.index(c) + 1, t)
            changed = True
            break
    _drop_identities(g, outputs)


def _drop_identities(g: _Graph, outputs: set[str]) -> None:
    for node in list(g.nodes):
        if node.op_type == "Identity" and node.output[0] not in outputs:
            src, dst = node.input[0], node.output[0]
            g.nodes.remove(node)
            for other in g.nodes:
                other.input[:] = [src if i == dst else i for i in other.input]


def _prune(g: _Graph, outputs: set[str]) -> None:
    """Drop nodes nothing needs and initializers nothing reads."""
    needed = set(outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    g.nodes = kept[::-1]
    g.inits = {k: v for k, v in g.inits.items() if k in needed}


def _rename(g: _Graph, old: str, new: str) -> None:
    for node in g.nodes:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
        if node.name == old:
            node.name = new


def _value_info(name: str, aval: Any, batch: Any) -> onnx.ValueInfoProto:
    dims: list[int | str | None] = []
    for d in aval.shape:
        if _is_static(d):
            dims.append(int(d))
        else:
            dims.append("batch" if _same(d, batch) else str(d).replace(" ", ""))
    return helper.make_tensor_value_info(
        name, helper.np_dtype_to_tensor_dtype(np.dtype(aval.dtype)), dims)


# -- the exporter ---------------------------------------------------------------------
def _path_name(path: Any) -> str:
    import jax  # noqa: PLC0415

    text = jax.tree_util.keystr(path, simple=True, separator="/").strip("/")
    if text.endswith("/value"):  # flax.nnx Variables hold their array as .value
        text = text[: -len("/value")]
    return text or "param"


def _callable_of(model: Any) -> tuple[Callable[..., Any], Any, str]:
    """``(fn, params, kind)`` with ``fn(params, *inputs)`` computing the model."""
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        apply_fn, params = model
        return (lambda p, *xs: apply_fn(p, *xs)), params, "apply_fn(params, x)"
    if any((c.__module__ or "").split(".")[0] == "flax" for c in type(model).__mro__):
        nnx = require("flax.nnx", "jax")
        if isinstance(model, nnx.Module):
            graphdef, state = nnx.split(model)
            return (lambda st, *xs: nnx.merge(graphdef, st)(*xs)), state, "flax.nnx Module"
    if callable(model):
        return (lambda _p, *xs: model(*xs)), None, "function"
    raise ValueError("export_jax takes a pair (apply_fn, params), a flax.nnx Module or a "
                     f"function of the inputs; got a {type(model).__name__}")


def _output_names(tree: Any, given: Sequence[str] | None, count: int) -> list[str]:
    import jax  # noqa: PLC0415

    if given is not None:
        names = [str(n) for n in given]
        if len(names) != count:
            raise ValueError(f"{len(names)} output_names for {count} model outputs")
    elif count == 1 and not isinstance(tree, (dict, list, tuple)):
        names = ["output"]
    elif isinstance(tree, dict):
        names = [_path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    else:
        names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    if len(set(names)) != len(names):
        raise ValueError(f"output names must be unique; got {names}")
    return names


def export_jax(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> ExportReport:
    """Export a JAX function, ``(apply_fn, params)`` pair or ``flax.nnx`` Module called on
    ``sample_inputs``; batch axis dynamic; parity checked against the JAX outputs.

    Every input must have the batch axis first; the function is traced with a symbolic
    batch size, so it must not depend on the batch size's value.
    """
    jax = require("jax", "jax")
    jnp = require("jax.numpy", "jax")
    target = int(opset or MAX_OPSET)
    if not MIN_OPSET <= target <= MAX_OPSET:
        raise ValueError(f"opset must be between {MIN_OPSET} and {MAX_OPSET}; got {target}")
    arrays = as_input_list(sample_inputs)
    names = list(input_names or input_names_of(
        sample_inputs, ["input"] if len(arrays) == 1 else
        [f"input{i}" for i in range(len(arrays))]))
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} input_names for {len(arrays)} sample inputs")
    if len(set(names)) != len(names):
        raise ValueError(f"input names must be unique; got {names}")
    fn, params, kind = _callable_of(model)

    out_tree = fn(params, *[jnp.asarray(a) for a in arrays])
    leaves = jax.tree_util.tree_leaves(out_tree)
    if not leaves:
        raise ValueError("the function returns no arrays")
    onames = _output_names(out_tree, output_names, len(leaves))
    expected = {n: np.asarray(v) for n, v in zip(onames, leaves, strict=True)}

    (b,) = jax.export.symbolic_shape("b")
    specs = [jax.ShapeDtypeStruct((b, *a.shape[1:]), a.dtype) for a in arrays]
    try:
        closed = jax.make_jaxpr(fn)(params, *specs)
    except Exception as exc:
        raise ValueError(
            f"cannot trace the {kind} with a symbolic batch size ({type(exc).__name__}: "
            f"{exc}); the function must work for any batch size") from exc

    param_leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    jaxpr = closed.jaxpr
    n_params = len(jaxpr.invars) - len(arrays)
    if n_params != len(param_leaves):
        raise ValueError(f"the traced function takes {n_params} parameter arrays, the "
                         f"params pytree holds {len(param_leaves)}")
    g = _Graph()
    g.used.update([*names, *onames])  # no intermediate tensor takes an input/output name
    args: list[Value] = []
    for (p, leaf), var in zip(param_leaves, jaxpr.invars[:n_params], strict=True):
        try:
            value = np.asarray(leaf, dtype=var.aval.dtype)
        except Exception:  # noqa: BLE001 - PRNG keys and other opaque values: fine unused
            value = np.zeros((), dtype=np.float32)
        args.append(_Const(value, _path_name(p)))
    for n, a, var in zip(names, arrays, jaxpr.invars[n_params:], strict=True):
        # JAX computes in its own dtypes (int64 -> int32 unless x64 is enabled): the ONNX
        # input keeps the sample's dtype and is cast inside.
        want = np.dtype(var.aval.dtype)
        args.append(n if a.dtype == want else
                    g.op("Cast", [n], f"{n}/cast", to=helper.np_dtype_to_tensor_dtype(want)))
    consts = [_const_of(c) for c in closed.consts]
    conv = _Converter(g, b, names[0] if arrays[0].ndim >= 1 else None)
    outs = conv.run(jaxpr, consts, args)

    # Name the outputs: rename the tensor that computes each (or add an Identity).
    produced = {o for node in g.nodes for o in node.output}
    for oname, val in zip(onames, outs, strict=True):
        tensor = conv.name(val)
        if tensor in produced and tensor not in names and tensor not in onames:
            _rename(g, tensor, oname)
            produced.discard(tensor)
            produced.add(oname)
        else:
            g.nodes.append(helper.make_node("Identity", [tensor], [oname], name=oname))
    _sink_transposes(g, set(onames))
    _prune(g, set(onames))

    in_vis = [_value_info(n, v.aval.update(dtype=a.dtype), b)
              for n, a, v in zip(names, arrays, jaxpr.invars[n_params:], strict=True)]
    out_vis = [_value_info(n, v.aval, b) for n, v in zip(onames, jaxpr.outvars, strict=True)]
    graph = helper.make_graph(
        g.nodes, "jax", in_vis, out_vis,
        initializer=[onnx.numpy_helper.from_array(np.asarray(v), k)
                     for k, v in g.inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", target)],
                              producer_name="layerscope", producer_version="jaxpr")
    notes = [f"traced a {kind} with jax.make_jaxpr and a symbolic batch size; "
             "jaxpr primitives written as ONNX operators"]
    feeds = dict(zip(names, arrays, strict=True))
    return finish(proto, path, "jax", feeds, expected, tolerance, notes)


__all__ = ["SUPPORTED", "UnsupportedJax", "export_jax"]
