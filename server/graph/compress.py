"""Cutting a model at a tensor and closing it with a linear head (docs/compress.md).

:func:`backward_slice` keeps every node a tensor needs and nothing else;
:func:`cut_model` appends the analysis' reduction, an optional Gather of a feature subset
and a linear head ``scores = features @ W + b``, then maps the scores onto the original
outputs' names and meaning (:class:`OutputSpec`). :func:`parameters` and :func:`macs`
estimate what a graph keeps and costs from its initializers and inferred shapes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...lazy import lazy_module
from .expose import _default_opset, max_ir_version
from .inspect import FLOAT_TYPES, infer
from .load import ModelError

if TYPE_CHECKING:
    import onnx
    from onnx import helper, numpy_helper
else:
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")
    numpy_helper = lazy_module("onnx.numpy_helper")

PREFIX = "layerscope_compress"


class CompressionError(ModelError):
    """A model that cannot be cut where asked, naming the tensor and the reason."""


@dataclass(frozen=True)
class OutputSpec:
    """How the head's scores become one original output.

    ``kind``: ``scores`` (the scores as they are), ``probabilities`` (softmax of them),
    ``labels`` (``classes[argmax]``, of ``dtype``) or ``values`` (regression).
    ``shape_rank``: the original output's rank (2 for (N, C); 1 for (N,)).
    """

    name: str
    kind: str
    elem_type: int = 1  # onnx.TensorProto.FLOAT (onnx.proto's number: no import of onnx)
    shape_rank: int = 2
    classes: tuple[int, ...] = ()


def backward_slice(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    """Return the nodes ``tensor`` depends on, in the graph's (topological) order."""
    return [model.graph.node[i] for i in slice_positions(model, tensor)]


def slice_positions(model: onnx.ModelProto, tensor: str) -> list[int]:
    """Return the positions of the nodes ``tensor`` depends on, ascending."""
    producer = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    if tensor not in producer:
        raise CompressionError(f"tensor {tensor!r} is not produced by a node of the graph")
    needed: set[int] = set()
    stack = [tensor]
    while stack:
        name = stack.pop()
        i = producer.get(name)
        if i is None or i in needed:
            continue
        needed.add(i)
        node = model.graph.node[i]
        stack.extend(x for x in node.input if x)
        for attr in node.attribute:  # a subgraph's outer-scope names are inputs too
            for g in [attr.g, *attr.graphs] if attr.type in (5, 10) else []:
                stack.extend(_outer_names(g))
    return sorted(needed)


def _outer_names(graph: onnx.GraphProto) -> Iterable[str]:
    local = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    local |= {o for n in graph.node for o in n.output}
    for n in graph.node:
        yield from (x for x in n.input if x and x not in local)


def kept_name(tensor: str, outputs: Iterable[str]) -> str:
    """The cut tensor's name in the compressed model: its own, unless an output of the
    compressed model takes that name (a cut at an original output), then a suffixed one."""
    return f"{tensor}::{PREFIX}_cut" if tensor in set(outputs) else tensor


def tensor_rank(model: onnx.ModelProto, tensor: str) -> int | None:
    """Return the rank of ``tensor`` from shape inference (None when unknown)."""
    g = infer(model).graph
    for vi in [*g.value_info, *g.output, *g.input]:
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    return None


def _used_initializers(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto]
                       ) -> list[onnx.TensorProto]:
    used = {x for n in nodes for x in n.input if x}
    for n in nodes:
        for attr in n.attribute:
            for g in [attr.g, *attr.graphs] if attr.type in (5, 10) else []:
                used |= set(_outer_names(g))
    return [t for t in model.graph.initializer if t.name in used]


