"""Clean-up of the written graph: transposes moved below element-wise operations and
cancelled in pairs, identities dropped, unused nodes and initializers pruned."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import onnx
from onnx import helper

from .graph import Graph, inverse

ELEMENTWISE_UNARY = frozenset({"Relu", "Sigmoid", "Tanh", "Neg", "Exp", "Log", "Abs", "Sqrt",
                               "Reciprocal", "Erf", "Cast", "Identity", "Floor", "Ceil",
                               "Sign", "Not", "Sin", "Cos", "LeakyRelu", "Elu", "Softplus"})
ELEMENTWISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"})


def _attr_ints(node: onnx.NodeProto, name: str) -> list[int]:
    for a in node.attribute:
        if a.name == name:
            return list(a.ints)
    return []


def sink_transposes(g: Graph, outputs: set[str]) -> None:
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
                new_val = np.ascontiguousarray(full.transpose(inverse(perm)))
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


def _drop_identities(g: Graph, outputs: set[str]) -> None:
    for node in list(g.nodes):
        if node.op_type == "Identity" and node.output[0] not in outputs:
            src, dst = node.input[0], node.output[0]
            g.nodes.remove(node)
            for other in g.nodes:
                other.input[:] = [src if i == dst else i for i in other.input]


def prune(g: Graph, outputs: set[str]) -> None:
    """Drop nodes nothing needs and initializers nothing reads."""
    needed = set(outputs)
    kept = []
    for node in reversed(g.nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    g.nodes = kept[::-1]
    g.inits = {k: v for k, v in g.inits.items() if k in needed}


def rename(g: Graph, old: str, new: str) -> None:
    for node in g.nodes:
        node.input[:] = [new if i == old else i for i in node.input]
        node.output[:] = [new if o == old else o for o in node.output]
        if node.name == old:
            node.name = new


