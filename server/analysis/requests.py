"""The typed requests of the analysis paths, as the servicers decode them.

Each holds ids, the path's own settings and one :class:`IndexOptions`; ``to_json`` is what
a job records as its request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...protos.options import IndexOptions

DEFAULT_TOLERANCE = 0.01
RANKING_MAX_FEATURES = 32
RANKING_ORDER = 5


def options_json(options: IndexOptions) -> dict[str, Any]:
    """The options the caller set, as JSON."""
    return {k: v for k, v in options.to_dict().items() if k in options.explicit}


@dataclass(frozen=True)
class LayerAnalysisRequest:
    model_id: str
    dataset_id: str
    test_dataset_id: str | None = None
    layers: tuple[str, ...] = ("auto",)
    reduce: str = "auto"
    probe: bool = False
    batch_size: int | None = None
    tolerance: float = DEFAULT_TOLERANCE
    options: IndexOptions = field(default_factory=IndexOptions)

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dataset_id": self.dataset_id,
                "test_dataset_id": self.test_dataset_id, "layers": list(self.layers),
                "reduce": self.reduce, "probe": self.probe, "batch_size": self.batch_size,
                "tolerance": self.tolerance, "options": options_json(self.options)}


@dataclass(frozen=True)
class RankingRequest:
    """``options.max_features`` is the forward selection's bound (32 unless set);
    ``baselines`` the registry names of the transferability scores to compute."""

    model_ids: tuple[str, ...]
    dataset_id: str
    layers: Mapping[str, str] = field(default_factory=dict)
    reduce: str = "auto"
    order: int = RANKING_ORDER
    baselines: tuple[str, ...] = ()
    batch_size: int | None = None
    options: IndexOptions = field(default_factory=IndexOptions)
    method: str | None = None
    folds: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"model_ids": list(self.model_ids), "dataset_id": self.dataset_id,
                "method": self.method, "folds": self.folds,
                "layers": dict(self.layers), "reduce": self.reduce,
                "max_features": self.options.max_features, "patience": self.options.patience,
                "order": self.order, "baselines": list(self.baselines),
                "batch_size": self.batch_size, "options": options_json(self.options)}


@dataclass(frozen=True)
class ReferenceRequest:
    model_id: str
    dataset_id: str
    layer: str | None = None
    reduce: str = "auto"
    batch_size: int | None = None
    uncertainty: float = 0.0
    options: IndexOptions = field(default_factory=IndexOptions)

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dataset_id": self.dataset_id, "layer": self.layer,
                "reduce": self.reduce, "batch_size": self.batch_size,
                "uncertainty": self.uncertainty, "options": options_json(self.options)}


@dataclass(frozen=True)
class CompressionRequest:
    model_id: str
    dataset_id: str
    test_dataset_id: str
    layers: tuple[str, ...] = ("auto",)
    tolerance: float = DEFAULT_TOLERANCE
    criterion: str = "probe"
    select_features: int | None = None
    reduce: str = "auto"
    batch_size: int | None = None
    name: str = ""
    alpha: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dataset_id": self.dataset_id,
                "test_dataset_id": self.test_dataset_id, "layers": list(self.layers),
                "tolerance": self.tolerance, "criterion": self.criterion,
                "select_features": self.select_features, "reduce": self.reduce,
                "batch_size": self.batch_size, "name": self.name, "alpha": self.alpha}


@dataclass(frozen=True)
class CertifyRequest:
    """Queries as features at the reference's layer, or as raw model inputs; ``order`` 0
    is the reference's own order."""

    reference_id: str
    features: np.ndarray | None = None
    inputs: dict[str, np.ndarray] | None = None
    uncertainty: float = 0.0
    order: int = 0
    mode: str = "conservative"
