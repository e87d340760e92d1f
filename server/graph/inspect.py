"""Inspecting an ONNX model: inputs, outputs and every candidate layer.

A *candidate layer* is a tensor of the main graph that carries data for each sample: it is
computed from the model's inputs (not only from constants or shapes), has a float type, and
its first axis is the batch axis. Everything else is excluded, each with a reason:

- initializers and ``Constant`` outputs: weights, not activations;
- shape computations (anything computed only from ``Shape``/``Size`` outputs and
  constants): a vector of sizes, the same for every sample;
- integer and boolean tensors: indices, masks and token ids, not activations;
- tensors inside the bodies of ``Loop``/``If``/``Scan``: they exist once per iteration or
  branch and cannot be outputs of the main graph.

``auto`` picks the tensors a person would call layers (see :data:`AUTO_RULE`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lazy import lazy_module

if TYPE_CHECKING:
    import onnx
    from onnx import helper, shape_inference
else:
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")
    shape_inference = lazy_module("onnx.shape_inference")

AUTO_RULE = """\
auto picks, in topological order:
- the output of each convolution (Conv, ConvTranspose), fully connected layer (Gemm, or
  MatMul with a constant weight) or recurrent layer (LSTM, GRU, RNN), followed forward
  through its bias, batch normalisation, activation (Relu, Gelu, Sigmoid, Tanh, SiLU, ...)
  and dropout, so that the layer's output after its activation is taken; projections that
  only feed a reshape into attention heads are skipped, and so are branches that only
  feed a residual merge or a concatenation (the merge is the layer);
- pooling outputs (MaxPool, AveragePool and their global forms);
- residual merges (Add of two computed tensors) and concatenations of computed tensors,
  again after a following activation;
- normalisation outputs of transformers (LayerNormalization, GroupNormalization,
  RMSNormalization and their fused forms)."""

BLOCK_OPS = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm",
                       "MatMul", "LSTM", "GRU", "RNN"})
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid",
                         "HardSigmoid", "Tanh", "Softplus", "Softsign", "Gelu", "FastGelu",
                         "BiasGelu", "HardSwish", "Mish", "Clip", "ThresholdedRelu"})
PASS_THROUGH = frozenset({"BatchNormalization", "Dropout", "Identity"})
AFFINE = frozenset({"Add", "Sub", "Mul", "Div"})
POOL_OPS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
                      "LpPool", "GlobalLpPool"})
NORM_OPS = frozenset({"LayerNormalization", "SkipLayerNormalization",
                      "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                      "GroupNormalization", "RMSNormalization"})
MERGE_OPS = frozenset({"Add", "Sum", "Concat"})
HEAD_SPLIT = frozenset({"Reshape", "Transpose", "Split"})
SHAPE_OPS = frozenset({"Shape", "Size"})
CONTROL_FLOW = frozenset({"Loop", "If", "Scan"})
# TensorProto.DataType of the floating-point element types: FLOAT, FLOAT16, DOUBLE and
# BFLOAT16. The numbers are onnx.proto's own (fixed by the IR), written out so that importing
# this module does not import onnx (test_imports checks them against onnx.TensorProto).
FLOAT_TYPES = frozenset({1, 10, 11, 16})

Dim = int | str | None


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: name, dtype (NumPy name) and shape (int, symbol or None)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": None if self.shape is None else list(self.shape)}


@dataclass(frozen=True)
class LayerInfo:
    """A candidate layer: the tensor, the node that produces it, and where it sits."""

    name: str
    node: str
    op_type: str
    dtype: str
    shape: tuple[Dim, ...] | None
    elements_per_sample: int | None
    position: int
    auto: bool
    channels_first: bool = True
    parameters: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "node": self.node, "op_type": self.op_type,
            "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape),
            "elements_per_sample": self.elements_per_sample, "position": self.position,
            "auto": self.auto,
            "layout": "channels_first" if self.channels_first else "channels_last",
            "parameters": self.parameters,
        }


@dataclass
class ModelInfo:
    """What :func:`describe` found: inputs, outputs, candidate layers, and the tensors that
    are not layers with the reason why."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layers: list[LayerInfo]
    excluded: dict[str, str] = field(default_factory=dict)
    opsets: dict[str, int] = field(default_factory=dict)
    ir_version: int = 0
    parameters: int = 0

    def layer(self, name: str) -> LayerInfo | None:
        for layer in self.layers:
            if layer.name == name:
                return layer
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "layers": [la.to_dict() for la in self.layers],
            "opsets": dict(self.opsets),
            "ir_version": self.ir_version,
            "parameters": self.parameters,
        }


