"""Exposing intermediate tensors as graph outputs, in a copy the runtime accepts."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import onnx
from onnx import helper

from .inspect import infer


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


def expose(model: onnx.ModelProto, tensors: Sequence[str]) -> onnx.ModelProto:
    """Return a copy of ``model`` whose outputs are its own outputs plus ``tensors``.

    Types and shapes come from shape inference (symbolic dims stay symbolic); the IR
    version is lowered to what onnxruntime accepts. The given model is not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    inferred = infer(model).graph
    known = {vi.name: vi for vi in [*inferred.value_info, *inferred.output, *inferred.input]}
    existing = {o.name for o in out.graph.output}
    for name in tensors:
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
