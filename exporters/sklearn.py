"""scikit-learn estimators and pipelines to ONNX with skl2onnx. Extra: ``layerscope[sklearn]``.

Classifiers get two outputs, ``label`` and ``probabilities`` (no ZipMap: plain tensors).
The hidden activations of ``MLPClassifier``/``MLPRegressor`` are renamed ``hidden1``,
``hidden2``, ... so that the analysis lists (and ``auto`` picks) them by those names.
Files: ``.skops`` (skops.io, never pickle), loaded only when every type it holds comes
from scikit-learn, NumPy or SciPy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .base import DEFAULT_TOLERANCE, MAX_OPSET, ExportReport, finish, require
from .inputs import as_input_list

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "builtins.", "collections.")
MLP_ACTIVATIONS = {"Relu", "Tanh", "Sigmoid", "Identity"}


def load_skops(path: str | os.PathLike[str]) -> Any:
    """Load a ``.skops`` file, refusing types outside scikit-learn, NumPy and SciPy."""
    sio = require("skops.io", "sklearn")
    untrusted = sio.get_untrusted_types(file=str(path))
    refused = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if refused:
        raise ValueError(f"{path}: holds types outside scikit-learn/NumPy/SciPy, refused: "
                         f"{', '.join(refused)}")
    return sio.load(str(path), trusted=untrusted)


def _final_step(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else model


def _rename_mlp_hidden(proto: onnx.ModelProto, layers: int) -> None:
    """Name the MLP's hidden activations hidden1..hiddenN (in graph order).

    A hidden activation is an activation node fed by ``Add(MatMul(...), bias)``; graph
    outputs are never renamed.
    """
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}

    def is_hidden(node: onnx.NodeProto) -> bool:
        if node.op_type not in MLP_ACTIVATIONS or node.output[0] in outputs:
            return False
        add = producer.get(node.input[0])
        if add is None or add.op_type != "Add":
            return False
        return any(producer.get(i) is not None and producer[i].op_type in ("MatMul", "Gemm")
                   for i in add.input)

    acts = [n for n in g.node if is_hidden(n)][:layers]
    renames = {}
    for i, node in enumerate(acts, start=1):
        renames[node.output[0]] = f"hidden{i}"
    for node in proto.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]


def export_sklearn(
    model: Any,
    sample_inputs: Any,
    path: str | os.PathLike[str],
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    opset: int | None = None,
) -> ExportReport:
    """Export a fitted estimator or pipeline; parity against its predict/predict_proba."""
    skl2onnx = require("skl2onnx", "sklearn")
    (x,) = as_input_list(sample_inputs)
    final = _final_step(model)
    is_classifier = hasattr(final, "predict_proba") and hasattr(final, "classes_")
    options = {id(final): {"zipmap": False}} if is_classifier else None
    proto = skl2onnx.to_onnx(model, x[:1], options=options, target_opset=opset or MAX_OPSET)
    notes: list[str] = []
    hidden = getattr(final, "hidden_layer_sizes", None)
    if hidden is not None:
        n_hidden = len(hidden) if isinstance(hidden, (tuple, list)) else 1
        _rename_mlp_hidden(proto, n_hidden)
        notes.append(f"MLP hidden activations named hidden1..hidden{n_hidden}")
    inputs = [i.name for i in proto.graph.input]
    outputs = [o.name for o in proto.graph.output]
    expected: dict[str, np.ndarray] = {}
    if is_classifier:
        expected[outputs[0]] = np.asarray(model.predict(x))
        expected[outputs[1]] = np.asarray(model.predict_proba(x), dtype=np.float64)
    else:
        expected[outputs[0]] = np.asarray(model.predict(x), dtype=np.float64).reshape(len(x), -1)
    return finish(proto, path, "sklearn", {inputs[0]: x}, expected, tolerance, notes)


def export_skops_file(src: str | os.PathLike[str], sample_inputs: Any,
                      path: str | os.PathLike[str], **kw: Any) -> ExportReport:
    """Export the estimator saved in a ``.skops`` file."""
    if Path(src).suffix != ".skops":
        raise ValueError(f"{src}: scikit-learn models come as .skops files (never pickles)")
    return export_sklearn(load_skops(src), sample_inputs, path, **kw)
