"""Where a job's heavy work runs: on this machine (the default) or on a Ray cluster.

An :class:`~.executor.Executor` is what the k-NN engine, extraction and ranking call for
their block-parallel work. :data:`~.executor.LOCAL` runs it here exactly as without a
cluster; :func:`connect` attaches to a Ray cluster (the ``[ray]`` extra) and returns one
whose results are the same numbers (docs/scale.md).
"""

from __future__ import annotations

from .executor import LOCAL, Executor, LocalExecutor, connect

__all__ = ["LOCAL", "Executor", "LocalExecutor", "connect"]
