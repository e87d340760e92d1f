"""Certification references: built by a job, kept in the store, loaded once, queried.

A reference is the reference set's features at one layer with its labels or targets (one
blob) and its description (layer, reduction, dataset guarantee; one catalog row). Its id
is the sha256 of what determines it. A loaded reference stays in memory, ready for
Certify.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from ..cancellation import Cancellation
from ..metrics.guarantee import ClassificationReference, RegressionReference
from ..runtime.extract import InputError
from ..store import Store
from ..store.store import split_tensors
from . import memory
from .admission import Reference, stored_model
from .certify import build_reference, query_features
from .data import EXTRACT_MEMORY_MB, split
from .jobs import LOADING, ProgressFn
from .options import reference_order
from .requests import CertifyRequest

Loaded = ClassificationReference | RegressionReference


def reference_id(model_id: str, dataset_id: str, layer: str, reduction: str,
                 order: int = 1) -> str:
    """sha256 of what determines a reference (the order only where it is not 1)."""
    key: list[Any] = [model_id, dataset_id, layer, reduction]
    if order != 1:
        key.append(order)
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


@dataclass
class Certified:
    """Certify's answer: the reference's ``certify`` values per query, the model's own
    predictions (raw-input queries of a classifier) and warnings."""

    task: str
    values: dict[str, Any]
    predictions: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


CACHE_SHARE = 0.25
"""The share of the server's request memory (--max-request-memory-mb) that loaded
references may keep between calls."""


def loaded_cost(features: np.ndarray) -> int:
    """Bytes a loaded reference keeps: its features, the search index's copy and the
    per-class copies, and the labels."""
    return 3 * int(features.nbytes) + 16 * len(features)


class References:
    """The references of one store. Each is loaded when first used and kept for the next
    calls, least recently used dropped first, while they cost at most ``CACHE_SHARE`` of the
    memory budget together."""

    def __init__(self, store: Store, device: str | None = None,
                 budget: memory.MemoryBudget | None = None) -> None:
        self.store, self.device = store, device
        self.budget = budget or memory.MemoryBudget.of()
        # loaded references, least recently used first, within a share of the memory budget
        self._loaded: OrderedDict[str, tuple[dict[str, Any], Loaded, int]] = OrderedDict()
        self.cache_limit = int(CACHE_SHARE * self.budget.limit)
        self._lock = threading.Lock()

    def build(self, job: Reference, progress: ProgressFn, cancel: Cancellation, *,
              extract_memory_mb: float = EXTRACT_MEMORY_MB) -> dict[str, Any]:
        """Build the admitted reference, store it, and return its description."""
        progress(LOADING, 0, 1)
        req, data = job.request, job.data
        order = reference_order(req.options)
        ref = build_reference(
            job.model.proto, data.inputs, **data.target(), layer=req.layer, reduce=req.reduce,
            uncertainty=req.uncertainty, order=order, batch_size=req.batch_size,
            extract_memory_mb=extract_memory_mb, device=self.device, progress=progress,
            cancel=cancel,
        )
        y = ref.labels if ref.labels is not None else ref.targets
        assert y is not None
        y = np.ascontiguousarray(y)
        specs = [{"name": "features", "dtype": "float32", "shape": list(ref.features.shape)},
                 {"name": data.key, "dtype": str(y.dtype), "shape": list(y.shape)}]
        reduction = ref.reduction.describe()
        ref_id = reference_id(req.model_id, req.dataset_id, ref.layer, reduction, order)
        info = {"id": ref_id, "model_id": req.model_id, "dataset_id": req.dataset_id,
                "layer": ref.layer, "layer_rule": ref.layer_rule, "reduction": reduction,
                "task": data.task, "n_samples": int(ref.features.shape[0]),
                "features": int(ref.features.shape[1]), "summary": ref.summary}
        if order != 1:
            info["order"] = order
        self.store.add_reference(ref.features.tobytes() + y.tobytes(), {
            "id": ref_id, "model_id": req.model_id, "dataset_id": req.dataset_id,
            "specs": specs, "info": info})
        with self._lock:
            self._loaded.pop(ref_id, None)
        return info

    def delete(self, ref_id: str) -> None:
        """Delete a stored reference (NotFound for an unknown id) and forget its loaded
        copy."""
        self.store.delete_reference(ref_id)
        with self._lock:
            self._loaded.pop(ref_id, None)

    def cached_bytes(self) -> int:
        """What the loaded references cost, by :func:`loaded_cost`."""
        with self._lock:
            return sum(cost for _, _, cost in self._loaded.values())

    def load(self, ref_id: str) -> tuple[dict[str, Any], Loaded]:
        """The catalog row and the searchable reference (NotFound for an unknown id)."""
        with self._lock:
            if ref_id in self._loaded:
                self._loaded.move_to_end(ref_id)
                row, hit, _ = self._loaded[ref_id]
                return row, hit
        row = self.store.catalog.reference(ref_id)
        data = split(split_tensors(self.store.blobs.path(row["blob"]), row["specs"]))
        feats = np.asarray(data.inputs["features"])
        loaded: Loaded = (ClassificationReference(feats, data.y, self.device)
                          if data.task == "classification"
                          else RegressionReference(feats, data.y, None, self.device))
        cost = loaded_cost(feats)
        with self._lock:
            if cost <= self.cache_limit:  # a larger one is loaded for each call instead
                self._loaded[ref_id] = (row, loaded, cost)
                while sum(c for _, _, c in self._loaded.values()) > self.cache_limit:
                    self._loaded.popitem(last=False)
        return row, loaded

    def certify(self, req: CertifyRequest, cancel: Cancellation | None = None) -> Certified:
        """Certify the queries against the reference; ``cancel`` (the call's) stops the
        model run and the neighbour search when the client's deadline passes or it goes
        away."""
        row, ref = self.load(req.reference_id)
        info = row["info"]
        with self.budget.hold(memory.certify_estimate(req, info)):
            return self._certify(req, row, ref, cancel)

    def _certify(self, req: CertifyRequest, row: dict[str, Any], ref: Any,
                 cancel: Cancellation | None) -> Certified:
        info = row["info"]
        preds = None
        if req.features is not None:
            feats = req.features
        elif req.inputs is not None:
            proto = stored_model(self.store, row["model_id"])
            try:
                feats, preds = query_features(proto, info["layer"], info["reduction"],
                                              req.inputs, device=self.device, cancel=cancel)
            except InputError as exc:
                raise ValueError(f"inputs: {exc}") from None
        else:
            raise ValueError("queries: send features (at the reference's layer) or inputs")
        if info["task"] == "classification":
            cref = cast(ClassificationReference, ref)
            values = cref.certify(feats, req.uncertainty, req.order or info.get("order", 1),
                                  cancel=cancel)
            warnings = ["the reference has a single label: dn and certified_radius are "
                        "infinite (absent)"] if len(cref.classes) == 1 else []
            return Certified("classification", values, preds, warnings)
        rref = cast(RegressionReference, ref)
        return Certified("regression", rref.certify(feats, req.uncertainty,
                                                    req.mode or "conservative", cancel=cancel))
