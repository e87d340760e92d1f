"""The ONNX graph being written: nodes and initializers under unique names, constants known
at export time, and the dimension helpers the translation rules share."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import helper


class UnsupportedJax(ValueError):
    """The function uses a JAX primitive (or a form of one) with no ONNX translation here."""


@dataclass
class Const:
    """A value known at export time; it becomes an initializer when an ONNX node reads it."""

    value: np.ndarray
    hint: str = "const"
    name: str | None = None


Value = str | Const  # a tensor of the ONNX graph, or a constant


class Graph:
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


def const_of(value: Any) -> Const:
    """A constant the function closes over, as an array."""
    try:
        return Const(np.asarray(value), "const")
    except Exception as exc:  # noqa: BLE001 - PRNG keys and other opaque values
        raise UnsupportedJax(f"the function closes over a {type(value).__name__} that is "
                             f"not an array ({exc})") from None


def is_static(d: Any) -> bool:
    return isinstance(d, (int, np.integer))


def all_static(shape: Sequence[Any]) -> bool:
    return all(is_static(d) for d in shape)


def same(a: Any, b: Any) -> bool:
    """Whether two dimensions (ints or symbolic) are known to be equal."""
    try:
        return bool(a == b)
    except Exception:  # noqa: BLE001 - an undecidable symbolic comparison
        return False


def inverse(perm: Sequence[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv
