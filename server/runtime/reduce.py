"""Per-layer reductions of a batch of activations to one vector per sample.

- ``flatten``: the whole activation, the "dataflow" vector of the definitions.
- ``mean``: the mean over the spatial or sequence axes: per channel for channels-first
  tensors (N, C, ...), per feature for sequences (N, T, F). With an attention mask (a model
  input ``attention_mask`` of shape (N, T)) a sequence's mean is over its unmasked
  positions only: ``sum_t m[n, t] x[n, t, :] / sum_t m[n, t]`` (0 where every position is
  masked).
- ``first_token``: the first position of a sequence (N, T, F) -> (N, F) (position 0,
  whatever the mask: the [CLS] token of encoder models).
- ``project:N``: a seeded very sparse random projection (Li, Hastie and Church, 2006) of the
  flattened activation to N dimensions. Entries are ``+-sqrt(s / N)`` with probability
  ``1 / (2s)`` each and 0 otherwise, ``s = sqrt(D)``: squared distances are preserved in
  expectation, with a relative standard deviation of about ``sqrt(2 / N)`` (plus a term
  that grows with the activation's kurtosis).
- ``auto``: ``flatten`` while the layer's accumulator fits its share of the memory budget,
  otherwise ``project`` to the widest N that fits (at most 1024), said in the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from ..metrics.backend import sparse_module

KINDS = ("auto", "flatten", "mean", "first_token", "project")
DEFAULT_PROJECTION = 1024


@dataclass(frozen=True)
class Reduction:
    """How a layer's activation becomes one vector per sample."""

    kind: str
    width: int | None = None
    seed: int = 0

    def describe(self) -> str:
        return f"project:{self.width}" if self.kind == "project" else self.kind

    def distortion(self) -> float | None:
        """Expected relative standard deviation of squared distances (projection only)."""
        return math.sqrt(2.0 / self.width) if self.kind == "project" and self.width else None


def parse_reduction(text: str | Reduction | None) -> Reduction:
    """Return the reduction ``text`` names: auto, flatten, mean, first_token or project:N."""
    if isinstance(text, Reduction):
        return text
    value = (text or "auto").strip()
    if value.startswith("project"):
        _, _, width = value.partition(":")
        try:
            n = int(width) if width else DEFAULT_PROJECTION
        except ValueError:
            n = -1
        if n < 1:
            raise ValueError(f"reduce 'project:N' needs an integer width N >= 1; got {value!r}")
        return Reduction("project", n)
    if value not in KINDS:
        raise ValueError(
            f"reduce must be one of auto, flatten, mean, first_token, project:N; got {value!r}"
        )
    return Reduction(value)


def mean_axes(rank: int, channels_first: bool) -> tuple[int, ...]:
    """Axes that ``mean`` averages over for an activation of this rank and layout."""
    if rank <= 2:
        return ()
    if channels_first:
        return tuple(range(2, rank))
    return tuple(range(1, rank - 1))


def reduced_width(shape: tuple[int, ...], reduction: Reduction, channels_first: bool) -> int:
    """Width of one sample after ``reduction`` of an activation of ``shape`` (batch first)."""
    if reduction.kind == "project":
        return int(reduction.width or DEFAULT_PROJECTION)
    per = shape[1:]
    if reduction.kind == "mean":
        axes = set(a - 1 for a in mean_axes(len(shape), channels_first))
        return int(np.prod([d for i, d in enumerate(per) if i not in axes], dtype=np.int64))
    if reduction.kind == "first_token":
        return int(np.prod(per[1:], dtype=np.int64))
    return int(np.prod(per, dtype=np.int64))


class Projector:
    """A seeded very sparse random projection from D to N dimensions (CSC, on xp)."""

    def __init__(self, xp: ModuleType, d_in: int, width: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        s = max(1.0, math.sqrt(d_in))
        density = 1.0 / s
        counts = rng.binomial(d_in, density, size=width)
        rows = [rng.choice(d_in, size=int(c), replace=False) for c in counts]
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = np.concatenate(rows).astype(np.int64) if rows else np.zeros(0, np.int64)
        signs = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=len(indices))
        values = signs * np.float32(math.sqrt(s / width))
        sparse = sparse_module(xp)
        self.matrix: Any = sparse.csc_matrix(
            (xp.asarray(values), xp.asarray(indices), xp.asarray(indptr)), shape=(d_in, width))
        self.xp = xp

    def __call__(self, flat: Any) -> Any:
        # (R^T @ X^T)^T keeps the sparse operand on the left, where both libraries want it.
        return (self.matrix.T @ flat.T).T.astype(self.xp.float32, copy=False)


def reduce_batch(
    xp: ModuleType,
    batch: Any,
    reduction: Reduction,
    channels_first: bool,
    projector: Projector | None = None,
    mask: Any = None,
) -> Any:
    """Return the (b, width) float32 reduction of one batch of activations (b, ...).

    ``mask`` (b, T), the batch's attention mask, makes ``mean`` of a sequence (b, T, F)
    whose T is the mask's a masked mean."""
    x = batch
    if reduction.kind == "mean":
        axes = mean_axes(x.ndim, channels_first)
        if mask is not None and x.ndim == 3 and not channels_first \
                and tuple(mask.shape) == tuple(x.shape[:2]):
            w = (mask != 0).astype(xp.float32)
            x = (x * w[:, :, None]).sum(axis=1, dtype=xp.float32) / \
                xp.maximum(w.sum(axis=1), 1.0)[:, None]
        elif axes:
            x = x.mean(axis=axes, dtype=xp.float32)
    elif reduction.kind == "first_token":
        if x.ndim < 3:
            raise ValueError(
                f"reduce 'first_token' needs a sequence (batch, tokens, features); "
                f"got shape {tuple(x.shape)}"
            )
        x = x[:, 0]
    flat = xp.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=xp.float32)
    if reduction.kind == "project":
        if projector is None:
            raise ValueError("project needs a projector")
        return projector(flat)
    return flat
