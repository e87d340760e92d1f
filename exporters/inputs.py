"""Sample inputs in the forms exporters accept: one array, a sequence, or a dict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def as_input_list(sample_inputs: Any) -> list[np.ndarray]:
    """One array per model input, in order (a dict keeps its order)."""
    if isinstance(sample_inputs, Mapping):
        values = list(sample_inputs.values())
    elif isinstance(sample_inputs, (list, tuple)):
        values = list(sample_inputs)
    else:
        values = [sample_inputs]
    if not values:
        raise ValueError("sample_inputs is empty; give at least one array")
    out = []
    for i, v in enumerate(values):
        arr = np.asarray(v)
        if arr.dtype == object or arr.ndim == 0:
            raise ValueError(f"sample input {i} must be a numeric array with a batch axis; "
                             f"got dtype {arr.dtype}, shape {arr.shape}")
        if arr.dtype == np.float64:
            arr = arr.astype(np.float32)
        out.append(arr)
    n = {len(a) for a in out}
    if len(n) != 1:
        raise ValueError(f"sample inputs have different batch sizes: {sorted(n)}")
    return out


def input_names_of(sample_inputs: Any, default: Sequence[str]) -> list[str]:
    """Names for the inputs: a dict's keys, else ``default``."""
    if isinstance(sample_inputs, Mapping):
        return [str(k) for k in sample_inputs]
    return list(default)
