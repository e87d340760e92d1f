"""Helpers of the ranking and certification tests: tiny ONNX models built with
``onnx.helper`` and brute-force float64 references written without layerscope.

The models are ``x -> Gemm(fc1) -> Relu -> Gemm(fc2) -> logits``. ``fc1`` is a 0/1
selection matrix with a constant bias, so the hidden features are exactly
``x[:, cols] + bias`` in float32 (one rounding, the same in NumPy and onnxruntime): tests
know the features the server extracts without running any layerscope code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
from helpers import reference as R
from onnx import TensorProto, helper, numpy_helper

BIAS = 10.0


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], d: int, out: str,
           out_shape: list[int | str], name: str) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", d])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def selection_mlp(d: int, cols: Sequence[int], n_classes: int = 2, seed: int = 0,
                  w2: np.ndarray | None = None, name: str = "mlp") -> onnx.ModelProto:
    """x (N, d) -> hidden = Relu(x[:, cols] + BIAS) -> logits = hidden @ w2 + b2."""
    h = len(cols)
    w1 = np.zeros((d, h), np.float32)
    for j, c in enumerate(cols):
        w1[c, j] = 1.0
    if w2 is None:
        w2 = np.random.default_rng(seed).standard_normal((h, n_classes)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(np.full(h, BIAS, np.float32), "b1"),
        numpy_helper.from_array(np.asarray(w2, np.float32), "w2"),
        numpy_helper.from_array(np.zeros(w2.shape[1], np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["hidden"], name="fc1"),
        helper.make_node("Relu", ["hidden"], ["act"], name="relu"),
        helper.make_node("Gemm", ["act", "w2", "b2"], ["logits"], name="fc2"),
    ]
    return _model(nodes, inits, d, "logits", ["N", int(w2.shape[1])], name)


def hidden_of(x: np.ndarray, cols: Sequence[int]) -> np.ndarray:
    """The hidden features of :func:`selection_mlp` (for inputs where x + BIAS > 0)."""
    x = np.asarray(x, np.float32)
    return np.maximum(x[:, list(cols)] + np.float32(BIAS), np.float32(0))


def no_head_model(d: int) -> onnx.ModelProto:
    """x (N, d) -> Relu -> Sigmoid -> y: no fully connected layer anywhere."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("Sigmoid", ["r"], ["y"], name="sigmoid")]
    return _model(nodes, [], d, "y", ["N", d], "nohead")


def ort_logits(model: onnx.ModelProto, x: np.ndarray, output: str = "logits") -> np.ndarray:
    """The model's output computed by onnxruntime directly."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([output], {"x": np.asarray(x, np.float32)})[0])


def informative_data(m: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Columns 0-1 carry the class (3 well separated centres), columns 2-5 are noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(m) % 3
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    x = np.concatenate([centres[y] + rng.normal(0, 0.4, (m, 2)),
                        rng.normal(0, 1.0, (m, 4))], axis=1).astype(np.float32)
    return x, y.astype(np.int64)


# ---------------------------------------------------------------------------------------
# Brute force (float64, ties to the lower index)
# ---------------------------------------------------------------------------------------


def sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances of samples of any shape (each flattened), float64."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)


def self_sqdist(x: np.ndarray) -> np.ndarray:
    d2 = sqdist(x, x)
    np.fill_diagonal(d2, np.inf)
    return d2


# The indices themselves come from the one naive reference (helpers.reference).
def si(x: np.ndarray, y: np.ndarray) -> float:
    return float(R.si(x, y))


def high_order_si(x: np.ndarray, y: np.ndarray, r: int) -> float:
    return float(R.separation(x, y, [r])["dataset"]["high_order_si"][r])


def soft_order_si(x: np.ndarray, y: np.ndarray, r: int) -> float:
    return float(R.separation(x, y, [r])["dataset"]["soft_order_si"][r])


def center_si(x: np.ndarray, y: np.ndarray) -> float:
    return float(R.separation(x, y, [1])["dataset"]["center_si"])


def smi_linear(x: np.ndarray, t: np.ndarray) -> float:
    """smi_linear with the zero-denominator rule (a term of 1)."""
    return float(R.smi(x, t, "linear"))


def nearest(ref: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Index of each query's nearest reference point (float64, lowest index on ties)."""
    return np.argmin(sqdist(q, ref), axis=1)


def brute_forward(x: np.ndarray, score: Callable[[np.ndarray], float], candidates: list[int],
                  max_features: int | None, patience: int | None) -> dict:
    """Greedy forward selection with every subset's index recomputed from scratch
    (``reference.forward_selection``), with ``score`` taking the selected columns."""
    order, scores, best = R.forward_selection(lambda cols: score(x[:, cols]), x.shape[1],
                                              max_features, patience, candidates)
    return {"order": order, "scores": scores, "best_subset": best}
