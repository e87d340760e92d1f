"""The layer that feeds a model's fully connected head (METRICS.md section 4).

Rule: from the model's first float output, walk back through its final chain of fully
connected layers (Gemm, or MatMul with a constant weight) and what sits between them
(bias, activation, softmax, dropout, and shape-only ops such as the trailing Reshape of a
scikit-learn regressor); the head's input is the tensor that enters the first
of them, walked back through shape-only ops (Flatten, Reshape, Squeeze, Unsqueeze, Cast). That
is the pooled feature vector of a CNN (the pooling output: the vector the head sees; name
the pre-pooling tensor to use it instead). For a model made only of fully connected
layers the walk would reach the input itself: the input of the last layer (the
penultimate features) is taken instead, and the reason says so.

:func:`feature_layer` is the one place that applies "a named layer, or else the head rule";
:func:`classifier_output` the one that says which output holds the class scores.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...lazy import lazy_module
from .inspect import ACTIVATIONS, AFFINE, PASS_THROUGH, LayerInfo, ModelInfo
from .load import ModelError
from .select import LayerSelectionError

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

FC_OPS = frozenset({"Gemm", "MatMul"})
BETWEEN = ACTIVATIONS | PASS_THROUGH | {"Softmax", "LogSoftmax", "Cast"}
SHAPE_ONLY = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                        "Cast"})


class NoHead(ModelError):
    """The model has no fully connected head to take features from."""


def head_layer(model: onnx.ModelProto, info: ModelInfo) -> tuple[str, str]:
    """Return (tensor name, how it was found) of the input of the model's FC head."""
    g = model.graph
    consts = {t.name for t in g.initializer}
    consts |= {o for n in g.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in g.node for o in n.output if o}
    inputs = {t.name for t in info.inputs}
    outputs = [t.name for t in info.outputs if t.dtype.startswith("float")]
    if not outputs:
        raise NoHead("the model has no float output to follow back to a head; name the layer")

    def data_inputs(node: onnx.NodeProto) -> list[str]:
        return [i for i in node.input if i and i not in consts]

    t = outputs[0]
    fcs: list[onnx.NodeProto] = []
    while t in producer:
        node = producer[t]
        ins = data_inputs(node)
        if node.op_type in FC_OPS and len(ins) == 1:
            fcs.append(node)
        elif not (node.op_type in BETWEEN or node.op_type in SHAPE_ONLY
                  or (node.op_type in AFFINE and len(ins) == 1)):
            break
        if len(ins) != 1:
            break
        t = ins[0]
    if not fcs:
        raise NoHead(
            f"no fully connected head (Gemm, or MatMul with a constant weight) leads to the "
            f"output {outputs[0]!r}; name the layer to take features from"
        )
    def through_shape_ops(name: str) -> str:
        """Walk back through shape-only ops with a single data input."""
        while name in producer and producer[name].op_type in SHAPE_ONLY:
            ins = data_inputs(producer[name])
            if len(ins) != 1:
                break
            name = ins[0]
        return name

    t = through_shape_ops(data_inputs(fcs[-1])[0])
    if t in inputs:
        last = data_inputs(fcs[0])[0]
        if through_shape_ops(last) in inputs:
            raise NoHead("the model is a single fully connected layer on its input; name the "
                         "layer to take features from")
        return last, (f"all layers are fully connected: the input of the last one "
                      f"({fcs[0].op_type} {fcs[0].name!r}), the penultimate features")
    via = f"{fcs[-1].op_type} {fcs[-1].name!r}"
    return t, f"input of the fully connected head ({len(fcs)} layer(s), starting at {via})"


def feature_layer(model: onnx.ModelProto, info: ModelInfo, name: str | None = None
                  ) -> tuple[LayerInfo, str]:
    """Return (layer, how it was chosen): the layer ``name`` (checked), or else the input
    of the model's fully connected head (:class:`NoHead` when it has none)."""
    if name:
        found = info.layer(name)
        if found is None:
            reason = info.excluded.get(name, "no such tensor in the model")
            raise LayerSelectionError(f"layer {name!r}: {reason}")
        return found, "named by the user"
    head, rule = head_layer(model, info)
    found = info.layer(head)
    if found is None:
        reason = info.excluded.get(head, "unknown")
        raise LayerSelectionError(f"the head's input {head!r} is not a layer ({reason}); "
                                  "name one")
    return found, rule


def classifier_output(info: ModelInfo) -> LayerInfo | None:
    """Return the model's first output that holds class scores: a layer of shape
    (batch, classes) with at least two classes; None when there is none."""
    outputs = {t.name for t in info.outputs}
    for la in info.layers:
        if la.name in outputs and la.shape is not None and len(la.shape) == 2 \
                and isinstance(la.shape[1], int) and la.shape[1] >= 2:
            return la
    return None
