"""onnxruntime sessions, batching, per-layer reductions and accumulators."""

from .extract import InputError, LayerData, extract, model_feeds
from .reduce import Reduction, parse_reduction
from .session import make_session, providers

__all__ = [
    "InputError", "LayerData", "Reduction", "extract", "make_session",
    "model_feeds", "parse_reduction", "providers",
]
