"""The index engine: exact blocked k-NN, the SI and SmI families, feature-level indices.

``compute_indices`` is the entry point; ``knn`` the exact neighbour search beneath it. The
array module (NumPy or CuPy) is chosen once by :func:`get_backend`.
"""

from .backend import get_backend
from .engine import (
    CLASSIFICATION_INDICES,
    DEFAULT_CLASSIFICATION,
    DEFAULT_REGRESSION,
    REGRESSION_INDICES,
    IndexResult,
    IndexSet,
    check_index_options,
    compute_indices,
)
from .features import Ranking
from .knn import Neighbors, knn

__all__ = [
    "CLASSIFICATION_INDICES",
    "DEFAULT_CLASSIFICATION",
    "DEFAULT_REGRESSION",
    "REGRESSION_INDICES",
    "IndexResult",
    "IndexSet",
    "Neighbors",
    "Ranking",
    "check_index_options",
    "compute_indices",
    "get_backend",
    "knn",
]
