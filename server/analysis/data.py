"""A stored dataset as the analyses take it: model inputs, and labels or targets.

"Labels or targets" is decided here, once: a dataset holds exactly one of the two (the
store checks it on upload), and its name gives the task.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..store import Store

TARGET_NAMES = ("labels", "targets")
# Memory of one batch of raw activations during extraction: the server's own setting,
# not the engine's memory_budget_mb option.
EXTRACT_MEMORY_MB = 1024.0


@dataclass(frozen=True)
class Labelled:
    """Model inputs by name, and ``y``: the labels (classification) or the targets
    (regression)."""

    inputs: dict[str, np.ndarray]
    key: str
    y: np.ndarray

    @property
    def task(self) -> str:
        return "classification" if self.key == "labels" else "regression"

    def target(self, prefix: str = "") -> dict[str, np.ndarray]:
        """``{"labels": y}`` or ``{"targets": y}`` (``test_labels`` ... with a prefix), the
        keyword of the analysis functions."""
        return {f"{prefix}{self.key}": self.y}


def split(arrays: Mapping[str, Any]) -> Labelled:
    """Return the dataset's inputs and its labels or targets."""
    keys = [k for k in TARGET_NAMES if k in arrays]
    if len(keys) != 1:
        raise ValueError(f"a dataset holds exactly one of {list(TARGET_NAMES)}; got "
                         f"{keys or 'neither'}")
    inputs = {k: v for k, v in arrays.items() if k not in TARGET_NAMES}
    return Labelled(inputs, keys[0], np.asarray(arrays[keys[0]]))


def load(store: Store, dataset_id: str) -> Labelled:
    """The stored dataset ``dataset_id`` (memory-mapped), split (NotFound when unknown)."""
    return split(store.dataset_arrays(dataset_id)[1])