def cut_model(
    model: onnx.ModelProto,
    tensor: str,
    reduction: str,
    weights: np.ndarray,
    bias: np.ndarray,
    outputs: Sequence[OutputSpec],
    *,
    channels_first: bool = True,
    select: Sequence[int] | None = None,
) -> onnx.ModelProto:
    """Return ``model`` cut after ``tensor`` and closed by a linear head.

    ``reduction`` is ``flatten`` or ``mean`` (over the spatial axes of a channels-first
    tensor, GlobalAveragePool; over the sequence axis of a channels-last one); ``select``
    keeps those reduced features (a Gather on axis 1) before ``weights`` (d, k) and
    ``bias`` (k,). The inputs keep their names; the outputs are ``outputs``. The given
    model is not modified.
    """
    rank = tensor_rank(model, tensor)
    if rank is None:
        raise CompressionError(f"tensor {tensor!r}: its rank is unknown after shape inference; "
                               "a cut needs a tensor of known rank with the batch axis first")
    if rank < 2:
        raise CompressionError(f"tensor {tensor!r} has rank {rank}: a cut needs the batch axis "
                               "first and at least one feature axis")
    if reduction not in ("flatten", "mean"):
        raise CompressionError(f"reduction {reduction!r} cannot be put in the graph; use "
                               "flatten or mean")
    kept = backward_slice(model, tensor)
    renamed = kept_name(tensor, [o.name for o in outputs])
    if renamed != tensor:  # the head's output takes the name: the kept tensor gets another
        kept = [_renamed(n, tensor, renamed) for n in kept]
    opset = _default_opset(model)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def name(part: str) -> str:
        return f"{PREFIX}/{part}"

    x = renamed
    if reduction == "mean" and rank >= 3:
        if channels_first:
            nodes.append(helper.make_node("GlobalAveragePool", [x], [name("pooled")],
                                          name=name("pool")))
        else:
            axes = list(range(1, rank - 1))
            if opset >= 18:
                inits.append(numpy_helper.from_array(np.asarray(axes, np.int64), name("axes")))
                nodes.append(helper.make_node("ReduceMean", [x, name("axes")], [name("pooled")],
                                              keepdims=1, name=name("pool")))
            else:
                nodes.append(helper.make_node("ReduceMean", [x], [name("pooled")], axes=axes,
                                              keepdims=1, name=name("pool")))
        x = name("pooled")
    nodes.append(helper.make_node("Flatten", [x], [name("features")], axis=1,
                                  name=name("flatten")))
    x = name("features")
    if select is not None:
        inits.append(numpy_helper.from_array(np.asarray(select, np.int64), name("selected")))
        nodes.append(helper.make_node("Gather", [x, name("selected")], [name("subset")], axis=1,
                                      name=name("gather")))
        x = name("subset")
    w = np.ascontiguousarray(weights, dtype=np.float32)
    b = np.ascontiguousarray(bias, dtype=np.float32).reshape(-1)
    inits += [numpy_helper.from_array(w, name("W")), numpy_helper.from_array(b, name("b"))]
    nodes.append(helper.make_node("Gemm", [x, name("W"), name("b")], [name("scores")],
                                  name=name("head")))
    graph_outputs = []
    original = {vi.name: vi for vi in model.graph.output}
    for spec in outputs:
        nodes += _output_nodes(spec, name("scores"), inits, opset)
        if spec.name not in original:
            raise CompressionError(f"{spec.name!r} is not an output of the model")
        graph_outputs.append(original[spec.name])  # same name, type and shape

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    del g.node[:]
    g.node.extend([*kept, *nodes])
    del g.initializer[:]
    g.initializer.extend([*_used_initializers(model, kept), *inits])
    kept_names = {o for n in kept for o in n.output}
    vis = [vi for vi in model.graph.value_info if vi.name in kept_names]
    del g.value_info[:]
    g.value_info.extend(vis)
    del g.output[:]
    g.output.extend(graph_outputs)
    out.ir_version = min(out.ir_version, max_ir_version())
    onnx.checker.check_model(out)
    return out


def _renamed(node: onnx.NodeProto, old: str, new: str) -> onnx.NodeProto:
    out = onnx.NodeProto()
    out.CopyFrom(node)
    for i, x in enumerate(out.input):
        if x == old:
            out.input[i] = new
    for i, x in enumerate(out.output):
        if x == old:
            out.output[i] = new
    return out


