"""Certification references: a model's features of a reference set at one layer, with
what METRICS.md section 3 needs to answer queries (guarantees, alpha, a search index)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from ..cancellation import Cancellation
from ..graph.head import head_layer
from ..graph.inspect import LayerInfo, ModelInfo, describe
from ..graph.select import LayerSelectionError
from ..metrics.backend import to_host
from ..metrics.guarantee import (
    ClassificationReference,
    RegressionReference,
    dataset_guarantee,
)
from ..runtime.extract import extract
from ..runtime.reduce import Reduction, parse_reduction

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


def choose_layer(proto: onnx.ModelProto, info: ModelInfo, layer: str | None) -> tuple[
        LayerInfo, str]:
    """The layer named (checked), or the head rule's layer."""
    if layer:
        found = info.layer(layer)
        if found is None:
            reason = info.excluded.get(layer, "no such tensor in the model")
            raise LayerSelectionError(f"layer {layer!r}: {reason}")
        return found, "named by the user"
    name, rule = head_layer(proto, info)
    found = info.layer(name)
    if found is None:
        raise LayerSelectionError(f"the head's input {name!r} is not a layer; name one")
    return found, rule


def _classifier_output(info: ModelInfo) -> LayerInfo | None:
    for la in info.layers:
        if la.name in {t.name for t in info.outputs} and la.shape is not None \
                and len(la.shape) == 2 and isinstance(la.shape[1], int) and la.shape[1] >= 2:
            return la
    return None


def build_reference(
    proto: onnx.ModelProto,
    data: Mapping[str, Any],
    labels: Any = None,
    targets: Any = None,
    *,
    layer: str | None = None,
    reduce: str | Reduction = "auto",
    uncertainty: float = 0.0,
    batch_size: int | None = None,
    memory_budget_mb: float = 1024.0,
    device: str | None = None,
    progress: Progress | None = None,
    cancel: Cancellation | None = None,
) -> ReferenceFeatures:
    """Extract the reference set's features and summarise what certification will use;
    ``cancel`` stops it between batches and blocks and terminates a model run under way."""
    if (labels is None) == (targets is None):
        raise ValueError("give exactly one of labels (classification) or targets (regression)")
    info = describe(proto)
    chosen, rule = choose_layer(proto, info, layer)
    got = extract(proto, info, [chosen], [data], reduce={chosen.name: reduce},
                  batch_size=batch_size, memory_budget_mb=memory_budget_mb, device=device,
                  progress=progress, cancel=cancel)[0]
    feats = np.ascontiguousarray(to_host(got.train), dtype=np.float32)
    if labels is not None:
        y = np.asarray(labels)
        summary = dataset_guarantee(feats, y, uncertainty, cancel=cancel)
        return ReferenceFeatures(chosen.name, rule, got.reduction, feats, y, None, summary)
    t = np.asarray(targets, dtype=np.float64)
    ref = RegressionReference(feats, t, cancel)
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
    out = _classifier_output(info)
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


def loaded_reference(ref: ReferenceFeatures) -> ClassificationReference | RegressionReference:
    if ref.labels is not None:
        return ClassificationReference(ref.features, ref.labels)
    assert ref.targets is not None
    return RegressionReference(ref.features, ref.targets)


def finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)
