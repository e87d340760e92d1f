"""PyTorch modules to ONNX with ``torch.onnx.export`` (the TorchScript-based exporter,
``dynamo=False``, which needs nothing beyond torch). Extra: ``layerscope[torch]``."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx

from .base import DEFAULT_TOLERANCE, MAX_OPSET, ExportReport, finish, require
from .inputs import as_input_list


def export_torch(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
    input_names: Sequence[str] | None = None,
    output_names: Sequence[str] | None = None,
) -> ExportReport:
    """Export ``model`` (a ``torch.nn.Module``) called on ``sample_inputs``; batch axis
    dynamic on every input and output; parity checked against the module's own outputs."""
    torch = require("torch", "torch")
    arrays = as_input_list(sample_inputs)
    names = list(input_names or (["input"] if len(arrays) == 1 else
                                 [f"input{i}" for i in range(len(arrays))]))
    if len(names) != len(arrays):
        raise ValueError(f"{len(names)} input_names for {len(arrays)} sample inputs")
    tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    model.eval()
    with torch.no_grad():
        out = model(*tensors)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    onames = list(output_names or (["output"] if len(outs) == 1 else
                                   [f"output{i}" for i in range(len(outs))]))
    if len(onames) != len(outs):
        raise ValueError(f"{len(onames)} output_names for {len(outs)} model outputs")
    buf = io.BytesIO()
    dynamic = {n: {0: "batch"} for n in [*names, *onames]}
    torch.onnx.export(model, tensors, buf, input_names=names, output_names=onames,
                      dynamic_axes=dynamic, opset_version=opset or MAX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    expected = {n: o.detach().cpu().numpy() for n, o in zip(onames, outs, strict=True)}
    return finish(proto, path, "torch", dict(zip(names, arrays, strict=True)), expected,
                  tolerance)
