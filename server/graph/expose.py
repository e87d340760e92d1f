"""Exposing intermediate tensors as graph outputs, in a copy the runtime accepts."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from ...lazy import lazy_module
from .inspect import infer

if TYPE_CHECKING:
    import onnx
    from onnx import helper
else:
    onnx = lazy_module("onnx")
    helper = lazy_module("onnx.helper")


@functools.cache
def max_ir_version() -> int:
    """Return the highest ONNX IR version the installed onnxruntime loads (probed once)."""
    import onnxruntime as ort  # noqa: PLC0415 - the graph package stays importable without it

    node = helper.make_node("Identity", ["x"], ["y"])
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([node], "probe", [x], [y])
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    for ir in range(onnx.IR_VERSION, 3, -1):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        model.ir_version = ir
        try:
            ort.InferenceSession(model.SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - "unsupported IR version" comes as a generic error
            continue
        return ir
    return 7


def mean_output(name: str) -> str:
    """The name of the in-graph mean of tensor ``name`` that :func:`expose` adds."""
    return f"{name}::layerscope_mean"


def _default_opset(model: onnx.ModelProto) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=1)


def _add_mean(
    model: onnx.ModelProto, name: str, axes: Sequence[int], rank: int | None
) -> str:
    out_name = mean_output(name)
    g = model.graph
    if rank is not None and list(axes) == list(range(2, rank)):
        # Channels first, every spatial axis: GlobalAveragePool runs on onnxruntime's
        # blocked convolution layout directly, with no reorder back to NCHW first.
        g.node.append(helper.make_node("GlobalAveragePool", [name], [out_name],
                                       name=f"{name}::layerscope_mean_node"))
        return out_name
    if _default_opset(model) >= 18:  # axes became an input in opset 18
        axes_name = f"{name}::layerscope_mean_axes"
        g.initializer.append(helper.make_tensor(axes_name, onnx.TensorProto.INT64,
                                                [len(axes)], list(axes)))
        node = helper.make_node("ReduceMean", [name, axes_name], [out_name], keepdims=0,
                                name=f"{name}::layerscope_mean_node")
    else:
        node = helper.make_node("ReduceMean", [name], [out_name], axes=list(axes), keepdims=0,
                                name=f"{name}::layerscope_mean_node")
    g.node.append(node)
    return out_name


def expose(
    model: onnx.ModelProto,
    tensors: Sequence[str],
    means: Mapping[str, Sequence[int]] | None = None,
) -> onnx.ModelProto:
    """Return a copy of ``model`` whose outputs are its own outputs plus ``tensors``.

    A tensor named in ``means`` is exposed as its mean over those axes instead (computed in
    the graph by a GlobalAveragePool or ReduceMean node appended after it, output
    :func:`mean_output`; GlobalAveragePool keeps (N, C, 1, ...) axes of size 1): the
    runtime then returns (and copies) one value per channel rather than the whole
    activation, and keeps its optimised memory layout for everything else.

    Types and shapes come from shape inference (symbolic dims stay symbolic); the IR
    version is lowered to what onnxruntime accepts. The given model is not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inferred = infer(model).graph
    known = {vi.name: vi for vi in [*inferred.value_info, *inferred.output, *inferred.input]}
    existing = {o.name for o in out.graph.output}
    means = means or {}
    for name in tensors:
        if name in means:
            vi = known.get(name)
            elem = vi.type.tensor_type.elem_type if vi is not None else 0
            dims = vi.type.tensor_type.shape.dim if vi is not None else None
            mean_name = _add_mean(out, name, means[name], len(dims) if dims else None)
            new = out.graph.output.add()
            new.CopyFrom(helper.make_tensor_value_info(mean_name, elem or onnx.TensorProto.FLOAT,
                                                       None))
            continue
        if name in existing:
            continue
        vi = known.get(name)
        if vi is None or not vi.type.tensor_type.elem_type:
            vi = helper.make_empty_tensor_value_info(name)
        new = out.graph.output.add()
        new.CopyFrom(vi)
        existing.add(name)
    out.ir_version = min(out.ir_version, max_ir_version())
    return out
