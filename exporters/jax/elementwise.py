"""Translation rules of the element-wise primitives: arithmetic, comparisons, logic, casts,
``select_n`` and ``clamp``; ``max(x, 0)`` becomes ``Relu``."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper

from .core import ConverterCore
from .graph import Const, UnsupportedJax, Value

UNARY = {"neg": "Neg", "exp": "Exp", "log": "Log", "tanh": "Tanh", "logistic": "Sigmoid",
         "sqrt": "Sqrt", "abs": "Abs", "sign": "Sign", "floor": "Floor", "ceil": "Ceil",
         "sin": "Sin", "cos": "Cos", "tan": "Tan", "asin": "Asin", "acos": "Acos",
         "atan": "Atan", "sinh": "Sinh", "cosh": "Cosh", "asinh": "Asinh", "acosh": "Acosh",
         "atanh": "Atanh", "erf": "Erf"}
BINARY = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min",
          "pow": "Pow", "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater",
          "ge": "GreaterOrEqual"}
LOGICAL = {"and": "And", "or": "Or", "xor": "Xor"}


class ElementwiseRules(ConverterCore):
    """``p_<primitive>`` methods of the element-wise primitives."""

    def binary(self, prim: str, ins: list[Value]) -> str:
        if prim == "max":
            for i, v in enumerate(ins):
                other = ins[1 - i]
                if (isinstance(v, Const) and v.value.size == 1 and float(v.value.ravel()[0]) == 0
                        and not isinstance(other, Const)
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