def dtype_name(elem_type: int) -> str:
    """Return the NumPy name of an ONNX element type ("float32", "int64", ...)."""
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return onnx.TensorProto.DataType.Name(elem_type).lower()


def _shape(vi: onnx.ValueInfoProto) -> tuple[Dim, ...] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims: list[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def _tensor_info(vi: onnx.ValueInfoProto) -> TensorInfo:
    return TensorInfo(vi.name, dtype_name(vi.type.tensor_type.elem_type), _shape(vi))


def _per_sample(shape: tuple[Dim, ...] | None) -> int | None:
    if shape is None or len(shape) == 0:
        return None
    n = 1
    for d in shape[1:]:
        if not isinstance(d, int):
            return None
        n *= d
    return n


def infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return the model with inferred shapes (the model itself when inference fails)."""
    try:
        return shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:  # noqa: BLE001 - a model shape inference cannot handle is still usable
        return model


def _subgraph_tensors(graph: onnx.GraphProto) -> set[str]:
    names: set[str] = set()
    for node in graph.node:
        for attr in node.attribute:
            subs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subs:
                for n in sub.node:
                    names.update(o for o in n.output if o)
                names |= _subgraph_tensors(sub)
    return names


def describe(model: onnx.ModelProto) -> ModelInfo:
    """Return the inputs, outputs and candidate layers of ``model``."""
    inferred = infer(model)
    g = inferred.graph
    initializers = {t.name for t in g.initializer}
    value_info: dict[str, onnx.ValueInfoProto] = {}
    for vi in [*g.value_info, *g.input, *g.output]:
        value_info[vi.name] = vi
    inputs = [_tensor_info(vi) for vi in g.input if vi.name not in initializers]
    outputs = [_tensor_info(vi) for vi in g.output]
    batch = inputs[0].shape[0] if inputs and inputs[0].shape else None

    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    producer: dict[str, tuple[int, onnx.NodeProto]] = {}
    for pos, node in enumerate(g.node):
        for name in node.input:
            if name:
                consumers[name].append(node)
        for name in node.output:
            if name:
                producer[name] = (pos, node)

    data = {t.name for t in inputs}
    excluded: dict[str, str] = {}
    for name in initializers:
        excluded[name] = "an initializer (a constant weight), not an activation"
    for name in _subgraph_tensors(g):
        excluded[name] = ("inside the body of a control-flow node (Loop/If/Scan): it exists "
                          "per iteration or branch, not as a tensor of the main graph")
    layers: list[LayerInfo] = []
    candidates: dict[str, LayerInfo] = {}
    for pos, node in enumerate(g.node):
        carries = node.op_type not in SHAPE_OPS and any(i in data for i in node.input if i)
        for name in node.output:
            if not name:
                continue
            if node.op_type == "Constant":
                excluded[name] = "the output of a Constant node, not an activation"
                continue
            if not carries:
                excluded[name] = ("a shape computation (computed from shapes and constants "
                                  "only, the same for every sample)")
                continue
            data.add(name)
            vi = value_info.get(name)
            elem = vi.type.tensor_type.elem_type if vi is not None else 0
            if vi is not None and elem and elem not in FLOAT_TYPES:
                excluded[name] = (f"of type {dtype_name(elem)}: indices, masks or token ids, "
                                  "not a float activation")
                continue
            shape = _shape(vi) if vi is not None else None
            if shape is not None and (len(shape) == 0 or not _same_dim(shape[0], batch)):
                excluded[name] = (f"shape {list(shape)} has no batch axis first (the inputs' "
                                  f"batch axis is {batch!r})")
                continue
            info = LayerInfo(
                name=name, node=node.name or f"{node.op_type}_{pos}", op_type=node.op_type,
                dtype=dtype_name(elem) if elem else "unknown", shape=shape,
                elements_per_sample=_per_sample(shape), position=pos, auto=False,
                channels_first=_channels_first(name, shape, producer, data),
            )
            candidates[name] = info
            layers.append(info)

    auto = _auto_names(g, candidates, consumers, producer, data, initializers)
    weights = _weights(g)
    owned = _parameters_per_layer(g, weights, candidates, consumers)
    layers = [
        LayerInfo(**{**la.__dict__, "auto": la.name in auto,
                     "parameters": owned.get(la.name, 0)}) for la in layers
    ]
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    return ModelInfo(inputs, outputs, layers, excluded, opsets, int(model.ir_version),
                     sum(weights.values()))


def _weights(g: onnx.GraphProto) -> dict[str, int]:
    """Elements of each float weight of the main graph: initializers and Constant tensors
    (shape and index constants are integers, not weights)."""
    out = {t.name: math.prod(t.dims) for t in g.initializer if t.data_type in FLOAT_TYPES}
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value" and a.t.data_type in FLOAT_TYPES:
                    out[node.output[0]] = math.prod(a.t.dims)
    return out


def _parameters_per_layer(g: onnx.GraphProto, weights: dict[str, int],
                          candidates: dict[str, LayerInfo],
                          consumers: dict[str, list[onnx.NodeProto]]) -> dict[str, int]:
    """The weights each candidate layer owns: a node's weights go to the first candidate
    layer (in topological order) that its outputs reach, searching forward no further than
    the first candidates on each path."""
    owned: dict[str, int] = defaultdict(int)
    for node in g.node:
        n = sum(weights.get(i, 0) for i in set(node.input) if i)
        if not n or node.op_type == "Constant":
            continue
        reached: list[LayerInfo] = []
        seen: set[str] = set()
        todo = [o for o in node.output if o]
        while todo:
            t = todo.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in candidates:
                reached.append(candidates[t])
                continue
            for c in consumers.get(t, []):
                todo.extend(o for o in c.output if o)
        if reached:
            owned[min(reached, key=lambda la: la.position).name] += n
    return owned


CONV_FAMILY = frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv",
                         "BatchNormalization", "InstanceNormalization"}) | POOL_OPS
SEQUENCE_FAMILY = frozenset({"MatMul", "Gemm", "Gather", "LayerNormalization",
                             "SkipLayerNormalization", "SimplifiedLayerNormalization",
                             "RMSNormalization", "Attention", "MultiHeadAttention"})


def _channels_first(
    name: str,
    shape: tuple[Dim, ...] | None,
    producer: dict[str, tuple[int, onnx.NodeProto]],
    data: set[str],
) -> bool:
    """Whether axis 1 holds channels (convolutions) rather than positions (sequences).

    Walks back through elementwise and merge ops to the nearest convolution-like or
    sequence-like op; without one, rank >= 4 means channels first (ONNX's NCHW).
    """
    seen = 0
    while name in producer and seen < 64:
        node = producer[name][1]
        if node.op_type in CONV_FAMILY:
            return True
        if node.op_type in SEQUENCE_FAMILY:
            return False
        ins = [i for i in node.input if i in data]
        if not ins:
            break
        name, seen = ins[0], seen + 1
    return shape is None or len(shape) != 3


def _same_dim(a: Dim, b: Dim) -> bool:
    return a is None or b is None or a == b or (isinstance(a, str) and isinstance(b, str))


def _is_const(name: str, initializers: set[str], data: set[str]) -> bool:
    return name in initializers or name not in data


def _is_merge(node: onnx.NodeProto, initializers: set[str], data: set[str]) -> bool:
    inputs = [i for i in node.input if i and not _is_const(i, initializers, data)]
    return node.op_type in MERGE_OPS and len(inputs) >= 2


def _auto_names(
    g: onnx.GraphProto,
    candidates: dict[str, LayerInfo],
    consumers: dict[str, list[onnx.NodeProto]],
    producer: dict[str, tuple[int, onnx.NodeProto]],
    data: set[str],
    initializers: set[str],
) -> set[str]:
    def follow(name: str) -> str:
        """Walk forward through bias, normalisation, activation and dropout."""
        while True:
            users = consumers.get(name, [])
            if len(users) == 2 and {u.op_type for u in users} == {"Sigmoid", "Mul"}:
                mul = next(u for u in users if u.op_type == "Mul")  # SiLU: x * sigmoid(x)
                name = mul.output[0]
                continue
            if len(users) != 1:
                return name
            u = users[0]
            if u.op_type in ACTIVATIONS or u.op_type in PASS_THROUGH:
                name = u.output[0]
                continue
            if u.op_type in AFFINE:
                others = [i for i in u.input if i and i != name]
                if others and all(_is_const(o, initializers, data) for o in others):
                    name = u.output[0]
                    continue
            return name

    picked: set[str] = set()
    for node in g.node:
        op = node.op_type
        if not node.output or node.output[0] not in candidates and op not in BLOCK_OPS:
            continue
        out = node.output[0]
        data_inputs = [i for i in node.input if i and not _is_const(i, initializers, data)]
        if op in BLOCK_OPS:
            if op == "MatMul" and len(data_inputs) != 1:
                continue  # a product of two activations (attention scores), not a layer
            end = follow(out)
            # Shape/Size read no values: a reshape that asks for the batch size still
            # only splits heads.
            users = [u for u in consumers.get(end, []) if u.op_type not in SHAPE_OPS]
            if op in ("MatMul", "Gemm") and users and all(u.op_type in HEAD_SPLIT for u in users):
                continue  # query/key/value projection feeding the attention heads
            if users and all(_is_merge(u, initializers, data) for u in users):
                continue  # the branch of a residual or concatenation: the merge is the layer
            picked.add(end)
        elif op in POOL_OPS or op in NORM_OPS:
            picked.add(out)
        elif op in MERGE_OPS and len(data_inputs) >= 2:
            picked.add(follow(out))
    return {n for n in picked if n in candidates}


def largest_activation_bytes(model: onnx.ModelProto, info: ModelInfo,
                             sample_shapes: dict[str, tuple[int, ...]] | None = None) -> int:
    """Bytes per sample of the largest float tensor the model computes from its inputs.

    The candidate layers are every float tensor with a batch axis, so their inferred shapes
    say it; where a shape depends on the inputs' sizes (a symbolic height, say) and
    ``sample_shapes`` gives the actual per-sample input shapes, the shapes are inferred again
    with those sizes fixed (batch 1). A size no inference resolves counts as 0.
    """
    def size(shape: tuple[Dim, ...] | None, dtype: str) -> int | None:
        n = _per_sample(shape)
        if n is None:
            return None
        try:
            return n * np.dtype(dtype).itemsize
        except TypeError:
            return n * 4

    sizes = [size(la.shape, la.dtype) for la in info.layers]
    if None in sizes and sample_shapes:
        fixed = onnx.ModelProto()
        fixed.CopyFrom(model)
        for vi in fixed.graph.input:
            if vi.name in sample_shapes:
                dims = vi.type.tensor_type.shape.dim
                for d, v in zip(dims, (1, *sample_shapes[vi.name]), strict=False):
                    d.ClearField("dim_param")
                    d.dim_value = int(v)
        del fixed.graph.value_info[:]
        g = infer(fixed).graph
        known = {vi.name: _shape(vi) for vi in [*g.value_info, *g.output]}
        sizes = [s if s is not None else size(known.get(la.name), la.dtype)
                 for s, la in zip(sizes, info.layers, strict=True)]
    return max((s for s in sizes if s is not None), default=0)
