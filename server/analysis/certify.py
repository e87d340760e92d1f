"""Certification references: a model's features of a reference set at one layer, with
what METRICS.md section 3 needs to answer queries (guarantees, alpha, a search index)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ...lazy import lazy_module
from ..cancellation import Cancellation
from ..graph.head import classifier_output, feature_layer
from ..graph.inspect import describe
from ..graph.select import LayerSelectionError
from ..metrics.backend import to_host
from ..metrics.guarantee import RegressionReference, dataset_guarantee
from ..runtime.extract import extract
from ..runtime.reduce import Reduction, parse_reduction
from .data import EXTRACT_MEMORY_MB

if TYPE_CHECKING:
    import onnx
else:
    onnx = lazy_module("onnx")

Progress = Callable[[str, int, int], None]


@dataclass
class ReferenceFeatures:
    """The reference set at the chosen layer, and how it was obtained."""

    layer: str
    layer_rule: str
    reduction: Reduction
    features: np.ndarray
    labels: np.ndarray | None
    targets: np.ndarray | None
    summary: dict[str, Any]


def build_reference(
    proto: onnx.ModelProto,
    data: Mapping[str, Any],
    labels: Any = None,
    targets: Any = None,
    *,
    layer: str | None = None,
    reduce: str | Reduction = "auto",
    uncertainty: float = 0.0,
    order: int = 1,
    batch_size: int | None = None,
    extract_memory_mb: float = EXTRACT_MEMORY_MB,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
) -> ReferenceFeatures:
    """Extract the reference set's features and summarise what certification will use;
    ``order`` r > 1 makes the dataset guarantee's confidence ``high_order_si[r]``.
    ``cancel`` stops it between batches and blocks and terminates a model run under way."""
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels (classification) or targets (regression)")
    info = describe(proto)
    chosen, rule = feature_layer(proto, info, layer)
    got = extract(proto, info, [chosen], [data], reduce={chosen.name: reduce},
                  batch_size=batch_size, memory_budget_mb=extract_memory_mb, device=device,
                  progress=progress, cancel=cancel)[0]
    feats = np.ascontiguousarray(to_host(got.train), dtype=np.float32)
    if labels is not None:
        y = np.asarray(labels)
        summary = dataset_guarantee(feats, y, uncertainty, order, cancel=cancel, device=device)
        return ReferenceFeatures(chosen.name, rule, got.reduction, feats, y, None, summary)
    t = np.asarray(targets, dtype=np.float64)
    ref = RegressionReference(feats, t, cancel, device)
    summary = {"smi_linear": ref.smi_linear, "alpha_max": float(ref.alpha.max()),
               "alpha_mean": float(ref.alpha.mean())}
    return ReferenceFeatures(chosen.name, rule, got.reduction, feats, None, t, summary)


def query_features(
    proto: onnx.ModelProto,
    layer: str,
    reduction: str | Reduction,
    inputs: Mapping[str, Any],
    device: str | None = None,
    cancel: Cancellation | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Features of raw query inputs at ``layer`` (the reference's reduction) and the
    model's own predicted class where it has a classifier output; ``cancel`` terminates
    the model run."""
    info = describe(proto)
    target = info.layer(layer)
    if target is None:
        raise LayerSelectionError(f"layer {layer!r} is not in the model")
    wanted = [target]
    out = classifier_output(info)
    if out is not None and out.name != target.name:
        wanted.append(out)
    red = parse_reduction(reduction)
    got = extract(proto, info, wanted, [inputs],
                  reduce={target.name: red} | ({out.name: "flatten"} if out else {}),
                  device=device, cancel=cancel)
    feats = to_host(got[0].train)
    pred = None
    if out is not None:
        logits = to_host(got[-1].train)
        pred = np.argmax(logits, axis=1).astype(np.int64)
    return feats, pred