def _output_nodes(spec: OutputSpec, scores: str, inits: list[onnx.TensorProto],
                  opset: int) -> list[onnx.NodeProto]:
    out = spec.name
    tag = f"{PREFIX}/{out}"
    if spec.kind == "labels":
        inits.append(numpy_helper.from_array(
            np.asarray(spec.classes, dtype=helper.tensor_dtype_to_np_dtype(spec.elem_type)),
            f"{tag}/classes"))
        keep = 1 if spec.shape_rank == 2 else 0
        return [helper.make_node("ArgMax", [scores], [f"{tag}/argmax"], axis=1, keepdims=keep,
                                 name=f"{tag}/argmax"),
                helper.make_node("Gather", [f"{tag}/classes", f"{tag}/argmax"], [out], axis=0,
                                 name=f"{tag}/gather")]
    if spec.kind == "probabilities":
        return [helper.make_node("Softmax", [scores], [out], axis=1, name=f"{tag}/softmax")]
    if spec.kind in ("scores", "values"):
        if spec.shape_rank == 1:
            inits.append(numpy_helper.from_array(np.asarray([-1], np.int64), f"{tag}/shape"))
            return [helper.make_node("Reshape", [scores, f"{tag}/shape"], [out],
                                     name=f"{tag}/reshape")]
        return [helper.make_node("Identity", [scores], [out], name=f"{tag}/identity")]
    raise CompressionError(f"output {out!r}: unknown kind {spec.kind!r}")


def parameters(model: onnx.ModelProto, nodes: Sequence[onnx.NodeProto] | None = None) -> int:
    """Return the number of float values (weights) in the initializers and Constant nodes
    that ``nodes`` (default: the whole graph) use; integer constants (shapes, pads, axes)
    are not parameters."""
    nodes = list(model.graph.node) if nodes is None else nodes
    tensors = list(_used_initializers(model, nodes))
    tensors += [a.t for n in nodes if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in tensors
               if t.data_type in FLOAT_TYPES)


COST_OPS = ("Conv", "Gemm", "MatMul")


def cost_tensors(model: onnx.ModelProto) -> list[str]:
    """Return the tensors whose shapes :func:`node_macs` reads: the data input and the
    output of each Conv, Gemm and MatMul node."""
    inits = {t.name for t in model.graph.initializer}
    names: list[str] = []
    for n in model.graph.node:
        if n.op_type in COST_OPS and n.output:
            names += [x for x in (n.input[0], n.output[0]) if x and x not in inits]
    return list(dict.fromkeys(names))


def node_macs(model: onnx.ModelProto,
              shapes: Mapping[str, Sequence[int | None]] | None = None) -> list[int]:
    """Return the multiply-accumulates per sample of each node of the graph, in order.

    Conv costs (output values) x (C_in / groups) x (kernel size), Gemm and MatMul (output
    values) x (the reduced dimension K); other ops count 0. Shapes come from ``shapes``
    (measured: :func:`cost_tensors` of one sample) where given, else from shape inference;
    a node whose shapes stay unknown counts 0.
    """
    g = infer(model).graph
    known: dict[str, list[int | None]] = {}
    for vi in [*g.value_info, *g.output, *g.input]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            known[vi.name] = [d.dim_value if d.HasField("dim_value") else None
                              for d in t.shape.dim]
    for t in model.graph.initializer:
        known[t.name] = list(t.dims)
    known.update({k: list(v) for k, v in (shapes or {}).items()})
    return [_node_macs(n, known) for n in model.graph.node]


def _node_macs(n: onnx.NodeProto, shapes: dict[str, list[int | None]]) -> int:
    if n.op_type not in COST_OPS or not n.output:
        return 0
    out = shapes.get(n.output[0])
    if not out or any(d is None for d in out[1:]):
        return 0
    per_sample = math.prod(int(d or 0) for d in out[1:])
    if n.op_type == "Conv":
        w = shapes.get(n.input[1])
        if w is None or any(d is None for d in w):
            return 0
        return per_sample * math.prod(int(d or 0) for d in w[1:])
    a = shapes.get(n.input[0])
    if not a:
        return 0
    trans_a = any(at.name == "transA" and at.i for at in n.attribute)
    k = a[0] if n.op_type == "Gemm" and trans_a else a[-1]
    return per_sample * int(k or 0)  # a Gemm's K is A's second axis unless transA
